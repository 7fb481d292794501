"""The gateway in front of the three services running under gunicorn (real HTTP between them):
edge authentication, proxying, composed views with a service stopped, the circuit breaker,
idempotent retries, rate limits, CORS, the token endpoint, the merged OpenAPI document, and the
catalogue of routes learnt from the services' documents (kept on disk, refreshed, checked).
tests/e2e/test_gateway_independent.py runs the gateway where the service packages cannot be
imported."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import time

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.app import create_app, load_settings
from gateway.tokens import hash_password
from services.kernel import privacy
from tests.conftest import TEST_SECRET
from tests.support.errors import assert_error
from tests.support.projects import Community, FlaskClient, HttpClient, Person, ProjectsDriver

SERVICES = ("projects", "volunteers", "feedback")


def gateway(services, tmp_path, **env):
    environ = {"COCREATE_JWT_SECRET": TEST_SECRET, "COCREATE_DATA_DIR": str(tmp_path / "gateway"),
               **{f"GATEWAY_{name.upper()}_URL": server.base_url for name, server in services.items()}, **env}
    return create_app(load_settings(environ=environ))


class Public:
    """The test client with the /api/v1 prefix, in the driver's call shape."""

    def __init__(self, app) -> None:
        self.client = FlaskClient(app.test_client())

    def request(self, method, path, json_body=None, headers=None):
        return self.client.request(method, "/api/v1" + path, json_body, headers)


@pytest.fixture
def app(services, tmp_path):
    return gateway(services, tmp_path)


def community(app, unique) -> tuple[ProjectsDriver, Community]:
    d = ProjectsDriver(Public(app))
    return d, Community(d, f"g{unique[:8]}")


# -- proxying and composed views ----------------------------------------------------------------

def test_every_service_is_reachable_under_one_prefix(app, unique):
    d, c = community(app, unique)
    project = c.approved_project(title="安装路灯")
    pid = project["project_id"]
    assert d.get(c.cadre, f"/projects/{pid}")["stage"] == "co_build"
    reply = d.call(c.residents[0], "POST", "/cards", {})
    assert reply.status_code == 201 and reply.headers["Location"] == f"/api/v1/cards/{c.residents[0].person_id}"
    assert d.get(c.cadre, f"/policies/{c.id}")["settings"]["min_ratings"] == 10
    assert d.get(c.admin, f"/admin/projects/streams/project-{pid}")["version"] == project["version"]
    assert_error(d.call(c.cadre, "GET", "/no-such-route"), 404)
    assert_error(d.call(c.cadre, "DELETE", f"/projects/{pid}"), 405)


def _gateway_requests(app, route: str, status: str) -> float:
    """The gateway's cocreate_http_requests_total for a GET of ``route`` with ``status``."""
    text = app.test_client().get("/metrics").get_data(as_text=True)
    wanted = {"app": "gateway", "route": route, "method": "GET", "status": status}
    for match in re.finditer(r'^cocreate_http_requests_total\{(.*)\} (\S+)$', text, re.M):
        if dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1))) == wanted:
            return float(match.group(2))
    return 0.0


def test_proxied_requests_are_counted_by_the_catalogues_route_template(app, unique):
    """Not by the proxy's catch-all rule: latency panels and runbooks see each route, and paths
    that match no route share one label (the label's values stay a bounded set)."""
    d, c = community(app, unique)
    pid = c.approved_project(title="安装路灯")["project_id"]
    template = "/api/v1/projects/<project_id>"
    before = (_gateway_requests(app, template, "200"), _gateway_requests(app, "<unmatched>", "404"),
              _gateway_requests(app, template, "401"))
    d.get(c.cadre, f"/projects/{pid}")
    assert_error(d.call(c.cadre, "GET", f"/no-such-route/{unique}"), 404)
    assert_error(d.call(None, "GET", f"/projects/{pid}"), 401)  # refused before the proxy runs: labelled alike
    after = (_gateway_requests(app, template, "200"), _gateway_requests(app, "<unmatched>", "404"),
             _gateway_requests(app, template, "401"))
    assert after == (before[0] + 1, before[1] + 1, before[2] + 1)
    text = app.test_client().get("/metrics").get_data(as_text=True)
    assert "<path:rest>" not in text and pid not in text and unique not in text


def test_an_encoded_character_in_a_path_parameter_reaches_the_service_encoded(app, unique):
    """A "%23" (#) or "%3F" (?) in a path parameter stays part of the parameter: it neither cuts
    the service's path short (another record answered) nor injects a query string."""
    d, c = community(app, unique)
    holder = c.residents[0]
    d.post(holder, "/cards", {})
    assert d.get(c.cadre, f"/cards/{holder.person_id}")["person_id"] == holder.person_id
    assert_error(d.call(c.cadre, "GET", f"/cards/{holder.person_id}%23x"), 404)
    assert_error(d.call(c.cadre, "GET", f"/communities/{c.id}%3Fx=1"), 403)  # not community {c.id}
    assert_error(d.call(c.cadre, "POST", "/plans/abc%23def/notes", {"note": "x"}), 404)


def test_composed_views_answer_with_all_parts(app, unique):
    d, c = community(app, unique)
    pid = c.approved_project(title="楼道扶手")["project_id"]
    overview = d.get(c.cadre, f"/projects/{pid}/overview")
    assert overview["missing"] == [] and overview["project"]["project_id"] == pid
    assert overview["volunteer_minutes"] == {"minutes": 0, "hours": 0.0}
    assert overview["satisfaction"] is None  # not rated yet: nothing, not missing
    dashboard = d.get(c.cadre, f"/communities/{c.id}/dashboard")
    assert dashboard["missing"] == []
    assert dashboard["projects"]["per_stage"]["co_build"] == 1
    assert dashboard["fund"]["balance_fen"] == 10_000_000 - 3_000_000
    assert dashboard["follow_ups"]["open"] == 0 and dashboard["top_volunteers"]["items"] == []
    me = d.get(c.residents[0], "/me")
    assert me["missing"] == [] and me["card"] is None
    assert [p["project_id"] for p in me["proposals"]["items"]] == [pid]
    assert_error(d.call(c.cadre, "GET", "/projects/nope/overview"), 404)


