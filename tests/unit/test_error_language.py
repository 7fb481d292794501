"""Errors in the caller's language (issue 19, point 5): :func:`services.kernel.web.error_body` with
the catalogue of :mod:`cocreate_client.messages`, and the field-level messages of every schema of
the services and the gateway.

zh-CN (the default) gives the catalogue's Chinese ``message`` for ``errors.reason`` (else for the
status), the developer's English in ``errors.detail`` and translated field messages; ``en`` gives
the developer's English as it was written. The coverage tests read the schemas the apps use (their
fields' error messages and their validators' texts) and the source for the statuses errors are
answered with, and fail while one has no Chinese.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import flask
import marshmallow as ma
import pytest

from cocreate_client.messages import (
    FIELD_MESSAGES, MESSAGES, STATUS_REASONS, field_errors, field_message, message_for_status,
)
from services.kernel import web
from services.kernel.web import error_body, hostile_json, request_locale

ROOT = Path(__file__).resolve().parents[2]
CJK = re.compile(r"[\u4e00-\u9fff]")
APP_MODULES = ("services.projects.api", "services.volunteers.api", "services.feedback.api", "services.kernel.history",
               "services.kernel.web", "gateway.app")


# -- error_body in each language ---------------------------------------------------------------------

def test_zh_cn_says_the_reason_in_chinese_and_keeps_the_english_as_the_detail():
    body = error_body(409, "insufficient community fund: the balance is 0 fen", {"reason": "insufficient_fund",
                                                                                 "balance_fen": 0}, locale="zh-CN")
    assert body == {"code": 409, "status": "Conflict", "message": "社区基金余额不足",
                    "errors": {"reason": "insufficient_fund", "balance_fen": 0,
                               "detail": "insufficient community fund: the balance is 0 fen"}}


def test_en_is_the_developers_text_unchanged():
    errors = {"reason": "insufficient_fund", "json": {"title": ["Missing data for required field."]}}
    assert error_body(409, "insufficient community fund", errors, locale="en") == {
        "code": 409, "status": "Conflict", "message": "insufficient community fund", "errors": errors}
    assert error_body(404, "no route /x", locale="en-GB")["message"] == "no route /x"


def test_zh_cn_without_a_reason_says_the_status_and_translates_the_field_messages():
    errors = {"json": {"title": ["Missing data for required field."], "colour": ["Unknown field."],
                       "grids": {"0": {"name": ["Length must be between 1 and 100."]}},
                       "level": ["Must be greater than or equal to 1 and less than or equal to 5."],
                       "kind": ["Must be one of: cadre, unit."], "note": ["something no catalogue knows"]},
              "query": {"limit": ["Not a valid integer."]}}
    body = error_body(422, "the request is not valid", errors, locale="zh-CN")
    assert body["message"] == MESSAGES["validation_failed"]["zh-CN"] == message_for_status(422)
    assert body["errors"] == {
        "json": {"title": ["必填项，不能缺少"], "colour": ["不认识的字段，请删除"], "grids": {"0": {"name": ["长度应在1到100之间"]}},
                 "level": ["应不小于1且不大于5"], "kind": ["应为以下之一：cadre, unit"],
                 "note": ["something no catalogue knows"]},
        "query": {"limit": ["应为整数"]}, "detail": "the request is not valid"}


def test_a_reason_not_in_the_catalogue_says_the_status():
    body = error_body(409, "something new", {"reason": "a_reason_of_tomorrow"}, locale="zh-CN")
    assert body["message"] == MESSAGES["conflict"]["zh-CN"]
    assert body["errors"] == {"reason": "a_reason_of_tomorrow", "detail": "something new"}


@pytest.mark.parametrize(("header", "expected"), [
    (None, "zh-CN"), ("", "zh-CN"), ("zh-CN", "zh-CN"), ("en", "en"), ("en-GB,en;q=0.9", "en"), ("fr-FR", "zh-CN"),
    ("fr-FR,en;q=0.5", "en"), ("zh-TW,en;q=0.8", "zh-CN"),
])
def test_the_language_of_a_request(header, expected):
    app = flask.Flask("language")
    with app.test_request_context("/", headers={"Accept-Language": header} if header is not None else {}):
        assert request_locale() == expected
        assert error_body(401, "the token is missing", {"reason": "unauthenticated"})["message"] == (
            "the token is missing" if expected == "en" else "请先登录")


def test_without_a_request_the_language_is_chinese():
    assert request_locale() == "zh-CN"
    assert error_body(503, "down", {"reason": "service_unavailable"})["message"] == "服务暂时不可用，请稍后再试"


# -- field-level messages -----------------------------------------------------------------------------

def _example(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "7" if m.group(1) in ("min", "max", "equal", "n") else "a, b", template)


@pytest.mark.parametrize("template", sorted(FIELD_MESSAGES))
def test_every_field_template_reads_in_chinese(template):
    text = _example(template)
    zh = field_message(text)
    assert zh != text and CJK.search(zh) and "{" not in zh, (text, zh)
    assert field_message(text, "en") == text


def test_field_errors_keep_keys_and_values_that_are_not_texts():
    errors = {"json": {"title": ["Unknown field."]}, "limit": 3, "roles": ["cadre", "admin"], "ok": True, "no": None}
    assert field_errors(errors) == {"json": {"title": ["不认识的字段，请删除"]}, "limit": 3, "roles": ["cadre", "admin"],
                                    "ok": True, "no": None}
    assert field_errors(errors, "en") == errors


def test_a_number_placeholder_takes_numbers_only():
    """"Must be greater than or equal to 1." is not read as "greater than" with "or equal to 1"."""
    assert field_message("Must be greater than or equal to 1.") == "应不小于1"
    assert field_message("Must be greater than 1.") == "应大于1"
    assert field_message("Must be greater than lots.") == "Must be greater than lots."


def _messages_of_validator(validator) -> list[str]:
    if isinstance(validator, ma.validate.Range):
        if validator.error:
            return [validator.error.format(input="x", min=validator.min, max=validator.max)]
        which = ("message_all" if validator.min is not None and validator.max is not None
                 else "message_min" if validator.min is not None else "message_max")
        return [getattr(validator, which).format(min=validator.min, max=validator.max)]
    if isinstance(validator, ma.validate.Length):
        if validator.equal is not None:
            messages = [validator.message_equal]
        elif validator.min is not None and validator.max is not None:
            messages = [validator.message_all]
        else:
            messages = [validator.message_min if validator.min is not None else validator.message_max]
        return [validator._format_error("x", message) for message in messages]
    if isinstance(validator, (ma.validate.OneOf, ma.validate.Regexp, ma.validate.Equal, ma.validate.NoneOf,
                              ma.validate.URL, ma.validate.Email)):
        return [validator._format_error("x")]
    raise AssertionError(f"a validator this test does not know: {validator!r} — teach it its messages")


def _messages_of_field(field: ma.fields.Field) -> list[str]:
    found = []
    for key, template in field.error_messages.items():
        if key == "invalid_awareness" and not getattr(field, "AWARENESS", None):
            continue  # only an aware or naive date-time says it
        found.append(template.format(obj_type=getattr(field, "OBJ_TYPE", ""), awareness=getattr(field, "AWARENESS", ""),
                                     input="x", choices="a, b"))
    for validator in field.validators:
        found += _messages_of_validator(validator)
    inner = [getattr(field, "inner", None), getattr(field, "key_field", None), getattr(field, "value_field", None),
             *getattr(field, "tuple_fields", ())]
    for child in inner:
        if child is not None:
            found += _messages_of_field(child)
    return found


def _schema_classes(schema_class: type) -> list[type]:
    found = []
    for sub in schema_class.__subclasses__():
        if sub.__module__.split(".")[0] in ("services", "gateway"):
            found.append(sub)
        found += _schema_classes(sub)
    return found


def schema_messages(schema_classes) -> dict[str, str]:
    """Every field-level message the schemas can answer with -> where (schema.field)."""
    found: dict[str, str] = {}
    for schema_class in schema_classes:
        schema = schema_class()
        for message in schema.error_messages.values():
            found.setdefault(message, schema_class.__name__)
        for name, field in schema.fields.items():
            for message in _messages_of_field(field):
                found.setdefault(message, f"{schema_class.__module__}.{schema_class.__name__}.{name}")
    return found


@pytest.fixture(scope="module")
def app_schemas() -> list[type]:
    for module in APP_MODULES:
        importlib.import_module(module)
    return sorted(set(_schema_classes(ma.Schema)), key=lambda c: (c.__module__, c.__qualname__))


def test_every_field_message_of_every_schema_has_a_chinese_translation(app_schemas):
    assert len(app_schemas) >= 40, [c.__name__ for c in app_schemas]
    found = schema_messages(app_schemas)
    # the scan sees the kinds of messages the schemas have: marshmallow's, validators', the project's own
    assert {"Missing data for required field.", "Unknown field.", "Not a valid integer.", "Not a valid boolean.",
            "Not a valid aware datetime.", "1-64 letters, digits, '_', '-' or '.'", "six digits",
            "Must be greater than or equal to -9223372036854775808 and less than or equal to 9223372036854775807.",
            } <= set(found)
    assert any(m.startswith("Must be one of: ") for m in found) and any(m.startswith("Length must") for m in found)
    untranslated = {message: where for message, where in found.items() if not CJK.search(field_message(message))}
    assert untranslated == {}, "add these to _FIELD_TEMPLATES in cocreate_client/messages.py"


def test_the_schema_scan_catches_a_message_without_a_translation():
    class MadeUp(web.Schema):
        colour = ma.fields.String(validate=ma.validate.Regexp(r"^[a-z]+$", error="lower-case letters only"))
        size = ma.fields.Integer(validate=ma.validate.Range(min=1, max=9))

    found = schema_messages([MadeUp])
    assert "lower-case letters only" in found
    assert "Must be greater than or equal to 1 and less than or equal to 9." in found
    assert field_message("lower-case letters only") == "lower-case letters only"  # so the test above would fail


def _validation_error_literals() -> dict[str, str]:
    """The texts of ``ValidationError("...")`` raised in the services' and the gateway's source."""
    found = {}
    for folder in ("services", "gateway"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                        == "ValidationError" and node.args and isinstance(node.args[0], ast.Constant)):
                    found[node.args[0].value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


def test_every_validation_error_the_schemas_raise_has_a_chinese_translation():
    found = _validation_error_literals()
    assert "give exactly one of version or at" in found
    assert {m: where for m, where in found.items() if not CJK.search(field_message(m))} == {}


def test_the_request_checks_field_messages_read_in_chinese():
    deep = b"[" * 40 + b"]" * 40
    samples = [hostile_json(deep), hostile_json(b'{"a": "x\\u0000"}'), hostile_json(b'{"a": "\\ud800"}'),
               hostile_json(b'{"a\\u0000": 1}'), hostile_json(b'{"a": 99999999999999999999}')]
    for status, _message, errors in samples:
        for leaf in _leaves(errors):
            assert CJK.search(field_message(leaf)), leaf
    for size in (web.MAX_URL_BYTES, 1024):
        assert field_message(f"at most {size} bytes") == f"最多{size}字节"


def _leaves(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)


# -- statuses without a reason ---------------------------------------------------------------------------

def _answered_statuses() -> dict[int, str]:
    """The statuses of ``error_response(status, ...)`` / ``error_body`` calls and of the error
    classes (``status = 409``) in the services' and the gateway's source."""
    found = {}
    for folder in ("services", "gateway"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("error_response", "error_body")
                        and node.args and isinstance(node.args[0], ast.Constant)):
                    found[node.args[0].value] = f"{path.relative_to(ROOT)}:{node.lineno}"
                if (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "status" for t in node.targets)
                        and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int)
                        and 400 <= node.value.value < 600):
                    found[node.value.value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


def test_every_status_answered_without_a_reason_has_its_own_message():
    found = _answered_statuses()
    assert {401, 403, 404, 405, 409, 413, 414, 422, 429, 503, 504} <= set(found)
    assert {status: where for status, where in found.items() if status not in STATUS_REASONS} == {}
    # and the statuses werkzeug and flask-smorest answer with (400 bad JSON, 415, 500)
    assert {400, 415, 500} <= set(STATUS_REASONS)
