"""The web client's front-end assets are pinned and committed: no CDN at run time.

``web/vendor.json`` pins each npm package (exact version, the registry tarball's sha512 integrity)
and the sha256 of every file committed under ``web/static/vendor/``; ``bin/refresh-vendor``
maintains both. These tests only read files: the script's offline check is imported from its path,
its network part is never run.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.machinery
import importlib.util
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "web" / "vendor.json"
VENDOR = ROOT / "web" / "static" / "vendor"
TEMPLATES = ROOT / "web" / "templates"
SCRIPT = ROOT / "bin" / "refresh-vendor"

# What the templates reference (relative to web/static/), and the major each is pinned to.
ASSETS = {
    "htmx.org": ("vendor/htmx/htmx.min.js", "2.0."),
    "@picocss/pico": ("vendor/pico/pico.min.css", "2."),
    "axe-core": ("vendor/axe-core/axe.min.js", "4."),
    "echarts": ("vendor/echarts/echarts.min.js", "6."),
}
EXACT_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
LICENSE_NAME = re.compile(r"^(LICEN[CS]E|COPYING)", re.IGNORECASE)


def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def listed_files() -> dict[str, str]:
    """Path under web/static/vendor/ → pinned sha256."""
    return {f"{p['dir']}/{f['to']}": f["sha256"] for p in manifest()["packages"] for f in p["files"]}


def committed_files() -> set[str]:
    return {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def refresh_vendor():
    """bin/refresh-vendor as a module (it has no .py suffix); importing it runs nothing."""
    loader = importlib.machinery.SourceFileLoader("refresh_vendor", str(SCRIPT))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("refresh_vendor", loader))
    loader.exec_module(module)
    return module


# -- the pinned list and the committed files ------------------------------------------------------

def test_the_assets_the_templates_reference_are_committed():
    names = {p["name"] for p in manifest()["packages"]}
    assert names == set(ASSETS)
    for path, _major in ASSETS.values():
        file = ROOT / "web" / "static" / path
        assert file.is_file() and file.stat().st_size > 1000, f"web/static/{path} is missing or empty"


def test_every_listed_file_is_committed_with_its_pinned_sha256():
    for rel, pinned in listed_files().items():
        path = VENDOR / rel
        assert path.is_file(), f"web/static/vendor/{rel} is listed in web/vendor.json but not committed"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == pinned, f"web/static/vendor/{rel} changed"


def test_every_committed_file_is_listed():
    assert committed_files() - listed_files().keys() == set()


def test_versions_are_exact_and_in_the_pinned_major():
    for package in manifest()["packages"]:
        version = package["version"]
        assert EXACT_VERSION.match(version), f"{package['name']}: {version!r} is not an exact version"
        assert version.startswith(ASSETS[package["name"]][1]), f"{package['name']} {version}"


def test_each_tarball_is_pinned_by_its_sha512_integrity():
    for package in manifest()["packages"]:
        integrity = package["integrity"]
        assert integrity.startswith("sha512-"), package["name"]
        assert len(base64.b64decode(integrity.removeprefix("sha512-"), validate=True)) == 64


def test_every_package_carries_its_license_file():
    for package in manifest()["packages"]:
        licenses = [f["to"] for f in package["files"] if LICENSE_NAME.match(Path(f["to"]).name)]
        assert licenses, f"{package['name']} has no license file in web/vendor.json"
        for name in licenses:
            assert (VENDOR / package["dir"] / name).stat().st_size > 0


# -- the script's offline check -------------------------------------------------------------------

def test_the_check_passes_on_the_committed_files(refresh_vendor, capsys):
    assert refresh_vendor.check(manifest(), VENDOR) == []
    assert refresh_vendor.main(["--check"]) == 0
    assert "ok: " in capsys.readouterr().out


def test_the_check_reports_a_tampered_missing_or_unlisted_file(refresh_vendor, tmp_path):
    copy = tmp_path / "vendor"
    shutil.copytree(VENDOR, copy)
    htmx = copy / "htmx" / "htmx.min.js"
    htmx.write_bytes(htmx.read_bytes().replace(b"htmx", b"htmz", 1))
    (copy / "pico" / "pico.min.css").unlink()
    (copy / "htmx" / "htmx.js").write_text("// not pinned")

    problems = refresh_vendor.check(manifest(), copy)

    assert len(problems) == 3, problems
    assert any(p.startswith("htmx/htmx.min.js: sha256") for p in problems)
    assert any(p.startswith("pico/pico.min.css: missing") for p in problems)
    assert any(p.startswith("htmx/htmx.js: not listed") for p in problems)


def test_the_check_command_exits_1_naming_the_tampered_file(refresh_vendor, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "vendor"
    shutil.copytree(VENDOR, copy)
    (copy / "axe-core" / "axe.min.js").write_bytes(b"window.axe = {};")
    monkeypatch.setattr(refresh_vendor, "VENDOR", copy)

    assert refresh_vendor.main(["--check"]) == 1
    assert "axe-core/axe.min.js: sha256" in capsys.readouterr().err


# -- nothing from a CDN --------------------------------------------------------------------------

class RemoteAssets(HTMLParser):
    """Collects scripts and stylesheets a page would load from another host."""

    LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch"}
    REMOTE_IMPORT = re.compile(r"""(@import\s+(url\()?|url\(|\bfrom\s+|\bimport\s*\()\s*['"]?(https?:)?//""", re.I)

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in = None

    @staticmethod
    def remote(url: str | None) -> bool:
        return (url or "").strip().lower().startswith(("http://", "https://", "//"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in = tag if tag in ("script", "style") else None
        if tag == "script" and self.remote(attrs.get("src")):
            self.found.append(f"<script src={attrs['src']}>")
        rels = set((attrs.get("rel") or "").lower().split())
        if tag == "link" and rels & self.LOADING_RELS and self.remote(attrs.get("href")):
            self.found.append(f"<link rel={attrs['rel']} href={attrs['href']}>")

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in and self.REMOTE_IMPORT.search(data):
            self.found.append(f"<{self._in}> imports {self.REMOTE_IMPORT.search(data).group(0)!r}")


def remote_assets(html: str) -> list[str]:
    parser = RemoteAssets()
    parser.feed(html)
    parser.close()
    return parser.found


def test_the_cdn_rule_catches_remote_scripts_and_stylesheets_and_allows_local_ones():
    cdn = """
      <script src="https://unpkg.com/htmx.org@2.0.4"></script>
      <link rel="stylesheet" href="//cdn.jsdelivr.net/npm/@picocss/pico@2/css/pico.min.css">
      <style>@import url("https://fonts.googleapis.com/css2?family=Noto+Sans+SC");</style>
      <script type="module">import x from "https://esm.sh/x";</script>
    """
    assert len(remote_assets(cdn)) == 4
    local = """
      <link rel="stylesheet" href="{{ url_for('static', filename='vendor/pico/pico.min.css') }}">
      <script src="{{ url_for('static', filename='vendor/htmx/htmx.min.js') }}" defer></script>
      <link rel="canonical" href="https://example.org/zh/">
      <a href="https://example.org/help">帮助</a>
    """
    assert remote_assets(local) == []


def test_templates_load_no_script_or_stylesheet_from_another_host():
    """Checks whatever templates exist (there may be none yet); the vendored files are asserted above."""
    offenders = {}
    for path in sorted(TEMPLATES.rglob("*.html")) if TEMPLATES.is_dir() else []:
        if found := remote_assets(path.read_text(encoding="utf-8")):
            offenders[path.relative_to(ROOT).as_posix()] = found
    assert offenders == {}


def test_the_vendored_stylesheets_import_nothing_remote():
    for path in VENDOR.rglob("*.css"):
        assert not RemoteAssets.REMOTE_IMPORT.search(path.read_text(encoding="utf-8")), path
