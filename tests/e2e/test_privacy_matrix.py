"""The privacy matrix: every read route of the public API and the live stream, read by every kind of
reader, against what the privacy policy (docs/privacy.md "Who sees what") lets each of them learn.

Real parts: the three services under gunicorn, the gateway in front of them, the scenario written
through the gateway; the live feed filled from the services' own event stores (the feed worker's
Kafka hop is covered by test_gateway_platform).

Private facts are planted as canaries and looked for in every answer:
- ``rater_a``: the resident who rated a cadre 1 (and that rating's stored stream id);
- ``rater_b``: the resident who rated a grid worker 2 (and that rating's stored id);
- ``rater_p``: the resident who evaluated a project (共评);
- ``phone``: a volunteer's full phone number; ``checkin``: an activity's check-in code;
- ``ballot``: what the representative approved in a budgeting round (a list of that one proposal:
  the round's other voter approved both, and both won) — secret to everyone but the voter.
For each reader the set of canaries seen over all routes must be exactly the expected one: a new
route or field that leaks fails the test, and so does a policy that hides too much. A GET route not
listed in ``PATHS`` fails the test too, until it is added here. The public reads (``/public/...``)
are read by every reader and by a visitor without a token, and show none of the canaries.
"""

from __future__ import annotations

import importlib
import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from gateway import app as gateway_app
from gateway.catalogue import PREFIX
from services.kernel.db import make_engine, write_transaction
from services.kernel.events import utc_now
from services.kernel.eventstore import EventStore
from tests.conftest import TEST_SECRET
from tests.support.projects import Community, FlaskClient, Person, ProjectsDriver
from tests.support.servers import ServiceServer

A, B = "anhai", "binhai"
UNIT = {"unit_id": "jsb", "name": "街道建设办"}
PHONE = "13912345678"

RATED_CADRE = Person("anhai-cadre-rated", "王书记", ("cadre",), A)
HOLDER = Person("anhai-vol", "志愿者甲", ("volunteer", "resident"), A)
ORGANISER = Person("anhai-org", "安海社工站", ("organiser",), A)
READERS = {
    "resident": Person("anhai-r11", "居民11", ("resident",), A),
    "rater": Person("anhai-r8", "居民8", ("resident",), A),
    "rated cadre": RATED_CADRE,
    "cadre, same community": Person("anhai-cadre", "社区干部", ("cadre",), A),
    "cadre, other community": Person("binhai-cadre", "外社区干部", ("cadre",), B),
    "grid worker (rated, case handler)": Person("anhai-grid", "网格员", ("grid_worker",), A),
    "representative": Person("anhai-rep0", "代表0", ("representative", "resident"), A),
    "volunteer": Person("anhai-vol2", "志愿者乙", ("volunteer", "resident"), A),
    "card holder": HOLDER,
    "organiser, same community": ORGANISER,
    "organiser, other community": Person("binhai-org", "外社区社工站", ("organiser",), B),
    "admin": Person("admin-1", "管理员", ("admin",), None),
    "token without community": Person("drifter", "无社区", ("resident",), None),
}
ALL = {"rater_a", "rater_b", "rater_p", "phone", "checkin"}
STAFF = ALL  # of the community, when not rated
EXPECTED = {
    "resident": set(),
    "rater": {"rater_a"},  # their own rating
    "rated cadre": STAFF - {"rater_a"},
    "cadre, same community": STAFF,
    "cadre, other community": set(),
    "grid worker (rated, case handler)": STAFF - {"rater_b"},
    "representative": {"ballot"},  # their own ballot in the budgeting round
    "volunteer": set(),
    "card holder": {"phone"},
    "organiser, same community": {"phone", "checkin"},
    "organiser, other community": set(),
    "admin": ALL,
    "token without community": set(),
}
# Routes a token without a community may read: about the caller only (and the public reads).
OWN = {"/whoami", "/me", "/me/card", "/me/erasure", "/me/ratings", "/me/proposals", "/me/pledges", "/me/rated",
       "/me/data", "/me/data/projects", "/me/data/volunteers", "/me/data/feedback"}


