"""The message catalogue (:mod:`cocreate_client.messages`): every reason the services and the
gateway raise has a message in both locales, and locales and fallbacks resolve as documented.

The coverage test reads the source of ``services/`` and ``gateway/`` (its syntax tree, no import
and no I/O but reading files) for the ways the code names a reason:

* ``reason = "..."`` in the body of a :class:`DomainError` subclass (its default reason);
* ``reason="..."`` given to a DomainError subclass (``raise Conflict(..., reason="full")``);
* a literal passed as the ``reason`` parameter of a helper that forwards it to one
  (``raise self._repeated("...", "already_voted")``);
* ``{"reason": "..."}`` in the errors passed to ``error_response`` / ``error_body``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from cocreate_client import messages
from cocreate_client.messages import (
    GENERIC, LOCALES, MESSAGES, STATUS_REASONS, match_locale, message, message_for_error, message_for_status,
)

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("services", "gateway")
ERROR_ROOT = "DomainError"
ERROR_RESPONSE_FUNCTIONS = {"error_response", "error_body"}
REASON_CODE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
CJK = re.compile(r"[\u4e00-\u9fff]")


# -- the scan ------------------------------------------------------------------------------------

def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _text(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _error_classes(trees: list[ast.Module]) -> set[str]:
    """DomainError and every class that derives from it (by name, across all the modules)."""
    classes, grew = {ERROR_ROOT}, True
    while grew:
        grew = False
        for tree in trees:
            for node in ast.walk(tree):
                if (isinstance(node, ast.ClassDef) and node.name not in classes
                        and any(_name(base) in classes for base in node.bases)):
                    classes.add(node.name)
                    grew = True
    return classes


def _forwarders(trees: list[ast.Module], classes: set[str]) -> dict[str, int]:
    """Functions with a ``reason`` parameter they pass on as ``reason=reason`` to an error class:
    name -> the positional index of ``reason`` at a call (``self`` and ``cls`` not counted)."""
    found = {}
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = [a.arg for a in node.args.posonlyargs + node.args.args]
            if "reason" not in params:
                continue
            forwards = any(isinstance(call, ast.Call) and _name(call.func) in classes
                           and any(k.arg == "reason" and isinstance(k.value, ast.Name) and k.value.id == "reason"
                                   for k in call.keywords)
                           for call in ast.walk(node))
            if forwards:
                found[node.name] = params.index("reason") - (1 if params[0] in ("self", "cls") else 0)
    return found


def scan_reasons(sources: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Every reason literal in ``sources`` ((name, Python source) pairs) -> where it first occurs."""
    parsed = [(name, ast.parse(source, name)) for name, source in sources]
    trees = [tree for _, tree in parsed]
    classes = _error_classes(trees)
    forwarders = _forwarders(trees, classes)
    found: dict[str, str] = {}

    def add(node: ast.AST | None, where: str, line: int) -> None:
        value = _text(node)
        if value is not None:
            found.setdefault(value, f"{where}:{line}")

    for where, tree in parsed:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in classes:
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "reason"
                                                            for t in stmt.targets):
                        add(stmt.value, where, stmt.lineno)
            if not isinstance(node, ast.Call):
                continue
            callee = _name(node.func)
            if callee in classes or callee in forwarders:
                for keyword in node.keywords:
                    if keyword.arg == "reason":
                        add(keyword.value, where, node.lineno)
            if callee in forwarders and len(node.args) > forwarders[callee]:
                add(node.args[forwarders[callee]], where, node.lineno)
            if callee in ERROR_RESPONSE_FUNCTIONS:
                for argument in [*node.args, *(k.value for k in node.keywords)]:
                    if isinstance(argument, ast.Dict):
                        for key, value in zip(argument.keys, argument.values):
                            if key is not None and _text(key) == "reason":
                                add(value, where, node.lineno)
    return found


def code_base_sources() -> list[tuple[str, str]]:
    return [(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
            for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))]


@pytest.fixture(scope="module")
def raised() -> dict[str, str]:
    return scan_reasons(code_base_sources())


# -- every reason raised has a message --------------------------------------------------------------

