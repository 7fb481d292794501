"""The kernel's Flask subclass (:class:`services.kernel.web.App`): what it remembers per function."""

from __future__ import annotations

import pytest
from flask.views import MethodView

from services.kernel.web import App


def test_whether_a_function_is_a_coroutine_is_decided_once_per_function():
    app = App("test")

    class Resource(MethodView):
        def get(self):
            return "ok"

    def view():
        return "ok"

    async def coroutine_view():
        return "ok"

    for _ in range(3):
        method = Resource().get  # a new bound method each time, as Flask makes one per request
        assert app.ensure_sync(method) is method
        assert app.ensure_sync(view) is view
    assert app._coroutine_functions == {Resource.get: False, view: False}
    for _ in range(2):  # a coroutine function is still handed to Flask's async_to_sync
        with pytest.raises(RuntimeError, match="async"):  # (the 'async' extra is not installed here)
            app.ensure_sync(coroutine_view)
    assert app._coroutine_functions[coroutine_view] is True


# -- query strings remembered (services.kernel.web.QueryParser) ---------------------------------

class _Counted:
    """Counts the loads of a schema instance."""

    def __init__(self, schema) -> None:
        self.loads = 0
        plain = schema.load

        def load(*args, **kwargs):
            self.loads += 1
            return plain(*args, **kwargs)

        schema.load = load


def _app_with(schema, location: str = "query"):
    from flask_smorest import Api

    from services.kernel.web import Blueprint

    app = App("test")
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    api = Api(app)
    blp = Blueprint("things", __name__)
    seen = []

    @blp.route("/things", methods=["GET", "POST"])
    @blp.arguments(schema, location=location)
    def things(query):
        seen.append(dict(query))  # as it was given
        query["touched"] = True  # a view may change what it was given
        return {"period": str(query.get("period")), "limit": query.get("limit")}

    api.register_blueprint(blp)
    return app, seen


def _query_schema(**extra):
    import marshmallow as ma

    from services.kernel.web import Schema

    fields = {"period": ma.fields.String(validate=ma.validate.Regexp(r"^20\d\d-\d\d$")),
              "limit": ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=500)), **extra}
    return Schema.from_dict(fields)()


def test_a_query_string_is_loaded_once_and_each_request_gets_its_own_copy():
    schema = _query_schema()
    counted = _Counted(schema)
    app, seen = _app_with(schema)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/things?period=2026-12").get_json() == {"period": "2026-12", "limit": 50}
    assert counted.loads == 1
    assert seen[1] == seen[2] == {"period": "2026-12", "limit": 50}  # not what the first view made of it
    assert client.get("/things?period=2026-11&limit=5").get_json() == {"period": "2026-11", "limit": 5}
    assert counted.loads == 2


def test_a_bad_query_string_is_refused_every_time():
    schema = _query_schema()
    counted = _Counted(schema)
    app, _seen = _app_with(schema)
    client = app.test_client()
    for _ in range(2):
        assert client.get("/things?period=someday").status_code == 422
        assert client.get("/things?limit=0").status_code == 422
    assert counted.loads == 4


def test_queries_whose_load_may_change_with_time_or_that_give_lists_are_loaded_every_time():
    import marshmallow as ma

    def not_in_the_future(value):  # a validator of its own: it may depend on the clock
        return value

    for extra in ({"since": ma.fields.String(validate=not_in_the_future)},
                  {"at": ma.fields.String(load_default=lambda: "now")},
                  {"kinds": ma.fields.List(ma.fields.String())}):
        schema = _query_schema(**extra)
        counted = _Counted(schema)
        app, _seen = _app_with(schema)
        client = app.test_client()
        for _ in range(2):
            assert client.get("/things?period=2026-12&" + ("kinds=a" if "kinds" in extra else "")).status_code == 200
        assert counted.loads == 2, extra


def test_a_body_is_never_remembered():
    schema = _query_schema()
    counted = _Counted(schema)
    app, _seen = _app_with(schema, location="json")
    client = app.test_client()
    for _ in range(2):
        assert client.post("/things", json={"period": "2026-12"}).get_json() == {"period": "2026-12", "limit": 50}
    assert counted.loads == 2


def test_at_most_so_many_query_strings_are_kept():
    from services.kernel.web import Blueprint, QueryParser

    schema = _query_schema()
    app, _seen = _app_with(schema)
    client = app.test_client()
    parser = Blueprint.ARGUMENTS_PARSER
    assert isinstance(parser, QueryParser)
    for month in range(1, 13):
        assert client.get(f"/things?period=2026-{month:02d}").status_code == 200
    assert 0 < len(parser._loaded) <= QueryParser.KEPT
    parser._loaded.update({(object(), None, str(i).encode()): {} for i in range(QueryParser.KEPT)})
    assert client.get("/things?period=2025-01").status_code == 200
    assert len(parser._loaded) == 1  # started over
