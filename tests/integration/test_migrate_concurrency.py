"""Schema migrations are safe to run at the same time (PostgreSQL).

On Kubernetes there is no migration Job (docs/operations.md, "Schema migrations"): every pod of a
service runs the same idempotent migration when it starts (the API pods' init container
``python -m services.<name> migrate``, and every relay, consumer and CronJob run in its own
bootstrap), so a rollout starts several of them at once against an empty or an older database.
They must all succeed: each process creates its tables under one PostgreSQL advisory lock.
The processes here start together behind a barrier, several rounds on fresh databases.
"""

from __future__ import annotations

import importlib
import threading

import pytest
import sqlalchemy as sa

SERVICES = ("projects", "volunteers", "feedback")
PROCESSES = 4
ROUNDS = 6


@pytest.fixture
def fresh_databases(postgres_url):
    """The test's PostgreSQL database, emptied (its schema dropped and created again) each time it
    is asked for: every round starts on an empty database."""
    from services.kernel.db import normalise_url

    admin = sa.create_engine(normalise_url(postgres_url), isolation_level="AUTOCOMMIT")

    def make() -> str:
        with admin.connect() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
        return postgres_url

    yield make
    admin.dispose()


def concurrently(work, count: int) -> list[BaseException]:
    """Run ``work`` in ``count`` threads released together; the exceptions they raised."""
    barrier = threading.Barrier(count)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=30)
            work()
        except BaseException as exc:  # noqa: BLE001 (collected and reported by the test)
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a migration hangs"
    return failures


@pytest.mark.parametrize("service", SERVICES)
def test_concurrent_migrations_of_a_service_all_succeed(service, fresh_databases):
    """What ``python -m services.<name> migrate`` runs (the kernel's bootstrap with the schema),
    in several processes' worth of engines at once."""
    from services.kernel.service import bootstrap, load_settings

    definition = importlib.import_module(f"services.{service}.service").DEFINITION
    for _ in range(ROUNDS):
        url = fresh_databases()
        settings = load_settings(definition, environ={}, database_url=url)
        engines = []

        def migrate() -> None:
            container = bootstrap(definition, settings, create_schema=True)
            engines.append(container.store.engine)

        failures = concurrently(migrate, PROCESSES)
        for engine in engines:
            engine.dispose()
        assert not failures, f"{service}: {len(failures)} of {PROCESSES} concurrent migrations failed: {failures[0]!r}"
        # And once more on the migrated database: idempotent.
        bootstrap(definition, settings, create_schema=True).store.engine.dispose()


def test_concurrent_gateway_migrations_all_succeed(fresh_databases):
    """The gateway's init container and its feed worker create its schema the same way."""
    from gateway.store import GatewayStore

    for _ in range(ROUNDS):
        url = fresh_databases()
        stores = []

        def migrate() -> None:
            store = GatewayStore(url)
            stores.append(store)
            store.create_schema()

        failures = concurrently(migrate, PROCESSES)
        for store in stores:
            store.engine.dispose()
        assert not failures, f"gateway: {len(failures)} of {PROCESSES} concurrent migrations failed: {failures[0]!r}"