def test_the_scan_finds_the_reasons_of_the_code_base(raised):
    assert len(raised) >= 20, f"the scan found only {sorted(raised)}: has the way errors are raised changed?"
    # one of each way the code names a reason
    assert {"not_found", "unauthenticated", "concurrency_conflict",  # class attributes
            "insufficient_fund", "full", "token_expired",  # reason= on an error class
            "already_voted", "self_cosign",  # a forwarding helper (Project._repeated)
            "rate_limited", "service_unavailable", "catalogue_incomplete",  # error_response(..., {"reason": ...})
            } <= set(raised)


def test_every_reason_raised_in_the_code_base_has_a_message(raised):
    missing = {reason: where for reason, where in raised.items() if reason not in MESSAGES}
    assert missing == {}, "add these reasons to cocreate_client/messages.py (_CATALOGUE)"


def test_every_reason_raised_is_a_stable_code(raised):
    assert {reason: where for reason, where in raised.items() if not REASON_CODE.match(reason)} == {}


def test_the_scan_sees_each_way_of_naming_a_reason():
    """The scan can fail: each pattern, in a made-up module, is found — and free text is not."""
    source = '''
class DomainError(Exception):
    reason = "domain_rule"

class Kin(DomainError):
    reason = "kin_default"

class Grandchild(Kin):
    reason = "grandchild_default"

class Other:
    reason = "not_an_error_class"

def refuse(message, reason):
    return Kin(message, reason=reason)

class Thing:
    def _repeated(self, message, reason):
        return Kin(message, reason=reason)

    def act(self):
        raise self._repeated("again", "by_helper_positional")

def view():
    log_lost(reason="free text for a log line")
    raise Grandchild("no", reason="by_keyword")

def other():
    raise refuse("no", "by_function_positional")

def answer():
    event = {"reason": "an event field"}
    thing = Thing()
    thing._repeated("x", reason="by_helper_keyword")
    return error_response(429, "slow down", {"reason": "by_error_response", "limit": 3}, headers={})

def body():
    return error_body(status=503, message="down", errors={"reason": "by_error_body"})
'''
    assert set(scan_reasons([("made_up.py", source)])) == {
        "domain_rule", "kin_default", "grandchild_default", "by_helper_positional", "by_function_positional",
        "by_keyword", "by_helper_keyword", "by_error_response", "by_error_body"}


# -- the catalogue itself ----------------------------------------------------------------------------

GENERIC_HTTP_REASONS = {
    "bad_request", "unauthenticated", "forbidden", "not_found", "method_not_allowed", "conflict",
    "concurrency_conflict", "version_conflict", "precondition_failed", "body_too_large", "url_too_long",
    "unsupported_media_type", "validation_failed", "rate_limited", "internal_error", "bad_gateway",
    "service_unavailable", "timeout", "outcome_unknown", "catalogue_incomplete", "idempotency_key_reused",
    "idempotency_in_progress", "invalid_idempotency_key", "token_expired", "token_invalid",
}
WEB_REASONS = {"service_down_part", "session_expired", "csrf_failed", "signin_failed"}


def test_the_generic_and_web_reasons_have_messages():
    assert GENERIC_HTTP_REASONS | WEB_REASONS <= set(MESSAGES)


def test_locales():
    assert LOCALES == ("zh-CN", "en")
    assert set(GENERIC) == set(LOCALES)


@pytest.mark.parametrize("reason", sorted(MESSAGES))
def test_every_entry_has_both_locales_in_plain_words(reason):
    entry = MESSAGES[reason]
    assert REASON_CODE.match(reason)
    assert set(entry) == set(LOCALES)
    zh, en = entry["zh-CN"], entry["en"]
    assert zh.strip() and en.strip() and zh == zh.strip() and en == en.strip()
    assert zh != en
    assert CJK.search(zh), "the Chinese message is in Chinese"
    assert not re.search(r"[A-Za-z_]", zh), "no codes, field names or English in the Chinese message"
    assert not CJK.search(en)
    assert "_" not in en and en[0].isupper(), "a sentence, not a code"
    for jargon in ("exception", "traceback", "stack", "null", "fen", "stream", "aggregate", "http",
                   "json", "token", "idempotency", "etag", "if-match", "upstream"):
        assert jargon not in en.lower().split(), f"{jargon!r} is not for residents"
    assert len(zh) <= 40 and len(en) <= 120


def test_the_catalogue_cannot_be_changed_by_a_caller():
    with pytest.raises(TypeError):
        MESSAGES["insufficient_fund"] = {"zh-CN": "x", "en": "y"}  # type: ignore[index]
    with pytest.raises(TypeError):
        MESSAGES["insufficient_fund"]["zh-CN"] = "x"  # type: ignore[index]


