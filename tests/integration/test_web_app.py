"""The web client as a visitor's browser meets it: the real Flask app (``web.app.create_app``) with
its server-side sessions in an SQLite file of its own, driven by Flask's test client from the
visitor's address 203.0.113.7.

Its upstream is the gateway's HTTP contract as the web client uses it — ``POST /api/v1/auth/token``,
``GET /api/v1/whoami``, ``/api/v1/public/...`` for the public pages, ``GET /api/v1/me``,
``POST /api/v1/projects`` — stood in by a real HTTP server on a local port (not a mock of
:mod:`cocreate_client`), so that the test records what really goes over the wire: every request's
method, path, headers and body. Answers follow the gateway's shapes: a token answer
``{access_token, person_id, roles, community}``, pages ``{items, total, page, per_page}`` and
errors ``{code, status, message, errors: {reason}}``.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from cocreate_client.messages import message
from web import config
from web.app import create_app

VISITOR = "203.0.113.7"
PASSWORD = "correct horse"
SECRET = "web-integration-secret-0123456789"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
COMMUNITY = {"community_id": "c1", "name": "新阳社区",
             "grids": [{"grid_id": "g1", "name": "第一网格"}, {"grid_id": "g2", "name": "第二网格"}]}
PROJECT = {"project_id": "p1", "community_id": "c1", "title": "安装路灯", "stage": "co_plan", "category": "safety",
           "grid_name": "第一网格", "location": "3号楼", "description": "楼下太暗", "progress": 0,
           "requested_fen": 120000, "cosigner_count": None}


# -- the stand-in gateway ------------------------------------------------------------------------

@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: object

    @property
    def route(self) -> str:
        return urlsplit(self.path).path


def _error(status: int, phrase: str, reason: str) -> tuple[int, dict]:
    return status, {"code": status, "status": phrase, "message": f"stand-in: {reason}", "errors": {"reason": reason}}


class StandIn:
    """What the stand-in gateway saw, the tokens it issued, and answers a test puts in front."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.tokens: set[str] = set()
        self.override: dict[tuple[str, str], tuple[int, object]] = {}
        self.lock = threading.Lock()

    def calls(self, route_prefix: str = "/api/v1/") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.route.startswith(route_prefix)]

    def answer(self, method: str, route: str, headers: dict[str, str], body) -> tuple[int, object]:
        if (method, route) in self.override:
            return self.override[(method, route)]
        bearer = headers.get("authorization", "")
        signed_in = bearer.startswith("Bearer ") and bearer[len("Bearer "):] in self.tokens
        if (method, route) == ("POST", "/api/v1/auth/token"):
            if not isinstance(body, dict) or body.get("password") != PASSWORD:
                return _error(401, "Unauthorized", "unauthenticated")
            token = f"tok-{uuid.uuid4().hex}"
            self.tokens.add(token)
            return 201, {"access_token": token, "token_type": "bearer", "expires_in": 3600,
                         "person_id": "person-wang", "roles": ["resident"], "community": "c1"}
        if route == "/api/v1/public/communities/c1" and method == "GET":
            return 200, COMMUNITY
        if route == "/api/v1/public/communities/c1/projects" and method == "GET":
            return 200, {"items": [{k: PROJECT[k] for k in ("project_id", "title", "stage", "category",
                                                               "grid_name", "progress")}],
                         "total": 1, "page": 1, "per_page": 20}
        if route == "/api/v1/public/projects/p1" and method == "GET":
            return 200, PROJECT
        if route.startswith("/api/v1/public/"):
            return _error(404, "Not Found", "not_found")
        if not signed_in:  # everything else is for a signed-in caller
            return _error(401, "Unauthorized", "unauthenticated")
        if (method, route) == ("GET", "/api/v1/whoami"):
            return 200, {"person_id": "person-wang", "name": "王小明", "roles": ["resident"], "community": "c1"}
        if (method, route) == ("GET", "/api/v1/me"):
            return 200, {"card": None, "proposals": {"items": []}, "pledges": {"items": []},
                         "ratings": {"items": []}, "missing": []}
        if (method, route) == ("POST", "/api/v1/projects"):
            return 201, {"project": {**PROJECT, "project_id": "p2", "title": body.get("title")}}
        return _error(404, "Not Found", "not_found")


