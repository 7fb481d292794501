"""The web client's pure parts: its settings, its import boundary (a client of the public API
only), its message catalogue against the messages in its code and templates, and the helpers that
read a form or a redirect target. No app is built here (that needs the session database: see
``tests/integration/test_web_app.py``); a bare Flask app with the blueprints gives the request
context and ``url_for``."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import flask
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from babel.support import Translations

from web import account, config, i18n, labels, pages, resident

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
PO = WEB / "translations" / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
KEYWORDS = {name: None for name in ("_", "gettext", "_l", "lazy_gettext")}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
SECRET = {"WEB_SECRET_KEY": "a-web-secret-of-enough-length"}


# -- settings ----------------------------------------------------------------------------------

def test_defaults_apply_when_only_the_secret_is_set():
    loaded = config.load(dict(SECRET))
    defaults = {field.name: field.default for field in dataclasses.fields(config.WebSettings)}
    defaults["secret_key"] = SECRET["WEB_SECRET_KEY"]
    assert dataclasses.asdict(loaded) == defaults
    assert loaded.gateway_url == "http://127.0.0.1:8000"
    assert loaded.cookie_secure is True and loaded.forward_client_address is True
    assert loaded.trusted_proxies == 0 and loaded.session_hours == 8
    assert loaded.effective_database_url == f"sqlite:///{Path('var').resolve()}/web.db"


def test_values_are_parsed_to_their_types():
    loaded = config.load({**SECRET, "WEB_COOKIE_SECURE": "false", "WEB_SESSION_HOURS": "2",
                          "WEB_UPSTREAM_TIMEOUT_SECONDS": "1.5", "WEB_DATA_DIR": "/tmp/x",
                          "WEB_FORWARD_CLIENT_ADDRESS": "off", "WEB_TRUSTED_PROXIES": "1"})
    assert loaded.cookie_secure is False and loaded.forward_client_address is False
    assert loaded.session_hours == 2 and loaded.trusted_proxies == 1
    assert loaded.upstream_timeout_seconds == 1.5 and loaded.data_dir == Path("/tmp/x")
    assert loaded.effective_database_url == "sqlite:////tmp/x/web.db"


def test_a_postgresql_url_gets_the_psycopg_driver():
    for given in ("postgresql://db/web", "postgres://db/web"):
        assert config.load({**SECRET, "WEB_DATABASE_URL": given}).effective_database_url == "postgresql+psycopg://db/web"


def test_the_web_prefix_beats_the_platform_fallback():
    both = config.load({**SECRET, "WEB_LOG_LEVEL": "DEBUG", "COCREATE_LOG_LEVEL": "WARNING",
                        "WEB_DATA_DIR": "/srv/web", "COCREATE_DATA_DIR": "/srv/platform"})
    assert both.log_level == "DEBUG" and both.data_dir == Path("/srv/web")
    fallback = config.load({**SECRET, "COCREATE_LOG_LEVEL": "WARNING", "COCREATE_DATA_DIR": "/srv/platform",
                            "WEB_LOG_LEVEL": ""})  # empty counts as unset
    assert fallback.log_level == "WARNING" and fallback.data_dir == Path("/srv/platform")


def test_only_the_platform_wide_settings_fall_back():
    """Above all, the services' database and secrets are never the web client's."""
    loaded = config.load({**SECRET, "COCREATE_DATABASE_URL": "postgresql://services/db",
                          "COCREATE_GATEWAY_URL": "http://elsewhere", "COCREATE_COOKIE_SECURE": "maybe",
                          "COCREATE_SESSION_HOURS": "x"})
    assert loaded.database_url == "" and loaded.gateway_url == "http://127.0.0.1:8000"
    assert loaded.cookie_secure is True and loaded.session_hours == 8
    with pytest.raises(config.SettingsError, match="WEB_SECRET_KEY"):
        config.load({"COCREATE_SECRET_KEY": "platform-wide-secret-key"})
    wide = {field.name for field in dataclasses.fields(config.WebSettings) if len(config.names(field)) == 2}
    assert wide == {"data_dir", "log_level"}


def test_overrides_beat_the_environment():
    loaded = config.load({**SECRET, "WEB_SESSION_HOURS": "3"}, session_hours=5)
    assert loaded.session_hours == 5


@pytest.mark.parametrize("environ", [{}, {"WEB_SECRET_KEY": "too-short"}, {"WEB_SECRET_KEY": ""}],
                         ids=["missing", "short", "empty"])
def test_a_missing_or_short_secret_key_is_refused_naming_the_variable(environ):
    with pytest.raises(config.SettingsError, match="WEB_SECRET_KEY"):
        config.load(environ)


@pytest.mark.parametrize(("name", "value"), [
    ("WEB_COOKIE_SECURE", "maybe"), ("WEB_FORWARD_CLIENT_ADDRESS", "2"), ("WEB_SESSION_HOURS", "eight"),
    ("WEB_TRUSTED_PROXIES", "1.5"), ("WEB_UPSTREAM_TIMEOUT_SECONDS", "soon"),
])
def test_a_bad_value_is_refused_naming_the_variable(name, value):
    with pytest.raises(config.SettingsError, match=name):
        config.load({**SECRET, name: value})


def test_session_hours_must_be_positive():
    with pytest.raises(config.SettingsError, match="WEB_SESSION_HOURS"):
        config.load({**SECRET, "WEB_SESSION_HOURS": "0"})


def test_describe_has_a_row_for_every_setting():
    rows = config.describe()
    fields = dataclasses.fields(config.WebSettings)
    assert len(rows) == len(fields)
    for field, (names, default, meaning) in zip(fields, rows):
        assert names.split(" / ") == list(config.names(field))
        assert names.split(" / ")[0] == f"WEB_{field.name.upper()}"
        assert meaning == field.metadata["doc"] and meaning
        assert default == ("" if field.default in ("", None) else str(field.default))
    shown = {names: default for names, default, _meaning in rows}
    assert shown["WEB_SECRET_KEY"] == "" and shown["WEB_COOKIE_SECURE"] == "True"
    assert shown["WEB_DATA_DIR / COCREATE_DATA_DIR"] == "var"


# -- the import boundary -------------------------------------------------------------------------

def _first_party() -> set[str]:
    return {path.parent.name for path in ROOT.glob("*/__init__.py")}


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module that ``path`` imports (top-level, inside functions and by importlib), with the
    line; a relative import is resolved against the ``web`` package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = path.relative_to(ROOT).parent.parts
                base = package[:len(package) - node.level + 1]
                found.append((".".join([*base, *([node.module] if node.module else [])]) or ".", node.lineno))
            else:
                found.append((node.module, node.lineno))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
            found.append((node.args[0].value, node.lineno))
    return found


def test_the_web_client_imports_no_service_or_gateway_code():
    first_party = _first_party()
    assert {"services", "gateway", "cocreate_client", "web"} <= first_party  # the scan can tell them apart
    files = sorted(WEB.rglob("*.py"))
    assert {p.name for p in files} >= {"app.py", "upstream.py", "account.py", "pages.py", "resident.py"}
    seen, wrong, third_party = set(), [], set()
    for path in files:
        for module, line in _imports(path):
            top = module.split(".")[0]
            seen.add(top)
            if top in first_party - {"cocreate_client", "web"} or top in ("", "."):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif top not in first_party and top not in sys.stdlib_module_names and top != "__future__":
                spec = importlib.util.find_spec(top)  # third party: installed, not a folder of this repository
                origin = Path(spec.origin or next(iter(spec.submodule_search_locations))).resolve()
                assert ROOT not in origin.parents or ROOT / ".venv" in origin.parents, \
                    f"{path.relative_to(ROOT)}:{line} imports {module} from {origin}"
                third_party.add(top)
    assert wrong == []
    # the scan sees what the web client does import: it would see services or gateway too
    assert {"cocreate_client", "web", "flask", "urllib"} <= seen
    assert {"flask", "flask_babel", "flask_session", "babel"} <= third_party


def test_the_import_scan_catches_a_forbidden_import(tmp_path):
    sample = tmp_path / "web" / "sample.py"
    sample.parent.mkdir()
    sample.write_text("import json\n\ndef f():\n    from services.kernel import config\n"
                      "    import gateway.app\n    return __import__('services.projects')\n", encoding="utf-8")
    modules = {module for module, _line in _imports(sample)}
    assert modules == {"json", "services.kernel", "gateway.app", "services.projects"}


# -- the message catalogue -----------------------------------------------------------------------

def _extracted() -> dict[str, list[str]]:
    """Every message of the code and templates, as ``make translations`` extracts them (the
    method map of ``web/babel.cfg``, run from the repository root), with where it is used."""
    with (WEB / "babel.cfg").open(encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    assert ("web/**.py", "python") in method_map and ("web/templates/**.html", "jinja2") in method_map

    def only_web(dirpath: str) -> bool:
        return Path(dirpath).resolve().relative_to(ROOT).parts[:1] in ((), ("web",))

    found: dict[str, list[str]] = {}
    for filename, lineno, msgid, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=KEYWORDS, directory_filter=only_web):
        assert isinstance(msgid, str), f"{filename}:{lineno}: plural messages are not translated"
        found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


@pytest.fixture(scope="module")
def extracted() -> dict[str, list[str]]:
    return _extracted()


@pytest.fixture(scope="module")
def catalogue():
    with PO.open("rb") as source:
        return read_po(source, locale="zh_Hans_CN")


def test_extraction_finds_the_code_and_the_template_messages(extracted):
    assert len(extracted) > 100
    places = {place.split(":")[0] for where in extracted.values() for place in where}
    assert {"web/labels.py", "web/resident.py", "web/templates/base.html", "web/templates/macros.html"} <= places
    assert "Sign in" in extracted and "Co-planning" in extracted and "%(count)s projects" in extracted


def test_every_message_has_a_chinese_translation(extracted, catalogue):
    missing = {msgid: where for msgid, where in extracted.items()
               if catalogue.get(msgid) is None or not catalogue.get(msgid).string}
    assert missing == {}
    fuzzy = [m.id for m in catalogue if m.id and m.fuzzy]
    assert fuzzy == []


def test_placeholders_match_and_translations_are_chinese(catalogue):
    problems = []
    for entry in catalogue:
        if not entry.id:
            continue
        assert isinstance(entry.id, str), f"unexpected plural entry {entry.id!r}"
        if sorted(PLACEHOLDER.findall(entry.id)) != sorted(PLACEHOLDER.findall(entry.string)):
            problems.append(f"placeholders differ: {entry.id!r} -> {entry.string!r}")
        if not CJK.search(entry.string):
            problems.append(f"not Chinese: {entry.id!r} -> {entry.string!r}")
    assert problems == []


def test_the_catalogue_has_no_message_the_code_no_longer_uses(extracted, catalogue):
    unused = sorted(entry.id for entry in catalogue if entry.id and entry.id not in extracted)
    assert unused == []
    assert not catalogue.obsolete


def test_compiled_catalogue_loads_with_babel(tmp_path):
    target = i18n.compile_catalogues(tmp_path / "translations")
    assert target == tmp_path / "translations"
    assert (target / "zh_Hans_CN" / "LC_MESSAGES" / "messages.mo").is_file()
    assert not list(target.rglob("*.tmp"))
    translations = Translations.load(str(target), locales=["zh_Hans_CN"])
    assert translations.gettext("Sign in") == "登录"
    assert translations.gettext("Welcome, %(name)s.") % {"name": "王"} == "欢迎，王。"
    i18n.compile_catalogues(target)  # again, over the first: the same file
    assert Translations.load(str(target), locales=["zh_Hans_CN"]).gettext("Sign in") == "登录"


# -- helpers that read the request --------------------------------------------------------------

@pytest.fixture(scope="module")
def bare_app() -> flask.Flask:
    app = flask.Flask("web-unit")
    for blueprint in (pages.blueprint, account.blueprint, resident.blueprint):
        app.register_blueprint(blueprint)
    return app


@pytest.mark.parametrize(("target", "expected"), [
    ("/me", "/me"), ("/projects/p1?tab=history#vote", "/projects/p1?tab=history#vote"), ("/", "/"),
    ("//evil.example", "/"), ("//evil.example/x", "/"), ("https://evil.example/x", "/"),
    ("http:evil.example", "/"), ("javascript:alert(1)", "/"), ("evil.example", "/"), ("", "/"), (None, "/"),
    # a browser reads a backslash as a slash and drops tabs and newlines: all three are "//evil.example"
    ("/\\evil.example", "/"), ("/\t/evil.example", "/"), ("/\n/evil.example", "/"),
])
def test_safe_next_keeps_only_local_paths(bare_app, target, expected):
    with bare_app.test_request_context("/signin"):
        assert account.safe_next(target) == expected


@pytest.mark.parametrize(("typed", "fen"), [
    ("12", 1200), ("12.5", 1250), ("12.50", 1250), (" 7.05 ", 705), ("1,000", 100_000), ("0.01", 1),
    ("100000000", 10_000_000_000),
    ("0", None), ("0.00", None), ("-1", None), ("1.234", None), ("abc", None), ("1e3", None), ("", None),
    (".5", None), ("12.", 1200), ("1.-5", None), ("+5", None), ("100000000.01", None), ("9" * 30, None),
    ("9" * 5000, None), ("²", None), ("1.²", None),
])
def test_amounts_in_yuan_are_read_as_fen(bare_app, typed, fen):
    with bare_app.test_request_context("/propose", method="POST", data={"requested": typed}):
        assert resident._fen("requested") == fen


def test_an_absent_amount_is_none(bare_app):
    with bare_app.test_request_context("/propose", method="POST", data={}):
        assert resident._fen("requested") is None


@pytest.mark.parametrize(("typed", "value"), [
    ("3", 3), ("1", 1), ("5", 5), ("0", None), ("6", None), ("-1", None), ("2.5", None), ("x", None),
    ("²", None), ("9" * 5000, None),
])
def test_small_whole_numbers_are_read_within_bounds(bare_app, typed, value):
    with bare_app.test_request_context("/rate/s1", method="POST", data={"level": typed}):
        assert resident._int("level", low=1, high=5) == value


@pytest.mark.parametrize(("fen", "shown"), [
    (0, "¥0.00"), (5, "¥0.05"), (100, "¥1.00"), (123456, "¥1,234.56"), (-150, "-¥1.50"),
    (-123456789, "-¥1,234,567.89"), (None, "—"),
])
def test_yuan_shows_fen_as_yuan(fen, shown):
    assert labels.yuan(fen) == shown


def test_labels_fall_back_to_the_code():
    assert labels.label({"a": "A"}, "a") == "A"
    assert labels.label({"a": "A"}, "new_code") == "new_code"
    assert labels.label({}, None) == "—"