def test_a_stopped_service_leaves_its_parts_out_and_writes_get_503(services, tmp_path, unique):
    app = gateway(services, tmp_path, GATEWAY_BREAKER_FAILURES="3", GATEWAY_BREAKER_OPEN_SECONDS="60")
    d, c = community(app, unique)
    pid = c.approved_project()["project_id"]
    services["feedback"].stop()
    try:
        overview = d.get(c.cadre, f"/projects/{pid}/overview")
        assert overview["project"]["project_id"] == pid and overview["volunteer_minutes"]["minutes"] == 0
        assert overview["satisfaction"] is None
        assert overview["missing"] == [{"part": "satisfaction", "service": "feedback", "reason": "connection refused"}]
        dashboard = d.get(c.cadre, f"/communities/{c.id}/dashboard")
        assert {m["part"] for m in dashboard["missing"]} == {"satisfaction", "follow_ups"}
        assert dashboard["projects"]["total"] == 1
        reply = d.call(c.cadre, "POST", "/subjects", {"subject_id": "s1", "kind": "unit", "name": "居委会",
                                                      "community_id": c.id})
        body = assert_error(reply, 503, "service_unavailable")
        assert body["errors"]["service"] == "feedback" and int(reply.headers["Retry-After"]) >= 1
        # The breaker is open now: calls fail at once and say so; other services are unaffected.
        reply = d.call(c.cadre, "GET", f"/rankings/{c.id}/cadre", headers={"Accept-Language": "en"})
        assert "circuit breaker open" in assert_error(reply, 503)["message"]  # in English, as asked
        assert d.get(c.cadre, f"/projects/{pid}")["project_id"] == pid
    finally:
        services["feedback"].start()  # the same port and data, for the tests that follow


# -- idempotency ------------------------------------------------------------------------------

def proposal(c: Community, **changes) -> dict:
    return {"community_id": c.id, "grid_id": "g1", "title": "修缮凉亭", "description": "凉亭漏雨",
            "category": "facilities", "location": "中心花园", "estimated_cost_fen": 100_000,
            "requested_fen": 80_000, **changes}


