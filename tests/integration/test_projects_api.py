"""The projects service's HTTP API through Flask's test client, on SQLite (and, for the key tests,
on PostgreSQL when TEST_POSTGRES_URL is set): every endpoint once for success, and its refusals —
401 without a token, 403 for a wrong role or community, 404 for an unknown project or community,
422 for bad input and unknown fields (one error shape), 409 for rule violations with their reason,
412 for a stale If-Match — each followed by a check that nothing stored changed.

The service's clock (injected into ``create_service_app``) is the test's: the time now unless a
test sets it, for what handlers date themselves (a delivery's default time, a problem's resolution).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from services.kernel.events import parse_time, utc_now
from services.kernel.eventstore import rebuild
from services.projects.service import DEFINITION as PROJECTS
from tests.support.apps import container, driver, service_app
from tests.support.errors import assert_error
from tests.support.projects import Community, Person, ProjectsDriver

DEFAULT_SETTINGS = {"cosigners_required": 6, "quorum_numerator": 2, "quorum_denominator": 3,
                    "pass_numerator": 1, "pass_denominator": 2}
UNIT = {"unit_id": "haicang-jwh", "name": "海沧社区居委会"}
EN = {"Accept-Language": "en"}  # the tests that read an error's English text ask for it (zh-CN is the default)
UPKEEP = ["assign_maintainer", "log_maintenance", "report_problem", "resolve_problem"]
ADMIN = Person("admin-1", "管理员", ("admin",), None)
OUTSIDER = Person("jimei-r1", "集美居民", ("resident",), "jimei")
OTHER_CADRE = Person("jimei-cadre", "集美干部", ("cadre",), "jimei")
ORGANISER = Person("org-1", "活动组织者", ("organiser",), "haicang")


class Clock:
    """The service's clock: now, unless a test sets ``at``."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or utc_now()


class Api:
    def __init__(self, app, store) -> None:
        self.app = app
        self.store = store
        self.d = driver(app)

    def state(self, project_id: str | None = None, community_id: str | None = None) -> dict:
        """What a refused command must leave alone: the log, the project, the community and its fund."""
        snap = {"position": self.store.last_position()}
        if project_id:
            reply = self.d.call(ADMIN, "GET", f"/projects/{project_id}")
            snap["project"] = (reply.status_code, reply.headers.get("ETag"), reply.body)
        if community_id:
            for path in (f"/communities/{community_id}", f"/communities/{community_id}/fund"):
                reply = self.d.call(ADMIN, "GET", path)
                snap[path] = (reply.status_code, reply.body)
        return snap

    def refused(self, person, method: str, path: str, body=None, *, status: int, reason: str | None = None,
                headers=None, project: str | None = None, community: str | None = None) -> dict:
        before = self.state(project, community)
        reply = self.d.call(person, method, path, body, headers)
        error = assert_error(reply, status, reason)
        assert self.state(project, community) == before, f"{method} {path} changed something"
        return error

    def detail(self, project_id: str) -> dict:
        """The project's page as the admin reads it, without what only its reader may do now
        (``my_actions``, which differs by caller and is not part of a past version)."""
        return without_my_actions(self.d.get(ADMIN, f"/projects/{project_id}"))

    def fund(self, community_id: str) -> dict:
        return self.d.get(ADMIN, f"/communities/{community_id}/fund")


def _api(tmp_path, database_url: str, clock: Clock):
    app = service_app(PROJECTS, database_url, clock=clock, COCREATE_DATA_DIR=str(tmp_path))
    return Api(app, container(app).store)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def api(tmp_path, clock):
    instance = _api(tmp_path, f"sqlite:///{tmp_path}/projects.db", clock)
    yield instance
    instance.store.engine.dispose()


@pytest.fixture
def any_api(tmp_path, database_url, clock):
    """The same API on SQLite and on PostgreSQL (skipped without TEST_POSTGRES_URL)."""
    instance = _api(tmp_path, database_url, clock)
    yield instance
    instance.store.engine.dispose()


def json_errors(error: dict) -> set[str]:
    """The fields a 422 of the request schema names."""
    return set(error["errors"]["json"])


def built(api: Api, c: Community) -> tuple[str, dict[str, str]]:
    """An approved project (3 000 000 fen requested) with a labour pledge of resident 3 (210 of
    240 minutes delivered), materials of an enterprise (300 000 fen), 600 000 fen spent, completed."""
    d = api.d
    pid = c.approved_project()["project_id"]
    labour = d.post(c.residents[3], f"/projects/{pid}/pledges", {"kind": "labour", "labour_minutes": 240})
    steel = d.post(c.cadre, f"/projects/{pid}/pledges", {
        "kind": "materials", "materials_fen": 300_000, "description": "不锈钢扶手 40 米",
        "contributor": {"contributor_id": "acme-steel", "name": "海沧钢材公司", "type": "enterprise"}})
    d.post(c.grid_worker, f"/projects/{pid}/pledges/{labour['created_id']}/deliveries", {"labour_minutes": 210})
    d.post(c.grid_worker, f"/projects/{pid}/pledges/{steel['created_id']}/deliveries", {"materials_fen": 300_000})
    d.post(c.cadre, f"/projects/{pid}/spending", {"amount_fen": 600_000, "receipt_ref": "FP-2026-0012"})
    d.post(c.cadre, f"/projects/{pid}/milestones", {"progress": 100, "note": "全部完成"})
    d.post(c.cadre, f"/projects/{pid}/completion", status=200)
    return pid, {"labour": labour["created_id"], "steel": steel["created_id"]}


def shared(api: Api, c: Community, scores=(5, 5, 4, 4, 3)) -> str:
    pid, _ = built(api, c)
    api.d.post(c.cadre, f"/projects/{pid}/evaluation/open", {"responsible_unit": UNIT}, status=200)
    for person, score in zip(c.residents, scores):
        api.d.post(person, f"/projects/{pid}/evaluation/ratings", {"score": score})
    api.d.post(c.cadre, f"/projects/{pid}/evaluation/close", status=200)
    return pid


# == communities ==================================================================================

def test_a_community_is_registered_read_and_listed(api):
    body = {"community_id": "haicang", "name": "海沧社区", "district": "海沧区",
            "grids": [{"grid_id": "g1", "name": "第一网格"}]}
    reply = api.d.call(ADMIN, "POST", "/communities", body)
    assert reply.status_code == 201, reply.body
    assert reply.headers["Location"] == "/communities/haicang"
    assert reply.headers["ETag"] == '"1"'
    created = reply.json()
    assert {k: v for k, v in created.items() if k not in ("created_at", "updated_at")} == {
        "community_id": "haicang", "name": "海沧社区", "district": "海沧区",
        "grids": [{"grid_id": "g1", "name": "第一网格"}], "representatives": [], "representative_count": 0,
        "settings": DEFAULT_SETTINGS, "version": 1}
    read = api.d.call(ADMIN, "GET", "/communities/haicang")
    assert read.status_code == 200 and read.headers["ETag"] == '"1"' and read.json() == created
    api.refused(OUTSIDER, "GET", "/communities/haicang", status=403, reason="other_community")
    api.d.post(ADMIN, "/communities", {"community_id": "anhe", "name": "安和社区",
                                       "settings": {"cosigners_required": 2}})
    listed = api.d.get(ADMIN, "/communities")["items"]
    assert [(c["community_id"], c["settings"]["cosigners_required"]) for c in listed] == [("anhe", 2), ("haicang", 6)]
    haicang = Person("haicang-r1", "海沧居民", ("resident",), "haicang")
    assert [c["community_id"] for c in api.d.get(haicang, "/communities")["items"]] == ["haicang"]
    assert api.d.get(OUTSIDER, "/communities")["items"] == []  # jimei is not registered


def test_community_registration_refusals(api):
    good = {"community_id": "haicang", "name": "海沧社区", "grids": [{"grid_id": "g1", "name": "第一网格"}]}
    api.refused(None, "POST", "/communities", good, status=401, reason="unauthenticated")
    api.refused(Person("c", "干部", ("cadre",), "haicang"), "POST", "/communities", good, status=403,
                reason="role_required")
    error = api.refused(ADMIN, "POST", "/communities", {**good, "colour": "red"}, status=422)
    assert json_errors(error) == {"colour"}
    error = api.refused(ADMIN, "POST", "/communities", {"community_id": "海 沧"}, status=422)
    assert json_errors(error) == {"community_id", "name"}
    error = api.refused(ADMIN, "POST", "/communities",
                        {**good, "grids": [{"grid_id": "g1", "name": "a"}, {"grid_id": "g1", "name": "b"}]},
                        status=422, reason="duplicate_grid")
    assert error["errors"]["grids"] == "duplicate grid_id"
    error = api.refused(ADMIN, "POST", "/communities", {**good, "settings": {"quorum_numerator": 4}},
                        status=422, reason="invalid_settings")
    assert set(error["errors"]) == {"quorum_numerator", "reason", "detail"}  # detail: the English text (zh-CN)
    api.d.post(ADMIN, "/communities", good)
    api.refused(ADMIN, "POST", "/communities", good, status=409, reason="already_registered", community="haicang")
    api.refused(ADMIN, "GET", "/communities/nowhere", status=404, reason="not_found")
    api.refused(None, "GET", "/communities/haicang", status=401)
    api.refused(None, "GET", "/communities", status=401)


def test_grids_representatives_and_settings(api):
    d = api.d
    c = Community(d, "haicang", representatives=3, residents=2, fund_fen=0)
    assert d.get(c.cadre, "/communities/haicang")["version"] == 2
    reply = d.call(c.cadre, "POST", "/communities/haicang/grids", {"grid_id": "g3", "name": "第三网格"})
    assert reply.status_code == 200 and reply.headers["ETag"] == '"3"'
    assert reply.json()["grids"][-1] == {"grid_id": "g3", "name": "第三网格"}
    reps = d.ok(ADMIN, "PUT", "/communities/haicang/representatives", {"representatives": [
        {"person_id": "haicang-rep0", "name": "代表0"}, {"person_id": "new-rep", "name": "新代表"}]})
    assert reps["representatives"] == [{"person_id": "haicang-rep0", "name": "代表0"},
                                       {"person_id": "new-rep", "name": "新代表"}]
    assert (reps["representative_count"], reps["version"]) == (2, 4)
    unchanged = d.ok(c.cadre, "PATCH", "/communities/haicang/settings", {})
    assert unchanged["version"] == 4
    reply = d.call(c.cadre, "PATCH", "/communities/haicang/settings", {"cosigners_required": 3},
                   headers={"If-Match": '"4"'})
    assert reply.status_code == 200 and reply.json()["settings"] == {**DEFAULT_SETTINGS, "cosigners_required": 3}
    assert reply.headers["ETag"] == '"5"'

    watch = {"community": "haicang"}
    path = "/communities/haicang"
    api.refused(None, "POST", f"{path}/grids", {"grid_id": "g4", "name": "x"}, status=401, **watch)
    api.refused(c.residents[0], "POST", f"{path}/grids", {"grid_id": "g4", "name": "x"}, status=403,
                reason="role_required", **watch)
    api.refused(c.grid_worker, "PATCH", f"{path}/settings", {"cosigners_required": 1}, status=403,
                reason="role_required", **watch)
    api.refused(OTHER_CADRE, "POST", f"{path}/grids", {"grid_id": "g4", "name": "x"}, status=403,
                reason="other_community", **watch)
    api.refused(c.cadre, "POST", "/communities/nowhere/grids", {"grid_id": "g4", "name": "x"}, status=404,
                reason="not_found", **watch)
    api.refused(c.cadre, "POST", f"{path}/grids", {"grid_id": "g3", "name": "又一个"}, status=409,
                reason="duplicate_grid", **watch)
    error = api.refused(c.cadre, "PUT", f"{path}/representatives", {"representatives": [
        {"person_id": "a", "name": "A"}, {"person_id": "a", "name": "B"}]}, status=422,
        reason="duplicate_representative", **watch)
    assert error["errors"]["representatives"] == "duplicate person_id"
    error = api.refused(c.cadre, "PUT", f"{path}/representatives", {"representatives": [{"person_id": "a"}]},
                        status=422, headers=EN, **watch)
    assert error["errors"]["json"] == {"representatives": {"0": {"name": ["Missing data for required field."]}}}
    error = api.refused(c.cadre, "PATCH", f"{path}/settings", {"quorum_numerator": 5}, status=422,
                        reason="invalid_settings", **watch)
    assert "quorum_numerator" in error["errors"]
    error = api.refused(c.cadre, "PATCH", f"{path}/settings", {"quorum": 5, "pass_denominator": 0}, status=422,
                        **watch)
    assert json_errors(error) == {"quorum", "pass_denominator"}
    error = api.refused(c.cadre, "PATCH", f"{path}/settings", {"cosigners_required": 4},
                        headers={"If-Match": '"4"'}, status=412, reason="concurrency_conflict", **watch)
    assert (error["errors"]["expected_version"], error["errors"]["actual_version"]) == (4, 5)


