"""Participatory budgeting rounds (issue 24) through the gateway (``/api/v1``), in front of the projects
service served over real HTTP in this process (its clock the test's), on SQLite and PostgreSQL.

The election is the literature's small example where the rules differ: ten voters, a budget of
10,000 yuan, six proposals of 3,000 yuan each; a majority bloc of six approves A1, A2 and A3, a
minority of four approves B1, B2 and B3. Greedy gives the majority the whole budget (A1 A2 A3);
the Method of Equal Shares gives each voter 1,000 yuan of it, so the bloc of six pays for two of
its proposals and the bloc of four for one (A1 A2 B1), and the greedy completion finds nothing
that fits the 1,000 yuan left.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from services.kernel.auth import Principal
from services.kernel import privacy
from services.kernel.eventstore import rebuild
from services.projects.service import DEFINITION
from tests.support.apps import BehindGateway, TickingClock
from tests.support.errors import assert_error
from tests.support.projects import Community

UTC = timezone.utc
START = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
COST = 300_000  # 3,000 yuan
BUDGET = 1_000_000  # 10,000 yuan


class World(BehindGateway):
    """The gateway in front of one projects service (its clock the test's), both in this process."""

    def __init__(self, tmp_path, database_url: str) -> None:
        super().__init__(DEFINITION, database_url, tmp_path / "gateway", TickingClock(START))

    def community(self, community_id: str, **settings) -> Community:
        return Community(self.d, community_id, residents=12, fund_fen=2_000_000, settings=settings or None)

    def job(self) -> str:
        """What ``python -m services.projects close-due-rounds`` does once."""
        return DEFINITION.commands["close-due-rounds"][1](self.container)


@pytest.fixture
def world(tmp_path, database_url):
    w = World(tmp_path, database_url)
    yield w
    w.close()


def proposals(world: World, community: Community, names=("A1", "A2", "A3", "B1", "B2", "B3")) -> dict[str, str]:
    """Six co-signed proposals in deliberation, 3,000 yuan each: name -> project id."""
    ids = {}
    for name in names:
        project = community.propose(title=f"提议 {name}", requested_fen=COST, estimated_cost_fen=COST)
        community.qualify(project["project_id"])
        ids[name] = project["project_id"]
    return ids


def open_round(world, community, ids, rule, **extra):
    body = {"title": "2027 年度社区微项目", "budget_fen": BUDGET, "rule": rule, "project_ids": list(ids.values()),
            "closes_at": (START + timedelta(days=14)).isoformat(), **extra}
    return world.d.post(community.cadre, f"/communities/{community.id}/rounds", body, status=201)["round"]


def vote_blocs(world, community, round_id, ids):
    """Voters 0-5 approve the A proposals, voters 6-9 the B proposals (voter 0 first approves B1 and
    then revises: the last ballot counts)."""
    voters = community.residents[:10]
    world.d.ok(voters[0], "PUT", f"/rounds/{round_id}/ballot", {"approvals": [ids["B1"]]})
    for i, voter in enumerate(voters):
        bloc = ("A1", "A2", "A3") if i < 6 else ("B1", "B2", "B3")
        world.d.ok(voter, "PUT", f"/rounds/{round_id}/ballot", {"approvals": [ids[n] for n in bloc]})
    return voters


@pytest.mark.parametrize("rule, winners", [("greedy", ("A1", "A2", "A3")), ("mes", ("A1", "A2", "B1"))])
def test_a_round_runs_through_the_gateway_by_its_rule_and_verifies_from_the_log(world, rule, winners):
    community = world.community(f"pb-{rule}")
    ids = proposals(world, community)
    names = {pid: name for name, pid in ids.items()}
    d, cadre = world.d, community.cadre
    balance = community.fund()["balance_fen"]

    opened = open_round(world, community, ids, rule, electorate_size=40, max_approvals=3)
    rid = opened["round_id"]
    assert opened["status"] == "open" and opened["ballots"] == 0 and opened["budget_fen"] == BUDGET
    assert [p["order"] for p in opened["proposals"]] == [1, 2, 3, 4, 5, 6]
    assert community.fund()["balance_fen"] == balance - BUDGET
    # in the round, a proposal cannot go to a council vote on its own, nor change its cost
    project = d.get(cadre, f"/projects/{ids['A1']}")
    assert project["allowed_actions"] == ["cosign", "post_opinion"]
    assert_error(d.call(cadre, "POST", f"/projects/{ids['A1']}/vote/open", {}), 409, "wrong_stage")
    assert_error(d.call(community.residents[0], "POST", f"/projects/{ids['A1']}/amendments",
                        {"requested_fen": 1, "reason": "便宜点"}), 409, "wrong_stage")
    # nor enter a second round
    assert_error(d.call(cadre, "POST", f"/communities/{community.id}/rounds",
                        {"title": "again", "budget_fen": 1000, "rule": "greedy", "project_ids": [ids["A1"]],
                         "closes_at": (START + timedelta(days=3)).isoformat()}), 409, "not_qualified")

    voters = vote_blocs(world, community, rid, ids)
    # bad ballots are refused and change nothing
    mine = d.get(voters[0], f"/rounds/{rid}")["my_ballot"]
    assert mine == [ids["A1"], ids["A2"], ids["A3"]]
    assert_error(d.call(voters[0], "PUT", f"/rounds/{rid}/ballot", {"approvals": list(ids.values())[:4]}),
                 422, "too_many_approvals")
    assert_error(d.call(voters[0], "PUT", f"/rounds/{rid}/ballot", {"approvals": ["not-in-round"]}),
                 422, "unknown_proposal")
    assert_error(d.call(voters[0], "PUT", f"/rounds/{rid}/ballot", {"approvals": [ids["A1"], ids["A1"]]}),
                 422, "invalid_ballot")
    assert_error(d.call(voters[0], "PUT", f"/rounds/{rid}/ballot", {"approvals": [], "voter": "x"}), 422)
    assert_error(d.call(cadre, "PUT", f"/rounds/{rid}/ballot", {"approvals": []}), 403)
    assert d.get(voters[0], f"/rounds/{rid}")["my_ballot"] == mine

    # secret: each reader sees their own ballot only, staff see counts; the history and the admin
    # routes hold no approvals
    seen = d.get(cadre, f"/rounds/{rid}")
    assert seen["ballots"] == 10 and seen["turnout"] == 0.25 and seen["my_ballot"] is None
    assert d.get(community.residents[11], f"/rounds/{rid}")["my_ballot"] is None
    for pid in ids.values():  # (the voters co-signed: their names are there for that, not for their ballots)
        history = d.get(cadre, f"/projects/{pid}/history")["events"]
        assert [e["event_type"] for e in history][-1] == "ProjectEnteredRound"
        assert '"approvals"' not in json.dumps(history)
    log = d.get(community.admin, "/admin/projects/events?limit=1000")["events"]
    cast = [e for e in log if e["event_type"] == "RoundBallotCast"]
    assert len(cast) == 11 and all(e["data"]["approvals"] is None for e in cast)
    stream = d.get(community.admin, f"/admin/projects/streams/roundballot-{rid}:{voters[0].person_id}/events")
    assert [e["data"]["approvals"] for e in stream["events"]] == [None, None]

    assert_error(d.call(community.residents[0], "POST", f"/rounds/{rid}/close", {}), 403)
    assert_error(d.call(cadre, "GET", f"/rounds/{rid}/verification"), 409, "round_open")
    closed = d.post(cadre, f"/rounds/{rid}/close", {}, status=200)["round"]
    outcome = closed["outcome"]
    assert closed["status"] == "closed" and outcome["rule"] == rule and outcome["ballots"] == 10
    assert tuple(names[w["project_id"]] for w in outcome["winners"]) == winners
    assert all(w["cost_fen"] == COST for w in outcome["winners"])
    assert outcome["spent_fen"] == 3 * COST and outcome["leftover_fen"] == BUDGET - 3 * COST
    support = {names[w["project_id"]]: w["approvals"] for w in outcome["winners"]}
    assert support == {n: (6 if n.startswith("A") else 4) for n in winners}
    explained = {names[e["project_id"]]: e for e in outcome["explanations"]}
    assert set(explained) == set(ids) and {n for n, e in explained.items() if e["won"]} == set(winners)
    assert all(e["label"]["zh"] and e["label"]["en"] for e in explained.values())
    if rule == "mes":
        assert explained["B1"]["reason"] == "won_mes" and explained["A3"]["reason"] == "lost_unaffordable"
        assert "Method of Equal Shares" in explained["B1"]["label"]["en"]
    else:
        assert explained["B1"]["reason"] == "lost_did_not_fit"
    assert outcome["parameters"]["tie_break"] == "lower_cost_then_earlier"
    assert all(isinstance(e["approvals"], int) for e in outcome["explanations"])  # counts, never voters
    assert not any(v.person_id in json.dumps(closed) for v in voters)

    # the money: winners reserved once, from the round; the rest back to the fund
    fund = community.fund()
    assert fund["balance_fen"] == balance - 3 * COST
    kinds = [e["kind"] for e in fund["ledger"]]
    assert kinds.count("transfer") == 3 and kinds[-4:] == ["transfer", "transfer", "transfer", "release"]
    for name, pid in ids.items():
        project = d.get(cadre, f"/projects/{pid}")
        if name in winners:
            assert (project["stage"], project["phase"]) == ("co_build", "building")
        else:
            assert project["phase"] == "deliberation" and "open_vote" in project["allowed_actions"]
    # a winner spends from its reservation; the reservation is the round's amount, never twice
    spent = d.post(cadre, f"/projects/{ids[winners[0]]}/spending",
                   {"amount_fen": COST, "receipt_ref": "发票 001"})["project"]
    assert [s["amount_fen"] for s in spent["spending"]] == [COST] and spent["funded_by_round"] == rid
    assert_error(d.call(cadre, "POST", f"/projects/{ids[winners[0]]}/spending",
                        {"amount_fen": 1, "receipt_ref": "发票 002"}), 409, "reservation_exceeded")

    verified = d.get(community.residents[5], f"/rounds/{rid}/verification")
    assert verified["identical"] is True and verified["ballots_recounted"] == 10
    assert [names[p] for p in verified["winners_recounted"]] == list(winners)
    # the read models rebuilt from the log (small pages: a voter's ballots split across them) read alike
    before_rebuild = (d.get(cadre, f"/rounds/{rid}"), d.get(voters[0], f"/rounds/{rid}")["my_ballot"])
    rebuild(world.store, page_size=3)
    assert (d.get(cadre, f"/rounds/{rid}"), d.get(voters[0], f"/rounds/{rid}")["my_ballot"]) == before_rebuild
    # once closed: no more ballots, no second close
    assert_error(d.call(voters[1], "PUT", f"/rounds/{rid}/ballot", {"approvals": []}), 409, "round_closed")
    assert_error(d.call(cadre, "POST", f"/rounds/{rid}/close", {}), 409, "round_closed")
    listed = d.get(cadre, f"/communities/{community.id}/rounds")["items"]
    assert [(r["round_id"], r["status"], r["ballots"]) for r in listed] == [(rid, "closed", 10)]

    # published for anyone (共享), counts only: the four-voter bloc's count is below the threshold (5)
    public = d.call(None, "GET", f"/public/rounds/{rid}").json()
    assert not any(v.person_id in json.dumps(public) for v in voters) and "my_ballot" not in public
    assert public["ballots"] == 10 and public["status"] == "closed"
    shown = {names[e["project_id"]]: e for e in public["outcome"]["explanations"]}
    assert [names[w["project_id"]] for w in public["outcome"]["winners"]] == list(winners)
    assert shown["A1"]["approvals"] == 6 and shown["A1"]["label"]["zh"] == explained["A1"]["label"]["zh"]
    assert shown["B1"]["approvals"] is None and shown["B1"]["label"] is None
    assert shown["B1"]["suppressed"] == ["approvals", "label"]
    assert d.call(None, "GET", f"/public/communities/{community.id}/rounds").json()["items"][0]["round_id"] == rid
    assert_error(d.call(None, "GET", "/public/rounds/no-such-round"), 404)


def test_a_round_the_fund_cannot_cover_or_with_bad_input_records_nothing(world):
    community = world.community("pb-refused")
    ids = proposals(world, community, ("A1", "A2"))
    d, cadre = world.d, community.cadre
    before = world.store.last_position()
    path = f"/communities/{community.id}/rounds"
    good = {"title": "太贵的轮次", "budget_fen": 3_000_000, "rule": "mes", "project_ids": list(ids.values()),
            "closes_at": (START + timedelta(days=7)).isoformat()}
    assert_error(d.call(cadre, "POST", path, good), 409, "insufficient_fund")
    for bad, status in [({"rule": "borda"}, 422), ({"budget_fen": 0}, 422), ({"budget_fen": "100"}, 422),
                        ({"project_ids": []}, 422), ({"project_ids": [ids["A1"], ids["A1"]]}, 422),
                        ({"project_ids": ["nope"]}, 404), ({"closes_at": "2026-11-01T00:00:00Z"}, 422),
                        ({"closes_at": "2027-01-01T00:00:00"}, 422), ({"electorate": "everyone"}, 422),
                        ({"max_approvals": 3}, 422), ({"extra": 1}, 422)]:
        assert_error(d.call(cadre, "POST", path, {**good, "budget_fen": 100_000, **bad}), status)
    assert_error(d.call(community.residents[0], "POST", path, {**good, "budget_fen": 100_000}), 403)
    assert world.store.last_position() == before
    assert all(d.get(cadre, f"/projects/{pid}")["allowed_actions"][-1] == "open_vote" for pid in ids.values())


def test_representatives_rounds_and_council_confirmation_reserve_once(world):
    community = world.community("pb-council", round_winners_to_council=1)
    ids = proposals(world, community, ("A1", "A2"))
    d, cadre = world.d, community.cadre
    opened = open_round(world, community, ids, "greedy", electorate="representatives")
    rid = opened["round_id"]
    assert opened["electorate_size"] == len(community.representatives) and opened["confirmation"] == "council"
    assert_error(d.call(community.residents[0], "PUT", f"/rounds/{rid}/ballot", {"approvals": [ids["A1"]]}),
                 403, "not_in_electorate")
    for rep in community.representatives:
        d.ok(rep, "PUT", f"/rounds/{rid}/ballot", {"approvals": [ids["A1"]]})
    balance = community.fund()["balance_fen"]
    closed = d.post(cadre, f"/rounds/{rid}/close", {}, status=200)["round"]
    assert [w["project_id"] for w in closed["outcome"]["winners"]] == [ids["A1"], ids["A2"]] or \
        [w["project_id"] for w in closed["outcome"]["winners"]] == [ids["A1"]]
    winner = d.get(cadre, f"/projects/{ids['A1']}")
    assert winner["phase"] == "deliberation" and winner["allowed_actions"] == ["post_opinion", "open_vote"]
    after_close = community.fund()["balance_fen"]
    assert after_close == balance + BUDGET - sum(w["cost_fen"] for w in closed["outcome"]["winners"])
    # the council's vote reserves nothing more; a rejection returns the round's money to the fund
    d.post(cadre, f"/projects/{ids['A1']}/vote/open", {}, status=200)
    assert community.fund()["balance_fen"] == after_close
    project = d.post(cadre, f"/projects/{ids['A1']}/vote/close", {}, status=200)["project"]
    assert project["stage"] == "rejected"
    assert community.fund()["balance_fen"] == after_close + COST


def test_the_periodic_job_closes_a_round_once_its_closing_time_has_passed(world):
    community = world.community("pb-job")
    ids = proposals(world, community, ("A1",))
    rid = open_round(world, community, ids, "mes")["round_id"]
    world.d.ok(community.residents[0], "PUT", f"/rounds/{rid}/ballot", {"approvals": [ids["A1"]]})
    assert world.job() == "projects: 0 budgeting round(s) closed"
    assert world.d.get(community.cadre, f"/rounds/{rid}")["status"] == "open"
    world.clock.at = START + timedelta(days=14, seconds=1)
    assert world.job() == "projects: 1 budgeting round(s) closed"
    closed = world.d.get(community.cadre, f"/rounds/{rid}")
    assert closed["status"] == "closed" and closed["outcome"]["closed_by"] == "system"
    assert [w["project_id"] for w in closed["outcome"]["winners"]] == [ids["A1"]]
    assert world.job() == "projects: 0 budgeting round(s) closed"
    assert world.d.get(community.cadre, f"/rounds/{rid}/verification")["identical"] is True


def test_a_round_without_ballots_funds_nothing_and_returns_its_budget(world):
    community = world.community("pb-empty")
    ids = proposals(world, community, ("A1",))
    balance = community.fund()["balance_fen"]
    rid = open_round(world, community, ids, "greedy")["round_id"]
    closed = world.d.post(community.cadre, f"/rounds/{rid}/close", {}, status=200)["round"]["outcome"]
    assert closed["winners"] == [] and closed["ballots"] == 0 and closed["inputs_position"] > 0
    assert closed["explanations"][0]["reason"] == "lost_no_approvals"
    assert community.fund()["balance_fen"] == balance
    verified = world.d.get(community.cadre, f"/rounds/{rid}/verification")
    assert verified["identical"] is True and verified["ballots_recounted"] == 0


def test_a_ballot_never_reaches_the_live_feed_and_its_approvals_stay_in_the_service():
    envelope = {"event_id": "e1", "event_type": "RoundBallotCast", "stream_id": "roundballot-r1:p1",
                "data": {"round_id": "r1", "voter_id": "p1", "approvals": ["x"], "revision": 1},
                "metadata": {"actor": "p1"}}
    stored = privacy.for_feed(envelope)
    assert "approvals" not in stored["data"] and "voter_id" not in stored["data"]
    voter = Principal("p1", "居民", frozenset({"resident"}), "c1")
    staff = Principal("s1", "干部", frozenset({"cadre"}), "c1")
    for reader in (voter, staff):
        assert privacy.live_view(envelope, privacy.relations(reader, "c1", holder="p1")) is None
    assert privacy.for_admin(envelope)["data"]["approvals"] is None
    assert privacy.for_admin(envelope)["data"]["voter_id"] == "p1"
