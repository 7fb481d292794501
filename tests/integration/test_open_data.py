"""Open data (共享 开放数据) through the gateway, with no token: the three services under gunicorn,
the gateway in this process in front of them.

A community is written through the gateway with tokens — two projects taken to published results
(one with five resident volunteers, an enterprise and a social organisation, the other with one
resident), a small proposal whose title starts with "=", a withdrawn one, a donation, rankings of
two cadres and of a unit — with private values planted in it: every resident's person id, name and
phone, every opinion, evaluation and rating comment, a donor, receipts and reasons. The
projects service's labour deliveries are handed to the volunteers service's consumer (as Kafka
would), with two volunteers' hours of an earlier month.

Then every open-data file is fetched without a token, each CSV read back with ``csv.DictReader``
and compared with its JSON twin and with the public API (or, for volunteer hours, the members'
read), its data package checked to list every file with its columns and the licence, the HTTP
validators (ETag, Last-Modified: 304), small-count suppression, the refusals (404, 422), the rate
limit, the gateway's document and the README — and every file's text scanned for the planted
private values: none may appear.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest

from gateway.catalogue import PREFIX
from services.kernel.db import make_engine, write_transaction
from services.kernel.events import LOCAL_TZ, format_time, utc_now
from services.kernel.eventstore import EventStore
from services.kernel.open_data import to_the_minute
from services.kernel.settings import SettingsError
from services.projects.service import DEFINITION as PROJECTS
from services.volunteers.service import DEFINITION as VOLUNTEERS
from services.volunteers.service import _project_labour_handlers
from tests.support.apps import container, driver, gateway_app, service_app
from tests.support.errors import assert_error
from tests.support.projects import Community, FlaskClient, Person, ProjectsDriver

ROOT = Path(__file__).resolve().parents[2]
C = "odsq"
UNIT = {"unit_id": "jsb", "name": "街道建设办"}
PHONE = "13987654321"
ENTERPRISE, SOCIAL = "鑫达建材有限公司", "绿色家园协会"
FORMULA_TITLE = "=1+2 停车位划线"
TEXTS = {  # planted private texts: none may reach an open-data file
    "opinion": "反对占用绿地-意见原文", "evaluation": "灯光太暗-评议原文", "rating": "态度冷淡-评价原文",
    "donor": "林秀凤女士捐赠", "donation": "捐赠回执-DN-5521", "receipt": "发票-NO-778899",
    "spending": "购买灯具-支出说明", "reward": "以奖代补原因-原文", "pledge": "认捐说明-原文",
    "withdrawal": "撤回原因-原文", "problem": "路灯闪烁-问题原文", "maintenance": "管护记录-原文",
}
BENEFITS = "夜间照明改善,惠及三百户"
FILES = {"projects": ("projects", "fund-ledger", "results", "rewards"), "volunteers": ("volunteer-hours",),
         "feedback": ("rankings",)}


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
    app = gateway(services, tmp_path_factory.mktemp("open-data-gateway"), GATEWAY_RATE_LIMIT_PER_CALLER="0",
                  GATEWAY_RATE_LIMIT_PER_IP="0")
    d = ProjectsDriver(Public(app))
    built = scenario(d)
    feed_labour_to_volunteers(services)
    try:
        yield {"app": app, "d": d, **built}
    finally:
        app.extensions["cocreate.gateway_store"].engine.dispose()


def published_project(d, c: Community, title: str, residents: list[Person], *, organisations=(), raters=(),
                      rewards=()) -> str:
    """A project from proposal to published results and rewards: ``residents`` pledge and deliver
    labour, ``organisations`` (id, name, type, kind, amount) pledge through the cadre."""
    pid = c.propose(title=title, category="safety")["project_id"]
    c.qualify(pid)
    d.post(c.representatives[0], f"/projects/{pid}/opinions", {"stance": "oppose", "text": TEXTS["opinion"]})
    d.post(c.cadre, f"/projects/{pid}/vote/open", {"responsible_unit": UNIT}, status=200)
    for rep in c.representatives:
        d.post(rep, f"/projects/{pid}/vote/ballots", {"choice": "yes"})
    d.post(c.cadre, f"/projects/{pid}/vote/close", {}, status=200)
    for resident in residents:
        pledge = d.post(resident, f"/projects/{pid}/pledges", {"kind": "labour", "labour_minutes": 90,
                                                               "description": TEXTS["pledge"]})["created_id"]
        d.post(c.grid_worker, f"/projects/{pid}/pledges/{pledge}/deliveries", {"labour_minutes": 90})
    for contributor_id, name, kind, field, amount in organisations:
        pledge = d.post(c.cadre, f"/projects/{pid}/pledges", {"kind": kind, field: amount, "contributor": {
            "contributor_id": contributor_id, "name": name, "type": ("enterprise" if kind == "money"
                                                                     else "social_organisation")},
            "description": "捐赠灯具"})["created_id"]
        d.post(c.grid_worker, f"/projects/{pid}/pledges/{pledge}/deliveries", {field: amount})
    d.post(c.cadre, f"/projects/{pid}/spending", {"amount_fen": 100_000, "receipt_ref": TEXTS["receipt"],
                                                  "description": TEXTS["spending"]})
    d.post(c.grid_worker, f"/projects/{pid}/milestones", {"progress": 100, "note": "全部完工"})
    d.post(c.cadre, f"/projects/{pid}/completion", {}, status=200)
    problem = d.post(c.residents[10], f"/projects/{pid}/problems", {"description": TEXTS["problem"]})["created_id"]
    d.post(c.grid_worker, f"/projects/{pid}/problems/{problem}/resolution", {"resolution": "已处理"})
    d.post(c.cadre, f"/projects/{pid}/evaluation/open", {}, status=200)
    for rater in raters:
        d.post(rater, f"/projects/{pid}/evaluation/ratings", {"score": 4, "comment": TEXTS["evaluation"]})
    d.post(c.cadre, f"/projects/{pid}/evaluation/close", {}, status=200)
    d.post(c.cadre, f"/projects/{pid}/results", {"benefits": BENEFITS})
    for recipient, amount in rewards:
        d.post(c.cadre, f"/projects/{pid}/rewards", {"recipient_id": recipient, "amount_fen": amount,
                                                     "reason": TEXTS["reward"]})
    return pid


def scenario(d: ProjectsDriver) -> dict:
    c = Community(d, C)
    volunteer = c.residents[0]
    d.post(volunteer, "/cards", {"name": volunteer.name, "community_id": C, "phone": PHONE})
    d.post(c.cadre, f"/communities/{C}/fund/credits", {"amount_fen": 50_000, "source": "donation",
                                                      "reference": TEXTS["donation"], "note": TEXTS["donor"]})
    a = published_project(d, c, "背街小巷路灯", c.residents[:5], organisations=(
        ("xinda", ENTERPRISE, "money", "money_fen", 200_000), ("lvse", SOCIAL, "materials", "materials_fen", 30_000)),
        raters=c.residents[5:11], rewards=((c.residents[0].person_id, 5_000), ("xinda", 20_000)))
    b = published_project(d, c, "楼道扶手", c.residents[11:12], raters=c.residents[5:7],
                          rewards=((c.residents[11].person_id, 3_000),))
    small = c.propose(proposer=c.residents[6], title=FORMULA_TITLE, category="parking", grid_id="g2")["project_id"]
    for person in c.residents[1:3]:
        d.post(person, f"/projects/{small}/cosignatures")
    withdrawn = c.propose(proposer=c.residents[5], title="垃圾分类亭", category="environment")["project_id"]
    d.post(c.residents[5], f"/projects/{withdrawn}/withdrawal", {"reason": TEXTS["withdrawal"]}, status=200)
    # Rankings: a cadre rated by six residents, another by two, and their unit by five.
    d.post(c.cadre, "/subjects", {"subject_id": "jsb", "kind": "unit", "name": UNIT["name"], "community_id": C})
    for subject, name in (("cadre-wang", "王书记"), ("cadre-zhao", "赵主任")):
        d.post(c.cadre, "/subjects", {"subject_id": subject, "kind": "cadre", "name": name, "community_id": C,
                                      "person_id": f"{C}-official-{subject}", "unit_id": "jsb"})
    d.ok(c.cadre, "PATCH", f"/policies/{C}", {"min_ratings": 5})
    for i, rater in enumerate(c.residents[:6]):
        d.post(rater, "/subjects/cadre-wang/ratings", {"level": 2 if i == 0 else 5,
                                                       "comment": TEXTS["rating"] if i == 0 else ""})
    for rater in c.residents[6:8]:
        d.post(rater, "/subjects/cadre-zhao/ratings", {"level": 3, "comment": TEXTS["rating"]})
    for rater in c.residents[:5]:
        d.post(rater, "/subjects/jsb/ratings", {"level": 4, "comment": TEXTS["rating"]})
    period = d.get(c.cadre, f"/rankings/{C}/cadre")["period"]
    for kind in ("cadre", "unit"):
        d.post(c.cadre, "/rankings", {"community_id": C, "kind": kind, "period": period, "provisional": True})
    return {"community": c, "a": a, "b": b, "small": small, "withdrawn": withdrawn, "period": period}


def feed_labour_to_volunteers(services) -> None:
    """What the volunteers service's consumer does with the projects service's labour deliveries
    (read from its event store here instead of Kafka), and two volunteers' hours three months ago."""
    projects = EventStore(make_engine(f"sqlite:///{services['projects'].env['COCREATE_DATA_DIR']}/projects.db"),
                          service="projects")
    deliveries = [e for e in projects.read_all(0, 100_000) if e.event_type == "ContributionDelivered"
                  and e.data["kind"] == "labour"]
    projects.engine.dispose()
    earlier = (utc_now() - timedelta(days=92)).replace(day=15)
    for i, person in enumerate(("r2", "r3")):
        deliveries.append(replace(deliveries[0], event_id=str(uuid.uuid4()), data={
            **deliveries[0].data, "pledge_id": f"earlier-{i}", "contributor_id": f"{C}-{person}",
            "labour_minutes": 45, "delivered_at": format_time(earlier)}))
    app = service_app(VOLUNTEERS, f"sqlite:///{services['volunteers'].env['COCREATE_DATA_DIR']}/volunteers.db")
    try:
        credit = _project_labour_handlers(container(app))["ContributionDelivered"]
        with write_transaction(container(app).store.engine) as connection:
            for event in deliveries:
                credit(connection, event)
    finally:
        container(app).store.engine.dispose()


