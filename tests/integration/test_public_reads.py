"""Public reads (共享 transparency) through the gateway, with no token: the three services under
gunicorn, the gateway in this process in front of them.

A community is written through the gateway with tokens — a project taken from proposal to
published results (opinions, an amendment, a council vote with one "no", pledges of a volunteer
with a phone on their card and of an enterprise, spending, milestones, a maintainer, a problem,
six evaluations, a reward), a small proposal, an approved one, a donation, and a published ranking
of two cadres — with private values planted in it: every person id (all start with the community
id), residents' and contributors' names, the phone, opinion, problem, maintenance and evaluation
texts, a satisfaction rating's comment, a donor and a receipt. Then every public read is read with
no token and none of those strings may appear; small counts are suppressed; the routes still
refuse what they refuse (422, 404) in the one error shape; every other route still needs a token;
and a route is public exactly when its service's document says so.
"""

from __future__ import annotations

import json
import urllib.request
from datetime import timedelta

import pytest

from gateway.catalogue import PREFIX, save_document
from services.kernel.events import utc_now
from services.feedback.service import DEFINITION as FEEDBACK
from services.projects.service import DEFINITION as PROJECTS
from tests.support.apps import container, driver, gateway_app, service_app
from tests.support.errors import assert_error
from tests.support.projects import Community, FlaskClient, Person, ProjectsDriver

SERVICES = ("projects", "volunteers", "feedback")
UNIT = {"unit_id": "jsb", "name": "街道建设办"}
PHONE = "13912345678"
TEXTS = {  # planted private texts: none may reach a visitor
    "opinion": "反对占用绿地-意见原文", "amendment": "修改原因-原文", "problem": "路灯闪烁-问题原文",
    "resolution": "已更换灯泡-处理原文", "maintenance": "管护记录-原文", "evaluation": "灯光太暗-评议原文",
    "rating": "态度冷淡-评价原文", "donor": "林秀凤女士捐赠", "donation": "捐赠回执-DN-5521",
    "receipt": "发票-NO-778899", "spending": "购买灯具-支出说明", "contributor": "鑫达建材有限公司",
    "maintainer": "楼道互助小组甲", "reward": "以奖代补原因-原文", "pledge": "认捐说明-原文",
    "volunteer": "志愿者林甲", "withdrawal": "撤回原因-原文",
}
BENEFITS = "夜间照明改善,惠及三百户"


class Public:
    """The gateway's test client with the /api/v1 prefix, in the driver's call shape."""

    def __init__(self, app) -> None:
        self.client = FlaskClient(app.test_client())

    def request(self, method, path, json_body=None, headers=None):
        return self.client.request(method, PREFIX + path, json_body, headers)


def gateway(services, directory, **environ):
    return gateway_app(COCREATE_DATA_DIR=str(directory), GATEWAY_UPSTREAM_TIMEOUT_SECONDS="30",
                       **{f"GATEWAY_{name.upper()}_URL": server.base_url for name, server in services.items()},
                       **environ)


@pytest.fixture(scope="module")
def world(services, tmp_path_factory):
    app = gateway(services, tmp_path_factory.mktemp("public-gateway"), GATEWAY_RATE_LIMIT_PER_CALLER="0",
                  GATEWAY_RATE_LIMIT_PER_IP="0")
    d = ProjectsDriver(Public(app))
    return {"app": app, "d": d, **scenario(d)}


