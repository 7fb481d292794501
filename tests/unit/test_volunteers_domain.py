"""The volunteer card (义工卡) domain without a database or HTTP: cards, activities, attendance,
claims and their approval, points, star levels, rewards and certificates.

Events decided by the aggregates are applied through a small in-memory log that gives them
stream versions and global positions the way the event store would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta, timezone

import marshmallow as ma
import pytest

from services.kernel.auth import Principal
from services.kernel.errors import Conflict, DomainError, Forbidden
from services.kernel.events import StoredEvent
from tests.support import events
from tests.support.events import kinds
from services.volunteers.api import ActivitySchema
from services.volunteers.domain import (
    Activity, Card, Certificate, Reward, certificate_digest, certificate_entries, mask_phone, points_for,
    star_level,
)

UTC = timezone.utc
COMMUNITY = "haicang"
OTHER = "xinyang"
T0 = datetime(2025, 3, 8, 1, 0, tzinfo=UTC)  # 09:00 in Xiamen
LATER = T0 + timedelta(days=60)  # when claims are decided: after every activity of this module
CODE = "482913"


def who(person_id: str, *roles: str, community: str | None = COMMUNITY, name: str | None = None) -> Principal:
    return Principal(person_id=person_id, name=name or f"name of {person_id}", roles=frozenset(roles),
                     community=community)


ORGANISER = who("org-1", "organiser", name="海沧社工站")
CADRE = who("cadre-1", "cadre")
ADMIN = who("admin-1", "admin", community=None)
V1 = who("v1", "resident", name="李梅")
V2 = who("v2", "resident", name="陈强")
V3 = who("v3", "resident", name="王芳")


class Log(events.Log):
    """The in-memory store of ``tests.support.events``, with this module's clock."""

    def __init__(self) -> None:
        super().__init__(at=T0)


def activity_body(start: datetime = T0, hours: float = 4, planned: int = 180, capacity: int = 2, pph: int = 20,
                  kind: str = "social_organisation", community: str = COMMUNITY, title: str = "敬老院陪伴") -> dict:
    return {"title": title, "community_id": community, "place": "海沧敬老院",
            "organiser": {"kind": kind, "id": "so-1", "name": "海沧社工站"},
            "starts_at": start, "ends_at": start + timedelta(hours=hours), "capacity": capacity,
            "planned_minutes": planned, "points_per_hour": pph}


def published(log: Log, activity_id: str = "a1", actor: Principal = ORGANISER, **body) -> Activity:
    activity = Activity(id=activity_id)
    log.record(activity, activity.publish(actor, activity_body(**body), CODE))
    return activity


def registered(log: Log, person: Principal, community: str = COMMUNITY, phone: str = "13812345678") -> Card:
    card = Card(id=person.person_id)
    log.record(card, card.register(f"YGK-{person.person_id.upper()}", person.name, community, [], phone, "self"))
    return card


def claimed(log: Log, card: Card, activity: Activity, start: datetime, end: datetime, claim_id: str,
            **kwargs) -> list[StoredEvent]:
    return log.record(card, card.claim(claim_id, activity, start, end, recorded_by=ORGANISER.person_id, **kwargs))


def delivery(minutes: int, no: int = 1, pledge: str = "pl-1", project: str = "p-1",
             at: str = "2025-03-20T02:00:00.000000Z") -> dict:
    return {"project_id": project, "project_title": "清理河道", "community_id": COMMUNITY, "pledge_id": pledge,
            "delivery_no": no, "contributor_id": "v1", "contributor_name": "李梅", "kind": "labour",
            "labour_minutes": minutes, "delivered_at": at}


# -- cards --------------------------------------------------------------------------------------

def test_a_card_is_registered_once_per_person():
    log, card = Log(), Card(id="v1")
    events = card.register("YGK-00000000A1", "李梅", COMMUNITY, ["护理", "摄影"], "13812345678", "self")
    assert [(e.event_type, e.data) for e in events] == [("CardRegistered", {
        "person_id": "v1", "card_number": "YGK-00000000A1", "name": "李梅", "community_id": COMMUNITY,
        "skills": ["护理", "摄影"], "phone": "13812345678", "via": "self"})]
    log.record(card, events)
    assert (card.card_number, card.name, card.community_id, card.skills, card.registered_via, card.version) == (
        "YGK-00000000A1", "李梅", COMMUNITY, ["护理", "摄影"], "self", 1)

    with pytest.raises(Conflict) as refused:
        card.register("YGK-00000000B2", "李梅", COMMUNITY, [], "", "self")
    assert refused.value.reason == "already_registered"
    assert refused.value.details == {"card_number": "YGK-00000000A1"}
    assert card.card_number == "YGK-00000000A1" and card.version == 1


