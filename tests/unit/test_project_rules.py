"""The projects domain without a database: community settings, the fund ledger, the five stages,
the council vote's tally, and every refusal with its reason — each rule of the projects issue."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.kernel.auth import Principal
from services.kernel.errors import Conflict, DomainError, Forbidden
from services.projects.community import DEFAULT_SETTINGS, Community, CommunityFund
from services.projects.domain import Project
from tests.support.events import T0, Log, kinds

C = "haicang"


def who(person_id: str, *roles: str, community: str | None = C) -> Principal:
    return Principal(person_id=person_id, name=person_id, roles=frozenset(roles or ("resident",)), community=community)


CADRE, GRID, ADMIN = who("cadre", "cadre"), who("grid", "grid_worker"), who("admin", "admin", community=None)
PROPOSER = who("r0")
RESIDENTS = [who(f"r{i}") for i in range(1, 10)]
REPS = [who(f"rep{i}", "representative", "resident") for i in range(9)]
OUTSIDER = who("x1", community="jimei")


def community(log: Log, reps: int = 9, **settings) -> Community:
    c = Community(id=C)
    log.record(c, c.register("海沧社区", "海沧区", [{"grid_id": "g1", "name": "一"}], settings or None))
    if reps:
        log.record(c, c.set_representatives([{"person_id": p.person_id, "name": p.person_id} for p in REPS[:reps]]))
    return c


def fund(log: Log, amount: int = 10_000_000) -> CommunityFund:
    f = CommunityFund(id=C)
    log.record(f, f.credit(amount, "government_allocation", "海财〔2026〕1号", ""))
    return f


PROPOSAL = {"community_id": C, "grid_id": "g1", "title": "修建休闲活动室", "description": "空地建活动室",
            "category": "facilities", "location": "3号楼旁", "estimated_cost_fen": 5_000_000,
            "requested_fen": 3_000_000}


def proposed(log: Log, c: Community, **changes) -> Project:
    p = Project(id="p1")
    log.record(p, p.propose(PROPOSER, {**PROPOSAL, **changes}, c))
    return p


def qualified(log: Log, c: Community) -> Project:
    p = proposed(log, c)
    for person in RESIDENTS[:6]:
        log.record(p, p.cosign(person))
    return p


def voting(log: Log, c: Community, f: CommunityFund, unit=None) -> Project:
    p = qualified(log, c)
    log.record(p, p.open_vote(CADRE, c, unit or {"unit_id": "jwh", "name": "居委会"}))
    log.record(f, f.reserve(p.id, p.requested_fen))
    return p


def closed(log: Log, p: Project, f: CommunityFund, yes: int, no: int = 0, abstain: int = 0) -> list:
    for rep, choice in zip(REPS, ["yes"] * yes + ["no"] * no + ["abstain"] * abstain):
        log.record(p, p.cast_ballot(rep, choice))
    events = log.record(p, p.close_vote(CADRE))
    if p.stage == "rejected":
        log.record(f, f.release(p.id, "rejected"))
    return events


def building(log: Log) -> tuple[Project, CommunityFund]:
    c, f = community(log), fund(log)
    p = voting(log, c, f)
    closed(log, p, f, yes=9)
    return p, f


def refused(exc_type, reason: str, call) -> DomainError:
    with pytest.raises(exc_type) as caught:
        call()
    assert caught.value.reason == reason, caught.value.message
    return caught.value


# -- community and fund --------------------------------------------------------------------------

def test_default_settings_are_six_cosigners_two_thirds_quorum_and_more_than_half_yes():
    assert DEFAULT_SETTINGS == {"cosigners_required": 6, "quorum_numerator": 2, "quorum_denominator": 3,
                                "pass_numerator": 1, "pass_denominator": 2}
    log = Log()
    c = community(log, cosigners_required=4)
    assert c.settings["cosigners_required"] == 4 and c.settings["quorum_numerator"] == 2
    refused(Conflict, "already_registered", lambda: c.register("x", "", [], None))
    refused(Conflict, "duplicate_grid", lambda: c.add_grid("g1", "again"))
    fresh = Community(id="other")
    refused(DomainError, "duplicate_grid", lambda: fresh.register("x", "", [{"grid_id": "a", "name": "1"},
                                                                             {"grid_id": "a", "name": "2"}], None))


def test_representatives_change_as_an_event_and_unchanged_lists_record_nothing():
    log = Log()
    c = community(log, reps=3)
    assert c.set_representatives([{"person_id": p.person_id, "name": p.person_id} for p in REPS[:3]]) == []
    [changed] = c.set_representatives([{"person_id": "rep0", "name": "rep0"}, {"person_id": "new", "name": "新"}])
    assert changed.data["added"] == [{"person_id": "new", "name": "新"}] and changed.data["removed"] == ["rep1", "rep2"]
    refused(DomainError, "duplicate_representative",
            lambda: c.set_representatives([{"person_id": "a", "name": "1"}, {"person_id": "a", "name": "1"}]))


def test_the_fund_ledger_credits_reserves_spends_releases_and_never_goes_negative():
    log = Log()
    f = CommunityFund(id=C)
    for amount, source in ((1_000_000, "government_allocation"), (300_000, "reward_pool"), (200_000, "donation")):
        log.record(f, f.credit(amount, source, "ref", ""))
    assert (f.balance_fen, f.credited_fen) == (1_500_000, 1_500_000)
    refused(DomainError, "invalid_source", lambda: f.credit(1, "lottery", "", ""))
    refused(DomainError, "invalid_amount", lambda: f.credit(0, "donation", "", ""))
    refused(Conflict, "insufficient_fund", lambda: f.reserve("p1", 1_500_001))
    log.record(f, f.reserve("p1", 1_000_000))
    assert (f.balance_fen, f.reserved_fen, f.outstanding("p1")) == (500_000, 1_000_000, 1_000_000)
    refused(Conflict, "reservation_exceeded", lambda: f.spend("p1", 1_000_001, "FP-1", ""))
    log.record(f, f.spend("p1", 600_000, "FP-1", "材料"))
    assert (f.balance_fen, f.spent_fen, f.outstanding("p1")) == (500_000, 600_000, 400_000)
    [released] = f.release("p1", "completed")
    assert released.data["amount_fen"] == 400_000 and released.data["balance_after_fen"] == 900_000
    log.record(f, [released])
    assert f.release("p1", "again") == []  # nothing outstanding: nothing to release
    refused(Conflict, "insufficient_fund", lambda: f.pay_reward("p1", "r1", "王", 900_001, "以奖代补"))
    log.record(f, f.pay_reward("p1", "r1", "王", 900_000, "以奖代补"))
    assert f.balance_fen == 0 and f.rewards_fen == 900_000
    assert f.reserve("p2", 0) == []


# -- 共谋 -----------------------------------------------------------------------------------------

def test_a_resident_of_the_community_proposes_in_a_known_grid():
    log = Log()
    c = community(log)
    p = proposed(log, c)
    assert (p.stage, p.phase, p.cosigners_required, p.proposer_id) == ("co_plan", "collecting_cosigners", 6, "r0")
    for actor, exc, reason in ((OUTSIDER, Forbidden, "other_community"), (CADRE, Forbidden, "role_required")):
        refused(exc, reason, lambda a=actor: Project(id="p2").propose(a, PROPOSAL, c))
    refused(DomainError, "unknown_grid", lambda: Project(id="p2").propose(PROPOSER, {**PROPOSAL, "grid_id": "g9"}, c))
    refused(DomainError, "unknown_community", lambda: Project(id="p2").propose(PROPOSER, PROPOSAL, Community(id="x")))
    error = refused(DomainError, "invalid_proposal", lambda: Project(id="p2").propose(
        PROPOSER, {**PROPOSAL, "requested_fen": 6_000_000, "category": "casino"}, c))
    assert set(error.details) == {"requested_fen", "category"}
    refused(Conflict, "already_exists", lambda: p.propose(PROPOSER, PROPOSAL, c))


def test_cosigning_by_other_residents_qualifies_at_the_threshold():
    log = Log()
    c = community(log)
    p = proposed(log, c)
    refused(Conflict, "self_cosign", lambda: p.cosign(PROPOSER))
    refused(Forbidden, "other_community", lambda: p.cosign(OUTSIDER))
    for person in RESIDENTS[:5]:
        assert kinds(log.record(p, p.cosign(person))) == ["ProjectCosigned"]
    refused(Conflict, "already_cosigned", lambda: p.cosign(RESIDENTS[0]))
    assert kinds(log.record(p, p.cosign(RESIDENTS[5]))) == ["ProjectCosigned", "ProjectQualified"]
    assert (p.phase, len(p.cosigner_ids)) == ("deliberation", 6)
    assert kinds(log.record(p, p.cosign(RESIDENTS[6]))) == ["ProjectCosigned"]  # support keeps counting


def test_deliberation_opinions_amendments_with_every_version_and_withdrawal():
    log = Log()
    c = community(log)
    p = qualified(log, c)
    opinions = [log.record(p, p.post_opinion(RESIDENTS[7], f"o-{stance}", stance, "意见"))[0]
                for stance in ("support", "oppose", "neutral")]
    assert [o.data["stance"] for o in opinions] == ["support", "oppose", "neutral"]
    refused(DomainError, "invalid_stance", lambda: p.post_opinion(RESIDENTS[7], "o", "angry", "x"))
    refused(Forbidden, "not_proposer", lambda: p.amend(RESIDENTS[0], {"title": "别的"}, "x"))
    refused(DomainError, "empty_amendment", lambda: p.amend(PROPOSER, {"title": p.title}, "x"))
    amended = [log.record(p, p.amend(PROPOSER, {"requested_fen": 2_500_000}, "居民自筹一部分"))[0],
               log.record(p, p.amend(PROPOSER, {"title": "修建居民活动室"}, "更准确"))[0]]
    assert p.requested_fen == 2_500_000 and p.title == "修建居民活动室"
    # Revision 0 is the original text; every amendment is the next one, with what it changed (the
    # project's page shows the whole text of each version: tests/integration/test_projects_api.py).
    assert [(e.data["revision"], e.data["changes"]) for e in amended] == [
        (1, {"requested_fen": 2_500_000}), (2, {"title": "修建居民活动室"})]
    assert p.last_revision == 2
    refused(Forbidden, "not_proposer", lambda: p.withdraw(RESIDENTS[0], "x"))
    log.record(p, p.withdraw(PROPOSER, "改为明年再议"))
    assert p.stage == "withdrawn"
    error = refused(Conflict, "wrong_stage", lambda: p.cosign(RESIDENTS[8]))
    assert error.details["allowed_actions"] == [] and "nothing" in error.message


def test_no_vote_before_qualification_and_no_withdrawal_once_voting():
    log = Log()
    c, f = community(log), fund(log)
    p = proposed(log, c)
    error = refused(Conflict, "wrong_stage", lambda: p.open_vote(CADRE, c, None))
    assert error.details["allowed_actions"] == ["cosign", "amend", "withdraw"]
    p = voting(log, c, f)
    assert p.phase == "voting" and f.outstanding("p1") == 3_000_000
    refused(Conflict, "wrong_stage", lambda: p.withdraw(PROPOSER, "x"))
    refused(Conflict, "wrong_stage", lambda: p.amend(PROPOSER, {"title": "x"}, "x"))
    refused(Forbidden, "role_required", lambda: qualified(Log(), community(Log())).open_vote(RESIDENTS[0], c, None))


def test_opening_a_vote_needs_an_electorate():
    log = Log()
    c = community(log, reps=0)
    p = qualified(log, c)
    refused(Conflict, "no_electorate", lambda: p.open_vote(CADRE, c, None))


def test_ballots_only_from_the_electorate_once_each():
    log = Log()
    c, f = community(log), fund(log)
    p = voting(log, c, f)
    refused(Forbidden, "role_required", lambda: p.cast_ballot(RESIDENTS[0], "yes"))
    latecomer = who("rep-new", "representative", "resident")
    refused(Forbidden, "not_in_electorate", lambda: p.cast_ballot(latecomer, "yes"))
    refused(DomainError, "invalid_choice", lambda: p.cast_ballot(REPS[0], "maybe"))
    log.record(p, p.cast_ballot(REPS[0], "yes"))
    refused(Conflict, "already_voted", lambda: p.cast_ballot(REPS[0], "no"))


@pytest.mark.parametrize("yes, no, abstain, quorum_met, result", [
    (5, 1, 0, True, "approved"),    # 6 ballots of 9: quorum ⌈9×2/3⌉ = 6; 5 > 6/2
    (3, 3, 0, True, "rejected"),    # a tie is not more than half
    (3, 0, 3, True, "rejected"),    # abstentions count toward the quorum, not toward yes: 3 of 6
    (4, 0, 2, True, "approved"),    # 4 of 6 ballots
    (5, 0, 0, False, "rejected"),   # 5 ballots of 9: no quorum even though all say yes
    (0, 0, 9, True, "rejected"),    # everyone abstains
    (9, 0, 0, True, "approved"),
])
def test_the_tally(yes, no, abstain, quorum_met, result):
    log = Log()
    c, f = community(log), fund(log)
    p = voting(log, c, f)
    events = closed(log, p, f, yes, no, abstain)
    tally = events[0].data
    assert (tally["electorate_size"], tally["ballots"], tally["yes"], tally["no"], tally["abstain"]) == (
        9, yes + no + abstain, yes, no, abstain)
    assert (tally["quorum_required"], tally["quorum_met"], tally["result"]) == (6, quorum_met, result)
    assert kinds(events) == ["CouncilVoteClosed", "ProjectApproved" if result == "approved" else "ProjectRejected"]
    if result == "approved":
        assert p.stage == "co_build" and f.outstanding("p1") == 3_000_000
    else:
        assert p.stage == "rejected" and f.outstanding("p1") == 0 and f.balance_fen == 10_000_000
        assert ("quorum" in tally["reason"]) == (not quorum_met)


# -- 共建 共管 共评 共享 ------------------------------------------------------------------------------

def test_pledges_and_deliveries_of_every_kind():
    log = Log()
    p, _f = building(log)
    log.record(p, p.pledge(RESIDENTS[0], "pl1", {"kind": "labour", "labour_minutes": 240}))
    log.record(p, p.pledge(CADRE, "pl2", {"kind": "materials", "materials_fen": 300_000, "description": "扶手",
                                          "contributor": {"contributor_id": "acme", "name": "钢材公司",
                                                          "type": "enterprise"}}))
    log.record(p, p.pledge(RESIDENTS[1], "pl3", {"kind": "money", "money_fen": 50_000}))
    log.record(p, p.pledge(RESIDENTS[2], "pl4", {"kind": "skills", "skills_minutes": 120, "description": "电工"}))
    refused(Forbidden, "pledge_for_other", lambda: p.pledge(RESIDENTS[0], "x", {
        "kind": "money", "money_fen": 1, "contributor": {"contributor_id": "acme", "name": "a", "type": "enterprise"}}))
    error = refused(DomainError, "invalid_amounts", lambda: p.pledge(RESIDENTS[0], "x", {
        "kind": "labour", "labour_minutes": 60, "money_fen": 5}))
    assert set(error.details) == {"money_fen"}
    refused(DomainError, "invalid_amounts", lambda: p.pledge(RESIDENTS[0], "x", {"kind": "materials",
                                                                                 "materials_fen": 5}))
    refused(DomainError, "invalid_kind", lambda: p.pledge(RESIDENTS[0], "x", {"kind": "prayers"}))
    refused(Forbidden, "role_required", lambda: p.confirm_delivery(RESIDENTS[0], "pl1", {"labour_minutes": 1}, ""))
    refused(DomainError, "unknown_pledge", lambda: p.confirm_delivery(GRID, "nope", {"labour_minutes": 1}, ""))
    first = log.record(p, p.confirm_delivery(GRID, "pl1", {"labour_minutes": 180}, "2026-11-02T02:00:00Z"))[0]
    second = log.record(p, p.confirm_delivery(GRID, "pl1", {"labour_minutes": 90}, "2026-11-03T02:00:00Z"))[0]
    assert (first.data["delivery_no"], second.data["delivery_no"]) == (1, 2)
    assert first.data["contributor_id"] == "r1" and first.data["kind"] == "labour"
    assert p.pledges["pl1"]["delivered"]["labour_minutes"] == 270  # may differ from the 240 pledged


def test_spending_milestones_and_completion():
    log = Log()
    p, _f = building(log)
    log.record(p, p.record_spending(CADRE, "s1", 600_000, "FP-1", "材料"))
    assert p.spent_fen == 600_000
    refused(Forbidden, "role_required", lambda: p.record_spending(GRID, "s2", 1, "FP", ""))
    refused(Conflict, "not_finished", lambda: p.complete(CADRE))
    log.record(p, p.record_milestone(GRID, 40, "一半"))
    refused(Conflict, "progress_backwards", lambda: p.record_milestone(GRID, 30, "倒退"))
    refused(DomainError, "invalid_progress", lambda: p.record_milestone(GRID, 101, "x"))
    log.record(p, p.record_milestone(CADRE, 100, "完工"))
    refused(Forbidden, "role_required", lambda: p.complete(GRID))
    log.record(p, p.complete(CADRE))
    assert (p.stage, p.phase) == ("co_manage", "maintaining")
    refused(Conflict, "wrong_stage", lambda: p.pledge(RESIDENTS[0], "x", {"kind": "money", "money_fen": 1}))


def managed(log: Log) -> Project:
    p, _f = building(log)
    log.record(p, p.record_milestone(CADRE, 100, "完工"))
    log.record(p, p.complete(CADRE))
    return p


def test_maintainers_logs_and_problems_with_the_time_they_took():
    log = Log()
    p = managed(log)
    log.record(p, p.assign_maintainer(GRID, {"maintainer_id": "team-1", "name": "护绿队", "kind": "group",
                                             "members": ["r3", "r4"], "duty": "浇水", "rota": "每周六"}))
    refused(Conflict, "already_maintainer", lambda: p.assign_maintainer(GRID, {"maintainer_id": "team-1",
                                                                              "name": "x", "kind": "group"}))
    [logged] = p.log_maintenance(RESIDENTS[2], "l1", "浇水", T0)  # r3 is a member of the team
    assert logged.data["maintainer_id"] == "team-1"
    refused(Forbidden, "role_required", lambda: p.log_maintenance(RESIDENTS[0], "l2", "x", T0))
    log.record(p, p.report_problem(RESIDENTS[5], "pr1", "水管破裂"), at=T0)
    refused(Forbidden, "role_required", lambda: p.resolve_problem(RESIDENTS[5], "pr1", "x", T0))
    refused(DomainError, "unknown_problem", lambda: p.resolve_problem(GRID, "nope", "x", T0))
    [resolved] = log.record(p, p.resolve_problem(RESIDENTS[3], "pr1", "已更换", T0 + timedelta(hours=2)))
    assert resolved.data["resolution_seconds"] == 7200
    refused(Conflict, "already_resolved", lambda: p.resolve_problem(GRID, "pr1", "x", T0))


def test_evaluation_once_per_resident_then_count_and_average():
    log = Log()
    p = managed(log)
    refused(Conflict, "wrong_stage", lambda: p.rate(RESIDENTS[0], 5, ""))
    log.record(p, p.open_evaluation(CADRE, None))  # the unit named when the vote opened
    assert p.stage == "co_evaluate" and p.evaluation["responsible_unit"] == {"unit_id": "jwh", "name": "居委会"}
    for person, score in zip(RESIDENTS, (5, 4, 4, 2)):
        [rated] = log.record(p, p.rate(person, score, "好"))
    assert rated.data["responsible_unit"]["unit_id"] == "jwh" and rated.data["person_id"] == "r4"
    refused(Conflict, "already_rated", lambda: p.rate(RESIDENTS[0], 1, ""))
    refused(DomainError, "invalid_score", lambda: p.rate(RESIDENTS[5], 6, ""))
    refused(Forbidden, "role_required", lambda: p.rate(GRID, 3, ""))
    [closing] = log.record(p, p.close_evaluation(CADRE))
    assert (closing.data["count"], closing.data["average"], p.stage) == (4, 3.75, "co_share")


def test_an_evaluation_needs_a_responsible_unit():
    log = Log()
    c, f = community(log), fund(log)
    p = qualified(log, c)
    log.record(p, p.open_vote(CADRE, c, None))
    log.record(f, f.reserve(p.id, p.requested_fen))
    closed(log, p, f, yes=9)
    log.record(p, p.record_milestone(CADRE, 100, "完工"))
    log.record(p, p.complete(CADRE))
    refused(DomainError, "responsible_unit_required", lambda: p.open_evaluation(CADRE, None))
    log.record(p, p.open_evaluation(CADRE, {"unit_id": "jsb", "name": "建设办"}))
    assert p.evaluation["responsible_unit"]["unit_id"] == "jsb"


def test_results_once_and_rewards_to_contributors_only():
    log = Log()
    p, _f = building(log)
    log.record(p, p.pledge(RESIDENTS[0], "pl1", {"kind": "labour", "labour_minutes": 240}))
    log.record(p, p.confirm_delivery(GRID, "pl1", {"labour_minutes": 200}, "2026-11-02T02:00:00Z"))
    log.record(p, p.record_spending(CADRE, "s1", 500_000, "FP-1", ""))
    log.record(p, p.record_milestone(CADRE, 100, "完工"))
    log.record(p, p.complete(CADRE))
    log.record(p, p.open_evaluation(CADRE, None))
    log.record(p, p.rate(RESIDENTS[1], 4, ""))
    log.record(p, p.close_evaluation(CADRE))
    [results] = log.record(p, p.publish_results(CADRE, "老人出行更安全", None))
    d = results.data
    assert d["contributions"]["labour_minutes"] == 200 and d["spent_fen"] == 500_000
    assert d["volunteer_minutes"] == 200 and d["evaluation"] == {"count": 1, "average": 4.0}
    assert d["by_contributor_type"]["resident"]["labour_minutes"] == 200
    refused(Conflict, "wrong_stage", lambda: p.publish_results(CADRE, "again", None))
    refused(DomainError, "not_a_contributor", lambda: p.pay_reward(CADRE, "r9", 100, "x"))
    [reward] = log.record(p, p.pay_reward(CADRE, "r1", 10_000, "以奖代补"))
    assert reward.data["recipient_name"] == "r1"
    refused(Forbidden, "role_required", lambda: p.pay_reward(GRID, "r1", 1, "x"))


def test_allowed_actions_follow_the_stage():
    log = Log()
    c = community(log)
    fund(log)
    assert Project(id="new").allowed_actions() == ["propose"]
    p = qualified(log, c)
    assert p.allowed_actions() == ["cosign", "post_opinion", "amend", "withdraw", "open_vote"]
    log.record(p, p.open_vote(CADRE, c, {"unit_id": "u", "name": "u"}))
    assert p.allowed_actions() == ["cast_ballot", "close_vote"]
    error = refused(Conflict, "wrong_stage", lambda: p.post_opinion(RESIDENTS[0], "o", "support", "x"))
    assert "cast_ballot" in error.message and error.details["stage"] == "co_plan"
