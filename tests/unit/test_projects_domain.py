"""The projects domain without a database or HTTP: communities and their settings, the community
fund ledger, and a project through 共谋 共建 共管 共评 共享 — every rule of the projects issue,
with the exact events decided, the state they lead to, and every refusal with its reason.

The project's state keeps what decisions need; what only its page shows (revisions, opinions,
spending, milestones, maintenance logs, rewards, names and times) is in the events and the read
model ``project_details``, tested through the API (tests/integration/test_projects_api.py).

Decisions are driven as ``handlers.py`` drives them (a project and its fund decided together when
money moves); decided events are "stored" in memory with versions, positions and times, and
applied, as the event store would.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from services.kernel.auth import Principal
from services.kernel.errors import Conflict, DomainError, Forbidden
from services.kernel.events import StoredEvent
from services.projects.community import Community, CommunityFund
from services.projects.domain import Project

C = "haicang"
T0 = datetime(2026, 11, 2, 1, 0, tzinfo=timezone.utc)
UNIT = {"unit_id": "haicang-jwh", "name": "海沧社区居委会"}


def who(person_id: str, *roles: str, community: str | None = C) -> Principal:
    return Principal(person_id=person_id, name=f"{person_id}号", roles=frozenset(roles or ("resident",)),
                     community=community)


PROPOSER = who("r0")
RESIDENTS = [who(f"r{i}") for i in range(12)]  # r0 is the proposer
REPS = [who(f"rep{i}", "representative", "resident") for i in range(9)]
CADRE = who("cadre", "cadre")
GRID = who("grid", "grid_worker")
ADMIN = who("admin", "admin", community=None)
OUTSIDER = who("x1", community="jimei")
OTHER_CADRE = who("jimei-cadre", "cadre", community="jimei")
UPKEEP = ["assign_maintainer", "log_maintenance", "report_problem", "resolve_problem"]
PROPOSAL = {"community_id": C, "grid_id": "g1", "title": "修建休闲活动室", "description": "在小区空地建一间活动室",
            "category": "facilities", "location": "3号楼旁", "estimated_cost_fen": 5_000_000,
            "requested_fen": 3_000_000}


def kinds(events) -> list[str]:
    return [e.event_type for e in events]


class World:
    """A community with its fund, and an in-memory log that stores and applies decided events."""

    def __init__(self, reps: int = 9, fund_fen: int = 10_000_000, **settings) -> None:
        self.now = T0
        self.position = 0
        self.spendings = 0
        self.streams: dict[str, list[StoredEvent]] = defaultdict(list)
        self.community = Community(id=C)
        self.record(self.community, self.community.register(
            "海沧社区", "海沧区", [{"grid_id": "g1", "name": "第一网格"}, {"grid_id": "g2", "name": "第二网格"}],
            settings or None))
        if reps:
            self.record(self.community, self.community.set_representatives(
                [{"person_id": p.person_id, "name": p.name} for p in REPS[:reps]]))
        self.fund = CommunityFund(id=C)
        if fund_fen:
            self.record(self.fund, self.fund.credit(fund_fen, "government_allocation", "海财〔2026〕1号", ""))

    def record(self, state, events, actor: str | None = None) -> list[StoredEvent]:
        stored = []
        for new in events:
            self.position += 1
            event = StoredEvent(event_id=new.event_id, event_type=new.event_type,
                                schema_version=new.schema_version, stream_id=state.stream_id,
                                version=state.version + 1, position=self.position, occurred_at=self.now,
                                data=dict(new.data), metadata={"actor": actor})
            state.apply(event)
            self.streams[state.stream_id].append(event)
            stored.append(event)
        return stored

    def tick(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # -- the project's way, as handlers.py drives it ---------------------------------------------

    def propose(self, project_id: str = "p1", proposer: Principal = PROPOSER, **overrides) -> Project:
        project = Project(id=project_id)
        self.record(project, project.propose(proposer, {**PROPOSAL, **overrides}, self.community),
                    proposer.person_id)
        return project

    def qualify(self, project: Project) -> Project:
        for person in RESIDENTS[1:1 + self.community.settings["cosigners_required"]]:
            self.record(project, project.cosign(person))
        return project

    def open_vote(self, project: Project, actor: Principal = CADRE, unit: dict | None = UNIT) -> list[StoredEvent]:
        events = project.open_vote(actor, self.community, unit)
        stored = self.record(self.fund, self.fund.reserve(project.id, project.requested_fen))
        return stored + self.record(project, events)

    def ballots(self, project: Project, yes: int, no: int = 0, abstain: int = 0) -> None:
        choices = ["yes"] * yes + ["no"] * no + ["abstain"] * abstain
        for rep, choice in zip(REPS, choices):
            self.record(project, project.cast_ballot(rep, choice))

    def close_vote(self, project: Project, actor: Principal = CADRE) -> list[StoredEvent]:
        stored = self.record(project, project.close_vote(actor))
        if project.stage == "rejected":
            stored += self.record(self.fund, self.fund.release(project.id, f"project {project.id} rejected"))
        return stored

    def voting(self, project_id: str = "p1", **overrides) -> Project:
        project = self.qualify(self.propose(project_id, **overrides))
        self.open_vote(project)
        return project

    def approved(self, project_id: str = "p1", **overrides) -> Project:
        project = self.voting(project_id, **overrides)
        self.ballots(project, yes=len(self.community.representatives))
        self.close_vote(project)
        return project

    def spend(self, project: Project, amount: int, receipt: str = "FP-2026-0012", what: str = "安装人工"):
        self.spendings += 1
        events = project.record_spending(CADRE, f"s{self.spendings}", amount, receipt, what)
        stored = self.record(self.fund, self.fund.spend(project.id, amount, receipt, what))
        return stored + self.record(project, events)

    def complete(self, project: Project) -> list[StoredEvent]:
        stored = self.record(project, project.complete(CADRE))
        return stored + self.record(self.fund, self.fund.release(project.id, "unspent remainder"))

    def built(self) -> Project:
        """Approved, a labour pledge by r3 (210 of 240 minutes delivered) and materials of an
        enterprise (300 000 fen), 600 000 fen spent, completed: in co_manage."""
        project = self.approved()
        self.record(project, project.pledge(RESIDENTS[3], "pl-labour", {"kind": "labour", "labour_minutes": 240}))
        self.record(project, project.pledge(CADRE, "pl-steel", {
            "kind": "materials", "materials_fen": 300_000, "description": "不锈钢扶手 40 米",
            "contributor": {"contributor_id": "acme-steel", "name": "海沧钢材公司", "type": "enterprise"}}))
        self.record(project, project.confirm_delivery(GRID, "pl-labour", {"labour_minutes": 210, "note": "3.5 小时"},
                                                      "2026-11-03T01:00:00.000000Z"))
        self.record(project, project.confirm_delivery(GRID, "pl-steel", {"materials_fen": 300_000},
                                                      "2026-11-03T02:00:00.000000Z"))
        self.spend(project, 600_000)
        self.record(project, project.record_milestone(CADRE, 100, "全部完成"))
        self.complete(project)
        return project

    def evaluating(self) -> Project:
        project = self.built()
        self.record(project, project.open_evaluation(CADRE, None))
        return project

    def sharing(self, scores=(5, 5, 4, 4, 3), published: bool = False) -> Project:
        project = self.evaluating()
        for person, score in zip(RESIDENTS, scores):
            self.record(project, project.rate(person, score, ""))
        self.record(project, project.close_evaluation(CADRE))
        if published:
            self.record(project, project.publish_results(CADRE, "120 户老人受益", None))
        return project


def refused(error_type, reason: str, decide, *states):
    """``decide()`` raises ``error_type`` with ``reason`` and leaves every given state unchanged."""
    before = [s.to_json() for s in states]
    with pytest.raises(error_type) as caught:
        decide()
    assert type(caught.value) is error_type, caught.value
    assert caught.value.reason == reason, caught.value.message
    assert [s.to_json() for s in states] == before
    return caught.value


# == communities ==================================================================================

def test_a_community_registers_with_the_default_settings():
    community = Community(id=C)
    [event] = community.register("海沧社区", "海沧区", [{"grid_id": "g1", "name": "第一网格"}], None)
    assert event.event_type == "CommunityRegistered"
    assert event.data == {"community_id": C, "name": "海沧社区", "district": "海沧区",
                          "grids": [{"grid_id": "g1", "name": "第一网格"}],
                          "settings": {"cosigners_required": 6, "quorum_numerator": 2, "quorum_denominator": 3,
                                       "pass_numerator": 1, "pass_denominator": 2}}
    world = World()
    assert world.community.settings == event.data["settings"]
    assert world.community.grids == {"g1": "第一网格", "g2": "第二网格"}
    assert sorted(world.community.representatives) == sorted(p.person_id for p in REPS)
    # Six co-signers: seven residents together with the proposer.
    assert world.propose().cosigners_required == 6


def test_settings_given_at_registration_are_merged_with_the_defaults():
    world = World(cosigners_required=2, quorum_numerator=1)
    assert world.community.settings == {"cosigners_required": 2, "quorum_numerator": 1, "quorum_denominator": 3,
                                        "pass_numerator": 1, "pass_denominator": 2}


@pytest.mark.parametrize("settings, field", [
    ({"cosigners_required": -1}, "cosigners_required"),
    ({"cosigners_required": 1001}, "cosigners_required"),
    ({"quorum_numerator": 4}, "quorum_numerator"),  # 4/3 is more than everyone
    ({"pass_denominator": 0}, "pass_numerator"),
    ({"pass_numerator": -1}, "pass_numerator"),
])
def test_invalid_settings_are_refused_naming_the_field(settings, field):
    community = Community(id=C)
    error = refused(DomainError, "invalid_settings",
                    lambda: community.register("海沧社区", "", [], settings), community)
    assert list(error.details) == [field]
    world = World()
    refused(DomainError, "invalid_settings", lambda: world.community.change_settings(settings), world.community)


def test_registering_twice_and_duplicate_grids_are_refused():
    world = World()
    refused(Conflict, "already_registered", lambda: world.community.register("x", "", [], None), world.community)
    fresh = Community(id="c2")
    error = refused(DomainError, "duplicate_grid", lambda: fresh.register(
        "x", "", [{"grid_id": "g1", "name": "a"}, {"grid_id": "g1", "name": "b"}], None), fresh)
    assert error.details == {"grids": "duplicate grid_id"}
    refused(Conflict, "duplicate_grid", lambda: world.community.add_grid("g1", "又一个"), world.community)
    world.record(world.community, world.community.add_grid("g3", "第三网格"))
    assert world.community.grids["g3"] == "第三网格"


def test_representatives_are_replaced_with_what_was_added_and_removed():
    world = World(reps=3)
    wanted = [{"person_id": "rep1", "name": "改名"}, {"person_id": "rep2", "name": "rep2号"},
              {"person_id": "rep5", "name": "新代表"}]
    [event] = world.community.set_representatives(wanted)
    assert event.event_type == "RepresentativesChanged"
    assert event.data == {"community_id": C, "count": 3, "removed": ["rep0"],
                          "added": [{"person_id": "rep1", "name": "改名"}, {"person_id": "rep5", "name": "新代表"}]}
    world.record(world.community, [event])
    assert world.community.representatives == {"rep1": "改名", "rep2": "rep2号", "rep5": "新代表"}
    assert world.community.set_representatives(wanted) == []
    error = refused(DomainError, "duplicate_representative", lambda: world.community.set_representatives(
        [{"person_id": "rep1", "name": "a"}, {"person_id": "rep1", "name": "b"}]), world.community)
    assert error.details == {"representatives": "duplicate person_id"}


def test_settings_change_only_when_they_differ():
    world = World()
    assert world.community.change_settings({"cosigners_required": 6}) == []
    [event] = world.community.change_settings({"cosigners_required": 3, "pass_numerator": 2, "pass_denominator": 3})
    assert event.data["settings"] == {"cosigners_required": 3, "quorum_numerator": 2, "quorum_denominator": 3,
                                      "pass_numerator": 2, "pass_denominator": 3}
    world.record(world.community, [event])
    assert world.community.settings["cosigners_required"] == 3
    # A project keeps the number of co-signers required when it was proposed.
    assert world.propose().cosigners_required == 3


# == the community fund ===========================================================================

@pytest.mark.parametrize("source", ["government_allocation", "reward_pool", "donation"])
def test_the_fund_is_credited_by_each_of_the_three_sources(source):
    world = World(fund_fen=1_000)
    [event] = world.fund.credit(250, source, "REF-1", "备注")
    assert event.event_type == "FundCredited"
    assert event.data == {"community_id": C, "amount_fen": 250, "source": source, "reference": "REF-1",
                          "note": "备注", "balance_after_fen": 1_250}
    world.record(world.fund, [event])
    assert (world.fund.balance_fen, world.fund.credited_fen) == (1_250, 1_250)


@pytest.mark.parametrize("amount", [0, -5, True, 2.5, "100"])
def test_a_credit_must_be_a_positive_whole_number_of_fen(amount):
    world = World(fund_fen=1_000)
    error = refused(DomainError, "invalid_amount", lambda: world.fund.credit(amount, "donation", "", ""), world.fund)
    assert error.details == {"amount_fen": "must be a positive integer (fen)"}


def test_an_unknown_fund_source_is_refused():
    world = World(fund_fen=1_000)
    error = refused(DomainError, "invalid_source", lambda: world.fund.credit(100, "lottery", "", ""), world.fund)
    assert error.details == {"source": "one of government_allocation, reward_pool, donation"}


def test_reserve_release_spend_and_reward_move_the_balance_as_the_ledger_says():
    world = World(fund_fen=1_000_000)
    fund = world.fund
    [reserved] = world.record(fund, fund.reserve("p1", 400_000))
    assert reserved.event_type == "FundReserved"
    assert reserved.data == {"community_id": C, "project_id": "p1", "amount_fen": 400_000,
                             "balance_after_fen": 600_000}
    [spent] = world.record(fund, fund.spend("p1", 150_000, "FP-001", "水泥"))
    assert spent.data == {"community_id": C, "project_id": "p1", "amount_fen": 150_000, "receipt_ref": "FP-001",
                          "description": "水泥", "reservation_remaining_fen": 250_000}
    assert fund.balance_fen == 600_000  # spending is paid out of the reservation
    [released] = world.record(fund, fund.release("p1", "completed"))
    assert released.data == {"community_id": C, "project_id": "p1", "amount_fen": 250_000, "reason": "completed",
                             "balance_after_fen": 850_000}
    assert fund.release("p1", "again") == []  # nothing outstanding any more
    [reward] = world.record(fund, fund.pay_reward("p1", "acme", "海沧钢材公司", 50_000, "以奖代补"))
    assert reward.data == {"community_id": C, "project_id": "p1", "recipient_id": "acme",
                           "recipient_name": "海沧钢材公司", "amount_fen": 50_000, "reason": "以奖代补",
                           "balance_after_fen": 800_000}
    assert fund.view() == {"community_id": C, "balance_fen": 800_000, "credited_fen": 1_000_000,
                           "reserved_fen": 0, "spent_fen": 150_000, "released_fen": 250_000,
                           "rewards_fen": 50_000, "version": 5}
    assert fund.reservations == {"p1": {"reserved": 400_000, "spent": 150_000, "released": 250_000}}
    assert fund.reserve("p2", 0) == []  # a project asking nothing reserves nothing


def test_the_balance_can_never_go_negative():
    world = World(fund_fen=1_000)
    fund = world.fund
    error = refused(Conflict, "insufficient_fund", lambda: fund.reserve("p1", 1_001), fund)
    assert error.message == ("insufficient community fund: the balance is 1000 fen, the project requests "
                             "1001 fen")
    assert error.details == {"balance_fen": 1_000, "requested_fen": 1_001}
    error = refused(Conflict, "insufficient_fund", lambda: fund.pay_reward("p1", "a", "A", 1_001, "r"), fund)
    assert error.details == {"balance_fen": 1_000, "amount_fen": 1_001}
    world.record(fund, fund.reserve("p1", 1_000))
    assert fund.balance_fen == 0
    refused(Conflict, "insufficient_fund", lambda: fund.reserve("p2", 1), fund)
    refused(Conflict, "insufficient_fund", lambda: fund.pay_reward("p1", "a", "A", 1, "r"), fund)
    refused(DomainError, "invalid_amount", lambda: fund.pay_reward("p1", "a", "A", 0, "r"), fund)
    assert fund.balance_fen == 0
    assert fund.balance_fen + fund.reserved_fen + fund.spent_fen + fund.rewards_fen == fund.credited_fen


def test_spending_is_limited_to_what_remains_of_the_projects_reservation():
    world = World(fund_fen=1_000_000)
    fund = world.fund
    error = refused(Conflict, "reservation_exceeded", lambda: fund.spend("p1", 1, "FP-1", ""), fund)
    assert error.details == {"reservation_remaining_fen": 0, "amount_fen": 1}
    world.record(fund, fund.reserve("p1", 300_000))
    world.record(fund, fund.spend("p1", 200_000, "FP-1", ""))
    error = refused(Conflict, "reservation_exceeded", lambda: fund.spend("p1", 100_001, "FP-2", ""), fund)
    assert error.message == ("spending of 100001 fen exceeds what remains of the project's reservation "
                             "(100000 fen)")
    refused(DomainError, "invalid_amount", lambda: fund.spend("p1", 0, "FP-2", ""), fund)
    world.record(fund, fund.spend("p1", 100_000, "FP-2", ""))
    assert fund.outstanding("p1") == 0 and fund.spent_fen == 300_000 and fund.balance_fen == 700_000


# == 共谋: proposals ===============================================================================

def test_a_resident_proposes_a_project():
    world = World()
    project = Project(id="p1")
    assert project.allowed_actions() == ["propose"]  # a project that does not exist yet
    [event] = project.propose(PROPOSER, PROPOSAL, world.community)
    assert event.event_type == "ProjectProposed"
    assert event.data == {"project_id": "p1", "community_id": C, "grid_id": "g1", "title": "修建休闲活动室",
                          "description": "在小区空地建一间活动室", "category": "facilities", "location": "3号楼旁",
                          "estimated_cost_fen": 5_000_000, "requested_fen": 3_000_000, "proposer_id": "r0",
                          "proposer_name": "r0号", "cosigners_required": 6}
    world.record(project, [event])
    assert (project.stage, project.phase, project.version) == ("co_plan", "collecting_cosigners", 1)
    assert (project.title, project.location, project.requested_fen, project.proposer_name) == (
        "修建休闲活动室", "3号楼旁", 3_000_000, "r0号")
    assert project.last_revision == 0  # the original text
    assert project.allowed_actions() == ["cosign", "amend", "withdraw"]
    refused(Conflict, "already_exists", lambda: project.propose(PROPOSER, PROPOSAL, world.community), project)


@pytest.mark.parametrize("overrides, reason, details", [
    ({"category": "fireworks"}, "invalid_proposal", {"category": "one of environment, facilities, greening, "
                                                                "elderly_care, children, culture, safety, "
                                                                "parking, other"}),
    ({"requested_fen": 5_000_001}, "invalid_proposal", {"requested_fen": "cannot exceed the estimated cost"}),
    ({"grid_id": "g9"}, "unknown_grid", {"grid_id": "unknown grid in this community"}),
    ({"requested_fen": 6_000_000, "category": "casino"}, "invalid_proposal", {  # every field at once
        "category": "one of environment, facilities, greening, elderly_care, children, culture, safety, parking, "
                    "other",
        "requested_fen": "cannot exceed the estimated cost"}),
])
def test_invalid_proposals_are_refused_naming_the_field(overrides, reason, details):
    world = World()
    project = Project(id="p1")
    error = refused(DomainError, reason, lambda: project.propose(PROPOSER, {**PROPOSAL, **overrides},
                                                                 world.community), project)
    assert error.details == details


def test_the_requested_amount_may_equal_the_estimated_cost():
    project = World().propose(requested_fen=5_000_000)
    assert (project.requested_fen, project.estimated_cost_fen) == (5_000_000, 5_000_000)


def test_only_a_resident_of_an_existing_community_proposes_there():
    world = World()
    project = Project(id="p1")
    error = refused(DomainError, "unknown_community",
                    lambda: project.propose(PROPOSER, {**PROPOSAL, "community_id": "nowhere"}, Community(id="nowhere")),
                    project)
    assert error.details == {"community_id": "unknown community"}
    refused(Forbidden, "other_community", lambda: project.propose(OUTSIDER, PROPOSAL, world.community), project)
    refused(Forbidden, "role_required", lambda: project.propose(CADRE, PROPOSAL, world.community), project)
    refused(Forbidden, "role_required", lambda: project.propose(ADMIN, PROPOSAL, world.community), project)
    assert world.propose(proposer=REPS[0]).proposer_id == "rep0"  # representatives are residents too


# == 共谋: co-signing ==============================================================================

def test_the_proposal_qualifies_when_the_sixth_resident_co_signs():
    world = World()
    project = world.propose()
    for count, person in enumerate(RESIDENTS[1:6], start=1):
        [event] = world.record(project, project.cosign(person))
        assert event.data == {"project_id": "p1", "person_id": person.person_id, "name": person.name, "count": count}
        assert project.phase == "collecting_cosigners"
    stored = world.record(project, project.cosign(RESIDENTS[6]))
    assert kinds(stored) == ["ProjectCosigned", "ProjectQualified"]
    assert stored[1].data == {"project_id": "p1", "cosigners": 6}
    assert (project.stage, project.phase) == ("co_plan", "deliberation")
    assert project.cosigner_ids == ["r1", "r2", "r3", "r4", "r5", "r6"]
    # More co-signatures are welcome during deliberation; it qualifies only once.
    assert kinds(world.record(project, project.cosign(RESIDENTS[7]))) == ["ProjectCosigned"]
    assert project.phase == "deliberation" and len(project.cosigner_ids) == 7


def test_the_number_of_co_signers_follows_the_community_settings():
    world = World(cosigners_required=2)
    project = world.propose()
    assert kinds(project.cosign(RESIDENTS[1])) == ["ProjectCosigned"]
    world.record(project, project.cosign(RESIDENTS[1]))
    assert kinds(world.record(project, project.cosign(RESIDENTS[2]))) == ["ProjectCosigned", "ProjectQualified"]
    assert World(cosigners_required=0).propose().phase == "deliberation"


def test_co_signing_refusals():
    world = World()
    project = world.propose()
    world.record(project, project.cosign(RESIDENTS[1]))
    error = refused(Conflict, "self_cosign", lambda: project.cosign(PROPOSER), project)
    assert error.message.startswith("the proposer cannot co-sign their own proposal")
    refused(Conflict, "already_cosigned", lambda: project.cosign(RESIDENTS[1]), project)
    refused(Forbidden, "other_community", lambda: project.cosign(OUTSIDER), project)
    refused(Forbidden, "role_required", lambda: project.cosign(CADRE), project)
    refused(Forbidden, "role_required", lambda: project.cosign(GRID), project)
    assert project.cosigner_ids == ["r1"]


# == 共谋: deliberation ============================================================================

@pytest.mark.parametrize("stance", ["support", "oppose", "neutral"])
def test_residents_post_opinions_with_a_stance(stance):
    world = World()
    project = world.qualify(world.propose())
    before = Project.from_json(project.to_json())
    [event] = world.record(project, project.post_opinion(RESIDENTS[8], "o1", stance, "老人上下楼更安全"))
    assert event.data == {"project_id": "p1", "opinion_id": "o1", "person_id": "r8", "name": "r8号",
                          "stance": stance, "text": "老人上下楼更安全"}
    # No rule looks at opinions: the state keeps nothing of them but the version (the page shows them).
    assert dataclasses.replace(project, version=before.version, updated_at=before.updated_at) == before


def test_opinion_refusals():
    world = World()
    project = world.propose()
    error = refused(Conflict, "wrong_stage", lambda: project.post_opinion(RESIDENTS[1], "o1", "support", "x"), project)
    assert error.details["allowed_actions"] == ["cosign", "amend", "withdraw"]
    world.qualify(project)
    error = refused(DomainError, "invalid_stance", lambda: project.post_opinion(RESIDENTS[1], "o1", "love", "x"),
                    project)
    assert error.details == {"stance": "one of support, oppose, neutral"}
    refused(Forbidden, "other_community", lambda: project.post_opinion(OUTSIDER, "o1", "oppose", "x"), project)
    # Staff of the community may speak too.
    assert kinds(project.post_opinion(GRID, "o2", "neutral", "网格员意见")) == ["OpinionPosted"]


def test_amendments_keep_every_version():
    world = World()
    project = world.qualify(world.propose())
    [first] = world.record(project, project.amend(PROPOSER, {"requested_fen": 900_000, "proposer_id": "mallory"},
                                                  "居民自筹一部分"), "r0")
    assert first.data == {"project_id": "p1", "revision": 1, "changes": {"requested_fen": 900_000},
                          "reason": "居民自筹一部分"}
    world.tick(60)
    [second] = world.record(project, project.amend(PROPOSER, {"title": "修建活动室", "location": "5号楼旁",
                                                              "requested_fen": 900_000}, "换个位置"), "r0")
    # Only what differs from the current text is a change (the requested amount is already 900 000).
    assert second.data == {"project_id": "p1", "revision": 2, "reason": "换个位置",
                           "changes": {"title": "修建活动室", "location": "5号楼旁"}}
    assert (project.title, project.location, project.requested_fen, project.proposer_id) == (
        "修建活动室", "5号楼旁", 900_000, "r0")
    assert project.last_revision == 2
    # Every version's whole text, with its reason, author and time, is on the project's page
    # (tests/integration/test_projects_api.py): the state keeps the current text only.


def test_amendment_refusals():
    world = World()
    project = world.propose()
    refused(Forbidden, "not_proposer", lambda: project.amend(RESIDENTS[1], {"title": "别人改的"}, "r"), project)
    error = refused(DomainError, "empty_amendment", lambda: project.amend(PROPOSER, {"title": "修建休闲活动室"}, "r"),
                    project)
    assert "title" in error.details["_schema"]
    error = refused(DomainError, "invalid_proposal",
                    lambda: project.amend(PROPOSER, {"estimated_cost_fen": 1_000}, "便宜点"), project)
    assert error.details == {"requested_fen": "cannot exceed the estimated cost"}
    world.qualify(project)
    world.open_vote(project)
    refused(Conflict, "wrong_stage", lambda: project.amend(PROPOSER, {"title": "投票中再改"}, "r"), project)
    assert project.last_revision == 0


@pytest.mark.parametrize("qualified", [False, True])
def test_the_proposer_withdraws_before_the_vote(qualified):
    world = World()
    project = world.propose()
    if qualified:
        world.qualify(project)
    refused(Forbidden, "not_proposer", lambda: project.withdraw(RESIDENTS[1], "不要了"), project)
    refused(Forbidden, "not_proposer", lambda: project.withdraw(CADRE, "不要了"), project)
    [event] = world.record(project, project.withdraw(PROPOSER, "居民另有方案"))
    assert event.data == {"project_id": "p1", "reason": "居民另有方案"}
    assert (project.stage, project.phase) == ("withdrawn", "ended")
    assert project.allowed_actions() == []


def test_no_withdrawal_once_the_vote_is_open():
    world = World()
    project = world.voting()
    error = refused(Conflict, "wrong_stage", lambda: project.withdraw(PROPOSER, "来不及了"), project)
    assert error.details == {"stage": "co_plan", "phase": "voting", "allowed_actions": ["cast_ballot", "close_vote"]}
    assert error.message == ("cannot withdraw the proposal: the project is in stage co_plan (voting); "
                             "allowed now: cast_ballot, close_vote")


# == 共谋: the council vote ========================================================================

def test_a_cadre_opens_the_vote_and_the_requested_amount_is_reserved():
    world = World()
    project = world.qualify(world.propose())
    stored = world.open_vote(project)
    assert kinds(stored) == ["FundReserved", "CouncilVoteOpened"]
    assert stored[0].data == {"community_id": C, "project_id": "p1", "amount_fen": 3_000_000,
                              "balance_after_fen": 7_000_000}
    assert stored[1].data == {"project_id": "p1", "electorate": sorted(p.person_id for p in REPS),
                              "electorate_size": 9, "quorum_numerator": 2, "quorum_denominator": 3,
                              "pass_numerator": 1, "pass_denominator": 2, "reserved_fen": 3_000_000,
                              "opened_by": "cadre", "responsible_unit": UNIT}
    assert project.phase == "voting" and project.responsible_unit == UNIT
    assert (world.fund.balance_fen, world.fund.reserved_fen) == (7_000_000, 3_000_000)
    assert project.allowed_actions() == ["cast_ballot", "close_vote"]


def test_an_admin_may_open_the_vote_of_any_community():
    world = World()
    project = world.qualify(world.propose())
    assert kinds(project.open_vote(ADMIN, world.community, None)) == ["CouncilVoteOpened"]


def test_opening_the_vote_with_an_insufficient_fund_is_a_conflict_that_says_so():
    world = World(fund_fen=2_999_999)
    project = world.qualify(world.propose())
    before = project.to_json()
    events = project.open_vote(CADRE, world.community, None)  # the project's side is fine ...
    error = refused(Conflict, "insufficient_fund", lambda: world.fund.reserve(project.id, project.requested_fen),
                    world.fund)  # ... the fund's is not, so nothing of either is recorded
    assert "insufficient community fund" in error.message
    assert error.details == {"balance_fen": 2_999_999, "requested_fen": 3_000_000}
    assert events and project.to_json() == before and project.phase == "deliberation"


def test_opening_the_vote_refusals():
    world = World()
    project = world.propose()
    error = refused(Conflict, "wrong_stage", lambda: project.open_vote(CADRE, world.community, None), project)
    assert error.details["phase"] == "collecting_cosigners"
    world.qualify(project)
    refused(Forbidden, "role_required", lambda: project.open_vote(RESIDENTS[1], world.community, None), project)
    refused(Forbidden, "role_required", lambda: project.open_vote(GRID, world.community, None), project)
    refused(Forbidden, "other_community", lambda: project.open_vote(OTHER_CADRE, world.community, None), project)
    empty = World(reps=0)
    lonely = empty.qualify(empty.propose())
    error = refused(Conflict, "no_electorate", lambda: lonely.open_vote(CADRE, empty.community, None), lonely)
    assert error.message == f"community {C} has no residents' representatives to vote"
    world.open_vote(project)
    refused(Conflict, "wrong_stage", lambda: project.open_vote(CADRE, world.community, None), project)


def test_each_representative_casts_exactly_one_ballot():
    world = World()
    project = world.voting()
    [event] = world.record(project, project.cast_ballot(REPS[0], "yes"))
    assert event.data == {"project_id": "p1", "person_id": "rep0", "choice": "yes"}
    assert project.vote["ballots"] == {"rep0": "yes"}
    error = refused(Conflict, "already_voted", lambda: project.cast_ballot(REPS[0], "no"), project)
    assert error.message.startswith("you have already cast your ballot in this vote")
    refused(Forbidden, "role_required", lambda: project.cast_ballot(RESIDENTS[1], "yes"), project)
    refused(Forbidden, "role_required", lambda: project.cast_ballot(CADRE, "yes"), project)
    stranger = who("jimei-rep", "representative", community="jimei")
    refused(Forbidden, "other_community", lambda: project.cast_ballot(stranger, "yes"), project)
    elsewhere = who(REPS[1].person_id, "representative", community="jimei")  # in the electorate, other token
    refused(Forbidden, "other_community", lambda: project.cast_ballot(elsewhere, "yes"), project)
    error = refused(DomainError, "invalid_choice", lambda: project.cast_ballot(REPS[1], "maybe"), project)
    assert error.details == {"choice": "one of yes, no, abstain"}


def test_the_electorate_is_fixed_when_the_vote_opens():
    world = World(reps=3)
    project = world.voting()
    world.record(world.community, world.community.set_representatives(
        [{"person_id": p.person_id, "name": p.name} for p in REPS[:4]]))
    refused(Forbidden, "not_in_electorate", lambda: project.cast_ballot(REPS[3], "yes"), project)
    assert project.vote["electorate_size"] == 3


def test_no_ballot_before_the_vote_opens():
    world = World()
    project = world.qualify(world.propose())
    refused(Conflict, "wrong_stage", lambda: project.cast_ballot(REPS[0], "yes"), project)


TALLIES = [
    # yes, no, abstain -> ballots, quorum met, result, reason          (9 representatives: quorum 6)
    pytest.param(5, 1, 1, 7, True, "approved", "passed: 5 of 7 ballots were yes", id="approved"),
    pytest.param(9, 0, 0, 9, True, "approved", "passed: 9 of 9 ballots were yes", id="unanimous"),
    pytest.param(3, 4, 0, 7, True, "rejected", "not passed: 3 of 7 ballots were yes, more than 1/2 needed",
                 id="no-majority"),
    pytest.param(5, 0, 0, 5, False, "rejected", "quorum not met: 5 of 9 representatives voted, 6 needed",
                 id="no-quorum-though-all-yes"),
    pytest.param(4, 4, 0, 8, True, "rejected", "not passed: 4 of 8 ballots were yes, more than 1/2 needed",
                 id="tie"),
    pytest.param(0, 0, 9, 9, True, "rejected", "not passed: 0 of 9 ballots were yes, more than 1/2 needed",
                 id="all-abstain"),
    pytest.param(4, 0, 2, 6, True, "approved", "passed: 4 of 6 ballots were yes", id="abstentions-make-quorum"),
    pytest.param(3, 0, 3, 6, True, "rejected", "not passed: 3 of 6 ballots were yes, more than 1/2 needed",
                 id="abstentions-are-not-yes"),
    pytest.param(4, 0, 1, 5, False, "rejected", "quorum not met: 5 of 9 representatives voted, 6 needed",
                 id="one-short-of-quorum"),
    pytest.param(0, 0, 0, 0, False, "rejected", "quorum not met: 0 of 9 representatives voted, 6 needed",
                 id="nobody-voted"),
]


@pytest.mark.parametrize("yes, no, abstain, ballots, quorum_met, result, reason", TALLIES)
def test_closing_the_vote_records_the_tally(yes, no, abstain, ballots, quorum_met, result, reason):
    world = World()
    project = world.voting()
    world.ballots(project, yes, no, abstain)
    world.tick(3600)
    stored = world.close_vote(project)
    tally = {"electorate_size": 9, "ballots": ballots, "yes": yes, "no": no, "abstain": abstain,
             "quorum_required": 6, "quorum_met": quorum_met, "result": result, "reason": reason}
    assert stored[0].event_type == "CouncilVoteClosed"
    assert stored[0].data == {"project_id": "p1", "closed_by": "cadre", **tally}
    assert len(project.vote["ballots"]) == ballots
    if result == "approved":
        assert kinds(stored) == ["CouncilVoteClosed", "ProjectApproved"]
        assert stored[1].data == {"project_id": "p1", "reserved_fen": 3_000_000}
        assert (project.stage, project.phase) == ("co_build", "building")
        assert (world.fund.balance_fen, world.fund.reserved_fen) == (7_000_000, 3_000_000)
    else:
        # Rejected: the reservation is released and the project ends.
        assert kinds(stored) == ["CouncilVoteClosed", "ProjectRejected", "FundReservationReleased"]
        assert stored[1].data == {"project_id": "p1", "reason": reason}
        assert stored[2].data["amount_fen"] == 3_000_000 and stored[2].data["balance_after_fen"] == 10_000_000
        assert (project.stage, project.phase) == ("rejected", "ended")
        assert (world.fund.balance_fen, world.fund.reserved_fen, world.fund.released_fen) == (
            10_000_000, 0, 3_000_000)


@pytest.mark.parametrize("votes, result", [
    ((62, 12, 7), "approved"), ((25, 50, 6), "rejected"),
    ((40, 35, 6), "rejected"),  # 40 of 81 ballots is not more than half
    ((41, 34, 6), "approved"), ((54, 0, 0), "approved"), ((53, 0, 0), "rejected"),
])
def test_the_tally_of_81_representatives(votes, result):
    y, n, a = votes
    project = Project(id="p1", stage="co_plan", phase="voting", version=20, community_id=C)
    electorate = [f"rep{i}" for i in range(81)]
    choices = ["yes"] * y + ["no"] * n + ["abstain"] * a
    project.vote = {"electorate": electorate, "electorate_size": 81, "quorum_numerator": 2, "quorum_denominator": 3,
                    "pass_numerator": 1, "pass_denominator": 2, "reserved_fen": 0,
                    "ballots": dict(zip(electorate, choices))}
    tally = project.tally()
    assert (tally["quorum_required"], tally["ballots"], tally["result"]) == (54, y + n + a, result)


def test_the_vote_uses_the_settings_in_force_when_it_opened():
    world = World(quorum_numerator=1, quorum_denominator=2, pass_numerator=2, pass_denominator=3)
    project = world.voting()
    world.record(world.community, world.community.change_settings({"pass_numerator": 1, "pass_denominator": 2}))
    world.ballots(project, yes=4, no=2)  # 6 ballots >= quorum 5; 4 of 6 is not more than 2/3
    tally = world.close_vote(project)[0].data
    assert tally["quorum_required"] == 5
    assert tally["result"] == "rejected"
    assert tally["reason"] == "not passed: 4 of 6 ballots were yes, more than 2/3 needed"
    other = World(quorum_numerator=1, quorum_denominator=2, pass_numerator=2, pass_denominator=3)
    passing = other.voting()
    other.ballots(passing, yes=5, no=1)
    other.close_vote(passing)
    assert passing.stage == "co_build"


def test_closing_the_vote_refusals():
    world = World()
    project = world.voting()
    world.ballots(project, yes=9)
    refused(Forbidden, "role_required", lambda: project.close_vote(REPS[0]), project)
    refused(Forbidden, "other_community", lambda: project.close_vote(OTHER_CADRE), project)
    world.close_vote(project)
    error = refused(Conflict, "wrong_stage", lambda: project.close_vote(CADRE), project)
    assert error.details["allowed_actions"] == ["pledge", "confirm_delivery", "record_spending",
                                                "record_milestone", "complete"]
    rejected = world.voting("p2")
    world.close_vote(rejected)
    error = refused(Conflict, "wrong_stage", lambda: rejected.close_vote(CADRE), rejected)
    assert error.message.endswith("allowed now: nothing (the project has ended)")


# == 共建 co_build =================================================================================

def test_pledges_of_each_kind_by_each_type_of_contributor():
    world = World()
    project = world.approved()
    [labour] = project.pledge(RESIDENTS[3], "pl1", {"kind": "labour", "labour_minutes": 240})
    assert labour.data == {"project_id": "p1", "community_id": C, "pledge_id": "pl1", "contributor_id": "r3",
                           "contributor_name": "r3号", "contributor_type": "resident", "kind": "labour",
                           "labour_minutes": 240, "description": ""}
    world.record(project, [labour])
    pledged = [labour]
    pledged += world.record(project, project.pledge(RESIDENTS[4], "pl2", {"kind": "money", "money_fen": 20_000}))
    pledged += world.record(project, project.pledge(CADRE, "pl3", {
        "kind": "materials", "materials_fen": 300_000, "description": "不锈钢扶手",
        "contributor": {"contributor_id": "acme", "name": "海沧钢材公司", "type": "enterprise"}}))
    pledged += world.record(project, project.pledge(GRID, "pl4", {
        "kind": "skills", "skills_minutes": 120, "description": "电工",
        "contributor": {"contributor_id": "sw-org", "name": "社工站", "type": "social_organisation"}}))
    # A resident may name themself as the contributor.
    pledged += world.record(project, project.pledge(RESIDENTS[5], "pl5", {
        "kind": "skills", "skills_minutes": 30,
        "contributor": {"contributor_id": "r5", "name": "五号", "type": "resident"}}))
    assert [(e.data["pledge_id"], e.data["contributor_type"], e.data["kind"], e.data["description"],
             {k: e.data[k] for k in ("labour_minutes", "skills_minutes", "money_fen", "materials_fen") if k in e.data})
            for e in pledged] == [
        ("pl1", "resident", "labour", "", {"labour_minutes": 240}),
        ("pl2", "resident", "money", "", {"money_fen": 20_000}),
        ("pl3", "enterprise", "materials", "不锈钢扶手", {"materials_fen": 300_000}),
        ("pl4", "social_organisation", "skills", "电工", {"skills_minutes": 120}),
        ("pl5", "resident", "skills", "", {"skills_minutes": 30}),
    ]
    # The state keeps what deliveries and rewards decide on (the amounts pledged are on the page).
    assert project.pledges["pl3"] == {"contributor_id": "acme", "contributor_name": "海沧钢材公司",
                                      "contributor_type": "enterprise", "kind": "materials", "delivery_count": 0,
                                      "delivered": {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0,
                                                    "materials_fen": 0}}
    totals = project.totals()
    assert totals["delivered"] == {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0, "materials_fen": 0}
    assert totals["contributors"] == 5


@pytest.mark.parametrize("pledge, reason, details", [
    ({"kind": "labour", "labour_minutes": 0}, "invalid_amounts",
     {"labour_minutes": "a labour pledge needs a positive labour_minutes"}),
    ({"kind": "labour"}, "invalid_amounts", {"labour_minutes": "a labour pledge needs a positive labour_minutes"}),
    ({"kind": "labour", "labour_minutes": 60, "money_fen": 100}, "invalid_amounts",
     {"money_fen": "does not apply to a labour pledge"}),
    ({"kind": "materials", "materials_fen": 100}, "invalid_amounts", {"description": "describe the materials"}),
    ({"kind": "money", "money_fen": -1}, "invalid_amounts", {"money_fen": "a money pledge needs a positive money_fen"}),
    ({"kind": "time", "labour_minutes": 60}, "invalid_kind", {"kind": "one of labour, money, materials, skills"}),
])
def test_a_pledge_must_carry_the_one_amount_its_kind_needs(pledge, reason, details):
    world = World()
    project = world.approved()
    error = refused(DomainError, reason, lambda: project.pledge(RESIDENTS[3], "pl1", pledge), project)
    assert error.details == details


def test_pledge_refusals_by_who_pledges():
    world = World()
    project = world.approved()
    other = {"kind": "money", "money_fen": 100,
             "contributor": {"contributor_id": "acme", "name": "公司", "type": "enterprise"}}
    refused(Forbidden, "pledge_for_other", lambda: project.pledge(RESIDENTS[3], "pl1", other), project)
    refused(Forbidden, "other_community", lambda: project.pledge(OUTSIDER, "pl1", {"kind": "money", "money_fen": 1}),
            project)


def test_deliveries_are_confirmed_by_field_staff_and_may_differ_from_the_pledge():
    world = World()
    project = world.approved()
    world.record(project, project.pledge(RESIDENTS[3], "pl1", {"kind": "labour", "labour_minutes": 240}))
    [first] = world.record(project, project.confirm_delivery(GRID, "pl1", {"labour_minutes": 210, "note": "3.5 小时"},
                                                             "2026-11-03T01:00:00.000000Z"))
    assert first.data == {"project_id": "p1", "project_title": "修建休闲活动室", "community_id": C, "pledge_id": "pl1",
                          "delivery_no": 1, "contributor_id": "r3", "contributor_name": "r3号",
                          "contributor_type": "resident", "kind": "labour", "labour_minutes": 210,
                          "delivered_at": "2026-11-03T01:00:00.000000Z", "note": "3.5 小时", "confirmed_by": "grid"}
    [second] = world.record(project, project.confirm_delivery(CADRE, "pl1", {"labour_minutes": 90},
                                                              "2026-11-04T01:00:00.000000Z"))
    assert second.data["delivery_no"] == 2 and second.data["note"] == ""
    pledge = project.pledges["pl1"]
    assert pledge["delivered"]["labour_minutes"] == 300  # 240 were pledged
    assert pledge["delivery_count"] == 2
    assert project.totals()["delivered"]["labour_minutes"] == 300
    assert kinds(project.confirm_delivery(ADMIN, "pl1", {"labour_minutes": 1}, "2026-11-04T01:00:00Z")) == [
        "ContributionDelivered"]


def test_delivery_refusals():
    world = World()
    project = world.approved()
    world.record(project, project.pledge(RESIDENTS[3], "pl1", {"kind": "labour", "labour_minutes": 240}))
    delivery = {"labour_minutes": 60}
    refused(Forbidden, "role_required", lambda: project.confirm_delivery(RESIDENTS[3], "pl1", delivery, "t"), project)
    refused(Forbidden, "other_community", lambda: project.confirm_delivery(OTHER_CADRE, "pl1", delivery, "t"), project)
    error = refused(DomainError, "unknown_pledge", lambda: project.confirm_delivery(GRID, "nope", delivery, "t"),
                    project)
    assert error.details == {"pledge_id": "unknown pledge"}
    error = refused(DomainError, "invalid_amounts",
                    lambda: project.confirm_delivery(GRID, "pl1", {"money_fen": 60}, "t"), project)
    assert error.details == {"money_fen": "does not apply to a labour delivery",
                             "labour_minutes": "a labour delivery needs a positive labour_minutes"}


def test_spending_is_recorded_from_the_reservation_with_a_receipt():
    world = World()
    project = world.approved()
    stored = world.spend(project, 600_000, "FP-2026-0012", "安装人工")
    assert kinds(stored) == ["FundSpent", "ProjectSpendingRecorded"]
    assert stored[1].data == {"project_id": "p1", "spending_id": "s1", "amount_fen": 600_000,
                              "receipt_ref": "FP-2026-0012", "description": "安装人工"}
    assert stored[0].data["reservation_remaining_fen"] == 2_400_000
    assert project.spent_fen == 600_000
    assert (world.fund.balance_fen, world.fund.reserved_fen, world.fund.spent_fen) == (7_000_000, 2_400_000, 600_000)
    error = refused(Conflict, "reservation_exceeded", lambda: world.fund.spend("p1", 2_400_001, "FP-2", ""),
                    world.fund)
    assert error.details == {"reservation_remaining_fen": 2_400_000, "amount_fen": 2_400_001}
    refused(Forbidden, "role_required", lambda: project.record_spending(GRID, "s2", 1, "FP", ""), project)
    refused(Forbidden, "role_required", lambda: project.record_spending(RESIDENTS[1], "s2", 1, "FP", ""), project)


def test_milestones_move_progress_forward_only():
    world = World()
    project = world.approved()
    [event] = world.record(project, project.record_milestone(GRID, 50, "一至三楼完成"))
    assert event.data == {"project_id": "p1", "progress": 50, "note": "一至三楼完成"}
    [again] = world.record(project, project.record_milestone(CADRE, 50, "检查"))  # the same progress is fine
    assert again.data == {"project_id": "p1", "progress": 50, "note": "检查"}
    error = refused(Conflict, "progress_backwards", lambda: project.record_milestone(CADRE, 49, "倒退"), project)
    assert error.message == "progress cannot go back: it is 50, the milestone says 49"
    for bad in (-1, 101):
        error = refused(DomainError, "invalid_progress", lambda: project.record_milestone(CADRE, bad, "x"), project)
        assert error.details == {"progress": "between 0 and 100"}
    refused(Forbidden, "role_required", lambda: project.record_milestone(RESIDENTS[1], 60, "x"), project)
    assert project.progress == 50


def test_completion_needs_progress_100_and_returns_the_unspent_reservation():
    world = World()
    project = world.approved()
    world.spend(project, 600_000)
    world.record(project, project.record_milestone(CADRE, 99, "差一点"))
    error = refused(Conflict, "not_finished", lambda: project.complete(CADRE), project)
    assert error.details == {"progress": 99}
    world.record(project, project.record_milestone(CADRE, 100, "完成"))
    refused(Forbidden, "role_required", lambda: project.complete(GRID), project)
    stored = world.complete(project)
    assert kinds(stored) == ["ProjectCompleted", "FundReservationReleased"]
    assert stored[0].data == {"project_id": "p1", "spent_fen": 600_000}
    assert stored[1].data["amount_fen"] == 2_400_000
    assert (project.stage, project.phase) == ("co_manage", "maintaining")
    assert world.fund.view() | {"version": 0} == {
        "community_id": C, "balance_fen": 9_400_000, "credited_fen": 10_000_000, "reserved_fen": 0,
        "spent_fen": 600_000, "released_fen": 2_400_000, "rewards_fen": 0, "version": 0}


# == 共管 co_manage ================================================================================

def test_maintainers_logs_and_problems():
    world = World()
    project = world.built()
    [assigned] = world.record(project, project.assign_maintainer(GRID, {
        "maintainer_id": "r4", "name": "r4号", "kind": "resident", "duty": "每周检查扶手", "rota": "每周六",
        "members": []}))
    assert assigned.data == {"project_id": "p1", "maintainer_id": "r4", "name": "r4号", "kind": "resident",
                             "duty": "每周检查扶手", "rota": "每周六", "members": []}
    world.record(project, project.assign_maintainer(CADRE, {
        "maintainer_id": "team-1", "name": "楼长队", "kind": "group", "duty": "清洁", "rota": "每月一次",
        "members": ["r6", "r7"]}))
    refused(Conflict, "already_maintainer", lambda: project.assign_maintainer(CADRE, {
        "maintainer_id": "r4", "name": "x", "kind": "resident", "duty": "d", "rota": "", "members": []}), project)
    refused(Forbidden, "role_required", lambda: project.assign_maintainer(RESIDENTS[1], {
        "maintainer_id": "r1", "name": "x", "kind": "resident", "duty": "d", "rota": "", "members": []}), project)

    performed = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
    logs = [(RESIDENTS[4], "r4"), (RESIDENTS[7], "team-1"), (GRID, None)]
    for i, (person, maintainer) in enumerate(logs):
        [event] = world.record(project, project.log_maintenance(person, f"log{i}", "螺丝紧固", performed))
        assert event.data == {"project_id": "p1", "log_id": f"log{i}", "maintainer_id": maintainer,
                              "logged_by": person.person_id, "note": "螺丝紧固",
                              "performed_at": "2026-11-21T02:00:00.000000Z"}
    refused(Forbidden, "role_required", lambda: project.log_maintenance(RESIDENTS[1], "x", "n", performed), project)

    [reported] = world.record(project, project.report_problem(RESIDENTS[5], "pb1", "二楼扶手松动"))
    assert reported.data == {"project_id": "p1", "problem_id": "pb1", "reported_by": "r5",
                             "description": "二楼扶手松动"}
    refused(Forbidden, "other_community", lambda: project.report_problem(OUTSIDER, "pb2", "x"), project)
    world.tick(5400)
    refused(Forbidden, "role_required", lambda: project.resolve_problem(RESIDENTS[5], "pb1", "x", world.now), project)
    error = refused(DomainError, "unknown_problem",
                    lambda: project.resolve_problem(RESIDENTS[4], "pb9", "x", world.now), project)
    assert error.details == {"problem_id": "unknown problem"}
    [resolved] = world.record(project, project.resolve_problem(RESIDENTS[4], "pb1", "已加固", world.now))
    assert resolved.data == {"project_id": "p1", "problem_id": "pb1", "resolved_by": "r4", "resolution": "已加固",
                             "resolution_seconds": 5400}
    assert project.problems == {"pb1": {"reported_at": "2026-11-02T01:00:00.000000Z", "resolved": True}}
    refused(Conflict, "already_resolved", lambda: project.resolve_problem(CADRE, "pb1", "again", world.now), project)
    assert project.maintainers == {"r4": [], "team-1": ["r6", "r7"]}
    # A member of a maintaining group resolves problems as the group's maintainer would.
    world.record(project, project.report_problem(RESIDENTS[5], "pb2", "路灯不亮"))
    [resolved] = world.record(project, project.resolve_problem(RESIDENTS[6], "pb2", "已更换", world.now))
    assert resolved.data["resolved_by"] == "r6"


def test_upkeep_continues_in_the_later_stages():
    world = World()
    project = world.sharing(published=True)
    world.record(project, project.report_problem(RESIDENTS[1], "pb1", "灯不亮"))
    [resolved] = world.record(project, project.resolve_problem(GRID, "pb1", "换灯泡", world.now))
    world.record(project, project.log_maintenance(GRID, "log1", "巡查", world.now))
    assert project.stage == "co_share" and resolved.data["resolution_seconds"] == 0


# == 共评 co_evaluate ==============================================================================

def test_the_evaluation_opens_with_the_responsible_unit():
    world = World()
    project = world.built()
    error = refused(Forbidden, "role_required", lambda: project.open_evaluation(GRID, None), project)
    [event] = project.open_evaluation(CADRE, None)  # the unit named when the vote opened
    assert event.data == {"project_id": "p1", "responsible_unit": UNIT, "opened_by": "cadre"}
    other_unit = {"unit_id": "jsb", "name": "街道建设办"}
    world.record(project, project.open_evaluation(CADRE, other_unit))
    assert (project.stage, project.phase, project.responsible_unit) == ("co_evaluate", "evaluating", other_unit)
    assert error.details == {"roles": ["cadre", "admin"]}


def test_the_evaluation_needs_a_responsible_unit():
    world = World()
    project = world.qualify(world.propose())
    world.open_vote(project, unit=None)
    world.ballots(project, yes=9)
    world.close_vote(project)
    world.record(project, project.record_milestone(CADRE, 100, "完成"))
    world.complete(project)
    error = refused(DomainError, "responsible_unit_required", lambda: project.open_evaluation(CADRE, None), project)
    assert list(error.details) == ["responsible_unit"]
    unit = {"unit_id": "jsb", "name": "街道建设办"}  # named now instead
    world.record(project, project.open_evaluation(CADRE, unit))
    assert (project.stage, project.responsible_unit) == ("co_evaluate", unit)


def test_each_resident_rates_once_from_1_to_5():
    world = World()
    project = world.evaluating()
    [event] = world.record(project, project.rate(RESIDENTS[1], 4, "不错"))
    assert event.data == {"project_id": "p1", "project_title": "修建休闲活动室", "community_id": C,
                          "responsible_unit": UNIT, "person_id": "r1", "score": 4, "comment": "不错"}
    error = refused(Conflict, "already_rated", lambda: project.rate(RESIDENTS[1], 5, "改主意"), project)
    assert error.message.startswith("you have already rated this project")
    for score in (0, 6):
        error = refused(DomainError, "invalid_score", lambda: project.rate(RESIDENTS[2], score, ""), project)
        assert error.details == {"score": "1 to 5"}
    refused(Forbidden, "other_community", lambda: project.rate(OUTSIDER, 5, ""), project)
    refused(Forbidden, "role_required", lambda: project.rate(CADRE, 5, ""), project)
    assert project.evaluation["ratings"] == {"r1": 4}  # the comment stays in the ProjectRated event


@pytest.mark.parametrize("scores, average", [((5, 5, 4, 4, 3), 4.2), ((5, 4, 4), 4.33), ((1,), 1.0), ((), None)])
def test_closing_the_evaluation_records_count_and_average(scores, average):
    world = World()
    project = world.evaluating()
    for person, score in zip(RESIDENTS, scores):
        world.record(project, project.rate(person, score, ""))
    refused(Forbidden, "role_required", lambda: project.close_evaluation(RESIDENTS[0]), project)
    [event] = world.record(project, project.close_evaluation(CADRE))
    assert event.data == {"project_id": "p1", "count": len(scores), "average": average, "closed_by": "cadre"}
    assert (project.stage, project.phase) == ("co_share", "results_pending")
    assert (project.evaluation["count"], project.evaluation["average"]) == (len(scores), average)


# == 共享 co_share =================================================================================

def test_results_are_published_once_with_the_totals():
    world = World()
    project = world.sharing()
    refused(Forbidden, "role_required", lambda: project.publish_results(GRID, "x", None), project)
    [event] = world.record(project, project.publish_results(CADRE, "120 户老人上下楼更安全", None))
    assert event.data == {
        "project_id": "p1", "community_id": C, "benefits": "120 户老人上下楼更安全",
        "contributions": {"labour_minutes": 210, "skills_minutes": 0, "money_fen": 0, "materials_fen": 300_000},
        "by_contributor_type": {
            "resident": {"labour_minutes": 210, "skills_minutes": 0, "money_fen": 0, "materials_fen": 0},
            "enterprise": {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0, "materials_fen": 300_000},
            "social_organisation": {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0, "materials_fen": 0}},
        "contributors": 2, "spent_fen": 600_000, "volunteer_minutes": 210,
        "evaluation": {"count": 5, "average": 4.2}}
    assert project.phase == "published"
    error = refused(Conflict, "wrong_stage", lambda: project.publish_results(CADRE, "again", None), project)
    assert error.details["allowed_actions"] == UPKEEP + ["pay_reward"]


def test_volunteer_minutes_may_be_given_when_publishing():
    world = World()
    project = world.sharing()
    [event] = project.publish_results(CADRE, "benefits", 1_000)
    assert event.data["volunteer_minutes"] == 1_000


def test_rewards_are_paid_from_the_fund_to_contributors_with_a_reason():
    world = World()
    project = world.sharing()
    events = project.pay_reward(CADRE, "acme-steel", 50_000, "以奖代补:捐赠扶手材料")
    assert [e.data for e in events] == [{"project_id": "p1", "recipient_id": "acme-steel",
                                         "recipient_name": "海沧钢材公司", "amount_fen": 50_000,
                                         "reason": "以奖代补:捐赠扶手材料"}]
    reward = events[0].data
    world.record(world.fund, world.fund.pay_reward(project.id, reward["recipient_id"], reward["recipient_name"],
                                                   reward["amount_fen"], reward["reason"]))
    world.record(project, events)
    assert (world.fund.balance_fen, world.fund.rewards_fen) == (9_400_000 - 50_000, 50_000)
    error = refused(DomainError, "not_a_contributor", lambda: project.pay_reward(CADRE, "r9", 100, "x"), project)
    assert error.details == {"recipient_id": "must be one of the project's contributors"}
    refused(Forbidden, "role_required", lambda: project.pay_reward(GRID, "r3", 100, "x"), project)
    refused(Conflict, "insufficient_fund",
            lambda: world.fund.pay_reward(project.id, "r3", "r3号", 9_350_001, "too much"), world.fund)


# == the stage guards =============================================================================

def _maintainer(mid="m-x"):
    return {"maintainer_id": mid, "name": "x", "kind": "resident", "duty": "d", "rota": "", "members": []}


ACTIONS = {
    "cosign": lambda w, p: p.cosign(RESIDENTS[11]),
    "post_opinion": lambda w, p: p.post_opinion(RESIDENTS[11], "o-x", "support", "x"),
    "amend": lambda w, p: p.amend(PROPOSER, {"title": "改"}, "r"),
    "withdraw": lambda w, p: p.withdraw(PROPOSER, "r"),
    "open_vote": lambda w, p: p.open_vote(CADRE, w.community, UNIT),
    "cast_ballot": lambda w, p: p.cast_ballot(REPS[8], "yes"),
    "close_vote": lambda w, p: p.close_vote(CADRE),
    "pledge": lambda w, p: p.pledge(RESIDENTS[11], "pl-x", {"kind": "labour", "labour_minutes": 60}),
    "confirm_delivery": lambda w, p: p.confirm_delivery(GRID, "pl-x", {"labour_minutes": 60}, "2026-11-02T01:00:00Z"),
    "record_spending": lambda w, p: p.record_spending(CADRE, "s-x", 1, "FP-x", ""),
    "record_milestone": lambda w, p: p.record_milestone(CADRE, 100, "x"),
    "complete": lambda w, p: p.complete(CADRE),
    "assign_maintainer": lambda w, p: p.assign_maintainer(CADRE, _maintainer()),
    "log_maintenance": lambda w, p: p.log_maintenance(CADRE, "log-x", "x", T0),
    "report_problem": lambda w, p: p.report_problem(RESIDENTS[11], "pb-x", "x"),
    "resolve_problem": lambda w, p: p.resolve_problem(CADRE, "pb-x", "x", T0),
    "open_evaluation": lambda w, p: p.open_evaluation(CADRE, UNIT),
    "rate": lambda w, p: p.rate(RESIDENTS[11], 5, ""),
    "close_evaluation": lambda w, p: p.close_evaluation(CADRE),
    "publish_results": lambda w, p: p.publish_results(CADRE, "x", None),
    "pay_reward": lambda w, p: p.pay_reward(CADRE, "r3", 1, "x"),
}


def _at(stage: str):
    world = World()
    build = {
        "collecting_cosigners": lambda: world.propose(),
        "deliberation": lambda: world.qualify(world.propose()),
        "voting": lambda: world.voting(),
        "co_build": lambda: world.approved(),
        "co_manage": lambda: world.built(),
        "co_evaluate": lambda: world.evaluating(),
        "results_pending": lambda: world.sharing(),
        "published": lambda: world.sharing(published=True),
        "rejected": lambda: (lambda p: (world.close_vote(p), p)[1])(world.voting()),
        "withdrawn": lambda: (lambda p: (world.record(p, p.withdraw(PROPOSER, "r")), p)[1])(world.propose()),
    }[stage]
    return world, build()


STAGE_ALLOWED = [
    ("collecting_cosigners", "co_plan", ["cosign", "amend", "withdraw"]),
    ("deliberation", "co_plan", ["cosign", "post_opinion", "amend", "withdraw", "open_vote"]),
    ("voting", "co_plan", ["cast_ballot", "close_vote"]),
    ("co_build", "co_build", ["pledge", "confirm_delivery", "record_spending", "record_milestone", "complete"]),
    ("co_manage", "co_manage", UPKEEP + ["open_evaluation"]),
    ("co_evaluate", "co_evaluate", UPKEEP + ["rate", "close_evaluation"]),
    ("results_pending", "co_share", UPKEEP + ["publish_results", "pay_reward"]),
    ("published", "co_share", UPKEEP + ["pay_reward"]),
    ("rejected", "rejected", []),
    ("withdrawn", "withdrawn", []),
]


@pytest.mark.parametrize("where, stage, allowed", STAGE_ALLOWED, ids=[s[0] for s in STAGE_ALLOWED])
def test_every_command_outside_its_stage_is_a_conflict_listing_what_is_allowed(where, stage, allowed):
    world, project = _at(where)
    assert project.stage == stage
    assert project.allowed_actions() == allowed
    now = ", ".join(allowed) if allowed else "nothing (the project has ended)"
    refusals = 0
    for action, decide in ACTIONS.items():
        if action in allowed:
            continue
        error = refused(Conflict, "wrong_stage", lambda: decide(world, project), project)
        assert error.details == {"stage": stage, "phase": project.phase, "allowed_actions": allowed}, action
        assert error.message.startswith("cannot "), action
        assert error.message.endswith(f"the project is in stage {stage} ({project.phase}); allowed now: {now}"), action
        refusals += 1
    assert refusals == len(ACTIONS) - len(allowed)


@pytest.mark.parametrize("where, stage, allowed", STAGE_ALLOWED, ids=[s[0] for s in STAGE_ALLOWED])
def test_every_allowed_command_passes_the_stage_guard(where, stage, allowed):
    world, project = _at(where)
    for action in allowed:
        try:
            ACTIONS[action](world, project)
        except Conflict as error:
            assert error.reason != "wrong_stage", (action, error.message)
        except DomainError:
            pass  # refused for another reason (e.g. an unknown pledge): the stage let it through


@pytest.mark.parametrize("repeat", ["cosign", "cast_ballot", "rate", "resolve_problem", "assign_maintainer"])
def test_a_repeated_command_is_a_conflict_whose_message_lists_what_is_allowed_now(repeat):
    """The issue: "A command in the wrong stage, or a repeated one, is a 409 whose message says
    what is allowed now" (also the README and the domain's docstring)."""
    world = World()
    if repeat == "cosign":
        project = world.propose()
        world.record(project, project.cosign(RESIDENTS[1]))
        again = lambda: project.cosign(RESIDENTS[1])  # noqa: E731
    elif repeat == "cast_ballot":
        project = world.voting()
        world.record(project, project.cast_ballot(REPS[0], "yes"))
        again = lambda: project.cast_ballot(REPS[0], "no")  # noqa: E731
    elif repeat == "rate":
        project = world.evaluating()
        world.record(project, project.rate(RESIDENTS[1], 5, ""))
        again = lambda: project.rate(RESIDENTS[1], 4, "")  # noqa: E731
    elif repeat == "resolve_problem":
        project = world.built()
        world.record(project, project.report_problem(RESIDENTS[1], "pb1", "x"))
        world.record(project, project.resolve_problem(CADRE, "pb1", "ok", world.now))
        again = lambda: project.resolve_problem(CADRE, "pb1", "ok", world.now)  # noqa: E731
    else:
        project = world.built()
        world.record(project, project.assign_maintainer(CADRE, _maintainer("r4")))
        again = lambda: project.assign_maintainer(CADRE, _maintainer("r4"))  # noqa: E731
    before = project.to_json()
    with pytest.raises(Conflict) as caught:
        again()
    assert project.to_json() == before
    assert "allowed now" in caught.value.message, caught.value.message