class Gateway:
    """The gateway app in this process, in front of the services; paths without the /api/v1 prefix."""

    def __init__(self, app) -> None:
        self.client = app.test_client()
        self.flask = FlaskClient(self.client)

    def request(self, method, path, json_body=None, headers=None):
        return self.flask.request(method, PREFIX + path, json_body, headers)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("privacy-matrix")
    servers = {}
    for name in ("projects", "volunteers", "feedback"):
        (base / name).mkdir()
        servers[name] = ServiceServer(name, base / name, workers=1).start()
    settings = gateway_app.load_settings(environ={
        "COCREATE_JWT_SECRET": TEST_SECRET, "GATEWAY_DATA_DIR": str(base / "gateway"),
        "GATEWAY_RATE_LIMIT_PER_CALLER": "0", "GATEWAY_RATE_LIMIT_PER_IP": "0",
        "GATEWAY_UPSTREAM_TIMEOUT_SECONDS": "30",
        **{f"GATEWAY_{name.upper()}_URL": server.base_url for name, server in servers.items()}})
    (base / "gateway").mkdir()
    app = gateway_app.create_app(settings)
    try:
        yield scenario(app, servers, base)
    finally:
        app.extensions["cocreate.gateway_store"].engine.dispose()
        for server in servers.values():
            server.stop()


