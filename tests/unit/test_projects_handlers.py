"""The projects service's command handlers through the message bus, on the in-memory event store: a
project from its proposal through the council vote to its completion, with the community fund
changing in the same unit of work as the project, and refusals that store nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.kernel.bus import MessageBus
from services.kernel.errors import Conflict, DomainError, Forbidden
from services.kernel.memory import InMemoryEventStore
from services.kernel.model import Principal
from services.projects import commands as c
from services.projects.community import CommunityFund
from services.projects.handlers import HANDLERS

T0 = datetime(2026, 5, 1, 2, 0, tzinfo=timezone.utc)
HC = "haicang"


def person(person_id: str, *roles: str, community: str | None = HC) -> Principal:
    return Principal(person_id, f"name of {person_id}", frozenset(roles), community)


ADMIN, CADRE, GRID = person("admin", "admin", community=None), person("cadre", "cadre"), person("grid", "grid_worker")
RESIDENTS = [person(f"r{n}", "resident") for n in range(8)]
REPS = [person(f"rep{n}", "representative") for n in range(3)]


class World:
    def __init__(self) -> None:
        ids = iter(f"{n:016x}" for n in range(1, 10_000))
        self.store = InMemoryEventStore(service="projects")
        self.bus = MessageBus(self.store, HANDLERS, clock=lambda: T0, new_id=lambda: next(ids))

    def do(self, actor, cmd):
        return self.bus.handle(cmd, actor=actor)

    def refused(self, actor, cmd, error, reason):
        before = self.store.last_position()
        with pytest.raises(error) as refusal:
            self.do(actor, cmd)
        assert refusal.value.reason == reason
        assert self.store.last_position() == before, "a refused command stored something"

    def fund(self) -> CommunityFund:
        return CommunityFund.replay(HC, self.store.load(f"fund-{HC}"))


@pytest.fixture
def world() -> World:
    world = World()
    world.do(ADMIN, c.RegisterCommunity(community_id=HC, name="海沧社区", grids=[{"grid_id": "g1", "name": "一网格"}]))
    world.do(CADRE, c.SetRepresentatives(community_id=HC, representatives=[
        {"person_id": rep.person_id, "name": rep.name} for rep in REPS]))
    world.do(CADRE, c.CreditFund(community_id=HC, amount_fen=1_000_000, source="government_allocation"))
    return world


def proposed(world: World, requested_fen: int = 400_000) -> str:
    outcome = world.do(RESIDENTS[0], c.ProposeProject(
        community_id=HC, grid_id="g1", title="路灯改造", description="小区主干道路灯不亮", category="facilities",
        estimated_cost_fen=max(500_000, requested_fen), requested_fen=requested_fen))
    project_id = outcome.result.id
    for resident in RESIDENTS[1:7]:
        world.do(resident, c.CoSign(project_id=project_id))
    return project_id


def test_a_project_is_voted_built_and_completed_and_the_fund_follows(world):
    project_id = proposed(world)
    opened = world.do(CADRE, c.OpenVote(project_id=project_id))
    assert opened.result.stage == "co_plan" and world.fund().balance_fen == 600_000
    assert {e.stream_id for e in opened.recorded} == {f"project-{project_id}", f"fund-{HC}"}
    for rep in REPS:
        world.do(rep, c.CastBallot(project_id=project_id, choice="yes"))
    closed = world.do(CADRE, c.CloseVote(project_id=project_id))
    assert closed.result.stage == "co_build"
    world.do(CADRE, c.RecordSpending(project_id=project_id, amount_fen=300_000, receipt_ref="FP-1"))
    world.do(CADRE, c.RecordMilestone(project_id=project_id, progress=100, note="完工"))
    done = world.do(CADRE, c.CompleteProject(project_id=project_id))
    assert done.result.stage == "co_manage"
    assert world.fund().balance_fen == 700_000  # the unspent 100,000 fen came back


def test_a_rejected_vote_releases_the_reservation(world):
    project_id = proposed(world)
    world.do(CADRE, c.OpenVote(project_id=project_id))
    for rep in REPS:
        world.do(rep, c.CastBallot(project_id=project_id, choice="no"))
    assert world.do(CADRE, c.CloseVote(project_id=project_id)).result.stage == "rejected"
    assert world.fund().balance_fen == 1_000_000


def test_refusals_store_nothing(world):
    project_id = proposed(world, requested_fen=2_000_000)
    world.refused(CADRE, c.OpenVote(project_id=project_id), Conflict, "insufficient_fund")
    world.refused(RESIDENTS[7], c.OpenVote(project_id=project_id), Forbidden, "role_required")
    world.refused(RESIDENTS[1], c.CoSign(project_id=project_id, expected_version=1), Conflict,
                  "concurrency_conflict")
    world.refused(CADRE, c.CreditFund(community_id=HC, amount_fen=1, source="lottery"), DomainError,
                  "invalid_source")
    world.refused(person("x", "cadre", community="xinyang"), c.CreditFund(
        community_id=HC, amount_fen=1, source="government_allocation"), Forbidden, "other_community")