@pytest.fixture
def gateway():
    stand_in = StandIn()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            headers = {name.lower(): value for name, value in self.headers.items()}
            seen = Seen(self.command, self.path, headers, body)
            with stand_in.lock:
                stand_in.seen.append(seen)
            status, answer = stand_in.answer(self.command, seen.route, headers, body)
            payload = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield stand_in
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# -- the web app -------------------------------------------------------------------------------

@dataclass
class Web:
    app: object
    client: object
    db_file: Path

    def rows(self) -> dict[str, bytes]:
        """The server-side sessions as stored: session id -> serialized data."""
        with sqlite3.connect(self.db_file) as connection:
            return {sid: bytes(data) for sid, data in connection.execute("SELECT session_id, data FROM web_sessions")}

    def cookie(self, name: str = "cocreate_session"):
        return self.client.get_cookie(name)


@pytest.fixture
def make_web(tmp_path):
    """``make_web(gateway_url, **settings)``: the web app on a data directory of its own."""
    apps = []

    def make(gateway_url: str, **overrides) -> Web:
        data_dir = tmp_path / f"web-{len(apps)}"
        environ = {"WEB_SECRET_KEY": SECRET, "WEB_GATEWAY_URL": gateway_url, "WEB_DATA_DIR": str(data_dir),
                   "WEB_COOKIE_SECURE": "false", "WEB_UPSTREAM_TIMEOUT_SECONDS": "2"}
        app = create_app(config.load(environ, **overrides))
        apps.append(app)
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = VISITOR
        return Web(app, client, data_dir / "web.db")

    yield make
    for app in apps:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture
def web(make_web, gateway) -> Web:
    return make_web(gateway.url)


def csrf_of(response) -> str:
    found = CSRF_INPUT.search(response.get_data(as_text=True))
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(web: Web, *, password: str = PASSWORD, next_page: str | None = None, **headers):
    token = csrf_of(web.client.get("/signin"))
    form = {"csrf_token": token, "username": "wang", "password": password}
    if next_page is not None:
        form["next"] = next_page
    return web.client.post("/signin", data=form, headers=headers)


def token_of(gateway: StandIn) -> str:
    (token,) = gateway.tokens
    return token


def text(response) -> str:
    return response.get_data(as_text=True)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- 1. signing in and out ---------------------------------------------------------------------

def test_signing_in_without_the_csrf_token_is_refused_before_any_upstream_call(web, gateway):
    web.client.get("/signin")
    refused = web.client.post("/signin", data={"username": "wang", "password": PASSWORD})
    assert refused.status_code == 400
    assert message("csrf_failed", "zh-CN") in text(refused)
    forged = web.client.post("/signin", data={"csrf_token": "forged", "username": "wang", "password": PASSWORD})
    assert forged.status_code == 400
    assert gateway.calls() == []
    assert web.client.get("/me").status_code == 302  # still not signed in


def test_a_wrong_password_says_so_and_keeps_the_visitor_signed_out(web, gateway):
    answer = sign_in(web, password="wrong")
    assert answer.status_code == 401
    assert message("signin_failed", "zh-CN") in text(answer)
    assert 'value="wang"' in text(answer)
    assert [c.route for c in gateway.calls()] == ["/api/v1/auth/token"]
    assert not any(gateway.tokens) and not any(b"tok-" in data for data in web.rows().values())


