"""Languages: 简体中文 (zh-CN, the default) and English.

The page language is the visitor's explicit choice (the ``lang`` cookie set by ``/lang/<code>``);
without one it is Chinese, whatever the browser's Accept-Language says — the platform serves
Chinese neighbourhoods and English is the exception one asks for. Messages are written in English
in the code and the templates (``_("...")``) and translated in
``web/translations/zh_Hans_CN/LC_MESSAGES/messages.po`` (Babel's name for zh-CN); the catalogue is compiled when the app starts
(no compiled file is committed, so the two cannot drift). Error messages for the API's
``errors.reason`` come from the one catalogue both the gateway and the web client use,
:mod:`cocreate_client.messages`.
"""

from __future__ import annotations

import os
from pathlib import Path

import flask
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

SOURCE = Path(__file__).resolve().parent / "translations"
LOCALES = {"zh-CN": "zh_Hans_CN", "en": "en"}  # the HTML / API language tag -> Babel's name
DEFAULT = "zh-CN"
COOKIE = "lang"


def compile_catalogues(target: Path) -> Path:
    """Compile every ``.po`` under :data:`SOURCE` into ``target`` (same layout); returns ``target``."""
    for po in SOURCE.glob("*/LC_MESSAGES/messages.po"):
        out = target / po.relative_to(SOURCE).with_suffix(".mo")
        out.parent.mkdir(parents=True, exist_ok=True)
        with po.open("rb") as source:
            catalogue = read_po(source)
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # workers may compile at once
        with tmp.open("wb") as sink:
            write_mo(sink, catalogue)
        tmp.replace(out)
    return target


def language_tag() -> str:
    """The page's language as an HTML / HTTP tag: ``zh-CN`` or ``en``."""
    chosen = flask.request.cookies.get(COOKIE) if flask.has_request_context() else None
    return chosen if chosen in LOCALES else DEFAULT


def select_locale() -> str:
    """Flask-Babel's locale selector: Babel's name of the page language."""
    return LOCALES[language_tag()]
