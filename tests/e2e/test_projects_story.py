"""End to end through real HTTP (gunicorn, two workers) on SQLite and PostgreSQL.

1. The seed story (seed 001): on 18 September 2009, 81 residents' representatives of 永兴社区 voted
   on 5 proposed projects; the two leisure-room projects were rejected, three were approved. Here
   the fund reserves each project's request when its vote opens and releases the rejected ones.
2. One project from a proposal by seven residents (proposer + 6 co-signers) to 共享 co_share.
3. After both, ``python -m services.projects rebuild`` gives read models equal to the live ones.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from services.kernel.db import make_engine
from services.projects import views
from tests.support.projects import Community, HttpClient, ProjectsDriver
from tests.support.servers import ROOT, ServiceServer

FUND_FEN = 100_000_000  # 100 万元
SEED_PROJECTS = [
    # title, category, requested fen, (yes, no, abstain) of 81 ballots, expected result
    ("安装背街小巷路灯", "safety", 8_000_000, (62, 12, 7), "approved"),
    ("修建休闲活动室(东区)", "facilities", 20_000_000, (25, 50, 6), "rejected"),
    ("修建休闲活动室(西区)", "facilities", 15_000_000, (40, 35, 6), "rejected"),  # 40 of 81 is not more than half
    ("改造儿童游乐场", "children", 12_000_000, (70, 5, 6), "approved"),
    ("整治小区环境卫生", "environment", 6_000_000, (55, 20, 6), "approved"),
]


@pytest.fixture
def server(database_url, tmp_path):
    instance = ServiceServer("projects", tmp_path, env={"PROJECTS_DATABASE_URL": database_url}).start()
    yield instance
    instance.stop()


def snapshot(database_url: str) -> dict[str, list[tuple]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return {table.name: sorted(tuple(row) for row in connection.execute(sa.select(table)))
                    for projection in views.projections() for table in projection.tables}
    finally:
        engine.dispose()


def rebuild_command(server: ServiceServer) -> str:
    result = subprocess.run([sys.executable, "-m", "services.projects", "rebuild"], cwd=ROOT, env=server.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_seed_story_81_representatives_5_projects_3_approved_2_rejected(server, database_url):
    driver = ProjectsDriver(HttpClient(server.base_url))
    yongxing = Community(driver, "yongxing", representatives=81, residents=12, fund_fen=FUND_FEN)
    assert driver.get(yongxing.cadre, "/communities/yongxing")["representative_count"] == 81

    ids = []
    for index, (title, category, requested, _votes, _result) in enumerate(SEED_PROJECTS):
        project = yongxing.propose(yongxing.residents[index], title=title, category=category,
                                   estimated_cost_fen=requested + 1_000_000, requested_fen=requested)
        for person in yongxing.residents[6:12]:  # six other residents co-sign each
            driver.post(person, f"/projects/{project['project_id']}/cosignatures")
        ids.append(project["project_id"])
        assert driver.get(person, f"/projects/{project['project_id']}")["phase"] == "deliberation"

    for project_id in ids:
        driver.post(yongxing.cadre, f"/projects/{project_id}/vote/open", {}, status=200)
    total_requested = sum(p[2] for p in SEED_PROJECTS)
    assert yongxing.fund()["balance_fen"] == FUND_FEN - total_requested
    assert yongxing.fund()["reserved_fen"] == total_requested

    def cast(args):
        person, project_id, choice = args
        return driver.call(person, "POST", f"/projects/{project_id}/vote/ballots", {"choice": choice}).status_code

    ballots = []
    for project_id, (_t, _c, _r, (yes, no, abstain), _res) in zip(ids, SEED_PROJECTS):
        choices = ["yes"] * yes + ["no"] * no + ["abstain"] * abstain
        ballots += [(rep, project_id, choice) for rep, choice in zip(yongxing.representatives, choices)]
    with ThreadPoolExecutor(max_workers=8) as pool:  # representatives vote at the same time
        statuses = list(pool.map(cast, ballots))
    assert statuses == [201] * 405
    # A second ballot is refused and a stranger may not vote.
    assert driver.call(yongxing.representatives[0], "POST", f"/projects/{ids[0]}/vote/ballots",
                       {"choice": "no"}).status_code == 409
    assert driver.call(yongxing.residents[0], "POST", f"/projects/{ids[0]}/vote/ballots",
                       {"choice": "yes"}).status_code == 403

    results = {}
    for project_id, (title, _c, requested, (yes, no, abstain), expected) in zip(ids, SEED_PROJECTS):
        project = driver.post(yongxing.cadre, f"/projects/{project_id}/vote/close", {}, status=200)["project"]
        tally = project["vote"]["tally"]
        assert (tally["electorate_size"], tally["ballots"], tally["quorum_required"]) == (81, 81, 54)
        assert (tally["yes"], tally["no"], tally["abstain"], tally["quorum_met"]) == (yes, no, abstain, True)
        assert tally["result"] == expected, (title, tally)
        assert project["stage"] == ("co_build" if expected == "approved" else "rejected")
        results[title] = expected
    assert sorted(results.values()) == ["approved"] * 3 + ["rejected"] * 2
    assert all(results[t] == "rejected" for t in results if "休闲活动室" in t)

    approved = sum(p[2] for p in SEED_PROJECTS if p[4] == "approved")
    fund = yongxing.fund()
    assert fund["balance_fen"] == FUND_FEN - approved
    assert fund["reserved_fen"] == approved
    assert fund["released_fen"] == total_requested - approved
    kinds = [entry["kind"] for entry in fund["ledger"]]
    assert kinds.count("credit") == 1 and kinds.count("reservation") == 5 and kinds.count("release") == 2
    assert fund["ledger"][-1]["balance_after_fen"] == fund["balance_fen"]

    stats = driver.get(yongxing.cadre, "/communities/yongxing/stats")
    assert stats["projects_per_stage"]["co_build"] == 3 and stats["projects_per_stage"]["rejected"] == 2
    assert stats["votes"] == {"approved": 3, "rejected": 2, "approval_rate": 0.6}
    history = driver.get(yongxing.cadre, f"/projects/{ids[1]}/history")["events"]
    assert [e["event_type"] for e in history[-2:]] == ["CouncilVoteClosed", "ProjectRejected"]
    assert history[-1]["label"] == {"zh": "项目被否决", "en": "project rejected"}

    live = snapshot(database_url)
    assert "rebuilt" in rebuild_command(server)
    assert snapshot(database_url) == live


def test_a_project_from_seven_residents_to_co_share(server, database_url):
    d = ProjectsDriver(HttpClient(server.base_url))
    c = Community(d, "haihong", representatives=9, residents=10, fund_fen=5_000_000)
    proposer, cosigners = c.residents[0], c.residents[1:7]
    project = c.propose(proposer, title="楼道加装扶手", category="elderly_care", estimated_cost_fen=1_200_000,
                        requested_fen=1_000_000)
    pid = project["project_id"]
    for i, person in enumerate(cosigners, start=1):
        project = d.post(person, f"/projects/{pid}/cosignatures")["project"]
        assert project["phase"] == ("deliberation" if i == 6 else "collecting_cosigners")
    d.post(c.residents[8], f"/projects/{pid}/opinions", {"stance": "support", "text": "老人上下楼更安全"})
    d.post(c.residents[9], f"/projects/{pid}/opinions", {"stance": "oppose", "text": "先修电梯更好"})
    d.post(proposer, f"/projects/{pid}/amendments", {"requested_fen": 900_000, "reason": "居民自筹一部分"})
    d.post(c.cadre, f"/projects/{pid}/vote/open", {"responsible_unit": {"unit_id": "haihong-jwh",
                                                                        "name": "海虹社区居委会"}}, status=200)
    assert c.fund()["balance_fen"] == 5_000_000 - 900_000
    for rep in c.representatives[:7]:
        d.post(rep, f"/projects/{pid}/vote/ballots", {"choice": "yes"})
    d.post(c.representatives[7], f"/projects/{pid}/vote/ballots", {"choice": "abstain"})
    project = d.post(c.cadre, f"/projects/{pid}/vote/close", {}, status=200)["project"]
    assert project["stage"] == "co_build"

    labour = d.post(c.residents[3], f"/projects/{pid}/pledges", {"kind": "labour", "labour_minutes": 240})
    company = d.post(c.cadre, f"/projects/{pid}/pledges", {
        "kind": "materials", "materials_fen": 300_000, "description": "不锈钢扶手 40 米",
        "contributor": {"contributor_id": "acme-steel", "name": "海沧钢材公司", "type": "enterprise"}})
    d.post(c.grid_worker, f"/projects/{pid}/pledges/{labour['created_id']}/deliveries",
           {"labour_minutes": 210, "note": "实际 3.5 小时"})
    d.post(c.grid_worker, f"/projects/{pid}/pledges/{company['created_id']}/deliveries", {"materials_fen": 300_000})
    d.post(c.cadre, f"/projects/{pid}/spending", {"amount_fen": 600_000, "receipt_ref": "FP-2026-0012",
                                                  "description": "安装人工"})
    d.post(c.grid_worker, f"/projects/{pid}/milestones", {"progress": 50, "note": "一至三楼完成"})
    d.post(c.cadre, f"/projects/{pid}/milestones", {"progress": 100, "note": "全部完成"})
    project = d.post(c.cadre, f"/projects/{pid}/completion", {}, status=200)["project"]
    assert project["stage"] == "co_manage"
    assert c.fund()["balance_fen"] == 5_000_000 - 600_000  # the unspent 300_000 went back

    d.post(c.cadre, f"/projects/{pid}/maintainers", {"maintainer_id": c.residents[4].person_id, "name": "居民4",
                                                     "kind": "resident", "duty": "每周检查扶手", "rota": "每周六"})
    d.post(c.residents[4], f"/projects/{pid}/maintenance-logs", {"note": "螺丝紧固",
                                                                  "performed_at": "2026-11-21T02:00:00Z"})
    problem = d.post(c.residents[5], f"/projects/{pid}/problems", {"description": "二楼扶手松动"})
    project = d.post(c.residents[4], f"/projects/{pid}/problems/{problem['created_id']}/resolution",
                     {"resolution": "已加固"})["project"]
    assert project["problems"][0]["resolution_seconds"] >= 0

    project = d.post(c.cadre, f"/projects/{pid}/evaluation/open", {}, status=200)["project"]
    assert project["stage"] == "co_evaluate"
    for person, score in zip(c.residents[:5], (5, 5, 4, 4, 3)):
        d.post(person, f"/projects/{pid}/evaluation/ratings", {"score": score})
    project = d.post(c.cadre, f"/projects/{pid}/evaluation/close", {}, status=200)["project"]
    assert project["stage"] == "co_share" and project["evaluation"]["average"] == 4.2
    project = d.post(c.cadre, f"/projects/{pid}/results", {"benefits": "120 户老人上下楼更安全"})["project"]
    results = project["results"]
    assert results["contributions"]["labour_minutes"] == 210 and results["contributions"]["materials_fen"] == 300_000
    assert results["by_contributor_type"]["enterprise"]["materials_fen"] == 300_000
    assert results["spent_fen"] == 600_000 and results["evaluation"] == {"count": 5, "average": 4.2}
    project = d.post(c.cadre, f"/projects/{pid}/rewards", {"recipient_id": "acme-steel", "amount_fen": 50_000,
                                                           "reason": "以奖代补:捐赠扶手材料"})["project"]
    assert project["rewards"][0]["recipient_name"] == "海沧钢材公司"
    fund = c.fund()
    assert fund["balance_fen"] == 5_000_000 - 600_000 - 50_000
    assert [e["kind"] for e in fund["ledger"]] == ["credit", "reservation", "spending", "release", "reward"]
    assert [e["event_type"] for e in d.get(c.cadre, f"/projects/{pid}/history")["events"]][-1] == "RewardGranted"
    assert d.get(c.residents[3], "/me/pledges")["items"][0]["delivered"] == 210

    live = snapshot(database_url)
    rebuild_command(server)
    assert snapshot(database_url) == live

