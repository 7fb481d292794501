"""HTTP scaffolding shared by the three services and the gateway.

:func:`create_base_app` gives every app the same behaviour: flask-smorest with the OpenAPI document
and a locally served Swagger UI, one error shape ``{code, status, message, errors}`` for every
error (404, 405 with ``Allow``, 413, 415, 422, 500 and domain errors; the documents name the error
answers of every operation, with no catch-all ``default``: :class:`CommonErrorResponses`) in the
language of ``Accept-Language`` (zh-CN unless it asks for English: :func:`error_body`), unknown
JSON fields rejected, a body size limit, a correlation id per request (taken from
``X-Correlation-ID`` or made up, returned, logged and put into event metadata), request metrics,
``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

import flask
import marshmallow as ma
import msgspec
from apispec import BasePlugin
from flask.json.provider import DefaultJSONProvider
import flask_smorest
from flask_smorest import Api
from werkzeug.exceptions import HTTPException, InternalServerError, UnsupportedMediaType
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.http import HTTP_STATUS_CODES

from cocreate_client.messages import DEFAULT_LOCALE, field_errors, match_locale, message_for_error
from services.kernel import metrics
from services.kernel.auth import REQUIRED_CLAIMS, TOKEN_CLAIMS, Principal, TokenVerifier
from services.kernel.cache import EncodedAnswer, joined_objects
from services.kernel.config import AuthSettings
from services.kernel.errors import ConcurrencyError, DomainError, Forbidden
from services.kernel.events import Metadata, dumps
from services.kernel.logs import correlation_id_var, request_line
from services.kernel.model import LEGACY_ROLE_ALIASES, ROLE_MEANINGS, ROLES, new_correlation_id
from services.kernel.personal import MARK

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"
UNMATCHED_ROUTE = "<unmatched>"  # the route label of requests no route matched
INT64 = (-(2 ** 63), 2 ** 63 - 1)  # the range of every integer column of every store
ReadinessCheck = Callable[[], None]


class Schema(ma.Schema):
    """Base schema: unknown fields are an error, never silently dropped; every integer field has a
    documented minimum and maximum (at most the signed 64-bit range of the stores' columns, so no
    value can overflow a query parameter or a column: a field's own ``Range`` may narrow it)."""

    class Meta:
        unknown = ma.RAISE
        ordered = True

    def on_bind_field(self, field_name: str, field_obj: ma.fields.Field) -> None:
        if isinstance(field_obj, ma.fields.Integer) and not getattr(field_obj, "_int64_bounded", False):
            ranges = [v for v in field_obj.validators if isinstance(v, ma.validate.Range)]
            if not any(r.max is not None for r in ranges) or not any(r.min is not None for r in ranges):
                field_obj.validators.append(ma.validate.Range(min=INT64[0], max=INT64[1]))
            field_obj._int64_bounded = True  # type: ignore[attr-defined]
        super().on_bind_field(field_name, field_obj)


class JsonBoolean(ma.fields.Boolean):
    """A boolean of a JSON body: ``true`` or ``false`` only (marshmallow's own also takes 0, 1,
    "yes", "on", …: a client sending ``"provisional": 0`` has a bug it should hear about)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class ErrorSchema(Schema):
    """The one error shape (documentation only: :func:`error_body` makes every error answer)."""

    code = ma.fields.Integer(required=True, validate=ma.validate.Range(min=400, max=599),
                             metadata={"description": "the HTTP status code"})
    status = ma.fields.String(required=True, metadata={"description": "the status code's name"})
    message = ma.fields.String(required=True, metadata={
        "description": "what went wrong, in the language of Accept-Language: zh-CN (the default, also for a "
                       "language the platform does not speak) for people, en the developer's detailed text"})
    errors = ma.fields.Dict(required=True, metadata={
        "description": "details: fields and their problems (``json``, ``query``; in the language of the "
                       "message), ``reason`` (a stable code), ``detail`` (zh-CN: the developer's English text)"})


# The error answers (in the one shape) of every operation of every app: the shared request checks
# (a URL too long, a chunked body too large), authentication and roles, missing resources, schema
# and domain refusals, and — the services' routes being the gateway's too — the gateway's rate
# limit and an unavailable service. Writes add conflicts, stale If-Match, bodies that are not JSON
# and the gateway's "outcome unknown". flask-smorest's catch-all ``default`` response is off: a
# status code an operation answers must be one its document names.
ERRORS_OF_EVERY_OPERATION = (400, 401, 403, 404, 413, 414, 422, 429, 503)
ERRORS_OF_EVERY_WRITE = (409, 412, 415, 504)
WRITE_METHODS = ("post", "put", "patch", "delete")


class CommonErrorResponses(BasePlugin):
    """Declare :data:`ERRORS_OF_EVERY_OPERATION` (and, on writes, :data:`ERRORS_OF_EVERY_WRITE`)
    on every operation, as references to flask-smorest's response per status (the error schema)."""

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for method, operation in (operations or {}).items():
            if method not in ("get", *WRITE_METHODS):
                continue
            responses = operation.setdefault("responses", {})
            declared = {str(code) for code in responses}
            extra = ERRORS_OF_EVERY_WRITE if method in WRITE_METHODS else ()
            for code in sorted((*ERRORS_OF_EVERY_OPERATION, *extra)):
                if str(code) not in declared:
                    responses[str(code)] = HTTPStatus(code).name


class CocreateApi(Api):
    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None  # every error is declared by CommonErrorResponses instead


def request_locale() -> str:
    """The language of this request's answers (``zh-CN`` or ``en``): its ``Accept-Language`` as
    :func:`cocreate_client.messages.match_locale` reads it — ``zh-CN`` when there is none (or no
    request), or when it names no language of the platform."""
    if not flask.has_request_context():
        return DEFAULT_LOCALE
    return match_locale(flask.request.headers.get("Accept-Language"))


def error_body(status: int, message: str, errors: Mapping[str, Any] | None = None,
               locale: str | None = None) -> dict[str, Any]:
    """The one error shape, in ``locale`` (default: the request's, :func:`request_locale`).

    ``message`` and the field messages in ``errors`` are the developer's English. In ``en`` the
    body says them as they are. In ``zh-CN`` the body's ``message`` is the catalogue's Chinese
    (:mod:`cocreate_client.messages`) for ``errors.reason``, else for the status; the English
    text is kept in ``errors.detail``, and each field message is translated (a text the catalogue
    does not know stays as it is)."""
    errors = dict(errors or {})
    if match_locale(locale or request_locale()) != "en":
        errors = {key: value if key == "reason" else field_errors(value, "zh-CN") for key, value in errors.items()}
        errors["detail"] = message
        message = message_for_error({"code": status, "errors": errors}, "zh-CN")
    return {
        "code": status,
        "status": HTTP_STATUS_CODES.get(status, "Error"),
        "message": message,
        "errors": errors,
    }


def error_response(status: int, message: str, errors: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> flask.Response:
    """An error answer (:func:`error_body`, in the request's language) with ``status``."""
    response = flask.jsonify(error_body(status, message, errors))
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _swagger_assets_dir() -> Path:
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).parent / "dist"


def _bearer_description() -> str:
    required = ", ".join(f"`{c}`" for c in REQUIRED_CLAIMS)
    optional = ", ".join(f"`{c}`" for c in TOKEN_CLAIMS if c not in REQUIRED_CLAIMS)
    roles = "\n".join(f"- `{role}` — {zh} / {en}" for role, (zh, en) in ROLE_MEANINGS.items())
    legacy = ", ".join(f"`{old}` is read as `{new}`" for old, new in LEGACY_ROLE_ALIASES.items())
    return (f"A JWT with the claims {required} (required) and {optional}. "
            f"`roles` lists the caller's roles, which the operations' `x-roles` name:\n\n{roles}\n\n"
            f"Legacy spelling ({legacy}); other names are no role and grant nothing.")


# The bearer token as every OpenAPI document describes it: its claims and the platform's roles
# (``x-roles``: role -> {zh, en}), both from the one definition in the kernel.
BEARER_SCHEME: dict[str, Any] = {
    "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": _bearer_description(),
    "x-roles": {role: {"zh": zh, "en": en} for role, (zh, en) in ROLE_MEANINGS.items()},
}


def role_list_field(**kwargs: Any) -> ma.fields.List:
    """A list of the platform's roles, for schemas that show a caller's roles (the token endpoint,
    whoami): documented with the roles as its items' ``enum``."""
    return ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(ROLES)), **kwargs)


