"""Fixtures of the browser tests: the local platform (every Procfile process, the web client
included) filled by ``make demo``'s data, and the distribution's Chromium driven by Playwright,
headless, at a desktop's and a phone's width.

Chromium comes from the distribution (``.ci/run`` installs the ``chromium`` and ``fonts-noto-cjk``
packages); Playwright's own browser download is not used. Without Chromium the tests are skipped
with the reason, except under CI (``COCREATE_REQUIRE_ALL_TOOLS=1``) where they fail.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.platform import LocalPlatform

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "web" / "static" / "vendor" / "axe-core" / "axe.min.js"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 812}}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


@dataclasses.dataclass
class Site:
    platform: LocalPlatform
    made: dict
    users_file: Path

    @property
    def web(self) -> str:
        return self.platform.url("web")

    @property
    def gateway(self) -> str:
        return self.platform.url("gateway")


@pytest.fixture(scope="package")
def site(tmp_path_factory):
    """The platform with the demo community 新阳社区 (``xinyang``), for every browser test; stopped
    when the browser tests are done (package scope), not at the end of the whole run."""
    from cocreate_client import demo

    workdir = tmp_path_factory.mktemp("browser-platform")
    users_file = workdir / "var" / "users.json"
    env = {"COCREATE_USERS_FILE": str(users_file), "WEB_SECRET_KEY": "browser-test-key-0123456789",
           "WEB_COOKIE_SECURE": "false", "GATEWAY_TRUSTED_PROXIES": "1", "GUNICORN_WORKERS": "1",
           # Every member's project page and dashboard holds a live stream while it is open, and a
           # little after (until its next keep-alive finds the browser gone): the same demo members
           # open page after page in test after test, more than the cap of a person's own tabs.
           "GATEWAY_LIVE_STREAMS_PER_CALLER": "50"}
    with LocalPlatform(workdir, env=env) as platform:
        made = demo.fill(platform.url("gateway"), users_file)
        yield Site(platform, made, users_file)


@pytest.fixture(scope="package")
def browser():
    chromium = require_tool("chromium", "Debian packages chromium and fonts-noto-cjk; .ci/run installs them")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request) -> dict:
    return VIEWPORTS[request.param]


def new_page(browser, viewport: dict, *, locale: str = "en-US"):
    """A fresh visitor (own cookies). The browser's language is English on purpose: the pages must
    still be Chinese unless the visitor picks English. CSP is bypassed only so that the tests can
    inject axe-core."""
    context = browser.new_context(viewport=viewport, locale=locale, bypass_csp=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    return page


@pytest.fixture
def page(browser, viewport):
    p = new_page(browser, viewport)
    yield p
    p.context.close()


def sign_in(page, web: str, username: str, password: str = "demo") -> None:
    page.goto(f"{web}/signin")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector(".flash", state="visible")
    assert "欢迎" in page.inner_text(".flashes"), page.inner_text("main")


def sign_out(page) -> None:
    page.get_by_role("button", name="退出登录").click()
    page.wait_for_selector("text=您已退出登录")


def accessibility_violations(page) -> list[dict]:
    """axe-core's serious and critical violations of the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def wait_until(condition, timeout: float = 30.0, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def text_of(page) -> str:
    return re.sub(r"\s+", " ", page.inner_text("body"))
