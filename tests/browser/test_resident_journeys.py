"""The resident and representative journeys, in Chinese, in a real browser (the distribution's
Chromium, headless), at a desktop's width and at a phone's (375×812); axe-core on every page."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.browser.conftest import accessibility_violations, new_page, sign_in, sign_out, text_of

pytestmark = pytest.mark.browser


def assert_accessible(page) -> None:
    violations = accessibility_violations(page)
    assert violations == [], (page.url, violations)


def test_sign_in_keeps_the_token_on_the_server(site, page):
    page.goto(site.web + "/")
    assert page.get_attribute("html", "lang") == "zh-CN"  # the browser says en-US: still Chinese
    assert_accessible(page)
    sign_in(page, site.web, "res1")
    assert "我的" in text_of(page)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["cocreate_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    for cookie in cookies.values():  # the gateway token (a JWT) is never in a cookie
        assert not cookie["value"].startswith("eyJ") and "." not in cookie["value"][:40], cookie
    assert "eyJ" not in page.content()
    page.goto(site.web + "/me")
    assert "义工卡" in text_of(page)
    assert_accessible(page)
    sign_out(page)
    page.goto(site.web + "/me")
    assert "/signin" in page.url


def test_a_wrong_password_is_refused_in_chinese(site, page):
    page.goto(f"{site.web}/signin")
    assert_accessible(page)
    page.get_by_label("用户名").fill("res1")
    page.get_by_label("密码").fill("not-the-password")
    page.get_by_role("button", name="登录").click()
    page.wait_for_selector(".flash.error")
    assert re.search(r"[\u4e00-\u9fff]", page.inner_text(".flash.error"))
    assert "eyJ" not in page.content()


def test_propose_cosign_vote_approve_in_the_browser(site, browser, viewport):
    title = f"楼下加装休息座椅 {uuid.uuid4().hex[:6]}"
    proposer = new_page(browser, viewport)
    try:
        sign_in(proposer, site.web, "res11")
        proposer.goto(site.web + "/propose")
        assert_accessible(proposer)
        proposer.get_by_label("标题").fill(title)
        proposer.get_by_label("做什么、为什么").fill("老人散步需要歇脚的地方")
        proposer.get_by_label("地点").fill("3号楼下")
        proposer.get_by_label("网格").select_option("g1")
        proposer.get_by_label("类别").select_option("elderly_care")
        proposer.get_by_label("估算费用（元）").fill("3000")
        proposer.get_by_label("申请社区基金金额（元）").fill("2500.50")
        proposer.get_by_role("button", name="发布我的提议").click()
        proposer.wait_for_selector("h1:has-text('%s')" % title)
        project_url = proposer.url
        assert "征集联署" in text_of(proposer) and "¥2,500.50" in text_of(proposer)
        assert_accessible(proposer)
    finally:
        proposer.context.close()

    for resident in ("res1", "res2", "res3", "res4", "res5", "res6"):
        visitor = new_page(browser, viewport)
        try:
            sign_in(visitor, site.web, resident)
            visitor.goto(project_url)
            visitor.get_by_role("button", name="联署这个提议").click()
            visitor.wait_for_selector("text=您已联署该提议")
        finally:
            visitor.context.close()

    cadre = new_page(browser, viewport)
    try:
        sign_in(cadre, site.web, "chen")
        cadre.goto(project_url)
        assert "协商议事" in text_of(cadre)
        cadre.get_by_role("button", name="发起居民代表表决").click()
        cadre.wait_for_selector("text=居民代表表决已开始")
    finally:
        cadre.context.close()

    for representative in ("rep1", "rep2", "rep3", "rep4", "rep5", "rep6"):
        visitor = new_page(browser, viewport)
        try:
            sign_in(visitor, site.web, representative)
            visitor.goto(project_url)
            if representative == "rep1":
                assert_accessible(visitor)
            visitor.get_by_label("赞成").check()
            visitor.get_by_role("button", name="投出我的一票").click()
            visitor.wait_for_selector("text=您的表决票已投出")
        finally:
            visitor.context.close()

    cadre = new_page(browser, viewport)
    try:
        sign_in(cadre, site.web, "chen")
        cadre.goto(project_url)
        cadre.get_by_role("button", name="结束居民代表表决").click()
        cadre.wait_for_selector("text=居民代表表决已结束")
        body = text_of(cadre)
        assert "居民代表会议通过" in body, body
        assert cadre.get_attribute(".timeline li[aria-current=step]", "class") == "current"
        assert cadre.inner_text(".timeline li[aria-current=step]") == "共建"
    finally:
        cadre.context.close()


def test_a_representative_sees_the_tally_once_closed(site, page):
    sign_in(page, site.web, "rep2")
    page.goto(f"{site.web}/projects/{site.made['rejected']}")
    body = text_of(page)
    assert "居民代表会议否决" in body and "赞成" in body and "弃权" in body
    assert_accessible(page)


def test_a_bad_rating_is_followed_up_and_the_resident_sees_the_case(site, page, viewport):
    # residents the demo did not have rate anybody: one per width (a second rating would revise the first)
    sign_in(page, site.web, "res13" if viewport["width"] > 400 else "res14")
    page.get_by_role("link", name="评价", exact=True).click()
    page.wait_for_selector("h1:has-text('评价为您服务的人')")
    assert_accessible(page)
    page.get_by_role("link", name="周网格员").click()
    page.get_by_label("非常不满意").check()
    page.get_by_label("留言（可不填）").fill("路灯坏了一个月没人管")
    assert_accessible(page)
    page.get_by_role("button", name="提交评价").click()
    page.wait_for_selector("text=不满意的评价会有专人跟进回访")
    assert "/me" in page.url
    rating = page.locator("ul.ratings li", has_text="周网格员")
    assert "非常不满意" in rating.inner_text()
    rating.get_by_role("link").click()
    page.wait_for_selector("h1:has-text('我的评价的跟进')")
    assert "状态" in text_of(page)
    assert_accessible(page)


def test_english_on_request(site, page):
    page.goto(f"{site.web}/c/xinyang")
    page.get_by_role("link", name="English").click()
    page.wait_for_selector("html[lang=en]")
    assert "Projects" in text_of(page)
    page.get_by_role("link", name="中文").click()
    page.wait_for_selector("html[lang=zh-CN]")


def test_opinion_pledge_and_evaluation_from_the_project_pages(site, page, viewport):
    desktop = viewport["width"] > 400
    sign_in(page, site.web, "res12" if desktop else "res11")
    page.goto(f"{site.web}/projects/{site.made['deliberation']}")
    page.get_by_label("支持").check()
    page.get_by_label("您怎么看？").fill("扶手装在左侧更方便")
    page.get_by_role("button", name="发表意见").click()
    page.wait_for_selector("text=您的意见已发表")
    assert "扶手装在左侧更方便" in text_of(page)

    page.goto(f"{site.web}/projects/{site.made['co_build']}")
    page.get_by_label("我愿意出").select_option("labour")
    page.get_by_label("小时数（出工或技术服务）").fill("3")
    page.get_by_role("button", name="认捐").click()
    page.wait_for_selector("text=谢谢！您的认捐已登记")
    page.goto(f"{site.web}/me")
    pledges = page.locator("section[aria-labelledby=pledges-h]")
    assert pledges.locator(f"a[href='/projects/{site.made['co_build']}']").count() >= 1, pledges.inner_text()

    page.goto(f"{site.web}/projects/{site.made['co_evaluate']}")
    page.get_by_label("4 · 满意").check()
    page.get_by_role("button", name="提交评议").click()
    page.wait_for_selector("text=感谢您的评议")
    assert_accessible(page)


def test_a_refused_action_shows_the_reason_in_chinese(site, page):
    # the proposer may not co-sign their own proposal: the button is not offered, and a forged
    # post is refused by the API with its reason, in Chinese
    sign_in(page, site.web, "res1")
    page.goto(f"{site.web}/projects/{site.made['collecting']}")
    assert page.get_by_role("button", name="联署这个提议").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    response = page.request.post(f"{site.web}/projects/{site.made['collecting']}/actions/cosign",
                                 form={"csrf_token": token})
    assert response.ok  # the redirect back to the project page, with the message
    flash = re.search(r'<p class="flash error"[^>]*>([^<]+)</p>', response.text())
    assert flash and re.search(r"[\u4e00-\u9fff]", flash.group(1)), response.text()[-2000:]