def test_a_retried_post_with_the_same_key_creates_nothing_new(app, unique):
    d, c = community(app, unique)
    person = c.residents[2]
    headers = {"Idempotency-Key": f"key-{unique}"}
    first = d.call(person, "POST", "/projects", proposal(c), headers)
    again = d.call(person, "POST", "/projects", proposal(c), headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["ETag"] == first.headers["ETag"] and again.headers["Location"] == first.headers["Location"]
    mine = d.get(person, "/me/proposals")["items"]
    assert [p["project_id"] for p in mine] == [first.json()["project"]["project_id"]]
    # The same key with another body is refused; another caller's same key is theirs alone.
    other = d.call(person, "POST", "/projects", proposal(c, title="别的项目"), headers)
    assert_error(other, 422, "idempotency_key_reused")
    theirs = d.call(c.residents[3], "POST", "/projects", proposal(c), headers)
    assert theirs.status_code == 201
    assert theirs.json()["project"]["project_id"] != first.json()["project"]["project_id"]
    assert len(d.get(person, "/me/proposals")["items"]) == 1


def test_a_refused_command_is_replayed_as_refused(app, unique):
    d, c = community(app, unique)
    pid = c.propose()["project_id"]
    headers = {"Idempotency-Key": f"cosign-{unique}"}
    first = d.call(c.residents[0], "POST", f"/projects/{pid}/cosignatures", {}, headers)  # the proposer: refused
    again = d.call(c.residents[0], "POST", f"/projects/{pid}/cosignatures", {}, headers)
    assert first.status_code == again.status_code and first.status_code in (403, 409)
    assert again.json() == first.json()
    assert d.get(c.cadre, f"/projects/{pid}")["cosigner_count"] == 0


# -- edge rules ---------------------------------------------------------------------------------

def test_rate_limit_per_caller_is_429_with_retry_after(services, tmp_path, unique):
    app = gateway(services, tmp_path, GATEWAY_RATE_LIMIT_PER_CALLER="5", GATEWAY_RATE_LIMIT_PER_IP="1000")
    d = ProjectsDriver(Public(app))
    alice, bob = (Person(f"{name}-{unique}", name, ("resident",), "c") for name in ("alice", "bob"))
    statuses = [d.call(alice, "GET", "/whoami").status_code for _ in range(7)]
    if time.time() % 60 < 1:  # a minute boundary may have fallen inside the loop: count again
        statuses = [d.call(alice, "GET", "/whoami").status_code for _ in range(7)]
    assert statuses.count(200) <= 5 and statuses[-1] == 429
    reply = d.call(alice, "GET", "/whoami")
    body = assert_error(reply, 429, "rate_limited")
    assert body["errors"]["limit"] == 5 and 1 <= int(reply.headers["Retry-After"]) <= 60
    assert d.call(bob, "GET", "/whoami").status_code == 200  # another caller is not limited


def test_rate_limit_per_ip_counts_anonymous_requests_too(services, tmp_path):
    app = gateway(services, tmp_path, GATEWAY_RATE_LIMIT_PER_CALLER="1000", GATEWAY_RATE_LIMIT_PER_IP="4")
    client = app.test_client()
    statuses = [client.get("/api/v1/projects").status_code for _ in range(6)]
    assert statuses[:1] == [401] and statuses[-1] == 429


def test_cors_allows_only_configured_origins(services, tmp_path):
    app = gateway(services, tmp_path, GATEWAY_CORS_ORIGINS="https://app.example.cn")
    client = app.test_client()
    ok = client.options("/api/v1/projects", headers={"Origin": "https://app.example.cn",
                                                     "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == "https://app.example.cn"
    assert "Idempotency-Key" in ok.headers["Access-Control-Allow-Headers"]
    other = client.options("/api/v1/projects", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_body_size_limit_is_413(services, tmp_path, unique):
    app = gateway(services, tmp_path, GATEWAY_MAX_BODY_BYTES="2000")
    d = ProjectsDriver(Public(app))
    person = Person(f"p-{unique}", "居民", ("resident",), "c")
    reply = d.call(person, "POST", "/projects", {"description": "长" * 3000})
    assert_error(reply, 413)


# -- authentication -----------------------------------------------------------------------------

def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**changes) -> dict:
    now = int(time.time())
    return {"sub": "p1", "name": "王", "roles": ["admin"], "community": "c", "aud": "cocreate", "iss": "cocreate",
            "iat": now, "exp": now + 3600, **changes}


@pytest.fixture(scope="module")
def rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def hs256(secret: bytes, payload: dict) -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def bad_tokens(public_pem: str, private_pem: str) -> dict[str, str]:
    valid = jwt.encode(claims(), private_pem, algorithm="RS256")
    header, body, signature = valid.split(".")
    tampered_body = b64(json.dumps(claims(sub="someone-else")).encode())
    return {
        "expired": jwt.encode(claims(exp=int(time.time()) - 10, iat=int(time.time()) - 100), private_pem,
                              algorithm="RS256"),
        "wrong audience": jwt.encode(claims(aud="another-app"), private_pem, algorithm="RS256"),
        "wrong issuer": jwt.encode(claims(iss="someone"), private_pem, algorithm="RS256"),
        "alg none": f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{body}.",
        "HS256 signed with the public key": hs256(public_pem.encode(), claims()),
        "tampered payload": f"{header}.{tampered_body}.{signature}",
        "garbage": "not-a-token",
    }


def test_every_bad_token_is_401_at_the_gateway(services, tmp_path, rsa_keys):
    private_pem, public_pem = rsa_keys
    app = gateway(services, tmp_path, COCREATE_JWT_ALGORITHM="RS256", COCREATE_JWT_PUBLIC_KEY=public_pem)
    client = app.test_client()
    good = jwt.encode(claims(), private_pem, algorithm="RS256")
    assert client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {good}"}).status_code == 200
    for name, token in bad_tokens(public_pem, private_pem).items():
        for path in ("/api/v1/whoami", "/api/v1/projects", "/api/v1/me"):
            reply = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 401, (name, path, reply.get_data())
            assert reply.get_json()["code"] == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/api/v1/projects").status_code == 401


def test_unauthenticated_writes_never_reach_a_service(services, tmp_path):
    gateway(services, tmp_path)  # learns the routes and keeps the services' documents on disk
    # Every service is pointed at a closed port now: the routes come from the documents on disk,
    # and a 401 proves the gateway answered by itself.
    app = create_app(load_settings(environ={"COCREATE_JWT_SECRET": TEST_SECRET,
                                            "COCREATE_DATA_DIR": str(tmp_path / "gw"),
                                            "GATEWAY_CATALOGUE_DIR": str(tmp_path / "gateway" / "gateway/catalogue"),
                                            **{f"GATEWAY_{n.upper()}_URL": "http://127.0.0.1:9" for n in SERVICES}}))
    client = app.test_client()
    writes = [r for r in app.extensions["cocreate.catalogue"].map.iter_rules()
              if r.methods - {"GET", "HEAD", "OPTIONS"}]
    assert len(writes) > 40
    for rule in writes:
        path = "/api/v1" + rule.rule.replace("<", "").replace(">", "")
        for method in sorted(rule.methods - {"GET", "HEAD", "OPTIONS"}):
            reply = client.open(path, method=method, json={})
            assert reply.status_code == 401, (method, path, reply.get_data())


def test_token_endpoint_issues_tokens_from_the_users_file(services, tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{"username": "wang", "password_hash": hash_password("s3cret"),
                                            "person_id": "wang", "name": "王阿姨", "roles": ["resident"],
                                            "community": "xinyang"}]}), encoding="utf-8")
    app = gateway(services, tmp_path, COCREATE_USERS_FILE=str(users))
    client = app.test_client()
    reply = client.post("/api/v1/auth/token", json={"username": "wang", "password": "s3cret"})
    assert reply.status_code == 201
    token = reply.get_json()["access_token"]
    me = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert me == {"person_id": "wang", "name": "王阿姨", "roles": ["resident"], "community": "xinyang"}
    for body in ({"username": "wang", "password": "wrong"}, {"username": "nobody", "password": "s3cret"}):
        assert client.post("/api/v1/auth/token", json=body).status_code == 401
    assert client.post("/api/v1/auth/token", json={"username": "wang"}).status_code == 422
    # Without a users file the endpoint does not exist.
    plain = gateway(services, tmp_path / "plain").test_client()
    assert plain.post("/api/v1/auth/token", json={"username": "wang", "password": "s3cret"}).status_code == 404


def test_one_openapi_document_covers_every_public_route(app):
    client = app.test_client()
    spec = client.get("/openapi.json").get_json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops
                  if method in ("get", "post", "put", "patch", "delete")}
    rules = list(app.extensions["cocreate.catalogue"].map.iter_rules())
    assert {rule.endpoint.service for rule in rules} == set(SERVICES) and len(rules) > 80
    for rule in rules:
        path = "/api/v1" + rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    for own in ("/api/v1/projects/{project_id}/overview", "/api/v1/communities/{community_id}/dashboard",
                "/api/v1/me", "/api/v1/live", "/api/v1/auth/token", "/api/v1/whoami"):
        assert own in spec["paths"], own
    refs = json.dumps(spec)
    for name in spec["components"]["schemas"]:
        assert name in refs
    import re
    missing = {ref for ref in re.findall(r'"#/components/schemas/([^"]+)"', refs)
               if ref not in spec["components"]["schemas"]}
    assert missing == set()
    assert client.get("/docs").status_code == 200


