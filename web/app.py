"""The web client's Flask app: ``create_app(settings)``; ``build()`` for gunicorn
(``gunicorn 'web.app:build()'``, see the ``Procfile``).

- Sessions on the server (Flask-Session, SQLAlchemy backend on ``WEB_DATABASE_URL``): the browser
  holds only a random session id in a cookie that is HttpOnly, SameSite=Lax and Secure (but for
  local runs over HTTP, ``WEB_COOKIE_SECURE=false``). The gateway token stays in the session row.
  Signing in starts a new session id (no fixation); signing out deletes the row.
- CSRF: every form carries a token (Flask-WTF); htmx requests send it as ``X-CSRFToken``.
- Content-Security-Policy ``'self'`` only: every script and stylesheet is served from
  ``web/static`` (vendored, see ``web/vendor.json``); nothing from a CDN.
- ``/healthz``, ``/readyz`` (the session database answers) and ``/metrics`` (Prometheus).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import flask
import sqlalchemy as sa
from flask_babel import Babel
from flask_babel import gettext as _
from flask_session import Session
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess,
)
from werkzeug.exceptions import HTTPException

from cocreate_client import ApiError
from cocreate_client.messages import message, message_for_status
from web import config, i18n, labels
from web.upstream import SessionExpired, Unavailable, error_text

log = logging.getLogger(__name__)
# The same series as every other app of the platform (one dashboard, one alert rule), app="web", in
# a registry of the web client's own (a process that imports a service's metrics too stays valid).
OWN_REGISTRY = CollectorRegistry()
# The methods the metrics name; any other is counted as OTHER (services.kernel.web.METHODS_LABELLED).
METHODS_LABELLED = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUESTS = Counter("cocreate_http_requests_total", "HTTP requests handled", ["app", "route", "method", "status"],
                   registry=OWN_REGISTRY)
LATENCY = Histogram("cocreate_http_request_duration_seconds", "HTTP request latency", ["app", "route", "method"],
                    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
                    registry=OWN_REGISTRY)
CORRELATION_ID = re.compile(r"[A-Za-z0-9-]{8,64}")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'")


def create_app(settings: config.WebSettings) -> flask.Flask:
    app = flask.Flask(__name__)
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    translations = i18n.compile_catalogues(data_dir / "web" / "translations")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=64 * 1024,  # forms only: a page's form is a few kilobytes
        SQLALCHEMY_DATABASE_URI=settings.effective_database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_TABLE="web_sessions",
        SESSION_PERMANENT=True,
        SESSION_COOKIE_NAME="cocreate_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        SESSION_CLEANUP_N_REQUESTS=500,
        # A session's row is written when it changes, and when it is used after five minutes
        # (its lifetime runs from then): not on every page view (see _keep_sessions_alive).
        SESSION_REFRESH_EACH_REQUEST=False,
        WTF_CSRF_TIME_LIMIT=None,  # valid as long as the session is
        WTF_CSRF_SSL_STRICT=settings.cookie_secure,
        BABEL_DEFAULT_LOCALE=i18n.LOCALES[i18n.DEFAULT],
        BABEL_DEFAULT_TIMEZONE="Asia/Shanghai",
        BABEL_TRANSLATION_DIRECTORIES=str(translations),
    )
    app.extensions["cocreate.web_settings"] = settings
    db = SQLAlchemy()
    db.init_app(app)
    app.config["SESSION_SQLALCHEMY"] = db
    with _one_process_at_a_time(settings.effective_database_url, data_dir):
        Session(app)  # creates the sessions table when it is missing
    _keep_sessions_alive(app)
    CSRFProtect(app)
    Babel(app, locale_selector=i18n.select_locale)
    _install_templates(app)
    _install_observability(app, db)
    _install_errors(app)

    from web import account, dashboard, live, pages, resident, rounds, staff, volunteer

    csp = CSP.replace("connect-src 'self'", f"connect-src {live.connect_sources(settings)}")
    if settings.oidc_issuer:  # signing out redirects the sign-out form to the provider's end of session
        issuer = urlsplit(settings.oidc_issuer)
        csp = csp.replace("form-action 'self'", f"form-action 'self' {issuer.scheme}://{issuer.netloc}")
    app.extensions["cocreate.csp"] = csp
    for module in (pages, account, resident, dashboard, rounds, volunteer, staff, live):
        app.register_blueprint(module.blueprint)
    return app


@contextlib.contextmanager
def _one_process_at_a_time(database_url: str, data_dir: Path):
    """Serialise the session table's creation between the processes that start at once (gunicorn's
    workers: a file lock; the pods of a deployment on PostgreSQL: an advisory lock too) — two
    ``CREATE TABLE`` at the same moment would fail one worker's boot with "already exists"."""
    lock_file = data_dir / "web" / "schema.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if database_url.startswith("postgresql"):
                engine = sa.create_engine(database_url)
                try:
                    with engine.connect() as connection:
                        connection.execute(sa.text("SELECT pg_advisory_lock(7202612)"))
                        try:
                            yield
                        finally:
                            connection.execute(sa.text("SELECT pg_advisory_unlock(7202612)"))
                finally:
                    engine.dispose()
            else:
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


