"""The documentation stays true: a short README with the two commands, links that resolve, a
configuration page generated from the settings' own docs, and a runbook section for every alert."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from services.kernel import config_docs
from services.kernel.config import GatewaySettings, ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = sorted({ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("services/*/README.md"),
                ROOT / "gateway" / "README.md", ROOT / "bench" / "README.md"})
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_the_readme_is_short_and_holds_the_two_commands():
    assert len(README.splitlines()) <= 150
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun: venv" in makefile and "\ntest: venv" in makefile


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings (outside code blocks)."""
    found, in_code = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert broken == []


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [no anchor](#nowhere)\n")
    assert [t for t in links(page) if not (tmp_path / t.partition("#")[0]).exists() and t.partition("#")[0]] == [
        "missing.md"]
    assert "nowhere" not in anchors(page) and "title" in anchors(page)


def test_the_readme_links_every_page_of_the_documentation():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    expected = {ROOT / "docs" / name for name in ("architecture.md", "configuration.md", "operations.md",
                                                   "privacy.md", "testing.md")}
    expected |= {ROOT / "services" / s / "README.md" for s in ("projects", "volunteers", "feedback")}
    expected |= {ROOT / "gateway" / "README.md", ROOT / "bench" / "README.md", ROOT / "docs" / "adr" / "README.md"}
    assert expected - linked == set()


def test_every_decision_has_its_file_and_the_index_lists_them():
    index = (ROOT / "docs" / "adr" / "README.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in (ROOT / "docs" / "adr").glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert files and [f"({name})" in index for name in files] == [True] * len(files)


# -- configuration ----------------------------------------------------------------------------------

def test_the_configuration_page_is_what_the_settings_generate():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    generated = page.split(config_docs.START, 1)[1].split(config_docs.END, 1)[0]
    assert generated.strip() == config_docs.render().strip(), "run: python -m services.kernel.config_docs --write"


@pytest.mark.parametrize("settings_class", [ServiceSettings, GatewaySettings])
def test_every_setting_is_on_the_configuration_page(settings_class):
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [f"COCREATE_{field.name.upper()}" for field in dataclasses.fields(settings_class)
               if not field.metadata.get("internal") and f"`COCREATE_{field.name.upper()}`" not in page]
    assert missing == []


# -- operations -------------------------------------------------------------------------------------

def test_every_alert_has_its_runbook_section():
    rules = yaml.safe_load((ROOT / "deploy/k8s/base/monitoring/prometheusrule.yaml").read_text(encoding="utf-8"))
    alerts = {rule["alert"]: rule["annotations"]["runbook"] for group in rules["spec"]["groups"]
              for rule in group["rules"] if "alert" in rule}
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### (Cocreate\w+)\n(.*?)(?=^##|\Z)", page, flags=re.M | re.S))
    assert set(sections) == set(alerts)
    for alert, runbook in alerts.items():
        runbook = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", r"<\1>", runbook)  # as the page writes labels
        first_step = runbook.strip().split(". ")[0]
        assert first_step in sections[alert].replace("\n", " "), alert


# -- tokens and roles -------------------------------------------------------------------------------

def test_the_gateway_page_lists_every_claim_and_every_role():
    from services.kernel.auth import REQUIRED_CLAIMS, TOKEN_CLAIMS
    from services.kernel.model import ROLE_MEANINGS

    page = (ROOT / "gateway" / "README.md").read_text(encoding="utf-8")
    section = page.split("## Tokens and roles", 1)[1].split("\n## ", 1)[0]
    for claim in TOKEN_CLAIMS:
        required = f"- `{claim}` (required)" in section
        assert required == (claim in REQUIRED_CLAIMS) and f"- `{claim}`" in section, claim
    listed = re.findall(r"^\| `(\w+)` \| (.+?) \| (.+?) \|$", section, flags=re.M)
    assert [(role, zh, en) for role, zh, en in listed] == [(r, zh, en) for r, (zh, en) in ROLE_MEANINGS.items()]