# -- the catalogue of routes ----------------------------------------------------------------------

def test_a_gateway_knowing_no_service_is_not_ready_and_answers_503_not_404(tmp_path):
    app = create_app(load_settings(environ={"COCREATE_JWT_SECRET": TEST_SECRET,
                                            "COCREATE_DATA_DIR": str(tmp_path / "gw"),
                                            **{f"GATEWAY_{n.upper()}_URL": "http://127.0.0.1:9" for n in SERVICES}}))
    client = app.test_client()
    ready = client.get("/readyz")
    body = ready.get_json()
    assert ready.status_code == 503 and body["checks"]["database"] == "ok"
    assert body["checks"]["catalogue"].startswith("failing: RuntimeError: no service's routes are known yet")
    assert {name: (entry["state"], entry["error"]) for name, entry in body["catalogue"].items()} == {
        name: ("unknown", "connection refused") for name in SERVICES}
    person = Person("p1", "王", ("resident",), "c")
    reply = ProjectsDriver(Public(app)).call(person, "GET", "/projects")
    error = assert_error(reply, 503, "catalogue_incomplete")
    assert error["errors"]["services"] == list(SERVICES) and reply.headers["Retry-After"] == "2"
    assert client.get("/api/v1/projects").status_code == 401  # the token first, as for every route
    assert client.get("/api/v1/whoami", headers=person.headers).status_code == 200  # the gateway's own
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "/api/v1/me" in paths and "/api/v1/projects" not in paths


DOCUMENT = {"openapi": "3.0.3", "info": {"title": "things", "version": "1"},
            "paths": {"/things": {"get": {"tags": ["Things"], "responses": {"200": {"description": "ok"}}},
                                  "post": {"responses": {"201": {"$ref": "#/components/responses/Made"}}}},
                      "/things/{thing_id}/parts/{part}": {"get": {"responses": {"200": {
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}}},
                      "/events": {"get": {"responses": {"200": {"description": "history"}}}}},
            "components": {"schemas": {"Thing": {"type": "object"}},
                           "responses": {"Made": {"description": "made"}}},
            "tags": [{"name": "Things"}]}


class FakeServices:
    """What each service answers to GET /openapi.json: a document, or an exception to raise."""

    def __init__(self, **answers) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, name: str, url: str, timeout: float):
        self.asked.append(name)
        answer = self.answers.get(name, ConnectionRefusedError())
        if isinstance(answer, Exception):
            raise answer
        return json.loads(json.dumps(answer))


def test_the_catalogue_routes_by_the_documents_and_keeps_the_last_good_one_on_disk(tmp_path):
    from gateway.catalogue import Catalogue, Target

    urls = {"projects": "http://p", "volunteers": "http://v", "feedback": "http://f"}
    fake = FakeServices(projects=DOCUMENT)
    catalogue = Catalogue(urls, tmp_path, fetch=fake)
    adapter = catalogue.adapter()
    assert adapter.match("/things/t1/parts/wheel", "GET") == (
        Target("projects", "/things/<thing_id>/parts/<part>"), {"thing_id": "t1", "part": "wheel"})
    assert adapter.match("/things/", "POST")[0] == Target("projects", "/things")  # no strict slashes
    assert adapter.match("/things", "HEAD")[0] == Target("projects", "/things")
    assert adapter.match("/admin/projects/events", "GET")[0] == Target("projects", "/events")
    assert catalogue.unknown() == ["volunteers", "feedback"]
    paths, schemas, responses, tags = catalogue.openapi_parts()
    assert sorted(paths) == ["/api/v1/admin/projects/events", "/api/v1/things",
                             "/api/v1/things/{thing_id}/parts/{part}"]
    assert paths["/api/v1/things"]["post"]["responses"]["201"] == {"$ref": "#/components/responses/ProjectsMade"}
    assert [p["name"] for p in paths["/api/v1/things"]["post"]["parameters"]] == ["Idempotency-Key"]
    assert set(schemas) == {"ProjectsThing"} and set(responses) == {"ProjectsMade"}
    assert tags == [{"name": "projects · Things"}]
    kept = json.loads((tmp_path / "projects.json").read_text())
    assert kept["document"] == DOCUMENT and kept["service"] == "projects"

    # Bad answers leave the last good routes (and the file) as they were, and say why.
    for bad, why in ((TimeoutError("slow"), "TimeoutError: slow"),
                     ({"swagger": "2.0", "paths": {}}, "not an OpenAPI 3 document"),
                     ({"openapi": "3.0.3", "paths": {"things": {}}}, "a bad path in the document: 'things'"),
                     ({"openapi": "3.0.3", "paths": {"/x/{bad-name}": {"get": {}}}}, "makes no route")):
        fake.answers["projects"] = bad
        catalogue.refresh()
        state = catalogue.describe()["projects"]
        assert state["state"] == "last_good" and why in state["error"] and state["routes"] == 3, (bad, state)
        assert catalogue.adapter().match("/things", "GET")[0].service == "projects"
        assert json.loads((tmp_path / "projects.json").read_text())["document"] == DOCUMENT

    # A new gateway with every service down starts from the files; a corrupt file is skipped.
    (tmp_path / "volunteers.json").write_text("{not json")
    again = Catalogue(urls, tmp_path, fetch=FakeServices())
    assert again.unknown() == ["volunteers", "feedback"]
    assert again.describe()["projects"] == {**again.describe()["projects"], "state": "last_good", "origin": "disk",
                                            "routes": 3, "error": "connection refused"}
    again.check_ready()
    assert again.adapter().match("/things", "POST")[0] == Target("projects", "/things")

    # A service that answers later is learnt at the next refresh; a changed document replaces the
    # routes and the file (written whole: no temporary file is left behind).
    changed = {**DOCUMENT, "paths": {"/gadgets": {"get": {"responses": {}}}}}
    again._fetch = FakeServices(projects=changed, volunteers=DOCUMENT)
    again.refresh()
    assert again.unknown() == ["feedback"]
    assert again.describe()["projects"]["state"] == "current", json.dumps(again.describe())
    assert again.adapter().match("/gadgets", "GET")[0] == Target("projects", "/gadgets")
    assert json.loads((tmp_path / "projects.json").read_text())["document"] == changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["projects.json", "volunteers.json"]


