"""The unit of work that changes aggregates, and a read model of their state.

Aggregates themselves (:class:`services.kernel.model.Aggregate`) are plain dataclasses of JSON
values that evolve only by applying events and decide new events in plain methods: no I/O, so the
domain is unit-tested without a database.

A :class:`UnitOfWork` opens one serialised write transaction on the store (SQLite, PostgreSQL or
the in-memory store of the unit tier), loads aggregates inside it (so what it decides on is what
it appends after), and appends the events of one or several streams atomically: a project and its
community fund change together or not at all. It carries what a command handler needs besides
the command: the caller (``actor``), the metadata of the events, the clock and the id factory
(both injected by :func:`services.kernel.service.bootstrap`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.kernel.cache import AtVersion
from services.kernel.db import Prepared, read_alone, read_transaction
from services.kernel.errors import ConcurrencyError, Forbidden, NotFound
from services.kernel.events import Metadata, NewEvent, StoredEvent, dumps, loads, to_micros, utc_now
from services.kernel.eventstore import chunked, events_table
from services.kernel.model import Aggregate, Principal, use_state_codec  # noqa: F401 (Aggregate re-exported)

# Read-model rows hold aggregate states as the log holds payloads: msgspec writes the same canonical
# text as the domain kernel's standard-library codec, several times faster (issue 23: a command's
# row was a twentieth of a write's time).
use_state_codec(dumps, loads)

A = TypeVar("A", bound=Aggregate)
H = TypeVar("H", bound=Callable[..., Any])


def new_id() -> str:
    """The default id factory: 16 hex digits of a random UUID."""
    return uuid.uuid4().hex[:16]


class Stale(Exception):
    """An optimistic unit of work (:func:`reads_first`) found, at its first write, that a stream it
    had loaded has changed since: what it decided on is out of date, so it is run again from the
    start in the writers' turn (:class:`services.kernel.bus.MessageBus`). Never reaches a caller."""


