"""A participatory budgeting round in a real browser, at a desktop's width and a phone's (issue 24):
the cadre opens it on its form, residents approve proposals with a secret ballot and revise it,
another resident sees only their own (none), the cadre closes it, and the round's page shows the
winners, why each proposal won or lost in Chinese, and the recount from the log. axe-core on
every page of the journey.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from cocreate_client import Client
from tests.browser.conftest import accessibility_violations, new_page, sign_in, text_of

pytestmark = pytest.mark.browser
CHINA = timezone(timedelta(hours=8))


def assert_accessible(page) -> None:
    violations = accessibility_violations(page)
    assert violations == [], (page.url, violations)


def qualified_proposals(gateway: str, tag: str) -> dict[str, str]:
    """Two co-signed proposals in deliberation (title -> project id): 1,000 and 800 yuan."""
    proposer = Client(gateway).login("res12", "demo")
    made = {}
    for title, fen in ((f"楼道灯 {tag}", 100_000), (f"花坛 {tag}", 80_000)):
        pid = proposer.propose(community_id="xinyang", grid_id="g1", title=title, category="facilities",
                               description=title, location="3 号楼", estimated_cost_fen=fen,
                               requested_fen=fen)["project_id"]
        for i in range(1, 7):
            Client(gateway).login(f"res{i}", "demo").cosign(pid)
        made[title] = pid
    return made


def test_a_round_opened_voted_closed_and_explained_in_the_browser(site, browser, viewport):
    desktop = viewport["width"] > 400
    tag = uuid.uuid4().hex[:6]
    voter, other = ("res9", "res10") if desktop else ("res11", "res13")
    proposals = qualified_proposals(site.gateway, tag)
    lamp, bed = list(proposals)

    cadre = new_page(browser, viewport)
    try:
        sign_in(cadre, site.web, "chen")
        cadre.goto(f"{site.web}/c/xinyang/rounds")
        assert_accessible(cadre)
        cadre.locator("a[href$='/c/xinyang/rounds/new']").click()
        cadre.wait_for_selector("#open-round")
        cadre.fill("#round-title", f"微更新 {tag}")
        cadre.fill("#round-budget", "1000")
        cadre.select_option("#round-rule", "mes")
        closes = (datetime.now(CHINA) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")
        cadre.fill("#round-closes", closes)
        cadre.get_by_label(f"{lamp} · ¥1,000.00").check()
        cadre.get_by_label(f"{bed} · ¥800.00").check()
        assert_accessible(cadre)
        cadre.locator("#open-round button[type=submit]").click()
        cadre.wait_for_selector("#close-round")
        round_url = cadre.url
        assert "本轮已开始" in text_of(cadre)

        resident = new_page(browser, viewport)
        try:
            sign_in(resident, site.web, voter)
            resident.goto(round_url)
            assert "您还没有投票" in resident.inner_text("#my-ballot")
            resident.get_by_label(lamp, exact=False).check()
            resident.locator("#ballot button[type=submit]").click()
            resident.wait_for_selector("text=您的选票已记录")
            assert "1 个提议" in resident.inner_text("#my-ballot")
            # revised: the bed instead of the lamp; the page shows the ballot as it is now
            resident.get_by_label(lamp, exact=False).uncheck()
            resident.get_by_label(bed, exact=False).check()
            resident.locator("#ballot button[type=submit]").click()
            resident.wait_for_selector("text=您的选票已记录")
            assert resident.get_by_label(bed, exact=False).is_checked()
            assert not resident.get_by_label(lamp, exact=False).is_checked()
            assert_accessible(resident)
        finally:
            resident.context.close()

        neighbour = new_page(browser, viewport)
        try:
            sign_in(neighbour, site.web, other)
            neighbour.goto(round_url)
            assert "您还没有投票" in neighbour.inner_text("#my-ballot")
            assert neighbour.locator("input[name=approve]:checked").count() == 0  # nobody else's ballot
        finally:
            neighbour.context.close()

        cadre.goto(round_url)
        cadre.locator("#close-round button[type=submit]").click()
        cadre.wait_for_selector("#outcome")
        outcome = cadre.inner_text("#outcome")
        assert "入选（第 1 名）" in outcome and bed in outcome and "未入选" in outcome, outcome
        assert "均等份额法" in outcome, outcome  # the explanation, in Chinese
        assert_accessible(cadre)
        cadre.get_by_role("link", name="根据事件日志重新计票").click()
        cadre.wait_for_selector("#verification")
        assert "结果一致" in cadre.inner_text("#verification")
    finally:
        cadre.context.close()

    # published (共享): a visitor reads the outcome, with one ballot's count suppressed, and no form
    visitor = new_page(browser, viewport)
    try:
        visitor.goto(round_url)
        outcome = visitor.inner_text("#outcome")
        assert bed in outcome and "入选（第 1 名）" in outcome and "少于 5" in outcome, outcome
        assert visitor.locator("input[name=approve]").count() == 0 and visitor.locator("#close-round").count() == 0
        assert_accessible(visitor)
        visitor.goto(f"{site.web}/c/xinyang/rounds")
        assert f"微更新 {tag}" in text_of(visitor)
    finally:
        visitor.context.close()


def test_residents_get_no_form_to_open_a_round(site, page):
    sign_in(page, site.web, "res1")
    response = page.goto(f"{site.web}/c/xinyang/rounds/new")
    assert response.status == 403
    page.goto(f"{site.web}/c/xinyang/rounds")
    assert page.locator("a[href$='/c/xinyang/rounds/new']").count() == 0
