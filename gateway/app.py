"""The gateway: the one public API (``/api/v1``) for resident and staff apps.

- Authentication at the edge (the services verify the forwarded token again); a local token
  endpoint backed by a users file when ``COCREATE_USERS_FILE`` is set. The services' public reads
  (``/api/v1/public/...``: their documents say ``security: []``) pass without a token, and their
  ``Authorization`` header is neither checked nor forwarded.
- Every service route under ``/api/v1``, learnt from the services' own ``GET /openapi.json`` at
  start and periodically, the last good documents kept on disk (see :mod:`gateway.catalogue`: the
  gateway imports no service's code), proxied over pooled connections with per-call timeouts,
  retries for idempotent reads only and a circuit breaker per service; a call to a service that
  is down is a 503 with ``Retry-After``.
- ``Idempotency-Key`` on every POST: the first answer is kept (24 h by default) and returned for
  a retry with the same key from the same caller; the same key with another body is a 422.
- Rate limits per caller and per IP (429 with ``Retry-After``), the body size limit, CORS.
- Composed views (project overview, community dashboard, me) that answer with what they have.
- ``GET /api/v1/live`` — server-sent events of the caller's community, resumable with
  ``Last-Event-ID`` (fed by the ``python -m gateway feed`` worker from Kafka). A browser's
  ``EventSource`` cannot send a bearer token: it presents a stream ticket instead
  (``POST /api/v1/live/tickets``: single-use, valid for a minute, bound to the caller and their
  community; kept in the gateway's database as a digest only). The streams of a process share one
  poller of the feed (:mod:`gateway.live`), hold no request thread (gunicorn's gevent worker class),
  and are capped per caller (429 ``too_many_streams``) and per process (503 ``live_streams_full``).
"""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import quote

import flask
import marshmallow as ma
from flask.views import MethodView
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound as RouteNotFound

from cocreate_client.messages import DEFAULT_LOCALE
from gateway import compose, live
from gateway.catalogue import PREFIX, SERVICES, Catalogue, public_rule, service_path
from gateway.store import GatewayStore, Ticket, fingerprint
from gateway.tokens import authenticate, load_users
from gateway.upstream import Upstream, UpstreamUnavailable, keep_addresses
from services.kernel import settings as settings_module
from services.kernel.auth import issue_token
from services.kernel.config import GatewaySettings
from services.kernel.db import ping
from services.kernel.errors import DomainError, Forbidden, NotFound, Unauthenticated
from services.kernel.events import format_time, utc_now
from services.kernel.logs import configure_logging
from services.kernel.model import Principal
from services.kernel.personal import KeyStore, Sealer
from services.kernel.settings import SettingsError
from services.kernel.web import (
    Blueprint,
    ANY_ROLE, CORRELATION_HEADER, IDENTIFIER, PUBLIC_QUERY, UNMATCHED_ROUTE, Schema, create_base_app, current_principal,
    error_response, is_public_view, public_request, require_tokens, roles,
)

FORWARDED_REQUEST_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Match", "If-Modified-Since",
                             "Accept", "Accept-Language")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "ETag", "Last-Modified", "Cache-Control", "Content-Disposition", "Allow",
                              "Retry-After")
SUBJECT_KINDS = ("cadre", "grid_worker", "unit", "service", "project")
_LAST_CATALOGUE: Catalogue | None = None


def catalogue() -> Catalogue:
    """The catalogue of the app this process built last (for tests and tools; an app's own is
    ``app.extensions["cocreate.catalogue"]``)."""
    if _LAST_CATALOGUE is None:
        raise RuntimeError("no gateway app was built in this process yet")
    return _LAST_CATALOGUE


class PrincipalSchema(Schema):
    person_id = ma.fields.String()
    name = ma.fields.String()
    roles = ma.fields.List(ma.fields.String())
    community = ma.fields.String(allow_none=True)


class TokenRequestSchema(Schema):
    username = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    password = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))