# -- reading the files ------------------------------------------------------------------------------

def anonymous(world, path: str, status: int = 200, headers: dict | None = None):
    reply = world["d"].call(None, "GET", path, headers=headers)
    assert reply.status_code == status, f"GET {path} -> {reply.status_code}: {reply.body.decode()[:500]}"
    return reply


def base(dataset: str) -> str:
    return f"/public/open-data/communities/{C}/{dataset}"


def every_file() -> list[str]:
    return [f"{base(dataset)}/{name}" for dataset, tables in FILES.items()
            for name in ("datapackage.json", *(f"{t}.{ext}" for t in tables for ext in ("csv", "json")))]


def read_csv(world, dataset: str, table: str) -> list[dict[str, str]]:
    reply = anonymous(world, f"{base(dataset)}/{table}.csv")
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert reply.body.startswith(b"\xef\xbb\xbf")  # the byte-order mark Excel needs
    text = reply.body.decode("utf-8-sig")
    assert "\r\n" in text
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_json(world, dataset: str, table: str) -> dict:
    reply = anonymous(world, f"{base(dataset)}/{table}.json")
    assert reply.headers["Content-Type"] == "application/json"
    return reply.json()


def package(world, dataset: str) -> dict:
    return anonymous(world, f"{base(dataset)}/datapackage.json").json()


