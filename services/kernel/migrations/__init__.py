"""Migrations of the kernel's tables (Alembic): the log, the relay's checkpoints and rounds, the
consumers' inbox, offsets and dead letters — the tables that hold what cannot be rebuilt.

Every process of a service runs :func:`upgrade` when it creates its schema (``python -m services.<svc>
migrate``, each gunicorn worker, relay, consumer and job), inside the transaction that holds the
schema lock (:func:`services.kernel.db.lock_schema`; SQLite's ``BEGIN IMMEDIATE``), so several
processes starting at once migrate one after the other and the later ones find nothing to do.
Read models are not migrated: they are dropped and rebuilt from the log (``rebuild``).

- ``0001`` is the baseline: the tables as they were before Alembic came in. It creates only the
  tables a store lacks, so a store made before migrations existed (no ``alembic_version``
  table) passes through it unchanged and is then carried to the head like any other.
- ``0002`` drops the index on ``events.occurred_at_us`` (issue 23).

A new change to a kernel table is a new file in ``versions/`` (copy the latest, set ``revision``
and ``down_revision``), together with the change to the table's definition in the code; the
test ``tests/integration/test_migrations.py`` checks that a migrated store and a new one have the
same schema. Migrations only go forward: restoring a backup is the way back.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

HERE = Path(__file__).resolve().parent


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Carry the kernel's tables to the newest revision, in the caller's transaction."""
    if not connection.in_transaction():
        connection.begin()  # joins the caller's (SQLite: driver-level) transaction; Alembic then runs in it
    if current(connection) == head():
        return
    command.upgrade(config(connection), "head")
