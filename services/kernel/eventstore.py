"""The event store: append-only streams with optimistic concurrency and gap-free global positions.

One ``events`` table per service database. ``(stream_id, version)`` is unique: that constraint,
not a read-then-check, is what makes a conflicting append fail. Appends are serialised (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: ``LOCK TABLE events IN EXCLUSIVE MODE``, which still lets readers
read) and take ``max(position) + 1``, so positions are gap-free and their order is commit order: a
reader paging by position can never pass a gap that a slower transaction fills later.

Read models (projections) are applied in the same transaction as the append, so a caller reads
its own write; they can be dropped and rebuilt from the log at any time (:func:`rebuild`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from services.kernel import metrics
from services.kernel.db import Prepared, is_sqlite, lock_schema, read_alone, read_transaction, write_transaction
from services.kernel.errors import ConcurrencyError
from services.kernel.events import (
    Metadata, NewEvent, StoredEvent, UpcasterChain, dumps, from_micros, loads, to_micros, utc_now,
)

log = logging.getLogger(__name__)

kernel_metadata = sa.MetaData()

events_table = sa.Table(
    "events",
    kernel_metadata,
    # On SQLite an INTEGER PRIMARY KEY is the rowid itself: no second index to maintain.
    sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=False),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("stream_id", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("occurred_at_us", sa.BigInteger, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.UniqueConstraint("stream_id", "version", name="uq_events_stream_version"),
    # No index on occurred_at_us (dropped by migration 0002): the only reads by time are of one
    # stream (``load(as_of=…)``), which the (stream_id, version) index already narrows.
)


class Sealing(Protocol):
    """What seals an event's personal fields before it is stored (:class:`services.kernel.personal.Sealer`)."""

    def seal_event(self, event_type: str, data: dict[str, Any], record_owner: str | None = None) -> dict[str, Any]: ...


class Projection(Protocol):
    """A read model kept in step with the log inside the append transaction."""

    name: str
    tables: Sequence[sa.Table]

    def apply(self, connection: Connection, event: StoredEvent) -> None: ...


def apply_page(projection: Projection, connection: Connection, events: Sequence[StoredEvent]) -> None:
    """Apply a page of events in order. A projection may offer ``apply_many(connection, events)``,
    equivalent to applying them one by one but with a few set-based statements instead of several
    per event; rebuilds use it (a projection reads and writes only its own tables, so applying a
    page projection by projection gives the same read models as event by event)."""
    apply_many = getattr(projection, "apply_many", None)
    if apply_many is not None:
        apply_many(connection, events)
        return
    for event in events:
        projection.apply(connection, event)


class _PageReplay:
    """How :func:`rebuild` applies the log to a projection without a ``replayer`` of its own: page by page."""

    def __init__(self, projection: Projection, connection: Connection) -> None:
        self.projection, self.connection = projection, connection

    def apply(self, events: Sequence[StoredEvent]) -> None:
        apply_page(self.projection, self.connection, events)

    def finish(self) -> None:
        """Nothing was held back: each page was applied as it came."""


def replayer(projection: Projection, connection: Connection):
    """What :func:`rebuild` feeds the log to, page after page, then ``finish()``es. A projection may
    offer ``replayer(connection)`` (counts summed over the whole log and written once, say); its
    read model must be the same as applying the events one by one."""
    own = getattr(projection, "replayer", None)
    return own(connection) if own is not None else _PageReplay(projection, connection)