def typed(cell: str, field: dict):
    """A CSV cell as the data package's field type reads it."""
    if cell == "":
        return None
    kind = field["type"]
    if kind == "integer":
        return int(cell)
    if kind == "number":
        return Decimal(cell)
    if kind == "boolean":
        return {"true": True, "false": False}[cell]
    if kind == "string" and cell.startswith("'") and cell[1:2] in ("=", "+", "-", "@"):
        return cell[1:]
    return cell


def rows(world, dataset: str, table: str) -> list[dict]:
    """The CSV's rows, typed by the data package — checked to be exactly the JSON file's rows."""
    fields = next(r for r in package(world, dataset)["resources"] if r["name"] == table)["schema"]["fields"]
    from_csv = read_csv(world, dataset, table)
    assert from_csv == [] or list(from_csv[0]) == [f["name"] for f in fields]
    parsed = [{f["name"]: typed(row[f["name"]], f) for f in fields} for row in from_csv]
    from_json = read_json(world, dataset, table)["rows"]
    as_json = [{k: (Decimal(str(v)) if isinstance(v, float) else v) for k, v in row.items()} for row in from_json]
    assert parsed == as_json
    return parsed


# -- the tests ------------------------------------------------------------------------------------

def test_no_file_names_a_resident_or_quotes_one(world):
    c = world["community"]
    people = [*c.residents, *c.representatives]
    needles = {p.person_id for p in people} | {p.name for p in people} | set(TEXTS.values()) | {PHONE}
    needles |= {f"{C}-official-cadre-wang", f"{C}-official-cadre-zhao", f"{C}-cadre", f"{C}-grid", "admin-1"}
    for path in every_file():
        text = anonymous(world, path).body.decode("utf-8-sig")
        found = sorted(needle for needle in needles if needle in text)
        assert found == [], f"{path} shows {found}"
    # The scan can fail: the members' card read holds the volunteer's name and phone.
    card = world["d"].call(c.cadre, "GET", f"/cards/{c.residents[0].person_id}").body.decode()
    assert PHONE in card and c.residents[0].name in card


