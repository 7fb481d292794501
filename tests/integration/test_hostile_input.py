"""Hostile JSON bodies get a 4xx in the one error shape before any schema or store sees them, at a
service (on SQLite and PostgreSQL) and at the gateway, and nothing is written (issue 13's
hostile-input cases for bodies: deep nesting, lone surrogates, NUL, integers beyond 64 bits)."""

from __future__ import annotations

import importlib

import pytest

from services.kernel.auth import issue_token
from services.kernel.config import AuthSettings
from services.kernel.web import MAX_JSON_DEPTH, hostile_json
from services.projects.service import DEFINITION as PROJECTS
from tests.conftest import TEST_SECRET
from tests.support.apps import container, driver, gateway_app, service_app
from tests.support.errors import assert_error
from tests.support.projects import Person
from tests.support.servers import write_service_documents

ADMIN = Person("admin-1", "管理员", ("admin",), None)
RESIDENT = Person("h-r1", "居民", ("resident",), "hostile")
PROPOSAL = {"community_id": "hostile", "grid_id": "g1", "title": "修建休闲活动室", "description": "在小区空地建一间活动室",
            "category": "facilities", "location": "3号楼旁", "estimated_cost_fen": 5_000_000, "requested_fen": 3_000_000}
RAW_CASES = {  # raw bodies: json.dumps would refuse or escape some of these
    "nested 1,000 levels": (b'{"title": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, None),
    "a lone surrogate": (b'{"title": "\\ud800 fence"}', 422, "title"),
    "a NUL character": (b'{"description": "a\\u0000b"}', 422, "description"),
    "2^63 fen": (b'{"estimated_cost_fen": 9223372036854775808}', 422, "estimated_cost_fen"),
    "a NUL in a key": (b'{"ti\\u0000tle": "x"}', 422, "_schema"),
}


def body_with(raw: bytes) -> bytes:
    """The proposal with one field replaced by ``raw`` (a JSON object text)."""
    import json

    rest = json.dumps({k: v for k, v in PROPOSAL.items() if k.encode() not in raw}, ensure_ascii=False).encode()
    return raw[:-1] + b", " + rest[1:]


@pytest.fixture
def projects(tmp_path, database_url):
    app = service_app(PROJECTS, database_url, COCREATE_DATA_DIR=str(tmp_path))
    driver(app).post(ADMIN, "/communities", {"community_id": "hostile", "name": "海沧社区", "district": "海沧区",
                                             "grids": [{"grid_id": "g1", "name": "第一网格"}]})
    store = container(app).store
    yield app.test_client(), store
    store.engine.dispose()


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_a_hostile_proposal_is_refused_and_nothing_is_written(projects, case):
    client, store = projects
    raw, status, field = RAW_CASES[case]
    before = store.last_position()
    reply = client.post("/projects", data=body_with(raw), headers={**RESIDENT.headers,
                                                                   "Content-Type": "application/json"})
    error = assert_error(_Reply(reply), status)
    if field is not None:
        assert field in error["errors"]["json"], error
    assert store.last_position() == before
    # The same proposal without the hostile part is accepted: the refusal was about that part.
    assert client.post("/projects", json=PROPOSAL, headers=RESIDENT.headers).status_code == 201


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_the_gateway_refuses_hostile_bodies_before_forwarding_them(case):
    # No service runs behind this gateway: a forwarded request would be a 502/503/504, not this.
    client = gateway_app().test_client()
    token = issue_token(AuthSettings(jwt_secret=TEST_SECRET), person_id="h-r1", name="居民", roles=["resident"],
                        community="hostile")
    raw, status, field = RAW_CASES[case]
    reply = client.post("/api/v1/projects", data=body_with(raw),
                        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    error = assert_error(_Reply(reply), status)
    if field is not None:
        assert field in error["errors"]["json"], error


def test_the_depth_limit_and_what_it_does_not_count():
    assert hostile_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is None
    assert hostile_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))[0] == 400
    assert hostile_json(b'{"t": "' + b"[" * 500 + b'\\" {{"}') is None  # brackets inside strings
    assert hostile_json(b'{"n": -9223372036854775808, "m": 9223372036854775807, "f": 1e300}') is None
    assert hostile_json(b'{"n": -9223372036854775809}')[0] == 422
    assert hostile_json(b"not json") is None  # left to the schema's parser: a 400 of its own
    assert hostile_json('{"t": "海沧 \U0001F600"}'.encode()) is None  # a real astral character is fine