def scenario(app, servers, base) -> dict:
    d = ProjectsDriver(Gateway(app))
    c = Community(d, A)
    Community(d, B, representatives=0, fund_fen=0)
    # 共评: resident 10 (who does nothing else in public) evaluates a project.
    pid = c.project_in_evaluation(UNIT)
    d.post(c.residents[10], f"/projects/{pid}/evaluation/ratings", {"score": 2, "comment": "灯不够亮"})
    # Ratings: resident 8 rates the cadre 1, resident 9 rates the grid worker 2 (each opens a case).
    d.post(c.cadre, "/subjects", {"subject_id": "cadre-wang", "kind": "cadre", "name": "王书记", "community_id": A,
                                  "person_id": RATED_CADRE.person_id, "unit_id": "sq"})
    d.post(c.cadre, "/subjects", {"subject_id": "grid-li", "kind": "grid_worker", "name": "李网格员",
                                  "community_id": A, "person_id": c.grid_worker.person_id, "unit_id": "sq"})
    rating_a = d.post(c.residents[8], "/subjects/cadre-wang/ratings", {"level": 1, "comment": "态度差"})["resource"]
    rating_b = d.post(c.residents[9], "/subjects/grid-li/ratings", {"level": 2, "comment": "不回电话"})["resource"]
    # The volunteer card with a phone, an activity it signed up for, a certificate.
    d.post(HOLDER, "/cards", {"name": HOLDER.name, "community_id": A, "phone": PHONE})
    d.post(READERS["volunteer"], "/cards", {"name": "志愿者乙", "community_id": A, "phone": "13700000000"})
    start = utc_now() + timedelta(days=2)
    activity = d.post(ORGANISER, "/activities", {
        "title": "敬老院陪伴", "community_id": A, "place": "敬老院",
        "organiser": {"kind": "social_organisation", "id": "anhai-org", "name": "安海社工站"},
        "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=3)).isoformat(),
        "capacity": 5, "planned_minutes": 180, "points_per_hour": 10})
    d.post(HOLDER, f"/activities/{activity['created_id']}/signups")
    # A budgeting round: the representative approves one proposal, another resident both; both win.
    x, y = (c.propose(title=title, requested_fen=100_000, estimated_cost_fen=100_000)["project_id"]
            for title in ("楼道灯", "花坛"))
    c.qualify(x)
    c.qualify(y)
    rid = d.post(c.cadre, f"/communities/{A}/rounds", {
        "title": "微更新", "budget_fen": 300_000, "rule": "mes", "project_ids": [x, y],
        "closes_at": (utc_now() + timedelta(days=7)).isoformat()})["created_id"]
    voter = READERS["representative"]
    d.ok(voter, "PUT", f"/rounds/{rid}/ballot", {"approvals": [x]})
    d.ok(c.residents[1], "PUT", f"/rounds/{rid}/ballot", {"approvals": [x, y]})
    d.post(c.cadre, f"/rounds/{rid}/close", {}, status=200)

    stored = {}
    feedback_store = EventStore(make_engine(f"sqlite:///{base}/feedback/var/feedback.db"), service="feedback")
    with feedback_store.engine.connect() as connection:
        for stream_id, person in connection.execute(sa.text(
                "SELECT stream_id, data FROM events WHERE event_type = 'RatingSubmitted'")).all():
            stored[json.loads(person)["person_id"]] = stream_id.removeprefix("rating-")
    # The live feed, filled from every service's log (what the feed worker does from Kafka), and
    # every subject-level summary due.
    gateway_store = app.extensions["cocreate.gateway_store"]
    for name in ("projects", "volunteers", "feedback"):
        store = EventStore(make_engine(f"sqlite:///{base}/{name}/var/{name}.db"), service=name)
        with write_transaction(gateway_store.engine) as connection:
            for event in store.read_all(0, 100_000):
                gateway_store.add_feed_event(connection, event)
        store.engine.dispose()
    gateway_store.flush_summaries(utc_now() + timedelta(minutes=2))
    feedback_store.engine.dispose()

    canaries = {
        "rater_a": [f'"{c.residents[8].person_id}"', stored[c.residents[8].person_id]],
        "rater_b": [f'"{c.residents[9].person_id}"', stored[c.residents[9].person_id]],
        "rater_p": [f'"{c.residents[10].person_id}"'],
        "phone": [PHONE],
        "checkin": [f'"{activity["resource"]["checkin_code"]}"'],
        "ballot": [f'["{x}"]', f'[\n  "{x}"\n]', f'[ "{x}" ]'],
    }
    paths = {
        "/admin/{service}/events": "/admin/{service}/events?limit=1000",
        "/admin/{service}/streams/<stream_id>": "/admin/feedback/streams/rating-" + stored[c.residents[8].person_id],
        "/admin/{service}/streams/<stream_id>/events": [
            "/admin/feedback/streams/rating-" + stored[c.residents[8].person_id] + "/events",
            f"/admin/projects/streams/roundballot-{rid}:{voter.person_id}/events"],
        "/communities": "/communities",
        "/communities/<community_id>": f"/communities/{A}",
        "/communities/<community_id>/fund": f"/communities/{A}/fund",
        "/communities/<community_id>/stats": f"/communities/{A}/stats",
        "/communities/<community_id>/dashboard": f"/communities/{A}/dashboard",
        "/communities/<community_id>/rounds": f"/communities/{A}/rounds",
        "/rounds/<round_id>": f"/rounds/{rid}",
        "/rounds/<round_id>/verification": f"/rounds/{rid}/verification",
        "/projects": "/projects",
        "/projects/<project_id>": f"/projects/{pid}",
        "/projects/<project_id>/history": f"/projects/{pid}/history",
        "/projects/<project_id>/as-of": f"/projects/{pid}/as-of?version=99",
        "/projects/<project_id>/overview": f"/projects/{pid}/overview",
        "/projects/<project_id>/minutes": f"/projects/{pid}/minutes",
        "/me/proposals": "/me/proposals",
        "/me/pledges": "/me/pledges",
        "/me/card": "/me/card",
        "/me/erasure": "/me/erasure",
        "/me/rated": "/me/rated",
        "/me/data": "/me/data",  # (format=zip: the same, compressed; tests/e2e/test_gateway_platform.py)
        "/me/data/projects": "/me/data/projects",
        "/me/data/volunteers": "/me/data/volunteers",
        "/me/data/feedback": "/me/data/feedback",
        "/erasures": "/erasures",
        "/me/ratings": "/me/ratings",
        "/me": "/me",
        "/whoami": "/whoami",
        "/cards/<person_id>": f"/cards/{HOLDER.person_id}",
        "/cards/<person_id>/history": f"/cards/{HOLDER.person_id}/history",
        "/activities": "/activities",
        "/activities/<activity_id>": f"/activities/{activity['created_id']}",
        "/rewards": "/rewards",
        "/certificates/<number>": "/certificates/ZYFW-none",
        "/leaderboards/<community_id>": f"/leaderboards/{A}?period=all",
        "/hours/<community_id>": f"/hours/{A}",
        "/policies/<community_id>": f"/policies/{A}",
        "/subjects": "/subjects",
        "/subjects/<subject_id>": "/subjects/cadre-wang",
        "/subjects/<subject_id>/ratings": ["/subjects/cadre-wang/ratings", "/subjects/grid-li/ratings"],
        "/subjects/<subject_id>/flags": "/subjects/cadre-wang/flags",
        "/ratings/<rating_id>": [f"/ratings/{rating_a['rating_id']}", f"/ratings/{rating_b['rating_id']}"],
        "/cases": "/cases",
        "/cases/summary": f"/cases/summary?community_id={A}",
        "/cases/<case_id>": [f"/cases/{rating_a['case_id']}", f"/cases/{rating_b['case_id']}"],
        "/rankings/<community_id>/<kind>": [f"/rankings/{A}/cadre", f"/rankings/{A}/grid_worker"],
        "/rankings/<community_id>/<kind>/<period>": f"/rankings/{A}/cadre/2026-01",
        "/rankings/<community_id>/<kind>/<period>/verification": f"/rankings/{A}/cadre/2026-01/verification",
        "/plans": "/plans",
        "/plans/<plan_id>": "/plans/none",
        "/live": "/live",
        "/public/communities/<community_id>": f"/public/communities/{A}",
        "/public/communities/<community_id>/projects": f"/public/communities/{A}/projects",
        "/public/communities/<community_id>/fund": f"/public/communities/{A}/fund",
        "/public/projects/<project_id>": f"/public/projects/{pid}",
        "/public/communities/<community_id>/rounds": f"/public/communities/{A}/rounds",
        "/public/rounds/<round_id>": f"/public/rounds/{rid}",
        "/public/rankings/<community_id>/<kind>": f"/public/rankings/{A}/cadre",
        "/public/rankings/<community_id>/<kind>/<period>": f"/public/rankings/{A}/cadre/2026-01",
        **{f"/public/open-data/communities/<community_id>/{dataset}/{name}":
           f"/public/open-data/communities/{A}/{dataset}/{name}"
           for dataset in ("projects", "volunteers", "feedback")
           for name in importlib.import_module(f"services.{dataset}.open_data").DATASET.files()},
        "/public/certificates/<number>/verification": "/public/certificates/ZYFW-none/verification?value=" + "0" * 64,
    }
    return {"app": app, "gateway": Gateway(app), "canaries": canaries, "paths": paths}