def test_each_data_package_lists_its_files_with_their_columns_and_the_licence(world):
    for dataset, tables in FILES.items():
        document = package(world, dataset)
        assert document["profile"] == "tabular-data-package" and document["community_id"] == C
        assert document["licenses"] == [{"name": "CC-BY-4.0", "title": "Creative Commons Attribution 4.0 International",
                                         "path": "https://creativecommons.org/licenses/by/4.0/"}]
        # When the data last changed, to the minute (rounded up): it cannot time one resident's act.
        assert document["min_count"] == 5 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00\.000000Z",
                                                            document["created"])
        assert document["sources"] and all(s["path"].startswith("/api/v1/") for s in document["sources"])
        resources = {r["name"]: r for r in document["resources"]}
        assert set(resources) == {*tables, *(f"{t}-json" for t in tables)}
        for table in tables:
            for name, ext in ((table, "csv"), (f"{table}-json", "json")):
                resource = resources[name]
                assert resource["path"] == f"{table}.{ext}" and resource["format"] == ext
                body = anonymous(world, f"{base(dataset)}/{table}.{ext}").body
                assert resource["bytes"] == len(body)
                fields = resource["schema"]["fields"]
                assert fields and all(f["type"] and f["description"] and f["description_zh"] for f in fields)
                assert resource["title"] and resource["title_zh"]
            json_file = read_json(world, dataset, table)
            assert json_file["licence"]["name"] == "CC-BY-4.0" and json_file["community_id"] == C
            assert json_file["created"] == document["created"]


def test_projects_match_the_public_project_reads(world):
    listed = {p["project_id"]: p for p in anonymous(world, f"/public/communities/{C}/projects?per_page=100")
              .json()["items"]}
    table = {row["project_id"]: row for row in rows(world, "projects", "projects")}
    assert set(table) == set(listed) and len(table) == 4
    for pid, row in table.items():
        page = anonymous(world, f"/public/projects/{pid}").json()
        assert (row["title"], row["stage"], row["stage_zh"], row["category"], row["category_en"], row["grid_id"],
                row["grid_name"]) == (page["title"], page["stage"], page["stage_label"]["zh"], page["category"],
                                      page["category_label"]["en"], page["grid_id"], page["grid_name"])
        assert {k: row[k] for k in page["budget"]} == page["budget"]
        assert {k: row[k] for k in page["contributions"]["delivered"]} == page["contributions"]["delivered"]
        assert {k: row[k] for k in ("cosignatures", "pledges", "contributors")} == {
            k: page["counts"][k] for k in ("cosignatures", "pledges", "contributors")}
        assert row["suppressed"] == (" ".join(page["counts"]["suppressed"]) or None)
        assert (row["created_on"], row["updated_on"], row["completed_on"]) == (
            page["created_on"], page["updated_on"], page["completed_on"])
    a, small = table[world["a"]], table[world["small"]]
    assert (a["stage"], a["vote_result"], a["rewards_fen"], a["money_fen"]) == ("co_share", "approved", 25_000, 200_000)
    assert a["decided_on"] and a["results_published_on"]
    assert (small["title"], small["cosignatures"], small["suppressed"]) == (FORMULA_TITLE, None, "cosignatures")
    assert table[world["withdrawn"]]["stage"] == "withdrawn"
    # A title that a spreadsheet would run as a formula is text in the CSV, as written in the JSON.
    assert any(r["title"] == "'" + FORMULA_TITLE for r in read_csv(world, "projects", "projects"))