def scenario(d: ProjectsDriver) -> dict:
    c = Community(d, "pubsq")
    cadre, grid, residents, reps = c.cadre, c.grid_worker, c.residents, c.representatives
    volunteer = Person("pubsq-vol", TEXTS["volunteer"], ("volunteer", "resident"), c.id)
    d.post(volunteer, "/cards", {"name": volunteer.name, "community_id": c.id, "phone": PHONE})
    d.post(cadre, f"/communities/{c.id}/fund/credits", {"amount_fen": 50_000, "source": "donation",
                                                        "reference": TEXTS["donation"], "note": TEXTS["donor"]})
    # Project A: from proposal to published results.
    a = c.propose(title="背街小巷路灯", category="safety", description="背街小巷夜间无照明")["project_id"]
    c.qualify(a)
    d.post(residents[7], f"/projects/{a}/opinions", {"stance": "oppose", "text": TEXTS["opinion"]})
    d.post(residents[0], f"/projects/{a}/amendments", {"location": "永兴路 12 巷", "reason": TEXTS["amendment"]})
    d.post(cadre, f"/projects/{a}/vote/open", {"responsible_unit": UNIT}, status=200)
    for rep, choice in zip(reps, ["yes"] * 8 + ["no"]):
        d.post(rep, f"/projects/{a}/vote/ballots", {"choice": choice})
    d.post(cadre, f"/projects/{a}/vote/close", {}, status=200)
    labour = d.post(volunteer, f"/projects/{a}/pledges", {"kind": "labour", "labour_minutes": 120,
                                                         "description": TEXTS["pledge"]})["created_id"]
    money = d.post(cadre, f"/projects/{a}/pledges", {"kind": "money", "money_fen": 200_000, "contributor": {
        "contributor_id": "xinda", "name": TEXTS["contributor"], "type": "enterprise"}})["created_id"]
    d.post(grid, f"/projects/{a}/pledges/{labour}/deliveries", {"labour_minutes": 120})
    d.post(grid, f"/projects/{a}/pledges/{money}/deliveries", {"money_fen": 200_000})
    d.post(cadre, f"/projects/{a}/spending", {"amount_fen": 100_000, "receipt_ref": TEXTS["receipt"],
                                              "description": TEXTS["spending"]})
    d.post(grid, f"/projects/{a}/milestones", {"progress": 50, "note": "灯杆基础完工"})
    d.post(grid, f"/projects/{a}/milestones", {"progress": 100, "note": "路灯全部安装"})
    d.post(cadre, f"/projects/{a}/completion", {}, status=200)
    keeper = residents[9]
    d.post(grid, f"/projects/{a}/maintainers", {"maintainer_id": keeper.person_id, "name": TEXTS["maintainer"],
                                                "kind": "group", "duty": "每周巡查", "members": [keeper.person_id]})
    d.post(keeper, f"/projects/{a}/maintenance-logs", {"note": TEXTS["maintenance"],
                                                       "performed_at": utc_now().isoformat()})
    problem = d.post(residents[10], f"/projects/{a}/problems", {"description": TEXTS["problem"]})["created_id"]
    d.post(grid, f"/projects/{a}/problems/{problem}/resolution", {"resolution": TEXTS["resolution"]})
    d.post(cadre, f"/projects/{a}/evaluation/open", {}, status=200)
    for i, rater in enumerate(residents[1:7]):
        d.post(rater, f"/projects/{a}/evaluation/ratings",
               {"score": 4, "comment": TEXTS["evaluation"] if i == 0 else ""})
    d.post(cadre, f"/projects/{a}/evaluation/close", {}, status=200)
    d.post(cadre, f"/projects/{a}/results", {"benefits": BENEFITS})
    d.post(cadre, f"/projects/{a}/rewards", {"recipient_id": volunteer.person_id, "amount_fen": 10_000,
                                             "reason": TEXTS["reward"]})
    # Project B: two co-signatures so far (a small count). C: approved by all nine. D: withdrawn.
    b = c.propose(proposer=residents[11], title="儿童游乐设施", category="children", grid_id="g2")["project_id"]
    for person in residents[1:3]:
        d.post(person, f"/projects/{b}/cosignatures")
    project_c = c.approved_project(title="垃圾分类亭", category="environment")["project_id"]
    withdrawn = c.propose(proposer=residents[5], title="停车位划线", category="parking")["project_id"]
    d.post(residents[5], f"/projects/{withdrawn}/withdrawal", {"reason": TEXTS["withdrawal"]}, status=200)
    # Ratings of two cadres, published as a (provisional) ranking of the current period.
    for subject, name in (("cadre-wang", "王书记"), ("cadre-zhao", "赵主任")):
        d.post(cadre, "/subjects", {"subject_id": subject, "kind": "cadre", "name": name, "community_id": c.id,
                                    "person_id": f"pubsq-{subject}", "unit_id": "sq"})
    d.ok(cadre, "PATCH", f"/policies/{c.id}", {"min_ratings": 5})
    for i, rater in enumerate(residents[:6]):
        d.post(rater, "/subjects/cadre-wang/ratings", {"level": 2 if i == 0 else 5,
                                                       "comment": TEXTS["rating"] if i == 0 else ""})
    for rater in residents[6:8]:
        d.post(rater, "/subjects/cadre-zhao/ratings", {"level": 3, "comment": TEXTS["rating"]})
    period = d.get(cadre, f"/rankings/{c.id}/cadre")["period"]
    d.post(cadre, "/rankings", {"community_id": c.id, "kind": "cadre", "period": period, "provisional": True})
    return {"community": c, "a": a, "b": b, "c": project_c, "withdrawn": withdrawn, "period": period,
            "volunteer": volunteer}