class TokenSchema(Schema):
    access_token = ma.fields.String()
    token_type = ma.fields.String()
    expires_in = ma.fields.Integer()
    person_id = ma.fields.String()
    roles = ma.fields.List(ma.fields.String())
    community = ma.fields.String(allow_none=True)


class DashboardQuery(Schema):
    kind = ma.fields.String(load_default="cadre", validate=ma.validate.OneOf(SUBJECT_KINDS),
                            metadata={"description": "which satisfaction ranking to show"})


class MyDataQuery(Schema):
    format = ma.fields.String(load_default="json", validate=ma.validate.OneOf(["json", "zip"]),
                              metadata={"description": "json (one document) or zip (the document and CSV tables)"})


class LiveQuery(Schema):
    community_id = ma.fields.String(**IDENTIFIER, metadata={"description": "admins only: another community"})
    ticket = ma.fields.String(validate=ma.validate.Length(min=1, max=100), metadata={
        "description": "a stream ticket (POST /live/tickets) instead of the Authorization header, for "
                       "browsers' EventSource, which cannot send one"})
    named = ma.fields.Boolean(load_default=True, metadata={
        "description": "false: every event as an unnamed SSE message (EventSource's onmessage receives them "
                       "all; the type is in the data's event_type)"})
    last_event_id = ma.fields.Integer(validate=ma.validate.Range(min=0), metadata={
        "description": "resume after this event id, like the Last-Event-ID header (which wins when both are given)"})


class TicketRequestSchema(Schema):
    community_id = ma.fields.String(**IDENTIFIER, metadata={"description": "admins only: the community the "
                                                                           "stream reads (default: all)"})


class TicketSchema(Schema):
    ticket = ma.fields.String()
    expires_at = ma.fields.String()
    community_id = ma.fields.String(allow_none=True)
    stream = ma.fields.String(metadata={"description": "the stream's path with the ticket"})


def load_settings(environ=None, **overrides) -> GatewaySettings:
    settings = settings_module.load(GatewaySettings, "GATEWAY", environ, **overrides)
    if settings.users_file and settings.jwt_algorithm != "HS256":
        raise SettingsError("COCREATE_USERS_FILE (the local token endpoint) works only with HS256 tokens")
    return settings


