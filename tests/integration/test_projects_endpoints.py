"""Every endpoint of the projects API over Flask's test client, with its refusals in the one error
shape — 401, 403, 404, 409 with the reason, 412 for a stale If-Match, 422 naming the fields — and
after each refusal, nothing stored has changed. Key cases run on PostgreSQL too."""

from __future__ import annotations

import pytest

from services.kernel.service import create_service_app, load_settings
from services.projects.service import DEFINITION
from tests.conftest import TEST_SECRET
from tests.support.errors import assert_error
from tests.support.projects import Community, FlaskClient, Person, ProjectsDriver


def driver_for(url: str) -> ProjectsDriver:
    settings = load_settings(DEFINITION, environ={"COCREATE_JWT_SECRET": TEST_SECRET}, database_url=url)
    return ProjectsDriver(FlaskClient(create_service_app(DEFINITION, settings).test_client()))


@pytest.fixture
def d(sqlite_url) -> ProjectsDriver:
    return driver_for(sqlite_url)


@pytest.fixture
def both(database_url) -> ProjectsDriver:
    return driver_for(database_url)


refused = assert_error


def snapshot(d: ProjectsDriver, c: Community, pid: str | None = None) -> tuple:
    project = d.get(c.cadre, f"/projects/{pid}") if pid else None
    return (project["version"] if project else None, c.fund()["balance_fen"], c.fund()["reserved_fen"])


# -- communities and the fund --------------------------------------------------------------------

def test_communities_grids_representatives_settings_and_refusals(d):
    c = Community(d, "haicang", representatives=3)
    assert [x["community_id"] for x in d.get(c.cadre, "/communities")["items"]] == ["haicang"]
    grids = d.post(c.cadre, "/communities/haicang/grids", {"grid_id": "g3", "name": "第三网格"}, status=200)["grids"]
    assert {"g1", "g2", "g3"} <= {g["grid_id"] for g in grids} if isinstance(grids, list) else "g3" in grids
    refused(d.call(c.cadre, "POST", "/communities/haicang/grids", {"grid_id": "g3", "name": "x"}), 409,
            "duplicate_grid")
    settings = d.ok(c.cadre, "PATCH", "/communities/haicang/settings", {"cosigners_required": 4})["settings"]
    assert settings["cosigners_required"] == 4 and settings["quorum_numerator"] == 2
    refused(d.call(c.cadre, "PATCH", "/communities/haicang/settings", {"cosigners": 4}), 422)
    refused(d.call(c.residents[0], "PATCH", "/communities/haicang/settings", {"cosigners_required": 1}), 403,
            "role_required")
    other = Person("jimei-cadre", "集美干部", ("cadre",), "jimei")
    refused(d.call(other, "PUT", "/communities/haicang/representatives", {"representatives": []}), 403,
            "other_community")
    community = d.get(c.cadre, "/communities/haicang")
    assert len(community["representatives"]) == 3 and community["settings"]["cosigners_required"] == 4
    refused(d.call(c.admin, "POST", "/communities", {"community_id": "haicang", "name": "again"}), 409,
            "already_registered")
    refused(d.call(c.cadre, "POST", "/communities", {"community_id": "new", "name": "新"}), 403, "role_required")
    refused(d.call(c.admin, "POST", "/communities", {"community_id": "bad id!", "name": "x"}), 422)
    refused(d.call(c.admin, "GET", "/communities/nowhere"), 404)
    refused(d.call(c.cadre, "GET", "/communities/nowhere"), 403, "other_community")
    refused(d.call(None, "GET", "/communities"), 401)
    # If-Match on a community command: a stale version is 412 and changes nothing.
    stale = d.call(c.cadre, "PATCH", "/communities/haicang/settings", {"cosigners_required": 5},
                   headers={"If-Match": '"1"'})
    refused(stale, 412)
    assert d.get(c.cadre, "/communities/haicang")["settings"]["cosigners_required"] == 4


