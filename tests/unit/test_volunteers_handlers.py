"""The volunteers service's command handlers through the message bus, on the in-memory event store:
the journeys of the 义工卡 as commands, with the clock and the ids the test injects."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from services.kernel.bus import MessageBus
from services.kernel.errors import Conflict, DomainError, Forbidden
from services.kernel.memory import InMemoryEventStore
from services.kernel.model import Principal
from services.volunteers import commands as c
from services.volunteers.domain import Card
from services.volunteers.handlers import HANDLERS

UTC = timezone.utc
START = datetime(2026, 3, 8, 1, 0, tzinfo=UTC)
COMMUNITY = "haicang"


def person(person_id: str, *roles: str, community: str | None = COMMUNITY) -> Principal:
    return Principal(person_id, f"name of {person_id}", frozenset(roles), community)


ORG, CADRE, V1, V2 = person("org-1", "organiser"), person("cadre-1", "cadre"), person("v1", "resident"), person("v2", "resident")


class World:
    def __init__(self) -> None:
        self.at = START - timedelta(days=1)
        self.ids = iter(f"{n:016x}" for n in range(1, 10_000))
        self.store = InMemoryEventStore(service="volunteers")
        self.bus = MessageBus(self.store, HANDLERS, clock=lambda: self.at, new_id=lambda: next(self.ids))

    def do(self, actor: Principal | None, cmd):
        return self.bus.handle(cmd, actor=actor)

    def refused(self, actor, cmd, error=Conflict, reason: str | None = None):
        before = self.store.last_position()
        with pytest.raises(error) as refusal:
            self.do(actor, cmd)
        assert self.store.last_position() == before, "a refused command stored something"
        if reason is not None:
            assert refusal.value.reason == reason
        return refusal.value

    def publish(self, capacity: int = 5) -> str:
        outcome = self.do(ORG, c.PublishActivity(
            title="敬老院陪伴", community_id=COMMUNITY, place="海沧敬老院",
            organiser={"kind": "social_organisation", "id": "so-1", "name": "海沧社工站"},
            starts_at=START, ends_at=START + timedelta(hours=4), capacity=capacity, planned_minutes=180,
            points_per_hour=20))
        return outcome.result.id


@pytest.fixture
def world() -> World:
    world = World()
    for volunteer in (V1, V2):
        world.do(volunteer, c.RegisterCard(phone="13812345678"))
    return world


def test_sign_up_check_in_and_out_then_approval_credits_the_card(world):
    activity_id = world.publish()
    world.do(V1, c.SignUp(activity_id=activity_id))
    code = world.store.load(f"activity-{activity_id}")[0].data["checkin_code"]
    world.at = START - timedelta(minutes=10)
    world.do(V1, c.CheckIn(activity_id=activity_id, code=code))
    world.at = START + timedelta(hours=3, minutes=5)
    out = world.do(V1, c.CheckOut(activity_id=activity_id, code=code))
    claim_id = out.first("ClaimRecorded", "claim_id")
    assert out.result.claims[claim_id]["minutes"] == 180  # 3h15 attended, capped at the plan
    decided = world.do(ORG, c.DecideClaim(activity_id=activity_id, person_id="v1", decision="approve"))
    card = decided.result
    assert isinstance(card, Card) and (card.approved_minutes, card.points_earned) == (180, 60)


def test_refusals_store_nothing(world):
    activity_id = world.publish(capacity=1)
    world.do(V1, c.SignUp(activity_id=activity_id))
    world.refused(V1, c.SignUp(activity_id=activity_id), reason="already_signed_up")
    world.refused(V2, c.SignUp(activity_id=activity_id), reason="full")
    world.refused(V1, c.SignUp(activity_id=activity_id, expected_version=1), reason="concurrency_conflict")
    world.refused(V1, c.CancelActivity(activity_id=activity_id, reason="rain"), Forbidden, "not_organiser")
    world.refused(person("v9", "resident"), c.SignUp(activity_id="nope"), DomainError, "not_found")


def test_attendance_within_the_activity_and_nobody_decides_their_own_claim(world):
    activity_id = world.publish()
    world.refused(ORG, c.RecordAttendance(activity_id=activity_id, person_id="v1",
                                          start=START - timedelta(hours=1)), DomainError, "outside_activity_time")
    world.refused(ORG, c.RecordAttendance(activity_id=activity_id, person_id="v1"), DomainError,
                  "attendance_in_future")  # the day before: nothing has happened yet
    world.at = START + timedelta(hours=2)  # while it goes on: from the start until now
    recorded = world.do(ORG, c.RecordAttendance(activity_id=activity_id, person_id="v1"))
    claim = recorded.result.claims[recorded.first("ClaimRecorded", "claim_id")]
    assert (claim["end"], claim["minutes"]) == ("2026-03-08T03:00:00.000000Z", 120)
    world.refused(ORG, c.RecordRetroactiveEntry(activity_id=activity_id, person_id="v2", reason="忘记签到"),
                  reason="activity_not_over")
    world.at = START + timedelta(days=1)
    world.do(ORG, c.RecordRetroactiveEntry(activity_id=activity_id, person_id="v2", reason="忘记签到"))
    world.refused(V1, c.DecideClaim(activity_id=activity_id, person_id="v1", decision="approve"), Forbidden,
                  "not_organiser")
    world.do(CADRE, c.RegisterCard())
    later = world.publish()
    world.do(ORG, c.RecordAttendance(activity_id=later, person_id="cadre-1"))
    world.refused(CADRE, c.DecideClaim(activity_id=later, person_id="cadre-1", decision="approve"), Forbidden,
                  "own_claim")


def test_a_redemption_spends_points_and_stock_together(world):
    activity_id = world.publish()
    world.at = START + timedelta(hours=4)
    world.do(ORG, c.RecordAttendance(activity_id=activity_id, person_id="v1"))
    world.do(ORG, c.DecideClaim(activity_id=activity_id, person_id="v1", decision="approve"))
    reward_id = world.do(CADRE, c.ListReward(name="毛巾", community_id=COMMUNITY, cost_points=50, stock=1)).result.id
    redeemed = world.do(V1, c.RedeemReward(reward_id=reward_id))
    assert redeemed.result.stock == 0
    assert redeemed.first("PointsSpent", "points") == 50
    world.refused(V2, c.RedeemReward(reward_id=reward_id), reason="out_of_stock")


def test_project_labour_is_credited_once_and_opens_a_card_when_needed(world):
    delivery = {"project_id": "p-1", "project_title": "清理河道", "community_id": COMMUNITY, "pledge_id": "pl-1",
                "delivery_no": 1, "contributor_id": "newcomer", "contributor_name": "新居民", "kind": "labour",
                "labour_minutes": 120, "delivered_at": "2026-03-20T02:00:00.000000Z"}
    first = world.do(None, c.CreditProjectLabour(delivery=delivery))
    assert first.result.registered_via == "project" and first.result.approved_minutes == 120
    again = world.do(None, c.CreditProjectLabour(delivery=delivery))
    assert again.recorded == [] and again.result.approved_minutes == 120


def test_a_certificate_is_numbered_from_the_clock_and_the_ids(world):
    activity_id = world.publish()
    world.at = START + timedelta(hours=4)
    world.do(ORG, c.RecordAttendance(activity_id=activity_id, person_id="v1"))
    world.do(ORG, c.DecideClaim(activity_id=activity_id, person_id="v1", decision="approve"))
    world.at = datetime(2026, 4, 1, 2, 0, tzinfo=UTC)
    issued = world.do(ORG, c.IssueCertificate(person_id="v1", period_from=date(2026, 3, 1),
                                              period_to=date(2026, 3, 31), issuing_organisation="海沧社工站"))
    assert issued.result.id.startswith("ZYFW-20260401-") and issued.result.total_minutes == 180
