"""The one way tests build an app in their own process: a service's or the gateway's Flask app,
configured as its process would be from environment variables, with the test token secret.

``service_app(PROJECTS, url)`` is the projects API on the database ``url``; ``container(app)`` is
what its routes use (store, bus, resources); ``driver(app)`` drives it as a person with a token
would (:class:`~tests.support.projects.ProjectsDriver`, the same calls as over real HTTP). Tests
that send raw bytes or read Flask's response object use ``app.test_client()`` itself.
``Served(app)`` serves an app over real HTTP from a thread (a service behind the gateway), and
``TickingClock(at)`` is a service clock a test moves.
"""

from __future__ import annotations

import importlib
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import flask
from flask_smorest import Api
from werkzeug.serving import make_server

from gateway import app as gateway
from services.kernel.service import Container, ServiceDefinition, create_service_app, load_settings
from tests.conftest import TEST_SECRET
from tests.support.projects import FlaskClient, ProjectsDriver


# The one key store of every app a test builds in this process (services and gateway alike, as the
# platform shares one): a test that wants its own passes COCREATE_KEYSTORE_URL.
KEYSTORE_URL = f"sqlite:///{tempfile.mkdtemp(prefix='cocreate-keys-')}/keys.db"


def service_app(definition: ServiceDefinition, database_url: str | None = None, *,
                clock: Callable[[], Any] | None = None, new_id: Callable[[], str] | None = None,
                **environ: str) -> flask.Flask:
    """The service's HTTP app. ``environ`` adds variables to (or overrides) the test secret, e.g.
    ``COCREATE_DATA_DIR=str(tmp_path)`` (the SQLite file's directory when no ``database_url`` is
    given) or ``COCREATE_JWT_SECRET="short"`` to see it refused; ``clock`` and ``new_id`` are the
    only ones its command handlers see."""
    settings = load_settings(definition, environ={"COCREATE_JWT_SECRET": TEST_SECRET,
                                                  "COCREATE_KEYSTORE_URL": KEYSTORE_URL, **environ},
                             **({"database_url": database_url} if database_url else {}))
    injected = {name: value for name, value in (("clock", clock), ("new_id", new_id)) if value is not None}
    return create_service_app(definition, settings, **injected)


def container(app: flask.Flask) -> Container:
    """The store, bus and resources a service app's routes use."""
    return app.extensions["cocreate.container"]


def gateway_app(**environ: str) -> flask.Flask:
    """The gateway's app; ``environ`` as for :func:`service_app` (``GATEWAY_PROJECTS_URL=...``)."""
    return gateway.create_app(gateway.load_settings(environ={"COCREATE_JWT_SECRET": TEST_SECRET,
                                                             "COCREATE_KEYSTORE_URL": KEYSTORE_URL, **environ}))


def blueprints_app(service: str) -> tuple[flask.Flask, Api]:
    """A bare Flask app holding only ``services.<service>.api.BLUEPRINTS`` (no store, no database):
    its routes and OpenAPI document, for tests that read the code's shape."""
    api_module = importlib.import_module(f"services.{service}.api")
    app = flask.Flask(f"blueprints-{service}")
    app.config.update(API_TITLE=service, API_VERSION="1", OPENAPI_VERSION="3.0.3")
    smorest = Api(app)
    for blueprint in api_module.BLUEPRINTS:
        smorest.register_blueprint(blueprint)
    return app, smorest


def driver(app: flask.Flask, prefix: str = "") -> ProjectsDriver:
    """People with tokens calling ``app`` through Flask's test client; ``prefix`` goes before every
    path (``"/api/v1"`` for the gateway's public routes)."""
    return ProjectsDriver(FlaskClient(app.test_client(), prefix))


class Served:
    """A Flask app served over HTTP from a thread of this process (``base_url``; ``stop()``)."""

    def __init__(self, app: flask.Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class TickingClock:
    """A service's clock at ``at`` (which the test moves), a microsecond more at every reading, so that
    two events never share an instant and "in order of arrival" is defined."""

    def __init__(self, at: datetime) -> None:
        self.at = at
        self._ticks = 0

    def __call__(self) -> datetime:
        self._ticks += 1
        return self.at + timedelta(microseconds=self._ticks)


class BehindGateway:
    """One service (its clock the test's) served over real HTTP with the gateway in front of it, both in
    this process; the other services are absent. ``d`` drives the gateway's ``/api/v1`` as people
    with tokens; ``container`` and ``store`` are the service's. Rate limits are off."""

    def __init__(self, definition: ServiceDefinition, database_url: str, data_dir, clock) -> None:
        self.clock = clock
        self.service = service_app(definition, database_url, clock=clock)
        self.container = container(self.service)
        self.store = self.container.store
        self.served = Served(self.service)
        urls = {f"GATEWAY_{name.upper()}_URL": "http://127.0.0.1:9" for name in ("projects", "volunteers", "feedback")}
        urls[f"GATEWAY_{definition.name.upper()}_URL"] = self.served.base_url
        self.gateway = gateway_app(COCREATE_DATA_DIR=str(data_dir), GATEWAY_UPSTREAM_TIMEOUT_SECONDS="30",
                                   GATEWAY_RATE_LIMIT_PER_CALLER="0", GATEWAY_RATE_LIMIT_PER_IP="0", **urls)
        self.d = driver(self.gateway, "/api/v1")

    def close(self) -> None:
        self.served.stop()
        self.store.engine.dispose()
        self.gateway.extensions["cocreate.gateway_store"].engine.dispose()