def test_the_fund_ledger_matches_the_public_fund_read(world):
    fund = anonymous(world, f"/public/communities/{C}/fund?limit=1000").json()["ledger"]
    ledger = rows(world, "projects", "fund-ledger")
    assert [(r["position"], r["kind"], r["source"], r["amount_fen"], r["balance_after_fen"], r["project_id"],
             r["project_title"], r["on"]) for r in ledger] == [
        (e["position"], e["kind"], e["source"], e["amount_fen"], e["balance_after_fen"], e["project_id"],
         e["project_title"], e["on"]) for e in fund]
    assert [(r["kind_zh"], r["source_en"]) for r in ledger[:2]] == [("入账", "government allocation"),
                                                                    ("入账", "donation")]
    assert sorted(r["amount_fen"] for r in ledger if r["kind"] == "reward") == [3_000, 5_000, 20_000]


def test_results_and_rewards_by_contributor_type(world):
    results = {r["project_id"]: r for r in rows(world, "projects", "results")}
    assert set(results) == {world["a"], world["b"]}
    for pid, row in results.items():
        page = anonymous(world, f"/public/projects/{pid}").json()
        published, evaluation = page["results"], page["evaluation"]
        assert (row["benefits"], row["published_on"], row["volunteer_minutes"], row["spent_fen"],
                row["contributors"], row["rewards_fen"]) == (
            published["benefits"], published["published_on"], published["volunteer_minutes"],
            published["spent_fen"], published["contributors"], page["budget"]["rewards_fen"])
        assert {k: row[k] for k in published["contributions"]} == published["contributions"]
        assert row["evaluation_ratings"] == evaluation["ratings"]
        assert row["evaluation_average"] == (None if evaluation["average"] is None
                                             else Decimal(str(evaluation["average"])))
    assert (results[world["a"]]["evaluation_ratings"], results[world["a"]]["evaluation_average"]) == (6, Decimal("4"))
    assert results[world["b"]]["evaluation_ratings"] is None  # two raters
    assert results[world["b"]]["contributors"] is None  # one contributor
    assert results[world["b"]]["suppressed"] == "contributors evaluation_ratings evaluation_average"

    rewards = rows(world, "projects", "rewards")
    for pid in (world["a"], world["b"]):
        page = anonymous(world, f"/public/projects/{pid}").json()
        mine = [r for r in rewards if r["project_id"] == pid]
        for kind, amounts in page["results"]["by_contributor_type"].items():
            summed = {k: sum(r[k] for r in mine if r["contributor_type"] == kind) for k in amounts}
            assert summed == amounts, (pid, kind)
        assert sum(r["rewards_fen"] for r in mine) == page["budget"]["rewards_fen"]
    a = {(r["contributor_type"], r["organisation"]): r for r in rewards if r["project_id"] == world["a"]}
    assert set(a) == {("resident", None), ("enterprise", ENTERPRISE), ("social_organisation", SOCIAL)}
    assert {k: a[("resident", None)][k] for k in ("contributors", "labour_minutes", "rewarded", "rewards_fen",
                                                  "contributor_type_zh", "suppressed")} == {
        "contributors": 5, "labour_minutes": 450, "rewarded": None, "rewards_fen": 5_000, "contributor_type_zh": "居民",
        "suppressed": "rewarded"}  # one resident was rewarded: a small count
    assert (a[("enterprise", ENTERPRISE)]["money_fen"], a[("enterprise", ENTERPRISE)]["rewards_fen"]) == (200_000,
                                                                                                          20_000)
    (b,) = [r for r in rewards if r["project_id"] == world["b"]]
    assert (b["contributor_type"], b["organisation"], b["contributors"], b["rewarded"], b["suppressed"]) == (
        "resident", None, None, None, "contributors rewarded")
    assert (b["labour_minutes"], b["rewards_fen"]) == (90, 3_000)  # amounts, as the public project page shows


