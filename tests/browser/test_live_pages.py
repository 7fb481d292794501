"""Live pages in a real browser: a project's page and the community dashboard change without a
reload when something happens elsewhere (the gateway's live stream, opened by the page with a
stream ticket); what a person is typing is not swept away; axe-core on the live parts."""

from __future__ import annotations

import re
import uuid

import pytest

from cocreate_client import Client
from tests.browser.conftest import accessibility_violations, new_page, sign_in, wait_until

pytestmark = pytest.mark.browser
C = "xinyang"


def client(site, username: str) -> Client:
    return Client(site.gateway, retries=2).login(username, "demo")


def propose(site, username: str, title: str) -> str:
    return client(site, username).propose(
        community_id=C, grid_id="g1", title=title, category="environment", description="实时更新测试",
        location="新阳社区", estimated_cost_fen=100_000, requested_fen=50_000)["project_id"]


def cosigners(page) -> str:
    return re.sub(r"\s+", "", page.locator("#live-summary .figures article").nth(1).inner_text())


def test_a_project_page_shows_a_cosignature_made_elsewhere_without_reload(site, browser, viewport):
    pid = propose(site, "res12", f"楼道灯换成感应灯 {uuid.uuid4().hex[:6]}")
    page = new_page(browser, viewport)
    try:
        sign_in(page, site.web, "res13")
        page.goto(f"{site.web}/projects/{pid}")
        page.wait_for_selector("#live[data-state=open]", state="attached")
        page.evaluate("window.stillTheSamePage = true")
        assert "0/" in cosigners(page)

        client(site, "res14").cosign(pid)

        wait_until(lambda: "1/" in cosigners(page), timeout=30)
        assert page.evaluate("window.stillTheSamePage") is True  # no reload, no navigation
        assert re.search(r"\d\d:\d\d", page.inner_text("#live-status"))
        assert "已" in page.inner_text("#live-status")  # said in Chinese, politely (role=status)
        assert accessibility_violations(page) == []

        # Enough co-signatures: the proposal goes to deliberation, and the page's buttons follow.
        for username in ("res1", "res2", "res3", "res4", "res5"):
            client(site, username).cosign(pid)
        page.wait_for_selector("#opinion-text", timeout=30_000)
        assert page.evaluate("window.stillTheSamePage") is True
        # Half-typed opinion: the part holding it is not replaced under the person's fingers,
        # while the rest of the page shows someone else's opinion.
        page.locator("#opinion-text").fill("我支持，但希望晚上亮度低一点")
        client(site, "res14").opinion(pid, "support", "感应灯省电又方便")
        page.wait_for_selector("#live-detail >> text=感应灯省电又方便", timeout=30_000)
        assert page.locator("#opinion-text").input_value() == "我支持，但希望晚上亮度低一点"
        assert page.evaluate("window.stillTheSamePage") is True
    finally:
        page.context.close()


def test_the_dashboard_redraws_when_a_project_is_proposed(site, browser, viewport):
    page = new_page(browser, viewport)
    try:
        sign_in(page, site.web, "chen")
        page.goto(f"{site.web}/c/{C}/dashboard")
        page.wait_for_selector("#live[data-state=open]", state="attached")
        page.wait_for_selector("[data-chart=stages][data-drawn=true]")
        page.evaluate("window.stillTheSamePage = true")
        charts_before = page.text_content("#dashboard-charts")
        # A person reading a chart's figures: the table stays open, the focus on its summary.
        stages = page.locator("section[aria-labelledby=stages-h] details")
        stages.locator("summary").focus()
        stages.evaluate("d => { d.open = true; }")

        propose(site, "res10", f"小区门口加装雨棚 {uuid.uuid4().hex[:6]}")

        wait_until(lambda: page.text_content("#dashboard-charts") != charts_before, timeout=30)
        assert page.evaluate("window.stillTheSamePage") is True
        page.wait_for_selector("[data-chart=stages][data-drawn=true]")  # drawn again in the new part
        assert int(page.get_attribute("#live", "data-updates")) >= 1
        assert page.evaluate("document.getElementById('stages-h').closest('section').querySelector('details').open")
        assert page.evaluate("document.activeElement.closest('section[aria-labelledby=stages-h] details') !== null")
        hours = page.locator("section[aria-labelledby=hours-h] details")
        assert hours.evaluate("d => d.open") is False  # what was closed stays closed
        assert accessibility_violations(page) == []
    finally:
        page.context.close()


def test_a_visitor_gets_no_stream_and_no_ticket(site, page):
    page.goto(f"{site.web}/c/{C}")
    assert page.locator("#live").count() == 0
    reply = page.request.post(f"{site.web}/live/ticket", headers={"X-CSRFToken": "none"})
    assert reply.status in (400, 401)  # no CSRF token of a session, and no session