def test_the_catalogue_refreshes_in_the_background(tmp_path):
    from gateway.catalogue import Catalogue

    fake = FakeServices()
    catalogue = Catalogue({"projects": "http://p"}, tmp_path, fetch=fake, refresh_seconds=0.05)
    assert catalogue.unknown() == ["projects"]
    with pytest.raises(RuntimeError):
        catalogue.check_ready()
    fake.answers["projects"] = DOCUMENT
    catalogue.ensure_refreshing()
    catalogue.ensure_refreshing()  # one thread per process
    try:
        deadline = time.monotonic() + 30
        while catalogue.unknown() and time.monotonic() < deadline:
            time.sleep(0.05)  # the routes are published once the file is written
        assert catalogue.unknown() == [] and (tmp_path / "projects.json").exists()
        catalogue.check_ready()
    finally:
        catalogue.close()
    asked = len(fake.asked)
    assert asked >= 2
    # A request that matches no route asks the unknown services at once, at most once a second.
    none = Catalogue({"feedback": "http://f"}, None, fetch=FakeServices())
    assert none.refresh_unknown() is True and none.refresh_unknown() is False


def test_expired_time_helper_is_sane():
    assert dt.datetime.now(dt.timezone.utc).year >= 2026


def test_every_write_route_refuses_callers_without_its_roles(app):
    """Every write operation of the public API declares its roles (``x-roles``) and refuses a
    caller holding only other roles with 403 before anything is read: ids need not exist."""
    from services.kernel.model import ROLES
    from services.kernel.web import ANY_ROLE

    spec = app.test_client().get("/openapi.json").get_json()
    client = app.test_client()
    checked, open_to_all = [], []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "put", "patch", "delete") or path == "/api/v1/auth/token":
                continue
            allowed = operation.get("x-roles")
            assert allowed, f"{method.upper()} {path} declares no roles"
            if ANY_ROLE in allowed:
                open_to_all.append(f"{method.upper()} {path}")
                continue
            others = tuple(r for r in ROLES if r not in allowed and r != "admin")
            assert others, f"{method.upper()} {path} is open to every role but does not say so"
            caller = Person("outsider", "外人", others, "c")
            url = path.replace("{", "").replace("}", "")
            reply = client.open(url, method=method.upper(), json={}, headers=caller.headers)
            assert reply.status_code == 403, (method, path, reply.get_data())
            assert reply.get_json()["errors"]["reason"] == "role_required", (method, path)
            checked.append(f"{method.upper()} {path}")
    assert len(checked) >= 45
    assert sorted(open_to_all) == ["PATCH /api/v1/cards/{person_id}",  # the holder, whatever their role
                                   "POST /api/v1/certificates/{number}/verification",
                                   "POST /api/v1/live/tickets", "POST /api/v1/me/erasure",  # anyone, for themselves
                                   "POST /api/v1/plans/{plan_id}/notes"]


def test_ratings_changed_comes_once_per_subject_and_minute_on_a_fixed_grid(tmp_path, monkeypatch):
    """The live stream's summary of rating events: whatever the number of ratings in a minute, one
    RatingsChanged per subject at the end of that minute of a fixed grid, naming only the subject."""
    from gateway import store as store_module
    from services.kernel.db import write_transaction
    from services.kernel.events import StoredEvent

    store = store_module.GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    minute = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc)

    def rated(n: int, at: dt.datetime, subject: str = "cadre-wang") -> None:
        monkeypatch.setattr(store_module, "utc_now", lambda: at)
        event = StoredEvent(event_id=f"e{n}", event_type="RatingSubmitted", schema_version=1,
                            stream_id=f"rating-r{n}", version=1, position=n, occurred_at=at,
                            data={"rating_id": f"r{n}", "subject_id": subject, "community_id": "anhai",
                                  "subject_person_id": "p-wang", "person_id": f"res{n}", "level": 1},
                            metadata={"actor": f"res{n}"})
        with write_transaction(store.engine) as connection:
            store.add_feed_event(connection, event)

    def summaries() -> list[dict]:
        return [json.loads(row.envelope) for row in store.feed_after(None, 0, 1000)
                if row.event_type == "RatingsChanged"]

    rated(1, minute + dt.timedelta(seconds=5))
    rated(2, minute + dt.timedelta(seconds=50))
    rated(3, minute + dt.timedelta(seconds=51), subject="grid-li")
    assert store.flush_summaries(minute + dt.timedelta(seconds=59)) == 0
    assert store.flush_summaries(minute + dt.timedelta(minutes=1)) == 2
    assert store.flush_summaries(minute + dt.timedelta(minutes=1, seconds=1)) == 0
    rated(4, minute + dt.timedelta(minutes=1, seconds=2))
    assert store.flush_summaries(minute + dt.timedelta(minutes=1, seconds=59)) == 0
    assert store.flush_summaries(minute + dt.timedelta(minutes=2)) == 1
    made = summaries()
    assert [(s["data"]["subject_id"], s["occurred_at"]) for s in made] == [
        ("cadre-wang", "2026-12-03T10:01:00.000000Z"), ("grid-li", "2026-12-03T10:01:00.000000Z"),
        ("cadre-wang", "2026-12-03T10:02:00.000000Z")]
    assert all(set(s["data"]) == {"subject_id", "community_id"} and s["metadata"] == {} for s in made)
    # A subject's stream rates its person: a flagged burst of its ratings is not for them to see.
    for n, (event_type, data) in enumerate((("SubjectRegistered", {"person_id": "p-wang", "community_id": "anhai"}),
                                            ("BurstFlagged", {"subject_id": "cadre-wang", "rating_ids": ["r1"]})), 10):
        event = StoredEvent(event_id=f"e{n}", event_type=event_type, schema_version=1, stream_id="subject-cadre-wang",
                            version=n - 9, position=n, occurred_at=minute, data=data, metadata={})
        with write_transaction(store.engine) as connection:
            store.add_feed_event(connection, event)
    assert [r.rated_person_id for r in store.feed_after(None, 0, 1000) if r.stream_id == "subject-cadre-wang"] == [
        "p-wang", "p-wang"]
    store.engine.dispose()