def test_rankings_match_the_public_ranking_reads(world):
    ranking = rows(world, "feedback", "rankings")
    for kind in ("cadre", "unit"):
        public = anonymous(world, f"/public/rankings/{C}/{kind}/{world['period']}").json()
        mine = [r for r in ranking if r["kind"] == kind]
        entries = [*public["ranked"], *public["not_enough_ratings"]]
        assert [(r["rank"], r["name"], r["unit_id"], r["ratings"]) for r in mine] == [
            (e["rank"], e["name"], e["unit_id"], e["ratings"]) for e in entries]
        for row, entry in zip(mine, entries):
            for figure in ("score", "average", "satisfaction_rate"):
                assert row[figure] == (None if entry[figure] is None else Decimal(entry[figure]))
            assert (row["edition"], row["provisional"], row["published_on"], row["period"]) == (
                public["edition"], public["provisional"], public["published_on"], public["period"])
    by_name = {r["name"]: r for r in ranking}
    wang, zhao, unit = by_name["王书记"], by_name["赵主任"], by_name[UNIT["name"]]
    assert (wang["role_zh"], wang["rank"], wang["ratings"], wang["unit_name"], wang["satisfaction_rate"]) == (
        "社区干部", 1, 6, UNIT["name"], Decimal("0.8333"))
    assert (zhao["ratings"], zhao["score"], zhao["suppressed"]) == (None, None,
                                                                    "ratings score average satisfaction_rate")
    assert (unit["role_en"], unit["ratings"], unit["average"]) == ("unit", 5, Decimal("4"))


def test_volunteer_hours_per_month_match_the_members_read(world):
    c = world["community"]
    hours = rows(world, "volunteers", "volunteer-hours")
    months = [r["month"] for r in hours]
    assert len(months) >= 4 and months == sorted(months) and len(set(months)) == len(months)
    members = world["d"].get(c.cadre, f"/hours/{C}?months={len(months)}")["items"]
    assert [m["month"] for m in members] == months
    for row, member in zip(hours, members):
        if row["suppressed"]:
            assert (row["minutes"], row["hours"], row["volunteers"]) == (None, None, None)
            assert row["suppressed"] == "minutes hours volunteers" and 0 < member["volunteers"] < 5
        else:
            assert (row["minutes"], float(row["hours"]), row["volunteers"]) == (
                member["minutes"], member["hours"], member["volunteers"])
    first, this = hours[0], hours[-1]
    assert first["suppressed"] == "minutes hours volunteers"  # two volunteers three months ago
    assert (this["minutes"], this["volunteers"]) == (6 * 90, 6)  # six residents' labour this month
    assert all(r["minutes"] == 0 for r in hours[1:-1])


def test_etag_and_last_modified_answer_304_and_a_change_makes_a_new_file(world):
    c = world["community"]
    path = f"{base('projects')}/fund-ledger.csv"
    first = anonymous(world, path)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag) and modified.endswith(" GMT")
    assert first.headers["Cache-Control"] in ("public, max-age=300", "max-age=300, public")
    assert first.headers["Content-Disposition"] == f'attachment; filename="{C}-fund-ledger.csv"'
    # If-Modified-Since is judged against the change's whole minute: a copy from that minute's end on
    # is current; one from the minute before the change is not (Last-Modified is capped at now while
    # the minute runs, so echoing it is current only once the minute has passed).
    stamp = parsedate_to_datetime(modified)
    minute = to_the_minute(stamp + timedelta(seconds=1))  # a stamp capped at hh:mm:00 is still that minute
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": format_datetime(minute, usegmt=True)}):
        reply = anonymous(world, path, 304, headers=headers)
        assert reply.body == b"" and reply.headers["ETag"] == etag
    before = format_datetime(stamp - timedelta(minutes=1), usegmt=True)
    assert anonymous(world, path, headers={"If-Modified-Since": before}).body == first.body
    assert anonymous(world, path, headers={"If-None-Match": '"other"'}).body == first.body
    assert anonymous(world, path, headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}).body == first.body
    world["d"].post(c.cadre, f"/communities/{C}/fund/credits", {"amount_fen": 1_000, "source": "reward_pool",
                                                                "reference": "海财〔2026〕9号"})
    changed = anonymous(world, path, headers={"If-None-Match": etag})
    assert changed.headers["ETag"] != etag and len(changed.body) > len(first.body)
    assert anonymous(world, path, 304, headers={"If-None-Match": changed.headers["ETag"]})
    assert anonymous(world, f"{base('projects')}/datapackage.json").json()["created"]