def test_fund_credits_ledger_and_refusals(both):
    d = both
    c = Community(d, "fund-c", fund_fen=0)
    d.post(c.cadre, "/communities/fund-c/fund/credits", {"amount_fen": 500_000, "source": "donation",
                                                         "reference": "企业捐赠"})
    d.post(c.cadre, "/communities/fund-c/fund/credits", {"amount_fen": 300_000, "source": "reward_pool"})
    fund = c.fund()
    assert fund["balance_fen"] == 800_000
    assert [(e["kind"], e["detail"], e["amount_fen"], e["balance_after_fen"]) for e in fund["ledger"]] == [
        ("credit", "donation 企业捐赠", 500_000, 500_000), ("credit", "reward_pool", 300_000, 800_000)]
    for body in ({"amount_fen": 0, "source": "donation"}, {"amount_fen": 100, "source": "lottery"},
                 {"amount_fen": 1.5, "source": "donation"}, {"source": "donation"}):
        refused(d.call(c.cadre, "POST", "/communities/fund-c/fund/credits", body), 422)
    refused(d.call(c.residents[0], "POST", "/communities/fund-c/fund/credits",
                   {"amount_fen": 100, "source": "donation"}), 403, "role_required")
    assert c.fund()["balance_fen"] == 800_000
    page = d.get(c.cadre, "/communities/fund-c/fund?limit=1")
    assert len(page["ledger"]) == 1 and d.get(c.cadre, f"/communities/fund-c/fund?after={page['next_after']}")[
        "ledger"][0]["detail"] == "reward_pool"
    refused(d.call(c.admin, "GET", "/communities/nowhere/fund"), 404)


# -- 共谋 -----------------------------------------------------------------------------------------

def test_propose_list_filter_search_and_paginate(d):
    c = Community(d, "list-c")
    ids = [c.propose(title=f"项目{i}", category="greening" if i % 2 else "safety")["project_id"] for i in range(5)]
    c.propose(c.residents[1], title="安装路灯", grid_id="g2", category="safety")
    assert d.get(c.cadre, "/projects?community_id=list-c")["total"] == 6
    assert {p["project_id"] for p in d.get(c.cadre, "/projects?category=greening")["items"]} == {ids[1], ids[3]}
    assert [p["title"] for p in d.get(c.cadre, "/projects?grid_id=g2")["items"]] == ["安装路灯"]
    assert [p["title"] for p in d.get(c.cadre, "/projects?q=路灯")["items"]] == ["安装路灯"]
    first, second = (d.get(c.cadre, f"/projects?community_id=list-c&per_page=4&page={n}") for n in (1, 2))
    assert len(first["items"]) == 4 and len(second["items"]) == 2
    assert not {p["project_id"] for p in first["items"]} & {p["project_id"] for p in second["items"]}
    assert d.get(c.cadre, "/projects?stage=co_build")["total"] == 0
    refused(d.call(c.cadre, "GET", "/projects?stage=flying"), 422)
    mine = d.get(c.residents[0], "/me/proposals")["items"]
    assert len(mine) == 5 and all(p["proposer_id"] == c.residents[0].person_id for p in mine)


def test_proposal_refusals(d):
    c = Community(d, "prop-c")
    good = {"community_id": "prop-c", "grid_id": "g1", "title": "t", "description": "d", "category": "other",
            "estimated_cost_fen": 100, "requested_fen": 100}
    body = refused(d.call(c.residents[0], "POST", "/projects", {**good, "budget": 5}), 422)
    assert body["errors"]["json"] == {"budget": ["Unknown field."]}
    body = refused(d.call(c.residents[0], "POST", "/projects", {**good, "title": "", "requested_fen": -1}), 422)
    assert {"title", "requested_fen"} <= set(body["errors"]["json"])
    refused(d.call(c.residents[0], "POST", "/projects", {**good, "requested_fen": 101}), 422, "invalid_proposal")
    refused(d.call(c.residents[0], "POST", "/projects", {**good, "grid_id": "g9"}), 422, "unknown_grid")
    refused(d.call(c.residents[0], "POST", "/projects", {**good, "community_id": "nowhere"}), 422)
    refused(d.call(c.cadre, "POST", "/projects", good), 403, "role_required")
    stranger = Person("s1", "外人", ("resident",), "jimei")
    refused(d.call(stranger, "POST", "/projects", good), 403, "other_community")
    refused(d.call(None, "POST", "/projects", good), 401)
    assert d.get(c.cadre, "/projects")["total"] == 0


