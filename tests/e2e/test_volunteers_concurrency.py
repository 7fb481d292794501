"""Redemptions racing over real HTTP (gunicorn, two workers) on SQLite and PostgreSQL:
no oversell of the last item, no overspend of one volunteer's points."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.projects import HttpClient, Person, ProjectsDriver
from tests.support.servers import ServiceServer

COMMUNITY = "haicang"


@pytest.fixture
def driver(database_url, tmp_path):
    server = ServiceServer("volunteers", tmp_path, env={"VOLUNTEERS_DATABASE_URL": database_url}).start()
    yield ProjectsDriver(HttpClient(server.base_url))
    server.stop()


def volunteers_with_points(d: ProjectsDriver, count: int) -> tuple[Person, list[Person]]:
    """``count`` volunteers with 60 points each: 3 approved hours at 20 points per hour."""
    organiser = Person("org-1", "社工站", ("organiser",), COMMUNITY)
    start = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).replace(microsecond=0)
    activity = d.post(organiser, "/activities", {
        "title": "敬老院陪伴", "community_id": COMMUNITY, "place": "海沧敬老院",
        "organiser": {"kind": "social_organisation", "id": "so-1", "name": "海沧社工站"},
        "starts_at": start.isoformat(), "ends_at": (start + dt.timedelta(hours=4)).isoformat(),
        "capacity": count, "planned_minutes": 180, "points_per_hour": 20})["created_id"]
    people = [Person(f"v{i}", f"志愿者{i}", ("resident",), COMMUNITY) for i in range(count)]
    for person in people:
        d.post(person, "/cards", {})
        d.post(organiser, f"/activities/{activity}/attendance", {"person_id": person.person_id})
        card = d.post(organiser, f"/activities/{activity}/claims/{person.person_id}/decision",
                      {"decision": "approve"}, status=200)["resource"]
        assert card["points_balance"] == 60
    return organiser, people


def test_parallel_redemptions_of_the_last_item_exactly_one_succeeds(driver):
    d = driver
    _organiser, people = volunteers_with_points(d, 8)
    cadre = Person("cadre-1", "干部", ("cadre",), COMMUNITY)
    reward = d.post(cadre, "/rewards", {"name": "环保袋", "community_id": COMMUNITY, "cost_points": 50, "stock": 1})
    path = f"/rewards/{reward['created_id']}/redemptions"
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda person: d.call(person, "POST", path, {}), people))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [201] + [409] * 7, [r.body for r in replies]
    assert all(r.json()["errors"]["reason"] == "out_of_stock" for r in replies if r.status_code == 409)
    rewards = d.get(cadre, f"/rewards?community_id={COMMUNITY}")["items"]
    assert rewards[0]["stock"] == 0 and rewards[0]["redemptions"] == 1
    balances = sorted(d.get(cadre, f"/cards/{p.person_id}")["points_balance"] for p in people)
    assert balances == [10] + [60] * 7


def test_one_volunteer_racing_against_themself_cannot_overspend(driver):
    d = driver
    _organiser, (person,) = volunteers_with_points(d, 1)
    cadre = Person("cadre-1", "干部", ("cadre",), COMMUNITY)
    reward = d.post(cadre, "/rewards", {"name": "电影票", "community_id": COMMUNITY, "cost_points": 50, "stock": 10})
    path = f"/rewards/{reward['created_id']}/redemptions"
    with ThreadPoolExecutor(max_workers=6) as pool:
        replies = list(pool.map(lambda _: d.call(person, "POST", path, {}), range(6)))
    assert sorted(r.status_code for r in replies) == [201] + [409] * 5
    assert {r.json()["errors"]["reason"] for r in replies if r.status_code == 409} == {"insufficient_points"}
    assert d.get(person, "/me/card")["card"]["points_balance"] == 10
    assert d.get(cadre, f"/rewards?community_id={COMMUNITY}")["items"][0]["stock"] == 9