@pytest.mark.parametrize("secure", [False, True], ids=["http", "https"])
def test_signing_in_keeps_the_token_on_the_server_behind_a_fresh_session_cookie(make_web, gateway, secure):
    web = make_web(gateway.url, cookie_secure=secure)
    web.client.get("/signin")
    before = web.cookie().value
    assert f"session:{before}" in web.rows()  # the CSRF token's session

    signed_in = sign_in(web, next_page="/me")
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/me"
    token = token_of(gateway)
    set_cookie = next(h for h in signed_in.headers.getlist("Set-Cookie") if h.startswith("cocreate_session="))
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}
    assert "httponly" in attributes and "samesite=lax" in set_cookie.lower()
    assert ("secure" in attributes) is secure
    cookie = web.cookie()
    assert cookie.http_only and cookie.same_site == "Lax" and cookie.secure is secure
    assert token not in cookie.value and token not in set_cookie

    after = cookie.value
    assert after != before  # no session fixation
    rows = web.rows()
    assert f"session:{before}" not in rows
    assert token.encode() in rows[f"session:{after}"]
    assert [s for s, data in rows.items() if token.encode() in data] == [f"session:{after}"]
    assert "王小明" in text(web.client.get("/me"))


def test_signing_out_deletes_the_session_on_the_server(web, gateway):
    sign_in(web)
    token, sid = token_of(gateway), web.cookie().value
    page = web.client.get("/me")
    assert page.status_code == 200
    out = web.client.post("/signout", data={"csrf_token": csrf_of(page)})
    assert out.status_code == 302 and out.headers["Location"] == "/"
    rows = web.rows()
    assert f"session:{sid}" not in rows
    assert not any(token.encode() in data for data in rows.values())
    assert web.client.get("/me").headers["Location"].startswith("/signin")


def test_signing_out_needs_the_csrf_token(web, gateway):
    sign_in(web)
    assert web.client.post("/signout").status_code == 400
    assert web.client.get("/me").status_code == 200


# -- 2. what goes upstream -----------------------------------------------------------------------

def test_every_call_names_the_visitor_and_the_language_and_only_member_calls_carry_the_token(web, gateway):
    web.client.get("/c/c1")
    sign_in(web)
    token = token_of(gateway)
    assert web.client.get("/me").status_code == 200
    assert web.client.get("/c/c1").status_code == 200
    calls = gateway.calls()
    assert [c.route for c in calls] == [
        "/api/v1/public/communities/c1", "/api/v1/public/communities/c1/projects",
        "/api/v1/auth/token", "/api/v1/whoami", "/api/v1/me",
        "/api/v1/public/communities/c1", "/api/v1/public/communities/c1/projects"]
    for call in calls:
        assert call.headers["x-forwarded-for"] == VISITOR, call
        assert call.headers["accept-language"] == "zh-CN", call
        if call.route in ("/api/v1/whoami", "/api/v1/me"):
            assert call.headers["authorization"] == f"Bearer {token}"
        else:
            assert "authorization" not in call.headers, call
    assert gateway.calls("/api/v1/auth/token")[0].body == {"username": "wang", "password": PASSWORD}


def test_the_english_choice_is_the_upstream_language(web, gateway):
    web.client.set_cookie("lang", "en")
    sign_in(web)
    assert "Mine" in text(web.client.get("/me"))
    assert {c.headers["accept-language"] for c in gateway.calls()} == {"en"}


def test_the_address_is_not_forwarded_when_switched_off(make_web, gateway):
    web = make_web(gateway.url, forward_client_address=False)
    web.client.get("/c/c1")
    sign_in(web)
    assert len(gateway.calls()) == 4
    assert not any("x-forwarded-for" in c.headers for c in gateway.calls())


def test_behind_a_trusted_proxy_the_visitor_is_the_proxy_s_hop(make_web, gateway):
    web = make_web(gateway.url, trusted_proxies=1)
    web.client.get("/c/c1", headers={"X-Forwarded-For": "198.51.100.9"})
    web.client.get("/c/c1", headers={"X-Forwarded-For": "192.0.2.66, 198.51.100.10"})
    web.client.get("/c/c1")  # no header: the peer's address
    assert [c.headers["x-forwarded-for"] for c in gateway.calls()] == [
        "198.51.100.9", "198.51.100.9", "198.51.100.10", "198.51.100.10", VISITOR, VISITOR]