def test_no_token_is_needed_and_one_changes_nothing(world):
    path = f"{base('feedback')}/rankings.csv"
    plain = anonymous(world, path).body
    for headers in ({"Authorization": "Bearer not-a-token"}, world["community"].cadre.headers):
        assert anonymous(world, path, headers=headers).body == plain
    assert world["app"].test_client().head(PREFIX + path).status_code == 200


def test_refusals_unknown_communities_and_query_keys(world):
    for dataset, tables in FILES.items():
        for name in ("datapackage.json", f"{tables[0]}.csv", f"{tables[0]}.json"):
            assert_error(anonymous(world, f"/public/open-data/communities/nowhere/{dataset}/{name}", 404), 404,
                         "not_found")
            error = assert_error(anonymous(world, f"{base(dataset)}/{name}?format=xlsx", 422), 422)
            assert "format" in error["errors"]["query"]
    # A file that is no route is no public read: the gateway asks for a token, as for any unknown route.
    assert_error(anonymous(world, f"{base('projects')}/secrets.csv", 401), 401)
    assert_error(world["d"].call(None, "POST", f"{base('projects')}/projects.csv", {}), 401)  # no write is public


def test_the_gateway_document_and_the_readme_list_every_file(world):
    document = world["app"].test_client().get("/openapi.json").get_json()
    listed = {path for path in document["paths"] if path.startswith(f"{PREFIX}/public/open-data/")}
    expected = {PREFIX + "/public/open-data/communities/{community_id}/" + p.split(f"/{C}/", 1)[1]
                for p in every_file()}
    assert listed == expected
    for path in listed:
        operation = document["paths"][path]["get"]
        assert operation["security"] == [] and "304" in operation["responses"]
        content = operation["responses"]["200"]["content"]
        assert list(content) == ["text/csv" if path.endswith(".csv") else "application/json"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Open data (开放数据)", 1)[1].split("\n## ", 1)[0]
    assert f"`{PREFIX}/public/open-data/communities/<community_id>/`" in section
    for path in listed:
        dataset, name = path.rsplit("/", 2)[1:]
        assert f"`{dataset}/`" in section, path
        assert f"`{name}`" in section or f"`{name.rsplit('.', 1)[0]}`" in section, path


def test_the_rate_limit_per_ip_counts_downloads(services, world, tmp_path):
    app = gateway(services, tmp_path, GATEWAY_RATE_LIMIT_PER_IP="3")
    try:
        client = app.test_client()
        path = f"{PREFIX}{base('volunteers')}/volunteer-hours.csv"
        statuses = [client.get(path).status_code for _ in range(5)]
        assert statuses[0] == 200 and statuses[-1] == 429
    finally:
        app.extensions["cocreate.gateway_store"].engine.dispose()


def test_the_licence_and_the_threshold_are_settings(tmp_path):
    with pytest.raises(SettingsError, match="PROJECTS_OPEN_DATA_LICENCE must be one of"):
        service_app(PROJECTS, f"sqlite:///{tmp_path}/bad.db", PROJECTS_OPEN_DATA_LICENCE="all rights reserved")
    app = service_app(PROJECTS, f"sqlite:///{tmp_path}/projects.db", PROJECTS_OPEN_DATA_LICENCE="CC0-1.0",
                      PROJECTS_PUBLIC_MIN_COUNT="2")
    try:
        d = driver(app)
        c = Community(d, "lic", representatives=3)
        pid = c.propose(title="读书角")["project_id"]
        for person in c.residents[1:3]:
            d.post(person, f"/projects/{pid}/cosignatures")
        client = app.test_client()
        document = client.get("/public/open-data/communities/lic/projects/datapackage.json").get_json()
        assert [licence["name"] for licence in document["licenses"]] == ["CC0-1.0"] and document["min_count"] == 2
        (row,) = client.get("/public/open-data/communities/lic/projects/projects.json").get_json()["rows"]
        assert (row["cosignatures"], row["suppressed"]) == (2, None)
        # The app's cached files are made again once the store moves on.
        d.post(c.residents[3], f"/projects/{pid}/cosignatures")
        (row,) = client.get("/public/open-data/communities/lic/projects/projects.json").get_json()["rows"]
        assert row["cosignatures"] == 3
    finally:
        container(app).store.engine.dispose()


def test_months_are_local_days(world):
    today = utc_now().astimezone(LOCAL_TZ)
    assert rows(world, "volunteers", "volunteer-hours")[-1]["month"] == f"{today.year}-{today.month:02d}"