# == the community fund ===========================================================================

def test_the_fund_is_credited_from_three_sources_and_its_ledger_paged(api):
    d = api.d
    c = Community(d, "haicang", representatives=0, residents=1, fund_fen=0)
    credits = [("government_allocation", 1_000_000), ("reward_pool", 200_000), ("donation", 50_000)]
    balance = 0
    for version, (source, amount) in enumerate(credits, start=1):
        reply = d.call(c.cadre if source != "donation" else ADMIN, "POST", "/communities/haicang/fund/credits",
                       {"amount_fen": amount, "source": source, "reference": f"REF-{version}", "note": "入账"})
        balance += amount
        assert reply.status_code == 201 and reply.headers["ETag"] == f'"{version}"'
        assert reply.json() == {"community_id": "haicang", "balance_fen": balance, "credited_fen": balance,
                                "reserved_fen": 0, "spent_fen": 0, "released_fen": 0, "rewards_fen": 0,
                                "version": version}
    fund = d.get(c.residents[0], "/communities/haicang/fund")
    assert (fund["balance_fen"], fund["credited_fen"], fund["version"]) == (1_250_000, 1_250_000, 3)
    assert [(e["kind"], e["amount_fen"], e["balance_after_fen"], e["detail"], e["actor"], e["project_id"])
            for e in fund["ledger"]] == [
        ("credit", 1_000_000, 1_000_000, "government_allocation REF-1 入账", "haicang-cadre", None),
        ("credit", 200_000, 1_200_000, "reward_pool REF-2 入账", "haicang-cadre", None),
        ("credit", 50_000, 1_250_000, "donation REF-3 入账", "admin-1", None)]
    assert [e["detail_label"] for e in fund["ledger"]] == [  # the source in Chinese and English, the rest as written
        {"zh": "政府拨款 REF-1 入账", "en": "government allocation REF-1 入账"},
        {"zh": "以奖代补奖励资金 REF-2 入账", "en": "reward pool REF-2 入账"}, {"zh": "捐赠 REF-3 入账", "en": "donation REF-3 入账"}]
    first = d.get(c.residents[0], "/communities/haicang/fund?limit=2")
    assert [e["amount_fen"] for e in first["ledger"]] == [1_000_000, 200_000]
    assert first["next_after"] == first["ledger"][1]["position"]
    rest = d.get(c.residents[0], f"/communities/haicang/fund?after={first['next_after']}")
    assert [e["amount_fen"] for e in rest["ledger"]] == [50_000]
    end = d.get(c.residents[0], f"/communities/haicang/fund?after={rest['next_after']}")
    assert (end["ledger"], end["next_after"]) == ([], rest["next_after"])

    watch = {"community": "haicang"}
    path = "/communities/haicang/fund/credits"
    good = {"amount_fen": 100, "source": "donation"}
    api.refused(None, "POST", path, good, status=401, **watch)
    api.refused(c.residents[0], "POST", path, good, status=403, reason="role_required", **watch)
    api.refused(OTHER_CADRE, "POST", path, good, status=403, reason="other_community", **watch)
    api.refused(c.cadre, "POST", "/communities/nowhere/fund/credits", good, status=404, reason="not_found", **watch)
    for bad, fields in (({"amount_fen": 0, "source": "donation"}, {"amount_fen"}),
                        ({"amount_fen": "100", "source": "donation"}, {"amount_fen"}),
                        ({"amount_fen": 100, "source": "lottery"}, {"source"}),
                        ({"amount_fen": 100, "source": "donation", "payer": "x"}, {"payer"}),
                        ({}, {"amount_fen", "source"})):
        assert json_errors(api.refused(c.cadre, "POST", path, bad, status=422, **watch)) == fields
    api.refused(ADMIN, "GET", "/communities/nowhere/fund", status=404, reason="not_found")
    api.refused(c.cadre, "GET", "/communities/nowhere/fund", status=403, reason="other_community")
    api.refused(c.cadre, "GET", "/communities/haicang/fund?limit=0", status=422)
    api.refused(None, "GET", "/communities/haicang/fund", status=401)


# == 共谋: proposals and co-signing ================================================================

PROPOSAL = {"community_id": "haicang", "grid_id": "g1", "title": "修建休闲活动室",
            "description": "在小区空地建一间居民休闲活动室", "category": "facilities", "location": "3号楼旁",
            "estimated_cost_fen": 5_000_000, "requested_fen": 3_000_000}


def without_my_actions(project: dict) -> dict:
    return {k: v for k, v in project.items() if k != "my_actions"}


def test_a_resident_proposes_a_project(api):
    c = Community(api.d, "haicang")
    reply = api.d.call(c.residents[0], "POST", "/projects", PROPOSAL)
    assert reply.status_code == 201, reply.body
    body = reply.json()
    project = body["project"]
    pid = project["project_id"]
    assert reply.headers["Location"] == f"/projects/{pid}" and reply.headers["ETag"] == '"1"'
    assert body["created_id"] is None
    assert [(e["event_type"], e["stream_id"], e["version"]) for e in body["recorded"]] == [
        ("ProjectProposed", f"project-{pid}", 1)]
    assert {k: project[k] for k in ("community_id", "grid_id", "title", "description", "category", "location",
                                    "estimated_cost_fen", "requested_fen", "proposer_id", "proposer_name", "stage",
                                    "phase", "cosigners_required", "cosigner_count", "version", "allowed_actions")} == {
        **PROPOSAL, "proposer_id": "haicang-r0", "proposer_name": "居民0", "stage": "co_plan",
        "phase": "collecting_cosigners", "cosigners_required": 6, "cosigner_count": 0, "version": 1,
        "allowed_actions": ["cosign", "amend", "withdraw"]}
    assert (project["stage_label"], project["category_label"]) == ("共谋 co-planning", "公共设施 public facilities")
    read = api.d.call(ADMIN, "GET", f"/projects/{pid}")
    assert read.status_code == 200 and read.headers["ETag"] == '"1"'
    assert without_my_actions(read.json()) == without_my_actions(project)
    # what each may do now: the proposer amends or withdraws; the admin, no resident, nothing
    assert project["my_actions"] == ["amend", "withdraw"] and read.json()["my_actions"] == []
    other = api.d.get(c.residents[1], f"/projects/{pid}")
    assert other["allowed_actions"] == ["cosign", "amend", "withdraw"] and other["my_actions"] == ["cosign"]
    api.refused(OUTSIDER, "GET", f"/projects/{pid}", status=403, reason="other_community")


def test_a_project_read_for_its_page_is_decoded_once_per_version_and_never_given_to_a_command(api):
    """``PROJECTS.get_shared``: the page's readers share the project decoded at its version; a
    command loads its own (``get``), so the shared one is never changed, and a new version is
    decoded again."""
    from services.projects.views import PROJECTS

    c = Community(api.d, "haicang")
    pid = c.propose()["project_id"]
    with api.store.read_transaction() as connection:
        first, again = PROJECTS.get_shared(connection, pid), PROJECTS.get_shared(connection, pid)
        own = PROJECTS.get(connection, pid)
    assert first is again and own is not first and own == first
    before = api.d.get(c.residents[1], f"/projects/{pid}")
    assert before["cosigner_count"] == 0 and before["my_actions"] == ["cosign"]
    api.d.post(c.residents[1], f"/projects/{pid}/cosignatures", {})
    assert first.version == 1 and first.cosigner_ids == [] == own.cosigner_ids  # the shared one is as it was
    after = api.d.get(c.residents[1], f"/projects/{pid}")
    assert after["version"] == 2 and after["cosigner_count"] == 1 and after["my_actions"] == []
    with api.store.read_transaction() as connection:
        now = PROJECTS.get_shared(connection, pid)
    assert now is not first and now.version == 2 and now.cosigner_ids == ["haicang-r1"]


def test_what_a_caller_may_do_is_decided_once_per_version_of_the_project(api, monkeypatch):
    """``my_actions`` is a dry run of every allowed action's decision (two of them refused, raised and
    caught): kept per worker for the project's version and the caller's id, roles and community, it is
    decided again for another caller or a new version, never served from another's."""
    from services.projects.domain import Project

    c = Community(api.d, "haicang")
    pid = c.propose()["project_id"]
    decided: list[str] = []
    plain = Project.actions_for
    monkeypatch.setattr(Project, "actions_for", lambda p, actor: (decided.append(actor.person_id), plain(p, actor))[1])
    reader = c.residents[1]
    assert [api.d.get(reader, f"/projects/{pid}")["my_actions"] for _ in range(3)] == [["cosign"]] * 3
    assert decided == ["haicang-r1"]
    assert api.d.get(c.residents[0], f"/projects/{pid}")["my_actions"] == ["amend", "withdraw"]
    assert api.d.get(ADMIN, f"/projects/{pid}")["my_actions"] == []
    assert decided == ["haicang-r1", "haicang-r0", ADMIN.person_id]
    api.d.post(reader, f"/projects/{pid}/cosignatures", {})
    decided.clear()
    assert api.d.get(reader, f"/projects/{pid}")["my_actions"] == []
    assert decided == ["haicang-r1"]


def test_a_commands_answer_is_the_page_of_its_version_and_the_next_readers_page(api, monkeypatch):
    """A command's answer holds the project's page at the command's version, made of what its rows
    list (kept while no row is added) and what its state says: the same page, key for key, as
    ``GET /projects/<id>`` then gives the same caller (the page kept for the next reader, with the
    caller's ``my_actions``); through co-signing, an opinion, the vote's opening and its ballots,
    which add no row: the listing is not made again for them."""
    from services.projects import views

    c = Community(api.d, "haicang", representatives=3)
    pid = c.propose()["project_id"]
    made: list[int] = []
    plain = views._listed
    monkeypatch.setattr(views, "_listed", lambda page: (made.append(1), plain(page))[1])
    commands = [(r, "cosignatures", {}) for r in c.residents[1:7]]
    commands += [(c.residents[2], "opinions", {"stance": "support", "text": "好"}), (c.cadre, "vote/open", {})]
    commands += [(r, "vote/ballots", {"choice": "yes"}) for r in c.representatives]
    for caller, path, body in commands:
        made.clear()
        answer = api.d.post(caller, f"/projects/{pid}/{path}", body)
        assert answer["project"] == api.d.get(caller, f"/projects/{pid}"), path
        assert made == ([] if path == "vote/ballots" else [1]), path
    assert answer["recorded"][0]["event_type"] == "BallotCast" and answer["created_id"] is None
    assert answer["project"]["vote"]["ballots_cast"] == len(c.representatives)
    assert answer["project"]["opinions"][0]["name"] == c.residents[2].name
    assert [cosigner["name"] for cosigner in answer["project"]["cosigners"]] == [r.name for r in c.residents[1:7]]


def test_a_project_page_kept_for_its_version_is_answered_without_a_transaction(api, monkeypatch):
    """``GET /projects/<id>``: the project's version and state are one statement; the page kept for
    that version is the answer, with no read transaction. A new version is read in one (never the
    kept page of the old), and a missing project or another community's reader is refused as before."""
    c = Community(api.d, "haicang")
    pid = c.propose()["project_id"]
    reader = c.residents[1]
    first = api.d.get(reader, f"/projects/{pid}")  # made (and kept) in a transaction
    opened: list[int] = []
    plain = type(api.store).read_transaction
    monkeypatch.setattr(type(api.store), "read_transaction",
                        lambda store, *a, **k: (opened.append(1), plain(store, *a, **k))[1])
    again = api.d.get(reader, f"/projects/{pid}")
    assert again == first and opened == []
    api.d.post(reader, f"/projects/{pid}/cosignatures", {})  # a new version, kept as the command's answer
    opened.clear()
    after = api.d.get(c.residents[2], f"/projects/{pid}")
    assert after["version"] == 2 and after["cosigner_count"] == 1 and after["my_actions"] == ["cosign"]
    assert api.d.get(reader, f"/projects/{pid}")["my_actions"] == []  # per caller, on the kept page
    api.refused(reader, "GET", "/projects/nosuchproject", status=404)
    api.refused(OUTSIDER, "GET", f"/projects/{pid}", status=403, reason="other_community")


