"""The HTTP scaffolding every app shares: one error shape, body limits, JSON only, optimistic
concurrency via If-Match, correlation ids into event metadata, health/readiness/metrics, OpenAPI
and a locally served Swagger UI; the staff history endpoints; the gateway's whoami."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import flask
import marshmallow as ma
import pytest
from flask.views import MethodView
from flask_smorest import Blueprint

from services.kernel import web
from services.kernel.auth import issue_token
from services.kernel.config import AuthSettings
from services.kernel.db import make_engine
from services.kernel.events import NewEvent, format_time
from services.kernel.eventstore import EventStore
from services.projects.service import DEFINITION as PROJECTS
from tests.conftest import TEST_SECRET
from tests.support.apps import container, gateway_app, service_app
from tests.support.errors import ERROR_KEYS

AUTH = AuthSettings(jwt_secret=TEST_SECRET)
ROUTE = "/items/<stream_id>"
SECRET_TEXT = "kaboom-internal-detail-4711"


class ItemSchema(web.Schema):
    title = ma.fields.String(required=True)
    amount_fen = ma.fields.Integer(required=True)


class ExpectedVersionQuery(web.Schema):
    expected_version = ma.fields.Integer(validate=ma.validate.Range(min=0))


class ItemCreatedSchema(web.Schema):
    stream_id = ma.fields.String()
    position = ma.fields.Integer()
    version = ma.fields.Integer()


class Readiness:
    def __init__(self) -> None:
        self.failing = False

    def __call__(self) -> None:
        if self.failing:
            raise ConnectionError("flag database unreachable")


class AppUnderTest:
    def __init__(self, url: str) -> None:
        self.readiness = Readiness()
        self.store = EventStore(make_engine(url), service="testapp")
        self.store.create_schema()
        app, api = web.create_base_app("testapp", AUTH, title="Test app", max_body_bytes=1024,
                                       readiness={"flag": self.readiness})
        blp = Blueprint("items", __name__, description="Items for the scaffolding tests")
        store = self.store

        @blp.route(ROUTE)
        class Items(MethodView):
            @blp.arguments(ExpectedVersionQuery, location="query")
            @blp.arguments(ItemSchema)
            @blp.response(201, ItemCreatedSchema)
            def post(self, query, body, stream_id):
                """Append an ItemAdded event"""
                principal = web.current_principal()
                expected = web.expected_version_from_if_match()
                if expected is None:
                    expected = query.get("expected_version")
                if expected is None:
                    expected = store.current_version(stream_id)
                [event] = store.append(stream_id, expected, [NewEvent("ItemAdded", body)],
                                       metadata=web.event_metadata(principal))
                response = flask.make_response(
                    {"stream_id": stream_id, "position": event.position, "version": event.version}, 201)
                response.set_etag(str(event.version))
                return response

        @blp.route("/boom")
        class Boom(MethodView):
            def get(self):
                raise RuntimeError(SECRET_TEXT)

        api.register_blueprint(blp)
        self.app = app
        self.client = app.test_client()


@pytest.fixture
def testapp(sqlite_url):
    instance = AppUnderTest(sqlite_url)
    yield instance
    instance.store.engine.dispose()


@pytest.fixture
def stream(unique) -> str:
    return f"item-{unique}"


def token(person_id: str = "person-1", roles=("resident",)) -> str:
    return issue_token(AUTH, person_id=person_id, roles=roles)


def bearer(person_id: str = "person-1", roles=("resident",)) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(person_id, roles)}"}


def assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == ERROR_KEYS
    assert body["code"] == status
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], dict)
    return body


def post_item(client, stream_id: str, body=None, headers=None, **kwargs):
    return client.post(f"/items/{stream_id}", json={"title": "修路", "amount_fen": 100} if body is None else body,
                       headers={**bearer(), **(headers or {})}, **kwargs)


# -- success path -------------------------------------------------------------------------------

def test_post_appends_and_returns_position_and_etag(testapp, stream):
    response = post_item(testapp.client, stream)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json() == {"stream_id": stream, "position": 1, "version": 1}
    assert response.headers["ETag"] == '"1"'
    second = post_item(testapp.client, stream, headers={"If-Match": '"1"'})
    assert second.status_code == 201
    assert second.get_json()["version"] == 2
    assert second.headers["ETag"] == '"2"'
    events = testapp.store.load(stream)
    assert [e.data for e in events] == [{"title": "修路", "amount_fen": 100}] * 2


# -- the one error shape ------------------------------------------------------------------------

def test_unknown_route_is_404(testapp):
    body = assert_error(testapp.client.get("/no/such/route"), 404)
    assert body["status"] == "Not Found"


def test_wrong_method_is_405_with_allow(testapp, stream):
    response = testapp.client.delete(f"/items/{stream}", headers=bearer())
    assert_error(response, 405)
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert "POST" in allowed
    assert "DELETE" not in allowed


def test_body_over_limit_is_413(testapp, stream):
    before = testapp.store.last_position()
    response = post_item(testapp.client, stream, body={"title": "x" * 2000, "amount_fen": 1})
    assert_error(response, 413)
    assert testapp.store.last_position() == before


def test_body_just_under_limit_is_accepted(testapp, stream):
    response = post_item(testapp.client, stream, body={"title": "x" * 900, "amount_fen": 1})
    assert response.status_code == 201


def test_non_json_body_is_415(testapp, stream):
    before = testapp.store.last_position()
    response = testapp.client.post(f"/items/{stream}", data="title=x&amount_fen=1",
                                   headers={**bearer(), "Content-Type": "text/plain", "Accept-Language": "en"})
    body = assert_error(response, 415)
    assert "JSON" in body["message"]  # in English, as asked
    assert testapp.store.last_position() == before


def test_unknown_field_is_422_naming_it(testapp, stream):
    before = testapp.store.last_position()
    response = post_item(testapp.client, stream, body={"title": "x", "amount_fen": 1, "colour": "red"})
    body = assert_error(response, 422)
    assert "colour" in body["errors"]["json"]
    assert "title" not in body["errors"]["json"]
    assert testapp.store.last_position() == before


def test_missing_required_field_is_422_naming_it(testapp, stream):
    response = post_item(testapp.client, stream, body={"title": "x"})
    body = assert_error(response, 422)
    assert list(body["errors"]["json"]) == ["amount_fen"]
    assert testapp.store.last_position() == 0


def test_wrong_field_type_is_422(testapp, stream):
    response = post_item(testapp.client, stream, body={"title": "x", "amount_fen": "lots"})
    body = assert_error(response, 422)
    assert "amount_fen" in body["errors"]["json"]


def test_malformed_json_is_400(testapp, stream):
    response = testapp.client.post(f"/items/{stream}", data='{"title": "x", "amount_fen": ',
                                   headers={**bearer(), "Content-Type": "application/json"})
    body = assert_error(response, 400)
    assert "json" in body["errors"]
    assert testapp.store.last_position() == 0


@pytest.mark.parametrize("language", ["en", None])
def test_unexpected_error_is_500_without_leaking(testapp, language):
    response = testapp.client.get("/boom", headers={"Accept-Language": language} if language else {})
    body = assert_error(response, 500)
    text = response.get_data(as_text=True)
    assert SECRET_TEXT not in text
    assert "RuntimeError" not in text
    assert "Traceback" not in text
    if language == "en":
        assert body["errors"] == {}
    else:  # zh-CN: the people's message, the developer's English as the detail
        assert body["message"] == "系统出了点问题，请稍后再试"
        assert body["errors"] == {"detail": "an internal error occurred; quote the correlation id when reporting it"}
    assert response.headers["X-Correlation-ID"]


def test_missing_token_is_401_with_www_authenticate(testapp, stream):
    response = testapp.client.post(f"/items/{stream}", json={"title": "x", "amount_fen": 1})
    body = assert_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert body["errors"]["reason"] == "unauthenticated"
    assert testapp.store.last_position() == 0


def test_invalid_token_is_401(testapp, stream):
    bad = issue_token(AuthSettings(jwt_secret="x" * 40), person_id="mallory")
    response = testapp.client.post(f"/items/{stream}", json={"title": "x", "amount_fen": 1},
                                   headers={"Authorization": f"Bearer {bad}"})
    body = assert_error(response, 401)
    assert body["errors"]["reason"] == "token_invalid"
    assert testapp.store.last_position() == 0


# -- optimistic concurrency ----------------------------------------------------------------------

def test_stale_expected_version_without_if_match_is_409(testapp, stream):
    first = post_item(testapp.client, stream, query_string={"expected_version": 0})
    assert first.status_code == 201
    before = testapp.store.last_position()
    second = post_item(testapp.client, stream, query_string={"expected_version": 0})
    body = assert_error(second, 409)
    assert body["errors"]["reason"] == "concurrency_conflict"
    assert body["errors"]["expected_version"] == 0
    assert body["errors"]["actual_version"] == 1
    assert body["errors"]["stream_id"] == stream
    assert testapp.store.last_position() == before
    assert testapp.store.current_version(stream) == 1


def test_stale_if_match_is_412(testapp, stream):
    first = post_item(testapp.client, stream, headers={"If-Match": '"0"'})
    assert first.status_code == 201
    before = testapp.store.last_position()
    second = post_item(testapp.client, stream, headers={"If-Match": '"0"'})
    body = assert_error(second, 412)
    assert body["errors"]["reason"] == "concurrency_conflict"
    assert testapp.store.last_position() == before
    weak = post_item(testapp.client, stream, headers={"If-Match": 'W/"0"'})
    assert_error(weak, 412)
    current = post_item(testapp.client, stream, headers={"If-Match": first.headers["ETag"]})
    assert current.status_code == 201
    assert testapp.store.current_version(stream) == 2


def test_malformed_if_match_is_422(testapp, stream):
    response = post_item(testapp.client, stream, headers={"If-Match": '"abc"'})
    body = assert_error(response, 422)
    assert body["errors"]["reason"] == "invalid_if_match"
    assert testapp.store.last_position() == 0


def test_non_ascii_digit_if_match_is_refused_not_a_crash(testapp, stream):
    # "²" (U+00B2) is a valid latin-1 header character and str.isdigit() is True for it, but
    # int() refuses it: the client error must not become a 500.
    response = post_item(testapp.client, stream, headers={"If-Match": '"\u00b2"'})
    body = assert_error(response, 422)
    assert body["errors"]["reason"] == "invalid_if_match"


# -- correlation id -----------------------------------------------------------------------------

def test_correlation_id_is_returned_and_stored(testapp, stream):
    response = post_item(testapp.client, stream, headers={**bearer("person-77"), "X-Correlation-ID": "abc"})
    assert response.status_code == 201
    assert response.headers["X-Correlation-ID"] == "abc"
    [event] = testapp.store.load(stream)
    assert event.metadata["correlation_id"] == "abc"
    assert event.metadata["actor"] == "person-77"
    assert event.metadata["causation_id"] is None


def test_correlation_id_is_generated_when_absent(testapp, stream):
    first = post_item(testapp.client, stream)
    second = post_item(testapp.client, stream)
    generated = first.headers["X-Correlation-ID"]
    assert uuid.UUID(generated)
    assert generated != second.headers["X-Correlation-ID"]
    events = testapp.store.load(stream)
    assert [e.metadata["correlation_id"] for e in events] == [generated, second.headers["X-Correlation-ID"]]


def test_correlation_id_on_error_responses(testapp):
    response = testapp.client.get("/no/such/route", headers={"X-Correlation-ID": "err-1"})
    assert_error(response, 404)
    assert response.headers["X-Correlation-ID"] == "err-1"


# -- operational routes -------------------------------------------------------------------------

def test_healthz(testapp):
    response = testapp.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_failing_check(testapp):
    ready = testapp.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {"flag": "ok"}}
    testapp.readiness.failing = True
    not_ready = testapp.client.get("/readyz")
    assert not_ready.status_code == 503
    body = not_ready.get_json()
    assert body["status"] == "not ready"
    assert body["checks"]["flag"].startswith("failing: ConnectionError")
    assert "flag database unreachable" in body["checks"]["flag"]
    testapp.readiness.failing = False
    assert testapp.client.get("/readyz").status_code == 200


def _request_count(text: str, route: str, method: str, status: str) -> float:
    """The value of cocreate_http_requests_total for these labels (label order does not matter)."""
    wanted = {"app": "testapp", "route": route, "method": method, "status": status}
    for match in re.finditer(r'^cocreate_http_requests_total\{(.*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
        if labels == wanted:
            return float(match.group(2))
    return 0.0


def test_metrics_count_requests_by_route(testapp, stream):
    before = testapp.client.get("/metrics").get_data(as_text=True)
    assert post_item(testapp.client, stream).status_code == 201
    assert post_item(testapp.client, stream, body={"title": "x"}).status_code == 422
    response = testapp.client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert "# TYPE cocreate_http_requests_total counter" in text
    assert _request_count(text, ROUTE, "POST", "201") == _request_count(before, ROUTE, "POST", "201") + 1
    assert _request_count(text, ROUTE, "POST", "422") == _request_count(before, ROUTE, "POST", "422") + 1
    assert "cocreate_http_request_duration_seconds_bucket" in text
    assert 'route="/metrics"' not in text


def test_made_up_methods_are_counted_as_other_not_as_series_of_their_own(testapp, stream):
    """A caller choosing method names must not choose the metrics' series (each would be kept by
    every worker and in the multiprocess files): any method but the standard ones is OTHER."""
    before = testapp.client.get("/metrics").get_data(as_text=True)
    for made_up in ("FOOBAR", "QWERTYUIOP", "BREW"):
        assert testapp.client.open(f"/items/{stream}", method=made_up, headers=bearer()).status_code == 405
    assert testapp.client.delete(f"/items/{stream}", headers=bearer()).status_code == 405
    text = testapp.client.get("/metrics").get_data(as_text=True)
    unmatched = "<unmatched>"  # a method the route does not take: no route matched
    assert _request_count(text, unmatched, "OTHER", "405") == _request_count(before, unmatched, "OTHER", "405") + 3
    assert _request_count(text, unmatched, "DELETE", "405") == _request_count(before, unmatched, "DELETE", "405") + 1
    assert not re.search(r'method="(FOOBAR|QWERTYUIOP|BREW)"', text)


def test_openapi_lists_the_route(testapp):
    response = testapp.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["info"]["title"] == "Test app"
    operation = spec["paths"]["/items/{stream_id}"]["post"]
    assert "requestBody" in operation
    assert "/healthz" not in spec["paths"]
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_docs_are_served_locally(testapp):
    page = testapp.client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/docs/assets/swagger-ui-bundle.js" in html
    assert "/docs/assets/swagger-ui.css" in html
    assert not re.search(r'(src|href)="https?://', html)
    bundle = testapp.client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert len(bundle.get_data()) > 100_000
    bundle.close()
    assert_error(testapp.client.get("/docs/assets/no-such-file.js"), 404)


# -- the history endpoints of a real service ----------------------------------------------------

@pytest.fixture
def service(tmp_path):
    app = service_app(PROJECTS, COCREATE_DATA_DIR=str(tmp_path))
    store = container(app).store
    yield app, store
    store.engine.dispose()


ADMIN = {"Authorization": f"Bearer {issue_token(AUTH, person_id='admin-1', roles=['admin'])}"}


def fill(store, stream_id: str, count: int = 3) -> list:
    stored = []
    for version in range(count):
        stored += store.append(stream_id, version, [NewEvent(f"Step{version + 1}", {"n": version + 1})])
    return stored


def test_service_database_lives_in_data_dir(service, tmp_path):
    _, store = service
    assert str(store.engine.url) == f"sqlite:///{tmp_path}/projects.db"


def test_history_needs_admin_role(service):
    app, store = service
    client = app.test_client()
    body = assert_error(client.get("/events", headers=bearer("person-5", roles=["resident", "cadre"])), 403)
    assert body["errors"]["reason"] == "role_required"
    assert_error(client.get("/events"), 401)


def test_event_log_pages(service, unique):
    app, store = service
    stream_id = f"project-{unique}"
    fill(store, stream_id)
    client = app.test_client()
    first = client.get("/events", query_string={"limit": 2}, headers=ADMIN)
    assert first.status_code == 200
    page = first.get_json()
    assert [e["version"] for e in page["events"]] == [1, 2]
    assert page["next_after"] == page["events"][-1]["position"]
    second = client.get("/events", query_string={"after": page["next_after"], "limit": 2}, headers=ADMIN).get_json()
    assert [(e["stream_id"], e["version"], e["event_type"]) for e in second["events"]] == [(stream_id, 3, "Step3")]
    end = client.get("/events", query_string={"after": second["next_after"]}, headers=ADMIN).get_json()
    assert end == {"events": [], "next_after": second["next_after"]}
    assert_error(client.get("/events", query_string={"limit": 0}, headers=ADMIN), 422)


def test_stream_summary_with_etag(service, unique):
    app, store = service
    stream_id = f"project-{unique}"
    stored = fill(store, stream_id)
    response = app.test_client().get(f"/streams/{stream_id}", headers=ADMIN)
    assert response.status_code == 200
    assert response.headers["ETag"] == '"3"'
    summary = response.get_json()
    assert summary["stream_id"] == stream_id
    assert summary["stream_type"] == "project"
    assert summary["version"] == 3
    assert summary["last_event_type"] == "Step3"
    assert summary["last_position"] == stored[-1].position
    assert summary["created_at"].endswith("Z") and summary["updated_at"] >= summary["created_at"]
    # read from the log: the first event's time and the last one's, whatever another stream does
    fill(store, f"project-{unique}-other", count=2)
    again = app.test_client().get(f"/streams/{stream_id}", headers=ADMIN).get_json()
    assert (again["created_at"], again["updated_at"], again["version"]) == (
        format_time(stored[0].occurred_at), format_time(stored[-1].occurred_at), 3)


def test_stream_events_up_to_version_and_as_of(service, unique):
    app, store = service
    stream_id = f"project-{unique}"
    before_append = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    stored = fill(store, stream_id)
    client = app.test_client()
    up_to = client.get(f"/streams/{stream_id}/events", query_string={"up_to_version": 1}, headers=ADMIN)
    assert up_to.status_code == 200
    assert [(e["version"], e["data"]) for e in up_to.get_json()["events"]] == [(1, {"n": 1})]
    everything = client.get(f"/streams/{stream_id}/events", headers=ADMIN).get_json()
    assert [e["version"] for e in everything["events"]] == [1, 2, 3]
    assert everything["next_after"] == stored[-1].position
    earlier = client.get(f"/streams/{stream_id}/events", query_string={"as_of": before_append.isoformat()},
                         headers=ADMIN)
    assert earlier.status_code == 200
    assert earlier.get_json() == {"events": [], "next_after": 0}
    at_last = client.get(f"/streams/{stream_id}/events",
                         query_string={"as_of": stored[-1].occurred_at.isoformat()}, headers=ADMIN)
    assert [e["version"] for e in at_last.get_json()["events"]] == [1, 2, 3]
    naive = client.get(f"/streams/{stream_id}/events", query_string={"as_of": "2024-01-01T00:00:00"},
                       headers=ADMIN)
    assert "as_of" in assert_error(naive, 422)["errors"]["query"]


def test_unknown_stream_is_404(service, unique):
    app, _ = service
    client = app.test_client()
    body = assert_error(client.get(f"/streams/project-{unique}", headers={**ADMIN, "Accept-Language": "en"}), 404)
    assert body["errors"]["reason"] == "not_found"
    assert unique in body["message"]  # in English, as asked
    assert_error(client.get(f"/streams/project-{unique}/events", headers=ADMIN), 404)


def test_service_readiness_checks_database(service):
    app, _ = service
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok"}


# -- the gateway --------------------------------------------------------------------------------

@pytest.fixture
def gateway_client():
    return gateway_app().test_client()


def test_gateway_whoami(gateway_client):
    token_ = issue_token(AUTH, person_id="person-8", name="张伟", roles=["resident", "grid_worker"],
                         community="东湖社区")
    response = gateway_client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token_}"})
    assert response.status_code == 200
    assert response.get_json() == {"person_id": "person-8", "name": "张伟",
                                   "roles": ["grid_worker", "resident"], "community": "东湖社区"}
    assert "张伟".encode() in response.get_data()


def test_gateway_whoami_without_token_is_401(gateway_client):
    response = gateway_client.get("/api/v1/whoami")
    body = assert_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert body["errors"]["reason"] == "unauthenticated"