# -- live stream tickets (for browsers' EventSource, which cannot send a bearer token) ----------------

def _feed(app, community_id: str, n: int, event_type: str = "ProjectProposed", stream: str | None = None,
          data: dict | None = None) -> None:
    """One event in the gateway's live feed, as the feed worker writes it."""
    from services.kernel.db import write_transaction
    from services.kernel.events import StoredEvent

    store = app.extensions["cocreate.gateway_store"]
    event = StoredEvent(event_id=f"{community_id}-e{n}", event_type=event_type, schema_version=1,
                        stream_id=stream or f"project-{community_id}-{n}", version=1, position=n,
                        occurred_at=dt.datetime.now(dt.timezone.utc),
                        data=data or {"project_id": f"{community_id}-{n}", "community_id": community_id,
                                      "title": f"项目{n}"},
                        metadata={})
    with write_transaction(store.engine) as connection:
        store.add_feed_event(connection, event)


def _stream(client, query: str, headers=None) -> tuple[int, str, dict]:
    """A live stream read up to its first ``: caught-up`` (or its error answer)."""
    response = client.get("/api/v1/live" + query, headers=headers or {}, buffered=False)
    if response.status_code != 200:
        return response.status_code, response.get_data(as_text=True), response.get_json()
    text = ""
    try:
        for chunk in response.iter_encoded():
            text += chunk.decode()
            if ": caught-up" in text:
                break
    finally:
        response.close()
    return 200, text, {}