def test_known_messages():
    assert message("insufficient_fund") == "社区基金余额不足"
    assert message("insufficient_fund", "en") == "The community fund does not have enough money"
    assert MESSAGES["service_down_part"]["zh-CN"] == "暂时无法获取"
    assert message("service_down_part", "zh") == "暂时无法获取"
    assert message("service_down_part", "en") == "Temporarily unavailable"


# -- locales and fallbacks ---------------------------------------------------------------------------

@pytest.mark.parametrize("tag", ["zh", "zh-CN", "zh_CN", "zh_Hans_CN", "zh-Hans", "zh-hans-cn", "ZH-cn", "zh-TW",
                                 " zh-CN ", "zh-CN,zh;q=0.9,en;q=0.8"])
def test_chinese_locales(tag):
    assert match_locale(tag) == "zh-CN"
    assert message("full", tag) == "活动名额已满"


@pytest.mark.parametrize("tag", ["en", "en-GB", "en_US", "EN-us", "en-US,en;q=0.9", "fr-FR,en;q=0.5",
                                 "zh;q=0.3,en-GB;q=0.8"])
def test_english_locales(tag):
    assert match_locale(tag) == "en"
    assert message("full", tag) == "The activity is full"


@pytest.mark.parametrize("tag", ["", None, "fr", "de-DE", "ja_JP", "*", "x", "fr-FR,de;q=0.5", "en;q=0"])
def test_other_locales_are_chinese(tag):
    assert match_locale(tag) == "zh-CN"
    assert message("full", tag) == "活动名额已满"


def test_an_unknown_or_missing_reason_gives_the_generic_message_or_the_default():
    assert message("no_such_reason") == "操作未能完成，请稍后再试"
    assert message("no_such_reason", "en") == "That did not work; please try again later"
    assert message(None, "en-US") == GENERIC["en"]
    assert message("") == GENERIC["zh-CN"]
    assert message("no_such_reason", "en", default="Could not save") == "Could not save"
    assert message(None, default="未保存") == "未保存"
    assert message("insufficient_fund", default="未保存") == "社区基金余额不足", "the default is for unknown reasons"


# -- status codes without a reason --------------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 413, 415, 422, 429, 500, 502, 503, 504])
def test_every_error_status_of_the_platform_has_its_own_message(status):
    assert STATUS_REASONS[status] in MESSAGES
    for locale in LOCALES:
        text = message_for_status(status, locale)
        assert text == MESSAGES[STATUS_REASONS[status]][locale]
        assert text != GENERIC[locale]


def test_status_messages():
    assert message_for_status(401) == "请先登录"
    assert message_for_status(429, "zh") == "操作太频繁，请稍后再试"
    assert message_for_status(503, "en") == "The service is temporarily unavailable; please try again later"
    assert message_for_status(418, "en") == message_for_status(400, "en"), "another 4xx reads as 400"
    assert message_for_status(599) == message_for_status(500), "another 5xx reads as 500"
    assert message_for_status(200) == GENERIC["zh-CN"]


def test_message_for_an_error_answer():
    body = {"code": 409, "status": "Conflict", "message": "insufficient community fund: ...",
            "errors": {"reason": "insufficient_fund", "balance_fen": 0}}
    assert message_for_error(body) == "社区基金余额不足"
    assert message_for_error(body, "en") == "The community fund does not have enough money"
    unknown = {"code": 409, "status": "Conflict", "message": "...", "errors": {"reason": "a_reason_of_tomorrow"}}
    assert message_for_error(unknown) == message_for_status(409)
    schema = {"code": 422, "status": "Unprocessable Entity", "message": "the request is not valid",
              "errors": {"json": {"title": ["Missing data for required field."]}}}
    assert message_for_error(schema, "en") == MESSAGES["validation_failed"]["en"]
    assert message_for_error("Bad Gateway", status=502) == MESSAGES["bad_gateway"]["zh-CN"]
    assert message_for_error(None) == GENERIC["zh-CN"]


# -- the module --------------------------------------------------------------------------------------

def test_the_module_uses_the_standard_library_only_and_says_how_to_add_a_reason():
    tree = ast.parse(Path(messages.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"} == set()
    doc = ast.get_docstring(tree) or ""
    assert "gateway" in doc and "web" in doc and "Adding a reason" in doc