def test_without_a_trusted_proxy_a_spoofed_address_is_ignored(web, gateway):
    web.client.get("/c/c1", headers={"X-Forwarded-For": "198.51.100.9"})
    assert {c.headers["x-forwarded-for"] for c in gateway.calls()} == {VISITOR}


# -- 3. the gateway down -------------------------------------------------------------------------

def test_with_the_gateway_down_pages_say_so_and_the_app_stays_ready(make_web):
    web = make_web(f"http://127.0.0.1:{closed_port()}")
    down = message("service_down_part", "zh-CN")
    assert down == "暂时无法获取"
    community = web.client.get("/c/c1")
    assert community.status_code == 200
    assert down in text(community) and "Traceback" not in text(community)
    project = web.client.get("/projects/p1")
    assert project.status_code == 503
    assert down in text(project) and "Traceback" not in text(project)
    assert web.client.get("/healthz").status_code == 200
    ready = web.client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"status": "ready", "database": "ok"}


def test_with_the_gateway_down_signing_in_says_the_service_is_unavailable(make_web):
    web = make_web(f"http://127.0.0.1:{closed_port()}")
    answer = sign_in(web)
    assert answer.status_code == 503
    assert message("service_unavailable", "zh-CN") in text(answer)
    assert not any(b"tok-" in data for data in web.rows().values())


def test_a_member_s_project_page_says_so_when_its_service_is_down(web, gateway):
    sign_in(web)
    gateway.override[("GET", "/api/v1/projects/p1/overview")] = _error(503, "Service Unavailable",
                                                                       "service_unavailable")
    project = web.client.get("/projects/p1")
    assert project.status_code == 503
    assert message("service_down_part", "zh-CN") in text(project) and "Traceback" not in text(project)
    (call,) = gateway.calls("/api/v1/projects/p1/overview")  # no retry: a person is waiting
    assert call.headers["authorization"] == f"Bearer {token_of(gateway)}"


# -- 4. an expired token -------------------------------------------------------------------------

def test_an_upstream_401_ends_the_session_and_asks_to_sign_in_again(web, gateway):
    sign_in(web)
    token = token_of(gateway)
    gateway.override[("GET", "/api/v1/me")] = _error(401, "Unauthorized", "token_expired")
    expired = web.client.get("/me")
    assert expired.status_code == 302
    location = urlsplit(expired.headers["Location"])
    assert location.path == "/signin" and parse_qs(location.query) == {"next": ["/me"]}
    assert not any(token.encode() in data for data in web.rows().values())
    again = web.client.get(expired.headers["Location"])
    assert message("session_expired", "zh-CN") in text(again)
    assert web.client.get("/me").status_code == 302  # no second call with the old token
    assert len(gateway.calls("/api/v1/me")) == 1


# -- 5. open redirects ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["//evil.example", "https://evil.example/x", "/\\evil.example",
                                    "javascript:alert(1)"])
def test_signing_in_never_sends_the_visitor_off_site(web, gateway, target):
    answer = sign_in(web, next_page=target)
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert gateway.tokens  # it was a successful sign-in


@pytest.mark.parametrize(("target", "expected"), [
    ("https://evil.example", "/"), ("//evil.example", "/"), ("/c/c1?stage=co_plan", "/c/c1?stage=co_plan")])
def test_choosing_a_language_stays_on_site_and_sets_the_cookie(web, gateway, target, expected):
    chosen = web.client.get("/lang/en", query_string={"next": target})
    assert chosen.status_code == 302 and chosen.headers["Location"] == expected
    assert web.cookie("lang").value == "en"
    assert "English" not in text(web.client.get("/c/c1")) and "中文" in text(web.client.get("/c/c1"))


def test_an_unknown_language_sets_no_cookie(web):
    answer = web.client.get("/lang/xx")
    assert answer.status_code == 302 and web.cookie("lang") is None


