"""The volunteers service's HTTP API (义工卡) through Flask's test client: every endpoint's success
and its refusals in the common error shape, with nothing stored by a refused command.

SQLite always; the tests taking ``database_url`` also run on PostgreSQL when TEST_POSTGRES_URL is
set. The service's clock (injected into ``create_service_app``) is the test's so that check-in, check-out, retroactive
entries, certificate dates and leaderboard periods happen at known times.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.kernel.db import write_transaction
from services.kernel import privacy
from services.kernel.events import NewEvent, StoredEvent
from services.kernel.eventstore import events_table, rebuild
from services.volunteers.service import _project_labour_handlers
from services.volunteers.service import DEFINITION as VOLUNTEERS
from services.volunteers.views import CERTIFICATES
from tests.support.apps import container, driver, service_app
from tests.support.errors import assert_error
from tests.support.projects import Person

UTC = timezone.utc
COMMUNITY = "haicang"
OTHER = "xinyang"
START = datetime(2025, 3, 8, 1, 0, tzinfo=UTC)  # 09:00 in Xiamen
AFTER = START + timedelta(days=2)  # attendance is recorded (and approved) once the activities are over

ORG = Person("org-1", "海沧社工站", ("organiser",), COMMUNITY)
CADRE = Person("cadre-1", "社区干部", ("cadre",), COMMUNITY)
ADMIN = Person("admin-1", "管理员", ("admin",), None)
V1 = Person("v1", "李梅", ("resident",), COMMUNITY)
V2 = Person("v2", "陈强", ("resident",), COMMUNITY)
V3 = Person("v3", "王芳", ("resident",), COMMUNITY)
STRANGER = Person("x1", "外社区居民", ("resident",), OTHER)
OTHER_CADRE = Person("cadre-x", "外社区干部", ("cadre",), OTHER)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


class Api:
    def __init__(self, url: str, clock: Clock, **environ: str) -> None:
        self.app = service_app(VOLUNTEERS, url, clock=clock.now, **environ)
        self.container = container(self.app)
        self.store = self.container.store
        self.d = driver(self.app)

    # -- calls ----------------------------------------------------------------------------------

    def post(self, person, path, body=None, status=None):
        return self.d.post(person, path, body, status)

    def get(self, person, path):
        return self.d.get(person, path)

    def refused(self, person, method: str, path: str, body=None, status: int = 409, reason: str | None = None,
                headers=None) -> dict:
        """The request is refused in the common error shape and appends nothing."""
        before = self.store.last_position()
        reply = self.d.call(person, method, path, body, headers)
        error = assert_error(reply, status, reason)
        assert self.store.last_position() == before, "a refused request stored something"
        return error

    def invalid(self, person, method, path, body, field: str, location: str = "json") -> dict:
        """A 422 from the schema that names ``field``."""
        error = self.refused(person, method, path, body, 422)
        assert field in error["errors"][location], error
        return error

    # -- scenario pieces ------------------------------------------------------------------------

    def card(self, person: Person, phone: str = "13812345678", **body) -> dict:
        return self.post(person, "/cards", {"phone": phone, **body}, status=201)["resource"]

    def publish(self, by: Person = ORG, start: datetime = START, hours: float = 4, planned: int = 180,
                capacity: int = 5, pph: int = 20, title: str = "敬老院陪伴", kind: str = "social_organisation",
                community: str = COMMUNITY) -> dict:
        answer = self.post(by, "/activities", activity_body(start, hours, planned, capacity, pph, title, kind,
                                                            community), status=201)
        return {"id": answer["created_id"], **answer["resource"]}

    def attend(self, activity_id: str, person: Person, by: Person = ORG, **times) -> dict:
        body = {"person_id": person.person_id, **{k: v.isoformat() for k, v in times.items()}}
        return self.post(by, f"/activities/{activity_id}/attendance", body, status=201)

    def decide(self, activity_id: str, person: Person, by: Person = ORG, **decision) -> dict:
        return self.post(by, f"/activities/{activity_id}/claims/{person.person_id}/decision",
                         {"decision": "approve", **decision}, status=200)["resource"]

    def approved(self, activity_id: str, person: Person, **times) -> dict:
        self.attend(activity_id, person, **times)
        return self.decide(activity_id, person)

    def card_of(self, person: Person) -> dict:
        return self.get(ADMIN, f"/cards/{person.person_id}")

    def credit_labour(self, person_id: str, minutes: int, *, pledge: str = "pl-1", no: int = 1,
                      project: str = "p-1", kind: str = "labour", day: str = "2025-03-20") -> None:
        """What the consumer does with a ContributionDelivered from projects.events."""
        event = StoredEvent(
            event_id=str(uuid.uuid4()), event_type="ContributionDelivered", schema_version=1,
            stream_id=f"project-{project}", version=no, position=no, occurred_at=START,
            data={"project_id": project, "project_title": "清理河道", "community_id": COMMUNITY,
                  "pledge_id": pledge, "delivery_no": no, "contributor_id": person_id,
                  "contributor_name": f"贡献者{person_id}", "contributor_type": "resident", "kind": kind,
                  "labour_minutes": minutes, "delivered_at": f"{day}T02:00:00.000000Z", "note": "",
                  "confirmed_by": "grid-1"},
            metadata={"actor": "grid-1", "correlation_id": "corr-1", "causation_id": None})
        with write_transaction(self.store.engine) as connection:
            _project_labour_handlers(self.container)["ContributionDelivered"](connection, event)


def activity_body(start=START, hours=4, planned=180, capacity=5, pph=20, title="敬老院陪伴",
                  kind="social_organisation", community=COMMUNITY) -> dict:
    return {"title": title, "community_id": community, "place": "海沧敬老院",
            "organiser": {"kind": kind, "id": "so-1", "name": "海沧社工站"},
            "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=hours)).isoformat(),
            "capacity": capacity, "planned_minutes": planned, "points_per_hour": pph}


@pytest.fixture
def clock() -> Clock:
    return Clock(START - timedelta(days=1))


@pytest.fixture
def api(sqlite_url, clock):
    instance = Api(sqlite_url, clock)
    yield instance
    instance.store.engine.dispose()


@pytest.fixture
def api_any(database_url, clock):
    instance = Api(database_url, clock)
    yield instance
    instance.store.engine.dispose()


# -- authentication ---------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/cards", {}),
    ("GET", "/cards/v1", None),
    ("GET", "/cards/v1/history", None),
    ("POST", "/activities", activity_body()),
    ("GET", "/activities", None),
    ("GET", "/activities/a1", None),
    ("POST", "/activities/a1/cancellation", {"reason": "下雨"}),
    ("POST", "/activities/a1/signups", {}),
    ("POST", "/activities/a1/signups/withdrawal", {}),
    ("POST", "/activities/a1/check-in", {"code": "123456"}),
    ("POST", "/activities/a1/check-out", {"code": "123456"}),
    ("POST", "/activities/a1/attendance", {"person_id": "v1"}),
    ("POST", "/activities/a1/retroactive-entries", {"person_id": "v1", "reason": "漏签"}),
    ("POST", "/activities/a1/claims/v1/decision", {"decision": "approve"}),
    ("POST", "/rewards", {"name": "环保袋", "community_id": COMMUNITY, "cost_points": 50, "stock": 1}),
    ("GET", "/rewards", None),
    ("POST", "/rewards/r1/restock", {"quantity": 1}),
    ("POST", "/rewards/r1/redemptions", {}),
    ("POST", "/rewards/r1/redemptions/rd1/fulfilment", {}),
    ("POST", "/certificates", {"person_id": "v1", "period_from": "2025-03-01", "period_to": "2025-03-31",
                               "issuing_organisation": "海沧区志愿者协会"}),
    ("GET", "/certificates/ZYFW-1", None),
    ("POST", "/certificates/ZYFW-1/verification", {}),
    ("GET", "/leaderboards/haicang", None),
    ("GET", "/hours/haicang", None),
    ("GET", "/me/card", None),
    ("GET", "/projects/p-1/minutes", None),
]


@pytest.mark.parametrize("method, path, body", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_every_endpoint_needs_a_token(api, method, path, body):
    reply = api.d.call(None, method, path, body)
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    api.refused(None, method, path, body, 401, "unauthenticated")


def test_every_endpoint_is_documented(api):
    spec = api.d.client.client.get("/openapi.json").get_json()
    documented = {(method.upper(), re.sub(r"\{[^}]+\}", "X", path))
                  for path, operations in spec["paths"].items() for method in operations}
    for method, path, _ in ENDPOINTS:
        generic = re.sub(r"/(v1|a1|r1|rd1|ZYFW-1|haicang|p-1)(?=/|$)", "/X", path)
        assert (method, generic) in documented, (method, generic)


# -- cards --------------------------------------------------------------------------------------

def test_register_a_card_and_contacts_are_masked_for_others(api_any):
    api = api_any
    reply = api.d.call(V1, "POST", "/cards", {"name": "李梅", "skills": ["护理", "摄影"], "phone": "13812345678"})
    assert reply.status_code == 201, reply.body
    assert reply.headers["Location"].endswith("/cards/v1") and reply.headers["ETag"] == '"1"'
    answer = reply.json()
    card = answer["resource"]
    assert answer["created_id"] == "v1"
    assert re.fullmatch(r"YGK-[0-9A-F]{10}", card["card_number"])
    assert {k: card[k] for k in ("person_id", "name", "community_id", "skills", "phone", "registered_via",
                                 "approved_minutes", "points_balance", "star_level", "version")} == {
        "person_id": "v1", "name": "李梅", "community_id": COMMUNITY, "skills": ["护理", "摄影"],
        "phone": "13812345678", "registered_via": "self", "approved_minutes": 0, "points_balance": 0,
        "star_level": 0, "version": 1}
    assert [(e["event_type"], e["stream_id"]) for e in answer["recorded"]] == [("CardRegistered", "card-v1")]

    api.card(V2, phone="13900001111")
    seen_by_other = api.get(V2, "/cards/v1")
    assert seen_by_other["phone"] == "138****5678"
    assert {k: v for k, v in seen_by_other.items() if k != "phone"} == {
        k: v for k, v in card.items() if k != "phone"}
    api.refused(STRANGER, "GET", "/cards/v1", None, 403, "other_community")  # reads stay in one's community
    for viewer in (V1, CADRE, ADMIN):
        assert api.get(viewer, "/cards/v1")["phone"] == "13812345678"
    assert api.get(V1, "/cards/v2")["phone"] == "139****1111"

    error = api.refused(V1, "POST", "/cards", {"name": "李梅2"}, 409, "already_registered")
    assert error["errors"]["card_number"] == card["card_number"]
    again = api.get(V1, "/cards/v1")
    assert (again["name"], again["card_number"], again["version"]) == ("李梅", card["card_number"], 1)


def test_staff_register_cards_for_others_and_residents_only_for_themselves(api):
    answer = api.post(CADRE, "/cards", {"person_id": "v2", "name": "陈强", "skills": ["电工"]}, status=201)
    assert (answer["created_id"], answer["resource"]["registered_via"], answer["resource"]["community_id"]) == (
        "v2", "staff", COMMUNITY)
    assert api.post(ADMIN, "/cards", {"person_id": "x2", "name": "外社区", "community_id": OTHER},
                    status=201)["resource"]["community_id"] == OTHER

    api.refused(V1, "POST", "/cards", {"person_id": "v3", "name": "王芳"}, 403)
    api.refused(V1, "POST", "/cards", {"community_id": OTHER}, 403, "other_community")
    api.refused(CADRE, "POST", "/cards", {"person_id": "v3", "community_id": OTHER}, 403, "other_community")
    api.refused(ORG, "POST", "/cards", {}, 403)
    nowhere = Person("v9", "无社区", ("resident",), None)
    error = api.refused(nowhere, "POST", "/cards", {}, 422, "community_required")
    assert "community_id" in error["errors"]
    api.refused(CADRE, "GET", "/cards/v3", None, 404, "not_found")


@pytest.mark.parametrize("body, field", [
    ({"colour": "red"}, "colour"),
    ({"phone": "call me"}, "phone"),
    ({"phone": "1234"}, "phone"),
    ({"skills": "护理"}, "skills"),
    ({"name": ""}, "name"),
    ({"person_id": "v 1"}, "person_id"),
])
def test_bad_card_input_is_422(api, body, field):
    api.invalid(V1, "POST", "/cards", body, field)
    api.refused(V1, "GET", "/cards/v1", None, 404)


def test_card_history_is_for_the_holder_and_staff(api, clock):
    api.card(V1)
    api.card(V2)
    activity = api.publish()
    clock.at = AFTER
    api.approved(activity["id"], V1)
    mine = api.get(V1, "/cards/v1/history")
    assert mine["card"]["phone"] == "13812345678" and mine["card"]["approved_minutes"] == 180
    assert [(c["source"], c["source_id"], c["minutes"], c["points"]) for c in mine["credits"]] == [
        ("activity", activity["id"], 180, 60)]
    assert [(c["activity_id"], c["status"], c["minutes"]) for c in mine["claims"]] == [(activity["id"], "approved", 180)]
    assert api.get(CADRE, "/cards/v1/history") == mine
    api.refused(V2, "GET", "/cards/v1/history", None, 404)
    api.refused(CADRE, "GET", "/cards/v3/history", None, 404)


# -- activities ---------------------------------------------------------------------------------

def test_publish_list_and_read_activities(api):
    reply = api.d.call(ORG, "POST", "/activities", activity_body(capacity=3))
    assert reply.status_code == 201 and reply.headers["ETag"] == '"1"'
    answer = reply.json()
    published = answer["resource"]
    assert re.fullmatch(r"[0-9]{6}", published["checkin_code"])
    assert {k: published[k] for k in ("activity_id", "title", "community_id", "organiser_person_id", "starts_at",
                                      "ends_at", "capacity", "signed_up", "places_left", "planned_minutes",
                                      "points_per_hour", "status", "volunteers")} == {
        "activity_id": answer["created_id"], "title": "敬老院陪伴", "community_id": COMMUNITY,
        "organiser_person_id": "org-1", "starts_at": "2025-03-08T01:00:00.000000Z",
        "ends_at": "2025-03-08T05:00:00.000000Z", "capacity": 3, "signed_up": 0, "places_left": 3,
        "planned_minutes": 180, "points_per_hour": 20, "status": "published", "volunteers": []}
    assert [e["event_type"] for e in answer["recorded"]] == ["ActivityPublished"]
    later = api.publish(by=CADRE, kind="community", start=START + timedelta(days=2), title="社区大扫除")
    api.post(ORG, f"/activities/{answer['created_id']}/cancellation", {"reason": "台风"}, status=200)

    listed = api.get(V1, "/activities")["items"]
    assert [(a["title"], a["status"], a["checkin_code"]) for a in listed] == [
        ("社区大扫除", "published", None), ("敬老院陪伴", "cancelled", None)]
    assert [a["title"] for a in api.get(V1, "/activities?status=cancelled")["items"]] == ["敬老院陪伴"]
    assert [a["title"] for a in api.get(V1, f"/activities?community_id={COMMUNITY}&limit=1")["items"]] == ["社区大扫除"]
    api.refused(V1, "GET", f"/activities?community_id={OTHER}", None, 403, "other_community")  # reads stay in one's community
    assert api.get(ADMIN, f"/activities?community_id={OTHER}")["items"] == []
    api.invalid(V1, "GET", "/activities?status=over", None, "status", location="query")

    for organiser in (CADRE, ADMIN):
        assert api.get(organiser, f"/activities/{later['id']}")["checkin_code"] == later["checkin_code"]
    for outsider in (V1, ORG):
        seen = api.get(outsider, f"/activities/{later['id']}")
        assert (seen["checkin_code"], seen["volunteers"], seen["title"]) == (None, None, "社区大扫除")
    api.refused(OTHER_CADRE, "GET", f"/activities/{later['id']}", None, 403, "other_community")
    api.refused(V1, "GET", "/activities/nope", None, 404, "not_found")


@pytest.mark.parametrize("person, changes, status, reason, field", [
    (V1, {}, 403, "role_required", None),
    (ORG, {"community": OTHER}, 403, "other_community", None),
    (ORG, {"hours": 0}, 422, "invalid_activity", "ends_at"),
    (ORG, {"hours": -2}, 422, "invalid_activity", "ends_at"),
    (ORG, {"hours": 2, "planned": 150}, 422, "invalid_activity", "planned_minutes"),
    (ORG, {"kind": "community"}, 422, "invalid_activity", "organiser"),
])
def test_publishing_refusals(api, person, changes, status, reason, field):
    error = api.refused(person, "POST", "/activities", activity_body(**changes), status, reason)
    if field:
        assert sorted(error["errors"]) == sorted(["reason", field, "detail"])  # detail: the English text (zh-CN)
    assert api.get(ORG, "/activities")["items"] == []


@pytest.mark.parametrize("changes, field", [
    ({"capacity": 0}, "capacity"),
    ({"planned_minutes": 20}, "planned_minutes"),
    ({"points_per_hour": -5}, "points_per_hour"),
    ({"starts_at": "2025-03-08T09:00:00"}, "starts_at"),
    ({"title": None}, "title"),
    ({"colour": "red"}, "colour"),
])
def test_invalid_activity_input_is_422(api, changes, field):
    error = api.invalid(ORG, "POST", "/activities", {**activity_body(), **changes}, field)
    assert list(error["errors"]["json"]) == [field]


def test_cancellation_by_the_organiser(api):
    api.card(V1)
    activity = api.publish()
    path = f"/activities/{activity['id']}"
    api.post(V1, f"{path}/signups", status=201)
    api.refused(V1, "POST", f"{path}/cancellation", {"reason": "不想去"}, 403, "role_required")
    api.refused(OTHER_CADRE, "POST", f"{path}/cancellation", {"reason": "x"}, 403, "not_organiser")
    api.invalid(ORG, "POST", f"{path}/cancellation", {}, "reason")
    api.invalid(ORG, "POST", f"{path}/cancellation", {"reason": ""}, "reason")
    assert api.get(ORG, path)["version"] == 2

    answer = api.post(ORG, f"{path}/cancellation", {"reason": "台风预警"}, status=200)
    assert (answer["resource"]["status"], answer["resource"]["cancel_reason"]) == ("cancelled", "台风预警")
    assert [(e["event_type"], e["data"]["signed_up"]) for e in answer["recorded"]] == [("ActivityCancelled", ["v1"])]
    api.refused(ORG, "POST", f"{path}/cancellation", {"reason": "again"}, 409, "activity_cancelled")
    api.refused(V1, "POST", f"{path}/signups/withdrawal", {}, 409, "activity_cancelled")
    api.refused(ORG, "POST", f"{path}/attendance", {"person_id": "v1"}, 409, "activity_cancelled")
    api.refused(ORG, "POST", "/activities/nope/cancellation", {"reason": "x"}, 404)


def test_a_stale_if_match_is_refused_with_412(api):
    api.card(V1)
    activity = api.publish()
    path = f"/activities/{activity['id']}"
    api.post(V1, f"{path}/signups", status=201)
    assert api.d.call(ORG, "GET", path).headers["ETag"] == '"2"'
    error = api.refused(ORG, "POST", f"{path}/cancellation", {"reason": "台风"}, 412, "concurrency_conflict",
                        headers={"If-Match": '"1"'})
    assert (error["errors"]["expected_version"], error["errors"]["actual_version"]) == (1, 2)
    current = api.get(ORG, path)
    assert (current["status"], current["version"]) == ("published", 2)
    reply = api.d.call(ORG, "POST", f"{path}/cancellation", {"reason": "台风"}, {"If-Match": '"2"'})
    assert reply.status_code == 200 and reply.json()["resource"]["status"] == "cancelled"


# -- sign-up and withdrawal ---------------------------------------------------------------------

def test_sign_up_capacity_once_and_withdrawal(api, clock):
    for person in (V1, V2, V3):
        api.card(person)
    activity = api.publish(capacity=2)
    path = f"/activities/{activity['id']}"
    answer = api.post(V1, f"{path}/signups", status=201)
    assert (answer["resource"]["signed_up"], answer["resource"]["places_left"]) == (1, 1)
    assert [e["event_type"] for e in answer["recorded"]] == ["VolunteerSignedUp"]
    api.refused(V1, "POST", f"{path}/signups", {}, 409, "already_signed_up")
    api.post(V2, f"{path}/signups", status=201)
    error = api.refused(V3, "POST", f"{path}/signups", {}, 409, "full")
    assert error["errors"]["capacity"] == 2
    assert api.get(ORG, path)["volunteers"] == ["v1", "v2"]

    api.refused(V3, "POST", f"{path}/signups/withdrawal", {}, 409, "not_signed_up")
    withdrawn = api.post(V2, f"{path}/signups/withdrawal", status=200)["resource"]
    assert withdrawn["places_left"] == 1
    api.post(V3, f"{path}/signups", status=201)
    assert api.get(ORG, path)["volunteers"] == ["v1", "v3"]

    api.refused(Person("v8", "无卡", ("resident",), COMMUNITY), "POST", f"{path}/signups", {}, 409, "no_card")
    api.refused(ORG, "POST", f"{path}/signups", {}, 403, "role_required")  # an organiser is no volunteer
    api.card(CADRE)
    api.refused(CADRE, "POST", f"{path}/signups", {}, 403)
    api.refused(V1, "POST", "/activities/nope/signups", {}, 404)

    late = api.publish(capacity=5)
    clock.at = START + timedelta(hours=4)
    api.refused(V2, "POST", f"/activities/{late['id']}/signups", {}, 409, "activity_over")


# -- attendance ---------------------------------------------------------------------------------

def test_check_in_and_check_out_with_the_code(api, clock):
    api.card(V1)
    api.card(V2)
    activity = api.publish()
    path, code = f"/activities/{activity['id']}", activity["checkin_code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    api.post(V1, f"{path}/signups", status=201)

    clock.at = START - timedelta(minutes=31)  # check-in opens 30 minutes before the start
    error = api.refused(V1, "POST", f"{path}/check-in", {"code": code}, 409, "checkin_not_open")
    assert error["errors"]["opens_at"] == "2025-03-08T00:30:00.000000Z"
    clock.at = START + timedelta(minutes=10)
    api.refused(V1, "POST", f"{path}/check-in", {"code": wrong}, 403, "wrong_code")
    api.invalid(V1, "POST", f"{path}/check-in", {"code": "12ab56"}, "code")
    api.invalid(V1, "POST", f"{path}/check-in", {}, "code")
    api.refused(V2, "POST", f"{path}/check-in", {"code": code}, 409, "not_signed_up")
    checked_in = api.post(V1, f"{path}/check-in", {"code": code}, status=201)
    assert [(e["event_type"], e["data"]["at"]) for e in checked_in["recorded"]] == [
        ("CheckedIn", "2025-03-08T01:10:00.000000Z")]
    api.refused(V1, "POST", f"{path}/check-in", {"code": code}, 409, "already_checked_in")
    api.refused(V1, "POST", f"{path}/signups/withdrawal", {}, 409, "already_attended")

    clock.at = START + timedelta(hours=2, minutes=39)
    api.refused(V1, "POST", f"{path}/check-out", {"code": wrong}, 403, "wrong_code")
    api.refused(V2, "POST", f"{path}/check-out", {"code": code}, 409, "not_checked_in")
    answer = api.post(V1, f"{path}/check-out", {"code": code}, status=201)
    assert [e["event_type"] for e in answer["recorded"]] == ["ClaimRecorded", "CheckedOut"]
    claim = answer["recorded"][0]["data"]
    assert claim["claim_id"] == answer["created_id"]
    assert {k: claim[k] for k in ("start", "end", "attended_minutes", "minutes", "day", "retroactive")} == {
        "start": "2025-03-08T01:10:00.000000Z", "end": "2025-03-08T03:39:00.000000Z", "attended_minutes": 149,
        "minutes": 120, "day": "2025-03-08", "retroactive": False}
    card = answer["resource"]
    assert (card["approved_minutes"], card["pending_claims"], card["points_balance"]) == (0, 1, 0)
    api.refused(V1, "POST", f"{path}/check-out", {"code": code}, 409, "not_checked_in")
    api.refused(V1, "POST", f"{path}/check-in", {"code": code}, 409, "already_checked_in")


def test_attendance_recorded_by_the_organiser_with_caps_and_overlaps(api, clock):
    api.card(V1)
    api.card(V2)
    a = api.publish(start=START, hours=4, planned=180)                                 # 01:00-05:00
    b = api.publish(start=START + timedelta(hours=2), hours=5, planned=300)            # 03:00-08:00
    c = api.publish(start=START + timedelta(hours=8), hours=4, planned=240)            # 09:00-13:00
    d = api.publish(start=START + timedelta(hours=13), hours=1, planned=60)            # 14:00-15:00
    clock.at = AFTER
    answer = api.attend(a["id"], V1)
    claim = answer["recorded"][0]["data"]
    assert (claim["attended_minutes"], claim["minutes"], claim["recorded_by"]) == (240, 180, "org-1")
    assert [e["event_type"] for e in answer["recorded"]] == ["ClaimRecorded", "AttendanceRecorded"]

    path = f"/activities/{a['id']}/attendance"
    api.refused(ORG, "POST", path, {"person_id": "v1"}, 409, "already_recorded")
    api.refused(V2, "POST", path, {"person_id": "v2"}, 403, "role_required")
    api.refused(ORG, "POST", path, {"person_id": "v8"}, 409, "no_card")
    error = api.refused(ORG, "POST", path, {"person_id": "v2", "start": (START - timedelta(minutes=30)).isoformat()},
                        422, "outside_activity_time")
    assert "start" in error["errors"]
    api.refused(ORG, "POST", path, {"person_id": "v2", "start": (START + timedelta(hours=2)).isoformat(),
                                    "end": (START + timedelta(hours=1)).isoformat()}, 422, "invalid_times")
    api.invalid(ORG, "POST", path, {"person_id": "v2", "end": "2025-03-08T05:00:00"}, "end")
    api.invalid(ORG, "POST", path, {}, "person_id")
    api.refused(ORG, "POST", "/activities/nope/attendance", {"person_id": "v2"}, 404)

    error = api.refused(ORG, "POST", f"/activities/{b['id']}/attendance", {"person_id": "v1"}, 409,
                        "overlapping_claim")
    assert error["errors"]["claim_id"] == claim["claim_id"]
    second = api.attend(b["id"], V1, start=START + timedelta(hours=4), end=START + timedelta(hours=6))
    assert second["recorded"][0]["data"]["minutes"] == 120
    third = api.attend(c["id"], V1)  # 300 of 480 minutes already claimed today
    assert (third["recorded"][0]["data"]["attended_minutes"], third["recorded"][0]["data"]["minutes"]) == (240, 180)
    error = api.refused(ORG, "POST", f"/activities/{d['id']}/attendance", {"person_id": "v1"}, 409,
                        "nothing_to_claim")
    assert error["errors"]["minutes_left_today"] == 0
    assert api.card_of(V1)["pending_claims"] == 3 and api.card_of(V1)["approved_minutes"] == 0


def test_retroactive_entries(api, clock):
    api.card(V1)
    api.card(V2)
    activity = api.publish(hours=4, planned=180)
    path = f"/activities/{activity['id']}/retroactive-entries"
    clock.at = START + timedelta(hours=1)
    api.refused(ORG, "POST", path, {"person_id": "v1", "reason": "漏签"}, 409, "activity_not_over")
    clock.at = START + timedelta(days=2)
    api.invalid(ORG, "POST", path, {"person_id": "v1"}, "reason")
    api.invalid(ORG, "POST", path, {"person_id": "v1", "reason": ""}, "reason")
    api.refused(V1, "POST", path, {"person_id": "v1", "reason": "我来过"}, 403, "role_required")

    answer = api.post(ORG, path, {"person_id": "v1", "reason": "当天系统故障，补录"}, status=201)
    claim = answer["recorded"][0]["data"]
    assert {k: claim[k] for k in ("attended_minutes", "minutes", "retroactive", "reason")} == {
        "attended_minutes": 240, "minutes": 180, "retroactive": True, "reason": "当天系统故障，补录"}
    assert answer["recorded"][1]["data"]["retroactive"] is True
    api.refused(ORG, "POST", path, {"person_id": "v1", "reason": "again"}, 409, "already_recorded")
    api.refused(ORG, "POST", path, {"person_id": "v2", "reason": "x",
                                    "end": (START + timedelta(hours=5)).isoformat()}, 422, "outside_activity_time")
    partial = api.post(ORG, path, {"person_id": "v2", "reason": "只来了一小时", "start": START.isoformat(),
                                   "end": (START + timedelta(minutes=75)).isoformat()}, status=201)
    assert partial["recorded"][0]["data"]["minutes"] == 60

    api.decide(activity["id"], V1)
    mine = api.get(V1, "/me/card")
    assert [(c["retroactive"], c["minutes"], c["source"]) for c in mine["credits"]] == [(True, 180, "activity")]
    assert [(c["retroactive"], c["status"], c["reason"]) for c in mine["claims"]] == [
        (True, "approved", "当天系统故障，补录")]


# -- approval -----------------------------------------------------------------------------------

def test_claim_decisions_by_the_organiser_only(api, clock):
    for person in (V1, V2, V3):
        api.card(person)
    activity = api.publish(pph=20)
    clock.at = AFTER
    aid = activity["id"]
    api.attend(aid, V1)
    api.attend(aid, V2, start=START, end=START + timedelta(hours=2))
    path = f"/activities/{aid}/claims"

    before = api.card_of(V1)
    api.refused(V1, "POST", f"{path}/v1/decision", {"decision": "approve"}, 403, "role_required")
    api.refused(V2, "POST", f"{path}/v1/decision", {"decision": "approve"}, 403, "role_required")
    api.refused(OTHER_CADRE, "POST", f"{path}/v1/decision", {"decision": "approve"}, 403, "not_organiser")
    api.refused(ORG, "POST", f"{path}/v1/decision", {"decision": "approve", "minutes": 45, "reason": "早退"}, 422,
                "invalid_minutes")
    api.refused(ORG, "POST", f"{path}/v1/decision", {"decision": "approve", "minutes": 210, "reason": "加班"}, 422,
                "invalid_minutes")
    api.invalid(ORG, "POST", f"{path}/v1/decision", {"decision": "approve", "minutes": 20, "reason": "x"}, "minutes")
    api.invalid(ORG, "POST", f"{path}/v1/decision", {"decision": "maybe"}, "decision")
    api.invalid(ORG, "POST", f"{path}/v1/decision", {"decision": "approve", "colour": "red"}, "colour")
    api.refused(ORG, "POST", f"{path}/v3/decision", {"decision": "approve"}, 422, "unknown_claim")
    api.refused(ORG, "POST", f"{path}/v8/decision", {"decision": "approve"}, 409, "no_card")
    api.refused(ORG, "POST", "/activities/nope/claims/v1/decision", {"decision": "approve"}, 404)
    assert api.card_of(V1) == before

    reply = api.d.call(ORG, "POST", f"{path}/v1/decision", {"decision": "approve", "minutes": 120,
                                                            "reason": "提前一小时离开"})
    assert reply.status_code == 200 and reply.headers["ETag"] == '"3"'
    answer = reply.json()
    assert [(e["event_type"], e["data"]["minutes"], e["data"]["claimed_minutes"], e["data"]["adjusted"],
             e["data"]["points"]) for e in answer["recorded"]] == [("ClaimApproved", 120, 180, True, 40)]
    card = answer["resource"]
    assert (card["approved_minutes"], card["approved_hours"], card["points_balance"], card["pending_claims"]) == (
        120, 2.0, 40, 0)
    api.refused(ORG, "POST", f"{path}/v1/decision", {"decision": "reject", "reason": "x"}, 409, "already_decided")

    rejected = api.post(CADRE, f"{path}/v2/decision", {"decision": "reject", "reason": "未到场"}, status=200)
    assert [e["event_type"] for e in rejected["recorded"]] == ["ClaimRejected"]
    assert (rejected["resource"]["approved_minutes"], rejected["resource"]["points_balance"]) == (0, 0)
    assert [(c["status"], c["decision_reason"]) for c in api.get(V2, "/me/card")["claims"]] == [("rejected", "未到场")]


def test_adjusting_or_rejecting_without_a_reason_is_422_reason_required(api, clock):
    api.card(V1)
    activity = api.publish()
    clock.at = AFTER
    api.attend(activity["id"], V1)
    path = f"/activities/{activity['id']}/claims/v1/decision"
    before = api.card_of(V1)
    adjusted = api.refused(ORG, "POST", path, {"decision": "approve", "minutes": 90}, 422)
    rejected = api.refused(ORG, "POST", path, {"decision": "reject"}, 422)
    blank = api.refused(ORG, "POST", path, {"decision": "reject", "reason": ""}, 422)
    assert api.card_of(V1) == before
    # The machine-readable reason is the stable code, whatever the details say.
    assert [e["errors"]["reason"] for e in (adjusted, rejected, blank)] == ["reason_required"] * 3


def test_an_organiser_never_approves_their_own_claim(api, clock):
    # A cadre of the community has a card too; the organiser records their attendance.
    api.card(CADRE)
    activity = api.publish()
    clock.at = AFTER
    api.attend(activity["id"], CADRE, by=ORG)
    before = api.card_of(CADRE)
    api.refused(CADRE, "POST", f"/activities/{activity['id']}/claims/cadre-1/decision", {"decision": "approve"},
                403)
    assert api.card_of(CADRE) == before and before["approved_minutes"] == 0
    assert api.decide(activity["id"], CADRE, by=ORG)["approved_minutes"] == 180


# -- rewards ------------------------------------------------------------------------------------

def test_rewards_catalogue_redemption_and_fulfilment(api_any, clock):
    api = api_any
    activity = api.publish(capacity=5, pph=20)
    clock.at = AFTER
    for person in (V1, V2, V3):
        api.card(person)
        api.approved(activity["id"], person)  # 3 hours at 20 points per hour: 60 points each
    api.card(STRANGER)
    reward_body = {"name": "环保袋", "description": "社区定制", "community_id": COMMUNITY, "cost_points": 50,
                   "stock": 1}

    api.refused(V1, "POST", "/rewards", reward_body, 403)
    api.refused(ORG, "POST", "/rewards", reward_body, 403)
    api.refused(OTHER_CADRE, "POST", "/rewards", reward_body, 403, "other_community")
    api.invalid(CADRE, "POST", "/rewards", {**reward_body, "cost_points": 0}, "cost_points")
    api.invalid(CADRE, "POST", "/rewards", {**reward_body, "stock": -1}, "stock")
    api.invalid(CADRE, "POST", "/rewards", {**reward_body, "colour": "red"}, "colour")
    api.invalid(CADRE, "POST", "/rewards", {k: v for k, v in reward_body.items() if k != "name"}, "name")
    assert api.get(V1, "/rewards")["items"] == []

    created = api.post(CADRE, "/rewards", reward_body, status=201)
    rid = created["created_id"]
    assert created["resource"] == {"reward_id": rid, "name": "环保袋", "description": "社区定制",
                                   "community_id": COMMUNITY, "cost_points": 50, "stock": 1, "redemptions": 0,
                                   "version": 1}
    assert api.get(V1, f"/rewards?community_id={COMMUNITY}")["items"] == [created["resource"]]
    api.refused(V1, "GET", f"/rewards?community_id={OTHER}", None, 403, "other_community")  # reads stay in one's community
    assert api.get(ADMIN, f"/rewards?community_id={OTHER}")["items"] == []

    api.refused(V1, "POST", f"/rewards/{rid}/restock", {"quantity": 5}, 403)
    api.refused(OTHER_CADRE, "POST", f"/rewards/{rid}/restock", {"quantity": 5}, 403, "other_community")
    api.invalid(CADRE, "POST", f"/rewards/{rid}/restock", {"quantity": 0}, "quantity")
    api.refused(CADRE, "POST", "/rewards/nope/restock", {"quantity": 1}, 404)
    restocked = api.post(CADRE, f"/rewards/{rid}/restock", {"quantity": 1}, status=200)
    assert (restocked["resource"]["stock"], restocked["resource"]["version"]) == (2, 2)

    redeemed = api.post(V1, f"/rewards/{rid}/redemptions", status=201)
    redemption = redeemed["created_id"]
    assert (redeemed["resource"]["stock"], redeemed["resource"]["redemptions"]) == (1, 1)
    assert sorted(e["event_type"] for e in redeemed["recorded"]) == ["PointsSpent", "RewardRedeemed"]
    assert api.card_of(V1)["points_balance"] == 10

    def unchanged(call):
        stock, balances = api.get(CADRE, "/rewards")["items"], [api.card_of(p) for p in (V1, V2, V3, STRANGER)]
        call()
        assert api.get(CADRE, "/rewards")["items"] == stock
        assert [api.card_of(p) for p in (V1, V2, V3, STRANGER)] == balances

    error = {}
    unchanged(lambda: error.update(api.refused(V1, "POST", f"/rewards/{rid}/redemptions", {}, 409,
                                               "insufficient_points")))
    assert (error["errors"]["points_balance"], error["errors"]["cost_points"]) == (10, 50)
    unchanged(lambda: api.refused(STRANGER, "POST", f"/rewards/{rid}/redemptions", {}, 403, "other_community"))
    unchanged(lambda: api.refused(Person("v8", "无卡", ("resident",), COMMUNITY), "POST",
                                  f"/rewards/{rid}/redemptions", {}, 409, "no_card"))
    unchanged(lambda: api.refused(CADRE, "POST", f"/rewards/{rid}/redemptions", {}, 403))
    unchanged(lambda: api.refused(V2, "POST", "/rewards/nope/redemptions", {}, 404))

    api.post(V2, f"/rewards/{rid}/redemptions", status=201)
    unchanged(lambda: api.refused(V3, "POST", f"/rewards/{rid}/redemptions", {}, 409, "out_of_stock"))
    assert [api.card_of(p)["points_balance"] for p in (V1, V2, V3)] == [10, 10, 60]
    assert api.get(V3, "/rewards")["items"][0]["stock"] == 0

    fulfilment = f"/rewards/{rid}/redemptions/{redemption}/fulfilment"
    api.refused(V1, "POST", fulfilment, {}, 403)
    api.refused(OTHER_CADRE, "POST", fulfilment, {}, 403, "other_community")
    error = api.refused(CADRE, "POST", f"/rewards/{rid}/redemptions/nope/fulfilment", {}, 422, "unknown_redemption")
    assert error["errors"]["redemption_id"] == "unknown"
    api.refused(CADRE, "POST", f"/rewards/nope/redemptions/{redemption}/fulfilment", {}, 404)
    done = api.post(ORG, fulfilment, status=200)
    assert [(e["event_type"], e["data"]["person_id"], e["data"]["fulfilled_by"]) for e in done["recorded"]] == [
        ("RedemptionFulfilled", "v1", "org-1")]
    api.refused(CADRE, "POST", fulfilment, {}, 409, "already_fulfilled")


def test_a_resident_creating_a_reward_is_forbidden_and_nothing_is_listed(api):
    error = api.refused(V1, "POST", "/rewards", {"name": "电影票", "community_id": COMMUNITY, "cost_points": 10,
                                                 "stock": 3}, 403, "role_required", headers={"Accept-Language": "en"})
    assert "cadre" in error["message"]  # in English, as asked
    assert api.get(CADRE, "/rewards")["items"] == []


# -- certificates -------------------------------------------------------------------------------

def _march_volunteer(api: Api, clock: Clock) -> tuple[dict, dict]:
    """V1 with 3 approved hours on 8 March, 2 hours of project labour on 20 March, a pending claim
    on 15 March and an approved hour on the morning of 1 April; V2 with a card. The clock is 1
    April, 11:00 in Xiamen: every activity is over when its attendance is recorded."""
    api.card(V1)
    api.card(V2)
    march = api.publish(title="敬老院陪伴")
    pending = api.publish(start=START + timedelta(days=7), hours=2, planned=120, title="图书角整理")
    april = api.publish(start=datetime(2025, 4, 1, 0, 0, tzinfo=UTC), hours=1, planned=60, title="清明祭扫引导")
    clock.at = datetime(2025, 4, 1, 3, 0, tzinfo=UTC)
    api.approved(march["id"], V1)
    api.credit_labour("v1", 120)
    api.attend(pending["id"], V1)
    api.approved(april["id"], V1)
    return march, pending


CERTIFICATE = {"person_id": "v1", "period_from": "2025-03-01", "period_to": "2025-03-31",
               "issuing_organisation": "海沧区志愿者协会"}


def test_certificate_issue_read_and_verification(api_any, clock):
    api = api_any
    march, pending = _march_volunteer(api, clock)

    api.refused(V1, "POST", "/certificates", CERTIFICATE, 403)
    api.refused(OTHER_CADRE, "POST", "/certificates", CERTIFICATE, 403, "other_community")
    api.refused(CADRE, "POST", "/certificates", {**CERTIFICATE, "person_id": "v8"}, 422, "no_card")
    api.refused(CADRE, "POST", "/certificates", {**CERTIFICATE, "period_to": "2025-02-28"}, 422, "invalid_period")
    api.invalid(CADRE, "POST", "/certificates", {**CERTIFICATE, "period_to": "March"}, "period_to")
    api.invalid(CADRE, "POST", "/certificates", {**CERTIFICATE, "total_minutes": 6000}, "total_minutes")
    api.invalid(CADRE, "POST", "/certificates", {k: v for k, v in CERTIFICATE.items()
                                                 if k != "issuing_organisation"}, "issuing_organisation")

    last_position = api.store.last_position()
    answer = api.post(CADRE, "/certificates", CERTIFICATE, status=201)
    certificate = answer["resource"]
    number = answer["created_id"]
    assert re.fullmatch(r"ZYFW-20250401-[0-9A-F]{8}", number) and certificate["certificate_number"] == number
    assert re.fullmatch(r"[0-9a-f]{64}", certificate["verification"])
    assert {k: certificate[k] for k in ("person_id", "name", "period_from", "period_to", "total_minutes",
                                        "total_hours", "issuing_organisation", "issued_on", "last_position")} == {
        "person_id": "v1", "name": "李梅", "period_from": "2025-03-01", "period_to": "2025-03-31",
        "total_minutes": 300, "total_hours": 5.0, "issuing_organisation": "海沧区志愿者协会",
        "issued_on": "2025-04-01", "last_position": last_position}
    assert certificate["card_number"] == api.card_of(V1)["card_number"]
    assert [(a["day"], a["minutes"], a["source"]) for a in certificate["activities"]] == [
        ("2025-03-08", 180, {"kind": "activity", "id": march["id"], "title": "敬老院陪伴"}),
        ("2025-03-20", 120, {"kind": "project", "id": "p-1", "title": "清理河道"})]

    assert api.get(V1, f"/certificates/{number}") == certificate
    assert api.get(CADRE, f"/certificates/{number}") == certificate
    api.refused(V2, "GET", f"/certificates/{number}", None, 404)
    api.refused(CADRE, "GET", "/certificates/ZYFW-20250401-00000000", None, 404)

    path = f"/certificates/{number}/verification"
    verified = api.post(V2, path, {"verification": certificate["verification"]}, status=200)
    assert verified == {"certificate_number": number, "valid": True, "problems": [], "match": {"value": True}}
    assert api.post(STRANGER, path, {}, status=200) == {"certificate_number": number, "valid": True,
                                                        "problems": [], "match": {}}
    # What the certificate says is checked too: a paper with more hours and another name does not verify.
    paper = {"verification": certificate["verification"], "holder": "李梅", "total_minutes": 300,
             "period_from": "2025-03-01", "period_to": "2025-03-31", "entries": "2025-03-20:2.0,2025-03-08:3.0"}
    assert api.post(V2, path, paper, status=200)["valid"] is True
    forged = api.post(V2, path, {**paper, "holder": "张三", "total_minutes": 6060}, status=200)
    assert forged["match"] == {"value": True, "holder": False, "period_from": True, "period_to": True,
                               "total_minutes": False, "entries": True}
    assert (forged["valid"], forged["problems"]) == (False, ["the presented holder differs from the certificate",
                                                             "the presented total minutes differs from the "
                                                             "certificate"])

    # Later credits in the same period do not change what the certificate was built from.
    api.decide(pending["id"], V1)
    assert api.card_of(V1)["approved_minutes"] == 480
    assert api.post(V2, path, {"verification": certificate["verification"]}, status=200)["valid"] is True

    forged = ("0" if certificate["verification"][0] != "0" else "1") + certificate["verification"][1:]
    tampered = api.post(V2, path, {"verification": forged, "holder": "李梅"}, status=200)
    assert (tampered["valid"], tampered["match"]) == (False, {"value": False, "holder": False})
    assert tampered["problems"] == ["the presented verification value is not the one issued",
                                    "the presented parts cannot be checked without the certificate's verification value"]
    api.invalid(V2, "POST", path, {"verification": "abc"}, "verification")
    api.invalid(V2, "POST", path, {"verification": certificate["verification"], "hours": 5}, "hours")
    api.refused(V2, "POST", "/certificates/ZYFW-20250401-00000000/verification", {}, 404)

    second = api.post(ADMIN, "/certificates", {**CERTIFICATE, "period_to": "2025-04-30"}, status=201)["resource"]
    assert (second["total_minutes"], second["total_hours"]) == (480, 8.0)
    assert second["verification"] != certificate["verification"]


def _rewrite_state(api: Api, number: str, **changes) -> None:
    table = CERTIFICATES.table
    with write_transaction(api.store.engine) as connection:
        state = json.loads(connection.execute(sa.select(table.c.state).where(table.c.id == number)).scalar_one())
        state.update(changes)
        connection.execute(table.update().where(table.c.id == number).values(state=json.dumps(state)))


def test_a_tampered_certificate_fails_verification(api_any, clock):
    api = api_any
    _march_volunteer(api, clock)
    certificate = api.post(CADRE, "/certificates", CERTIFICATE, status=201)["resource"]
    number, digest = certificate["certificate_number"], certificate["verification"]
    path = f"/certificates/{number}/verification"
    assert api.post(V2, path, {"verification": digest}, status=200)["valid"] is True

    # Changed hours on the certificate record.
    _rewrite_state(api, number, total_minutes=600)
    result = api.post(V2, path, {"verification": digest}, status=200)
    assert (result["valid"], result["problems"]) == (False, ["the total minutes differ from the card's events"])
    _rewrite_state(api, number, total_minutes=300)
    assert api.post(V2, path, {"verification": digest}, status=200)["valid"] is True

    # A changed verification value on the record.
    _rewrite_state(api, number, digest="f" * 64)
    result = api.post(V2, path, {}, status=200)
    assert (result["valid"], result["match"]) == (False, {})
    assert result["problems"] == ["the card's events no longer give the recorded verification value"]
    _rewrite_state(api, number, digest=digest)

    # A credit event changed in the store after the certificate was issued.
    with write_transaction(api.store.engine) as connection:
        row = connection.execute(sa.select(events_table.c.position, events_table.c.data).where(
            events_table.c.stream_id == "card-v1", events_table.c.event_type == "ClaimApproved")
            .order_by(events_table.c.position)).first()
        data = json.loads(row.data)
        assert data["minutes"] == 180
        connection.execute(events_table.update().where(events_table.c.position == row.position)
                           .values(data=json.dumps({**data, "minutes": 480})))
    result = api.post(V2, path, {"verification": digest, "total_minutes": 300}, status=200)
    assert (result["valid"], result["match"]) == (False, {"value": False, "total_minutes": False})
    assert result["problems"][:2] == ["the card's events no longer give the recorded verification value",
                                      "the total minutes differ from the card's events"]


# -- leaderboards, my card, project minutes -----------------------------------------------------

def test_leaderboards_by_month_year_and_all_time(api, clock):
    for person in (V1, V2, V3):
        api.card(person)
    api.card(STRANGER)
    march = api.publish(start=START)
    march_later = api.publish(start=START + timedelta(days=1))
    february = api.publish(start=datetime(2025, 2, 10, 1, 0, tzinfo=UTC))
    december = api.publish(start=datetime(2024, 12, 15, 1, 0, tzinfo=UTC), hours=5, planned=240)
    clock.at = datetime(2025, 3, 20, 4, 0, tzinfo=UTC)  # every activity is over
    api.approved(march["id"], V1)                                                         # 180, 2025-03
    api.approved(december["id"], V1)                                                      # 240, 2024-12
    api.approved(march_later["id"], V2, start=START + timedelta(days=1),
                 end=START + timedelta(days=1, hours=2))                                  # 120, 2025-03
    api.approved(february["id"], V2)                                                      # 180, 2025-02
    api.attend(march_later["id"], V3)                                                     # pending: not counted

    def board(query=""):
        answer = api.get(V3, f"/leaderboards/{COMMUNITY}{query}")
        return answer["period"], answer["label"], [(i["rank"], i["person_id"], i["minutes"], i["hours"])
                                                    for i in answer["items"]]

    assert board() == ("month", "2025-03", [(1, "v1", 180, 3.0), (2, "v2", 120, 2.0)])
    assert board("?period=month&month=2025-02") == ("month", "2025-02", [(1, "v2", 180, 3.0)])
    assert board("?period=month&month=2025-01") == ("month", "2025-01", [])
    assert board("?period=year") == ("year", "2025", [(1, "v2", 300, 5.0), (2, "v1", 180, 3.0)])
    assert board("?period=year&year=2024") == ("year", "2024", [(1, "v1", 240, 4.0)])
    assert board("?period=all") == ("all", "all", [(1, "v1", 420, 7.0), (2, "v2", 300, 5.0)])
    assert board("?period=all&limit=1") == ("all", "all", [(1, "v1", 420, 7.0)])
    top = api.get(V1, f"/leaderboards/{COMMUNITY}?period=all")["items"][0]
    assert (top["name"], top["card_number"]) == ("李梅", api.card_of(V1)["card_number"])
    api.refused(V1, "GET", f"/leaderboards/{OTHER}?period=all", None, 403, "other_community")  # reads stay in one's community
    assert api.get(ADMIN, f"/leaderboards/{OTHER}?period=all")["items"] == []
    api.invalid(V1, "GET", f"/leaderboards/{COMMUNITY}?period=week", None, "period", location="query")
    api.invalid(V1, "GET", f"/leaderboards/{COMMUNITY}?month=2025-13", None, "month", location="query")
    api.invalid(V1, "GET", f"/leaderboards/{COMMUNITY}?limit=0", None, "limit", location="query")

    hours = api.get(V3, f"/hours/{COMMUNITY}?months=4")  # 2024-12 … 2025-03, pending claims not counted
    assert [(i["month"], i["minutes"], i["hours"], i["volunteers"]) for i in hours["items"]] == [
        ("2024-12", 240, 4.0, 1), ("2025-01", 0, 0.0, 0), ("2025-02", 180, 3.0, 1), ("2025-03", 300, 5.0, 2)]
    assert len(api.get(V3, f"/hours/{COMMUNITY}")["items"]) == 12
    api.refused(V1, "GET", f"/hours/{OTHER}", None, 403, "other_community")
    api.invalid(V1, "GET", f"/hours/{COMMUNITY}?months=0", None, "months", location="query")


def test_my_card_with_its_history(api, clock):
    api.refused(V1, "GET", "/me/card", None, 404, "not_found")
    api.card(V1, skills=["护理"])
    activity = api.publish(pph=30)
    pending = api.publish(start=START + timedelta(days=1), title="图书角整理")
    clock.at = AFTER
    api.approved(activity["id"], V1)
    api.credit_labour("v1", 90)
    api.attend(pending["id"], V1, start=START + timedelta(days=1), end=START + timedelta(days=1, hours=1))
    mine = api.get(V1, "/me/card")
    card = mine["card"]
    assert {k: card[k] for k in ("person_id", "phone", "skills", "approved_minutes", "approved_hours",
                                 "points_earned", "points_spent", "points_balance", "pending_claims",
                                 "star_level", "star_label", "next_star_hours")} == {
        "person_id": "v1", "phone": "13812345678", "skills": ["护理"], "approved_minutes": 270,
        "approved_hours": 4.5, "points_earned": 105, "points_spent": 0, "points_balance": 105,
        "pending_claims": 1, "star_level": 0, "star_label": "未定级 no star yet", "next_star_hours": 100}
    assert [(c["source"], c["source_id"], c["day"], c["minutes"], c["points"], c["retroactive"])
            for c in mine["credits"]] == [("project", "p-1", "2025-03-20", 90, 15, False),
                                          ("activity", activity["id"], "2025-03-08", 180, 90, False)]
    assert sorted((c["activity_id"], c["status"], c["minutes"]) for c in mine["claims"]) == sorted([
        (activity["id"], "approved", 180), (pending["id"], "pending", 60)])
    assert api.get(V1, "/cards/v1")["approved_minutes"] == 270


def test_project_minutes_count_each_delivery_once(api):
    api.card(V1)
    api.credit_labour("v1", 120, no=1)
    api.credit_labour("v1", 90, no=2)
    api.credit_labour("v1", 120, no=1)          # the same delivery again
    api.credit_labour("v7", 60, pledge="pl-2")  # a contributor without a card gets one
    api.credit_labour("v7", 500, pledge="pl-3", kind="money")
    api.credit_labour("v1", 30, pledge="pl-4", project="p-2")
    assert api.get(V2, "/projects/p-1/minutes") == {"project_id": "p-1", "minutes": 270, "hours": 4.5}
    assert api.get(V2, "/projects/p-2/minutes") == {"project_id": "p-2", "minutes": 30, "hours": 0.5}
    assert api.get(V2, "/projects/p-9/minutes") == {"project_id": "p-9", "minutes": 0, "hours": 0.0}
    assert api.card_of(V1)["approved_minutes"] == 240 and api.card_of(V1)["points_balance"] == 40
    created = api.get(CADRE, "/cards/v7")
    assert (created["registered_via"], created["name"], created["approved_minutes"]) == ("project", "贡献者v7", 60)
    assert [c["source_id"] for c in api.get(Person("v7", "贡献者v7", ("resident",), COMMUNITY), "/me/card")["credits"]] == ["p-1"]


def test_who_sees_a_volunteers_phone_unmasked(api):
    """The holder, admins, staff of the holder's community, and organisers (of that community) of
    an activity the holder signed up for; nobody else, whatever their role elsewhere (and other
    communities' tokens do not read the card at all)."""
    api.card(V1)
    other_org = Person("org-x", "外社区社工站", ("organiser",), OTHER)
    idle_org = Person("org-2", "另一社工站", ("organiser",), COMMUNITY)
    full, masked = "13812345678", "138****5678"
    for viewer, phone in ((V1, full), (ADMIN, full), (CADRE, full), (ORG, masked), (idle_org, masked),
                          (V2, masked)):
        assert api.get(viewer, "/cards/v1")["phone"] == phone, viewer.person_id
    for viewer in (other_org, OTHER_CADRE, STRANGER):
        api.refused(viewer, "GET", "/cards/v1", None, 403, "other_community")
    activity = api.publish(by=ORG)
    api.post(V1, f"/activities/{activity['id']}/signups", status=201)
    assert api.get(ORG, "/cards/v1")["phone"] == full  # now V1's organiser
    for viewer in (idle_org, V2):
        assert api.get(viewer, "/cards/v1")["phone"] == masked, viewer.person_id
    # The card's history follows the same rule.
    assert api.d.call(idle_org, "GET", "/cards/v1/history").status_code == 404
    assert api.d.call(OTHER_CADRE, "GET", "/cards/v1/history").status_code == 403
    assert api.d.call(ORG, "GET", "/cards/v1/history").status_code == 200


@pytest.fixture
def own_keys(database_url, clock, tmp_path):
    """The volunteers API on SQLite and PostgreSQL with a key store of its own (its people may be erased)."""
    instance = Api(database_url, clock, COCREATE_KEYSTORE_URL=f"sqlite:///{tmp_path}/keys.db")
    yield instance
    instance.store.engine.dispose()


def test_a_correction_starts_a_new_key_and_the_old_value_is_shredded(own_keys):
    api = own_keys
    """The holder corrects their phone and staff their name: the card shows the new values, the old
    ones are unreadable wherever they were stored (the card's registration, a sign-up that copied the
    name): they open as 已注销. Refusals change nothing."""
    api.card(V1)
    activity = api.publish(by=ORG)
    api.post(V1, f"/activities/{activity['id']}/signups", status=201)
    sealer = api.container.sealer

    def opened(event_type: str, field: str) -> list[str]:
        return [sealer.open(e.data[field]) for e in api.store.read_all(0, 1000) if e.event_type == event_type and field in e.data]

    assert opened("VolunteerSignedUp", "name") == ["李梅"]
    api.refused(V1, "PATCH", "/cards/v1", {"phone": "13812345678"}, 409, "no_change")
    api.refused(V1, "PATCH", "/cards/v1", {}, 422, "nothing_to_correct")
    api.refused(V2, "PATCH", "/cards/v1", {"phone": "13900000000"}, 403)
    api.refused(OTHER_CADRE, "PATCH", "/cards/v1", {"phone": "13900000000"}, 403)
    api.refused(V1, "PATCH", "/cards/v1", {"phone": "13900000000"}, 412, headers={"If-Match": '"0"'})
    api.invalid(V1, "PATCH", "/cards/v1", {"phone": "call me"}, "phone")
    api.invalid(V1, "PATCH", "/cards/v1", {"phone": "13900000000", "card_number": "x"}, "card_number")

    version = api.get(V1, "/cards/v1")
    reply = api.d.call(V1, "PATCH", "/cards/v1", {"phone": "13900000000"},
                       {"If-Match": api.d.call(V1, "GET", "/cards/v1").headers["ETag"]})
    assert reply.status_code == 200, reply.body
    assert reply.json()["resource"]["phone"] == "13900000000" and version["phone"] == "13812345678"
    assert [e["event_type"] for e in reply.json()["recorded"]] == ["CardCorrected"]
    assert api.get(V1, "/cards/v1")["phone"] == "13900000000" and api.get(V2, "/cards/v1")["phone"] == "139****0000"
    assert opened("CardRegistered", "phone") == ["已注销"]  # the old phone's key is gone
    assert opened("VolunteerSignedUp", "name") == ["李梅"]  # the name kept its key

    corrected = api.d.call(CADRE, "PATCH", "/cards/v1", {"name": "李小梅"})
    assert corrected.status_code == 200, corrected.body
    assert api.get(V1, "/cards/v1")["name"] == "李小梅" and api.get(V1, "/cards/v1")["phone"] == "13900000000"
    assert opened("VolunteerSignedUp", "name") == ["已注销"] and opened("CardRegistered", "name") == ["已注销"]
    assert opened("CardCorrected", "name") == ["李小梅"] and opened("CardCorrected", "phone") == ["13900000000"]
    assert api.get(V1, "/cards/v1")["approved_minutes"] == 0


def feedback_case(api: Api, event_type: str, **data) -> None:
    """What the feedback-cases consumer does with a follow-up case's event from feedback.events."""
    from services.volunteers.service import _feedback_case_handlers

    event = StoredEvent(event_id=str(uuid.uuid4()), event_type=event_type, schema_version=1,
                        stream_id=f"case-{data['case_id']}", version=1, position=1, occurred_at=START, data=data,
                        metadata={"actor": None, "correlation_id": "corr-2", "causation_id": None})
    with write_transaction(api.store.engine) as connection:
        _feedback_case_handlers(api.container)[event_type](connection, event)


def test_an_erasure_is_asked_for_refused_while_a_case_is_open_then_confirmed(own_keys, clock):
    """The person asks, staff of their community confirm once no follow-up case of theirs is open:
    their keys are gone — name and phone read 已注销 everywhere, in the log too — while hours,
    points and the certificate's verification stay; nothing personal is recorded for them again."""
    api = own_keys
    _march_volunteer(api, clock)
    certificate = api.post(CADRE, "/certificates", CERTIFICATE, status=201)["resource"]
    before = api.get(CADRE, "/cards/v1")
    feedback_case(api, "FollowUpOpened", case_id="case-1", person_id="v1", community_id=COMMUNITY, level=2)
    feedback_case(api, "FollowUpOpened", case_id="case-2", person_id="v2", community_id=COMMUNITY, level=1)

    api.refused(CADRE, "POST", "/erasures/v1/confirmation", None, 409, "no_erasure_request")
    api.invalid(V1, "POST", "/me/erasure", {"reason": "because"}, "reason")
    api.invalid(V1, "POST", "/me/erasure", {"reason": "other", "person_id": "v2"}, "person_id")
    asked = api.post(V1, "/me/erasure", {"reason": "moved_away"}, status=201)["resource"]
    assert (asked["erasure"], asked["reason"], asked["community_id"]) == ("requested", "moved_away", COMMUNITY)
    assert [o["ref"] for o in asked["obligations"]] == ["case-1"]
    api.refused(V1, "POST", "/me/erasure", {"reason": "moved_away"}, 409, "erasure_requested")
    assert [p["person_id"] for p in api.get(CADRE, "/erasures")["items"]] == ["v1"]
    assert api.get(OTHER_CADRE, "/erasures")["items"] == []
    api.refused(V2, "GET", "/erasures", None, 403, "role_required")
    api.refused(V2, "POST", "/erasures/v1/confirmation", None, 403, "role_required")
    api.refused(OTHER_CADRE, "POST", "/erasures/v1/confirmation", None, 403, "other_community")
    refused = api.refused(CADRE, "POST", "/erasures/v1/confirmation", None, 409, "obligation_open")
    # staff learn how many cases keep it, never which (a rated cadre would learn who rated them)
    assert refused["errors"]["obligations"] == [{"kind": "follow_up_case", "count": 1}]
    assert api.get(CADRE, "/erasures")["items"][0]["obligations"] == [{"kind": "follow_up_case", "count": 1}]
    assert "case-1" not in json.dumps(api.get(CADRE, "/erasures"))
    assert api.get(CADRE, "/cards/v1")["name"] == "李梅"  # nothing is erased while refused

    feedback_case(api, "FollowUpClosed", case_id="case-1")
    feedback_case(api, "FollowUpClosed", case_id="case-1")  # a redelivery ends nothing twice
    assert api.get(V1, "/me/erasure")["obligations"] == []
    assert api.get(V3, "/me/erasure") == {"person_id": "v3", "community_id": None, "erasure": None, "reason": None,
                                          "requested_at": None, "erased_at": None, "confirmed_by": None,
                                          "obligations": [], "version": 0}
    confirmed = api.post(CADRE, "/erasures/v1/confirmation", None, status=200)
    assert confirmed["resource"]["erasure"] == "erased" and confirmed["resource"]["confirmed_by"] == "cadre-1"
    assert [e["event_type"] for e in confirmed["recorded"]] == ["PersonErased"]
    assert api.get(CADRE, "/erasures")["items"] == []

    card = api.get(CADRE, "/cards/v1")
    assert card["name"] == card["phone"] == api.get(V2, "/cards/v1")["phone"] == "已注销"
    kept = ("card_number", "approved_minutes", "points_balance", "points_earned", "star_level")
    assert {k: card[k] for k in kept} == {k: before[k] for k in kept}
    assert api.get(CADRE, f"/certificates/{certificate['certificate_number']}")["name"] == "已注销"
    path = f"/certificates/{certificate['certificate_number']}/verification"
    verified = api.post(V2, path, {"verification": certificate["verification"]}, status=200)
    assert verified["valid"] is True
    named = api.post(V2, path, {"verification": certificate["verification"], "holder": "李梅"}, status=200)
    assert named["match"]["holder"] is False
    sealer, opened_v1 = api.container.sealer, []
    for event in api.store.read_all(0, 10_000):
        for field, _purpose, owner in privacy.personal_fields(event.event_type, event.data, event.data.get("person_id")):
            if owner == "v1":
                opened_v1.append(sealer.open(event.data[field]))
    assert opened_v1 and set(opened_v1) == {"已注销"}
    assert api.get(V2, "/cards/v2")["name"] == "陈强"  # nobody else's

    # A rebuilt read model holds the same tokens: nothing of v1 in clear in any table, and still 已注销.
    rebuild(api.store)
    with api.store.engine.connect() as connection:
        meta = sa.MetaData()
        meta.reflect(connection)
        everything = "\n".join(repr(tuple(row)) for table in meta.sorted_tables
                               for row in connection.execute(sa.select(table)))
    assert not [text for text in ("李梅", "13812345678") if text in everything]
    assert api.get(CADRE, "/cards/v1")["name"] == "已注销" and api.get(CADRE, "/cards/v2")["name"] == "陈强"
    api.refused(V1, "PATCH", "/cards/v1", {"phone": "13900000000"}, 409, "person_erased")
    api.refused(CADRE, "POST", "/erasures/v1/confirmation", None, 409, "already_erased")
    api.refused(V1, "POST", "/me/erasure", {"reason": "other"}, 409, "already_erased")
    assert api.get(V1, "/me/erasure")["erasure"] == "erased"
    refused = api.refused(CADRE, "POST", "/erasures/v2/confirmation", None, 409, "no_erasure_request")
    assert "obligations" not in refused["errors"]


def test_erasures_are_recorded_again_after_a_restore(own_keys, clock, tmp_path):
    """A volunteers database restored to before an erasure: ``reapply-erasures`` records it again from
    the key store's log (which the restore did not touch); the person's fields stay unreadable."""
    from services.volunteers.handlers import reapply_erasures

    api = own_keys
    api.card(V1)
    api.post(V1, "/me/erasure", {"reason": "consent_withdrawn"}, status=201)
    api.post(CADRE, "/erasures/v1/confirmation", None, status=200)
    restored = Api(f"sqlite:///{tmp_path}/restored.db", clock, COCREATE_KEYSTORE_URL=f"sqlite:///{tmp_path}/keys.db")
    try:
        with write_transaction(restored.store.engine) as connection:  # the copy taken before the erasure
            for event in api.store.read_all(0, 10_000):
                if event.event_type != "PersonErased":
                    restored.store.append(event.stream_id, event.version - 1, [NewEvent(
                        event.event_type, event.data, event_id=event.event_id)], connection=connection)
        assert restored.get(V1, "/me/erasure")["erasure"] == "requested"
        assert restored.get(CADRE, "/cards/v1")["name"] == "已注销"  # its tokens: the keys are gone
        assert reapply_erasures(restored.container) == ("volunteers: 1 erasures recorded again from the key "
                                                        "store's log, 0 people's keys erased again from this log")
        assert restored.get(V1, "/me/erasure")["erasure"] == "erased"
        assert reapply_erasures(restored.container).startswith("volunteers: 0 erasures")
        again = [e for e in restored.store.read_all(0, 10_000) if e.event_type == "PersonErased"]
        assert len(again) == 1 and again[0].data["reapplied"] is True and again[0].data["confirmed_by"] == "cadre-1"
    finally:
        restored.store.engine.dispose()


def test_a_key_store_restored_from_before_an_erasure_loses_the_keys_again(own_keys, tmp_path):
    """The key store restored from a backup older than an erasure would bring the person's keys back:
    ``reapply-erasures`` deletes them again from the volunteers log's ``PersonErased``."""
    import shutil

    from services.volunteers.handlers import reapply_erasures

    api = own_keys
    api.card(V1)
    keys_file = tmp_path / "keys.db"
    api.container.sealer.keys.engine.dispose()
    shutil.copy(keys_file, tmp_path / "keys-backup.db")  # the key store's backup, before the erasure
    api.post(V1, "/me/erasure", {"reason": "other"}, status=201)
    api.post(CADRE, "/erasures/v1/confirmation", None, status=200)
    assert api.get(CADRE, "/cards/v1")["name"] == "已注销"
    api.container.sealer.keys.engine.dispose()
    shutil.copy(tmp_path / "keys-backup.db", keys_file)  # restored
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"keys.db{suffix}").unlink(missing_ok=True)
    api.container.sealer.keys.forget_cached()
    assert api.get(CADRE, "/cards/v1")["name"] == "李梅"  # the restore brought the key back...
    assert reapply_erasures(api.container).endswith("1 people's keys erased again from this log")
    api.container.sealer.keys.forget_cached()
    assert api.get(CADRE, "/cards/v1")["name"] == "已注销"  # ...and it is gone again
    assert [row["person_id"] for row in api.container.sealer.keys.erased()] == ["v1"]