def test_a_stream_ticket_opens_one_stream_once_as_its_holder(app, unique, monkeypatch):
    from gateway import store as store_module

    resident = Person(f"r-{unique[:6]}", "居民", ("resident",), f"t{unique[:6]}")
    other_community = f"o{unique[:6]}"
    _feed(app, resident.community, 1)
    _feed(app, other_community, 2)
    client = app.test_client()

    answer = client.post("/api/v1/live/tickets", json={}, headers=resident.headers)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    ticket = answer.get_json()
    assert ticket["community_id"] == resident.community
    assert ticket["stream"] == f"/api/v1/live?ticket={ticket['ticket']}"
    expires = dt.datetime.fromisoformat(ticket["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(seconds=50) < expires - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(seconds=60)
    # The database keeps the ticket's digest only.
    store = app.extensions["cocreate.gateway_store"]
    with store.engine.connect() as connection:
        rows = [tuple(map(str, row)) for row in connection.exec_driver_sql("SELECT * FROM live_tickets")]
    assert rows and not any(ticket["ticket"] in value for row in rows for value in row)

    # Without an Authorization header; the holder's community only; unnamed events when asked.
    status, text, _ = _stream(client, f"?ticket={ticket['ticket']}&named=false&last_event_id=0")
    assert status == 200
    assert f"{resident.community}-1" in text and other_community not in text
    assert "event:" not in text and "data: " in text

    # Once only: the same ticket again, even while the first stream is fresh, is refused.
    status, _, body = _stream(client, f"?ticket={ticket['ticket']}&last_event_id=0")
    assert status == 401 and body["errors"]["reason"] == "ticket_invalid"

    # Named events (the default) with a fresh ticket, from where the reader left off.
    fresh = client.post("/api/v1/live/tickets", json={}, headers=resident.headers).get_json()["ticket"]
    _feed(app, resident.community, 3)
    status, text, _ = _stream(client, f"?ticket={fresh}&last_event_id=1")
    assert status == 200 and "event: ProjectProposed" in text
    assert f"{resident.community}-3" in text and f"{resident.community}-1\"" not in text

    # Expired: a minute later the ticket opens nothing.
    late = client.post("/api/v1/live/tickets", json={}, headers=resident.headers).get_json()["ticket"]
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=61)
    monkeypatch.setattr(store_module, "utc_now", lambda: later)
    status, _, body = _stream(client, f"?ticket={late}")
    assert status == 401 and body["errors"]["reason"] == "ticket_invalid"


def test_a_stream_ticket_is_nothing_but_a_stream_ticket(app, unique):
    resident = Person(f"r-{unique[:6]}", "居民", ("resident",), f"t{unique[:6]}")
    client = app.test_client()
    ticket = client.post("/api/v1/live/tickets", json={}, headers=resident.headers).get_json()["ticket"]
    # Not a bearer token, not a credential of any other route.
    assert_error(Public(app).request("GET", "/me", headers={"Authorization": f"Bearer {ticket}"}), 401)
    assert_error(Public(app).request("GET", f"/me?ticket={ticket}"), 401)
    assert_error(Public(app).request("GET", f"/communities/{resident.community}/dashboard?ticket={ticket}"), 401)
    # An invented or malformed ticket; a ticket of the wrong shape; unknown query fields.
    for query, status in ((f"?ticket={'x' * 43}", 401), (f"?ticket={'x' * 101}", 422), ("?ticket=", 422),
                          (f"?ticket={ticket}&page=2", 422)):
        got, _, body = _stream(client, query)
        assert got == status, (query, got, body)
    # Issuing one needs a token, of a community; a resident cannot ask for another community's.
    assert_error(Public(app).request("POST", "/live/tickets", {}), 401)
    nowhere = Person(f"n-{unique[:6]}", "无社区", ("resident",), None)
    reply = Public(app).request("POST", "/live/tickets", {}, headers=nowhere.headers)
    assert_error(reply, 403)
    assert json.loads(reply.body)["errors"]["reason"] == "community_required"
    reply = Public(app).request("POST", "/live/tickets", {"community_id": "elsewhere"}, headers=resident.headers)
    assert_error(reply, 403)
    assert json.loads(reply.body)["errors"]["reason"] == "not_your_community"
    assert_error(Public(app).request("POST", "/live/tickets", {"colour": "red"}, headers=resident.headers), 422)
    # An admin's ticket reads the community it names.
    admin = Person("admin-1", "管理员", ("admin",), None)
    _feed(app, resident.community, 7)
    _feed(app, "elsewhere", 8)
    mine = client.post("/api/v1/live/tickets", json={"community_id": "elsewhere"}, headers=admin.headers).get_json()
    assert mine["community_id"] == "elsewhere"
    status, text, _ = _stream(client, f"?ticket={mine['ticket']}&last_event_id=0")
    assert status == 200 and "elsewhere-8" in text and f"{resident.community}-7" not in text


# -- the language of errors (issue 19, point 5) ---------------------------------------------------

ZH = "zh-CN (no header)"


def _language(header: str) -> dict[str, str]:
    return {} if header == ZH else {"Accept-Language": header}


@pytest.mark.parametrize(("header", "chinese"), [(ZH, True), ("en", False), ("en-GB,en;q=0.9", False),
                                                 ("fr-FR", True), ("zh-CN,zh;q=0.9", True)])
def test_errors_come_in_the_language_of_accept_language_zh_cn_by_default(app, unique, header, chinese):
    """Through the gateway: a domain refusal and a validation error (answered by the service, in the
    language the gateway passed on), a 401 and a 404 of the gateway's own — in Chinese without a
    header or for a language the platform does not speak, in English when English is asked for."""
    d, c = community(app, unique)
    lang = _language(header)
    pid = c.propose()["project_id"]
    refusal = assert_error(d.call(c.residents[0], "POST", f"/projects/{pid}/cosignatures", {}, lang), 409,
                           "self_cosign")
    invalid = assert_error(d.call(c.residents[1], "POST", "/projects", {**proposal(c), "title": "", "budget": 5,
                                                                        "requested_fen": "lots"}, lang), 422)
    anonymous = assert_error(d.call(None, "GET", f"/projects/{pid}", headers=lang), 401, "unauthenticated")
    no_route = assert_error(d.call(c.cadre, "GET", "/no-such-route", headers=lang), 404)
    if chinese:
        assert refusal["message"] == "提议人不能给自己的提议联署"
        assert refusal["errors"]["detail"].startswith("the proposer cannot co-sign their own proposal")
        assert invalid["message"] == "填写的内容有误，请检查后再提交"
        assert invalid["errors"]["json"] == {"budget": ["不认识的字段，请删除"], "title": ["长度应在1到100之间"],
                                             "requested_fen": ["应为整数"]}
        assert anonymous["message"] == "请先登录" and anonymous["errors"]["detail"]
        assert no_route["message"] == "没有找到相关内容"
        assert no_route["errors"] == {"detail": "no route /api/v1/no-such-route"}
    else:
        assert refusal["message"].startswith("the proposer cannot co-sign their own proposal")
        assert "detail" not in refusal["errors"]
        assert invalid["message"] == "the request is not valid"
        assert invalid["errors"]["json"] == {"budget": ["Unknown field."],
                                             "title": ["Length must be between 1 and 100."],
                                             "requested_fen": ["Not a valid integer."]}
        assert "token" in anonymous["message"] and "detail" not in anonymous["errors"]
        assert no_route == {"code": 404, "status": "Not Found", "message": "no route /api/v1/no-such-route",
                            "errors": {}}


def test_the_language_reaches_the_services_and_a_service_answers_in_it_directly(services, app, unique):
    d, c = community(app, unique)
    pid = c.propose()["project_id"]
    direct = HttpClient(services["projects"].base_url)
    path, person = f"/projects/{pid}/cosignatures", c.residents[0]
    chinese = assert_error(direct.request("POST", path, {}, person.headers), 409, "self_cosign")
    english = assert_error(direct.request("POST", path, {}, {**person.headers, "Accept-Language": "en"}), 409,
                           "self_cosign")
    assert chinese["message"] == "提议人不能给自己的提议联署" and chinese["errors"]["detail"] == english["message"]
    assert english["message"].startswith("the proposer cannot co-sign")
    # through the gateway, the same answers: it passes the caller's language on (zh-CN when none)
    assert d.call(person, "POST", path, {}).json() == chinese
    assert d.call(person, "POST", path, {}, {"Accept-Language": "en"}).json() == english


def test_the_gateway_passes_the_callers_language_on_and_zh_cn_when_there_is_none(app, unique, monkeypatch):
    upstream = app.extensions["cocreate.upstreams"]["projects"]
    original, sent = upstream.request, []

    def recording(method, path, *, headers=None, **kwargs):
        sent.append((headers or {}).get("Accept-Language"))
        return original(method, path, headers=headers, **kwargs)

    monkeypatch.setattr(upstream, "request", recording)
    d = ProjectsDriver(Public(app))
    person = Person(f"p-{unique}", "居民", ("resident",), "c")
    for header in (None, "en-GB,en;q=0.9", "fr-FR", "zh-CN"):
        reply = d.call(person, "GET", f"/projects/nope-{unique}", headers={"Accept-Language": header} if header else {})
        assert_error(reply, 404, "not_found")
    assert sent == ["zh-CN", "en-GB,en;q=0.9", "fr-FR", "zh-CN"]


def test_the_gateways_own_refusals_come_in_the_callers_language(services, tmp_path, unique):
    app = gateway(services, tmp_path, GATEWAY_RATE_LIMIT_PER_CALLER="2", GATEWAY_RATE_LIMIT_PER_IP="1000")
    d = ProjectsDriver(Public(app))
    alice, bob = (Person(f"{name}-{unique}", name, ("resident",), "c") for name in ("alice", "bob"))
    for person in (alice, bob):
        for _ in range(3):
            d.call(person, "GET", "/whoami")
    limited = assert_error(d.call(alice, "GET", "/whoami"), 429, "rate_limited")
    assert limited["message"] == "操作太频繁，请稍后再试" and limited["errors"]["limit"] == 2
    assert limited["errors"]["detail"] == "too many requests from this caller: 2 per minute"
    limited = assert_error(d.call(bob, "GET", "/whoami", headers={"Accept-Language": "en"}), 429, "rate_limited")
    assert limited["message"] == "too many requests from this caller: 2 per minute"


def test_a_service_that_is_down_is_a_503_in_the_callers_language(services, tmp_path, unique):
    app = gateway(services, tmp_path)
    d, c = community(app, unique)
    c.propose()
    services["projects"].stop()
    try:
        chinese = assert_error(d.call(c.cadre, "GET", f"/communities/{c.id}"), 503, "service_unavailable")
        english = assert_error(d.call(c.cadre, "GET", f"/communities/{c.id}", headers={"Accept-Language": "en"}), 503,
                               "service_unavailable")
    finally:
        services["projects"].start()
    assert chinese["message"] == "服务暂时不可用，请稍后再试" and "projects" in chinese["errors"]["detail"]
    assert chinese["errors"]["service"] == "projects"
    assert "projects" in english["message"] and "detail" not in english["errors"]



def test_an_erased_persons_answers_and_tickets_are_purged_once_by_the_feed_worker(database_url):
    """``PersonErased`` reaching the feed worker deletes the answers the gateway keeps for the person's
    Idempotency-Keys (opened: their name, phone, comments) and their stream tickets (their name) —
    nobody else's — in the transaction that records the event; the event itself never reaches a
    live stream."""
    from gateway.__main__ import pruning
    from gateway.store import GatewayStore, Ticket, idempotency_keys, live_tickets
    from services.kernel.db import read_transaction, write_transaction
    from services.kernel.events import StoredEvent

    store = GatewayStore(database_url)  # SQLite and PostgreSQL
    store.create_schema()
    for caller in ("v1", "v2"):
        assert store.claim_key(caller, "k1", "print", dt.timedelta(hours=1)) is None
        store.remember(caller, "k1", 201, {}, '{"name": "李梅", "phone": "13812345678"}'.encode())
        store.issue_ticket(f"ticket-{caller}", Ticket(caller, "李梅", ("resident",), "c", "c"), dt.timedelta(minutes=1))
    handle = pruning(store, dt.timedelta(hours=72))
    erased = StoredEvent(event_id="e-1", event_type="PersonErased", schema_version=1, stream_id="person-v1",
                         version=3, position=9, occurred_at=dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc),
                         data={"person_id": "v1", "community_id": "c", "reason": "moved_away",
                               "requested_at": "2026-12-03T00:00:00.000000Z", "erased_at": "2026-12-04T00:00:00.000000Z",
                               "confirmed_by": "cadre-1"}, metadata={})
    with write_transaction(store.engine) as connection:
        handle(connection, erased)
    with read_transaction(store.engine) as connection:
        assert [r.caller for r in connection.execute(sa.select(idempotency_keys.c.caller))] == ["v2"]
        assert [r.person_id for r in connection.execute(sa.select(live_tickets.c.person_id))] == ["v2"]
    assert store.claim_key("v1", "k1", "print", dt.timedelta(hours=1)) is None  # nothing remembered for v1
    assert store.redeem_ticket("ticket-v1") is None and store.redeem_ticket("ticket-v2").person_id == "v2"
    rows = store.feed_after(None, 0)
    assert [row.event_type for row in rows] == ["PersonErased"]
    assert privacy.live_view(json.loads(rows[0].envelope), {"staff", "holder"}) is None
    store.engine.dispose()