def test_a_body_is_parsed_once_and_only_as_utf_8(projects, monkeypatch):
    """The request hooks parse a JSON body to check it; the arguments' parser takes that document
    rather than parsing the body again. A body that is JSON in another encoding than UTF-8 (which
    Python's json would read from bytes) is refused with a 400 by the arguments' parser, as before,
    and nothing is written."""
    import json

    from webargs import core

    client, store = projects

    def parsed_again(*_args, **_kwargs):
        raise AssertionError("the body was parsed again")

    monkeypatch.setattr(core, "parse_json", parsed_again)
    assert client.post("/projects", json=PROPOSAL, headers=RESIDENT.headers).status_code == 201
    monkeypatch.undo()
    before = store.last_position()
    for encoding in ("utf-16", "utf-32"):
        reply = client.post("/projects", data=json.dumps(PROPOSAL, ensure_ascii=False).encode(encoding),
                            headers={**RESIDENT.headers, "Content-Type": "application/json"})
        assert_error(_Reply(reply), 400)
    assert store.last_position() == before


class _Reply:
    """Flask's test response with the shape assert_error reads."""

    def __init__(self, response) -> None:
        self.status_code = response.status_code
        self.headers = response.headers
        self.body = response.get_data()

    def json(self):
        import json

        return json.loads(self.body)


# -- query strings and the documents ------------------------------------------------------------

def service_client(definition, tmp_path, database_url):
    app = service_app(definition, database_url, COCREATE_DATA_DIR=str(tmp_path))
    return app.test_client(), container(app).store


@pytest.mark.parametrize("service", ["projects", "volunteers", "feedback"])
def test_integers_beyond_64_bits_in_query_strings_are_422_on_every_service(service, tmp_path, database_url):
    definition = importlib.import_module(f"services.{service}.service").DEFINITION
    client, store = service_client(definition, tmp_path, database_url)
    try:
        for path in (f"/events?after={2 ** 63}", f"/events?limit={2 ** 64}",
                     f"/streams/x/events?up_to_version={2 ** 63}", f"/events?after=-{2 ** 63 + 1}"):
            reply = _Reply(client.get(path, headers=ADMIN.headers))
            error = assert_error(reply, 422)
            assert set(error["errors"]["query"]) <= {"after", "limit", "up_to_version"}, (path, error)
        assert client.get(f"/events?after={2 ** 63 - 1}", headers=ADMIN.headers).status_code == 200
    finally:
        store.engine.dispose()


def test_a_leaderboard_of_month_zero_is_422(tmp_path):
    from services.volunteers.service import DEFINITION as VOLUNTEERS

    client, store = service_client(VOLUNTEERS, tmp_path, f"sqlite:///{tmp_path}/volunteers.db")
    try:
        for month in ("0000-01", "2026-13", "2026-00"):
            reply = _Reply(client.get(f"/leaderboards/hostile?period=month&month={month}", headers=RESIDENT.headers))
            assert "month" in assert_error(reply, 422)["errors"]["query"], month
        assert client.get("/leaderboards/hostile?period=month&month=0001-01", headers=RESIDENT.headers).status_code == 200
    finally:
        store.engine.dispose()