def anonymous(world, path: str, status: int = 200, headers: dict | None = None):
    reply = world["d"].call(None, "GET", path, headers=headers)
    assert reply.status_code == status, f"GET {path} -> {reply.status_code}: {reply.body.decode()}"
    return reply


def public_paths(world) -> list[str]:
    c = world["community"].id
    return [f"/public/communities/{c}", f"/public/communities/{c}/projects",
            f"/public/communities/{c}/projects?stage=co_share&per_page=5", f"/public/communities/{c}/fund",
            *(f"/public/projects/{world[key]}" for key in ("a", "b", "c", "withdrawn")),
            f"/public/rankings/{c}/cadre", f"/public/rankings/{c}/cadre/{world['period']}"]


def test_every_public_read_answers_without_a_token_and_names_nobody(world):
    c = world["community"]
    people = [c.admin, c.cadre, c.grid_worker, *c.residents, *c.representatives, world["volunteer"]]
    needles = {person.person_id for person in people} | {person.name for person in people}
    needles |= {*TEXTS.values(), PHONE, "pubsq-cadre-wang", "pubsq-cadre-zhao", f"{c.id}-", "xinda"}
    for path in public_paths(world):
        text = anonymous(world, path).body.decode()
        found = sorted(needle for needle in needles if needle in text)
        assert found == [], f"{path} shows {found}"


def test_the_community_header_and_the_project_list(world):
    c = world["community"].id
    header = anonymous(world, f"/public/communities/{c}").json()
    assert header["name"] == f"{c} 社区" and header["grids"] == [{"grid_id": "g1", "name": "第一网格"},
                                                                   {"grid_id": "g2", "name": "第二网格"}]
    assert {"value": "co_share", "label": {"zh": "共享", "en": "co-sharing"}} in header["stages"]
    assert {"value": "children", "label": {"zh": "儿童友好", "en": "children"}} in header["categories"]
    page = anonymous(world, f"/public/communities/{c}/projects").json()
    assert page["total"] == 4 and page["min_count"] == 5 and (page["page"], page["per_page"]) == (1, 20)
    by_id = {item["project_id"]: item for item in page["items"]}
    a, b = by_id[world["a"]], by_id[world["b"]]
    assert (a["stage"], a["stage_label"], a["phase"], a["grid_name"]) == (
        "co_share", {"zh": "共享", "en": "co-sharing"}, "published", "第一网格")
    assert a["counts"] == {"cosignatures": 6, "pledges": None, "contributors": None,
                           "suppressed": ["pledges", "contributors"]}
    assert b["counts"] == {"cosignatures": None, "pledges": 0, "contributors": 0, "suppressed": ["cosignatures"]}
    assert len(a["created_on"]) == 10 and len(a["updated_on"]) == 10  # days, not instants
    filtered = anonymous(world, f"/public/communities/{c}/projects?stage=co_share&per_page=5").json()
    assert [p["project_id"] for p in filtered["items"]] == [world["a"]]
    assert anonymous(world, f"/public/communities/{c}/projects?grid_id=g2").json()["total"] == 1
    assert anonymous(world, f"/public/communities/{c}/projects?category=parking").json()["total"] == 1
    second = anonymous(world, f"/public/communities/{c}/projects?page=2&per_page=3").json()
    assert (second["total"], len(second["items"])) == (4, 1)