@pytest.mark.parametrize("phone, masked", [
    ("13812345678", "138****5678"),
    ("+8613812345678", "+86*******5678"),
    ("0592-6012345", "059*****2345"),
    ("6012345", "****345"),  # shorter than a mobile number: at most the last half shows
    ("123456", "***456"),
    ("12345", "***45"),
    ("1234", "**34"),
    ("1", "*"),
    ("", ""),
])
def test_mask_phone(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize("phone", ["12345", "123456", "13812345678"])
def test_a_masked_phone_never_shows_the_whole_number(phone):
    # The API accepts phones of 5 to 20 characters; every one of them must be masked for others.
    masked = mask_phone(phone)
    assert masked != phone and "*" in masked
    assert len(masked) == len(phone)


def test_the_card_view_masks_contacts_unless_full():
    log = Log()
    card = registered(log, V1, phone="13812345678")
    assert card.view(full=True)["phone"] == "13812345678"
    others = card.view(full=False)
    assert others["phone"] == "138****5678"
    assert {k: v for k, v in others.items() if k != "phone"} == {
        k: v for k, v in card.view(full=True).items() if k != "phone"}


# -- activities ---------------------------------------------------------------------------------

def test_publishing_an_activity():
    activity = Activity(id="a1")
    [event] = activity.publish(ORGANISER, activity_body(), CODE)
    assert (event.event_type, event.data) == ("ActivityPublished", {
        "activity_id": "a1", "title": "敬老院陪伴", "community_id": COMMUNITY, "place": "海沧敬老院",
        "organiser": {"kind": "social_organisation", "id": "so-1", "name": "海沧社工站"},
        "organiser_person_id": "org-1", "starts_at": "2025-03-08T01:00:00.000000Z",
        "ends_at": "2025-03-08T05:00:00.000000Z", "capacity": 2, "planned_minutes": 180,
        "points_per_hour": 20, "checkin_code": CODE})
    Log().record(activity, [event])
    assert activity.status == "published"
    public, organisers = activity.view(show_code=False), activity.view(show_code=True)
    assert (public["checkin_code"], public["volunteers"], public["places_left"]) == (None, None, 2)
    assert (organisers["checkin_code"], organisers["volunteers"]) == (CODE, [])
    with pytest.raises(Conflict) as again:
        activity.publish(ORGANISER, activity_body(), CODE)
    assert again.value.reason == "already_exists"


@pytest.mark.parametrize("changes, field", [
    ({"hours": 0}, "ends_at"),
    ({"hours": -1}, "ends_at"),
    ({"hours": 2, "planned": 150}, "planned_minutes"),
    ({"kind": "community"}, "organiser"),
])
def test_an_invalid_activity_is_refused_naming_the_field(changes, field):
    activity = Activity(id="a1")
    with pytest.raises(DomainError) as refused:
        activity.publish(ORGANISER, activity_body(**changes), CODE)
    assert type(refused.value) is DomainError and refused.value.status == 422
    assert refused.value.reason == "invalid_activity"
    assert list(refused.value.details) == [field]
    assert not activity.exists


def test_planned_minutes_may_equal_the_duration_and_a_cadre_publishes_for_the_community():
    activity = Activity(id="a1")
    [event] = activity.publish(CADRE, activity_body(hours=2, planned=120, kind="community"), CODE)
    assert event.data["planned_minutes"] == 120 and event.data["organiser"]["kind"] == "community"


@pytest.mark.parametrize("actor, error, reason", [
    (V1, Forbidden, "role_required"),
    (who("org-2", "organiser", community=OTHER), Forbidden, "other_community"),
    (who("cadre-2", "cadre", community=OTHER), Forbidden, "other_community"),
])
def test_only_organisers_of_the_community_publish(actor, error, reason):
    with pytest.raises(error) as refused:
        Activity(id="a1").publish(actor, activity_body(), CODE)
    assert refused.value.reason == reason


def test_an_admin_publishes_for_any_community():
    [event] = Activity(id="a1").publish(ADMIN, activity_body(community=OTHER), CODE)
    assert event.data["community_id"] == OTHER and event.data["organiser_person_id"] == "admin-1"


def _activity_json(**changes) -> dict:
    body = {"title": "敬老院陪伴", "community_id": COMMUNITY, "place": "海沧敬老院",
            "organiser": {"kind": "social_organisation", "id": "so-1", "name": "海沧社工站"},
            "starts_at": "2025-03-08T09:00:00+08:00", "ends_at": "2025-03-08T13:00:00+08:00",
            "capacity": 10, "planned_minutes": 180, "points_per_hour": 20}
    body.update(changes)
    return body


def test_the_activity_schema_accepts_a_valid_activity():
    loaded = ActivitySchema().load(_activity_json(points_per_hour=0, capacity=1, planned_minutes=30))
    assert loaded.starts_at == T0 and (loaded.capacity, loaded.planned_minutes) == (1, 30)
    assert loaded.points_per_hour == 0


@pytest.mark.parametrize("changes, field", [
    ({"capacity": 0}, "capacity"),
    ({"capacity": "5"}, "capacity"),
    ({"planned_minutes": 29}, "planned_minutes"),
    ({"planned_minutes": 24 * 60 + 1}, "planned_minutes"),
    ({"points_per_hour": -1}, "points_per_hour"),
    ({"points_per_hour": 1001}, "points_per_hour"),
    ({"starts_at": "2025-03-08T09:00:00"}, "starts_at"),
    ({"organiser": {"kind": "company", "id": "x", "name": "x"}}, "organiser"),
    ({"title": ""}, "title"),
    ({"colour": "red"}, "colour"),
])
def test_the_activity_schema_refuses_bad_values(changes, field):
    with pytest.raises(ma.ValidationError) as refused:
        ActivitySchema().load(_activity_json(**changes))
    assert list(refused.value.messages) == [field]


def test_cancellation_by_the_organiser_ends_sign_ups_and_attendance():
    log = Log()
    activity = published(log)
    log.record(activity, activity.sign_up(V1, T0 - timedelta(days=1)))
    with pytest.raises(Forbidden) as not_theirs:
        activity.cancel(V1, "下雨")
    assert not_theirs.value.reason == "not_organiser"
    with pytest.raises(Forbidden):
        activity.cancel(who("cadre-2", "cadre", community=OTHER), "下雨")

    [event] = activity.cancel(ORGANISER, "台风预警")
    assert (event.event_type, event.data) == ("ActivityCancelled", {
        "activity_id": "a1", "reason": "台风预警", "signed_up": ["v1"]})
    log.record(activity, [event])
    assert (activity.status, activity.cancel_reason) == ("cancelled", "台风预警")

    for attempt in (lambda: activity.cancel(ORGANISER, "again"),
                    lambda: activity.sign_up(V2, T0 - timedelta(days=1)),
                    lambda: activity.withdraw(V1),
                    lambda: activity.check_in(V1, CODE, T0)):
        with pytest.raises(Conflict) as refused:
            attempt()
        assert refused.value.reason == "activity_cancelled"


@pytest.mark.parametrize("actor", [CADRE, ADMIN])
def test_a_cadre_of_the_community_or_an_admin_may_cancel(actor):
    activity = published(Log())
    assert kinds(activity.cancel(actor, "场地维修")) == ["ActivityCancelled"]


# -- sign-up and withdrawal ---------------------------------------------------------------------

def test_sign_up_enforces_capacity_and_once_and_withdrawal_frees_the_place():
    log, before = Log(), T0 - timedelta(days=1)
    activity = published(log, capacity=2)
    [event] = activity.sign_up(V1, before)
    assert (event.event_type, event.data) == ("VolunteerSignedUp", {
        "activity_id": "a1", "person_id": "v1", "name": "李梅"})
    log.record(activity, [event])

    with pytest.raises(Conflict) as twice:
        activity.sign_up(V1, before)
    assert twice.value.reason == "already_signed_up"

    log.record(activity, activity.sign_up(V2, before))
    with pytest.raises(Conflict) as full:
        activity.sign_up(V3, before)
    assert (full.value.reason, full.value.details) == ("full", {"capacity": 2})
    assert activity.view(show_code=False)["places_left"] == 0

    with pytest.raises(Conflict) as not_signed:
        activity.withdraw(V3)
    assert not_signed.value.reason == "not_signed_up"
    assert [(e.event_type, e.data) for e in activity.withdraw(V2)] == [
        ("SignUpWithdrawn", {"activity_id": "a1", "person_id": "v2"})]
    log.record(activity, activity.withdraw(V2))
    log.record(activity, activity.sign_up(V3, before))
    assert sorted(activity.signups) == ["v1", "v3"]


def test_sign_up_needs_a_volunteer_role_and_a_running_activity():
    activity = published(Log())
    with pytest.raises(Forbidden):
        activity.sign_up(ORGANISER, T0)
    assert kinds(activity.sign_up(V1, T0 + timedelta(hours=3, minutes=59))) == ["VolunteerSignedUp"]
    with pytest.raises(Conflict) as over:
        activity.sign_up(V1, T0 + timedelta(hours=4))
    assert over.value.reason == "activity_over"


# -- check-in and check-out ---------------------------------------------------------------------

def test_check_in_needs_the_code_a_sign_up_and_the_activity_time():
    log = Log()
    activity = published(log)
    log.record(activity, activity.sign_up(V1, T0 - timedelta(days=1)))
    with pytest.raises(Forbidden) as wrong:
        activity.check_in(V1, "000000", T0)
    assert wrong.value.reason == "wrong_code"
    with pytest.raises(Conflict) as unsigned:
        activity.check_in(V2, CODE, T0)
    assert unsigned.value.reason == "not_signed_up"
    # Check-in opens 30 minutes (the default of the setting) before the start, closes at the end.
    for moment, reason in ((T0 - timedelta(minutes=30, seconds=1), "checkin_not_open"),
                           (T0 - timedelta(days=3), "checkin_not_open"),
                           (T0 + timedelta(hours=4, seconds=1), "activity_over")):
        with pytest.raises(Conflict) as outside:
            activity.check_in(V1, CODE, moment)
        assert outside.value.reason == reason
    with pytest.raises(Conflict) as early:
        activity.check_in(V1, CODE, T0 - timedelta(minutes=30, seconds=1))
    assert early.value.details == {"opens_at": "2025-03-08T00:30:00.000000Z", "opens_minutes_before": 30}
    with pytest.raises(Conflict) as narrower:  # a window of the process's own
        activity.check_in(V1, CODE, T0 - timedelta(minutes=11), timedelta(minutes=10))
    assert narrower.value.reason == "checkin_not_open"

    [event] = activity.check_in(V1, CODE, T0 - timedelta(minutes=30))
    assert (event.event_type, event.data) == ("CheckedIn", {
        "activity_id": "a1", "person_id": "v1", "at": "2025-03-08T00:30:00.000000Z"})
    log.record(activity, [event])
    with pytest.raises(Conflict) as again:
        activity.check_in(V1, CODE, T0)
    assert again.value.reason == "already_checked_in"
    with pytest.raises(Conflict) as leaving:
        activity.withdraw(V1)
    assert leaving.value.reason == "already_attended"


def test_check_out_with_the_code_becomes_a_claim_rounded_down_to_30_minutes():
    log = Log()
    activity = published(log)
    card = registered(log, V1)
    log.record(activity, activity.sign_up(V1, T0 - timedelta(days=1)))
    with pytest.raises(Conflict) as not_in:
        activity.check_out(V1, CODE, "c1")
    assert not_in.value.reason == "not_checked_in"
    log.record(activity, activity.check_in(V1, CODE, T0 + timedelta(minutes=10)))
    with pytest.raises(Forbidden) as wrong:
        activity.check_out(V1, "111111", "c1")
    assert wrong.value.reason == "wrong_code"

    checked_out = activity.check_out(V1, CODE, "c1")
    assert [(e.event_type, e.data) for e in checked_out] == [
        ("CheckedOut", {"activity_id": "a1", "person_id": "v1", "claim_id": "c1"})]
    started = datetime.fromisoformat(activity.checkins["v1"].replace("Z", "+00:00"))
    [claim] = card.claim("c1", activity, started, T0 + timedelta(hours=2, minutes=39), recorded_by="v1")
    assert (claim.event_type, claim.data) == ("ClaimRecorded", {
        "person_id": "v1", "claim_id": "c1", "activity_id": "a1", "activity_title": "敬老院陪伴",
        "community_id": COMMUNITY, "start": "2025-03-08T01:10:00.000000Z", "end": "2025-03-08T03:39:00.000000Z",
        "attended_minutes": 149, "minutes": 120, "day": "2025-03-08", "points_per_hour": 20,
        "retroactive": False, "reason": "", "recorded_by": "v1"})
    log.record(card, [claim])
    log.record(activity, checked_out)
    assert activity.checkins == {} and activity.claims == {"v1": "c1"}
    with pytest.raises(Conflict) as again:
        activity.check_in(V1, CODE, T0 + timedelta(hours=3))
    assert again.value.reason == "already_checked_in"
    assert card.claims["c1"]["status"] == "pending"


@pytest.mark.parametrize("attended, minutes", [(30, 30), (59, 30), (61, 60), (179, 150), (181, 180), (240, 180)])
def test_claimed_minutes_are_rounded_down_and_capped_by_the_planned_duration(attended, minutes):
    log = Log()
    activity = published(log, planned=180)
    card = registered(log, V1)
    [event] = claimed(log, card, activity, T0, T0 + timedelta(minutes=attended), "c1")
    assert (event.data["attended_minutes"], event.data["minutes"]) == (attended, minutes)


def test_less_than_30_minutes_is_nothing_to_claim():
    log = Log()
    activity, card = published(log), registered(log, V1)
    with pytest.raises(Conflict) as refused:
        card.claim("c1", activity, T0, T0 + timedelta(minutes=29), recorded_by="org-1")
    assert refused.value.reason == "nothing_to_claim"
    assert refused.value.details == {"attended_minutes": 29, "minutes_left_today": 480}
    with pytest.raises(DomainError) as backwards:
        card.claim("c1", activity, T0, T0, recorded_by="org-1")
    assert backwards.value.reason == "invalid_times"
    assert card.claims == {}


def test_eight_hours_per_volunteer_per_day_counting_pending_and_approved_claims():
    log = Log()
    morning = published(log, "a1", start=T0, hours=5, planned=300)                       # 01:00-06:00
    afternoon = published(log, "a2", start=T0 + timedelta(hours=6), hours=5, planned=300)  # 07:00-12:00
    evening = published(log, "a3", start=T0 + timedelta(hours=12), hours=2, planned=120)   # 13:00-15:00
    tomorrow = published(log, "a4", start=T0 + timedelta(days=1), hours=2, planned=120)
    card = registered(log, V1)
    claimed(log, card, morning, T0, T0 + timedelta(hours=5), "c1")
    log.record(card, card.decide_claim("c1", "approve", None, "", "org-1", now=LATER))
    [second] = claimed(log, card, afternoon, T0 + timedelta(hours=6), T0 + timedelta(hours=11), "c2")
    assert (second.data["attended_minutes"], second.data["minutes"]) == (300, 180)

    with pytest.raises(Conflict) as capped:
        card.claim("c3", evening, T0 + timedelta(hours=12), T0 + timedelta(hours=14), recorded_by="org-1")
    assert capped.value.reason == "nothing_to_claim"
    assert capped.value.details == {"attended_minutes": 120, "minutes_left_today": 0}
    [next_day] = claimed(log, card, tomorrow, T0 + timedelta(days=1), T0 + timedelta(days=1, hours=2), "c4")
    assert next_day.data["minutes"] == 120 and next_day.data["day"] == "2025-03-09"

    # A rejected claim gives its minutes of the day back.
    log.record(card, card.decide_claim("c2", "reject", None, "未到场", "org-1", now=LATER))
    [evening_claim] = claimed(log, card, evening, T0 + timedelta(hours=12), T0 + timedelta(hours=14), "c3")
    assert evening_claim.data["minutes"] == 120


def test_overlapping_claims_are_refused_but_adjacent_ones_are_not():
    log = Log()
    first = published(log, "a1", start=T0, hours=3, planned=180)
    second = published(log, "a2", start=T0 + timedelta(hours=2), hours=3, planned=180)
    third = published(log, "a3", start=T0 + timedelta(hours=3), hours=2, planned=120)
    card = registered(log, V1)
    claimed(log, card, first, T0, T0 + timedelta(hours=3), "c1")
    with pytest.raises(Conflict) as overlap:
        card.claim("c2", second, T0 + timedelta(hours=2, minutes=30), T0 + timedelta(hours=5), recorded_by="o")
    assert (overlap.value.reason, overlap.value.details) == ("overlapping_claim", {"claim_id": "c1"})
    assert "c2" not in card.claims
    [adjacent] = claimed(log, card, third, T0 + timedelta(hours=3), T0 + timedelta(hours=5), "c3")
    assert adjacent.data["minutes"] == 120

    log.record(card, card.decide_claim("c1", "reject", None, "记录有误", "org-1", now=LATER))
    [after_rejection] = claimed(log, card, second, T0 + timedelta(hours=2), T0 + timedelta(hours=3), "c2")
    assert after_rejection.data["minutes"] == 60


def test_one_claim_per_activity():
    log = Log()
    activity = published(log, hours=6, planned=360)
    card = registered(log, V1)
    claimed(log, card, activity, T0, T0 + timedelta(hours=1), "c1")
    with pytest.raises(Conflict) as again:
        card.claim("c2", activity, T0 + timedelta(hours=2), T0 + timedelta(hours=3), recorded_by="org-1")
    assert again.value.reason == "already_claimed"


# -- approval -----------------------------------------------------------------------------------

@pytest.mark.parametrize("actor", [V1, V2, who("org-2", "organiser"), who("cadre-2", "cadre", community=OTHER)])
def test_only_the_organiser_decides_claims(actor):
    activity = published(Log())
    with pytest.raises(Forbidden) as refused:
        activity.require_organiser(actor)
    assert refused.value.reason == "not_organiser"


@pytest.mark.parametrize("actor", [ORGANISER, CADRE, ADMIN])
def test_the_organiser_a_cadre_of_the_community_and_an_admin_decide_claims(actor):
    assert published(Log()).require_organiser(actor) is None


def _pending(minutes_attended: int = 180, pph: int = 25):
    log = Log()
    activity = published(log, pph=pph)
    card = registered(log, V1)
    claimed(log, card, activity, T0, T0 + timedelta(minutes=minutes_attended), "c1")
    return log, card


def test_approving_a_claim_credits_minutes_and_points():
    log, card = _pending(180, pph=25)
    assert (card.approved_minutes, card.points_balance, card.view(full=True)["pending_claims"]) == (0, 0, 1)
    events = card.decide_claim("c1", "approve", None, "", "org-1", now=LATER)
    assert [(e.event_type, e.data) for e in events] == [("ClaimApproved", {
        "person_id": "v1", "claim_id": "c1", "activity_id": "a1", "community_id": COMMUNITY,
        "day": "2025-03-08", "minutes": 180, "claimed_minutes": 180, "adjusted": False, "reason": "",
        "points": 75, "decided_by": "org-1", "retroactive": False})]
    log.record(card, events)
    assert (card.approved_minutes, card.points_earned, card.points_balance) == (180, 75, 75)
    assert card.claims["c1"]["status"] == "approved" and card.claims["c1"]["approved_minutes"] == 180
    view = card.view(full=True)
    assert (view["approved_hours"], view["pending_claims"], view["star_level"]) == (3.0, 0, 0)
    with pytest.raises(Conflict) as again:
        card.decide_claim("c1", "approve", None, "", "org-1", now=LATER)
    assert again.value.reason == "already_decided"
    with pytest.raises(DomainError) as unknown:
        card.decide_claim("c9", "approve", None, "", "org-1", now=LATER)
    assert unknown.value.reason == "unknown_claim"


def test_adjusting_a_claim_needs_a_reason_and_fewer_whole_slots():
    log, card = _pending(180, pph=25)
    with pytest.raises(DomainError) as no_reason:
        card.decide_claim("c1", "approve", 90, "", "org-1", now=LATER)
    assert (no_reason.value.reason, no_reason.value.details) == ("reason_required", {"reason": "required when adjusting"})
    for bad in (45, 210, 0):
        with pytest.raises(DomainError) as invalid:
            card.decide_claim("c1", "approve", bad, "提前离开", "org-1", now=LATER)
        assert invalid.value.reason == "invalid_minutes"
    assert card.claims["c1"]["status"] == "pending"

    [approved] = card.decide_claim("c1", "approve", 90, "提前离开", "org-1", now=LATER)
    assert {k: approved.data[k] for k in ("minutes", "claimed_minutes", "adjusted", "reason", "points")} == {
        "minutes": 90, "claimed_minutes": 180, "adjusted": True, "reason": "提前离开", "points": 37}
    log.record(card, [approved])
    assert (card.approved_minutes, card.points_balance) == (90, 37)
    assert card.claims["c1"]["decision_reason"] == "提前离开"


def test_the_same_minutes_with_a_reason_is_a_plain_approval():
    _log, card = _pending(180)
    [approved] = card.decide_claim("c1", "approve", 180, "", "org-1", now=LATER)
    assert (approved.data["minutes"], approved.data["adjusted"]) == (180, False)


def test_rejecting_a_claim_needs_a_reason_and_credits_nothing():
    log, card = _pending(120)
    with pytest.raises(DomainError) as no_reason:
        card.decide_claim("c1", "reject", None, "", "org-1", now=LATER)
    assert no_reason.value.reason == "reason_required"
    events = card.decide_claim("c1", "reject", None, "未签到", "org-1", now=LATER)
    assert [(e.event_type, e.data) for e in events] == [("ClaimRejected", {
        "person_id": "v1", "claim_id": "c1", "activity_id": "a1", "reason": "未签到", "decided_by": "org-1"})]
    log.record(card, events)
    assert (card.approved_minutes, card.points_balance, card.claims["c1"]["status"]) == (0, 0, "rejected")
    with pytest.raises(Conflict) as again:
        card.decide_claim("c1", "approve", None, "", "org-1", now=LATER)
    assert again.value.reason == "already_decided"


def test_a_retroactive_entry_is_marked_carries_its_reason_and_is_capped():
    log = Log()
    activity = published(log, planned=180)
    card = registered(log, V1)
    [entry] = claimed(log, card, activity, T0, T0 + timedelta(hours=4), "c1", retroactive=True,
                      reason="当天漏签，补录")
    assert {k: entry.data[k] for k in ("attended_minutes", "minutes", "retroactive", "reason")} == {
        "attended_minutes": 240, "minutes": 180, "retroactive": True, "reason": "当天漏签，补录"}
    assert card.claims["c1"]["retroactive"] is True
    [approved] = card.decide_claim("c1", "approve", None, "", "org-1", now=LATER)
    assert (approved.data["retroactive"], approved.data["minutes"]) == (True, 180)


# -- points -------------------------------------------------------------------------------------

@pytest.mark.parametrize("minutes, rate, points", [(60, 20, 20), (90, 20, 30), (30, 15, 7), (150, 7, 17),
                                                   (480, 0, 0), (0, 50, 0)])
def test_points_per_approved_hour_rounded_down(minutes, rate, points):
    assert points_for(minutes, rate) == points


def test_the_points_balance_never_goes_negative():
    log, card = _pending(180, pph=20)
    log.record(card, card.decide_claim("c1", "approve", None, "", "org-1", now=LATER))
    assert card.points_balance == 60
    reward = Reward(id="r1")
    log.record(reward, reward.list_item(CADRE, {"name": "环保袋", "description": "", "community_id": COMMUNITY,
                                                "cost_points": 61, "stock": 5}))
    with pytest.raises(Conflict) as short:
        card.spend_points("rd1", reward)
    assert (short.value.reason, short.value.details) == ("insufficient_points",
                                                        {"points_balance": 60, "cost_points": 61})
    reward.cost_points = 60
    [spent] = card.spend_points("rd1", reward)
    assert (spent.event_type, spent.data) == ("PointsSpent", {
        "person_id": "v1", "redemption_id": "rd1", "reward_id": "r1", "points": 60, "balance_after": 0})
    log.record(card, [spent])
    assert (card.points_earned, card.points_spent, card.points_balance) == (60, 60, 0)
    reward.cost_points = 1
    with pytest.raises(Conflict):
        card.spend_points("rd2", reward)


def test_only_approved_minutes_count():
    log, card = _pending(180)
    assert (card.approved_minutes, card.points_earned, card.star_level) == (0, 0, 0)
    log.record(card, card.credit_project_labour(delivery(5970), 10))
    assert card.approved_minutes == 5970
    # A pending claim that would cross 100 hours reaches no star until it is approved.
    assert card.star_level == 0
    events = card.decide_claim("c1", "approve", None, "", "org-1", now=LATER)
    assert kinds(events) == ["ClaimApproved", "StarLevelReached"]


# -- project labour -----------------------------------------------------------------------------

def test_project_labour_is_credited_once_per_pledge_delivery():
    log = Log()
    card = registered(log, V1)
    events = card.credit_project_labour(delivery(150), 10)
    assert [(e.event_type, e.data) for e in events] == [("ProjectLabourCredited", {
        "person_id": "v1", "delivery_key": "pl-1#1", "project_id": "p-1", "project_title": "清理河道",
        "community_id": COMMUNITY, "day": "2025-03-20", "minutes": 150, "points": 25})]
    log.record(card, events)
    assert card.credit_project_labour(delivery(150), 10) == []
    assert card.credit_project_labour(delivery(999), 10) == []
    log.record(card, card.credit_project_labour(delivery(90, no=2), 10))
    log.record(card, card.credit_project_labour(delivery(60, pledge="pl-2"), 10))
    assert card.credited_deliveries == ["pl-1#1", "pl-1#2", "pl-2#1"]
    assert (card.approved_minutes, card.points_balance) == (300, 50)


# -- star levels --------------------------------------------------------------------------------

@pytest.mark.parametrize("minutes, level", [(0, 0), (5999, 0), (6000, 1), (17999, 1), (18000, 2), (35999, 2),
                                            (36000, 3), (59999, 3), (60000, 4), (89999, 4), (90000, 5),
                                            (500000, 5)])
def test_star_level_thresholds(minutes, level):
    assert star_level(minutes) == level


def test_star_levels_are_events_exactly_at_the_thresholds():
    log = Log()
    card = registered(log, V1)
    steps = [  # (minutes credited, total after, star events expected as (level, label))
        (5970, 5970, []),
        (30, 6000, [(1, "一星 one star")]),
        (11970, 17970, []),
        (30, 18000, [(2, "二星 two stars")]),
        (17999, 35999, []),
        (1, 36000, [(3, "三星 three stars")]),
        (24000, 60000, [(4, "四星 four stars")]),
        (29999, 89999, []),
        (1, 90000, [(5, "五星 five stars")]),
        (600, 90600, []),
    ]
    for number, (minutes, total, expected) in enumerate(steps, start=1):
        events = card.credit_project_labour(delivery(minutes, no=number), 10)
        assert events[0].event_type == "ProjectLabourCredited"
        stars = [(e.data["level"], e.data["label"]) for e in events[1:]]
        assert stars == expected, (number, total)
        assert all(e.event_type == "StarLevelReached" and e.data["approved_minutes"] == total for e in events[1:])
        log.record(card, events)
        assert card.approved_minutes == total
        if total == 18000:
            assert (card.star_level, card.view(full=True)["next_star_hours"]) == (2, 600)
    assert (card.star_level, card.view(full=True)["star_label"]) == (5, "五星 five stars")
    assert card.view(full=True)["next_star_hours"] is None


def test_crossing_two_star_levels_at_once():
    log = Log()
    card = registered(log, V1)
    log.record(card, card.credit_project_labour(delivery(5970), 10))
    events = card.credit_project_labour(delivery(12030, no=2), 10)
    assert [(e.event_type, e.data) for e in events[1:]] == [
        ("StarLevelReached", {"person_id": "v1", "level": 1, "label": "一星 one star", "approved_minutes": 18000}),
        ("StarLevelReached", {"person_id": "v1", "level": 2, "label": "二星 two stars", "approved_minutes": 18000})]
    log.record(card, events)
    assert card.star_level == 2


def test_an_approved_claim_reaches_a_star_level():
    log = Log()
    activity = published(log)
    card = registered(log, V1)
    log.record(card, card.credit_project_labour(delivery(5940), 10))
    claimed(log, card, activity, T0, T0 + timedelta(hours=1), "c1")
    events = card.decide_claim("c1", "approve", None, "", "org-1", now=LATER)
    assert [(e.event_type, e.data["minutes"]) for e in events[:1]] == [("ClaimApproved", 60)]
    assert [(e.event_type, e.data["level"], e.data["approved_minutes"]) for e in events[1:]] == [
        ("StarLevelReached", 1, 6000)]
    log.record(card, events)
    assert (card.star_level, card.view(full=False)["star_label"]) == (1, "一星 one star")


# -- rewards ------------------------------------------------------------------------------------

REWARD = {"name": "环保袋", "description": "社区定制", "community_id": COMMUNITY, "cost_points": 50, "stock": 1}


def test_only_staff_of_the_community_list_and_restock_rewards():
    for actor, reason in ((V1, "role_required"), (ORGANISER, "role_required"),
                          (who("cadre-2", "cadre", community=OTHER), "other_community")):
        with pytest.raises(Forbidden) as refused:
            Reward(id="r1").list_item(actor, REWARD)
        assert refused.value.reason == reason
    log, reward = Log(), Reward(id="r1")
    events = reward.list_item(CADRE, REWARD)
    assert [(e.event_type, e.data) for e in events] == [("RewardListed", {"reward_id": "r1", **REWARD})]
    log.record(reward, events)
    with pytest.raises(Conflict):
        reward.list_item(CADRE, REWARD)
    with pytest.raises(Forbidden):
        reward.restock(V1, 5)
    [restocked] = reward.restock(ADMIN, 4)
    assert (restocked.event_type, restocked.data) == ("RewardRestocked", {"reward_id": "r1", "quantity": 4,
                                                                          "stock_after": 5})
    log.record(reward, [restocked])
    assert reward.view() == {"reward_id": "r1", "name": "环保袋", "description": "社区定制",
                             "community_id": COMMUNITY, "cost_points": 50, "stock": 5, "redemptions": 0,
                             "version": 2}


def test_redemption_lowers_stock_and_balance_and_never_oversells():
    log = Log()
    card = registered(log, V1)
    log.record(card, card.credit_project_labour(delivery(600), 10))  # 100 points
    reward = Reward(id="r1")
    log.record(reward, reward.list_item(CADRE, REWARD))
    redeemed = reward.redeem(V1, "rd1", card)
    assert [(e.event_type, e.data) for e in redeemed] == [("RewardRedeemed", {
        "reward_id": "r1", "redemption_id": "rd1", "person_id": "v1", "points": 50, "stock_after": 0})]
    log.record(card, card.spend_points("rd1", reward))
    log.record(reward, redeemed)
    assert (reward.stock, card.points_balance) == (0, 50)
    with pytest.raises(Conflict) as sold_out:
        reward.redeem(V1, "rd2", card)
    assert sold_out.value.reason == "out_of_stock"

    with pytest.raises(Conflict) as no_card:
        reward.redeem(V2, "rd3", Card(id="v2"))
    assert no_card.value.reason == "no_card"
    stranger = registered(log, who("x1", "resident", community=OTHER), community=OTHER)
    with pytest.raises(Forbidden) as other:
        reward.redeem(who("x1", "resident", community=OTHER), "rd4", stranger)
    assert other.value.reason == "other_community"
    with pytest.raises(Forbidden):
        reward.redeem(CADRE, "rd5", card)


def test_fulfilment_is_recorded_once_by_staff_or_an_organiser():
    log = Log()
    card = registered(log, V1)
    reward = Reward(id="r1")
    log.record(reward, reward.list_item(CADRE, {**REWARD, "stock": 3}))
    log.record(reward, reward.redeem(V1, "rd1", card), at=T0 + timedelta(days=1))
    with pytest.raises(Forbidden):
        reward.fulfil(V1, "rd1")
    with pytest.raises(DomainError) as unknown:
        reward.fulfil(CADRE, "rd9")
    assert (unknown.value.reason, unknown.value.status) == ("unknown_redemption", 422)
    [done] = reward.fulfil(ORGANISER, "rd1")
    assert (done.event_type, done.data) == ("RedemptionFulfilled", {
        "reward_id": "r1", "redemption_id": "rd1", "person_id": "v1", "fulfilled_by": "org-1"})
    log.record(reward, [done], at=T0 + timedelta(days=2))
    assert reward.redemptions["rd1"] == {"person_id": "v1", "points": 50, "at": "2025-03-09T01:00:00.000000Z",
                                         "fulfilled_at": "2025-03-10T01:00:00.000000Z"}
    with pytest.raises(Conflict) as again:
        reward.fulfil(CADRE, "rd1")
    assert again.value.reason == "already_fulfilled"


# -- certificates -------------------------------------------------------------------------------

def _expected_digest(person_id, period_from, period_to, credits, last_position) -> str:
    canonical = json.dumps({"person_id": person_id, "from": period_from, "to": period_to,
                            "last_position": last_position, "credits": credits},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _card_with_history():
    """March: a 3-hour activity approved, 2 hours of project labour, one pending and one rejected
    claim; April: one approved hour (outside a March certificate)."""
    log = Log()
    card = registered(log, V1)
    march = published(log, "a1", title="敬老院陪伴")
    pending = published(log, "a2", start=T0 + timedelta(days=7), title="图书角整理")
    rejected = published(log, "a3", start=T0 + timedelta(days=8), title="垃圾分类宣传")
    april = published(log, "a4", start=datetime(2025, 4, 2, 1, 0, tzinfo=UTC), title="清明祭扫引导")
    claimed(log, card, march, T0, T0 + timedelta(hours=3), "c1")
    [approved] = log.record(card, card.decide_claim("c1", "approve", None, "", "org-1", now=LATER))
    [labour] = log.record(card, card.credit_project_labour(delivery(120), 10))
    claimed(log, card, pending, T0 + timedelta(days=7), T0 + timedelta(days=7, hours=1), "c2")
    claimed(log, card, rejected, T0 + timedelta(days=8), T0 + timedelta(days=8, hours=1), "c3")
    log.record(card, card.decide_claim("c3", "reject", None, "重复登记", "org-1", now=LATER))
    claimed(log, card, april, datetime(2025, 4, 2, 1, 0, tzinfo=UTC), datetime(2025, 4, 2, 2, 0, tzinfo=UTC), "c4")
    log.record(card, card.decide_claim("c4", "approve", None, "", "org-1", now=LATER))
    return log, card, approved, labour


def test_certificate_entries_are_the_approved_credits_of_the_period():
    log, card, approved, labour = _card_with_history()
    entries = certificate_entries(log.streams["card-v1"], "2025-03-01", "2025-03-31")
    assert entries == [
        {"event_id": approved.event_id, "position": approved.position, "day": "2025-03-08", "minutes": 180,
         "source": {"kind": "activity", "id": "a1", "title": "敬老院陪伴"}},
        {"event_id": labour.event_id, "position": labour.position, "day": "2025-03-20", "minutes": 120,
         "source": {"kind": "project", "id": "p-1", "title": "清理河道"}},
    ]
    assert [e["minutes"] for e in certificate_entries(log.streams["card-v1"], "2025-03-09", "2025-04-02")] == [120, 60]
    assert certificate_entries(log.streams["card-v1"], "2025-03-21", "2025-04-01") == []


def test_issuing_a_certificate():
    log, card, approved, labour = _card_with_history()
    events = log.streams["card-v1"]
    certificate = Certificate(id="ZYFW-20250401-0A1B2C3D")
    [issued] = certificate.issue(CADRE, card, events, "2025-03-01", "2025-03-31", "海沧区志愿者协会", "2025-04-01")
    entries = certificate_entries(events, "2025-03-01", "2025-03-31")
    last = events[-1].position
    assert last == log.position
    digest = _expected_digest("v1", "2025-03-01", "2025-03-31",
                              [[approved.event_id, 180], [labour.event_id, 120]], last)
    assert (issued.event_type, issued.data) == ("CertificateIssued", {
        "certificate_number": "ZYFW-20250401-0A1B2C3D", "person_id": "v1", "card_number": "YGK-V1",
        "name": "李梅", "period_from": "2025-03-01", "period_to": "2025-03-31", "entries": entries,
        "total_minutes": 300, "issuing_organisation": "海沧区志愿者协会", "issued_on": "2025-04-01",
        "issued_by": "cadre-1", "last_position": last, "digest": digest})
    log.record(certificate, [issued])
    view = certificate.view()
    assert (view["total_minutes"], view["total_hours"], view["verification"], view["last_position"]) == (
        300, 5.0, digest, last)
    assert [a["source"]["title"] for a in view["activities"]] == ["敬老院陪伴", "清理河道"]


def test_a_certificate_needs_an_organiser_a_card_and_a_period():
    log, card, _approved, _labour = _card_with_history()
    events = log.streams["card-v1"]
    with pytest.raises(Forbidden):
        Certificate(id="n1").issue(V1, card, events, "2025-03-01", "2025-03-31", "协会", "2025-04-01")
    with pytest.raises(DomainError) as no_card:
        Certificate(id="n1").issue(CADRE, Card(id="v9"), [], "2025-03-01", "2025-03-31", "协会", "2025-04-01")
    assert no_card.value.reason == "no_card"
    with pytest.raises(DomainError) as backwards:
        Certificate(id="n1").issue(CADRE, card, events, "2025-03-31", "2025-03-01", "协会", "2025-04-01")
    assert backwards.value.reason == "invalid_period"
    [issued] = Certificate(id="n1").issue(ORGANISER, card, events, "2025-03-08", "2025-03-08", "社工站", "2025-04-01")
    assert issued.data["total_minutes"] == 180


def test_a_changed_event_changes_the_digest():
    log, card, approved, labour = _card_with_history()
    events = log.streams["card-v1"]
    last = events[-1].position

    def digest_of(stream, last_position=last, period=("2025-03-01", "2025-03-31")):
        return certificate_digest("v1", *period, certificate_entries(stream, *period), last_position)

    original = digest_of(events)
    assert original == _expected_digest("v1", "2025-03-01", "2025-03-31",
                                        [[approved.event_id, 180], [labour.event_id, 120]], last)
    more_minutes = [dataclasses.replace(e, data={**e.data, "minutes": 210}) if e is approved else e for e in events]
    other_id = [dataclasses.replace(e, event_id="00000000-0000-0000-0000-000000000000") if e is labour else e
                for e in events]
    dropped = [e for e in events if e is not labour]
    changed = {digest_of(more_minutes), digest_of(other_id), digest_of(dropped), digest_of(events, last + 1),
               digest_of(events, period=("2025-03-01", "2025-03-30")),
               certificate_digest("v2", "2025-03-01", "2025-03-31",
                                  certificate_entries(events, "2025-03-01", "2025-03-31"), last)}
    assert original not in changed and len(changed) == 6
    assert digest_of(list(events)) == original