# == replay ======================================================================================

def test_replaying_the_log_gives_the_same_state():
    world = World()
    project = world.sharing(published=True)
    events = world.streams[project.stream_id]
    assert [e.version for e in events] == list(range(1, project.version + 1))
    assert Project.replay("p1", events).to_json() == project.to_json()
    assert Project.from_json(project.to_json()) == project
    assert CommunityFund.replay(C, world.streams[world.fund.stream_id]).view() == world.fund.view()
    as_proposed = Project.replay("p1", events[:1])
    assert (as_proposed.stage, as_proposed.phase, as_proposed.version) == ("co_plan", "collecting_cosigners", 1)


# -- what a caller may do now ---------------------------------------------------------------------

def test_a_caller_s_actions_are_the_stage_s_that_would_accept_them():
    world = World()
    project = world.propose()
    assert project.actions_for(PROPOSER) == ["amend", "withdraw"]  # not their own co-signature
    assert project.actions_for(RESIDENTS[1]) == ["cosign"]
    world.record(project, project.cosign(RESIDENTS[1]))
    assert project.actions_for(RESIDENTS[1]) == []  # co-signed once already
    assert project.actions_for(OUTSIDER) == [] and project.actions_for(CADRE) == []

    voting = world.voting("p2")
    assert voting.actions_for(REPS[0]) == ["cast_ballot"] and voting.actions_for(CADRE) == ["close_vote"]
    world.record(voting, voting.cast_ballot(REPS[0], "yes"))
    assert voting.actions_for(REPS[0]) == []  # voted
    assert voting.actions_for(RESIDENTS[3]) == []  # not a representative

    evaluating = world.evaluating()
    assert "rate" in evaluating.actions_for(RESIDENTS[2]) and "report_problem" in evaluating.actions_for(RESIDENTS[2])
    world.record(evaluating, evaluating.rate(RESIDENTS[2], 4, ""))
    assert "rate" not in evaluating.actions_for(RESIDENTS[2])
    assert evaluating.actions_for(OUTSIDER) == []


def test_asking_what_a_caller_may_do_records_nothing():
    world = World()
    project = world.voting()
    version, ballots = project.version, dict(project.vote["ballots"])
    project.actions_for(REPS[1])
    assert project.version == version and project.vote["ballots"] == ballots


def test_every_action_a_stage_allows_has_a_probe_for_its_caller():
    from services.projects.domain import CALLER_PROBES

    stages = [World().propose("s1"), World().qualify(World().propose("s2")), World().voting("s3"),
              World().approved("s4"), World().built(), World().evaluating(), World().sharing(),
              World().sharing(published=True)]
    every = {action for project in stages for action in project.allowed_actions()}
    assert len(every) > 15 and every <= set(CALLER_PROBES), every - set(CALLER_PROBES)
