"""The community dashboard in the browser: charts drawn by the vendored ECharts from the gateway's
composed view, their figures in tables, at both widths, with axe-core."""

from __future__ import annotations

import pytest

from tests.browser.conftest import accessibility_violations, sign_in, text_of, wait_until

pytestmark = pytest.mark.browser


def test_the_dashboard_draws_its_charts(site, page):
    sign_in(page, site.web, "chen")
    page.goto(f"{site.web}/c/xinyang")
    page.get_by_role("link", name="社区看板").click()
    page.wait_for_selector("h1:has-text('社区看板')")
    wait_until(lambda: page.locator("[data-chart][data-drawn=true]").count() == 3, timeout=15)
    for chart in ("stages", "hours", "ranking"):
        assert page.locator(f"[data-chart={chart}] svg").count() == 1, chart
    body = text_of(page)
    assert "¥" in body and "陈书记" in body  # the fund and the ranking's names
    details = page.locator("section[aria-labelledby=hours-h] details")

    def opened() -> bool:  # a click that a late layout shift (a font, a chart) sent elsewhere is made again
        if not details.evaluate("d => d.open"):
            details.locator("summary").click()
        return details.evaluate("d => d.open")

    def rows() -> int:  # the lines a person sees in the open table: a header and 12 months
        if not opened():
            return -1
        return len([line for line in page.inner_text("section[aria-labelledby=hours-h] table").splitlines() if line.strip()])

    # (a live update may replace the part meanwhile: it keeps the table open, see test_live_pages.py)
    wait_until(lambda: rows() == 13, timeout=15)
    assert accessibility_violations(page) == []


def test_residents_of_the_community_see_it_visitors_sign_in(site, page):
    page.goto(f"{site.web}/c/xinyang/dashboard")
    assert "/signin" in page.url