def test_a_commands_answer_is_read_after_its_write_transaction_at_its_version(api, monkeypatch):
    """A command's page is read once its write transaction has ended (writers take turns for the
    whole transaction: read inside it, the page held every other writer up), at the command's
    version: the page kept for that version is the next reader's."""
    import contextlib

    from services.projects import views

    c = Community(api.d, "haicang")
    pid = c.propose()["project_id"]
    writing: list[bool] = []
    read_while: list[bool] = []
    plain_write = type(api.store).write_transaction

    @contextlib.contextmanager
    def write_transaction(store, *args, **kwargs):
        with plain_write(store, *args, **kwargs) as connection:
            writing.append(True)
            try:
                yield connection
            finally:
                writing.pop()

    plain_page = views._stated
    monkeypatch.setattr(type(api.store), "write_transaction", write_transaction)
    monkeypatch.setattr(views, "_stated",
                        lambda project, page: (read_while.append(bool(writing)), plain_page(project, page))[1])
    answer = api.d.post(c.residents[1], f"/projects/{pid}/cosignatures", {})
    assert answer["project"]["version"] == 2 and answer["project"]["cosigner_count"] == 1
    assert read_while == [False], "the answer's page was read inside the command's write transaction"
    assert api.d.get(c.residents[2], f"/projects/{pid}")["cosigner_count"] == 1
    assert read_while == [False], "the page kept for the command's version was read again"


def test_proposal_refusals(api):
    c = Community(api.d, "haicang")
    resident = c.residents[0]
    api.refused(None, "POST", "/projects", PROPOSAL, status=401, reason="unauthenticated", community="haicang")
    api.refused(c.cadre, "POST", "/projects", PROPOSAL, status=403, reason="role_required")
    api.refused(ADMIN, "POST", "/projects", PROPOSAL, status=403, reason="role_required")
    api.refused(OUTSIDER, "POST", "/projects", PROPOSAL, status=403, reason="other_community")
    error = api.refused(resident, "POST", "/projects", {"community_id": "haicang", "budget": 1}, status=422)
    assert json_errors(error) == {"budget", "grid_id", "title", "description", "category", "estimated_cost_fen",
                                  "requested_fen"}
    for bad, field in ((("category", "fireworks")), ("title", ""), ("title", "x" * 101),
                       ("estimated_cost_fen", -1), ("requested_fen", "3000000"), ("grid_id", "g 1")):
        error = api.refused(resident, "POST", "/projects", {**PROPOSAL, bad: field}, status=422)
        assert json_errors(error) == {bad}
    error = api.refused(resident, "POST", "/projects", {**PROPOSAL, "requested_fen": 5_000_001}, status=422,
                        reason="invalid_proposal")
    assert error["errors"]["requested_fen"] == "cannot exceed the estimated cost"
    error = api.refused(resident, "POST", "/projects", {**PROPOSAL, "community_id": "nowhere"}, status=422,
                        reason="unknown_community")
    assert error["errors"]["community_id"] == "unknown community"
    error = api.refused(resident, "POST", "/projects", {**PROPOSAL, "grid_id": "g9"}, status=422,
                        reason="unknown_grid")
    assert error["errors"]["grid_id"] == "unknown grid in this community"
    assert api.d.get(resident, "/projects")["total"] == 0