def create_app(settings: GatewaySettings) -> flask.Flask:
    global _LAST_CATALOGUE
    store = GatewayStore(settings.effective_database_url)
    store.create_schema()
    keys = KeyStore(settings.effective_keystore_url(settings.data_dir), cache_seconds=settings.keystore_cache_seconds)
    keys.create_schema()
    hub = live.LiveHub(store, capacity=live.process_capacity(settings.live_max_streams_per_process),
                       per_caller=settings.live_streams_per_caller, queue_events=settings.live_queue_events,
                       poll_seconds=settings.live_poll_seconds, sealer=Sealer(keys))
    service_urls = dict(zip(SERVICES, (settings.projects_url, settings.volunteers_url, settings.feedback_url)))
    routes = _LAST_CATALOGUE = Catalogue(service_urls, settings.effective_catalogue_dir,
                                         timeout=settings.upstream_timeout_seconds,
                                         refresh_seconds=settings.catalogue_refresh_seconds)
    app, api = create_base_app(
        "gateway", settings, title="共同缔造 public API", version="v1",
        description="The one public API of the co-creation platform for resident and staff apps. "
                    "Every route needs a bearer token except the token endpoint and the public reads "
                    "(`/api/v1/public/...`, marked `security: []`), which anyone may call without one.",
        readiness={"database": lambda: ping(store.engine), "catalogue": routes.check_ready, "live": hub.check_ready},
        max_body_bytes=settings.max_body_bytes,
    )
    api.spec.components.security_scheme("liveTicket", {
        "type": "apiKey", "in": "query", "name": "ticket",
        "description": "a stream ticket from POST /api/v1/live/tickets (GET /api/v1/live only)"})
    app.extensions["cocreate.gateway_settings"] = settings
    app.extensions["cocreate.gateway_store"] = store
    app.extensions["cocreate.catalogue"] = routes
    app.extensions["cocreate.live_hub"] = hub
    _install_catalogue_hooks(app, routes)
    _install_live_description(app, hub)
    upstreams = {
        name: Upstream(name, url, timeout=settings.upstream_timeout_seconds,
                       read_retries=settings.upstream_read_retries, failure_threshold=settings.breaker_failures,
                       open_seconds=settings.breaker_open_seconds)
        for name, url in service_urls.items()
    }
    app.extensions["cocreate.upstreams"] = upstreams
    keep_addresses(settings.upstream_address_seconds)  # under gevent: no thread hop per connection
    composer = compose.Composer(upstreams, ThreadPoolExecutor(max_workers=16, thread_name_prefix="compose"))
    users = UsersFile(settings.users_file) if settings.users_file else None
    _install_edge(app, settings, store)
    require_tokens(app, open_paths=(f"{PREFIX}/auth/token",), is_public=_public_reads(routes),
                   own_credential=lambda request: request.path == f"{PREFIX}/live" and "ticket" in request.args)

    blp = Blueprint("gateway", __name__, url_prefix=PREFIX, description="Identity and composed views")

    @blp.route("/auth/token")
    class Token(MethodView):
        @blp.doc(security=[])  # signing in needs no token
        @blp.arguments(TokenRequestSchema)
        @blp.response(201, TokenSchema)
        def post(self, body):
            """Sign in with a username and password from the users file (local use and demos)"""
            if users is None:
                raise RouteNotFound()
            user = authenticate(users.current(), body["username"], body["password"])
            if user is None:
                raise Unauthenticated("unknown username or wrong password")
            token = issue_token(settings, person_id=user.person_id, name=user.name, roles=user.roles,
                                community=user.community, lifetime=timedelta(minutes=settings.token_minutes))
            return {"access_token": token, "token_type": "Bearer", "expires_in": settings.token_minutes * 60,
                    "person_id": user.person_id, "roles": list(user.roles), "community": user.community}

    @blp.route("/whoami")
    class WhoAmI(MethodView):
        @blp.response(200, PrincipalSchema)
        def get(self):
            """The caller as the verified token describes them"""
            principal = current_principal()
            return {"person_id": principal.person_id, "name": principal.name,
                    "roles": sorted(principal.roles), "community": principal.community}

    def forward_headers() -> dict[str, str]:
        headers = {k: v for k in FORWARDED_REQUEST_HEADERS if (v := flask.request.headers.get(k))}
        headers.setdefault("Accept-Language", DEFAULT_LOCALE)  # the services answer in the gateway's language
        headers[CORRELATION_HEADER] = flask.g.get("correlation_id", "")
        if public_request():
            headers.pop("Authorization", None)  # a public read does not read it: not checked, not passed on
        return headers

    def composed(view: str, parts):
        current_principal()
        answer, missing = composer.gather(view, parts, forward_headers())
        return {**answer, "missing": missing}

    @blp.route("/projects/<project_id>/overview")
    class ProjectOverview(MethodView):
        @blp.response(200)
        def get(self, project_id):
            """The project, the volunteer minutes credited to it and its satisfaction score"""
            return composed("project_overview", compose.project_overview_parts(project_id))

    @blp.route("/communities/<community_id>/dashboard")
    class Dashboard(MethodView):
        @blp.arguments(DashboardQuery, location="query")
        @blp.response(200)
        def get(self, query, community_id):
            """Projects per stage, fund, top volunteers this month, satisfaction ranking, follow-ups"""
            current_principal().require_reader(community_id)
            return {"community_id": community_id,
                    **composed("dashboard", compose.dashboard_parts(community_id, query["kind"]))}

    @blp.route("/me")
    class Me(MethodView):
        @blp.response(200)
        def get(self):
            """My card, my proposals and pledges, my ratings and their follow-ups"""
            principal = current_principal()
            return {"person_id": principal.person_id, "name": principal.name, **composed("me", compose.me_parts())}

    @blp.route("/me/data")
    class MyData(MethodView):
        @blp.arguments(MyDataQuery, location="query")
        @blp.response(200)
        def get(self, query):
            """A copy of everything the platform holds about you (个人信息副本): your card with its
            hours and points, your erasure request, the ratings you gave with their cases, your figures
            if you are rated (never who rated), and every record of each service about you; a part
            whose service is down is named under ``missing``. ``format=zip``: the same as data.json
            with CSV tables"""
            principal = current_principal()
            document = {"person_id": principal.person_id, "name": principal.name,
                        "generated_at": format_time(utc_now()), **composed("me_data", compose.my_data_parts())}
            if query["format"] == "json":
                return document, 200, {"Cache-Control": "no-store"}
            response = flask.Response(compose.my_data_zip(document), mimetype="application/zip")
            response.headers["Content-Disposition"] = 'attachment; filename="my-data.zip"'
            response.headers["Cache-Control"] = "no-store"
            return response

    @blp.route("/live/tickets")
    class LiveTickets(MethodView):
        @roles(blp, ANY_ROLE)  # any member of a community (the community is checked below)
        @blp.arguments(TicketRequestSchema)
        @blp.response(201, TicketSchema)
        def post(self, body):
            """A stream ticket: opens GET /live once, within a minute, as you, for your community"""
            principal = current_principal()
            community = _live_community(principal, body.get("community_id"))
            ticket = secrets.token_urlsafe(32)
            expires = store.issue_ticket(ticket, Ticket(principal.person_id, principal.name, tuple(sorted(principal.roles)),
                                                        principal.community, community),
                                         timedelta(seconds=settings.live_ticket_seconds))
            return {"ticket": ticket, "expires_at": format_time(expires), "community_id": community,
                    "stream": f"{PREFIX}/live?ticket={ticket}"}

    @blp.route("/live")
    class Live(MethodView):
        @blp.arguments(LiveQuery, **PUBLIC_QUERY)  # a stream ticket's query: nothing unknown
        @blp.doc(responses={"200": {"description": "server-sent events (each as the privacy policy lets you see it)",
                                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
                 security=[{"bearerAuth": []}, {"liveTicket": []}])
        def get(self, query):
            """Server-sent events of your community's events; resume with Last-Event-ID

            With a Bearer token, or with a stream ticket (``?ticket=``, from POST /live/tickets):
            single-use, short-lived, bound to the caller and the community it was issued for. The
            ticket is checked before anything is sent; an unknown, expired or used one is a 401
            ``ticket_invalid``. A caller holding ``GATEWAY_LIVE_STREAMS_PER_CALLER`` streams already
            (a ticket counts for its holder) gets a 429 ``too_many_streams``; a gateway process
            holding as many streams as it may, a 503 ``live_streams_full`` (both with Retry-After)."""
            if "ticket" in query:
                holder = store.redeem_ticket(query["ticket"])
                if holder is None:
                    raise Unauthenticated("the stream ticket is unknown, expired or already used; ask for a new one "
                                          "(POST /api/v1/live/tickets)", reason="ticket_invalid")
                principal = Principal(holder.person_id, holder.name, frozenset(holder.roles), holder.caller_community)
                community = holder.community_id
            else:
                principal = current_principal()
                community = _live_community(principal, query.get("community_id"))
            last = flask.request.headers.get("Last-Event-ID", "").strip()
            if last.isdigit():
                after = int(last)
            else:
                after = query["last_event_id"] if "last_event_id" in query else store.last_feed_id()
            try:
                opened = hub.open(principal, community, flask.request.environ.get("gunicorn.socket"))
            except live.StreamsFull as full:
                return error_response(503, f"this gateway process holds as many live streams as it may ({full.capacity});"
                                           " connect again (another replica takes it)",
                                      {"reason": "live_streams_full"},
                                      headers={"Retry-After": str(live.FULL_RETRY_SECONDS)})
            except live.TooManyStreams as many:
                return error_response(429, f"you have {many.limit} live streams open already, the most one caller "
                                           "may hold; close one (or wait until one ends)",
                                      {"reason": "too_many_streams", "limit": many.limit},
                                      headers={"Retry-After": str(live.CALLER_RETRY_SECONDS)})
            # Without the request's context: a stream keeps nothing of the request while it is open.
            response = flask.Response(_event_stream(opened, store, after, named=query["named"]),
                                      content_type="text/event-stream",
                                      headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            # Also when the stream is never read (its generator never starts, so its finally never runs).
            response.call_on_close(opened.release)
            return response

    api.register_blueprint(blp)
    _merge_service_documents(api, routes)

    @app.route(f"{PREFIX}/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def proxy(rest: str):
        principal = None if public_request() else current_principal()
        public = "/" + rest
        flask.g.metrics_route = UNMATCHED_ROUTE
        try:
            target = _route(routes, public, flask.request.method)
        except MethodNotAllowed as exc:
            return error_response(405, f"{flask.request.method} is not allowed on {PREFIX}{public}",
                                  headers={"Allow": ", ".join(sorted(exc.valid_methods or ()))})
        except RouteNotFound:
            unknown = routes.unknown()
            if unknown:
                # The path may be a route of a service whose routes the gateway has not learnt yet.
                return error_response(
                    503, f"no known route {PREFIX}{public}, and the routes of {', '.join(unknown)} are not known "
                         "yet (not answering since the gateway started); try again shortly",
                    {"reason": "catalogue_incomplete", "services": unknown}, headers={"Retry-After": "2"})
            return error_response(404, f"no route {PREFIX}{public}")
        # Requests are counted and timed by the catalogue's route template (a bounded set), not by
        # the catch-all rule of this view: the latency panels and runbooks see routes.
        flask.g.metrics_route = PREFIX + public_rule(target.service, target.rule)
        # Forwarded percent-encoded again: a decoded "%23" or "%3F" in a path parameter would
        # otherwise cut the service's path short (or inject a query string).
        path = quote(service_path(target.service, public), safe="/")
        if flask.request.query_string:
            path += "?" + flask.request.query_string.decode("latin-1")
        body = flask.request.get_data()
        key = flask.request.headers.get("Idempotency-Key", "").strip()
        if flask.request.method == "POST" and key and principal is not None:
            return _idempotent(store, settings, principal.person_id, key, public, body,
                               lambda: _forward(upstreams[target.service], path, body, forward_headers()))
        return _forward(upstreams[target.service], path, body, forward_headers())

    return app


def _live_community(principal: Principal, asked: str | None) -> str | None:
    """The community a live stream of ``principal`` reads: their own; an admin's, any (or all)."""
    if "admin" in principal.roles:
        return asked
    if not principal.community:
        # Without a community a token would read every community's events.
        raise Forbidden("the live stream is open only to a token of a community (or an admin's)",
                        reason="community_required")
    if asked and asked != principal.community:
        raise Forbidden("the live stream reads only your own community", reason="not_your_community")
    return principal.community


class UsersFile:
    """The users file, read again when it changes (``make demo`` writes it to a running platform)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: float | None = None
        self._users: dict = {}

    def current(self) -> dict:
        try:
            stamp = os.stat(self.path).st_mtime
        except FileNotFoundError:
            raise NotFound(f"the token endpoint has no users file yet ({self.path})", reason="no_users_file") from None
        if stamp != self._stamp:
            self._users, self._stamp = load_users(self.path), stamp
        return self._users


def _forward(upstream: Upstream, path: str, body: bytes, headers: dict[str, str]) -> flask.Response:
    method = flask.request.method
    try:
        reply = upstream.request(method, path, headers=headers, body=body or None)
    except UpstreamUnavailable as exc:
        if exc.why == "timed out" and method not in ("GET", "HEAD"):
            # The service may have decided before the timeout: say so rather than invite a blind retry.
            return error_response(504, f"the {exc.service} service did not answer in time; the outcome is "
                                       "unknown — read the resource before trying again",
                                  {"reason": "outcome_unknown", "service": exc.service})
        return error_response(503, str(exc), {"reason": "service_unavailable", "service": exc.service},
                              headers={"Retry-After": str(exc.retry_after)})
    response = flask.Response(reply.body, status=reply.status)
    for name in FORWARDED_RESPONSE_HEADERS:
        value = _header(reply.headers, name)
        if value:
            response.headers[name] = value
    location = _header(reply.headers, "Location")
    if location and location.startswith("/"):
        response.headers["Location"] = PREFIX + location
    return response


def _header(headers, name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _idempotent(store: GatewayStore, settings: GatewaySettings, caller: str, key: str, path: str, body: bytes,
                run) -> flask.Response:
    if len(key) > 200:
        raise DomainError("Idempotency-Key is at most 200 characters", reason="invalid_idempotency_key")
    print_ = fingerprint("POST", path, body)
    remembered = store.claim_key(caller, key, print_, timedelta(hours=settings.idempotency_hours))
    if remembered is not None:
        if not remembered.same_request:
            raise DomainError("this Idempotency-Key was used for a different request",
                              reason="idempotency_key_reused", details={"Idempotency-Key": "used for another request"})
        if remembered.status is None:
            return error_response(409, "the first request with this Idempotency-Key is still running",
                                  {"reason": "idempotency_in_progress"}, headers={"Retry-After": "1"})
        response = flask.Response(remembered.body, status=remembered.status, headers=remembered.headers)
        response.headers["Idempotent-Replayed"] = "true"
        return response
    try:
        response = run()
    except Exception:
        store.forget(caller, key)
        raise
    if response.status_code >= 500 and response.status_code != 504:
        store.forget(caller, key)  # the service decided nothing (down, or rolled back): a retry may run it
    else:
        headers = {k: v for k, v in response.headers.items() if k in ("Content-Type", "ETag", "Location")}
        store.remember(caller, key, response.status_code, headers, response.get_data())
    return response


# The server-sent events of one stream (gateway.live); tests/integration/test_deploy.py reads its
# max_seconds (the Ingress's read timeout must outlast a stream).
_event_stream = live.event_stream


def _install_live_description(app: flask.Flask, hub: live.LiveHub) -> None:
    """This process's live streams in ``/readyz``: open, capacity, full, and the hub's last poll."""
    plain_readyz = app.view_functions["readyz"]

    def readyz():
        body, status = plain_readyz()
        return {**body, "live": hub.describe()}, status

    app.view_functions["readyz"] = readyz


def _install_edge(app: flask.Flask, settings: GatewaySettings, store: GatewayStore) -> None:
    """Rate limits before anything else runs, and CORS on every answer."""
    origins = set(settings.cors_origins)

    @app.before_request
    def _limit():
        request = flask.request
        if request.method == "OPTIONS" and origins:
            return _preflight(origins)
        if not request.path.startswith(PREFIX) or (settings.rate_limit_per_ip <= 0 and settings.rate_limit_per_caller <= 0):
            return None
        buckets, limits = [], []
        if settings.rate_limit_per_ip > 0:
            buckets.append(f"ip:{_client_ip(settings)}")
            limits.append(settings.rate_limit_per_ip)
        caller = _caller_quietly()
        if caller and settings.rate_limit_per_caller > 0:
            buckets.append(f"caller:{caller}")
            limits.append(settings.rate_limit_per_caller)
        counts, retry_after = store.hit(buckets)
        for bucket, count, limit in zip(buckets, counts, limits):
            if count > limit:
                kind = bucket.split(":", 1)[0]
                return error_response(429, f"too many requests from this {'caller' if kind == 'caller' else 'address'}:"
                                           f" {limit} per minute", {"reason": "rate_limited", "limit": limit},
                                      headers={"Retry-After": str(retry_after)})
        return None

    @app.after_request
    def _cors(response: flask.Response):
        origin = flask.request.headers.get("Origin")
        if origin and origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Expose-Headers"] = "ETag, Location, Retry-After, X-Correlation-ID"
        return response


def _preflight(origins: set[str]) -> flask.Response:
    origin = flask.request.headers.get("Origin", "")
    response = flask.Response(status=204)
    if origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match, Idempotency-Key, Last-Event-ID"
        response.headers["Access-Control-Max-Age"] = "600"
        response.headers["Vary"] = "Origin"
    return response


def _client_ip(settings: GatewaySettings) -> str:
    request = flask.request
    if settings.trusted_proxies > 0:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        if len(hops) >= settings.trusted_proxies:
            return hops[-settings.trusted_proxies]
    return request.remote_addr or "unknown"


def _caller_quietly() -> str | None:
    """The caller's person id when the token verifies; the route itself answers 401 otherwise."""
    try:
        return current_principal().person_id
    except DomainError:
        flask.g.pop("principal", None)
        return None


def _public_reads(routes: Catalogue):
    """The gateway's test of a public read: a proxied route its service's document declares public
    (``security: []`` on a GET), or one of the gateway's own views marked public (none yet)."""

    def is_public(request: flask.Request) -> bool:
        if request.url_rule is not None and request.url_rule.endpoint == "proxy":
            return routes.is_public("/" + (request.view_args or {}).get("rest", ""), request.method)
        return is_public_view(request)

    return is_public


def _route(routes: Catalogue, public: str, method: str):
    """The service route a public path names; when none is known and some service's routes are
    unknown, those services are asked at once first."""
    try:
        return routes.adapter().match(public, method)[0]
    except RouteNotFound:
        if not routes.refresh_unknown():
            raise
    return routes.adapter().match(public, method)[0]


def _route_label(routes: Catalogue, public: str, method: str) -> str:
    """The metrics label of a public path: its catalogue template, or :data:`UNMATCHED_ROUTE`
    (routes the catalogue does not know yet are not fetched for a label)."""
    try:
        target = routes.adapter().match(public, method)[0]
    except HTTPException:  # no route, another method, a redirect
        return UNMATCHED_ROUTE
    return PREFIX + public_rule(target.service, target.rule)


def _install_catalogue_hooks(app: flask.Flask, routes: Catalogue) -> None:
    """The refresher thread of each process, and each service's catalogue state in ``/readyz``."""

    def _refreshing():
        routes.ensure_refreshing()
        request = flask.request
        if request.url_rule is not None and request.endpoint == "proxy":
            # The route label of every answer to a proxied path — a 401 or a 429 refused before the
            # proxy runs included — is the catalogue's template, never the catch-all rule.
            flask.g.metrics_route = _route_label(routes, "/" + request.view_args["rest"], request.method)

    # first of the hooks: the kernel's own (body limits, hostile JSON) may refuse the request, and
    # its answer is labelled by the template too
    app.before_request_funcs.setdefault(None, []).insert(0, _refreshing)

    plain_readyz = app.view_functions["readyz"]

    def readyz():
        body, status = plain_readyz()
        return {**body, "catalogue": routes.describe()}, status

    app.view_functions["readyz"] = readyz


def _merge_service_documents(api, routes: Catalogue) -> None:
    """Add every service's paths, schemas, responses and tags — as the catalogue knows them when
    the document is asked for — to the gateway's document (the gateway's own names win)."""
    spec = api.spec
    own_to_dict = spec.to_dict

    def to_dict():
        if routes.unknown():
            routes.refresh_unknown()
        paths, schemas, responses, tags = routes.openapi_parts()
        document = own_to_dict()
        document["paths"] = {**paths, **document["paths"]}
        components = document.setdefault("components", {})
        for kind, theirs in (("schemas", schemas), ("responses", responses)):
            merged = components.setdefault(kind, {})
            for name, component in theirs.items():
                merged.setdefault(name, component)
        document["tags"] = [*document.get("tags", []), *tags]
        return document

    spec.to_dict = to_dict


def build() -> flask.Flask:
    """Entry for gunicorn (``gateway.app:build()``): settings from the environment."""
    settings = load_settings()
    configure_logging("gateway", settings.log_level)
    return create_app(settings)

