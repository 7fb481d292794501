"""After a service's database was restored to an earlier point: the lost tail, put back from the topic.

A restored log ends at the restore point, but its relay had already published events after it:
they are on the service's topic and other services applied them. :func:`recover_tail` reads the
topic and appends every event the log lacks exactly as it was published — id, position, stream,
version, type, schema version, time, data and metadata — with the read models applied as on any
append, so the log again equals what the consumers received and the relay's check
(:meth:`services.kernel.relay.Relay.check_log_holds_topic`) passes. Events appended after the
restore point but never published are in neither place: they are lost, and nothing here can
bring them back.

The service's own consumers reacted to other services' events in that tail: their reactions come
back with it, but the inbox rows that went with them do not (they were in the restored database
only). So every other service's event that caused a recovered one (its ``causation_id``) is
marked as applied in the inbox of each group that reads the topic it is on; otherwise the group,
starting again from the offsets kept in the restored database, would apply it a second time.

It refuses, changing nothing (:class:`TailNotRecoverable`), when the topic holds at a position
below the log's end another event than the log (the log was written to after the restore: the
writers must stay stopped until the tail is back), when positions of the tail are missing from
the topic (retention deleted them), or when the log moves while it works.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence

import sqlalchemy as sa

from services.kernel.consumer import database_offsets, inbox_table
from services.kernel.db import is_sqlite, read_transaction, write_transaction
from services.kernel.events import EnvelopeError, StoredEvent, to_micros, utc_now
from services.kernel.eventstore import EventStore, _dumps, chunked, events_table
from services.kernel.kafka import BrokerView

log = logging.getLogger(__name__)

RUNBOOK = 'docs/operations.md, "Backups and restore"'


class TailNotRecoverable(RuntimeError):
    """The lost tail cannot be put back as it was; nothing was changed."""


@dataclasses.dataclass(frozen=True)
class TailRecovery:
    service: str
    topic: str
    log_end: int  # the log's last position before
    appended: tuple[int, ...]  # the positions put back
    marked: Mapping[str, int]  # group -> causing events marked as applied in its inbox
    dry_run: bool = False

    def report(self) -> str:
        verb = "would append" if self.dry_run else "appended"
        if not self.appended:
            return (f"{self.service}: nothing to recover: the log (ending at position {self.log_end}) holds every "
                    f"event on {self.topic}")
        marks = "; ".join(f"{count} event(s) marked as applied for {group}"
                          for group, count in sorted(self.marked.items()) if count)
        return (f"{self.service}: the log ended at position {self.log_end}; {verb} {len(self.appended)} event(s) "
                f"from {self.topic} (positions {self.appended[0]}-{self.appended[-1]})" + (f"; {marks}" if marks else ""))


def _envelopes(view: BrokerView, topic: str, partitions: int,
               start: Mapping[int, int] | None = None) -> Iterator[tuple[object, StoredEvent]]:
    """(record, event) for every record of the topic that is an event envelope."""
    for record in view.records(topic, partitions, start):
        try:
            yield record, StoredEvent.from_json(record.value)
        except EnvelopeError:
            log.warning("not an event envelope; skipped", extra={"topic": topic, "partition": record.partition,
                                                                 "offset": record.offset})


def _compare(store: EventStore, seen: dict[int, str]) -> None:
    """Every position of ``seen`` (position -> event id on the topic) holds that event in the log."""
    with read_transaction(store.engine) as connection:
        for positions in chunked(sorted(seen)):
            held = dict(connection.execute(sa.select(events_table.c.position, events_table.c.event_id)
                                           .where(events_table.c.position.in_(positions))).all())
            for position in positions:
                if held.get(position) != seen[position]:
                    raise TailNotRecoverable(
                        f"position {position} holds event {held.get(position)} in the log of {store.service} but "
                        f"event {seen[position]} on its topic: the log was written to after the restore (an API pod, "
                        f"a consumer or a job ran against it). Those writes cannot be kept: restore the database "
                        f"again, keep every writer of {store.service} stopped, and run recover-tail before starting "
                        f"them. See {RUNBOOK}.")
    seen.clear()


def recover_tail(store: EventStore, topic: str, view: BrokerView, *,
                 subscriptions: Mapping[str, Sequence[str]] = {}, dry_run: bool = False) -> TailRecovery:
    """Append the events of ``topic`` that the log lacks, as they were; mark as applied, for each
    group of ``subscriptions`` (group -> the topics it reads), the events that caused them."""
    info = view.topics([topic]).get(topic)
    log_end = store.last_position()
    if info is None:
        return TailRecovery(store.service, topic, log_end, (), {}, dry_run)
    tail: dict[int, StoredEvent] = {}
    below: dict[int, str] = {}  # topic positions within the log, compared page by page
    for _record, event in _envelopes(view, topic, info.partitions):
        if event.position > log_end:
            known = tail.setdefault(event.position, event)
            if known.event_id != event.event_id:
                raise TailNotRecoverable(f"position {event.position} is on {topic} as two events, {known.event_id} "
                                         f"and {event.event_id}: the topic itself is inconsistent. See {RUNBOOK}.")
        else:
            below[event.position] = event.event_id
            if len(below) >= 2000:
                _compare(store, below)
    if below:
        _compare(store, below)
    missing = [p for p in range(log_end + 1, max(tail, default=log_end) + 1) if p not in tail]
    if missing:
        raise TailNotRecoverable(
            f"{len(missing)} position(s) of the lost tail of {store.service} are not on {topic} any more "
            f"(first {missing[0]}, last {missing[-1]}; retention deleted them, or the broker lost them): the tail "
            f"cannot be put back in order. See {RUNBOOK} for what to do when the tail cannot be recovered.")
    events = [tail[p] for p in sorted(tail)]
    marks = _causes_to_mark(store, view, events, subscriptions)
    result = TailRecovery(store.service, topic, log_end, tuple(sorted(tail)),
                          {group: len(rows) for group, rows in marks.items()}, dry_run)
    if dry_run or not events:
        return result
    with write_transaction(store.engine) as connection:
        if not is_sqlite(connection):
            connection.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        now_end = store.last_position(connection=connection)
        if now_end != log_end:
            raise TailNotRecoverable(f"the log of {store.service} moved from position {log_end} to {now_end} while "
                                     f"the tail was read: stop every writer of {store.service} first. See {RUNBOOK}.")
        for page in chunked(events):
            connection.execute(events_table.insert(), [{
                "position": e.position, "event_id": e.event_id, "stream_id": e.stream_id, "version": e.version,
                "event_type": e.event_type, "schema_version": e.schema_version,
                "occurred_at_us": to_micros(e.occurred_at), "data": _dumps(dict(e.data)),
                "metadata": _dumps(dict(e.metadata))} for e in page])
        for event in events:  # the read models, as the append that first stored them did
            for projection in store.projections:
                projection.apply(connection, event)
        for rows in marks.values():
            for page in chunked(rows):
                connection.execute(inbox_table.insert(), list(page))
    log.warning("recovered the lost tail from the topic", extra={
        "topic": topic, "log_end_before": log_end, "appended": len(events), "marked": result.marked})
    return result


def _causes_to_mark(store: EventStore, view: BrokerView, events: Sequence[StoredEvent],
                    subscriptions: Mapping[str, Sequence[str]]) -> dict[str, list[dict]]:
    """Per group: inbox rows for the events of its topics that caused a recovered event and that
    its inbox does not hold yet. Each topic is read from the offsets the group kept in the
    (restored) database, where they belong to the topic as it is now; else from its beginning."""
    causes = {e.metadata.get("causation_id") for e in events} - {None}
    causes -= {e.event_id for e in events}
    marks: dict[str, list[dict]] = {}
    if not causes:
        return marks
    now = to_micros(utc_now())
    for group, topics in subscriptions.items():
        with read_transaction(store.engine) as connection:
            applied = set()
            for page in chunked(sorted(causes)):
                applied.update(connection.execute(sa.select(inbox_table.c.event_id).where(
                    inbox_table.c.group_id == group, inbox_table.c.event_id.in_(page))).scalars())
        wanted = causes - applied
        kept = database_offsets(store.engine, group)
        found = view.topics(list(topics))
        rows: dict[str, dict] = {}
        for topic in topics:
            info = found.get(topic)
            if not wanted or info is None:
                continue
            start = {partition: offset for (t, partition), (topic_id, offset) in kept.items()
                     if t == topic and topic_id is not None and topic_id == info.topic_id}
            for record, event in _envelopes(view, topic, info.partitions, start):
                if event.event_id in wanted and event.event_id not in rows:
                    rows[event.event_id] = {"group_id": group, "event_id": event.event_id, "topic": topic,
                                            "partition": record.partition, "offset": record.offset,
                                            "processed_at_us": now}
        marks[group] = list(rows.values())
    return marks
