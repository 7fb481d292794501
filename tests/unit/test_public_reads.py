"""Public reads (共享 transparency): the privacy policy's allow-lists and small-count suppression
(services/kernel/privacy.py), the kernel's ``public`` marker (a route without a token, documented
``security: []``), and the gateway catalogue's reading of that marker — all without I/O."""

from __future__ import annotations

import importlib
import json

import pytest
from flask.views import MethodView
from flask_smorest import Blueprint

from gateway.catalogue import Catalogue, Target, service_rules
from services.kernel import privacy
from services.kernel.config import AuthSettings
from services.kernel.service import load_settings
from services.kernel.settings import SettingsError
from services.kernel.web import (
    PUBLIC_QUERY, NoQuery, check_public_routes, create_base_app, public, require_tokens,
)
from tests.conftest import TEST_SECRET
from tests.support.apps import blueprints_app
from tests.support.projects import Person

SERVICES = ("projects", "volunteers", "feedback")


# -- the allow-lists ---------------------------------------------------------------------------------

def test_a_public_record_keeps_only_the_fields_its_kind_lists():
    record = {"unit_id": "jsb", "name": "街道建设办", "person_id": "p1", "added_next_year": "x"}
    assert privacy.public_view("unit", record) == {"unit_id": "jsb", "name": "街道建设办"}
    assert privacy.public_view("unit", {"name": "n"}) == {"name": "n"}  # a missing field is left out


def test_records_within_records_are_kept_to_their_own_kinds():
    fund = {"community_id": "c", "balance_fen": 5, "actor": "cadre-1", "ledger": [
        {"kind": "reward", "amount_fen": 5, "detail": "居民甲: 表现好", "actor": "cadre-1", "on": "2026-12-04",
         "kind_label": {"zh": "以奖代补", "en": "reward paid", "note": "x"}}]}
    assert privacy.public_view("fund", fund) == {"community_id": "c", "balance_fen": 5, "ledger": [
        {"kind": "reward", "kind_label": {"zh": "以奖代补", "en": "reward paid"}, "amount_fen": 5,
         "on": "2026-12-04"}]}


def test_a_record_in_an_undeclared_field_is_an_error_never_shown_whole():
    with pytest.raises(TypeError, match="declare its kind"):
        privacy.public_view("milestone", {"progress": 5, "note": {"text": "x", "by": "p1"}})
    with pytest.raises(TypeError, match="cannot show"):
        privacy.public_view("milestone", {"progress": 5, "note": {"a", "b"}})


def test_every_nested_kind_is_a_listed_field_of_a_listed_kind():
    for kind, fields in privacy.PUBLIC_NESTED.items():
        assert kind in privacy.PUBLIC, kind
        for name, nested in fields.items():
            assert name in privacy.PUBLIC[kind] and nested in privacy.PUBLIC, (kind, name)


PERSONAL = {"person_id", "proposer_id", "proposer_name", "cosigners", "opinions", "comment", "contributor_id",
            "contributor_name", "recipient_id", "recipient_name", "maintainers", "members", "reported_by",
            "resolved_by", "logged_by", "confirmed_by", "opened_by", "closed_by", "by", "actor", "phone",
            "detail", "reference", "receipt_ref", "reason", "electorate", "representatives", "levels",
            "subject_id", "last_ranked", "rewards", "problems", "maintenance_logs", "revisions"}


def test_no_public_kind_lists_a_field_that_names_or_quotes_a_person():
    for kind, fields in privacy.PUBLIC.items():
        assert not PERSONAL & set(fields), (kind, PERSONAL & set(fields))


# -- small counts -----------------------------------------------------------------------------------

def test_counts_of_one_to_four_people_are_suppressed_and_named():
    shown, hidden = privacy.suppress({"cosignatures": 4, "pledges": 5, "contributors": 0, "unknown": None}, 5)
    assert shown == {"cosignatures": None, "pledges": 5, "contributors": 0, "unknown": None}
    assert hidden == ["cosignatures"]
    assert privacy.suppress({"ratings": 1}, 5) == ({"ratings": None}, ["ratings"])
    assert privacy.suppress({"ratings": 1}, 1) == ({"ratings": 1}, [])  # 1: nothing suppressed


def test_the_parts_of_one_whole_are_shown_together_or_not_at_all():
    # 8 yes and 1 no of 9 ballots: showing the 8 and the 0 would give the 1 away.
    assert privacy.suppress({"yes": 8, "no": 1, "abstain": 0}, 5, together=True) == (
        {"yes": None, "no": None, "abstain": None}, ["yes", "no", "abstain"])
    assert privacy.suppress({"yes": 9, "no": 0, "abstain": 0}, 5, together=True) == (
        {"yes": 9, "no": 0, "abstain": 0}, [])


def test_public_times_are_days_in_china_standard_time():
    assert privacy.public_day("2026-12-03T17:30:05.123456Z") == "2026-12-04"
    assert privacy.public_day("2026-12-03T15:59:59Z") == "2026-12-03"
    assert privacy.public_day(None) is None and privacy.public_day("not a time") is None


def test_the_threshold_is_a_setting_of_each_service():
    from services.projects.service import DEFINITION

    environ = {"COCREATE_JWT_SECRET": TEST_SECRET}
    assert load_settings(DEFINITION, environ=environ).public_min_count == 5
    assert load_settings(DEFINITION, environ={**environ, "PROJECTS_PUBLIC_MIN_COUNT": "3"}).public_min_count == 3
    assert load_settings(DEFINITION, environ={**environ, "COCREATE_PUBLIC_MIN_COUNT": "7"}).public_min_count == 7
    with pytest.raises(SettingsError, match="PROJECTS_PUBLIC_MIN_COUNT must be >= 1"):
        load_settings(DEFINITION, environ={**environ, "PROJECTS_PUBLIC_MIN_COUNT": "0"})


