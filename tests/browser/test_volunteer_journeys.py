"""The volunteer's and the organiser's journeys (义工卡), in Chinese, in a real browser at a
desktop's width and at a phone's: an organiser publishes an activity, a volunteer signs up and
checks in with the code the organiser's page shows, the organiser records the attendance and
approves the hours, and the volunteer's card shows them; a volunteer's card with its history, a
reward redeemed with points, a certificate of volunteer service issued, printed and verified.
axe-core on every page (no serious or critical violation)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.browser.conftest import accessibility_violations, new_page, sign_in, text_of

pytestmark = pytest.mark.browser
CHINA = timezone(timedelta(hours=8))


def assert_accessible(page) -> None:
    violations = accessibility_violations(page)
    assert violations == [], (page.url, violations)


def flash(page, text: str) -> None:
    page.wait_for_selector(f".flash:has-text('{text}')")


def local_input(moment: datetime) -> str:
    """A datetime-local input's value, China Standard Time."""
    return moment.astimezone(CHINA).strftime("%Y-%m-%dT%H:%M")


def card_hours(page) -> float:
    return float(page.inner_text("#card-hours"))


def test_publish_sign_up_check_in_approve_and_the_card_shows_the_hours(site, browser, viewport):
    desktop = viewport["width"] > 400
    volunteer_name = "res3" if desktop else "res4"  # residents with a card and no project labour
    title = f"社区义诊志愿服务 {uuid.uuid4().hex[:6]}"
    organiser = new_page(browser, viewport)
    volunteer = new_page(browser, viewport)
    try:
        sign_in(organiser, site.web, "shegong")
        organiser.goto(site.web + "/activities")
        assert_accessible(organiser)
        organiser.get_by_role("link", name="发布活动").click()
        organiser.wait_for_selector("form#publish")
        assert_accessible(organiser)
        # under way: check-in is open (from 30 minutes before the start) and attendance may be
        # recorded up to now (never ahead of time): 90 minutes served, the planned 60 credited
        starts = datetime.now(timezone.utc) - timedelta(minutes=90)
        organiser.get_by_label("标题").fill(title)
        organiser.get_by_label("地点").fill("新阳社区卫生服务站")
        organiser.get_by_label("开始时间（北京时间）").fill(local_input(starts))
        organiser.get_by_label("结束时间（北京时间）").fill(local_input(starts + timedelta(hours=2)))
        organiser.get_by_label("名额").fill("5")
        organiser.get_by_label("计划服务分钟数").fill("60")
        organiser.get_by_label("每小时积分").fill("20")
        # the organiser (not a cadre) publishes as a social organisation: the form's defaults
        assert organiser.get_by_label("组织方类型").input_value() == "social_organisation"
        assert organiser.get_by_label("组织方名称").input_value() == "海沧社工站"
        organiser.get_by_role("button", name="发布活动").click()
        flash(organiser, "活动已发布")
        organiser.wait_for_selector(f"h1:has-text('{title}')")
        activity_url = organiser.url
        code = organiser.inner_text("#checkin-code").strip()
        assert re.fullmatch(r"[0-9]{6}", code), code
        assert_accessible(organiser)

        sign_in(volunteer, site.web, volunteer_name)
        volunteer.goto(site.web + "/card")
        hours_before = card_hours(volunteer)
        volunteer.goto(site.web + "/activities")
        volunteer.get_by_role("link", name=title).click()
        volunteer.wait_for_selector(f"h1:has-text('{title}')")
        assert volunteer.locator("#checkin-code").count() == 0  # the code is the organiser's
        assert code not in text_of(volunteer)
        assert_accessible(volunteer)
        volunteer.get_by_role("button", name="报名", exact=True).click()
        flash(volunteer, "报名成功")
        volunteer.get_by_label("签到码").fill(f"{(int(code) + 1) % 10**6:06d}")
        volunteer.get_by_role("button", name="签到", exact=True).click()
        flash(volunteer, "签到码不对")  # the API's refusal, in Chinese
        volunteer.get_by_label("签到码").fill(code)
        volunteer.get_by_role("button", name="签到", exact=True).click()
        flash(volunteer, "签到成功")
        assert_accessible(volunteer)

        organiser.goto(activity_url)
        row = organiser.locator(f"#volunteer-{volunteer_name}")
        row.get_by_role("button", name="登记出勤").click()
        flash(organiser, "已登记")
        row = organiser.locator(f"#volunteer-{volunteer_name}")
        assert "待审核" in row.inner_text() and "1.0" in row.inner_text()
        assert_accessible(organiser)
        row.get_by_role("button", name="审核通过").click()
        flash(organiser, "服务时长已审核通过")
        assert "已通过" in organiser.locator(f"#volunteer-{volunteer_name}").inner_text()

        volunteer.goto(activity_url)
        assert "已通过" in volunteer.inner_text("#my-claim")
        volunteer.goto(site.web + "/card")
        assert card_hours(volunteer) == pytest.approx(hours_before + 1.0)
        claim = volunteer.locator("#claims li", has_text=title)
        assert "已通过" in claim.inner_text() and "1.0" in claim.inner_text()
        assert volunteer.locator("#credits li", has_text=title).count() == 1
    finally:
        organiser.context.close()
        volunteer.context.close()