def read_routes(app) -> list[str]:
    """Every GET route of the public API, as the gateway's catalogue and its own rules list them."""
    rules = set()
    for rule in gateway_app.catalogue().map.iter_rules():
        if "GET" in (rule.methods or ()):
            name = rule.rule
            for service in ("projects", "volunteers", "feedback"):
                name = name.replace(f"/admin/{service}/", "/admin/{service}/")
            rules.add(name)
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PREFIX + "/") and "GET" in (rule.methods or ()) and "<path:" not in rule.rule:
            rules.add(rule.rule[len(PREFIX):])
    return sorted(rules)


def live_text(gateway: Gateway, person: Person, query: str = "", headers: dict | None = None) -> tuple[int, str]:
    """The live stream up to its first ``: caught-up`` (everything already in the feed)."""
    headers = person.headers if headers is None else headers
    response = gateway.client.get(PREFIX + "/live" + query, headers={**headers, "Last-Event-ID": "0"}, buffered=False)
    if response.status_code != 200:
        return response.status_code, response.get_data(as_text=True)
    text = ""
    try:
        for chunk in response.iter_encoded():
            text += chunk.decode()
            if ": caught-up" in text:
                break
    finally:
        response.close()
    return 200, text


def ticket_text(gateway: Gateway, person: Person) -> tuple[int, str]:
    """The live stream as a browser's EventSource reads it: with a stream ticket, no token."""
    issued = gateway.request("POST", "/live/tickets", {}, headers=person.headers)
    if issued.status_code != 201:
        return issued.status_code, issued.body.decode()
    ticket = json.loads(issued.body)["ticket"]
    return live_text(gateway, person, query=f"?ticket={ticket}&named=false", headers={})


@pytest.mark.parametrize("reader", list(READERS))
def test_a_stream_ticket_shows_its_holder_exactly_what_their_token_does(world, reader):
    person, gateway = READERS[reader], world["gateway"]
    by_token, by_ticket = live_text(gateway, person), ticket_text(gateway, person)
    if reader == "token without community":
        assert by_token[0] == by_ticket[0] == 403
        return
    assert by_token[0] == by_ticket[0] == 200, (by_token[1][:300], by_ticket[1][:300])
    seen = {kind: {canary for canary, needles in world["canaries"].items() if any(n in text for n in needles)}
            for kind, (_, text) in (("token", by_token), ("ticket", by_ticket))}
    assert seen["ticket"] == seen["token"] <= EXPECTED[reader], seen
    ids = {kind: re.findall(r"^id: (\d+)$", text, re.M) for kind, (_, text) in (("token", by_token),
                                                                                ("ticket", by_ticket))}
    assert ids["ticket"] == ids["token"] and ids["token"], ids