@pytest.mark.parametrize("service", ["projects", "volunteers", "feedback"])
def test_every_integer_in_a_document_has_a_documented_minimum_and_maximum(service, tmp_path):
    definition = importlib.import_module(f"services.{service}.service").DEFINITION
    client, store = service_client(definition, tmp_path, f"sqlite:///{tmp_path}/{service}.db")
    try:
        document = client.get("/openapi.json").get_json()
    finally:
        store.engine.dispose()
    unbounded = []

    def visit(node, where):
        if isinstance(node, dict):
            if node.get("type") == "integer" and ("minimum" not in node or "maximum" not in node):
                unbounded.append(where)
            for key, value in node.items():
                visit(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, f"{where}/{i}")

    # flask-smorest's own response schemas (its error and pagination headers) are not ours to bound.
    for name in ("Error", "PaginationMetadata"):
        document["components"]["schemas"].pop(name, None)
    visit(document, "")
    assert unbounded == []


def test_a_boolean_of_a_body_is_true_or_false_only(tmp_path):
    from services.feedback.service import DEFINITION as FEEDBACK

    client, store = service_client(FEEDBACK, tmp_path, f"sqlite:///{tmp_path}/feedback.db")
    cadre = Person("h-cadre", "社区干部", ("cadre",), "hostile")
    try:
        before = store.last_position()
        for value in (0, 1, "true", "yes", None):
            body = {"community_id": "hostile", "kind": "cadre", "period": "2026-11", "provisional": value}
            reply = _Reply(client.post("/rankings", json=body, headers=cadre.headers))
            assert "provisional" in assert_error(reply, 422)["errors"]["json"], value
        assert store.last_position() == before
        ok = client.post("/rankings", json={"community_id": "hostile", "kind": "cadre", "period": "2026-11",
                                            "provisional": False}, headers=cadre.headers)
        assert ok.status_code != 422, ok.get_data()
    finally:
        store.engine.dispose()


def test_the_documents_say_what_the_apps_do(tmp_path):
    from services.feedback.service import DEFINITION as FEEDBACK

    client, store = service_client(FEEDBACK, tmp_path, f"sqlite:///{tmp_path}/feedback.db")
    try:
        document = client.get("/openapi.json").get_json()
    finally:
        store.engine.dispose()
    prior = document["components"]["schemas"]["Policy"]["properties"]["prior_mean"]
    assert (prior["minimum"], prior["maximum"]) == (1, 5)  # numbers, not the strings "1.00", "5.00"
    assert {"200", "201"} <= set(document["paths"]["/subjects/{subject_id}/ratings"]["post"]["responses"])
    # The gateway merges the services' documents it keeps (none runs here: the kept ones are written).
    catalogue = write_service_documents(tmp_path / "catalogue")
    merged = gateway_app(GATEWAY_CATALOGUE_DIR=str(catalogue)).test_client().get("/openapi.json").get_json()
    forwarded = [(path, op) for path, ops in merged["paths"].items() for method, op in ops.items()
                 # Signing in, and a stream ticket (single-use: a retry must get a new one), are not
                 # idempotent by key.
                 if method == "post" and path not in ("/api/v1/auth/token", "/api/v1/live/tickets")]
    assert len(forwarded) > 40
    for path, op in forwarded:
        assert [p["in"] for p in op.get("parameters", []) if p["name"] == "Idempotency-Key"] == ["header"], path


