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

A new database skips the revisions: it gets the declared tables and is stamped with :data:`HEAD`
(Alembic's recipe for new databases; the tests run hundreds of them). Alembic itself is imported
only when a database made earlier has revisions to run.

A new change to a kernel table is a new file in ``versions/`` (copy the latest, set ``revision``
and ``down_revision``), together with the change to the table's definition in the code; the
test ``tests/integration/test_migrations.py`` checks that a migrated store and a new one have the
same schema. Migrations only go forward: restoring a backup is the way back.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

HERE = Path(__file__).resolve().parent
# The newest revision: what a database made now is stamped with (tests/integration/test_migrations.py
# checks that it is the head of versions/).
HEAD = "0002"
# Alembic's own bookkeeping table, as Alembic makes it.
_VERSIONS = sa.Table("alembic_version", sa.MetaData(),
                     sa.Column("version_num", sa.String(32), nullable=False),
                     sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


def config(connection: Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision of versions/ (read by Alembic)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(sa.select(_VERSIONS.c.version_num)).scalar()


def upgrade(connection: Connection) -> None:
    """Carry the kernel's tables to the newest revision, in the caller's transaction.

    A database at the head costs one look at ``alembic_version`` (Alembic is not even imported: every
    process runs this at start). A new database — no log yet — gets the declared tables at once and is
    stamped with the head, as Alembic's own recipe for new databases does (the test compares the
    declared schema with a migrated one); only a database made earlier runs the revisions it lacks."""
    if not connection.in_transaction():
        connection.begin()  # joins the caller's (SQLite: driver-level) transaction; Alembic then runs in it
    if current(connection) == HEAD:
        return
    if not sa.inspect(connection).has_table("events"):
        from services.kernel import consumer, relay  # noqa: F401 (their tables are the kernel's too)
        from services.kernel.eventstore import kernel_metadata

        kernel_metadata.create_all(connection, checkfirst=True)
        _VERSIONS.create(connection, checkfirst=True)
        connection.execute(_VERSIONS.delete())
        connection.execute(_VERSIONS.insert().values(version_num=HEAD))
        return
    from alembic import command

    command.upgrade(config(connection), "head")