def test_reapply_erasures_forgets_an_erased_persons_rows_a_restore_brought_back(tmp_path, monkeypatch, capsys):
    """``python -m gateway reapply-erasures`` after a restore of the gateway's database: the answers
    kept for every person in the key store's erasure log go again; nobody else's."""
    from gateway.__main__ import reapply_erasures_main
    from gateway.store import GatewayStore, idempotency_keys
    from services.kernel.db import read_transaction
    from services.kernel.personal import KeyStore

    monkeypatch.setenv("COCREATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COCREATE_JWT_SECRET", TEST_SECRET)
    monkeypatch.delenv("COCREATE_KEYSTORE_URL", raising=False)
    store = GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    for caller in ("v1", "v2"):  # as the restored database has them
        store.claim_key(caller, "k1", "print", dt.timedelta(hours=1))
        store.remember(caller, "k1", 201, {}, '{"name": "李梅"}'.encode())
    keys = KeyStore(f"sqlite:///{tmp_path}/keys.db")
    keys.create_schema()
    assert keys.erase("v1", reason="other", requested_at_us=0, confirmed_by="cadre-1")
    reapply_erasures_main()
    assert capsys.readouterr().out.strip() == "gateway: 1 erased people, 1 rows of theirs purged"
    with read_transaction(store.engine) as connection:
        assert [r.caller for r in connection.execute(sa.select(idempotency_keys.c.caller))] == ["v2"]
    store.engine.dispose()
    keys.engine.dispose()