# -- 6. security headers -------------------------------------------------------------------------

def test_pages_carry_the_security_headers(web, gateway):
    for path in ("/c/c1", "/signin", "/projects/p1", "/nowhere", "/healthz"):
        answer = web.client.get(path)
        csp = answer.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        directives = {d.split()[0]: set(d.split()[1:]) for d in csp.split(";") if d.strip()}
        # Only the site itself, but that pages may open the gateway's live stream (WEB_LIVE_URL).
        assert directives.pop("connect-src") == {"'self'", gateway.url}, (path, csp)
        sources = {source for values in directives.values() for source in values}
        assert sources <= {"'self'", "'none'", "data:"}, (path, sources)
        assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Cache-Control"] == "no-store", path
    style = web.client.get("/static/app.css")
    assert style.status_code == 200 and style.headers.get("Cache-Control") != "no-store"
    assert style.headers["X-Content-Type-Options"] == "nosniff"


# -- 7. forms ------------------------------------------------------------------------------------

def _proposal(token: str, **changes) -> dict:
    return {"csrf_token": token, "title": "安装路灯", "description": "楼下太暗，晚上不安全", "location": "3号楼",
            "grid_id": "g2", "category": "safety", "estimated_cost": "1500", "requested": "1200.5", **changes}


def test_an_invalid_amount_keeps_the_form_and_sends_nothing(web, gateway):
    sign_in(web)
    token = csrf_of(web.client.get("/propose"))
    answer = web.client.post("/propose", data=_proposal(token, requested="abc"))
    assert answer.status_code == 422
    page = text(answer)
    assert "请填写：申请基金金额" in page
    assert 'value="abc"' in page and 'value="安装路灯"' in page and "楼下太暗，晚上不安全</textarea>" in page
    assert 'value="g2" selected' in page and 'value="safety" selected' in page
    assert [c for c in gateway.calls() if c.method == "POST" and c.route != "/api/v1/auth/token"] == []


def test_a_valid_proposal_is_sent_in_fen_with_the_token(web, gateway):
    sign_in(web)
    token = csrf_of(web.client.get("/propose"))
    answer = web.client.post("/propose", data=_proposal(token))
    assert answer.status_code == 302 and answer.headers["Location"] == "/projects/p2"
    (sent,) = gateway.calls("/api/v1/projects")
    assert sent.method == "POST" and sent.headers["authorization"] == f"Bearer {token_of(gateway)}"
    assert sent.headers["idempotency-key"] and sent.headers["x-forwarded-for"] == VISITOR
    assert sent.body == {"community_id": "c1", "grid_id": "g2", "title": "安装路灯", "description": "楼下太暗，晚上不安全",
                         "category": "safety", "location": "3号楼", "estimated_cost_fen": 150000,
                         "requested_fen": 120050}


def test_a_page_number_that_is_not_one_asks_for_the_first_page(web, gateway):
    for page in ("²", "9" * 5000, "0", "-3", "12345"):
        assert web.client.get("/c/c1", query_string={"page": page}).status_code == 200
    assert web.client.get("/c/c1", query_string={"page": "3"}).status_code == 200
    pages = [parse_qs(urlsplit(c.path).query)["page"] for c in gateway.calls("/api/v1/public/communities/c1/")]
    assert pages == [["1"]] * 5 + [["3"]]


@pytest.mark.postgres
def test_sessions_live_in_postgresql_when_deployed(make_web, gateway, postgres_url):
    """Deployed, the sessions are rows of the web client's own PostgreSQL database (a plain
    ``postgresql://`` URL, as operators write it): the token is there, not in the cookie, and
    signing out deletes the row."""
    import sqlalchemy as sa

    web = make_web(gateway.url, database_url=postgres_url)
    assert sign_in(web).status_code == 302
    token, sid = token_of(gateway), web.cookie().value
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        def rows():
            with engine.connect() as connection:
                return {r[0]: bytes(r[1]) for r in connection.execute(sa.text("SELECT session_id, data FROM web_sessions"))}
        assert token.encode() in rows()[f"session:{sid}"] and token not in sid
        page = web.client.get("/me")
        assert page.status_code == 200
        web.client.post("/signout", data={"csrf_token": csrf_of(page)})
        assert f"session:{sid}" not in rows()
    finally:
        engine.dispose()


