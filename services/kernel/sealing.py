"""The one-off sealing of an event store written before personal fields were sealed (issue 25).

A store written before ADR 20 holds personal fields in plain text, and an event log is never edited
in place. ``python -m services.<name> seal-copy --from <old URL>`` copies the old store into the
service's configured database, which must hold no events yet (a new database):

- **Every event as it was** — position, id, stream, version, type, schema version, time and
  metadata unchanged — with its personal fields (the field policy's, :data:`privacy.PERSONAL`)
  sealed with their person's keys in the key store. An event that does not name its person (a
  follow-up case's later events) is sealed with the person its stream named first (the case's
  rater), as the store does when it appends with the aggregate at hand.
- **The kernel's other tables as they were** (the consumers' inboxes and offsets, dead letters —
  their messages' personal fields sealed too —, the relay's checkpoint and rounds, the deployment
  secrets such as feedback's rating-id key), so that nothing is applied or published twice.
- **The read models rebuilt** from the sealed log.

The rewrite is **recorded and verifiable**: the report (printed, and written to
``<data_dir>/<service>-sealing-report.json`` or where ``--report`` says) holds the number of events and sealed fields and a SHA-256 of each
log — the old one's rows as stored, the new one's — and ``seal-copy --verify --from <old URL>``
compares the two stores event by event: everything but the personal fields byte-equal, and every
personal field of the new store opening to the old one's text. The old store stays untouched:
keep it (offline) until the verification passes, then delete it and every backup of it, and
re-create the service's topic so that its old messages go too (docs/operations.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from services.kernel import migrations, privacy
from services.kernel.consumer import dead_letters_table
from services.kernel.db import is_sqlite, make_engine, read_transaction, write_transaction
from services.kernel.events import dumps, format_time, loads, utc_now
from services.kernel.eventstore import EventStore, events_table, kernel_metadata, rebuild
from services.kernel.personal import Sealer, is_sealed
from services.kernel.secrets import deployment_secrets

PAGE = 2000


class SealingRefused(RuntimeError):
    """The copy cannot be made as asked (a target that holds events, a source not at the head)."""


@dataclass
class SealingReport:
    service: str
    events: int = 0
    sealed_fields: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    source_sha256: str = ""
    target_sha256: str = ""
    at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _rows(connection: Connection, table: sa.Table, order: sa.Column | None = None) -> Iterator[list[Any]]:
    """The rows of ``table`` in pages (streamed from the database, never all at once)."""
    query = sa.select(table)
    if order is not None:
        query = query.order_by(order)
    result = connection.execution_options(yield_per=PAGE).execute(query)
    for partition in result.partitions():
        yield list(partition)


def _log_digest(connection: Connection) -> str:
    digest = hashlib.sha256()
    for page in _rows(connection, events_table, events_table.c.position):
        for row in page:
            digest.update(json.dumps([row.position, row.event_id, row.stream_id, row.version, row.event_type,
                                      row.schema_version, row.occurred_at_us, row.data, row.metadata],
                                     ensure_ascii=False).encode())
    return digest.hexdigest()


def _stream_person(owners: dict[str, str], stream_id: str, data: Mapping[str, Any]) -> str | None:
    person = data.get("person_id")
    if isinstance(person, str) and person and stream_id not in owners:
        owners[stream_id] = person
    return owners.get(stream_id)


def _sealed_message(value: bytes | None, sealer: Sealer) -> bytes | None:
    """A dead letter's message (an event envelope as the relay published it) with its personal
    fields sealed; anything else as it is."""
    if not value:
        return value
    try:
        envelope = json.loads(value)
    except ValueError:
        return value
    if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
        return value
    data = envelope["data"]
    sealed = sealer.seal_event(str(envelope.get("event_type")), data, data.get("person_id"))
    if sealed is data:
        return value
    return json.dumps({**envelope, "data": sealed}, ensure_ascii=False, separators=(",", ":")).encode()


def open_source(url: str) -> Engine:
    """The old store, read only: a SQLite file is opened read-only (not even its journal mode is
    changed, so the file stays byte for byte what it was)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return sa.create_engine(f"sqlite:///file:{parsed.database}?mode=ro&uri=true")
    return make_engine(url)