def test_a_project_page_with_its_vote_evaluation_and_results(world):
    page = anonymous(world, f"/public/projects/{world['a']}").json()
    assert page["description"] == "背街小巷夜间无照明" and page["location"] == "永兴路 12 巷"
    assert [(t["stage"], t["label"]["zh"]) for t in page["timeline"]] == [
        ("co_plan", "共谋"), ("co_build", "共建"), ("co_manage", "共管"), ("co_evaluate", "共评"), ("co_share", "共享")]
    assert [(m["progress"], m["note"]) for m in page["milestones"]] == [(50, "灯杆基础完工"), (100, "路灯全部安装")]
    assert page["budget"] == {"estimated_cost_fen": 5_000_000, "requested_fen": 3_000_000, "reserved_fen": 3_000_000,
                              "spent_fen": 100_000, "rewards_fen": 10_000}
    assert page["contributions"]["delivered"] == {"labour_minutes": 120, "skills_minutes": 0, "money_fen": 200_000,
                                                  "materials_fen": 0}
    # 8 yes and 1 no: the "no" is one representative, so the three counts are withheld together.
    assert page["vote"] == {**page["vote"], "status": "closed", "result": "approved", "quorum_met": True,
                            "electorate_size": 9, "quorum_required": 6, "ballots": 9, "yes": None, "no": None,
                            "abstain": None, "suppressed": ["yes", "no", "abstain"]}
    assert page["evaluation"] == {**page["evaluation"], "status": "closed", "responsible_unit": UNIT, "ratings": 6,
                                  "average": 4.0, "suppressed": []}
    results = page["results"]
    assert results["benefits"] == BENEFITS and results["volunteer_minutes"] == 120 and results["spent_fen"] == 100_000
    assert results["contributors"] is None and results["suppressed"] == ["contributors"]
    assert results["by_contributor_type"]["enterprise"]["money_fen"] == 200_000
    assert page["min_count"] == 5 and page["completed_on"] == page["timeline"][2]["entered_on"]
    unanimous = anonymous(world, f"/public/projects/{world['c']}").json()["vote"]
    assert (unanimous["yes"], unanimous["no"], unanimous["abstain"], unanimous["suppressed"]) == (9, 0, 0, [])
    small = anonymous(world, f"/public/projects/{world['b']}").json()
    assert small["vote"] is None and small["evaluation"] is None and small["results"] is None
    assert small["counts"]["cosignatures"] is None
    withdrawn = anonymous(world, f"/public/projects/{world['withdrawn']}").json()
    assert [t["stage"] for t in withdrawn["timeline"]] == ["co_plan", "withdrawn"]


def test_the_fund_ledger_shows_movements_without_names(world):
    c = world["community"].id
    fund = anonymous(world, f"/public/communities/{c}/fund").json()
    assert fund["credited_fen"] == 10_050_000 and fund["rewards_fen"] == 10_000
    kinds = [(e["kind"], e["source"], e["project_title"]) for e in fund["ledger"]]
    assert kinds[:2] == [("credit", "government_allocation", None), ("credit", "donation", None)]
    assert ("reward", None, "背街小巷路灯") in kinds and ("spending", None, "背街小巷路灯") in kinds
    assert set(fund["ledger"][0]) == {"position", "kind", "kind_label", "source", "source_label", "amount_fen",
                                      "balance_after_fen", "project_id", "project_title", "on"}
    first = anonymous(world, f"/public/communities/{c}/fund?limit=1").json()
    assert len(first["ledger"]) == 1
    rest = anonymous(world, f"/public/communities/{c}/fund?after={first['next_after']}&limit=1000").json()
    assert [e["position"] for e in first["ledger"] + rest["ledger"]] == [e["position"] for e in fund["ledger"]]


def test_published_rankings_show_scores_only_where_enough_residents_rated(world):
    c, period = world["community"].id, world["period"]
    latest = anonymous(world, f"/public/rankings/{c}/cadre").json()
    assert latest == anonymous(world, f"/public/rankings/{c}/cadre/{period}").json()
    assert (latest["period"], latest["provisional"], latest["edition"], latest["min_count"]) == (period, True, 1, 5)
    (wang,) = latest["ranked"]
    assert {k: wang[k] for k in ("rank", "name", "unit_id", "ratings", "suppressed")} == {
        "rank": 1, "name": "王书记", "unit_id": "sq", "ratings": 6, "suppressed": []}
    assert wang["score"] and wang["satisfaction_rate"] == "0.8333"
    (zhao,) = latest["not_enough_ratings"]
    assert zhao == {"rank": None, "name": "赵主任", "unit_id": "sq", "project_id": None, "ratings": None,
                    "score": None, "average": None, "satisfaction_rate": None,
                    "suppressed": ["ratings", "score", "average", "satisfaction_rate"]}
    assert anonymous(world, f"/public/rankings/{c}/cadre?limit=1&offset=1").json()["ranked"] == []


def test_a_token_valid_or_not_changes_nothing_on_a_public_read(world):
    path = f"/public/projects/{world['a']}"
    plain = anonymous(world, path).json()
    for headers in ({"Authorization": "Bearer not-a-token"}, world["community"].cadre.headers):
        assert anonymous(world, path, headers=headers).json() == plain
    assert world["app"].test_client().head(PREFIX + path).status_code == 200