SESSION_TOUCH_SECONDS = 300


def _keep_sessions_alive(app: flask.Flask) -> None:
    """A signed-in session lasts ``WEB_SESSION_HOURS`` from its last use, to within five minutes,
    without rewriting its row on every request (a page view would otherwise cost a database write)."""

    @app.before_request
    def _touch():
        if flask.request.endpoint in (None, "static", "healthz", "readyz", "metrics"):
            return
        session = flask.session
        if session.get("token") and time.time() - session.get("touched", 0) >= SESSION_TOUCH_SECONDS:
            session["touched"] = int(time.time())


def _install_templates(app: flask.Flask) -> None:
    app.jinja_env.globals.update(
        labels=labels, yuan=labels.yuan, label=labels.label, csrf_token=generate_csrf,
        language_tag=i18n.language_tag, Unavailable=Unavailable, new_idempotency_key=lambda: str(uuid.uuid4()),
    )

    @app.context_processor
    def _visitor():
        session = flask.session
        return {"me": {"person_id": session.get("person_id"), "name": session.get("name"),
                       "roles": session.get("roles", []), "community": session.get("community")}
                if session.get("token") else None}

    @app.template_filter("local_time")
    def _local_time(value, with_time: bool = True) -> str:
        """An ISO 8601 instant shown in China Standard Time (the communities' clock): ``2026-12-03 09:15``."""
        if not value:
            return ""
        try:
            instant = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)[:16 if with_time else 10]
        if instant.tzinfo is not None:
            instant = instant.astimezone(labels.CHINA)
        return instant.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")

    @app.template_filter("in_language")
    def _in_language(labels_of) -> str:
        """The page language's text of an API label ``{"zh": ..., "en": ...}``."""
        if not isinstance(labels_of, dict):
            return "" if labels_of is None else str(labels_of)
        return labels_of.get("en" if i18n.language_tag() == "en" else "zh") or next(iter(labels_of.values()), "")

    @app.template_test("unavailable")
    def _is_unavailable(value) -> bool:
        return isinstance(value, Unavailable)


def _install_observability(app: flask.Flask, db: SQLAlchemy) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # under gunicorn: every worker's figures
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = OWN_REGISTRY

    @app.before_request
    def _start():
        flask.g.started = time.perf_counter()
        given = flask.request.headers.get("X-Correlation-ID", "")
        flask.g.correlation_id = given if CORRELATION_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def _finish(response: flask.Response):
        rule = flask.request.url_rule
        route, method = (rule.rule if rule is not None else "unmatched"), flask.request.method
        if method not in METHODS_LABELLED:
            method = "OTHER"  # a made-up method is not a series of its own (as the services count it)
        REQUESTS.labels("web", route, method, str(response.status_code)).inc()
        LATENCY.labels("web", route, method).observe(time.perf_counter() - flask.g.get("started", time.perf_counter()))
        response.headers.setdefault("Content-Security-Policy", app.extensions.get("cocreate.csp", CSP))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if flask.request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Correlation-ID"] = flask.g.get("correlation_id", "")
        return response

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz():
        try:
            with db.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as error:
            return {"status": "unavailable", "database": str(error.__class__.__name__)}, 503
        return {"status": "ready", "database": "ok"}

    @app.get("/metrics")
    def metrics():
        # For the scraper inside the cluster, which reaches the pod directly. The Ingress sends
        # every path of the site here, and always adds X-Forwarded-For: not for the public.
        if flask.request.headers.get("X-Forwarded-For"):
            flask.abort(404)
        return flask.Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _install_errors(app: flask.Flask) -> None:
    @app.errorhandler(SessionExpired)
    def _expired(_error):
        flask.session.clear()
        flask.flash(message("session_expired", i18n.language_tag()), "error")
        # back to the page the visitor was on: a GET's own address, or for a form the page it came from
        back = flask.request.full_path.rstrip("?") if flask.request.method == "GET" else (
            flask.request.referrer and urlsplit(flask.request.referrer).path) or "/"
        return flask.redirect(flask.url_for("account.signin", next=back))

    @app.errorhandler(CSRFError)
    def _csrf(_error):
        return _error_page(400, message("csrf_failed", i18n.language_tag()))

    @app.errorhandler(ApiError)
    def _api(error: ApiError):
        # A write that the API refused is handled by its view; reaching here means a page's main
        # part failed (its record does not exist, or is not the visitor's to see).
        return _error_page(error.status if 400 <= error.status < 600 else 502, error_text(error))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        return _error_page(error.code or 500, message_for_status(error.code or 500, i18n.language_tag()))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unexpected error")
        return _error_page(500, message_for_status(500, i18n.language_tag()))


def _error_page(status: int, text: str):
    return flask.render_template("error.html", status=status, text=text, title=_("Something went wrong")), status


def build() -> flask.Flask:
    """Entry for gunicorn: settings from the environment."""
    settings = config.load()
    logging.basicConfig(level=settings.log_level, format='{"level": "%(levelname)s", "app": "web", '
                                                          '"logger": "%(name)s", "message": "%(message)s"}')
    return create_app(settings)