_PURE_VALIDATORS = (ma.validate.Regexp, ma.validate.OneOf, ma.validate.Range, ma.validate.Length,
                    ma.validate.Equal, ma.validate.NoneOf, ma.validate.ContainsOnly)
_IMMUTABLE_VALUES = (str, int, float, bool, type(None), Decimal, date, datetime)


class _LoadLater:
    """A location's data, loaded when first needed (:class:`QueryParser`)."""

    __slots__ = ("load",)

    def __init__(self, load: Callable[[], Any]) -> None:
        self.load = load


def _loaded(location_data: Any) -> Any:
    return location_data.load() if type(location_data) is _LoadLater else location_data


class QueryParser(FlaskParser):
    """webargs' Flask parser, with the arguments of a query string remembered (issue 23: loading a
    one-field query through marshmallow was a sixth of a live ranking's time, and a page's readers
    send the same query again and again). Only where the answer depends on the query string alone:
    a query's schema (not a body's) without hooks, whose fields have no default computed at load time
    and only marshmallow's own validators (a pattern, a choice, a range, a length), and whose loaded
    values are all immutable (text, numbers, dates; not lists). Errors are never remembered: a bad
    query is checked again each time. At most ``KEPT`` query strings per worker; then it starts
    over (a caller sending endless distinct queries costs what it cost before, no memory)."""

    KEPT = 1024
    _QUERY = frozenset({"query", "querystring"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[tuple, dict] = {}
        self._pure: dict[ma.Schema, bool] = {}

    def _load_location_data(self, *, schema, req, location):
        # A query string remembered needs no parsing at all (werkzeug's ``request.args``, a fifth of
        # a live ranking's argument handling): loaded only when :meth:`_process_location_data` needs it.
        if location in self._QUERY and self._is_pure(schema):
            return _LoadLater(lambda: super(QueryParser, self)._load_location_data(
                schema=schema, req=req, location=location))
        return super()._load_location_data(schema=schema, req=req, location=location)

    def _process_location_data(self, location_data, schema, req, location, unknown, validators):
        if type(location_data) is _LoadLater:  # a query's, of a pure schema
            cacheable = not validators
        else:
            cacheable = location in self._QUERY and not validators and self._is_pure(schema)
        if not cacheable:
            return super()._process_location_data(_loaded(location_data), schema, req, location, unknown, validators)
        key = (schema, unknown, req.query_string)
        found = self._loaded.get(key)
        if found is None:
            found = super()._process_location_data(_loaded(location_data), schema, req, location, unknown,
                                                   validators)
            if type(found) is dict and all(isinstance(value, _IMMUTABLE_VALUES) for value in found.values()):
                if len(self._loaded) >= self.KEPT:
                    self._loaded.clear()
                self._loaded[key] = found
            else:
                return found
        return dict(found)  # the caller's own copy: a view may change what it is given

    def _raw_load_json(self, req):
        # the body as the request hooks parsed it to check it (checked_json), when they did
        document = req.environ.get(_PARSED_JSON, _NOT_JSON)
        if document is not _NOT_JSON and is_json_request(req):
            return document
        return super()._raw_load_json(req)

    def _is_pure(self, schema: ma.Schema) -> bool:
        pure = self._pure.get(schema)
        if pure is None:
            pure = self._pure[schema] = not schema._hooks and all(
                not callable(field.load_default) and not isinstance(field, ma.fields.Nested)
                and all(isinstance(v, _PURE_VALIDATORS) for v in field.validators)
                for field in schema.fields.values())
        return pure


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, every app's: an argument schema given as a class is built once.
    (webargs builds a new instance of a schema class for every request it parses: a twentieth of a
    small read's time, issue 23.) The schemas keep no state between loads, and a sync worker or a
    greenlet loads one request at a time without yielding inside ``load``. Query strings are parsed
    by :class:`QueryParser`."""

    ARGUMENTS_PARSER = QueryParser()

    def arguments(self, schema, *args: Any, **kwargs: Any):
        return super().arguments(schema() if isinstance(schema, type) else schema, *args, **kwargs)


class CompactJSON(DefaultJSONProvider):
    """Flask's JSON, encoded by msgspec: the same text (compact, UTF-8, keys sorted as Flask sorts
    them), several times faster than the standard library (issue 23: a write's answer took a fifth
    of a millisecond to encode). What msgspec does not know (a ``__html__`` object) and a call with
    options (``indent`` in debug mode) go to Flask's own encoder. A ``datetime`` would come out as
    ISO 8601 text rather than Flask's HTTP date: the answers carry times as text already (their
    schemas dump them), and every time in the APIs is ISO 8601."""

    _sorted = msgspec.json.Encoder(order="sorted")
    _as_built = msgspec.json.Encoder()

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs.get("indent") is not None or kwargs.get("default") is not None:
            return super().dumps(obj, **kwargs)
        try:
            return (self._sorted if kwargs.get("sort_keys", self.sort_keys) else self._as_built).encode(obj).decode()
        except TypeError:
            return super().dumps(obj, **{"separators": (",", ":"), **kwargs})


class App(flask.Flask):
    """Flask, with :meth:`ensure_sync` deciding once per function whether it is a coroutine function:
    Flask asks it of every request hook and view on every request (nine times for a project page,
    each an ``inspect`` walk: issue 23). A bound method (a ``MethodView``'s, new on every request) is
    remembered by its function; at most 4,096 are remembered (an app has a few hundred)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._coroutine_functions: dict[Any, bool] = {}

    def ensure_sync(self, func: Callable) -> Callable:
        key = getattr(func, "__func__", func)
        is_coroutine = self._coroutine_functions.get(key)
        if is_coroutine is None:
            is_coroutine = inspect.iscoroutinefunction(func)
            if len(self._coroutine_functions) < 4096:  # the app's functions are far fewer
                self._coroutine_functions[key] = is_coroutine
        return self.async_to_sync(func) if is_coroutine else func


def create_base_app(
    name: str,
    settings: AuthSettings,
    *,
    title: str,
    version: str = "1.0",
    readiness: Mapping[str, ReadinessCheck] | None = None,
    max_body_bytes: int = 1_048_576,
    description: str = "",
) -> tuple[flask.Flask, Api]:
    app = App(name)
    app.json = CompactJSON(app)
    app.config.update(
        API_TITLE=title,
        API_VERSION=version,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        API_SPEC_OPTIONS={
            "info": {"description": description},
            "components": {"securitySchemes": {"bearerAuth": BEARER_SCHEME}},
            "security": [{"bearerAuth": []}],
        },
        MAX_CONTENT_LENGTH=max_body_bytes,
    )
    app.json.ensure_ascii = False
    api = CocreateApi(app, spec_kwargs={"extra_plugins": [CommonErrorResponses()]})
    app.extensions["cocreate.verifier"] = TokenVerifier(settings)
    app.extensions["cocreate.app_name"] = name
    _install_error_handlers(app)
    _install_request_hooks(app, name)
    _install_operational_routes(app, readiness or {})
    return app, api


def _install_error_handlers(app: flask.Flask) -> None:
    def handle_http(error: HTTPException):
        status = error.code or 500
        message = error.description or HTTP_STATUS_CODES.get(status, "")
        errors: dict[str, Any] = {}
        headers: dict[str, str] = {}
        data = getattr(error, "data", None)
        if data:
            message = data.get("message", message if status != 422 else "the request is not valid")
            errors = data.get("errors") or data.get("messages") or {}
            headers.update(data.get("headers") or {})
        for key, value in error.get_headers():
            if key.lower() != "content-type":
                headers[key] = value
        if status >= 500:
            log.error("server error", exc_info=error.original_exception if isinstance(error, InternalServerError) else None)
        return error_response(status, message, errors, headers)

    def handle_domain(error: DomainError):
        status = error.status
        if isinstance(error, ConcurrencyError) and flask.request.headers.get("If-Match"):
            status = 412
        # The stable code wins over a detail that happens to be about a field named "reason".
        errors = {**error.details, "reason": error.reason}
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return error_response(status, error.message, errors, headers)

    def handle_unexpected(error: Exception):
        log.exception("unhandled error")
        return error_response(500, "an internal error occurred; quote the correlation id when reporting it")

    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(DomainError, handle_domain)
    app.register_error_handler(Exception, handle_unexpected)


CHILDREN_KEPT = 512  # (route, method, status) keys whose metric children a worker keeps
# The methods the metrics name; any other a caller sends is counted as OTHER (each name it made up
# would otherwise be a series of its own, kept by every worker and in the multiprocess files).
METHODS_LABELLED = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _install_request_hooks(app: flask.Flask, name: str) -> None:
    # Each (route, method, status)'s two metric children, labelled once: ``labels()`` takes a lock
    # and checks its label values on every call (issue 23: a hundredth of a page's time). The routes
    # are the app's templates (and UNMATCHED_ROUTE) and the methods METHODS_LABELLED (and OTHER), so
    # the keys are few; at most CHILDREN_KEPT are kept all the same (the rest labelled per request).
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    @app.before_request
    def _start():
        request, g = flask.request._get_current_object(), flask.g._get_current_object()  # once, not per use
        correlation_id = request.headers.get(CORRELATION_HEADER, "").strip()[:128] or new_correlation_id()
        g.correlation_id = correlation_id
        g.correlation_token = correlation_id_var.set(correlation_id)
        g.started = time.perf_counter()
        target = request.environ.get("RAW_URI") or request.full_path
        if len(target.encode("latin-1", "replace")) > MAX_URL_BYTES:
            return error_response(414, f"the URL is longer than {MAX_URL_BYTES} bytes", {
                "url": [f"at most {MAX_URL_BYTES} bytes"]})
        environ = request.environ
        transfer_encoding = environ.get("HTTP_TRANSFER_ENCODING")
        if transfer_encoding and "chunked" in transfer_encoding.lower() and request.content_length is None:
            too_large = _buffer_chunked_body(request, flask.current_app.config["MAX_CONTENT_LENGTH"])
            if too_large is not None:
                return too_large
        if request.method in ("POST", "PUT", "PATCH") and _has_body(request):
            if not _is_json(environ.get("CONTENT_TYPE", "")) and not request.is_json:
                raise UnsupportedMediaType("request bodies must be JSON (Content-Type: application/json)")
            problem, document = checked_json(request.get_data(cache=True))
            if problem is not None:
                return error_response(*problem)
            if document is not _NOT_JSON:
                environ[_PARSED_JSON] = document  # the arguments' parser reads it (QueryParser), not the body again

    @app.after_request
    def _finish(response: flask.Response):
        request, g = flask.request._get_current_object(), flask.g._get_current_object()
        response.headers[CORRELATION_HEADER] = g.get("correlation_id", "")
        # A view may name its route template itself (the gateway's proxy: the catalogue's template).
        rule = request.url_rule
        route = g.get("metrics_route") or (rule.rule if rule is not None else UNMATCHED_ROUTE)
        if route != "/metrics":
            elapsed = time.perf_counter() - g.get("started", time.perf_counter())
            method = request.method
            status = response.status_code
            method_label = method if method in METHODS_LABELLED else "OTHER"
            key = (route, method_label, status)
            counted = children.get(key)
            if counted is None:
                counted = (metrics.HTTP_REQUESTS.labels(name, route, method_label, str(status)),
                           metrics.HTTP_LATENCY.labels(name, route, method_label))
                if len(children) < CHILDREN_KEPT:
                    children[key] = counted
            counted[0].inc()
            counted[1].observe(elapsed)
            if route not in ("/healthz", "/readyz"):
                request_line(log, "request", {"method": method, "path": request.path, "status": status,
                                              "duration_ms": round(elapsed * 1000, 2)})
        return response

    @app.teardown_request
    def _reset(_exc):
        token = flask.g._get_current_object().pop("correlation_token", None)
        if token is not None:
            correlation_id_var.reset(token)


MAX_JSON_DEPTH = 32
MAX_URL_BYTES = 8_192  # below gunicorn's limit_request_line (16 384), so the app answers in JSON
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def hostile_json(body: bytes) -> tuple[int, str, dict[str, Any]] | None:
    """:func:`checked_json`'s reason to refuse ``body``, or None."""
    return checked_json(body)[0]


_NOT_JSON = object()  # checked_json's document of a body that is not JSON (UTF-8)
_PARSED_JSON = "cocreate.json"  # the request's body as checked_json parsed it, in its WSGI environ


def checked_json(body: bytes) -> tuple[tuple[int, str, dict[str, Any]] | None, Any]:
    """Why a JSON body must be refused before any schema or store sees it, as (status, message,
    errors in the schemas' shape ``{"json": {field: [...]}}``), or None. Every app checks this
    first, so these answers are the same at the gateway and at each service, on SQLite and
    PostgreSQL alike:

    * nesting deeper than ``MAX_JSON_DEPTH`` (400: the parsers would recurse until they fail);
    * a string or key holding a lone surrogate (``"\\ud800"``: no encoding can store it) or NUL
      (PostgreSQL text cannot hold it, so SQLite must not either) — 422, naming the field;
    * an integer outside the signed 64-bit range of every store's integer columns — 422, naming
      the field (each schema may set a lower maximum of its own).

    A body that is not JSON (UTF-8) at all is left to the schema's own parser (400). With the reason
    (or None), the document parsed (:data:`_NOT_JSON` for a body that is not JSON), which the
    arguments' parser takes instead of parsing the body again (issue 23)."""
    # A body with no more opening brackets than the limit (those in strings counted too) cannot
    # nest deeper: most bodies are not scanned.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        depth = deepest = 0
        for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', body)):
            depth += 1 if bracket.group() in (b"[", b"{") else -1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return (400, f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep", {
                        "json": {"_schema": [f"nested more than {MAX_JSON_DEPTH} levels"]}}), _NOT_JSON
    try:
        document = json.loads(body.decode())  # (as webargs reads a body: UTF-8, nothing else)
    except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
        return None, _NOT_JSON
    found = _hostile_value(document, [])
    if found is None:
        return None, document
    path, problem = found
    errors: dict[Any, Any] = {problem_key: [problem] for problem_key in [path[-1] if path else "_schema"]}
    for key in reversed(path[:-1]):
        errors = {key: errors}
    where = ".".join(str(key) for key in path if key != "_schema") or "the body"
    return (422, f"the request is not valid: {where} {problem}", {"json": errors}), _NOT_JSON


def _hostile_value(value: Any, path: list) -> tuple[list, str] | None:
    if isinstance(value, str):
        if "\x00" in value:
            return path, "must not contain NUL characters"
        if any("\ud800" <= c <= "\udfff" for c in value):
            return path, "must not contain lone surrogates (not valid Unicode text)"
        return None
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            return path, f"must lie between {INT64[0]} and {INT64[1]}"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(key, str):
            found = _hostile_value(key, path + ["_schema"])
            if found is not None:
                return found[0], f"keys {found[1]}"
        found = _hostile_value(item, path + [key])
        if found is not None:
            return found
    return None


def _buffer_chunked_body(request: flask.Request, limit: int) -> flask.Response | None:
    """A chunked body has no Content-Length for the size limit to check: read it (at most one byte
    past the limit) and hand it on with its length, or answer 413 as for any body too large."""
    source = request.environ["wsgi.input"]
    parts, size = [], 0
    while size <= limit:
        part = source.read(min(65_536, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        return error_response(413, f"the request body is larger than {limit} bytes", {
            "body": [f"at most {limit} bytes"]})
    body = b"".join(parts)
    request.environ["wsgi.input"] = io.BytesIO(body)
    request.environ["CONTENT_LENGTH"] = str(len(body))
    request.environ.pop("HTTP_TRANSFER_ENCODING", None)
    request.environ.pop("wsgi.input_terminated", None)
    return None


def _has_body(request: flask.Request) -> bool:
    if request.content_length:
        return True
    return request.headers.get("Transfer-Encoding", "").lower() == "chunked"


def _is_json(content_type: str) -> bool:
    """The Content-Type every client sends for JSON, told without parsing it (``request.is_json``
    parses the header: a hundredth of a write's time); anything else is left to ``is_json``."""
    return content_type == "application/json" or content_type.lower().startswith("application/json;")


def _install_operational_routes(app: flask.Flask, readiness: Mapping[str, ReadinessCheck]) -> None:
    assets = _swagger_assets_dir()

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        checks, ready = {}, True
        for check_name, check in readiness.items():
            try:
                check()
                checks[check_name] = "ok"
            except Exception as exc:  # a readiness probe reports, it does not raise
                checks[check_name] = f"failing: {exc.__class__.__name__}: {exc}"[:300]
                ready = False
        return {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503

    @app.get("/metrics")
    def metrics_endpoint():
        body, content_type = metrics.exposition(app.extensions.get("cocreate.collectors", ()))
        return flask.Response(body, content_type=content_type)

    @app.get("/docs/assets/<path:filename>")
    def swagger_assets(filename: str):
        return flask.send_from_directory(assets, filename, max_age=86_400)


OPEN_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/static")
_OPENED_TYPES = frozenset({"application/json", "application/problem+json"})


def open_personal_fields(app: flask.Flask, sealer: Any | None) -> None:
    """Personal fields are stored sealed (:mod:`services.kernel.personal`): the log, read models and
    caches hold tokens, and every JSON answer is opened as it leaves the process — a token whose
    key is gone (erased, corrected) reads ``已注销``. An answer stays byte-for-byte what the view
    made when it holds no token; a streamed answer is left to its view. An answer made by
    :func:`encoded_answer` says itself whether it holds a token (searched for once, when it was kept)."""
    if sealer is None:
        return
    app.extensions[_SEALER] = sealer  # (command_answer_parts opens its parts itself)

    @app.after_request
    def _open(response: flask.Response):
        if response.is_streamed or response.direct_passthrough or response.mimetype not in _OPENED_TYPES:
            return response
        holds = getattr(response, _HOLDS_SEALED, None)
        if holds is not False:
            body = response.get_data()
            if holds or MARK in body:  # (open_json finds nothing to open when nothing is there)
                response.set_data(sealer.open_json(body))
        return response


_HOLDS_SEALED = "cocreate_holds_sealed"  # set by encoded_answer alone: False when its body holds no token
_SEALER = "cocreate.sealer"  # the app's Sealer, in app.extensions (open_personal_fields)


def encoded_answer(answer: EncodedAnswer, status: int = 200) -> flask.Response:
    """A JSON answer kept encoded (:class:`services.kernel.cache.EncodedAnswer`), as it is; the
    search for sealed fields as it leaves (:func:`open_personal_fields`) is skipped when the answer
    was found to hold none when it was kept."""
    response = flask.Response(answer.body, status, mimetype="application/json")
    setattr(response, _HOLDS_SEALED, answer.sealed)
    return response


def require_tokens(app: flask.Flask, *, open_paths: tuple[str, ...] = (),
                   is_public: Callable[[flask.Request], bool] | None = None,
                   own_credential: Callable[[flask.Request], bool] | None = None) -> None:
    """Every request to a route (but the probes, the documents, ``open_paths`` and public reads)
    needs a valid token, checked before its arguments are read: a bad query without a token is a
    401, not a 422. Installed after an app's own request hooks, so that the gateway's rate limits
    count anonymous callers.

    A public read is a GET (or HEAD) that ``is_public(request)`` says is one — by default
    :func:`is_public_view`: the route's view is marked by :func:`public`. It needs no token and
    its ``Authorization`` header is not read at all (a token, valid, expired or garbage, changes
    nothing: the answer is the same for everyone); :func:`public_request` tells the view so.

    A request that ``own_credential(request)`` says carries a credential of its own (the gateway's
    live stream with a stream ticket) is let through for its view to check that credential."""
    exempt = OPEN_PATHS + tuple(open_paths)
    public_read = is_public or is_public_view

    @app.before_request
    def _authenticate():
        request = flask.request._get_current_object()
        method = request.method
        if request.url_rule is None or method == "OPTIONS" or request.path.startswith(exempt):
            return None  # no such route (404, as the published documents say) or an open one
        if method in ("GET", "HEAD") and public_read(request):
            flask.g.public_request = True
            return None
        if own_credential is not None and own_credential(request):
            return None
        current_principal()
        return None


# -- public reads: what anyone may read without a token (共享 transparency) ----------------------------

PUBLIC_PREFIX = "/public"  # every public read of a service is under it, and nothing else is
_PUBLIC_MARK = "_cocreate_public"


def public(blueprint):
    """Open a read to callers without a token: decorate a ``MethodView``'s ``get`` with it.

    - :func:`require_tokens` lets the request through without a token, and never reads the
      ``Authorization`` header of it (the view must not ask for :func:`current_principal`);
    - its OpenAPI operation says so with the standard ``security: []`` (every other operation
      keeps the document's bearer requirement), which is how the gateway learns that it may pass
      the route through without a token (:mod:`gateway.catalogue`).

    Public reads are GETs under :data:`PUBLIC_PREFIX` (``/public/...``): :func:`check_public_routes`
    refuses any other arrangement when the app is built. What they show is decided by the privacy
    policy's allow-lists (:data:`services.kernel.privacy.PUBLIC`)."""

    def decorator(view):
        if view.__name__ != "get":
            raise ValueError(f"only reads are public: {view.__qualname__} is not a MethodView's get")
        documented = blueprint.doc(security=[])(view)
        setattr(documented, _PUBLIC_MARK, True)
        return documented

    return decorator


def _view_method(app: flask.Flask, endpoint: str, method: str):
    view = app.view_functions.get(endpoint)
    view_class = getattr(view, "view_class", None)
    return getattr(view_class, method.lower(), None) if view_class is not None else view


def is_public_view(request: flask.Request) -> bool:
    """Whether the request's route and method (HEAD as GET) is a read marked by :func:`public`
    (found once per route: kept on the route's rule, which an app never changes once it serves)."""
    rule = request.url_rule
    if rule is None or request.method not in ("GET", "HEAD"):
        return False
    marked = rule.__dict__.get(_PUBLIC_MARK)
    if marked is None:
        marked = rule.__dict__[_PUBLIC_MARK] = bool(
            getattr(_view_method(flask.current_app, rule.endpoint, "get"), _PUBLIC_MARK, False))
    return marked


def public_request() -> bool:
    """Whether this request is a public read (let through without a token by :func:`require_tokens`)."""
    return bool(flask.g.get("public_request", False))


def check_public_routes(app: flask.Flask) -> None:
    """At start: every public read is a GET under ``/public/`` and every route under ``/public/``
    is a public read — so a route is public exactly when its URL says so (ValueError otherwise)."""
    wrong = []
    for rule in app.url_map.iter_rules():
        under = rule.rule.startswith(PUBLIC_PREFIX + "/")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            marked = bool(getattr(_view_method(app, rule.endpoint, method), _PUBLIC_MARK, False))
            if marked != (under and method == "GET") or (under and method != "GET"):
                wrong.append(f"{method} {rule.rule}")
    if wrong:
        raise ValueError(f"public reads are the GETs under {PUBLIC_PREFIX}/ and nothing else: {', '.join(wrong)}")


# Query strings of public reads refuse unknown keys (422), unlike the token routes' (decision 2):
# a visitor's mistyped filter must not silently show everything. ``blp.arguments(S, **PUBLIC_QUERY)``
PUBLIC_QUERY: dict[str, Any] = {"location": "query", "unknown": ma.RAISE}


class NoQuery(Schema):
    """The query string of a public read that takes none: any key is refused (422)."""


def current_principal() -> Principal:
    """The verified caller of this request (401 when the token is missing or invalid)."""
    g = flask.g._get_current_object()
    principal = g.get("principal")
    if principal is None:
        verifier: TokenVerifier = flask.current_app.extensions["cocreate.verifier"]
        principal = verifier.from_header(flask.request.headers.get("Authorization"))
        g.principal = principal
    return principal


def event_metadata(principal: Principal | None = None) -> Metadata:
    """Metadata for events caused by this request: actor and correlation id."""
    actor = principal.person_id if principal is not None else None
    return Metadata(actor=actor, correlation_id=flask.g.get("correlation_id"), causation_id=None)


def expected_version_from_if_match() -> int | None:
    """The aggregate version a client based its request on, from ``If-Match: "<version>"``."""
    header = flask.request.headers.get("If-Match")
    if not header:
        return None
    tag = header.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    if not (tag.isascii() and tag.isdigit()):
        raise DomainError("If-Match must hold the ETag the resource was served with, e.g. \"3\"",
                          reason="invalid_if_match")
    return int(tag)


# -- shared pieces of every service's API ---------------------------------------------------------

class EmptySchema(Schema):
    """The body of a command that takes none: ``{}`` or nothing; any field is refused."""


class CommandSchema(Schema):
    """The body of a write route, loaded into its command (``command``, a frozen dataclass).

    The command's fields that the route's path names (``project_id``) come from the path, and a
    command with an ``expected_version`` field takes it from ``If-Match``; every other field comes
    from the body, so a body cannot name a path parameter (unknown fields are refused)."""

    command: ClassVar[type]

    @ma.post_load
    def to_command(self, data: dict[str, Any], **_kwargs: Any) -> Any:
        names = {field.name for field in dataclasses.fields(self.command)}
        path = (flask.request.view_args or {}) if flask.has_request_context() else {}
        given = {k: v for k, v in path.items() if k in names}
        if "expected_version" in names and flask.has_request_context():
            given["expected_version"] = expected_version_from_if_match()
        return self.command(**data, **given)


def service_container() -> Any:
    """The container :func:`services.kernel.service.bootstrap` built for this app."""
    return flask.current_app.extensions["cocreate.container"]


def opened(value: Any) -> Any:
    """``value`` with its sealed personal fields opened (:meth:`services.kernel.personal.Sealer.open_all`),
    for the few decisions that compare a stored personal field with what a caller gives (a
    certificate's holder); answers are opened as they leave (:func:`open_personal_fields`)."""
    sealer = getattr(service_container(), "sealer", None)
    return value if sealer is None else sealer.open_all(value)


def send(command: Any):
    """Hand ``command`` to the app's message bus as the caller of this request; the
    :class:`services.kernel.bus.Outcome` (the handler's result and the events recorded)."""
    principal = current_principal()
    return service_container().bus.handle(command, actor=principal, metadata=event_metadata(principal))


IDENTIFIER = {"validate": ma.validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}$",
                                             error="1-64 letters, digits, '_', '-' or '.'")}


def text_field(max_length: int, **kwargs) -> ma.fields.String:
    """A non-empty string of at most ``max_length`` characters."""
    return ma.fields.String(validate=ma.validate.Length(min=1, max=max_length), **kwargs)


def recorded_json(events) -> list[dict[str, Any]]:
    """The events a command recorded, as its answer lists them."""
    return [{"event_type": e.event_type, "stream_id": e.stream_id, "version": e.version,
             "position": e.position, "data": dict(e.data)} for e in events]


def etagged(body: Mapping[str, Any], version: int, status: int = 200, location: str | None = None) -> flask.Response:
    """``body`` as JSON with the resource's version as its ETag (clients send it back in If-Match)."""
    response = flask.make_response(flask.jsonify(body), status)
    response.set_etag(str(version))
    if location:
        response.headers["Location"] = location
    return response


def etagged_encoded(encoded: EncodedAnswer, extra: Mapping[str, Any], version: int) -> flask.Response:
    """An answer kept encoded (a JSON object: :mod:`services.kernel.cache`) with ``extra``'s keys added
    — what differs per caller — and the resource's version as its ETag; not encoded again."""
    added = dumps(dict(extra)).encode()
    response = encoded_answer(EncodedAnswer(joined_objects(encoded.body, added), encoded.sealed or MARK in added))
    response.set_etag(str(version))
    return response


def command_answer(key: str, resource: Mapping[str, Any], version: int, recorded, status: int = 200,
                   created_id: str | None = None) -> flask.Response:
    """``{key: resource, "recorded": [...], "created_id": ...}`` with the resource's version as ETag."""
    return etagged({key: resource, "recorded": recorded_json(recorded), "created_id": created_id}, version, status)


def command_answer_parts(key: str, parts: Sequence[bytes], extra: Mapping[str, Any], version: int, recorded,
                         status: int = 200, created_id: str | None = None) -> flask.Response:
    """:func:`command_answer` for a resource given encoded, in ``parts`` (JSON objects whose keys
    together are the resource's) with ``extra``'s keys added. Each part is opened
    (:func:`open_personal_fields`) on its own as the answer is made, and the rest of the answer
    together: a part that is the same bytes from one answer to the next — a view keeps what a
    command does not change encoded, e.g. what a project's page lists — is found among the sealer's
    opened bodies while its keys are kept, not searched and opened again (issue 23: the whole answer's
    search and opening was a twelfth of a ballot's time). The answer then holds no token for the
    hook to look for."""
    sealer = flask.current_app.extensions.get(_SEALER)
    opened = sealer.open_json if sealer is not None else _as_it_is
    resource = joined_objects(*map(opened, parts), opened(dumps(dict(extra)).encode()))
    rest = opened(b',"recorded":' + dumps(recorded_json(recorded)).encode()
                  + b',"created_id":' + dumps(created_id).encode() + b"}")
    body = b'{"' + key.encode() + b'":' + resource + rest
    response = encoded_answer(EncodedAnswer(body, sealer is None and MARK in body), status)
    response.set_etag(str(version))
    return response


def _as_it_is(body: bytes) -> bytes:
    return body


ANY_ROLE = "any"


def roles(blueprint, *allowed: str):
    """Gate a view: 403 unless the caller's token holds one of ``allowed`` — checked before the body
    is read or anything is loaded, so a caller without the role learns nothing about the resource.
    The roles are published in the OpenAPI operation as ``x-roles``. Finer rules (the community,
    the proposer, the organiser) stay in the domain. ``allowed`` are roles of the platform
    (:data:`services.kernel.model.ROLES`) or :data:`ANY_ROLE`: anything else fails at import."""
    unknown = [role for role in allowed if role != ANY_ROLE and role not in ROLES]
    if unknown or not allowed:
        raise ValueError(f"a route's roles must be roles of the platform ({', '.join(ROLES)}) or "
                         f"{ANY_ROLE!r}, not {unknown or 'none'}")

    def decorator(view):
        @functools.wraps(view)
        def gated(*args, **kwargs):
            principal = current_principal()
            if ANY_ROLE not in allowed and not principal.has_any(allowed):
                raise Forbidden(f"this action needs one of the roles: {', '.join(allowed)}",
                                reason="role_required", details={"roles": list(allowed)})
            return view(*args, **kwargs)

        return blueprint.doc(**{"x-roles": list(allowed)})(gated)

    return decorator