def seal_copy(source_url: str, target: EventStore, sealer: Sealer) -> SealingReport:
    """Copy the store at ``source_url`` into ``target`` (empty) with personal fields sealed; see
    the module's text. Returns the report."""
    source = open_source(source_url)
    try:
        return _seal_copy(source, target, sealer)
    finally:
        source.dispose()


def _seal_copy(source: Engine, target: EventStore, sealer: Sealer) -> SealingReport:
    report = SealingReport(service=target.service)
    with read_transaction(source) as old:
        if migrations.current(old) != migrations.HEAD:
            raise SealingRefused(f"the old store is at schema {migrations.current(old)!r}, not {migrations.HEAD}: "
                                 "run `migrate` against it first")
        present = set(sa.inspect(old).get_table_names())
    target.create_schema()
    if target.last_position() != 0:
        raise SealingRefused("the target store holds events already: seal into a new, empty database")
    owners: dict[str, str] = {}
    with read_transaction(source) as old, write_transaction(target.engine) as new:
        if not is_sqlite(new):
            new.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        for page in _rows(old, events_table, events_table.c.position):
            rows = []
            for row in page:
                data = loads(row.data)
                sealed = sealer.seal_event(row.event_type, data, _stream_person(owners, row.stream_id, data))
                report.sealed_fields += sum(1 for key, value in sealed.items()
                                            if is_sealed(value) and not is_sealed(data.get(key)))
                rows.append({**row._mapping, "data": row.data if sealed is data else dumps(sealed)})
            new.execute(events_table.insert(), rows)
            report.events += len(rows)
        for table in (*(t for t in kernel_metadata.sorted_tables if t is not events_table), deployment_secrets):
            if table.name not in present:
                continue
            new.execute(table.delete())
            copied = 0
            for page in _rows(old, table):
                rows = [dict(row._mapping) for row in page]
                if table is dead_letters_table:
                    rows = [{**r, "value": _sealed_message(r["value"], sealer)} for r in rows]
                new.execute(table.insert(), rows)
                copied += len(rows)
            report.tables[table.name] = copied
    rebuild(target)
    with read_transaction(source) as old:
        report.source_sha256 = _log_digest(old)
    with read_transaction(target.engine) as new:
        report.target_sha256 = _log_digest(new)
    report.at = format_time(utc_now())
    return report


def verify_copy(source_url: str, target: EventStore, sealer: Sealer) -> list[str]:
    """Problems found comparing the old store with its sealed copy (none: the rewrite holds)."""
    problems: list[str] = []
    same = ("position", "event_id", "stream_id", "version", "event_type", "schema_version", "occurred_at_us",
            "metadata")
    owners: dict[str, str] = {}
    source = open_source(source_url)
    try:
        with read_transaction(source) as old, read_transaction(target.engine) as new:
            olds = (row for page in _rows(old, events_table, events_table.c.position) for row in page)
            news = (row for page in _rows(new, events_table, events_table.c.position) for row in page)
            count = 0
            for before, after in itertools.zip_longest(olds, news):
                if before is None or after is None:
                    problems.append(f"the logs differ in length after {count} events")
                    break
                count += 1
                if any(getattr(before, name) != getattr(after, name) for name in same):
                    problems.append(f"the event at position {before.position} differs beyond its data")
                    continue
                plain, sealed = loads(before.data), loads(after.data)
                if set(plain) != set(sealed):
                    problems.append(f"the event at position {before.position} has other fields")
                    continue
                owner = _stream_person(owners, before.stream_id, plain)
                to_seal = {name for name, _purpose, _person in privacy.personal_fields(before.event_type, plain, owner)}
                for name, value in plain.items():
                    copied = sealed[name]
                    if name in to_seal and not is_sealed(value):
                        if not is_sealed(copied):
                            problems.append(f"position {before.position}: {name} is still in clear")
                        elif sealer.open(copied) != value:
                            problems.append(f"position {before.position}: {name} does not open to the old text")
                    elif copied != value:
                        problems.append(f"position {before.position}: {name} changed")
    finally:
        source.dispose()
    return problems