def test_co_signing_qualifies_the_proposal_at_six(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    for count, person in enumerate(c.residents[1:7], start=1):
        reply = d.call(person, "POST", f"/projects/{pid}/cosignatures")
        assert reply.status_code == 201 and reply.headers["ETag"] == f'"{count + 1 + (count == 6)}"'
        project = reply.json()["project"]
        assert project["cosigner_count"] == count
        assert project["phase"] == ("deliberation" if count == 6 else "collecting_cosigners")
    assert [e["event_type"] for e in reply.json()["recorded"]] == ["ProjectCosigned", "ProjectQualified"]
    assert project["allowed_actions"] == ["cosign", "post_opinion", "amend", "withdraw", "open_vote"]
    assert [s["person_id"] for s in project["cosigners"]] == [p.person_id for p in c.residents[1:7]]

    watch = {"project": pid}
    path = f"/projects/{pid}/cosignatures"
    api.refused(None, "POST", path, status=401, **watch)
    api.refused(c.residents[0], "POST", path, status=409, reason="self_cosign", **watch)
    api.refused(c.residents[1], "POST", path, status=409, reason="already_cosigned", **watch)
    api.refused(OUTSIDER, "POST", path, status=403, reason="other_community", **watch)
    api.refused(c.cadre, "POST", path, status=403, reason="role_required", **watch)
    api.refused(c.residents[8], "POST", "/projects/nope/cosignatures", status=404, reason="not_found", **watch)
    # During deliberation more residents may still co-sign.
    assert d.post(c.residents[7], path)["project"]["cosigner_count"] == 7


def test_commands_that_take_no_body_refuse_unknown_fields(api):
    """The platform refuses unknown JSON fields instead of dropping them; a command without a body
    must not accept and ignore one either (a client posting {"choice": "no"} to vote/close would
    close the vote)."""
    c = Community(api.d, "haicang")
    pid = c.propose()["project_id"]
    error = api.refused(c.residents[1], "POST", f"/projects/{pid}/cosignatures", {"on_behalf_of": "haicang-r2"},
                        status=422, project=pid)
    assert "on_behalf_of" in error["errors"]["json"]


# == 共谋: deliberation ============================================================================

def test_opinions_with_a_stance_during_deliberation(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    error = api.refused(c.residents[8], "POST", f"/projects/{pid}/opinions", {"stance": "support", "text": "好"},
                        status=409, reason="wrong_stage", headers=EN, project=pid)
    assert error["errors"]["allowed_actions"] == ["cosign", "amend", "withdraw"]
    assert error["message"].endswith("allowed now: cosign, amend, withdraw")
    c.qualify(pid)
    for person, stance in ((c.residents[8], "support"), (c.residents[9], "oppose"), (c.grid_worker, "neutral"),
                           (c.residents[10], "support")):
        reply = d.post(person, f"/projects/{pid}/opinions", {"stance": stance, "text": f"{stance} 意见"})
        assert reply["created_id"] and reply["recorded"][0]["data"]["opinion_id"] == reply["created_id"]
    project = api.detail(pid)
    assert project["opinion_stances"] == {"support": 2, "oppose": 1, "neutral": 1}
    assert [(o["person_id"], o["stance"]) for o in project["opinions"]] == [
        ("haicang-r8", "support"), ("haicang-r9", "oppose"), ("haicang-grid", "neutral"), ("haicang-r10", "support")]
    watch = {"project": pid}
    path = f"/projects/{pid}/opinions"
    error = api.refused(c.residents[8], "POST", path, {"stance": "love", "text": "x"}, status=422, **watch)
    assert json_errors(error) == {"stance"}
    error = api.refused(c.residents[8], "POST", path, {"stance": "support", "text": "", "mood": 1}, status=422,
                        **watch)
    assert json_errors(error) == {"text", "mood"}
    api.refused(OUTSIDER, "POST", path, {"stance": "oppose", "text": "x"}, status=403, reason="other_community",
                **watch)
    api.refused(ORGANISER, "POST", path, {"stance": "oppose", "text": "x"}, status=403, reason="role_required",
                **watch)


def test_amendments_keep_every_version(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    proposer = c.residents[0]
    d.post(proposer, f"/projects/{pid}/amendments", {"requested_fen": 900_000, "reason": "居民自筹一部分"})
    project = d.post(proposer, f"/projects/{pid}/amendments",
                     {"title": "修建活动室", "location": "5号楼旁", "reason": "换个位置"})["project"]
    assert (project["title"], project["location"], project["requested_fen"]) == ("修建活动室", "5号楼旁", 900_000)
    assert [(r["revision"], r["title"], r["requested_fen"], r["reason"], r.get("by")) for r in project["revisions"]] == [
        (0, "修建休闲活动室", 3_000_000, "original proposal", None),
        (1, "修建休闲活动室", 900_000, "居民自筹一部分", "haicang-r0"),
        (2, "修建活动室", 900_000, "换个位置", "haicang-r0")]
    watch = {"project": pid}
    path = f"/projects/{pid}/amendments"
    api.refused(c.residents[1], "POST", path, {"title": "别人改", "reason": "r"}, status=403, reason="not_proposer",
                **watch)
    api.refused(proposer, "POST", path, {"title": "修建活动室", "reason": "r"}, status=422, reason="empty_amendment",
                **watch)
    error = api.refused(proposer, "POST", path, {"estimated_cost_fen": 1_000, "reason": "r"}, status=422,
                        reason="invalid_proposal", **watch)
    assert error["errors"]["requested_fen"] == "cannot exceed the estimated cost"
    error = api.refused(proposer, "POST", path, {"title": "x", "proposer_id": "haicang-r5"}, status=422, **watch)
    assert json_errors(error) == {"reason", "proposer_id"}


def test_the_proposer_withdraws_before_the_vote_only(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    watch = {"project": pid}
    api.refused(c.residents[1], "POST", f"/projects/{pid}/withdrawal", {"reason": "x"}, status=403,
                reason="not_proposer", **watch)
    api.refused(c.residents[0], "POST", f"/projects/{pid}/withdrawal", {}, status=422, **watch)
    reply = d.call(c.residents[0], "POST", f"/projects/{pid}/withdrawal", {"reason": "居民另有方案"})
    assert reply.status_code == 200
    project = reply.json()["project"]
    assert (project["stage"], project["phase"], project["allowed_actions"]) == ("withdrawn", "ended", [])
    assert project["withdrawal"]["reason"] == "居民另有方案"
    error = api.refused(c.residents[1], "POST", f"/projects/{pid}/cosignatures", status=409, reason="wrong_stage",
                        headers=EN, **watch)
    assert error["message"].endswith("allowed now: nothing (the project has ended)")
    voting = c.propose()["project_id"]
    c.qualify(voting)
    d.post(c.cadre, f"/projects/{voting}/vote/open", {}, status=200)
    error = api.refused(c.residents[0], "POST", f"/projects/{voting}/withdrawal", {"reason": "晚了"}, status=409,
                        reason="wrong_stage", project=voting, community="haicang")
    assert error["errors"]["allowed_actions"] == ["cast_ballot", "close_vote"]


# == 共谋: the council vote ========================================================================

def test_opening_the_vote_reserves_the_fund_or_says_it_is_insufficient(any_api):
    api, d = any_api, any_api.d
    c = Community(d, "haicang", fund_fen=5_000_000)
    pid = c.propose()["project_id"]
    second = c.propose(c.residents[7], title="安装路灯", requested_fen=2_500_000)["project_id"]
    watch = {"project": pid, "community": "haicang"}
    error = api.refused(c.cadre, "POST", f"/projects/{pid}/vote/open", {}, status=409, reason="wrong_stage", **watch)
    assert error["errors"]["phase"] == "collecting_cosigners"
    c.qualify(pid)
    c.qualify(second)
    path = f"/projects/{pid}/vote/open"
    api.refused(None, "POST", path, {}, status=401, **watch)
    api.refused(c.residents[0], "POST", path, {}, status=403, reason="role_required", **watch)
    api.refused(c.representatives[0], "POST", path, {}, status=403, reason="role_required", **watch)
    api.refused(c.grid_worker, "POST", path, {}, status=403, reason="role_required", **watch)
    api.refused(OTHER_CADRE, "POST", path, {}, status=403, reason="other_community", **watch)
    api.refused(c.cadre, "POST", "/projects/nope/vote/open", {}, status=404, reason="not_found", **watch)
    error = api.refused(c.cadre, "POST", path, {"responsible_unit": {"unit_id": "x"}, "deadline": 1}, status=422,
                        headers=EN, **watch)
    assert error["errors"]["json"] == {"deadline": ["Unknown field."],
                                       "responsible_unit": {"name": ["Missing data for required field."]}}

    reply = d.call(c.cadre, "POST", path, {"responsible_unit": UNIT})
    assert reply.status_code == 200, reply.body
    assert reply.headers["ETag"] == '"9"'
    body = reply.json()
    assert [(e["event_type"], e["stream_id"]) for e in body["recorded"]] == [
        ("FundReserved", "fund-haicang"), ("CouncilVoteOpened", f"project-{pid}")]
    vote = body["project"]["vote"]
    assert (vote["electorate_size"], vote["reserved_fen"], vote["ballots_cast"], vote["tally"]) == (9, 3_000_000, 0, None)
    assert body["project"]["responsible_unit"] == UNIT and body["project"]["phase"] == "voting"
    fund = api.fund("haicang")
    assert (fund["balance_fen"], fund["reserved_fen"]) == (2_000_000, 3_000_000)
    assert fund["ledger"][-1] | {"position": 0, "at": ""} == {
        "position": 0, "kind": "reservation", "amount_fen": 3_000_000, "balance_after_fen": 2_000_000,
        "project_id": pid, "detail": "reserved for the council vote",
        "detail_label": {"zh": "为居民代表表决预留", "en": "reserved for the council vote"}, "actor": "haicang-cadre",
        "at": ""}

    error = api.refused(c.cadre, "POST", f"/projects/{second}/vote/open", {}, status=409, reason="insufficient_fund",
                        headers=EN, project=second, community="haicang")
    assert error["message"] == ("insufficient community fund: the balance is 2000000 fen, the project requests "
                                "2500000 fen")
    assert (error["errors"]["balance_fen"], error["errors"]["requested_fen"]) == (2_000_000, 2_500_000)
    assert api.detail(second)["phase"] == "deliberation"
    api.refused(c.cadre, "POST", path, {}, status=409, reason="wrong_stage", **watch)


def test_ballots_and_an_approved_vote(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    c.qualify(pid)
    watch = {"project": pid, "community": "haicang"}
    api.refused(c.representatives[0], "POST", f"/projects/{pid}/vote/ballots", {"choice": "yes"}, status=409,
                reason="wrong_stage", **watch)
    d.post(c.cadre, f"/projects/{pid}/vote/open", {}, status=200)
    choices = ["yes"] * 5 + ["no", "abstain"]
    for i, (rep, choice) in enumerate(zip(c.representatives, choices), start=1):
        reply = d.post(rep, f"/projects/{pid}/vote/ballots", {"choice": choice})
        assert reply["project"]["vote"]["ballots_cast"] == i
        assert reply["recorded"][0]["data"] == {"project_id": pid, "person_id": rep.person_id, "choice": choice}
    path = f"/projects/{pid}/vote/ballots"
    api.refused(None, "POST", path, {"choice": "no"}, status=401, **watch)
    error = api.refused(c.representatives[0], "POST", path, {"choice": "no"}, status=409, reason="already_voted",
                        headers=EN, **watch)
    assert error["message"].startswith("you have already cast your ballot in this vote")
    api.refused(c.residents[1], "POST", path, {"choice": "yes"}, status=403, reason="role_required", **watch)
    api.refused(c.cadre, "POST", path, {"choice": "yes"}, status=403, reason="role_required", **watch)
    stranger = Person("jimei-rep", "集美代表", ("representative", "resident"), "jimei")
    api.refused(stranger, "POST", path, {"choice": "yes"}, status=403, reason="other_community", **watch)
    # One of this vote's electorate, holding a token of another community: refused all the same.
    elsewhere = Person(c.representatives[8].person_id, "代表8", ("representative", "resident"), "jimei")
    api.refused(elsewhere, "POST", path, {"choice": "yes"}, status=403, reason="other_community", **watch)
    assert json_errors(api.refused(c.representatives[8], "POST", path, {"choice": "maybe"}, status=422,
                                   **watch)) == {"choice"}
    assert json_errors(api.refused(c.representatives[8], "POST", path, {}, status=422, **watch)) == {"choice"}
    api.refused(c.representatives[8], "POST", "/projects/nope/vote/ballots", {"choice": "yes"}, status=404, **watch)
    api.refused(c.representatives[0], "POST", f"/projects/{pid}/vote/close", status=403, reason="role_required",
                **watch)
    api.refused(OTHER_CADRE, "POST", f"/projects/{pid}/vote/close", status=403, reason="other_community", **watch)

    reply = d.call(c.cadre, "POST", f"/projects/{pid}/vote/close")
    assert reply.status_code == 200
    body = reply.json()
    assert [e["event_type"] for e in body["recorded"]] == ["CouncilVoteClosed", "ProjectApproved"]
    project = body["project"]
    assert project["vote"]["tally"] == {"electorate_size": 9, "ballots": 7, "yes": 5, "no": 1, "abstain": 1,
                                        "quorum_required": 6, "quorum_met": True, "result": "approved",
                                        "reason": "passed: 5 of 7 ballots were yes",
                                        "reason_label": {"zh": "通过：7张选票中5张赞成",
                                                         "en": "passed: 5 of 7 ballots were yes"}}
    assert project["vote"]["closed_at"] and (project["stage"], project["phase"]) == ("co_build", "building")
    fund = api.fund("haicang")
    assert (fund["balance_fen"], fund["reserved_fen"], fund["released_fen"]) == (7_000_000, 3_000_000, 0)
    api.refused(c.representatives[8], "POST", path, {"choice": "yes"}, status=409, reason="wrong_stage", **watch)
    api.refused(c.cadre, "POST", f"/projects/{pid}/vote/close", status=409, reason="wrong_stage", **watch)


def test_rejected_votes_release_the_reservation(any_api):
    api, d = any_api, any_api.d
    c = Community(d, "haicang", fund_fen=10_000_000)
    tie = c.propose()["project_id"]
    few = c.propose(c.residents[7], title="安装路灯", category="safety", requested_fen=2_000_000)["project_id"]
    abstain = c.propose(c.residents[8], title="绿化", category="greening", requested_fen=1_000_000)["project_id"]
    for pid in (tie, few, abstain):
        c.qualify(pid)
    results = {pid: c.vote(pid, **votes) for pid, votes in (
        (tie, {"yes": 4, "no": 4}), (few, {"yes": 5}), (abstain, {"yes": 0, "abstain": 9}))}
    assert {pid: (p["stage"], p["phase"], p["allowed_actions"]) for pid, p in results.items()} == {
        pid: ("rejected", "ended", []) for pid in (tie, few, abstain)}
    assert results[tie]["vote"]["tally"]["reason"] == "not passed: 4 of 8 ballots were yes, more than 1/2 needed"
    assert results[tie]["vote"]["tally"]["reason_label"]["zh"] == "未通过：8张选票中4张赞成，赞成票需超过1/2"
    assert results[few]["vote"]["tally"] | {"reason": None, "reason_label": None} == {
        "electorate_size": 9, "ballots": 5, "yes": 5, "no": 0, "abstain": 0, "quorum_required": 6,
        "quorum_met": False, "result": "rejected", "reason": None, "reason_label": None}
    assert results[few]["vote"]["tally"]["reason"] == "quorum not met: 5 of 9 representatives voted, 6 needed"
    assert results[few]["vote"]["tally"]["reason_label"] == {
        "zh": "未达到法定人数：9名居民代表中5人投票，需要6人", "en": "quorum not met: 5 of 9 representatives voted, 6 needed"}
    assert (results[abstain]["vote"]["tally"]["abstain"], results[abstain]["vote"]["tally"]["quorum_met"]) == (9, True)
    fund = api.fund("haicang")
    assert (fund["balance_fen"], fund["reserved_fen"], fund["released_fen"]) == (10_000_000, 0, 6_000_000)
    assert [(e["kind"], e["project_id"], e["amount_fen"], e["balance_after_fen"]) for e in fund["ledger"]] == [
        ("credit", None, 10_000_000, 10_000_000),
        ("reservation", tie, 3_000_000, 7_000_000), ("release", tie, 3_000_000, 10_000_000),
        ("reservation", few, 2_000_000, 8_000_000), ("release", few, 2_000_000, 10_000_000),
        ("reservation", abstain, 1_000_000, 9_000_000), ("release", abstain, 1_000_000, 10_000_000)]
    assert fund["ledger"][2]["detail"] == f"project {tie} rejected by the council"
    assert fund["ledger"][2]["detail_label"] == {"zh": f"项目 {tie} 未获居民代表表决通过，预留资金退回",
                                                 "en": f"project {tie} rejected by the council"}
    error = api.refused(c.cadre, "POST", f"/projects/{tie}/pledges", {"kind": "money", "money_fen": 1}, status=409,
                        reason="wrong_stage", headers=EN, project=tie, community="haicang")
    assert error["errors"] == {"stage": "rejected", "phase": "ended", "allowed_actions": [], "reason": "wrong_stage"}


# == 共建 co_build =================================================================================

def test_co_build_pledges_deliveries_spending_milestones_and_completion(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.approved_project()["project_id"]
    watch = {"project": pid, "community": "haicang"}
    pledges = f"/projects/{pid}/pledges"
    labour = d.post(c.residents[3], pledges, {"kind": "labour", "labour_minutes": 240})
    assert labour["recorded"][0]["data"] == {
        "project_id": pid, "community_id": "haicang", "pledge_id": labour["created_id"],
        "contributor_id": "haicang-r3", "contributor_name": "居民3", "contributor_type": "resident",
        "kind": "labour", "labour_minutes": 240, "description": ""}
    steel = d.post(c.cadre, pledges, {"kind": "materials", "materials_fen": 300_000, "description": "不锈钢扶手",
                                      "contributor": {"contributor_id": "acme-steel", "name": "海沧钢材公司",
                                                      "type": "enterprise"}})
    d.post(c.grid_worker, pledges, {"kind": "skills", "skills_minutes": 120, "contributor": {
        "contributor_id": "sw-org", "name": "社工站", "type": "social_organisation"}})
    d.post(c.residents[4], pledges, {"kind": "money", "money_fen": 20_000})
    api.refused(c.residents[3], "POST", pledges, {"kind": "money", "money_fen": 1, "contributor": {
        "contributor_id": "acme-steel", "name": "海沧钢材公司", "type": "enterprise"}}, status=403,
        reason="pledge_for_other", **watch)
    api.refused(OUTSIDER, "POST", pledges, {"kind": "money", "money_fen": 1}, status=403, reason="other_community",
                **watch)
    api.refused(ORGANISER, "POST", pledges, {"kind": "money", "money_fen": 1}, status=403, reason="role_required",
                **watch)
    error = api.refused(c.residents[3], "POST", pledges, {"kind": "labour", "money_fen": 100}, status=422,
                        reason="invalid_amounts", **watch)
    assert set(error["errors"]) == {"money_fen", "labour_minutes", "reason", "detail"}  # detail: the English text
    error = api.refused(c.residents[3], "POST", pledges, {"kind": "materials", "materials_fen": 100}, status=422,
                        reason="invalid_amounts", **watch)
    assert error["errors"]["description"] == "describe the materials"
    for bad, fields in (({"kind": "labour", "labour_minutes": 0}, {"labour_minutes"}),
                        ({"kind": "time"}, {"kind"}),
                        ({"kind": "money", "money_fen": 1, "currency": "CNY"}, {"currency"}),
                        ({"kind": "money", "money_fen": 1, "contributor": {"contributor_id": "g", "name": "政府",
                                                                           "type": "government"}}, {"contributor"})):
        assert json_errors(api.refused(c.cadre, "POST", pledges, bad, status=422, **watch)) == fields

    delivery = f"{pledges}/{labour['created_id']}/deliveries"
    reply = d.post(c.grid_worker, delivery, {"labour_minutes": 210, "note": "实际 3.5 小时",
                                             "delivered_at": "2026-11-20T09:00:00+08:00"})
    assert {k: reply["recorded"][0]["data"][k] for k in ("delivery_no", "labour_minutes", "delivered_at",
                                                         "confirmed_by", "contributor_id")} == {
        "delivery_no": 1, "labour_minutes": 210, "delivered_at": "2026-11-20T01:00:00.000000Z",
        "confirmed_by": "haicang-grid", "contributor_id": "haicang-r3"}
    d.post(c.cadre, f"{pledges}/{steel['created_id']}/deliveries", {"materials_fen": 300_000})
    api.refused(c.residents[3], "POST", delivery, {"labour_minutes": 30}, status=403, reason="role_required", **watch)
    api.refused(OTHER_CADRE, "POST", delivery, {"labour_minutes": 30}, status=403, reason="other_community", **watch)
    api.refused(c.grid_worker, "POST", f"{pledges}/nope/deliveries", {"labour_minutes": 30}, status=422,
                reason="unknown_pledge", **watch)
    api.refused(c.grid_worker, "POST", delivery, {"money_fen": 30}, status=422, reason="invalid_amounts", **watch)
    error = api.refused(c.grid_worker, "POST", delivery, {"labour_minutes": 30, "delivered_at": "2026-11-20T09:00:00"},
                        status=422, **watch)
    assert json_errors(error) == {"delivered_at"}

    spending = f"/projects/{pid}/spending"
    reply = d.post(c.cadre, spending, {"amount_fen": 600_000, "receipt_ref": "FP-2026-0012", "description": "安装人工"})
    assert [e["event_type"] for e in reply["recorded"]] == ["FundSpent", "ProjectSpendingRecorded"]
    assert reply["project"]["totals"]["spent_fen"] == 600_000
    assert [(s["amount_fen"], s["receipt_ref"], s["description"]) for s in reply["project"]["spending"]] == [
        (600_000, "FP-2026-0012", "安装人工")]
    fund = api.fund("haicang")
    assert (fund["balance_fen"], fund["reserved_fen"], fund["spent_fen"]) == (7_000_000, 2_400_000, 600_000)
    assert fund["ledger"][-1]["kind"] == "spending" and fund["ledger"][-1]["balance_after_fen"] == 7_000_000
    assert fund["ledger"][-1]["detail"] == "FP-2026-0012 安装人工"
    error = api.refused(c.cadre, "POST", spending, {"amount_fen": 2_400_001, "receipt_ref": "FP-2"}, status=409,
                        reason="reservation_exceeded", **watch)
    assert error["errors"]["reservation_remaining_fen"] == 2_400_000
    api.refused(c.grid_worker, "POST", spending, {"amount_fen": 1, "receipt_ref": "FP-2"}, status=403,
                reason="role_required", **watch)
    assert json_errors(api.refused(c.cadre, "POST", spending, {"amount_fen": 0}, status=422, **watch)) == {
        "amount_fen", "receipt_ref"}

    milestones = f"/projects/{pid}/milestones"
    d.post(c.grid_worker, milestones, {"progress": 50, "note": "一至三楼完成"})
    error = api.refused(c.cadre, "POST", milestones, {"progress": 40, "note": "倒退"}, status=409,
                        reason="progress_backwards", **watch)
    assert error["errors"]["progress"] == 50
    assert json_errors(api.refused(c.cadre, "POST", milestones, {"progress": 101, "note": "x"}, status=422,
                                   **watch)) == {"progress"}
    api.refused(c.residents[1], "POST", milestones, {"progress": 60, "note": "x"}, status=403, reason="role_required",
                **watch)
    error = api.refused(c.cadre, "POST", f"/projects/{pid}/completion", status=409, reason="not_finished",
                        headers=EN, **watch)
    assert error["message"] == "the project can be completed only at progress 100 (it is 50)"
    d.post(c.cadre, milestones, {"progress": 100, "note": "全部完成"})
    api.refused(c.grid_worker, "POST", f"/projects/{pid}/completion", status=403, reason="role_required", **watch)

    reply = d.call(c.cadre, "POST", f"/projects/{pid}/completion")
    assert reply.status_code == 200
    body = reply.json()
    assert [e["event_type"] for e in body["recorded"]] == ["ProjectCompleted", "FundReservationReleased"]
    project = body["project"]
    assert (project["stage"], project["phase"], project["progress"]) == ("co_manage", "maintaining", 100)
    assert [m["progress"] for m in project["milestones"]] == [50, 100]
    assert project["totals"]["pledged"] == {"labour_minutes": 240, "skills_minutes": 120, "money_fen": 20_000,
                                            "materials_fen": 300_000}
    assert project["totals"]["delivered"] == {"labour_minutes": 210, "skills_minutes": 0, "money_fen": 0,
                                              "materials_fen": 300_000}
    assert project["totals"]["contributors"] == 4
    fund = api.fund("haicang")
    assert (fund["balance_fen"], fund["reserved_fen"], fund["released_fen"]) == (9_400_000, 0, 2_400_000)
    assert [e["kind"] for e in fund["ledger"]] == ["credit", "reservation", "spending", "release"]
    assert fund["ledger"][-1]["detail_label"] == {"zh": f"项目 {pid} 已完工，未用完的预留资金退回",
                                                  "en": f"unspent remainder of completed project {pid}"}
    api.refused(c.cadre, "POST", spending, {"amount_fen": 1, "receipt_ref": "FP-3"}, status=409, reason="wrong_stage",
                **watch)


# == 共管 co_manage ================================================================================

def test_co_manage_maintainers_logs_and_problems(api):
    d = api.d
    c = Community(d, "haicang")
    pid, _ = built(api, c)
    watch = {"project": pid}
    maintainers = f"/projects/{pid}/maintainers"
    d.post(c.grid_worker, maintainers, {"maintainer_id": "haicang-r4", "name": "居民4", "kind": "resident",
                                        "duty": "每周检查扶手", "rota": "每周六"})
    project = d.post(c.cadre, maintainers, {"maintainer_id": "team-1", "name": "楼长队", "kind": "group",
                                            "duty": "清洁", "members": ["haicang-r6", "haicang-r7"]})["project"]
    assert [(m["maintainer_id"], m["kind"], m["duty"], m["rota"], m["members"]) for m in project["maintainers"]] == [
        ("haicang-r4", "resident", "每周检查扶手", "每周六", []),
        ("team-1", "group", "清洁", "", ["haicang-r6", "haicang-r7"])]
    api.refused(c.cadre, "POST", maintainers, {"maintainer_id": "team-1", "name": "x", "kind": "group", "duty": "d"},
                status=409, reason="already_maintainer", **watch)
    api.refused(c.residents[1], "POST", maintainers, {"maintainer_id": "haicang-r1", "name": "x", "kind": "resident",
                                                      "duty": "d"}, status=403, reason="role_required", **watch)
    assert json_errors(api.refused(c.cadre, "POST", maintainers, {"maintainer_id": "m", "name": "x", "kind": "robot"},
                                   status=422, **watch)) == {"kind", "duty"}

    logs = f"/projects/{pid}/maintenance-logs"
    for person, maintainer in ((c.residents[4], "haicang-r4"), (c.residents[7], "team-1"), (c.grid_worker, None)):
        reply = d.post(person, logs, {"note": "螺丝紧固", "performed_at": "2026-11-21T10:00:00+08:00"})
        assert reply["recorded"][0]["data"] | {"log_id": None} == {
            "project_id": pid, "log_id": None, "maintainer_id": maintainer, "logged_by": person.person_id,
            "note": "螺丝紧固", "performed_at": "2026-11-21T02:00:00.000000Z"}
        assert reply["recorded"][0]["data"]["log_id"] == reply["created_id"]
    assert reply["project"]["maintenance_log_count"] == 3
    api.refused(c.residents[1], "POST", logs, {"note": "x", "performed_at": "2026-11-21T02:00:00Z"}, status=403,
                reason="role_required", **watch)
    assert json_errors(api.refused(c.residents[4], "POST", logs, {"note": "x", "performed_at": "2026-11-21 02:00"},
                                   status=422, **watch)) == {"performed_at"}

    problem = d.post(c.residents[5], f"/projects/{pid}/problems", {"description": "二楼扶手松动"})
    assert problem["project"]["problems"][0] | {"reported_at": None} == {
        "problem_id": problem["created_id"], "reported_by": "haicang-r5", "description": "二楼扶手松动",
        "reported_at": None, "resolved_at": None, "resolution": None, "resolution_seconds": None}
    api.refused(OUTSIDER, "POST", f"/projects/{pid}/problems", {"description": "x"}, status=403,
                reason="other_community", **watch)
    assert json_errors(api.refused(c.residents[5], "POST", f"/projects/{pid}/problems", {"description": ""},
                                   status=422, **watch)) == {"description"}
    resolution = f"/projects/{pid}/problems/{problem['created_id']}/resolution"
    api.refused(c.residents[5], "POST", resolution, {"resolution": "x"}, status=403, reason="role_required", **watch)
    api.refused(c.residents[4], "POST", f"/projects/{pid}/problems/nope/resolution", {"resolution": "x"},
                status=422, reason="unknown_problem", **watch)
    resolved = d.post(c.residents[4], resolution, {"resolution": "已加固"})["project"]["problems"][0]
    assert (resolved["resolution"], resolved["resolved_by"]) == ("已加固", "haicang-r4")
    assert resolved["resolved_at"] >= resolved["reported_at"] and resolved["resolution_seconds"] >= 0
    api.refused(c.cadre, "POST", resolution, {"resolution": "again"}, status=409, reason="already_resolved", **watch)


def test_a_projects_page_grown_from_an_older_one_is_the_page_read_whole_at_every_version(any_api, monkeypatch):
    """A page this process read at an earlier version is grown by the rows after it (views.ProjectDetails,
    issue 23): at every pair of versions the grown page is the page read whole — the entries, the
    latest maintenance logs and their count (two shown here, four written), each pledge's latest delivery."""
    from services.projects import views

    monkeypatch.setattr(views, "MAINTENANCE_LOGS_SHOWN", 2)  # (read when the queries are prepared, and when grown)
    monkeypatch.setattr(views, "DETAILS", views.ProjectDetails())  # the app's, prepared with 2 (the original after)
    api, d = any_api, any_api.d
    c = Community(d, "haicang")
    pid = c.approved_project()["project_id"]
    labour = d.post(c.residents[3], f"/projects/{pid}/pledges", {"kind": "labour", "labour_minutes": 240})["created_id"]
    money = d.post(c.residents[2], f"/projects/{pid}/pledges", {"kind": "money", "money_fen": 5_000})["created_id"]
    for minutes in (200, 40):  # the pledge's latest delivery replaces the first one's time on the page
        d.post(c.grid_worker, f"/projects/{pid}/pledges/{labour}/deliveries", {"labour_minutes": minutes})
    d.post(c.grid_worker, f"/projects/{pid}/pledges/{money}/deliveries", {"money_fen": 5_000})
    d.post(c.cadre, f"/projects/{pid}/milestones", {"progress": 100, "note": "全部完成"})
    d.post(c.cadre, f"/projects/{pid}/completion", status=200)
    d.post(c.grid_worker, f"/projects/{pid}/maintainers", {"maintainer_id": "haicang-r4", "name": "居民4",
                                                          "kind": "resident", "duty": "每周检查扶手"})
    for day in range(21, 25):
        d.post(c.residents[4], f"/projects/{pid}/maintenance-logs",
               {"note": f"第 {day} 日检查", "performed_at": f"2026-11-{day}T10:00:00+08:00"})
    problem = d.post(c.residents[5], f"/projects/{pid}/problems", {"description": "二楼扶手松动"})["created_id"]
    d.post(c.residents[4], f"/projects/{pid}/problems/{problem}/resolution", {"resolution": "已加固"})
    final = api.detail(pid)["version"]
    with api.store.read_transaction() as connection:
        whole = {version: views.ProjectDetails()._read(connection, pid, version) for version in range(1, final + 1)}
        assert whole[final].maintenance_log_count == 4 and len(whole[final].maintenance_logs) == 2
        assert len(whole[final].last_delivered_at) == 2 and whole[final].entries["ProblemResolved"]
        for older in range(1, final):
            for version in range(older + 1, final + 1):
                details = views.ProjectDetails()
                kept = details.page(connection, pid, older)
                details._read = lambda *_args: pytest.fail("read whole, not grown")
                assert details.page(connection, pid, version) == whole[version], (older, version)
                assert kept == whole[older]  # the kept page is left as it was
    assert [log["note"] for log in api.detail(pid)["maintenance_logs"]] == ["第 23 日检查", "第 24 日检查"]


# == 共评 co_evaluate ==============================================================================

def test_the_evaluation_opens_rates_once_and_closes_with_the_average(api):
    d = api.d
    c = Community(d, "haicang")
    pid, _ = built(api, c)  # the vote was opened without naming a responsible unit
    watch = {"project": pid}
    open_path = f"/projects/{pid}/evaluation/open"
    api.refused(c.residents[0], "POST", f"/projects/{pid}/evaluation/ratings", {"score": 5}, status=409,
                reason="wrong_stage", **watch)
    api.refused(c.grid_worker, "POST", open_path, {"responsible_unit": UNIT}, status=403, reason="role_required",
                **watch)
    error = api.refused(c.cadre, "POST", open_path, {}, status=422, reason="responsible_unit_required", **watch)
    assert "responsible_unit" in error["errors"]
    reply = d.call(c.cadre, "POST", open_path, {"responsible_unit": UNIT})
    assert reply.status_code == 200
    project = reply.json()["project"]
    assert (project["stage"], project["phase"], project["responsible_unit"]) == ("co_evaluate", "evaluating", UNIT)
    assert project["allowed_actions"] == UPKEEP + ["rate", "close_evaluation"]

    ratings = f"/projects/{pid}/evaluation/ratings"
    for person, score in zip(c.residents, (5, 5, 4, 4, 3)):
        reply = d.post(person, ratings, {"score": score, "comment": f"{score} 分"})
        assert reply["recorded"][0]["data"]["responsible_unit"] == UNIT
    assert api.detail(pid)["evaluation"] | {"opened_at": None} == {
        "responsible_unit": UNIT, "opened_at": None, "closed_at": None, "ratings": 5, "average": 4.2}
    error = api.refused(c.residents[0], "POST", ratings, {"score": 1}, status=409, reason="already_rated",
                        headers=EN, **watch)
    assert error["message"].startswith("you have already rated this project")
    for bad in ({"score": 6}, {"score": 0}, {"score": "5"}, {}):
        assert json_errors(api.refused(c.residents[6], "POST", ratings, bad, status=422, **watch)) == {"score"}
    api.refused(c.cadre, "POST", ratings, {"score": 5}, status=403, reason="role_required", **watch)
    api.refused(OUTSIDER, "POST", ratings, {"score": 5}, status=403, reason="other_community", **watch)
    api.refused(c.residents[0], "POST", f"/projects/{pid}/evaluation/close", status=403, reason="role_required",
                **watch)

    reply = d.call(c.cadre, "POST", f"/projects/{pid}/evaluation/close")
    assert reply.status_code == 200
    assert reply.json()["recorded"][0]["data"] == {"project_id": pid, "count": 5, "average": 4.2,
                                                   "closed_by": "haicang-cadre"}
    project = reply.json()["project"]
    assert (project["stage"], project["phase"]) == ("co_share", "results_pending")
    assert (project["evaluation"]["ratings"], project["evaluation"]["average"]) == (5, 4.2)
    assert project["evaluation"]["closed_at"]
    api.refused(c.residents[6], "POST", ratings, {"score": 5}, status=409, reason="wrong_stage", **watch)


# == 共享 co_share =================================================================================

def test_results_are_published_once_and_rewards_paid_from_the_fund(any_api):
    api, d = any_api, any_api.d
    c = Community(d, "haicang")
    pid = shared(api, c)
    watch = {"project": pid, "community": "haicang"}
    results = f"/projects/{pid}/results"
    api.refused(c.grid_worker, "POST", results, {"benefits": "x"}, status=403, reason="role_required", **watch)
    assert json_errors(api.refused(c.cadre, "POST", results, {"volunteer_minutes": -1}, status=422, **watch)) == {
        "benefits", "volunteer_minutes"}
    project = d.post(c.cadre, results, {"benefits": "120 户老人上下楼更安全"})["project"]
    assert project["phase"] == "published"
    assert project["results"] | {"at": None} == {
        "benefits": "120 户老人上下楼更安全",
        "contributions": {"labour_minutes": 210, "skills_minutes": 0, "money_fen": 0, "materials_fen": 300_000},
        "by_contributor_type": {
            "resident": {"labour_minutes": 210, "skills_minutes": 0, "money_fen": 0, "materials_fen": 0},
            "enterprise": {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0, "materials_fen": 300_000},
            "social_organisation": {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0, "materials_fen": 0}},
        "contributors": 2, "spent_fen": 600_000, "volunteer_minutes": 210,
        "evaluation": {"count": 5, "average": 4.2}, "at": None}
    error = api.refused(c.cadre, "POST", results, {"benefits": "again"}, status=409, reason="wrong_stage", **watch)
    assert error["errors"]["allowed_actions"] == UPKEEP + ["pay_reward"]

    rewards = f"/projects/{pid}/rewards"
    reply = d.post(c.cadre, rewards, {"recipient_id": "acme-steel", "amount_fen": 50_000, "reason": "以奖代补:捐赠扶手"})
    assert [e["event_type"] for e in reply["recorded"]] == ["FundRewardPaid", "RewardGranted"]
    assert [(r["recipient_id"], r["recipient_name"], r["amount_fen"], r["reason"]) for r in reply["project"]["rewards"]] \
        == [("acme-steel", "海沧钢材公司", 50_000, "以奖代补:捐赠扶手")]
    assert reply["project"]["totals"]["rewards_fen"] == 50_000
    fund = api.fund("haicang")
    assert (fund["balance_fen"], fund["rewards_fen"]) == (9_350_000, 50_000)
    assert fund["ledger"][-1] | {"position": 0, "at": ""} == {
        "position": 0, "kind": "reward", "amount_fen": 50_000, "balance_after_fen": 9_350_000, "project_id": pid,
        "detail": "海沧钢材公司: 以奖代补:捐赠扶手",
        "detail_label": {"zh": "海沧钢材公司: 以奖代补:捐赠扶手", "en": "海沧钢材公司: 以奖代补:捐赠扶手"},
        "actor": "haicang-cadre", "at": ""}
    error = api.refused(c.cadre, "POST", rewards, {"recipient_id": "haicang-r9", "amount_fen": 1, "reason": "x"},
                        status=422, reason="not_a_contributor", **watch)
    assert error["errors"]["recipient_id"] == "must be one of the project's contributors"
    error = api.refused(c.cadre, "POST", rewards, {"recipient_id": "haicang-r3", "amount_fen": 9_350_001,
                                                   "reason": "太多"}, status=409, reason="insufficient_fund",
                        headers=EN, **watch)
    assert error["message"] == "insufficient community fund: the balance is 9350000 fen, the reward is 9350001 fen"
    api.refused(c.residents[3], "POST", rewards, {"recipient_id": "haicang-r3", "amount_fen": 1, "reason": "x"},
                status=403, reason="role_required", **watch)
    assert json_errors(api.refused(c.cadre, "POST", rewards, {"recipient_id": "haicang-r3", "amount_fen": 0},
                                   status=422, **watch)) == {"amount_fen", "reason"}
    # Upkeep continues after the results.
    d.post(c.residents[1], f"/projects/{pid}/problems", {"description": "灯不亮"})


# == every command: 401, 403, 404 =================================================================

# path, a person allowed by the route's roles, a valid body, a person whose roles the route refuses
COMMANDS = [
    ("cosignatures", "resident", None, "cadre"),
    ("opinions", "resident", {"stance": "support", "text": "好"}, "organiser"),
    ("amendments", "resident", {"title": "新", "reason": "r"}, "cadre"),
    ("withdrawal", "resident", {"reason": "r"}, "cadre"),
    ("vote/open", "cadre", {}, "resident"),
    ("vote/ballots", "representative", {"choice": "yes"}, "resident"),
    ("vote/close", "cadre", None, "representative"),
    ("pledges", "resident", {"kind": "labour", "labour_minutes": 60}, "organiser"),
    ("pledges/pl-x/deliveries", "grid_worker", {"labour_minutes": 60}, "resident"),
    ("spending", "cadre", {"amount_fen": 1, "receipt_ref": "FP"}, "grid_worker"),
    ("milestones", "grid_worker", {"progress": 10, "note": "n"}, "resident"),
    ("completion", "cadre", None, "grid_worker"),
    ("maintainers", "grid_worker", {"maintainer_id": "m", "name": "x", "kind": "resident", "duty": "d"}, "resident"),
    ("maintenance-logs", "grid_worker", {"note": "n", "performed_at": "2026-11-21T02:00:00Z"}, "organiser"),
    ("problems", "resident", {"description": "d"}, "organiser"),
    ("problems/pb-x/resolution", "grid_worker", {"resolution": "r"}, "organiser"),
    ("evaluation/open", "cadre", {}, "grid_worker"),
    ("evaluation/ratings", "resident", {"score": 5}, "cadre"),
    ("evaluation/close", "cadre", None, "resident"),
    ("results", "cadre", {"benefits": "b"}, "grid_worker"),
    ("rewards", "cadre", {"recipient_id": "r3", "amount_fen": 1, "reason": "r"}, "representative"),
]


def test_every_command_is_401_without_a_token_403_for_a_wrong_role_and_404_for_an_unknown_project(api):
    c = Community(api.d, "haicang")
    pid = c.propose()["project_id"]
    people = {"resident": c.residents[0], "representative": Person("rep-only", "代表", ("representative",), "haicang"),
              "cadre": c.cadre, "grid_worker": c.grid_worker, "organiser": ORGANISER}
    watch = {"project": pid, "community": "haicang"}
    for path, allowed, body, wrong in COMMANDS:
        api.refused(None, "POST", f"/projects/{pid}/{path}", body, status=401, reason="unauthenticated", **watch)
        error = api.refused(people[wrong], "POST", f"/projects/{pid}/{path}", body, status=403,
                            reason="role_required", **watch)
        assert allowed in error["errors"]["roles"] and wrong not in error["errors"]["roles"], path
        error = api.refused(people[allowed], "POST", f"/projects/nope/{path}", body, status=404, reason="not_found",
                            headers=EN, **watch)
        assert error["message"] == "no project nope", path
    for path in ("/projects/nope", "/projects/nope/history", "/projects/nope/as-of?version=1"):
        api.refused(c.residents[0], "GET", path, status=404, reason="not_found")
        api.refused(None, "GET", path, status=401, reason="unauthenticated")


def test_a_command_in_the_wrong_stage_says_what_is_allowed_now(api):
    c = Community(api.d, "haicang")
    pid = c.approved_project()["project_id"]
    people = {"resident": c.residents[1], "representative": c.representatives[0], "cadre": c.cadre,
              "grid_worker": c.grid_worker}
    allowed = ["pledge", "confirm_delivery", "record_spending", "record_milestone", "complete"]
    for path, who, body, _wrong in COMMANDS:
        if path in ("pledges", "pledges/pl-x/deliveries", "spending", "milestones", "completion"):
            continue
        error = api.refused(people[who], "POST", f"/projects/{pid}/{path}", body, status=409, reason="wrong_stage",
                            headers=EN, project=pid, community="haicang")
        assert error["errors"]["allowed_actions"] == allowed, path
        assert error["message"].endswith(f"the project is in stage co_build (building); allowed now: "
                                         f"{', '.join(allowed)}"), error["message"]


# == a project's page =============================================================================

def read_models(store) -> dict[str, list[tuple]]:
    with store.engine.connect() as connection:
        return {table.name: sorted(tuple(row) for row in connection.execute(sa.select(table)))
                for projection in store.projections for table in projection.tables}


def test_the_page_shows_what_happened_with_its_times_as_of_any_version_and_after_a_rebuild(any_api, clock):
    """What only the page shows (every revision, co-signers, opinions, the vote's times, pledges and
    deliveries, spending, milestones, maintainers and their logs, problems, the evaluation's times,
    results and rewards) is read from the ``project_details`` read model: exactly, dated as the
    history dates its events; the page of any version (as-of) is the answer of the command that
    made that version; and a rebuild gives the same read models and pages."""
    api, d = any_api, any_api.d
    c = Community(d, "haicang")
    answers: dict[int, dict] = {}  # version -> the project in the answer of the command that made it

    def post(person, path, body=None, status=None) -> dict:
        reply = d.post(person, f"/projects/{pid}/{path}", body, status)
        answers[reply["project"]["version"]] = without_my_actions(reply["project"])
        return reply

    first = c.propose()
    pid = first["project_id"]
    answers[1] = without_my_actions(first)
    for person in c.residents[1:7]:
        post(person, "cosignatures")
    post(c.residents[8], "opinions", {"stance": "support", "text": "老人上下楼更安全"})
    post(c.residents[9], "opinions", {"stance": "oppose", "text": "先修电梯更好"})
    post(c.grid_worker, "opinions", {"stance": "support", "text": "网格员意见"})
    post(c.residents[0], "amendments", {"requested_fen": 900_000, "reason": "居民自筹一部分"})
    post(c.residents[0], "amendments", {"title": "修建活动室", "location": "5号楼旁", "reason": "换个位置"})
    post(c.cadre, "vote/open", {"responsible_unit": UNIT}, status=200)
    for rep in c.representatives:
        post(rep, "vote/ballots", {"choice": "yes"})
    post(c.cadre, "vote/close", status=200)
    labour = post(c.residents[3], "pledges", {"kind": "labour", "labour_minutes": 240})["created_id"]
    steel = post(c.cadre, "pledges", {"kind": "materials", "materials_fen": 300_000, "description": "不锈钢扶手",
                                      "contributor": {"contributor_id": "acme-steel", "name": "海沧钢材公司",
                                                      "type": "enterprise"}})["created_id"]
    post(c.grid_worker, f"pledges/{labour}/deliveries", {"labour_minutes": 120, "delivered_at": "2026-11-20T09:00:00+08:00"})
    clock.at = datetime(2026, 11, 21, 1, 0, tzinfo=timezone.utc)  # a delivery is dated now by default
    post(c.grid_worker, f"pledges/{labour}/deliveries", {"labour_minutes": 90})
    clock.at = None
    post(c.cadre, f"pledges/{steel}/deliveries", {"materials_fen": 300_000})
    post(c.cadre, "spending", {"amount_fen": 600_000, "receipt_ref": "FP-2026-0012", "description": "安装人工"})
    post(c.grid_worker, "milestones", {"progress": 50, "note": "一至三楼完成"})
    post(c.cadre, "milestones", {"progress": 100, "note": "全部完成"})
    post(c.cadre, "completion", status=200)
    post(c.grid_worker, "maintainers", {"maintainer_id": "haicang-r4", "name": "居民4", "kind": "resident",
                                        "duty": "每周检查扶手", "rota": "每周六"})
    post(c.cadre, "maintainers", {"maintainer_id": "team-1", "name": "楼长队", "kind": "group", "duty": "清洁",
                                  "members": ["haicang-r6", "haicang-r7"]})
    logs = [post(c.residents[4] if i % 2 else c.residents[6], "maintenance-logs",
                 {"note": f"巡查 {i}", "performed_at": "2026-11-21T02:00:00Z"})["created_id"] for i in range(52)]
    reported = post(c.residents[5], "problems", {"description": "二楼扶手松动"})
    [problem] = reported["project"]["problems"]
    clock.at = parse_time(problem["reported_at"]) + timedelta(minutes=90)
    post(c.residents[4], f"problems/{reported['created_id']}/resolution", {"resolution": "已加固"})
    clock.at = None
    post(c.cadre, "evaluation/open", status=200)
    for person, score in zip(c.residents, (5, 5, 4, 4, 3)):
        post(person, "evaluation/ratings", {"score": score})
    post(c.cadre, "evaluation/close", status=200)
    post(c.cadre, "results", {"benefits": "120 户老人上下楼更安全"})
    post(c.cadre, "rewards", {"recipient_id": "acme-steel", "amount_fen": 50_000, "reason": "以奖代补"})

    history = d.get(ADMIN, f"/projects/{pid}/history")["events"]
    at = {e["version"]: e["occurred_at"] for e in history}
    of = {}  # event type -> the versions of its events
    for e in history:
        of.setdefault(e["event_type"], []).append(e["version"])
    data = {e["version"]: e["data"] for e in history}
    page = api.detail(pid)
    assert page == answers[max(answers)] and page["version"] == len(history)

    assert page["cosigners"] == [{"person_id": p.person_id, "name": p.name, "at": at[v]}
                                 for p, v in zip(c.residents[1:7], of["ProjectCosigned"])]
    text = {"title": "修建休闲活动室", "description": "在小区空地建一间居民休闲活动室", "category": "facilities",
            "location": "3号楼旁", "estimated_cost_fen": 5_000_000, "requested_fen": 3_000_000}
    first_amendment, second_amendment = of["ProposalAmended"]
    assert page["revisions"] == [
        {"revision": 0, **text, "reason": "original proposal", "at": at[1]},
        {"revision": 1, **text, "requested_fen": 900_000, "reason": "居民自筹一部分", "at": at[first_amendment],
         "by": "haicang-r0"},
        {"revision": 2, **text, "requested_fen": 900_000, "title": "修建活动室", "location": "5号楼旁",
         "reason": "换个位置", "at": at[second_amendment], "by": "haicang-r0"}]
    assert page["opinions"] == [
        {"opinion_id": data[v]["opinion_id"], "person_id": who.person_id, "name": who.name, "stance": stance,
         "text": words, "at": at[v]}
        for v, who, stance, words in zip(of["OpinionPosted"], (c.residents[8], c.residents[9], c.grid_worker),
                                         ("support", "oppose", "support"), ("老人上下楼更安全", "先修电梯更好", "网格员意见"))]
    assert page["opinion_stances"] == {"support": 2, "oppose": 1, "neutral": 0}
    assert page["withdrawal"] is None
    assert page["vote"] == {
        "electorate_size": 9, "quorum_numerator": 2, "quorum_denominator": 3, "pass_numerator": 1,
        "pass_denominator": 2, "reserved_fen": 900_000, "opened_by": "haicang-cadre",
        "opened_at": at[of["CouncilVoteOpened"][0]], "closed_at": at[of["CouncilVoteClosed"][0]], "ballots_cast": 9,
        "tally": {"electorate_size": 9, "ballots": 9, "yes": 9, "no": 0, "abstain": 0, "quorum_required": 6,
                  "quorum_met": True, "result": "approved", "reason": "passed: 9 of 9 ballots were yes",
                  "reason_label": {"zh": "通过：9张选票中9张赞成", "en": "passed: 9 of 9 ballots were yes"}}}
    none = {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0, "materials_fen": 0}
    pledged_labour, pledged_steel = of["ContributionPledged"]
    assert page["pledges"] == [
        {"pledge_id": labour, "contributor_id": "haicang-r3", "contributor_name": "居民3",
         "contributor_type": "resident", "kind": "labour", "description": "", "at": at[pledged_labour],
         "pledged": {**none, "labour_minutes": 240}, "delivered": {**none, "labour_minutes": 210},
         "delivery_count": 2, "last_delivered_at": "2026-11-21T01:00:00.000000Z"},
        {"pledge_id": steel, "contributor_id": "acme-steel", "contributor_name": "海沧钢材公司",
         "contributor_type": "enterprise", "kind": "materials", "description": "不锈钢扶手", "at": at[pledged_steel],
         "pledged": {**none, "materials_fen": 300_000}, "delivered": {**none, "materials_fen": 300_000},
         "delivery_count": 1, "last_delivered_at": data[of["ContributionDelivered"][-1]]["delivered_at"]}]
    assert page["totals"] == {
        "pledged": {**none, "labour_minutes": 240, "materials_fen": 300_000},
        "delivered": {**none, "labour_minutes": 210, "materials_fen": 300_000},
        "by_contributor_type": {"resident": {**none, "labour_minutes": 210},
                                "enterprise": {**none, "materials_fen": 300_000}, "social_organisation": none},
        "contributors": 2, "spent_fen": 600_000, "rewards_fen": 50_000}
    [spent] = of["ProjectSpendingRecorded"]
    assert page["spending"] == [{"spending_id": data[spent]["spending_id"], "amount_fen": 600_000,
                                 "receipt_ref": "FP-2026-0012", "description": "安装人工", "at": at[spent]}]
    assert page["milestones"] == [{"progress": 50, "note": "一至三楼完成", "at": at[of["MilestoneRecorded"][0]]},
                                  {"progress": 100, "note": "全部完成", "at": at[of["MilestoneRecorded"][1]]}]
    assert page["completed_at"] == at[of["ProjectCompleted"][0]]
    assert page["maintainers"] == [
        {"maintainer_id": "haicang-r4", "name": "居民4", "kind": "resident", "duty": "每周检查扶手", "rota": "每周六",
         "members": [], "since": at[of["MaintainerAssigned"][0]]},
        {"maintainer_id": "team-1", "name": "楼长队", "kind": "group", "duty": "清洁", "rota": "",
         "members": ["haicang-r6", "haicang-r7"], "since": at[of["MaintainerAssigned"][1]]}]
    # The latest 50 of the 52 logs, oldest first, and how many there are.
    assert page["maintenance_log_count"] == 52
    assert page["maintenance_logs"] == [
        {"log_id": logs[i], "maintainer_id": "haicang-r4" if i % 2 else "team-1",
         "logged_by": (c.residents[4] if i % 2 else c.residents[6]).person_id, "note": f"巡查 {i}",
         "performed_at": "2026-11-21T02:00:00.000000Z", "at": at[of["MaintenanceLogged"][i]]} for i in range(2, 52)]
    assert page["problems"] == [{
        "problem_id": reported["created_id"], "reported_by": "haicang-r5", "description": "二楼扶手松动",
        "reported_at": at[of["ProblemReported"][0]], "resolved_at": at[of["ProblemResolved"][0]],
        "resolution": "已加固", "resolution_seconds": 5400, "resolved_by": "haicang-r4"}]
    assert page["evaluation"] == {"responsible_unit": UNIT, "opened_at": at[of["EvaluationOpened"][0]],
                                  "closed_at": at[of["EvaluationClosed"][0]], "ratings": 5, "average": 4.2}
    assert page["results"]["at"] == at[of["ResultsPublished"][0]]
    assert page["rewards"] == [{"recipient_id": "acme-steel", "recipient_name": "海沧钢材公司", "amount_fen": 50_000,
                                "reason": "以奖代补", "at": at[of["RewardGranted"][0]]}]

    # Before the problem's resolution it is open; the page of every version is that command's answer.
    before = d.get(ADMIN, f"/projects/{pid}/as-of?version={of['ProblemResolved'][0] - 1}")
    assert before["problems"] == [problem] and problem["resolved_at"] is None
    for version, answer in answers.items():
        assert d.get(ADMIN, f"/projects/{pid}/as-of?version={version}") == answer, version

    live = read_models(api.store)
    with api.store.engine.begin() as connection:  # rebuild must not depend on what is there
        for projection in api.store.projections:
            for table in projection.tables:
                connection.execute(table.delete())
    rebuild(api.store, page_size=7)
    assert read_models(api.store) == live
    assert api.detail(pid) == page


# == optimistic concurrency =======================================================================

def test_the_detail_carries_its_version_as_etag_and_a_stale_if_match_is_412(any_api):
    api, d = any_api, any_api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    d.post(c.residents[1], f"/projects/{pid}/cosignatures")
    read = d.call(c.residents[2], "GET", f"/projects/{pid}")
    assert read.headers["ETag"] == '"2"' and read.json()["version"] == 2
    watch = {"project": pid, "community": "haicang"}
    error = api.refused(c.residents[2], "POST", f"/projects/{pid}/cosignatures", headers={"If-Match": '"1"'},
                        status=412, reason="concurrency_conflict", **watch)
    assert (error["errors"]["expected_version"], error["errors"]["actual_version"]) == (1, 2)
    api.refused(c.residents[2], "POST", f"/projects/{pid}/cosignatures", headers={"If-Match": '"two"'},
                status=422, reason="invalid_if_match", **watch)
    reply = d.call(c.residents[2], "POST", f"/projects/{pid}/cosignatures", headers={"If-Match": read.headers["ETag"]})
    assert reply.status_code == 201 and reply.headers["ETag"] == '"3"'
    for person in c.residents[3:7]:
        d.post(person, f"/projects/{pid}/cosignatures")
    # A command that moves money too: the stale one reserves nothing.
    api.refused(c.cadre, "POST", f"/projects/{pid}/vote/open", {}, headers={"If-Match": '"7"'}, status=412,
                reason="concurrency_conflict", **watch)
    assert api.fund("haicang")["reserved_fen"] == 0
    etag = d.call(c.cadre, "GET", f"/projects/{pid}").headers["ETag"]
    assert etag == '"8"'
    reply = d.call(c.cadre, "POST", f"/projects/{pid}/vote/open", {}, headers={"If-Match": etag})
    assert reply.status_code == 200 and api.fund("haicang")["reserved_fen"] == 3_000_000


# == queries ======================================================================================

def test_list_filters_and_pagination(api):
    d = api.d
    a = Community(d, "haicang")
    b = Community(d, "jimei", representatives=0, residents=1, fund_fen=0)
    hall = a.propose(title="修建休闲活动室", location="3号楼旁")["project_id"]
    green = a.propose(a.residents[1], title="小区绿化", category="greening", grid_id="g2",
                      description="种植 100% 本地树种", location="中心花园")["project_id"]
    lights = a.approved_project(title="安装 LED 路灯", category="safety", description="背街小巷夜间无照明",
                                location="永兴路 12 巷")["project_id"]
    other = b.propose(b.residents[0], title="集美路灯", category="safety", location="集美路")["project_id"]
    withdrawn = a.propose(a.residents[2], title="停车位划线", category="parking", location="停车场")["project_id"]
    d.post(a.residents[2], f"/projects/{withdrawn}/withdrawal", {"reason": "不需要了"}, status=200)
    reader = ADMIN

    def ids(**query):
        page = d.get(reader, "/projects?" + urlencode(query))
        assert page["total"] >= len(page["items"])
        return [item["project_id"] for item in page["items"]]

    assert ids() == [withdrawn, other, lights, green, hall]  # newest first
    assert ids(community_id="haicang") == [withdrawn, lights, green, hall]
    assert ids(community_id="jimei") == [other]
    # Anyone else lists their own community's projects only.
    assert [p["project_id"] for p in d.get(b.residents[0], "/projects")["items"]] == [other]
    api.refused(b.residents[0], "GET", "/projects?community_id=haicang", status=403, reason="other_community")
    assert ids(grid_id="g2") == [green]
    assert ids(stage="co_build") == [lights]
    assert ids(stage="withdrawn") == [withdrawn]
    assert ids(stage="co_plan", community_id="haicang") == [green, hall]
    assert ids(category="safety") == [other, lights]
    assert ids(category="safety", community_id="haicang") == [lights]
    assert ids(proposer_id="haicang-r1") == [green]
    assert ids(q="路灯") == [other, lights]
    assert ids(q="led") == [lights]  # case-insensitive
    assert ids(q="3号楼") == [hall]  # the location
    assert ids(q="夜间") == [lights]  # the description
    assert ids(q="100%") == [green]
    assert ids(q="%") == [green]  # a literal percent sign, not a wildcard
    assert ids(q="不存在的词") == []
    summary = d.get(reader, f"/projects?{urlencode({'stage': 'co_build'})}")
    assert summary["items"][0] | {"created_at": None, "updated_at": None} == {
        "project_id": lights, "community_id": "haicang", "grid_id": "g1", "title": "安装 LED 路灯",
        "category": "safety", "category_label": "平安建设 safety", "stage": "co_build",
        "stage_label": "共建 co-building", "phase": "building", "phase_label": "建设中 building",
        "proposer_id": "haicang-r0", "proposer_name": "居民0", "requested_fen": 3_000_000,
        "estimated_cost_fen": 5_000_000, "progress": 0, "cosigner_count": 6, "version": 20,
        "created_at": None, "updated_at": None}

    pages = [d.get(reader, f"/projects?per_page=2&page={n}") for n in (1, 2, 3, 4)]
    assert [(p["total"], p["page"], p["per_page"], len(p["items"])) for p in pages] == [
        (5, 1, 2, 2), (5, 2, 2, 2), (5, 3, 2, 1), (5, 4, 2, 0)]
    assert [i["project_id"] for p in pages for i in p["items"]] == [withdrawn, other, lights, green, hall]
    assert d.get(reader, "/projects?community_id=haicang&per_page=1")["total"] == 4
    for bad, field in (("stage=building", "stage"), ("per_page=0", "per_page"), ("per_page=101", "per_page"),
                       ("page=0", "page"), ("category=fireworks", "category"), ("q=", "q")):
        error = api.refused(reader, "GET", f"/projects?{bad}", status=422)
        assert set(error["errors"]["query"]) == {field}, bad
    api.refused(None, "GET", "/projects", status=401)


def test_history_lists_every_event_with_actor_time_and_labels(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    c.qualify(pid)
    c.vote(pid, yes=6, no=2, abstain=1)
    history = d.get(c.residents[0], f"/projects/{pid}/history")
    assert history["project_id"] == pid
    events = history["events"]
    assert [e["event_type"] for e in events] == (
        ["ProjectProposed"] + ["ProjectCosigned"] * 6 + ["ProjectQualified", "CouncilVoteOpened"]
        + ["BallotCast"] * 9 + ["CouncilVoteClosed", "ProjectApproved"])
    assert [e["version"] for e in events] == list(range(1, 21))
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert [e["actor"] for e in events[:8]] == ["haicang-r0"] + [p.person_id for p in c.residents[1:7]] + ["haicang-r6"]
    assert events[-1]["actor"] == "haicang-cadre"
    assert [e["occurred_at"] for e in events] == sorted(e["occurred_at"] for e in events)
    assert all(e["occurred_at"].endswith("Z") for e in events)
    labels = {e["event_type"]: e["label"] for e in events}
    assert labels["ProjectProposed"] == {"zh": "提出项目", "en": "project proposed"}
    assert labels["BallotCast"] == {"zh": "代表投票", "en": "ballot cast"}
    assert labels["ProjectApproved"] == {"zh": "项目通过,进入共建", "en": "project approved"}
    assert all(label["zh"] and label["en"] and label["zh"] != label["en"] for label in labels.values())
    assert events[-2]["data"]["yes"] == 6 and events[0]["data"]["title"] == "修建休闲活动室"


def test_who_rated_is_shown_in_the_history_to_the_rater_and_the_communitys_staff_only(api):
    d = api.d
    c = Community(d, "haicang")
    pid, _ = built(api, c)
    d.post(c.cadre, f"/projects/{pid}/evaluation/open", {"responsible_unit": UNIT}, status=200)
    d.post(c.residents[5], f"/projects/{pid}/evaluation/ratings", {"score": 2, "comment": "不满意"})

    def rated(person):
        [event] = [e for e in d.get(person, f"/projects/{pid}/history")["events"] if e["event_type"] == "ProjectRated"]
        return event["actor"], event["data"].get("person_id"), event["data"]["score"]

    assert rated(c.cadre) == ("haicang-r5", "haicang-r5", 2)
    assert rated(ADMIN) == ("haicang-r5", "haicang-r5", 2)
    assert rated(c.grid_worker) == ("haicang-r5", "haicang-r5", 2)
    assert rated(c.residents[5]) == ("haicang-r5", "haicang-r5", 2)  # the rater
    assert rated(c.residents[0]) == (None, None, 2)
    api.refused(OTHER_CADRE, "GET", f"/projects/{pid}/history", status=403, reason="other_community")


def test_the_project_as_of_a_version_or_a_time(api):
    d = api.d
    c = Community(d, "haicang")
    pid = c.propose()["project_id"]
    c.qualify(pid)
    d.post(c.residents[0], f"/projects/{pid}/amendments", {"title": "修建活动室", "reason": "简短些"})
    path = f"/projects/{pid}/as-of"
    first = d.get(c.residents[5], f"{path}?version=1")
    assert (first["version"], first["phase"], first["cosigner_count"], first["title"]) == (
        1, "collecting_cosigners", 0, "修建休闲活动室")
    assert d.get(c.residents[5], f"{path}?version=7")["phase"] == "collecting_cosigners"
    qualified = d.get(c.residents[5], f"{path}?version=8")
    assert (qualified["phase"], qualified["cosigner_count"], qualified["allowed_actions"]) == (
        "deliberation", 6, ["cosign", "post_opinion", "amend", "withdraw", "open_vote"])
    assert d.get(c.residents[5], f"{path}?version=99") == api.detail(pid)
    history = d.get(c.residents[5], f"/projects/{pid}/history")["events"]
    third = history[2]["occurred_at"]
    at_third = d.get(c.residents[5], f"{path}?{urlencode({'at': third})}")
    assert (at_third["version"], at_third["cosigner_count"]) == (3, 2)
    before_amendment = d.get(c.residents[5], f"{path}?{urlencode({'at': history[-2]['occurred_at']})}")
    assert (before_amendment["version"], before_amendment["title"]) == (8, "修建休闲活动室")
    error = api.refused(c.residents[5], "GET", f"{path}?at=2020-01-01T00:00:00Z", status=404, reason="not_found",
                        headers=EN)
    assert error["message"] == f"project {pid} did not exist yet at that time"
    for bad in ("", "?version=1&at=2026-11-22T08:00:00Z", "?version=0", "?at=2026-11-22T08:00:00", "?at=yesterday"):
        error = api.refused(c.residents[5], "GET", f"{path}{bad}", status=422)
        assert set(error["errors"]["query"]) <= {"_schema", "version", "at"} and error["errors"]["query"], bad


def test_my_proposals_and_my_pledges(api):
    d = api.d
    c = Community(d, "haicang")
    pid, pledges = built(api, c)
    second = c.propose(title="楼道加装扶手", category="elderly_care")["project_id"]
    mine = d.get(c.residents[0], "/me/proposals")
    assert mine["total"] == 2 and [p["project_id"] for p in mine["items"]] == [second, pid]
    assert d.get(c.residents[1], "/me/proposals") == {"items": [], "total": 0}
    own = d.get(c.residents[3], "/me/pledges")["items"]
    assert [p | {"pledged_at": None} for p in own] == [{
        "pledge_id": pledges["labour"], "project_id": pid, "community_id": "haicang", "kind": "labour",
        "pledged": 240, "delivered": 210, "unit": "minutes", "contributor_type": "resident", "pledged_at": None}]
    assert d.get(c.cadre, "/me/pledges") == {"items": []}  # the enterprise's pledge is not the cadre's own
    api.refused(None, "GET", "/me/proposals", status=401, reason="unauthenticated")
    api.refused(None, "GET", "/me/pledges", status=401, reason="unauthenticated")


def test_community_statistics(api):
    d = api.d
    c = Community(d, "haicang")
    built_id, _ = built(api, c)  # co_manage, 600 000 spent, 2 400 000 released
    building = c.approved_project(title="安装路灯", requested_fen=2_000_000)["project_id"]
    d.post(c.residents[6], f"/projects/{building}/pledges", {"kind": "skills", "skills_minutes": 90})
    rejected = c.propose(title="修建活动室(西区)")["project_id"]
    c.qualify(rejected)
    c.vote(rejected, yes=3, no=5)
    c.propose(title="小区绿化", category="greening")
    withdrawn = c.propose(title="停车位", category="parking")["project_id"]
    d.post(c.residents[0], f"/projects/{withdrawn}/withdrawal", {"reason": "不需要了"}, status=200)
    Community(d, "jimei", representatives=0, residents=1, fund_fen=1_000)

    stats = d.get(c.residents[0], "/communities/haicang/stats")
    assert stats == {
        "community_id": "haicang", "projects": 5,
        "projects_per_stage": {"co_plan": 1, "co_build": 1, "co_manage": 1, "co_evaluate": 0, "co_share": 0,
                               "rejected": 1, "withdrawn": 1},
        "votes": {"approved": 2, "rejected": 1, "approval_rate": 0.6667},
        "contributions": {"labour_minutes": 210, "skills_minutes": 0, "money_fen": 0, "materials_fen": 300_000,
                          "contributors": 3},
        "project_spending_fen": 600_000,
        "fund": {"community_id": "haicang", "balance_fen": 7_400_000, "credited_fen": 10_000_000,
                 "reserved_fen": 2_000_000, "spent_fen": 600_000, "released_fen": 5_400_000, "rewards_fen": 0,
                 "version": 7}}
    empty = d.get(ADMIN, "/communities/jimei/stats")
    assert (empty["projects"], empty["votes"]["approval_rate"], empty["fund"]["balance_fen"]) == (0, None, 1_000)
    api.refused(c.residents[0], "GET", "/communities/jimei/stats", status=403, reason="other_community")
    api.refused(ADMIN, "GET", "/communities/nowhere/stats", status=404, reason="not_found")
    api.refused(None, "GET", "/communities/haicang/stats", status=401)


# -- endpoint by endpoint, in one pass each (the driver alone; key cases on PostgreSQL too) ----------

@pytest.fixture
def d(api) -> ProjectsDriver:
    return api.d


@pytest.fixture
def both(any_api) -> ProjectsDriver:
    return any_api.d


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


def test_proposal_refusals_endpoint_by_endpoint(d):
    c = Community(d, "prop-c")
    good = {"community_id": "prop-c", "grid_id": "g1", "title": "t", "description": "d", "category": "other",
            "estimated_cost_fen": 100, "requested_fen": 100}
    body = refused(d.call(c.residents[0], "POST", "/projects", {**good, "budget": 5}, EN), 422)
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
    body = refused(d.call(c.cadre, "POST", f"{path}/vote/open", {}, EN), 409, "insufficient_fund")
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