def test_cosign_opinions_amend_withdraw_and_their_refusals(d):
    c = Community(d, "plan-c")
    pid = c.propose()["project_id"]
    path = f"/projects/{pid}"
    refused(d.call(c.residents[0], "POST", f"{path}/cosignatures"), 409, "self_cosign")
    refused(d.call(c.residents[1], "POST", f"{path}/opinions", {"stance": "support", "text": "好"}), 409, "wrong_stage")
    c.qualify(pid)
    project = d.get(c.cadre, path)
    assert project["phase"] == "deliberation" and project["cosigner_count"] == 6
    refused(d.call(c.residents[1], "POST", f"{path}/cosignatures"), 409, "already_cosigned")
    opinion = d.post(c.residents[8], f"{path}/opinions", {"stance": "oppose", "text": "太贵"})
    assert opinion["created_id"] and opinion["project"]["opinion_stances"]["oppose"] == 1
    refused(d.call(c.residents[8], "POST", f"{path}/opinions", {"stance": "angry", "text": "x"}), 422)
    refused(d.call(c.residents[1], "POST", f"{path}/amendments", {"title": "x", "reason": "r"}), 403, "not_proposer")
    refused(d.call(c.residents[0], "POST", f"{path}/amendments", {"title": "x"}), 422)
    amended = d.post(c.residents[0], f"{path}/amendments", {"requested_fen": 2_000_000, "reason": "自筹"})["project"]
    assert amended["requested_fen"] == 2_000_000 and [r["revision"] for r in amended["revisions"]] == [0, 1]
    refused(d.call(c.residents[1], "POST", f"{path}/withdrawal", {"reason": "x"}), 403, "not_proposer")
    version = d.get(c.cadre, path)["version"]
    withdrawn = d.post(c.residents[0], f"{path}/withdrawal", {"reason": "明年再议"}, status=200)["project"]
    assert withdrawn["stage"] == "withdrawn" and withdrawn["version"] == version + 1
    body = refused(d.call(c.residents[9], "POST", f"{path}/cosignatures"), 409, "wrong_stage")
    assert body["errors"]["allowed_actions"] == []
    refused(d.call(c.residents[1], "POST", "/projects/nope/cosignatures"), 404)


def test_vote_open_ballots_close_with_fund_and_refusals(both):
    d = both
    c = Community(d, "vote-c", representatives=5, fund_fen=2_000_000)
    pid = c.propose(requested_fen=3_000_000)["project_id"]
    c.qualify(pid)
    path = f"/projects/{pid}"
    refused(d.call(c.residents[0], "POST", f"{path}/vote/open", {}), 403, "role_required")
    before = snapshot(d, c, pid)
    body = refused(d.call(c.cadre, "POST", f"{path}/vote/open", {}), 409, "insufficient_fund")
    assert body["errors"]["balance_fen"] == 2_000_000 and "insufficient" in body["message"]
    assert snapshot(d, c, pid) == before
    d.post(c.cadre, "/communities/vote-c/fund/credits", {"amount_fen": 2_000_000, "source": "government_allocation"})
    opened = d.post(c.cadre, f"{path}/vote/open", {"responsible_unit": {"unit_id": "jwh", "name": "居委会"}},
                    status=200)["project"]
    assert opened["phase"] == "voting" and c.fund()["reserved_fen"] == 3_000_000
    refused(d.call(c.residents[0], "POST", f"{path}/vote/ballots", {"choice": "yes"}), 403, "role_required")
    refused(d.call(c.representatives[0], "POST", f"{path}/vote/ballots", {"choice": "maybe"}), 422)
    for rep, choice in zip(c.representatives, ("yes", "yes", "no", "abstain")):
        d.post(rep, f"{path}/vote/ballots", {"choice": choice})
    refused(d.call(c.representatives[0], "POST", f"{path}/vote/ballots", {"choice": "no"}), 409, "already_voted")
    refused(d.call(c.grid_worker, "POST", f"{path}/vote/close", {}), 403, "role_required")
    closed = d.post(c.cadre, f"{path}/vote/close", {}, status=200)["project"]
    tally = closed["vote"]["tally"]
    assert (tally["electorate_size"], tally["ballots"], tally["yes"], tally["no"], tally["abstain"]) == (5, 4, 2, 1, 1)
    assert (tally["quorum_required"], tally["quorum_met"], tally["result"]) == (4, True, "rejected")
    assert closed["stage"] == "rejected" and c.fund()["balance_fen"] == 4_000_000  # 2 of 4 is not more than half
    refused(d.call(c.cadre, "POST", f"{path}/vote/close", {}), 409, "wrong_stage")