def test_every_read_route_is_in_the_matrix(world):
    unknown = [rule for rule in read_routes(world["app"]) if rule not in world["paths"]]
    assert not unknown, f"read routes missing from the privacy matrix (add them to PATHS): {unknown}"


@pytest.mark.parametrize("reader", list(READERS))
def test_each_reader_learns_exactly_what_the_policy_says(world, reader):
    person, gateway = READERS[reader], world["gateway"]
    seen: dict[str, set[str]] = {}
    statuses = {}
    for rule, paths in world["paths"].items():
        for path in paths if isinstance(paths, list) else [paths]:
            paths_for = [path.format(service=s) for s in ("projects", "volunteers", "feedback")] \
                if "{service}" in path else [path]
            for concrete in paths_for:
                if rule == "/live":
                    status, text = live_text(gateway, person)
                else:
                    reply = gateway.request("GET", concrete, headers=person.headers)
                    status, text = reply.status_code, reply.body.decode()
                assert status < 500, (reader, concrete, status, text[:300])
                statuses[concrete] = status
                for canary, needles in world["canaries"].items():
                    if any(needle in text for needle in needles):
                        seen.setdefault(canary, set()).add(concrete)
    leaked = {canary: sorted(where) for canary, where in seen.items() if canary not in EXPECTED[reader]}
    assert not leaked, f"{reader} learns what the policy keeps from them: {leaked}"
    assert set(seen) == EXPECTED[reader], f"{reader} should see {sorted(EXPECTED[reader])}, saw {sorted(seen)}"
    if reader == "token without community":
        refused = {path: status for path, status in statuses.items()
                   if path.split("?")[0] not in OWN and not path.startswith("/public/") and status not in (403,)}
        assert not refused, f"a token without a community reads community routes: {refused}"
    if reader == "cadre, other community":
        # (A project's volunteer minutes count the reader's own community's volunteers only: 0 here.)
        read = {path: status for path, status in statuses.items() if status not in (403, 404)
                and not path.endswith("/minutes") and not path.startswith("/public/") and (
            A in path or path.split("?")[0].startswith(("/projects/", "/subjects/", "/ratings/", "/cases/",
                                                        "/activities/", "/cards/")))}
        assert not read, f"a cadre of another community reads this community's records: {read}"


def test_a_visitor_without_a_token_reads_the_public_reads_only_and_no_canary(world):
    gateway = world["gateway"]
    for rule, paths in world["paths"].items():
        for path in paths if isinstance(paths, list) else [paths]:
            for concrete in sorted({path.format(service=s) for s in ("projects", "volunteers", "feedback")}):
                reply = gateway.request("GET", concrete)
                text = reply.body.decode()
                if rule.startswith("/public/"):
                    assert reply.status_code in (200, 404), (concrete, reply.status_code, text[:300])
                    seen = [c for c, needles in world["canaries"].items() if any(n in text for n in needles)]
                    assert seen == [], (concrete, seen)
                else:
                    assert reply.status_code == 401, (concrete, reply.status_code, text[:300])


def live_events(gateway: Gateway, person: Person) -> list[dict]:
    _status, text = live_text(gateway, person)
    return [json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]


def test_residents_and_the_rated_get_subject_level_summaries_on_the_live_stream(world):
    gateway = world["gateway"]
    individual = {"RatingSubmitted", "FollowUpOpened", "ProjectRated"}
    for reader in ("resident", "rater", "representative"):
        events = live_events(gateway, READERS[reader])
        assert {"cadre-wang", "grid-li"} <= {e["data"]["subject_id"] for e in events
                                            if e["event_type"] == "RatingsChanged"}, reader
        assert not individual & {e["event_type"] for e in events}, reader
    # The rated cadre: no event of their own ratings, only the summary; as staff, the others'.
    events = live_events(gateway, RATED_CADRE)
    assert "cadre-wang" in {e["data"]["subject_id"] for e in events if e["event_type"] == "RatingsChanged"}
    assert not [e for e in events if e["event_type"] in individual and e["data"].get("subject_id") == "cadre-wang"]
    assert [e["data"]["person_id"] for e in events if e["event_type"] == "RatingSubmitted"] == ["anhai-r9"]
    staff = {e["event_type"] for e in live_events(gateway, READERS["cadre, same community"])}
    assert individual <= staff