def test_public_reads_refuse_what_they_refuse_in_the_one_error_shape(world):
    c = world["community"].id
    for path, field in ((f"/public/communities/{c}/projects?bogus=1", "bogus"),
                        (f"/public/communities/{c}/projects?stage=done", "stage"),
                        (f"/public/communities/{c}/projects?per_page=1000", "per_page"),
                        (f"/public/communities/{c}?x=1", "x"), (f"/public/projects/{world['a']}?version=1", "version"),
                        (f"/public/communities/{c}/fund?actor=1", "actor"),
                        (f"/public/rankings/{c}/cadre?period=2026-01", "period")):
        error = assert_error(anonymous(world, path, 422), 422)
        assert field in error["errors"]["query"], (path, error)
    assert_error(anonymous(world, f"/public/rankings/{c}/cadre/2026-13", 422), 422, "invalid_period")
    for path in ("/public/communities/nowhere", "/public/communities/nowhere/projects",
                 "/public/communities/nowhere/fund", "/public/projects/nothing", f"/public/rankings/{c}/mayor",
                 f"/public/rankings/{c}/grid_worker", f"/public/rankings/{c}/cadre/2020-01",
                 "/public/rankings/nowhere/cadre"):
        assert_error(anonymous(world, path, 404), 404, "not_found")


def test_every_other_route_still_needs_a_token(world):
    c, a = world["community"].id, world["a"]
    for path in (f"/communities/{c}", f"/communities/{c}/fund", "/projects", f"/projects/{a}",
                 f"/projects/{a}/history", f"/rankings/{c}/cadre", f"/rankings/{c}/cadre/{world['period']}",
                 "/subjects", "/activities", f"/communities/{c}/dashboard", "/whoami", "/public/nothing"):
        assert_error(anonymous(world, path, 401), 401)
    reply = world["d"].call(None, "POST", f"/public/communities/{c}/projects", {})
    assert_error(reply, 401)  # no write is public


def test_the_merged_document_marks_exactly_the_public_operations(world):
    document = world["app"].test_client().get("/openapi.json").get_json()
    assert document["security"] == [{"bearerAuth": []}]
    open_ops = {(method, path) for path, ops in document["paths"].items() for method, op in ops.items()
                if isinstance(op, dict) and op.get("security") == []}
    public_reads = {("get", path) for path in document["paths"] if path.startswith(f"{PREFIX}/public/")}
    assert len({(method, path) for method, path in public_reads if "/public/open-data/" not in path}) == 9
    assert len(public_reads) > 9  # and the open-data files (tests/integration/test_open_data.py)
    assert open_ops == public_reads | {("post", f"{PREFIX}/auth/token")}
    catalogue = world["app"].extensions["cocreate.catalogue"]
    assert {PREFIX + rule.rule.replace("<", "{").replace(">", "}") for rule in catalogue.map.iter_rules()
            if rule.endpoint.public} == {path for _method, path in public_reads}


def test_rate_limits_per_ip_count_visitors_without_a_token(services, world, tmp_path):
    app = gateway(services, tmp_path, GATEWAY_RATE_LIMIT_PER_IP="3")
    client = app.test_client()
    path = f"{PREFIX}/public/communities/{world['community'].id}"
    statuses = [client.get(path).status_code for _ in range(5)]
    assert statuses[0] == 200 and statuses[-1] == 429
    assert client.get(path).headers["Retry-After"]


def test_a_route_is_public_only_because_its_service_s_document_says_so(services, tmp_path):
    """The gateway decides from the documents alone: a public read whose document lost its
    ``security: []`` needs a token again, and a token route whose document gained one passes the
    gateway without a token (the service, pointed at a closed port here, would check again)."""
    documents = {name: json.loads(_get(services[name].base_url + "/openapi.json")) for name in SERVICES}
    projects = documents["projects"]
    del projects["paths"]["/public/projects/{project_id}"]["get"]["security"]
    projects["paths"]["/projects"]["get"]["security"] = []
    projects["paths"]["/projects"]["post"]["security"] = []
    catalogue = tmp_path / "catalogue"
    for name, document in documents.items():
        save_document(catalogue, name, document)
    app = gateway_app(COCREATE_DATA_DIR=str(tmp_path / "gw"), GATEWAY_CATALOGUE_DIR=str(catalogue),
                      **{f"GATEWAY_{name.upper()}_URL": "http://127.0.0.1:9" for name in SERVICES})
    client = app.test_client()
    assert_error(Reply(client.get(f"{PREFIX}/public/projects/p1")), 401)
    assert_error(Reply(client.get(f"{PREFIX}/projects")), 503, "service_unavailable")  # let through
    assert_error(Reply(client.get(f"{PREFIX}/public/communities/c1")), 503, "service_unavailable")
    assert_error(Reply(client.post(f"{PREFIX}/projects", json={})), 401)  # a write never is
    app.extensions["cocreate.gateway_store"].engine.dispose()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return reply.read()