def test_every_operation_names_its_error_answers_and_their_shape(tmp_path):
    """No catch-all ``default`` response: every operation of the public document (each service's
    routes and the gateway's own) declares the shared error answers, each in the one error shape
    with every field required (tests/e2e/test_fuzz.py checks the apps answer only those)."""
    from services.kernel.web import ERRORS_OF_EVERY_OPERATION, ERRORS_OF_EVERY_WRITE, error_body

    catalogue = write_service_documents(tmp_path / "catalogue")  # the services' documents, as the gateway keeps them
    gateway = gateway_app(COCREATE_DATA_DIR=str(tmp_path), GATEWAY_CATALOGUE_DIR=str(catalogue))
    document = gateway.test_client().get("/openapi.json").get_json()
    components = document["components"]
    operations = [(f"{method.upper()} {path}", method, op) for path, ops in document["paths"].items()
                  for method, op in ops.items() if method in ("get", "post", "put", "patch", "delete")]
    assert len(operations) > 90
    for name, method, operation in operations:
        responses = operation["responses"]
        assert "default" not in responses, name
        expected = {*ERRORS_OF_EVERY_OPERATION, *(ERRORS_OF_EVERY_WRITE if method != "get" else ())}
        assert {str(code) for code in expected} <= set(responses), name
        for code in expected:
            response = components["responses"][responses[str(code)]["$ref"].rsplit("/", 1)[1]]
            schema = components["schemas"][response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
            assert set(schema["required"]) == set(error_body(code, "x")) == set(schema["properties"]), (name, code)


def test_a_post_without_the_body_its_schema_requires_is_422_naming_the_fields(projects):
    client, store = projects
    before = store.last_position()
    for headers in ({}, {"Content-Type": "application/json"}):
        reply = _Reply(client.post("/projects", headers={**RESIDENT.headers, **headers}))
        assert {"title", "community_id"} <= set(assert_error(reply, 422)["errors"]["json"])
    assert store.last_position() == before


# -- the first privacy fixes (issue 13): the live stream ------------------------------------------

def test_the_live_stream_is_refused_to_a_token_without_a_community():
    client = gateway_app().test_client()
    token = issue_token(AuthSettings(jwt_secret=TEST_SECRET), person_id="drifter", name="无社区", roles=["resident"],
                        community=None)
    reply = _Reply(client.get("/api/v1/live", headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"}))
    assert assert_error(reply, 403, "community_required")["message"].startswith("the live stream is open only")


def test_the_live_feed_never_carries_a_check_in_code_or_a_phone(tmp_path):
    from gateway.store import GatewayStore, feed_events
    from services.kernel.db import write_transaction
    from services.kernel.events import StoredEvent, utc_now

    def event(n, event_type, stream_id, data):
        return StoredEvent(event_id=f"e{n}", event_type=event_type, schema_version=1, stream_id=stream_id,
                           version=1, position=n, occurred_at=utc_now(), data=data,
                           metadata={"actor": "org", "correlation_id": None, "causation_id": None})

    store = GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    with write_transaction(store.engine) as connection:
        store.add_feed_event(connection, event(1, "ActivityPublished", "activity-a1", {
            "activity_id": "a1", "community_id": "hostile", "title": "清扫", "checkin_code": "483920"}))
        store.add_feed_event(connection, event(2, "CardRegistered", "card-v1", {
            "person_id": "v1", "community_id": "hostile", "name": "志愿者", "phone": "13800000000"}))
    with store.engine.connect() as connection:
        kept = connection.execute(feed_events.select().order_by(feed_events.c.id)).all()
    assert "483920" not in kept[0].envelope and "13800000000" not in kept[1].envelope
    assert "清扫" in kept[0].envelope and "志愿者" in kept[1].envelope
    store.engine.dispose()



def test_without_a_token_a_bad_query_is_401_not_422(projects, tmp_path):
    """The token is checked before anything the request says is read: a caller without one learns
    nothing about the route's arguments. The probes, the documents and the token endpoint stay open."""
    client, _store = projects
    assert_error(_Reply(client.get("/projects/p1/as-of?version=abc")), 401)
    assert_error(_Reply(client.get("/projects/p1/as-of?version=abc", headers=RESIDENT.headers)), 422)
    assert client.get("/openapi.json").status_code == 200 and client.get("/healthz").status_code == 200
    gateway = gateway_app(COCREATE_DATA_DIR=str(tmp_path)).test_client()
    assert_error(_Reply(gateway.get("/api/v1/communities/hostile/dashboard?kind=mayor")), 401)
    assert_error(_Reply(gateway.get("/api/v1/live?community_id=%20")), 401)
    assert_error(_Reply(gateway.post("/api/v1/auth/token", json={"username": "x", "password": "y"})), 404)
