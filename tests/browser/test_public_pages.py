"""The public pages (共享 transparency), without signing in, and a project page while the feedback
service is down — in the browser, at a desktop's and a phone's width, with axe-core."""

from __future__ import annotations

import signal

import pytest

from cocreate_client import ApiError, Client
from cocreate_client.demo import people
from tests.browser.conftest import accessibility_violations, sign_in, text_of, wait_until

pytestmark = pytest.mark.browser
PHONE = "13812345678"
# what the demo (and these tests) wrote that identifies a resident: comments and opinions
SEEDED_TEXTS = ("办事热情", "回复太慢", "警务室很实用", "老人上下楼更安全", "先修电梯更好", "路灯坏了一个月没人管", PHONE,
                "138****5678")


def personal_strings() -> set[str]:
    """Every seeded resident's and representative's person id and name, and the seeded texts."""
    found = set(SEEDED_TEXTS)
    for user in people():
        if set(user["roles"]) & {"resident", "representative"}:
            found |= {user["person_id"], user["name"], user["username"]}
    return found


@pytest.fixture(scope="module")
def with_a_phone(site):
    """A resident's card with a phone number, so that the pages can be checked for it."""
    client = Client(site.gateway).login("res14", "demo")
    try:
        client.post("/cards", {"phone": PHONE})
    except ApiError as error:
        assert error.reason == "already_registered", error.body
    return PHONE


def public_urls(site) -> list[str]:
    urls = [f"{site.web}/c/xinyang", f"{site.web}/c/xinyang/fund", f"{site.web}/c/xinyang/rankings",
            f"{site.web}/c/xinyang/rankings?kind=grid_worker", f"{site.web}/c/xinyang?stage=co_plan"]
    urls += [f"{site.web}/projects/{pid}" for key, pid in site.made.items() if isinstance(pid, str) and key not in
             ("follow_up_case", "round")]
    urls += [f"{site.web}/c/xinyang/rounds", f"{site.web}/rounds/{site.made['round']}"]  # the budgeting round
    return urls


def test_public_pages_show_the_community_and_no_person(site, page, with_a_phone):
    forbidden = personal_strings()
    for url in public_urls(site):
        response = page.goto(url)
        assert response.status == 200, (url, response.status)
        html = page.content()
        leaked = sorted(s for s in forbidden if s in html)
        assert leaked == [], (url, leaked)
        assert accessibility_violations(page) == [], url
    page.goto(f"{site.web}/c/xinyang")
    body = text_of(page)
    assert "新阳社区" in body and "儿童游乐场翻新" in body and "共享" in body
    page.goto(f"{site.web}/projects/{site.made['co_share']}")
    body = text_of(page)
    assert "200 多名儿童有了安全的游乐场" in body  # the published results
    page.goto(f"{site.web}/c/xinyang/fund")
    assert "¥" in text_of(page)


def test_filtering_projects_updates_the_list_in_place(site, page):
    page.goto(f"{site.web}/c/xinyang")
    page.get_by_label("阶段").select_option("co_share")
    page.wait_for_url("**stage=co_share**")
    items = page.locator("#project-list article h2")
    wait_until(lambda: items.count() == 1 and "儿童游乐场翻新" in items.first.inner_text())


def test_a_project_page_with_the_feedback_service_stopped(site, page):
    sign_in(page, site.web, "res2")
    project = f"{site.web}/projects/{site.made['co_evaluate']}"
    site.platform.kill("feedback", signal.SIGKILL)
    try:
        response = page.goto(project)
        assert response.status == 200
        body = text_of(page)
        assert "社区警务室建设" in body and "暂时无法获取" in body, body
        assert "Traceback" not in page.content()
        assert accessibility_violations(page) == []
        response = page.goto(f"{site.web}/c/xinyang/rankings")
        assert response.status == 200 and "暂时无法获取" in text_of(page)
    finally:
        site.platform.start("feedback")
        site.platform.wait_ready(["feedback"])
        client = Client(site.gateway, retries=0).login("res2", "demo")
        wait_until(lambda: _answers(client), timeout=60)  # the gateway's breaker closed again


def _answers(client: Client) -> bool:
    try:
        return "items" in client.get("/me/ratings")
    except (ApiError, OSError):
        return False
