"""Shared fixtures: event-store backends (SQLite always, PostgreSQL when TEST_POSTGRES_URL is set)
and a real broker process."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest
import sqlalchemy as sa

from tests.support.broker import Broker

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256"


def _postgres_admin_url() -> str | None:
    return os.environ.get("TEST_POSTGRES_URL") or None


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/events.db"


@contextlib.contextmanager
def fresh_postgres_database():
    """A new PostgreSQL database (its URL), dropped afterwards; skips without TEST_POSTGRES_URL."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip("PostgreSQL tests need TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    from services.kernel.db import normalise_url

    admin = sa.create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"cocreate_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(normalise_url(admin_url)).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request):
    """Every event-store contract test runs on both backends."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(scope="session")
def broker():
    """One broker for the session (tests use their own topics and groups)."""
    instance = Broker().start()
    yield instance
    instance.stop()


@pytest.fixture
def own_broker():
    """A broker of the test's own, for drills that stop and restart it."""
    instance = Broker().start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """The three services under gunicorn on free ports (one worker each), for one test module."""
    from tests.support.servers import ServiceServer

    root = tmp_path_factory.mktemp("services")
    servers = {name: ServiceServer(name, root, workers=1).start() for name in ("projects", "volunteers", "feedback")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def require_tool(name: str, install_hint: str) -> str:
    """The path of an external tool; skipped with the reason when it is missing — except under CI
    (``COCREATE_REQUIRE_ALL_TOOLS=1``, set by ``.ci/run``), where a missing tool fails the test."""
    import shutil

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({install_hint})"
        if os.environ.get("COCREATE_REQUIRE_ALL_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return path