def test_a_volunteer_card_a_reward_and_a_printable_certificate(site, browser, viewport):
    desktop = viewport["width"] > 400
    volunteer_name = "res5" if desktop else "res6"  # 3 approved hours and 60 points from the demo
    volunteer = new_page(browser, viewport)
    organiser = new_page(browser, viewport)
    try:
        sign_in(volunteer, site.web, volunteer_name)
        volunteer.goto(site.web + "/card")
        volunteer.wait_for_selector("h1:has-text('我的义工卡')")
        assert volunteer.inner_text("#card-number").startswith("YGK-")
        assert card_hours(volunteer) == pytest.approx(3.0)
        assert volunteer.inner_text("#card-star") == "未定级"
        assert int(volunteer.inner_text("#card-points")) == 60
        assert "敬老院陪伴活动" in volunteer.inner_text("#claims")
        assert "已通过" in volunteer.inner_text("#claims")
        assert volunteer.locator("#credits li").count() >= 1
        assert_accessible(volunteer)

        volunteer.get_by_role("link", name="积分兑换").click()
        volunteer.wait_for_selector("h1:has-text('积分兑换')")
        assert "您的积分：60" in text_of(volunteer)
        assert_accessible(volunteer)
        volunteer.locator("article", has_text="环保购物袋").get_by_role("button", name="兑换").click()
        flash(volunteer, "您已兑换环保购物袋")
        assert "您的积分：20" in text_of(volunteer)

        # a certificate is issued by an organiser or a cadre (the volunteers service's rule)
        volunteer.goto(site.web + "/certificates")
        assert volunteer.locator("form#issue").count() == 0
        assert_accessible(volunteer)
        sign_in(organiser, site.web, "shegong")
        organiser.goto(f"{site.web}/certificates?person_id={volunteer_name}")
        assert_accessible(organiser)
        assert organiser.get_by_label("出具单位").input_value() == "海沧社工站"
        organiser.get_by_label("起始日期").fill((datetime.now(CHINA) - timedelta(days=30)).date().isoformat())
        organiser.get_by_role("button", name="开具证明").click()
        flash(organiser, "证明已开具")
        number = organiser.inner_text("#certificate-number").strip()
        verification = organiser.inner_text("#verification-value").strip()
        assert re.fullmatch(r"ZYFW-\d{8}-[0-9A-F]{8}", number), number
        assert re.fullmatch(r"[0-9a-f]{64}", verification), verification
        assert "3.0" in organiser.inner_text("#certificate")
        assert_accessible(organiser)

        volunteer.get_by_label("证明编号").fill(number)
        volunteer.get_by_role("button", name="打开证明").click()
        volunteer.wait_for_selector("#certificate-number")
        assert volunteer.inner_text("#certificate-number").strip() == number
        assert volunteer.inner_text("#verification-value").strip() == verification
        body = text_of(volunteer)
        assert f"/api/v1/public/certificates/{number}/verification" in body and "如何核验这份证明" in body
        assert f"/certificates/verify?number={number}" in volunteer.inner_text("#verification-url")
        assert "敬老院陪伴活动" in volunteer.inner_text("#certificate-entries")
        assert_accessible(volunteer)
        volunteer.emulate_media(media="print")  # on paper: the certificate only
        assert volunteer.locator("#certificate").is_visible()
        assert not volunteer.locator("header.container").is_visible()
        assert not volunteer.locator("form#verify").is_visible()
        volunteer.emulate_media(media="screen")
        volunteer.get_by_role("button", name="立即核验").click()
        flash(volunteer, "核验通过")
    finally:
        volunteer.context.close()
        organiser.context.close()


def test_an_attended_activity_shows_my_approved_hours(site, page, viewport):
    sign_in(page, site.web, "res1" if viewport["width"] > 400 else "res2")
    page.goto(site.web + "/activities")
    assert_accessible(page)
    page.get_by_role("link", name="敬老院陪伴活动").first.click()
    page.wait_for_selector("h1:has-text('敬老院陪伴活动')")
    # the demo's activity of yesterday: this volunteer's hours are approved, no form is offered
    assert "已通过" in page.inner_text("#my-claim")
    assert page.get_by_role("button", name="签到", exact=True).count() == 0
    assert_accessible(page)