class Reply:
    """A Flask response in the shape ``assert_error`` reads."""

    def __init__(self, response) -> None:
        self.status_code, self.body, self.headers = response.status_code, response.get_data(), response.headers

    def json(self):
        return json.loads(self.body)


def test_times_on_public_pages_are_days(world):
    page = anonymous(world, f"/public/projects/{world['a']}").json()
    days = [page["created_on"], page["updated_on"], page["completed_on"], page["vote"]["opened_on"],
            page["vote"]["closed_on"], page["evaluation"]["opened_on"], page["results"]["published_on"],
            *(t["entered_on"] for t in page["timeline"]), *(m["recorded_on"] for m in page["milestones"])]
    today = (utc_now() + timedelta(hours=8)).date().isoformat()
    assert set(days) <= {today, (utc_now() + timedelta(hours=8) - timedelta(days=1)).date().isoformat()}



def test_public_project_reads_on_both_backends_with_the_threshold_a_setting(database_url):
    """The projects service's public queries on SQLite and PostgreSQL, in its own app (no gateway),
    with ``PROJECTS_PUBLIC_MIN_COUNT=2``: two co-signatures are shown, one pledge is not."""
    app = service_app(PROJECTS, database_url, PROJECTS_PUBLIC_MIN_COUNT="2")
    try:
        d = driver(app)
        c = Community(d, "both", representatives=3)
        pid = c.approved_project(title="健身步道")["project_id"]
        d.post(c.residents[0], f"/projects/{pid}/pledges", {"kind": "labour", "labour_minutes": 60})
        small = c.propose(title="读书角")["project_id"]
        for person in c.residents[1:3]:
            d.post(person, f"/projects/{small}/cosignatures")
        client = app.test_client()
        listed = {p["project_id"]: p for p in client.get("/public/communities/both/projects").get_json()["items"]}
        assert listed[small]["counts"] == {"cosignatures": 2, "pledges": 0, "contributors": 0, "suppressed": []}
        assert listed[pid]["counts"]["pledges"] is None
        assert listed[pid]["counts"]["suppressed"] == ["pledges", "contributors"]
        page = client.get(f"/public/projects/{pid}").get_json()
        assert page["vote"]["yes"] == 3 and page["min_count"] == 2
        fund = client.get("/public/communities/both/fund").get_json()
        assert [e["project_title"] for e in fund["ledger"]] == [None, "健身步道"]
        assert client.get("/public/communities/both").status_code == 200
    finally:
        container(app).store.engine.dispose()


def test_public_rankings_on_both_backends_with_the_threshold_a_setting(database_url):
    """The feedback service's public queries on SQLite and PostgreSQL, with
    ``FEEDBACK_PUBLIC_MIN_COUNT=2``: a subject rated by two residents shows its figures."""
    app = service_app(FEEDBACK, database_url, FEEDBACK_PUBLIC_MIN_COUNT="2")
    try:
        f = driver(app)
        cadre = Person("both-cadre", "社区干部", ("cadre",), "both")
        f.post(cadre, "/subjects", {"subject_id": "s1", "kind": "service", "name": "社区食堂", "community_id": "both"})
        f.ok(cadre, "PATCH", "/policies/both", {"min_ratings": 1})
        for i in range(2):
            f.post(Person(f"both-r{i}", f"居民{i}", ("resident",), "both"), "/subjects/s1/ratings", {"level": 4})
        period = f.get(cadre, "/rankings/both/service")["period"]
        f.post(cadre, "/rankings", {"community_id": "both", "kind": "service", "period": period, "provisional": True})
        ranking = app.test_client().get("/public/rankings/both/service").get_json()
        assert [(e["name"], e["ratings"], e["average"]) for e in ranking["ranked"]] == [("社区食堂", 2, "4.0000")]
    finally:
        container(app).store.engine.dispose()
