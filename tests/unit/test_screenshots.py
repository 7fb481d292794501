"""The web client's screenshots (``make screenshots`` → ``bin/screenshots`` → docs/screenshots/)
stay true to the documentation: every picture a page of the documentation shows is there, and
the directory holds exactly the files the script's page list makes — PNGs of the phone's and the
desktop's width, small enough to keep in git."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import re
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bin" / "screenshots"
SHOTS = ROOT / "docs" / "screenshots"
PAGES = sorted({ROOT / "README.md", ROOT / "web" / "README.md", *ROOT.glob("docs/**/*.md"),
                *ROOT.glob("services/*/README.md"), ROOT / "gateway" / "README.md", ROOT / "bench" / "README.md"})
# a markdown image or link's target, or an HTML src or href
TARGET = re.compile(r"\]\(([^)\s]+)\)|\b(?:src|href)=\"([^\"]+)\"")
MAX_TOTAL_BYTES = 4 * 1024 * 1024


@functools.cache
def script():
    """bin/screenshots as a module (it has no .py suffix); importing it starts nothing."""
    loader = importlib.machinery.SourceFileLoader("screenshots_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # its dataclass looks its module up
    loader.exec_module(module)
    return module


def screenshot_references(page: Path) -> list[Path]:
    """Every file under docs/screenshots/ that ``page`` shows or links (markdown or HTML)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    found = []
    for groups in TARGET.findall(text):
        target = next(g for g in groups if g)
        if re.match(r"^[a-z]+:", target):
            continue
        path = (page.parent / target.partition("#")[0]).resolve()
        if path.parent == SHOTS.resolve() and path not in found:
            found.append(path)
    return found


def missing_references(pages) -> list[str]:
    return sorted({f"{page.name}: {path.name}" for page in pages for path in screenshot_references(page)
                   if not path.exists()})


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_every_screenshot_the_documentation_shows_is_there():
    assert missing_references(PAGES) == []


def test_the_web_client_and_the_readme_show_screenshots_of_both_sizes():
    shown = {path.name for path in screenshot_references(ROOT / "web" / "README.md")}
    assert any(name.startswith("phone-") for name in shown) and any(name.startswith("desktop-") for name in shown)
    assert screenshot_references(ROOT / "README.md") != []


def test_the_directory_holds_exactly_the_scripts_pages():
    made = script().file_names()
    assert len(made) == len(set(made))
    assert sorted(p.name for p in SHOTS.iterdir()) == sorted(made)


def test_every_page_of_the_script_is_documented_in_the_web_clients_readme():
    shown = {path.name for path in screenshot_references(ROOT / "web" / "README.md")}
    pages = {shot.name for shot in script().PAGES}
    undocumented = {name for name in pages if f"phone-{name}.png" not in shown and f"desktop-{name}.png" not in shown}
    assert undocumented == set()


def test_the_screenshots_are_pngs_of_the_two_widths_and_small():
    widths = {name: size["width"] for name, size in script().VIEWPORTS.items()}
    assert widths == {"phone": 375, "desktop": 1280}
    total = 0
    for path in sorted(SHOTS.glob("*.png")):
        width, height = png_size(path)
        assert width == widths[path.name.split("-", 1)[0]], path.name  # device scale factor 1
        assert 0 < height <= 4 * 812, path.name
        total += path.stat().st_size
    assert total < MAX_TOTAL_BYTES, f"{total / 1024 / 1024:.1f} MB"


def test_the_checks_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"![a]({SHOTS}/phone-gone.png) [elsewhere](other.md)\n"
                    f'<a href="{SHOTS}/desktop-community.png"><img src="{SHOTS}/desktop-community.png" alt="b"></a>\n')
    assert missing_references([page]) == ["page.md: phone-gone.png"]
    assert [p.name for p in screenshot_references(page)] == ["phone-gone.png", "desktop-community.png"]
    fake = tmp_path / "x.png"
    fake.write_bytes(b"GIF89a" + bytes(30))
    try:
        png_size(fake)
    except AssertionError:
        pass
    else:
        raise AssertionError("a GIF passed for a PNG")