class UnitOfWork:
    """Load aggregates and append their new events in one serialised write transaction.

    A unit given ``start_writing`` begins instead in a read transaction (a handler marked
    :func:`reads_first`): it loads and decides there, outside the writers' turn, and keeps the
    version of every stream it loads. Its first :meth:`record` calls ``start_writing`` (which ends
    the read transaction and opens the write transaction, serialised with every appender) and then
    reads the head of each of those streams, in one statement: if one has moved, the unit raises
    :class:`Stale` and nothing has been written. So what it appends was decided on the state its
    streams have in the write transaction, as if it had been loaded there; everything after the
    first record runs in the write transaction, as in any unit."""

    def __init__(self, store, connection, metadata: Metadata, clock: Callable[[], datetime],
                 new_id: Callable[[], str] = new_id, actor: Principal | None = None,
                 start_writing: Callable[[], Any] | None = None):
        self.store = store
        self.connection = connection
        self._start_writing = start_writing
        # stream id -> the version loaded, while the unit reads before its first write
        self._read_at: dict[str, int] | None = {} if start_writing is not None else None
        self.metadata = metadata
        self.clock = clock
        self.id_factory = new_id
        self._actor = actor
        self.recorded: list[StoredEvent] = []
        # what runs once the unit's transaction has committed (MessageBus.handle), e.g. shredding
        # the keys a correction retired; nothing runs when it rolls back
        self.committed: list[Callable[[], Any]] = []

    @property
    def actor(self) -> Principal:
        """The caller of the command (a command sent by a consumer or a job has none)."""
        if self._actor is None:
            raise Forbidden("this command needs a caller", reason="no_caller")
        return self._actor

    def now(self) -> datetime:
        return self.clock()

    def new_id(self) -> str:
        return self.id_factory()

    def opened(self, value: Any) -> Any:
        """A stored personal field (sealed: :mod:`services.kernel.personal`) as its person wrote it,
        for a decision that compares it with what a command brings (never to record or keep)."""
        sealer = getattr(self.store, "sealer", None)
        return value if sealer is None else sealer.open_all(value)

    def load(self, cls: type[A], aggregate_id: str) -> A:
        """The aggregate's current state; a new, empty one (version 0) when it has no events.

        When the store keeps an :class:`AggregateView` of ``cls``, its row is the snapshot to start
        from: the view is written in the same transaction as every append, and this transaction
        is serialised with all appenders, so the row is the fold of the stream up to its version;
        only events after it (normally none) are read and applied. Without a view, or when a row
        no longer fits the class (a field removed since), the whole stream is replayed. A change
        to how an aggregate folds its events therefore needs ``rebuild``, as any read model does.
        """
        state = self._load(cls, aggregate_id)
        if self._read_at is not None:  # read before the first write: checked at it
            if self._read_at.setdefault(state.stream_id, state.version) != state.version:
                raise Stale(state.stream_id)  # loaded twice, at two versions (not a snapshot)
        return state

    def _load(self, cls: type[A], aggregate_id: str) -> A:
        stream_id = cls.stream_id_for(aggregate_id)
        view = self.store.view_of(cls)
        if view is None:
            return cls.replay(aggregate_id, self.store.load(stream_id, connection=self.connection))
        # The row and the stream's last version in one statement: in the usual cases — the row at
        # the stream's head, or neither (a new aggregate: a new rating, the id it would have had
        # before) — nothing else is read (issue 23: a rating read three streams that had nothing
        # after, or nothing at all, one statement more each).
        state, head = view.get_at_head(self.connection, aggregate_id, stream_id)
        if state is None:
            # As the view's class (what its row would be loaded as): the append then applies the
            # events to this state instead of reading the row, and a handler answering with the
            # record has it already (issue 23: a new rating read its stream twice).
            if head is None:
                return view.cls(id=aggregate_id)
            return view.cls.replay(aggregate_id, self.store.load(stream_id, connection=self.connection))
        if head is not None and head > state.version:
            for event in self.store.load(stream_id, after_version=state.version, connection=self.connection):
                state.apply(event)
        return state

    def get(self, cls: type[A], aggregate_id: str, *, expected_version: int | None = None) -> A:
        """An existing aggregate (404 otherwise); with ``expected_version`` (from ``If-Match``) a
        stale client is refused before anything is decided."""
        state = self.load(cls, aggregate_id)
        if not state.exists:
            raise NotFound(f"no {cls.label} {aggregate_id}")
        if expected_version is not None and expected_version != state.version:
            raise ConcurrencyError(state.stream_id, expected_version, state.version)
        return state

    def events_of(self, state: Aggregate) -> list[StoredEvent]:
        """The stream's stored events (for a decision that looks at its history, e.g. a certificate)."""
        return self.store.load(state.stream_id, connection=self.connection)

    def record(self, state: Aggregate, events: Sequence[NewEvent]) -> list[StoredEvent]:
        """Append ``events`` after the version ``state`` was loaded at, and apply them to it.

        The state is handed to the store with the append: the store's :class:`AggregateView` of its
        class applies the events to it and writes it, instead of reading and parsing its row again.
        A unit still reading (:func:`reads_first`) starts writing first."""
        if self._start_writing is not None:
            self._begin_writing()
        stored = self.store.append(state.stream_id, state.version, events, metadata=self.metadata,
                                   connection=self.connection, state=state)
        for event in stored:
            if event.version > state.version:  # not applied by a view already
                state.apply(event)
        self.recorded.extend(stored)
        return stored

    def _begin_writing(self) -> None:
        """Leave the read transaction for the write transaction, and check there that no stream
        loaded so far has moved (:class:`Stale` if one has)."""
        start, self._start_writing = self._start_writing, None
        read_at, self._read_at = self._read_at, None
        self.connection = start()
        if read_at and self.store.stream_heads(list(read_at), connection=self.connection) != list(read_at.values()):
            raise Stale(", ".join(read_at))


def reads_first(handler: H) -> H:
    """Mark a command handler as one the bus may run optimistically: it loads and decides in a read
    transaction, outside the writers' turn, and its first record checks that the streams it loaded
    have not moved (:class:`UnitOfWork`), or it runs again, pessimistically, from the start.

    Only for a handler whose every read before its first ``record`` is a ``load``/``get`` of the
    unit of work (a read model queried then would not be checked) and which changes nothing
    outside the unit before it (it may run twice). Issue 23: a rating held the SQLite writers'
    turn for its four loads and its decision too, half its request, while the other worker waited."""
    handler.reads_first = True  # type: ignore[attr-defined]
    return handler


@contextlib.contextmanager
def unit_of_work(store, metadata: Metadata | None = None, *, connection=None,
                 clock: Callable[[], datetime] = utc_now, new_id: Callable[[], str] = new_id,
                 actor: Principal | None = None) -> Iterator[UnitOfWork]:
    """``with unit_of_work(store, meta) as uow:`` — commits on success, changes nothing on error.

    With ``connection`` (a consumer's transaction, which also holds its inbox row) the unit joins
    that transaction instead of opening its own. Either way the transaction is serialised with
    every appender before anything is read (:meth:`EventStore.lock_for_write`).
    """
    if connection is not None:
        store.lock_for_write(connection)
        yield UnitOfWork(store, connection, metadata or Metadata(), clock, new_id, actor)
        return
    with store.write_transaction() as own:
        store.lock_for_write(own)
        yield UnitOfWork(store, own, metadata or Metadata(), clock, new_id, actor)