def test_etag_and_stale_if_match(both):
    d = both
    c = Community(d, "etag-c")
    pid = c.propose()["project_id"]
    reply = d.call(c.cadre, "GET", f"/projects/{pid}")
    assert reply.headers["ETag"] == '"1"'
    refused(d.call(c.residents[1], "POST", f"/projects/{pid}/cosignatures", {}, headers={"If-Match": '"7"'}), 412)
    ok = d.call(c.residents[1], "POST", f"/projects/{pid}/cosignatures", {}, headers={"If-Match": '"1"'})
    assert ok.status_code == 201 and ok.headers["ETag"] == '"2"'
    refused(d.call(c.residents[2], "POST", f"/projects/{pid}/cosignatures", {}, headers={"If-Match": '"1"'}), 412)
    refused(d.call(c.residents[2], "POST", f"/projects/{pid}/cosignatures", {}, headers={"If-Match": "abc"}), 422)
    assert d.get(c.cadre, f"/projects/{pid}")["cosigner_count"] == 1


# -- 共建 共管 共评 共享 and the queries -------------------------------------------------------------

def test_every_later_stage_endpoint_with_refusals_history_as_of_and_stats(d):
    c = Community(d, "life-c", fund_fen=10_000_000)
    project = c.approved_project(title="楼道扶手")
    pid, path = project["project_id"], f"/projects/{project['project_id']}"
    labour = d.post(c.residents[3], f"{path}/pledges", {"kind": "labour", "labour_minutes": 240})["created_id"]
    refused(d.call(c.residents[3], "POST", f"{path}/pledges", {"kind": "labour", "money_fen": 5}), 422,
            "invalid_amounts")
    refused(d.call(c.residents[3], "POST", f"{path}/pledges/{labour}/deliveries", {"labour_minutes": 60}), 403,
            "role_required")
    refused(d.call(c.grid_worker, "POST", f"{path}/pledges/nope/deliveries", {"labour_minutes": 60}), 422,
            "unknown_pledge")
    d.post(c.grid_worker, f"{path}/pledges/{labour}/deliveries", {"labour_minutes": 200, "note": "实际 200 分钟"})
    [mine] = d.get(c.residents[3], "/me/pledges")["items"]
    assert (mine["kind"], mine["pledged"], mine["delivered"], mine["unit"]) == ("labour", 240, 200, "minutes")
    before = snapshot(d, c, pid)
    refused(d.call(c.cadre, "POST", f"{path}/spending", {"amount_fen": 4_000_000, "receipt_ref": "FP"}), 409,
            "reservation_exceeded")
    assert snapshot(d, c, pid) == before
    d.post(c.cadre, f"{path}/spending", {"amount_fen": 1_000_000, "receipt_ref": "FP-1", "description": "材料"})
    d.post(c.grid_worker, f"{path}/milestones", {"progress": 60, "note": "过半"})
    refused(d.call(c.grid_worker, "POST", f"{path}/milestones", {"progress": 50, "note": "x"}), 409,
            "progress_backwards")
    refused(d.call(c.cadre, "POST", f"{path}/completion", {}), 409, "not_finished")
    d.post(c.cadre, f"{path}/milestones", {"progress": 100, "note": "完工"})
    done = d.post(c.cadre, f"{path}/completion", {}, status=200)["project"]
    assert done["stage"] == "co_manage" and c.fund()["reserved_fen"] == 0  # the unspent 2,000,000 went back
    maintainer = c.residents[4]
    d.post(c.cadre, f"{path}/maintainers", {"maintainer_id": maintainer.person_id, "name": "居民4",
                                            "kind": "resident", "duty": "巡查", "rota": "每周六"})
    refused(d.call(c.cadre, "POST", f"{path}/maintainers", {"maintainer_id": maintainer.person_id, "name": "x",
                                                            "kind": "resident", "duty": "x"}), 409,
            "already_maintainer")
    d.post(maintainer, f"{path}/maintenance-logs", {"note": "紧固", "performed_at": "2026-11-21T02:00:00Z"})
    refused(d.call(c.residents[6], "POST", f"{path}/maintenance-logs",
                   {"note": "x", "performed_at": "2026-11-21T02:00:00Z"}), 403, "role_required")
    refused(d.call(maintainer, "POST", f"{path}/maintenance-logs", {"note": "x", "performed_at": "yesterday"}), 422)
    problem = d.post(c.residents[5], f"{path}/problems", {"description": "扶手松动"})["created_id"]
    solved = d.post(maintainer, f"{path}/problems/{problem}/resolution", {"resolution": "已加固"})["project"]
    assert solved["problems"][0]["resolution_seconds"] >= 0
    refused(d.call(maintainer, "POST", f"{path}/problems/{problem}/resolution", {"resolution": "x"}), 409,
            "already_resolved")
    refused(d.call(c.residents[0], "POST", f"{path}/evaluation/ratings", {"score": 5}), 409, "wrong_stage")
    d.post(c.cadre, f"{path}/evaluation/open", {"responsible_unit": {"unit_id": "jwh", "name": "居委会"}}, status=200)
    for person, score in zip(c.residents[:3], (5, 4, 3)):
        d.post(person, f"{path}/evaluation/ratings", {"score": score, "comment": "好"})
    refused(d.call(c.residents[0], "POST", f"{path}/evaluation/ratings", {"score": 1}), 409, "already_rated")
    refused(d.call(c.residents[5], "POST", f"{path}/evaluation/ratings", {"score": 6}), 422)
    closed = d.post(c.cadre, f"{path}/evaluation/close", {}, status=200)["project"]
    assert closed["stage"] == "co_share" and closed["evaluation"]["average"] == 4.0
    results = d.post(c.cadre, f"{path}/results", {"benefits": "老人上下楼更安全"})["project"]["results"]
    assert results["spent_fen"] == 1_000_000 and results["contributions"]["labour_minutes"] == 200
    refused(d.call(c.cadre, "POST", f"{path}/results", {"benefits": "again"}), 409, "wrong_stage")
    balance = c.fund()["balance_fen"]
    d.post(c.cadre, f"{path}/rewards", {"recipient_id": c.residents[3].person_id, "amount_fen": 20_000,
                                        "reason": "义务劳动 以奖代补"})
    refused(d.call(c.cadre, "POST", f"{path}/rewards", {"recipient_id": "nobody", "amount_fen": 1, "reason": "x"}),
            422, "not_a_contributor")
    assert c.fund()["balance_fen"] == balance - 20_000

    # The history: every event labelled; raters named to the community's staff (and themselves) only.
    staff_view = d.get(c.cadre, f"{path}/history")["events"]
    resident_view = d.get(c.residents[9], f"{path}/history")["events"]
    rated = [e for e in staff_view if e["event_type"] == "ProjectRated"]
    assert len(rated) == 3 and rated[0]["actor"] == c.residents[0].person_id and rated[0]["data"]["person_id"]
    hidden = [e for e in resident_view if e["event_type"] == "ProjectRated"]
    assert all(e["actor"] is None and e["data"]["person_id"] is None for e in hidden)
    proposed = staff_view[0]
    assert proposed["event_type"] == "ProjectProposed"
    assert proposed["label"] == {"zh": "提出项目", "en": "project proposed"}
    assert all(e["label"]["zh"] != e["event_type"] for e in staff_view), "every event has a Chinese label"
    # As of a version and of an instant, by replay.
    early = d.get(c.cadre, f"{path}/as-of?version=1")
    assert early["stage"] == "co_plan" and early["version"] == 1
    refused(d.call(c.cadre, "GET", f"{path}/as-of?at=2000-01-01T00:00:00Z"), 404)
    refused(d.call(c.cadre, "GET", f"{path}/as-of?at=2026-01-01T00:00:00"), 422)  # no time zone
    stats = d.get(c.cadre, "/communities/life-c/stats")
    assert stats["projects_per_stage"]["co_share"] == 1 and stats["votes"]["approved"] == 1
    assert stats["contributions"]["labour_minutes"] == 200 and stats["fund"]["spent_fen"] == 1_000_000
    refused(d.call(c.cadre, "GET", "/projects/nope/history"), 404)
    refused(d.call(c.admin, "GET", "/communities/nowhere/stats"), 404)
