"""The kernel's tables migrate with Alembic (:mod:`services.kernel.migrations`), on SQLite and PostgreSQL.

- a store made before migrations existed (the baseline's tables, the old index, no ``alembic_version``,
  events with random UUIDs written as the old code wrote them) is carried to the newest revision
  by the same ``create_schema`` every process runs: its events read back unchanged, the dropped
  index is gone, and appends go on after the last position;
- a new store and a migrated one end with exactly the schema the code declares (Alembic compares
  the migrated database with the kernel's table definitions), so a change to a kernel table that
  has no migration fails here;
- migrating again changes nothing.
"""

from __future__ import annotations

import importlib
import json
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.kernel import migrations
from services.kernel.db import make_engine, write_transaction
from services.kernel.events import NewEvent
from services.kernel.eventstore import EventStore, kernel_metadata

baseline = importlib.import_module("services.kernel.migrations.versions.0001_baseline")

# the consumer and relay modules add their tables to the kernel's metadata
importlib.import_module("services.kernel.consumer")
importlib.import_module("services.kernel.relay")


def old_store(url: str, events: int = 30) -> list[tuple]:
    """A store as the code before migrations made it, with ``events`` events; returns its rows."""
    engine = make_engine(url)
    metadata = sa.MetaData()
    baseline.tables(metadata)
    rows = [(i, str(uuid.uuid4()), f"project-{i % 3}", (i - 1) // 3 + 1, "ProjectProposed", 1, 1_796_000_000_000_000 + i,
             json.dumps({"title": f"加装扶手 {i}", "n": i}, ensure_ascii=False, separators=(",", ":"), sort_keys=True),
             json.dumps({"actor": "resident-1", "causation_id": None, "correlation_id": None}, sort_keys=True))
            for i in range(1, events + 1)]
    with write_transaction(engine) as connection:
        metadata.create_all(connection)
        connection.execute(metadata.tables["events"].insert(), [
            dict(zip(("position", "event_id", "stream_id", "version", "event_type", "schema_version", "occurred_at_us",
                      "data", "metadata"), row)) for row in rows])
    engine.dispose()
    return rows


def schema_differences(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, kernel_metadata)


@pytest.fixture
def empty_url(database_url):
    """The test's database with nothing in it (PostgreSQL: its schema dropped and created again)."""
    if not database_url.startswith("sqlite"):
        admin = make_engine(database_url)
        with admin.connect() as connection:
            connection.exec_driver_sql("DROP SCHEMA public CASCADE")
            connection.exec_driver_sql("CREATE SCHEMA public")
            connection.commit()
        admin.dispose()
    return database_url


def test_a_store_made_before_migrations_is_carried_to_the_head(empty_url):
    rows = old_store(empty_url)
    store = EventStore(make_engine(empty_url), service="test")
    try:
        with store.engine.connect() as connection:
            assert migrations.current(connection) is None
            assert "ix_events_occurred_at" in {i["name"] for i in sa.inspect(connection).get_indexes("events")}

        store.create_schema()

        with store.engine.connect() as connection:
            assert migrations.current(connection) == migrations.head() == "0002"
            assert "ix_events_occurred_at" not in {i["name"] for i in sa.inspect(connection).get_indexes("events")}
        assert schema_differences(store.engine) == []
        events = store.read_all(0, 100)
        assert [(e.position, e.event_id, e.stream_id, e.version, e.data["title"]) for e in events] == \
            [(r[0], r[1], r[2], r[3], json.loads(r[7])["title"]) for r in rows]
        assert events[0].metadata == {"actor": "resident-1", "causation_id": None, "correlation_id": None}
        stored = store.append("project-0", 10, [NewEvent("ProjectAmended", {"title": "加装扶手（改）"})])
        assert stored[0].position == len(rows) + 1
        assert uuid.UUID(stored[0].event_id).version == 7
        assert store.load("project-0")[-1].data == {"title": "加装扶手（改）"}
    finally:
        store.engine.dispose()


def test_a_new_store_has_the_declared_schema_and_migrating_again_changes_nothing(empty_url):
    store = EventStore(make_engine(empty_url), service="test")
    try:
        store.create_schema()
        assert schema_differences(store.engine) == []
        store.append("project-1", 0, [NewEvent("ProjectProposed", {"title": "雨棚"})])
        store.create_schema()
        with store.engine.connect() as connection:
            assert migrations.current(connection) == migrations.head()
        assert [e.data for e in store.read_all()] == [{"title": "雨棚"}]
        assert schema_differences(store.engine) == []
    finally:
        store.engine.dispose()


def test_a_new_store_is_stamped_with_the_head_of_the_revisions(empty_url):
    """A new database gets the declared tables and the head at once (no revision run); that head is
    the newest file in versions/, so a new revision without a new HEAD fails here."""
    assert migrations.HEAD == migrations.head()
    store = EventStore(make_engine(empty_url), service="test")
    try:
        store.create_schema()
        with store.engine.connect() as connection:
            assert migrations.current(connection) == migrations.HEAD
            assert {"events", "inbox", "consumer_offsets", "dead_letters", "relay_checkpoints", "relay_rounds",
                    "alembic_version"} <= set(sa.inspect(connection).get_table_names())
    finally:
        store.engine.dispose()


def test_the_migrations_go_forward_only():
    with pytest.raises(RuntimeError, match="forward only"):
        importlib.import_module("services.kernel.migrations.versions.0002_drop_occurred_at_index").downgrade()