class AggregateView:
    """Read model: the current state of every aggregate of one kind as JSON, plus indexed columns
    (``columns`` with ``extract(state) -> {column: value}``) for filtering and sorting."""

    def __init__(self, cls: type[Aggregate], table_name: str, columns: Sequence[sa.Column] = (),
                 extract: Callable[[Any], Mapping[str, Any]] = lambda state: {}, *,
                 index_created: bool = True) -> None:
        """``index_created``: ``created_at_us`` has an index of its own, for lists of all the
        aggregates in the order they came; a view whose every list is narrowed by another of its
        indexes first leaves it out (one page less for each new row's commit to write)."""
        self.cls = cls
        self.name = table_name
        self.extract = extract
        self.table = sa.Table(
            table_name, sa.MetaData(),
            sa.Column("id", sa.String(100), primary_key=True),
            sa.Column("version", sa.Integer, nullable=False),
            sa.Column("created_at_us", sa.BigInteger, nullable=False, index=index_created),
            sa.Column("updated_at_us", sa.BigInteger, nullable=False),
            sa.Column("state", sa.Text, nullable=False),
            *columns,
        )
        self.tables = [self.table]
        # the extracted columns an index holds: an update leaves out those whose value is the same
        # (SQLite rewrites an index entry of every column an UPDATE sets, changed or not: a ballot's
        # commit wrote two index pages more to the WAL, a fifth of its pages; issue 23)
        self._indexed = frozenset(column.name for index in self.table.indexes for column in index.columns
                                  if column.name not in ("id", "version", "created_at_us", "updated_at_us",
                                                         "state"))
        self._prefix = cls.stream_prefix + "-"
        self._read = Prepared(sa.select(self.table.c.state).where(self.table.c.id == sa.bindparam("id")))
        self._read_versioned = Prepared(sa.select(self.table.c.version, self.table.c.state)
                                        .where(self.table.c.id == sa.bindparam("id")))
        self._read_at_head = Prepared(sa.select(
            sa.select(self.table.c.state).where(self.table.c.id == sa.bindparam("id")).scalar_subquery(),
            sa.select(sa.func.max(events_table.c.version))
            .where(events_table.c.stream_id == sa.bindparam("stream_id")).scalar_subquery()))
        self._decoded: AtVersion[Any] = AtVersion(f"{table_name}_decoded", size=512)
        self._prepared: dict[tuple, Prepared] = {}

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        self.apply_state(connection, event, None)

    def apply_state(self, connection: Connection, event: StoredEvent, lent: Any | None) -> None:
        """:meth:`apply`, given the unit of work's state of the stream (``lent``, in step with the
        row when its version is the event's minus one): no read of the row then."""
        if not event.stream_id.startswith(self._prefix):
            return
        aggregate_id = event.stream_id[len(self._prefix):]
        if type(lent) is self.cls and lent.version == event.version - 1:
            state, exists = lent, lent.version > 0
        else:
            row = self._read.first(connection, {"id": aggregate_id})
            state = self.cls.from_json(row[0]) if row is not None else self.cls(id=aggregate_id)
            exists = row is not None
        indexed_before = self._indexed_values(state) if exists and self._indexed else None
        state.apply(event)
        values = {"version": state.version, "updated_at_us": to_micros(event.occurred_at),
                  "state": state.to_json(), **self.extract(state)}
        if not exists:
            self._statement("insert", values).execute(
                connection, {"id": aggregate_id, "created_at_us": to_micros(event.occurred_at), **values})
            return
        if indexed_before:
            for name, value in indexed_before.items():
                if name in values and values[name] == value:
                    del values[name]
        self._statement("update", values).execute(connection, {"b_id": aggregate_id, **values})

    def _indexed_values(self, state: Any) -> dict[str, Any]:
        """The indexed columns' values of ``state`` (before an event is applied to it)."""
        extracted = self.extract(state)
        return {name: extracted[name] for name in self._indexed if name in extracted}

    def _statement(self, kind: str, values: Mapping[str, Any]) -> Prepared:
        """The insert or update of a row with these columns, prepared once (a command runs it)."""
        key = (kind, tuple(values))
        prepared = self._prepared.get(key)
        if prepared is None:
            t = self.table
            if kind == "insert":
                statement = t.insert().values({name: sa.bindparam(name) for name in ("id", "created_at_us", *values)})
            else:
                statement = t.update().where(t.c.id == sa.bindparam("b_id")).values(
                    {name: sa.bindparam(name) for name in values})
            prepared = self._prepared[key] = Prepared(statement)
        return prepared

    def apply_many(self, connection: Connection, events: Sequence[StoredEvent]) -> None:
        """The same as :meth:`apply` for each event, with one read and two batched writes."""
        prefix, t = self._prefix, self.table
        ours = [e for e in events if e.stream_id.startswith(prefix)]
        if not ours:
            return
        ids = list(dict.fromkeys(e.stream_id[len(prefix):] for e in ours))
        states: dict[str, Any] = {}
        for chunk in chunked(ids):
            for row in connection.execute(sa.select(t.c.id, t.c.state).where(t.c.id.in_(chunk))):
                states[row.id] = self.cls.from_json(row.state)
        existing, created, updated = set(states), {}, {}
        for event in ours:
            aggregate_id = event.stream_id[len(prefix):]
            state = states.get(aggregate_id)
            if state is None:
                state = states[aggregate_id] = self.cls(id=aggregate_id)
                created[aggregate_id] = to_micros(event.occurred_at)
            state.apply(event)
            updated[aggregate_id] = to_micros(event.occurred_at)
        rows = {aggregate_id: {"version": state.version, "updated_at_us": updated[aggregate_id],
                               "state": state.to_json(), **self.extract(state)}
                for aggregate_id, state in states.items() if aggregate_id in updated}
        inserts = [{"id": i, "created_at_us": created[i], **values} for i, values in rows.items() if i not in existing]
        changes = [{"b_id": i, **values} for i, values in rows.items() if i in existing]
        if inserts:
            connection.execute(t.insert(), inserts)
        if changes:
            connection.execute(t.update().where(t.c.id == sa.bindparam("b_id")), changes)

    def get(self, connection: Connection, aggregate_id: str) -> Any | None:
        row = self._read.first(connection, {"id": aggregate_id})
        return None if row is None else self.cls.from_json(row[0])

    def get_at_head(self, connection: Connection, aggregate_id: str, stream_id: str) -> tuple[Any | None, int | None]:
        """The aggregate decoded from its row (None without a row, or with a row that no longer
        fits the class: a field removed since), and the last version of its stream in the log
        (None for a stream without events), read by one statement."""
        row = self._read_at_head.first(connection, {"id": aggregate_id, "stream_id": stream_id})
        state = None
        if row[0] is not None:
            try:
                state = self.cls.from_json(row[0])
            except (TypeError, ValueError, KeyError):
                state = None
        return state, row[1]

    def get_shared(self, connection: Connection, aggregate_id: str) -> Any | None:
        """:meth:`get` for a read that changes nothing: the aggregate decoded from its row once per
        version and shared by every reader after (:class:`services.kernel.cache.AtVersion`; decoding a
        project's row was a tenth of its page's time, issue 23). Never to be changed (applied to,
        given to a command): a command loads its own with :meth:`get`. Decisions tried as dry runs
        change nothing (they only return events)."""
        row = self._read_versioned.first(connection, {"id": aggregate_id})
        if row is None:
            return None
        return self._decoded.get(connection, aggregate_id, row[0], lambda: self.cls.from_json(row[1]))

    def get_shared_alone(self, engine, aggregate_id: str) -> Any | None:
        """:meth:`get_shared` without a transaction around it: the row's version and state are one
        statement (:func:`services.kernel.db.read_alone`), and what is decoded from them is that
        version's aggregate. For a reader that then finds its answer kept at that version; one that
        must read more of the database at the same version opens a transaction (and uses
        :meth:`get_shared` in it)."""
        row = read_alone(engine, self._read_versioned, {"id": aggregate_id})
        if row is None:
            return None
        version, state = row
        decoded = self._decoded.kept(engine, aggregate_id, version)
        if decoded is None:
            decoded = self.cls.from_json(state)
            self._decoded.keep(engine, aggregate_id, version, decoded)
        return decoded

    def find(self, connection: Connection, *, order_by: Sequence[Any] = (), limit: int | None = None,
             where: Sequence[Any] = (), **equal: Any) -> list[Any]:
        """The aggregates whose columns equal the given values (a value of None: not filtered),
        that match ``where`` (SQL conditions on :attr:`table`), in ``order_by`` order."""
        t = self.table
        conditions = [*where, *(t.c[name] == value for name, value in equal.items() if value is not None)]
        statement = sa.select(t.c.state).where(*conditions).order_by(*order_by, t.c.id)
        if limit is not None:
            statement = statement.limit(limit)
        return [self.cls.from_json(state) for state in connection.execute(statement).scalars()]

    def fetch(self, engine, aggregate_id: str):
        with read_transaction(engine) as connection:
            state = self.get(connection, aggregate_id)
        if state is None:
            raise NotFound(f"no {self.cls.label} {aggregate_id}")
        return state