def test_a_form_sent_twice_carries_the_same_idempotency_key(web, gateway):
    """A double click (or a resent form) repeats the key the form was rendered with, so the
    gateway records it once; each rendering of the form has a key of its own."""
    sign_in(web)
    form_page = text(web.client.get("/propose"))
    token = csrf_of(web.client.get("/propose"))
    key = re.search(r'name="idempotency_key" value="([0-9a-f-]{36})"', form_page).group(1)
    again = re.search(r'name="idempotency_key" value="([0-9a-f-]{36})"', text(web.client.get("/propose"))).group(1)
    assert key != again
    for _ in range(2):
        web.client.post("/propose", data=_proposal(token, idempotency_key=key))
    sent = gateway.calls("/api/v1/projects")
    assert [s.headers["idempotency-key"] for s in sent] == [key, key]
    web.client.post("/propose", data=_proposal(token, idempotency_key="not-a-key"))
    assert gateway.calls("/api/v1/projects")[-1].headers["idempotency-key"] not in (key, "not-a-key")


def test_another_community_s_project_is_shown_as_its_public_page(web, gateway):
    sign_in(web)
    gateway.override[("GET", "/api/v1/projects/p1/overview")] = _error(403, "Forbidden", "other_community")
    page = web.client.get("/projects/p1")
    assert page.status_code == 200 and PROJECT["title"] in text(page)
    assert [c.route for c in gateway.calls("/api/v1/public/projects/")] == ["/api/v1/public/projects/p1"]


def test_a_member_s_project_page_when_the_overview_lacks_the_project(web, gateway):
    # the gateway answers the composed view with the project part missing (its service is down)
    sign_in(web)
    gateway.override[("GET", "/api/v1/projects/p1/overview")] = (200, {
        "project": None, "volunteer_minutes": None, "satisfaction": None,
        "missing": [{"part": "project", "service": "projects", "reason": "connection refused"}]})
    page = web.client.get("/projects/p1")
    assert page.status_code == 503 and message("service_down_part", "zh-CN") in text(page)


# -- live pages: a stream ticket for the page's EventSource ------------------------------------------

def test_a_stream_ticket_is_asked_for_with_the_session_s_token_and_the_csrf_token(web, gateway):
    gateway.override[("POST", "/api/v1/live/tickets")] = (201, {
        "ticket": "T-0123456789", "expires_at": "2026-12-03T10:01:00.000000Z", "community_id": "c1",
        "stream": "/api/v1/live?ticket=T-0123456789"})
    assert web.client.post("/live/ticket").status_code in (400, 401)  # no session, no CSRF token
    sign_in(web)
    page = web.client.get("/me")
    token = csrf_of(page)
    assert web.client.post("/live/ticket").status_code == 400  # a session, but no CSRF token
    assert not gateway.calls("/api/v1/live")
    reply = web.client.post("/live/ticket", headers={"X-CSRFToken": token})
    assert reply.status_code == 200, text(reply)
    assert reply.get_json()["url"] == f"{gateway.url}/api/v1/live?ticket=T-0123456789&named=false"
    (call,) = gateway.calls("/api/v1/live/tickets")
    assert call.headers["authorization"] == f"Bearer {token_of(gateway)}"
    assert token_of(gateway) not in text(reply)  # the token itself never reaches the browser
    # The page may open the gateway's stream: connect-src names the gateway's origin, and only it.
    csp = page.headers["Content-Security-Policy"]
    assert f"connect-src 'self' {gateway.url};" in csp