# -- the marker: no token, security: [] ---------------------------------------------------------------

def small_app(*, routes=None):
    """A base app with one public read, one token read and a write, as every service builds them."""
    app, api = create_base_app("public-test", AuthSettings(jwt_secret=TEST_SECRET), title="t")
    require_tokens(app)
    blp = Blueprint("things", __name__, url_prefix="")

    class Open(MethodView):
        @public(blp)
        @blp.arguments(NoQuery, **PUBLIC_QUERY)
        @blp.response(200)
        def get(self, _query):
            return {"open": True}

    class Closed(MethodView):
        @blp.response(200)
        def get(self):
            return {"open": False}

        @blp.response(201)
        def post(self):
            return {}

    for path, view in (routes or {"/public/things": Open, "/things": Closed}).items():
        blp.route(path)(view)
    api.register_blueprint(blp)
    return app, api


def test_a_public_read_needs_no_token_and_ignores_one_and_others_still_need_theirs():
    app, _api = small_app()
    client = app.test_client()
    assert client.get("/public/things").get_json() == {"open": True}
    assert client.head("/public/things").status_code == 200
    for header in ("Bearer garbage", "Basic abc", Person("p", "n", ("resident",), "c").headers["Authorization"]):
        assert client.get("/public/things", headers={"Authorization": header}).get_json() == {"open": True}
    assert client.get("/public/things?x=1").status_code == 422  # unknown query keys are refused
    assert client.get("/things").status_code == 401
    assert client.post("/things", json={}).status_code == 401


def test_the_document_marks_exactly_the_public_read_with_an_empty_security():
    app, api = small_app()
    document = api.spec.to_dict()
    assert document["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/public/things"]["get"]["security"] == []
    assert "security" not in document["paths"]["/things"]["get"]
    assert "security" not in document["paths"]["/things"]["post"]
    check_public_routes(app)


def test_public_reads_are_gets_under_public_and_nothing_else_is():
    blp = Blueprint("b", __name__)
    with pytest.raises(ValueError, match="only reads are public"):
        class Write(MethodView):
            @public(blp)
            def post(self):
                return {}
    app, _api = small_app()
    open_view = app.view_functions["things.Open"].view_class
    closed_view = app.view_functions["things.Closed"].view_class
    for routes in ({"/things/open": open_view}, {"/public/closed": closed_view}):
        misplaced, _ = small_app(routes=routes)
        with pytest.raises(ValueError, match="public reads are the GETs under /public/"):
            check_public_routes(misplaced)


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_s_public_reads_are_its_gets_under_public_documented_so(service):
    app, smorest = blueprints_app(service)
    check_public_routes(app)
    document = smorest.spec.to_dict()
    open_ops = {(method, path) for path, ops in document["paths"].items() for method, op in ops.items()
                if isinstance(op, dict) and op.get("security") == []}
    under = {(method, path) for path, ops in document["paths"].items() for method in ops
             if path.startswith("/public/") and method in ("get", "post", "put", "patch", "delete")}
    assert open_ops == under and all(method == "get" for method, _ in open_ops)
    expected = {"projects": {"/public/communities/{community_id}", "/public/communities/{community_id}/projects",
                             "/public/communities/{community_id}/fund", "/public/projects/{project_id}",
                             "/public/communities/{community_id}/rounds", "/public/rounds/{round_id}"},
                "volunteers": {"/public/certificates/{number}/verification"},
                "feedback": {"/public/rankings/{community_id}/{kind}",
                             "/public/rankings/{community_id}/{kind}/{period}"}}[service]
    files = importlib.import_module(f"services.{service}.open_data").DATASET.files()  # open data: one GET per file
    expected |= {f"/public/open-data/communities/{{community_id}}/{service}/{name}" for name in files}
    assert {path for _method, path in open_ops} == expected


# -- the gateway: public because the document says so ------------------------------------------------

DOCUMENT = {"openapi": "3.0.3", "info": {"title": "things", "version": "1"},
            "paths": {"/public/things": {"get": {"security": [], "responses": {}}},
                      "/public/writes": {"post": {"security": [], "responses": {}}},
                      "/things": {"get": {"responses": {}}, "post": {"responses": {}}},
                      "/other": {"get": {"security": [{"bearerAuth": []}], "responses": {}}}}}


def test_the_catalogue_records_the_reads_a_document_declares_public():
    rules = {rule.rule: rule.endpoint for rule in service_rules("projects", DOCUMENT)}
    assert rules["/public/things"] == Target("projects", "/public/things", frozenset({"GET"}))
    assert rules["/public/writes"].public == frozenset()  # a write is never public
    assert rules["/things"].public == rules["/other"].public == frozenset()

    catalogue = Catalogue({"projects": "http://p"}, None, fetch=lambda *_: json.loads(json.dumps(DOCUMENT)))
    assert catalogue.is_public("/public/things", "GET") and catalogue.is_public("/public/things", "HEAD")
    assert not catalogue.is_public("/public/writes", "POST")
    assert not catalogue.is_public("/things", "GET") and not catalogue.is_public("/other", "GET")
    assert not catalogue.is_public("/public/nowhere", "GET")  # not a known route: not public
    assert not catalogue.is_public("/public/things", "DELETE")

