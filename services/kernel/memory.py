"""An event store in memory: the same interface and contract as :class:`EventStore`, no I/O.

The unit tier runs command handlers on it through the message bus (no database file, no socket),
and the event-store contract suite runs against it as against SQLite and PostgreSQL, so that what
the unit tier shows holds for the real stores too:

- appends are serialised (one writer at a time, as ``BEGIN IMMEDIATE`` or the PostgreSQL table
  lock), a stream's versions are checked against the expected one, and positions are gap-free in
  commit order;
- a write transaction (:meth:`write_transaction`) sees its own appends; others see them only once
  it commits, and an error inside it discards them all;
- upcasters run on read; stored payloads are copies that are never rewritten;
- projections (objects with ``apply(transaction, event)``; in memory, their own state) are
  applied at commit, in order, so a rolled-back transaction leaves them untouched.

It keeps no snapshots (:meth:`view_of` is None): a unit of work replays each stream it loads.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from services.kernel import metrics
from services.kernel.errors import ConcurrencyError
from services.kernel.events import (
    Metadata, NewEvent, StoredEvent, UpcasterChain, from_micros, to_micros, utc_now,
)
from services.kernel.eventstore import EventStore


class MemoryTransaction:
    """A write transaction on an :class:`InMemoryEventStore`: its appends, until it commits."""

    def __init__(self, store: "InMemoryEventStore") -> None:
        self.store = store
        self.pending: list[StoredEvent] = []


class InMemoryEventStore:
    engine = None  # no database: nothing opens a connection

    def __init__(self, *, service: str = "service", upcasters: UpcasterChain | None = None,
                 projections: Sequence[Any] = (), clock: Callable[[], datetime] = utc_now,
                 sealer: Any | None = None) -> None:
        self.service = service
        self.sealer = sealer  # as EventStore's: seals personal fields before an event is stored
        self.upcasters = upcasters or UpcasterChain()
        self.projections = list(projections)
        self._clock = clock
        self._log: list[StoredEvent] = []  # committed, raw (before upcasting), in position order
        self._versions: dict[str, int] = {}
        self._event_ids: set[str] = set()
        self._writer = threading.RLock()

    # -- schema and transactions --------------------------------------------------------------

    def create_schema(self) -> None:
        """Nothing to create (kept for the interface)."""

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[MemoryTransaction]:
        with self._writer:
            transaction = MemoryTransaction(self)
            yield transaction
            self._commit(transaction)

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[None]:
        yield None

    def lock_for_write(self, connection: Any) -> None:
        """Write transactions already hold the writer lock from their start."""

    def view_of(self, cls: type) -> None:
        return None

    # -- writing ------------------------------------------------------------------------------

    def append(self, stream_id: str, expected_version: int, events: Sequence[NewEvent], *,
               metadata: Metadata | None = None, connection: MemoryTransaction | None = None,
               state: Any | None = None) -> list[StoredEvent]:
        if not events:
            return []
        if expected_version < 0:
            raise ValueError("expected_version must be >= 0")
        if connection is None:
            with self.write_transaction() as own:
                stored = self._append(own, stream_id, expected_version, events, metadata, state)
        else:
            stored = self._append(connection, stream_id, expected_version, events, metadata, state)
        for event_type, count in Counter(event.event_type for event in stored).items():
            metrics.EVENTS_APPENDED.labels(self.service, event_type).inc(count)
        return [self._upcast(event) for event in stored]

    def _append(self, transaction: MemoryTransaction, stream_id: str, expected_version: int,
                events: Sequence[NewEvent], metadata: Metadata | None, state: Any = None) -> list[StoredEvent]:
        actual = self._version(stream_id, transaction)
        if actual != expected_version:
            raise ConcurrencyError(stream_id, expected_version, actual)
        ids = {event.event_id for event in transaction.pending}
        if any(e.event_id in self._event_ids or e.event_id in ids for e in events):
            raise ConcurrencyError(stream_id, expected_version, None)  # as the unique index refuses it
        occurred_at = from_micros(to_micros(self._clock()))
        meta = (metadata or Metadata()).as_dict()
        last = self._last(transaction)
        stored, owner = [], getattr(state, "person_id", None) or None
        for offset, event in enumerate(events, start=1):
            data = dict(event.data)
            if self.sealer is not None:
                data = self.sealer.seal_event(event.event_type, data, owner)
            # A JSON round trip: what a database would give back (and a copy no caller can change).
            data = json.loads(json.dumps(data, ensure_ascii=False))
            stored.append(StoredEvent(event.event_id, event.event_type, event.schema_version, stream_id,
                                      expected_version + offset, last + offset, occurred_at, data, dict(meta)))
        transaction.pending.extend(stored)
        return stored

    def _commit(self, transaction: MemoryTransaction) -> None:
        for event in transaction.pending:
            self._log.append(event)
            self._versions[event.stream_id] = event.version
            self._event_ids.add(event.event_id)
        for event in transaction.pending:
            for projection in self.projections:
                projection.apply(transaction, self._upcast(event))

    def _version(self, stream_id: str, transaction: MemoryTransaction | None) -> int:
        if transaction is not None:
            for event in reversed(transaction.pending):
                if event.stream_id == stream_id:
                    return event.version
        return self._versions.get(stream_id, 0)

    def _last(self, transaction: MemoryTransaction | None) -> int:
        if transaction is not None and transaction.pending:
            return transaction.pending[-1].position
        return self._log[-1].position if self._log else 0

    # -- reading ------------------------------------------------------------------------------

    def _visible(self, connection: MemoryTransaction | None) -> list[StoredEvent]:
        own = connection.pending if isinstance(connection, MemoryTransaction) else []
        return [*self._log, *own] if own else self._log

    def _upcast(self, event: StoredEvent) -> StoredEvent:
        schema_version, data = self.upcasters.upcast(event.event_type, event.schema_version,
                                                     copy.deepcopy(dict(event.data)))
        return StoredEvent(event.event_id, event.event_type, schema_version, event.stream_id, event.version,
                           event.position, event.occurred_at, data, dict(event.metadata))

    def current_version(self, stream_id: str, *, connection: MemoryTransaction | None = None) -> int:
        return self._version(stream_id, connection if isinstance(connection, MemoryTransaction) else None)

    def stream_heads(self, stream_ids: Sequence[str], *, connection: MemoryTransaction | None = None) -> list[int]:
        return [self.current_version(stream_id, connection=connection) for stream_id in stream_ids]

    def load(self, stream_id: str, *, up_to_version: int | None = None, as_of: datetime | None = None,
             after_version: int = 0, connection: MemoryTransaction | None = None) -> list[StoredEvent]:
        found = []
        for event in self._visible(connection):
            if event.stream_id != stream_id or event.version <= after_version:
                continue
            if up_to_version is not None and event.version > up_to_version:
                continue
            if as_of is not None and event.occurred_at > as_of:
                continue
            found.append(self._upcast(event))
        return found

    def read_all(self, after_position: int = 0, limit: int = 500, *, up_to_position: int | None = None,
                 connection: MemoryTransaction | None = None) -> list[StoredEvent]:
        page = []
        for event in self._visible(connection):
            if event.position <= after_position or (up_to_position is not None and event.position > up_to_position):
                continue
            page.append(self._upcast(event))
            if len(page) >= limit:
                break
        return page

    iterate_all = EventStore.iterate_all  # pages of read_all, as on the databases

    def naming(self, text: str, limit: int = 10_000, *, connection: MemoryTransaction | None = None) -> list[StoredEvent]:
        found = [self._upcast(e) for e in self._visible(connection) if text in json.dumps(e.data, ensure_ascii=False)]
        return found[:limit]

    def last_position(self, *, connection: MemoryTransaction | None = None) -> int:
        return self._last(connection if isinstance(connection, MemoryTransaction) else None)

    def occurred_at_of(self, position: int) -> datetime | None:
        return next((e.occurred_at for e in self._log if e.position == position), None)