def test_a_stream_ticket_when_the_gateway_is_down_or_refuses(web, gateway):
    sign_in(web)
    token = csrf_of(web.client.get("/me"))
    gateway.override[("POST", "/api/v1/live/tickets")] = _error(503, "Service Unavailable", "service_unavailable")
    assert web.client.post("/live/ticket", headers={"X-CSRFToken": token}).status_code == 503
    gateway.override[("POST", "/api/v1/live/tickets")] = _error(403, "Forbidden", "community_required")
    assert web.client.post("/live/ticket", headers={"X-CSRFToken": token}).status_code == 403
    # The gateway no longer accepts the session's token: the session ends, the page stops asking.
    gateway.override[("POST", "/api/v1/live/tickets")] = _error(401, "Unauthorized", "token_expired")
    assert web.client.post("/live/ticket", headers={"X-CSRFToken": token}).status_code == 401
    assert "/signin" in web.client.get("/me").headers.get("Location", "")


def test_behind_an_ingress_the_stream_is_on_the_same_host_and_can_be_switched_off(make_web, gateway):
    same_host = make_web(gateway.url, live_url="/api/v1/live")
    gateway.override[("POST", "/api/v1/live/tickets")] = (201, {
        "ticket": "T-1", "expires_at": "2026-12-03T10:01:00.000000Z", "community_id": "c1",
        "stream": "/api/v1/live?ticket=T-1"})
    sign_in(same_host)
    page = same_host.client.get("/me")
    assert "connect-src 'self';" in page.headers["Content-Security-Policy"]
    reply = same_host.client.post("/live/ticket", headers={"X-CSRFToken": csrf_of(page)})
    assert reply.get_json()["url"] == "/api/v1/live?ticket=T-1&named=false"
    off = make_web(gateway.url, live_url="off")
    sign_in(off)
    page = off.client.get("/me")
    assert off.client.post("/live/ticket", headers={"X-CSRFToken": csrf_of(page)}).status_code == 404
    assert "connect-src 'self';" in page.headers["Content-Security-Policy"]


def test_metrics_are_for_the_scraper_not_for_visitors_through_the_ingress(web, gateway):
    web.client.get("/c/c1")
    scraped = web.client.get("/metrics")
    assert scraped.status_code == 200
    assert 'cocreate_http_requests_total{app="web"' in text(scraped)
    # The Ingress sends every path to the web client and always adds X-Forwarded-For.
    through_ingress = web.client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
    assert through_ingress.status_code == 404 and "cocreate_http" not in text(through_ingress)
    # a method a caller made up is counted as OTHER, not as a series of its own
    assert web.client.open("/c/c1", method="MADEUP").status_code in (400, 405)
    scraped = text(web.client.get("/metrics"))
    assert 'method="OTHER"' in scraped and 'method="MADEUP"' not in scraped


def test_a_page_view_does_not_rewrite_the_session_but_use_after_five_minutes_extends_it(web, gateway, monkeypatch):
    import time as time_module

    sign_in(web)
    web.client.get("/me")

    def stored() -> tuple:
        with sqlite3.connect(web.db_file) as connection:
            return connection.execute("SELECT data, expiry FROM web_sessions").fetchone()

    first = stored()
    for _ in range(3):
        assert web.client.get("/me").status_code == 200
    assert stored() == first  # read, not written
    later = time_module.time() + 301
    monkeypatch.setattr(time_module, "time", lambda: later)
    assert web.client.get("/me").status_code == 200
    data, expiry = stored()
    assert data != first[0] and expiry > first[1]  # touched: its lifetime runs from now


def test_a_live_page_s_own_refresh_leaves_the_messages_for_the_next_page(web, gateway):
    """static/live.js fetches the page again when an event concerns it; if that fetch came between
    a form's POST and its redirect, it must not take the form's message with it."""
    assert sign_in(web).status_code == 302  # "welcome" is waiting for the next page
    refreshed = text(web.client.get("/me", headers={"X-Live-Refresh": "1"}))
    assert 'class="flash' not in refreshed
    shown = text(web.client.get("/me"))
    assert 'class="flash info"' in shown