def chunked(values: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    """Slices of at most ``size`` (bound-parameter lists stay under the drivers' limits)."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


# The stream's version and the log's last position, read together under the append lock.
_HEADS = sa.select(
    sa.select(sa.func.max(events_table.c.version))
    .where(events_table.c.stream_id == sa.bindparam("stream_id")).scalar_subquery(),
    sa.select(sa.func.max(events_table.c.position)).scalar_subquery(),
)


_COLUMNS = ("position", "event_id", "stream_id", "version", "event_type", "schema_version", "occurred_at_us",
            "data", "metadata")
_SQLITE_INSERT = f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


# A command's first event on SQLite: its version checked and its position taken in the insert itself
# (the next after the log's last; ``position`` is the table's rowid, so ``lastrowid`` gives it back),
# one statement where a read of the stream's heads and an insert were two (issue 23). A stream at
# another version than the expected one makes the version NULL, which its NOT NULL constraint
# refuses. (``INSERT … SELECT … WHERE`` would say so by inserting nothing, but SQLite copies a
# SELECT that reads the table it inserts into to a temporary table first: slower than two statements.)
_SQLITE_INSERT_CHECKED = (f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ("
                          "coalesce((SELECT max(position) FROM events), 0) + 1, ?, ?, "
                          "CASE WHEN coalesce((SELECT max(version) FROM events WHERE stream_id = ?), 0) = ? THEN ? END, "
                          f"{', '.join('?' * (len(_COLUMNS) - 4))})")
_SQLITE_VERSION = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?"
_MAX_POSITION = 2**63 - 1
# The payload and metadata as UTF-8 bytes (what the JSON decoder reads fastest; not decoded into
# text first).
_SQLITE_PAGE = (f"SELECT {', '.join(_COLUMNS[:-2])}, CAST(data AS BLOB), CAST(metadata AS BLOB) FROM events "
                "WHERE position > ? AND position <= ? ORDER BY position LIMIT ?")


# A stream's events after a version, in ``_COLUMNS`` order: what every command's load reads (normally
# nothing, after the read model's snapshot), prepared once.
_STREAM_AFTER = Prepared(sa.select(*(events_table.c[name] for name in _COLUMNS)).where(
    events_table.c.stream_id == sa.bindparam("stream_id"), events_table.c.version > sa.bindparam("after"))
    .order_by(events_table.c.version))

_STREAM_HEADS: dict[int, Prepared] = {}  # EventStore.stream_heads, by the number of streams
_LAST_POSITION = Prepared(sa.select(sa.func.max(events_table.c.position)))  # what a kept answer is keyed by

_dumps = dumps  # the log's canonical JSON (services.kernel.events.dumps)
_NO_METADATA_DICT = Metadata().as_dict()
_NO_METADATA_JSON = dumps(_NO_METADATA_DICT)


class EventStore:
    def __init__(
        self,
        engine: Engine,
        *,
        service: str = "service",
        upcasters: UpcasterChain | None = None,
        projections: Sequence[Projection] = (),
        clock: Callable[[], datetime] = utc_now,
        sealer: Sealing | None = None,
    ) -> None:
        self.engine = engine
        # seals each event's personal fields before it is stored (services.kernel.personal)
        self.sealer = sealer
        self.service = service
        self.upcasters = upcasters or UpcasterChain()
        self.projections = list(projections)
        self._clock = clock
        self._sqlite = is_sqlite(engine)
        # The read model that keeps each aggregate class's current state (an AggregateView): the
        # unit of work's snapshots, and the view that takes a unit of work's state with an append.
        self._views = {p.cls: p for p in self.projections if getattr(p, "cls", None) is not None}
        self._view_of: dict[type, Any] = {}
        self._counters: dict[str, Any] = {}

    # -- transactions (the unit of work opens them through the store, whatever its backend) --

    def write_transaction(self):
        return write_transaction(self.engine)

    def read_transaction(self):
        return read_transaction(self.engine)

    def lock_for_write(self, connection: Connection) -> None:
        """Serialise this transaction with every appender before it reads (PostgreSQL; SQLite's
        ``BEGIN IMMEDIATE`` already does), so the state a command decides on cannot change under it."""
        if not self._sqlite:
            connection.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")

    def view_of(self, cls: type):
        """The read model holding the current state of ``cls`` aggregates, or None. A view may keep
        a subclass of ``cls`` of the same streams (the aggregate and what a page shows of it): its
        rows are then the snapshots of ``cls`` too, loaded as that subclass."""
        if cls not in self._view_of:
            self._view_of[cls] = self._views.get(cls) or next(
                (view for kept, view in self._views.items()
                 if issubclass(kept, cls) and kept.stream_prefix == getattr(cls, "stream_prefix", None)), None)
        return self._view_of[cls]

    # -- schema -----------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Carry the kernel tables to the newest migration (:mod:`services.kernel.migrations`) and
        create every projection's tables that are missing (idempotent)."""
        from services.kernel import migrations

        with write_transaction(self.engine) as connection:
            lock_schema(connection)  # several processes of the service start at once
            migrations.upgrade(connection)
            for projection in self.projections:
                for table in projection.tables:
                    table.create(connection, checkfirst=True)

    # -- writing ----------------------------------------------------------------------------

    def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        metadata: Metadata | None = None,
        connection: Connection | None = None,
        state: Any | None = None,
    ) -> list[StoredEvent]:
        """Append ``events`` after ``expected_version`` (0 for a new stream), atomically.

        With ``connection`` the append joins the caller's write transaction (consumers use this
        to commit effects and their inbox row together); otherwise it runs in its own. ``state``
        is the stream's aggregate as the caller loaded it (a unit of work): the read model of its
        class applies the events to it instead of reading its own row again.
        """
        if not events:
            return []
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        if connection is None:
            with write_transaction(self.engine) as own:
                stored = self._append(own, stream_id, expected_version, events, metadata, state)
        else:
            stored = self._append(connection, stream_id, expected_version, events, metadata, state)
        if len(stored) == 1:
            self._appended(stored[0].event_type).inc()
        else:
            for event_type, count in Counter(event.event_type for event in stored).items():
                self._appended(event_type).inc(count)
        return stored

    def _appended(self, event_type: str):
        """The ``events_appended`` counter of this service and ``event_type`` (labelled once)."""
        child = self._counters.get(event_type)
        if child is None:
            child = self._counters[event_type] = metrics.EVENTS_APPENDED.labels(self.service, event_type)
        return child

    def _append(self, connection, stream_id, expected_version, events, metadata, state) -> list[StoredEvent]:
        if self._sqlite:  # the driver's cursor: this runs for every command (no statement compiling)
            cursor = connection.connection.dbapi_connection.cursor()
            try:
                stored = self._sqlite_append(cursor, stream_id, expected_version, events, metadata, state)
            finally:
                cursor.close()
        else:
            connection.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
            row = connection.execute(_HEADS, {"stream_id": stream_id}).one()  # one round trip for both
            rows, stored = self._rows(stream_id, expected_version, row, events, metadata, state)
            try:
                connection.execute(events_table.insert(), [dict(zip(_COLUMNS, row)) for row in rows])
            except sa.exc.IntegrityError as exc:
                # The unique (stream_id, version) constraint is the guarantee against a racing writer.
                raise ConcurrencyError(stream_id, expected_version, None) from exc
        lent_to = self._views.get(type(state)) if state is not None else None
        for event in stored:
            for projection in self.projections:
                if projection is lent_to:
                    projection.apply_state(connection, event, state)
                else:
                    projection.apply(connection, event)
        return stored

    def _sqlite_append(self, cursor, stream_id, expected_version, events, metadata, state) -> list[StoredEvent]:
        tails, stored = self._encoded(stream_id, expected_version, events, metadata, state)
        # No savepoint: nothing continues a transaction after a conflict (a unit of work or a
        # consumer's batch is rolled back as a whole), and it would cost two statements.
        event_id, _stream, version, *rest = tails[0]
        try:
            cursor.execute(_SQLITE_INSERT_CHECKED, (event_id, stream_id, stream_id, expected_version, version, *rest))
            first = cursor.lastrowid
            if len(tails) > 1:  # the rest follow it: the transaction holds the write lock
                cursor.executemany(_SQLITE_INSERT, [(first + offset, *tail)
                                                    for offset, tail in enumerate(tails[1:], start=1)])
        except sqlite3.IntegrityError as exc:  # another version (NULL), or a unique index: an event id again
            actual = cursor.execute(_SQLITE_VERSION, (stream_id,)).fetchone()[0]
            raise ConcurrencyError(stream_id, expected_version,
                                   None if actual == expected_version else actual) from exc
        return self._positioned(stored, first)

    def _rows(self, stream_id, expected_version, heads, events, metadata,
              state=None) -> tuple[list[tuple], list[StoredEvent]]:
        """The rows to insert and the events as stored, after checking the stream's version against
        ``heads`` (its version, the log's last position): PostgreSQL's append, which read both under
        its table lock."""
        actual, last_position = heads[0] or 0, heads[1] or 0
        if actual != expected_version:
            raise ConcurrencyError(stream_id, expected_version, actual)
        tails, stored = self._encoded(stream_id, expected_version, events, metadata, state)
        return ([(last_position + offset, *tail) for offset, tail in enumerate(tails, start=1)],
                self._positioned(stored, last_position + 1))

    @staticmethod
    def _positioned(stored: list[StoredEvent], first: int) -> list[StoredEvent]:
        """The events as stored, numbered from the log position ``first``."""
        for offset, event in enumerate(stored):
            event.__dict__["position"] = first + offset  # (built by ``StoredEvent.of_row``, not yet shared)
        return stored

    def _encoded(self, stream_id, expected_version, events, metadata,
                 state=None) -> tuple[list[tuple], list[StoredEvent]]:
        """Each event's row without its position, and the events as they will be stored (their
        positions still to be given). Personal fields are sealed here, with the key of the person
        the field policy names — or, for an event that does not name them, the person of the record
        it is about (``state.person_id``: a follow-up case's resident)."""
        moment = self._clock()
        occurred_us = to_micros(moment)
        # what a reader will get back: microseconds, in UTC (what the default clock gives already)
        occurred_at = moment if moment.tzinfo is timezone.utc else from_micros(occurred_us)
        if metadata is None:
            meta, meta_json = dict(_NO_METADATA_DICT), _NO_METADATA_JSON
        else:
            meta = metadata.as_dict()
            meta_json = dumps(meta)
        tails, stored, of_row = [], [], StoredEvent.of_row
        sealer, owner = self.sealer, getattr(state, "person_id", None) or None
        for offset, event in enumerate(events, start=1):
            data = dict(event.data)
            if sealer is not None:
                data = sealer.seal_event(event.event_type, data, owner)
            tails.append((event.event_id, stream_id, expected_version + offset, event.event_type,
                          event.schema_version, occurred_us, dumps(data), meta_json))
            stored.append(of_row(event.event_id, event.event_type, event.schema_version, stream_id,
                                 expected_version + offset, 0, occurred_at, data, meta))
        return tails, stored

    # -- reading ----------------------------------------------------------------------------

    def current_version(self, stream_id: str, *, connection: Connection | None = None) -> int:
        if connection is not None:
            return self.stream_heads([stream_id], connection=connection)[0]
        with read_transaction(self.engine) as own:
            return self.stream_heads([stream_id], connection=own)[0]

    def stream_heads(self, stream_ids: Sequence[str], *, connection: Connection) -> list[int]:
        """The last version of each stream (0 for one without events), in order, by one statement:
        each a lookup of the unique ``(stream_id, version)`` index (what an optimistic unit of work
        checks at its first write, :class:`services.kernel.aggregate.UnitOfWork`)."""
        statement = _STREAM_HEADS.get(len(stream_ids))
        if statement is None:
            statement = _STREAM_HEADS[len(stream_ids)] = Prepared(sa.select(*(
                sa.select(sa.func.coalesce(sa.func.max(events_table.c.version), 0))
                .where(events_table.c.stream_id == sa.bindparam(f"s{i}")).scalar_subquery()
                for i in range(len(stream_ids)))))
        return list(statement.first(connection, {f"s{i}": stream_id for i, stream_id in enumerate(stream_ids)}))

    def load(
        self,
        stream_id: str,
        *,
        up_to_version: int | None = None,
        as_of: datetime | None = None,
        after_version: int = 0,
        connection: Connection | None = None,
    ) -> list[StoredEvent]:
        """The stream's events in version order, optionally only after a version (continuing a
        snapshot), up to a version or up to a moment."""
        if up_to_version is None and as_of is None and connection is not None:  # a command's load
            return self._events_of(_STREAM_AFTER.all(connection, {"stream_id": stream_id, "after": after_version}))
        query = sa.select(events_table).where(events_table.c.stream_id == stream_id)
        if after_version:
            query = query.where(events_table.c.version > after_version)
        if up_to_version is not None:
            query = query.where(events_table.c.version <= up_to_version)
        if as_of is not None:
            query = query.where(events_table.c.occurred_at_us <= to_micros(as_of))
        query = query.order_by(events_table.c.version)
        if connection is not None:
            return [self._row_to_event(row) for row in connection.execute(query)]
        with read_transaction(self.engine) as own:
            return [self._row_to_event(row) for row in own.execute(query)]

    def read_all(
        self,
        after_position: int = 0,
        limit: int = 500,
        *,
        up_to_position: int | None = None,
        connection: Connection | None = None,
    ) -> list[StoredEvent]:
        """One page of the whole log in position order, strictly after ``after_position``.

        The relay and rebuilds read the log this way, page after page; on SQLite the page is read
        with the driver's cursor directly (no per-row result processing: the rows are plain)."""
        if self._sqlite:
            bound = up_to_position if up_to_position is not None else _MAX_POSITION
            if connection is not None:
                return self._sqlite_page(connection, after_position, bound, limit)
            with read_transaction(self.engine) as own:
                return self._sqlite_page(own, after_position, bound, limit)
        query = sa.select(events_table).where(events_table.c.position > after_position)
        if up_to_position is not None:
            query = query.where(events_table.c.position <= up_to_position)
        query = query.order_by(events_table.c.position).limit(limit)
        if connection is not None:
            return [self._row_to_event(row) for row in connection.execute(query)]
        with read_transaction(self.engine) as own:
            return [self._row_to_event(row) for row in own.execute(query)]

    def naming(self, text: str, limit: int = 10_000, *, connection: Connection | None = None) -> list[StoredEvent]:
        """The events whose payload contains ``text`` (a person's id as JSON, ``"v1"``), in position
        order, at most ``limit``: one scan of the log in the database, for a person's copy of their
        records (the caller filters exactly what is about them)."""
        query = (sa.select(events_table).where(events_table.c.data.contains(text, autoescape=True))
                 .order_by(events_table.c.position).limit(limit))
        if connection is not None:
            return [self._row_to_event(row) for row in connection.execute(query)]
        with read_transaction(self.engine) as own:
            return [self._row_to_event(row) for row in own.execute(query)]

    def _sqlite_page(self, connection: Connection, after: int, bound: int, limit: int) -> list[StoredEvent]:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            rows = cursor.execute(_SQLITE_PAGE, (after, bound, limit)).fetchall()
        finally:
            cursor.close()
        return self._events_of(rows)

    def _events_of(self, rows) -> list[StoredEvent]:
        """Rows in ``_COLUMNS`` order as events (the replay's inner loop): payload, metadata and time
        decoded when first read (:meth:`StoredEvent.of_log_row`), except payloads to upcast."""
        steps, of_log_row = self.upcasters._steps, StoredEvent.of_log_row
        if not steps:
            return [of_log_row(*row) for row in rows]
        upcast, page = self.upcasters.upcast, []
        for row in rows:
            event = of_log_row(*row)
            if (row[4], row[5]) in steps:
                schema_version, payload = upcast(row[4], row[5], loads(row[7]))
                event.__dict__.update(schema_version=schema_version, data=payload)
            page.append(event)
        return page

    def iterate_all(self, after_position: int = 0, page_size: int = 5000,
                    up_to_position: int | None = None) -> Iterator[StoredEvent]:
        """Every event after ``after_position`` in pages, so memory stays flat."""
        position = after_position
        while True:
            page = self.read_all(position, page_size, up_to_position=up_to_position)
            if not page:
                return
            yield from page
            position = page[-1].position

    def last_position(self, *, connection: Connection | None = None) -> int:
        if connection is not None:
            return _LAST_POSITION.first(connection)[0] or 0
        return read_alone(self.engine, _LAST_POSITION)[0] or 0

    def occurred_at_of(self, position: int) -> datetime | None:
        with read_transaction(self.engine) as connection:
            micros = connection.execute(
                sa.select(events_table.c.occurred_at_us).where(events_table.c.position == position)
            ).scalar()
        return None if micros is None else from_micros(micros)

    def _row_to_event(self, row) -> StoredEvent:
        schema_version, data = self.upcasters.upcast(row.event_type, row.schema_version, loads(row.data))
        return StoredEvent(
            event_id=row.event_id,
            event_type=row.event_type,
            schema_version=schema_version,
            stream_id=row.stream_id,
            version=row.version,
            position=row.position,
            occurred_at=from_micros(row.occurred_at_us),
            data=data,
            metadata=loads(row.metadata),
        )


def rebuild(store: EventStore, page_size: int = 5000) -> int:
    """Drop every projection's tables, recreate them and replay the whole log; returns the count.

    The replay runs in one write transaction, so readers see either the old read models or the
    complete new ones, and appends wait until it is done (no event is missed).
    """
    started = time.monotonic()
    count = 0
    with write_transaction(store.engine) as connection:
        if not is_sqlite(connection):
            connection.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        for projection in store.projections:
            for table in reversed(projection.tables):
                table.drop(connection, checkfirst=True)
            for table in projection.tables:
                table.create(connection)
        replayers = [replayer(projection, connection) for projection in store.projections]
        position = 0
        while True:
            page = store.read_all(position, page_size, connection=connection)
            if not page:
                break
            for each in replayers:
                each.apply(page)
            count += len(page)
            position = page[-1].position
        for each in replayers:
            each.finish()
    log.info("rebuilt read models", extra={"events": count, "seconds": round(time.monotonic() - started, 3),
                                          "projections": [p.name for p in store.projections]})
    return count
