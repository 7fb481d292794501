"""A reusable consumer loop for services that react to another service's events.

Exactly-once effects over at-least-once delivery:

* each message is handled in a database transaction that also inserts an inbox row
  ``(group_id, event_id)``; a redelivered event finds its row and has no second effect. The
  records of one poll share one transaction (one durable commit for up to 500 records); if any
  of them fails, that transaction is rolled back and the records are applied one at a time,
  each in its own transaction, with the retry and dead-letter rules below;
* offsets are committed to Kafka (offset + 1) only after the database commit of every message
  before them, so a crash re-delivers, never skips. Asynchronously (the next poll does not wait for
  the answer); a commit the broker refused (a rebalance) is sent again after a later poll, and a
  member assigned a partition tells Kafka the offset the database starts it at, so a group ends at
  the end of its topics even when no record follows;
* the consumer keeps its own offsets in its database too (``consumer_offsets``: per group, topic
  and partition, with the topic's id), written in the poll's transaction (after the records, when
  they had to be applied one by one), so they are never ahead of the effects that database holds.
  When it is assigned a partition it starts at that offset (if it was written for the topic as it
  is now, same id; at the beginning when the database shows nothing of the partition was applied),
  not at Kafka's: after the database was restored to an earlier point, Kafka's committed offsets
  are ahead of the restored effects and would skip the events whose effects the restore took away;
  the database's offsets make them apply again, once (the inbox guards the rest);
* a poison message (not an envelope, or a handler that refuses it) goes to ``<topic>.dlq`` with
  the error and its origin topic/partition/offset in headers, then consumption continues;
* a transient error (database unreachable, a concurrent writer) is retried with bounded
  exponential backoff; when the retries are spent the worker stops without committing, so the
  process supervisor restarts it and the message is delivered again. Transient failures are never
  dead-lettered: an outage must not empty the topic into the DLQ;
* every dead letter is also kept in the consumer's own database (``dead_letters``: the record, its
  error and origin), because a broker may lose the DLQ topic; ``python -m services.<name>
  dead-letters republish`` sends the kept ones to their DLQ topics again.

Coming back whole after a broker restart or a long outage: the consumer subscribes by pattern
(its metadata requests name no topic, so it never creates one), and only once every topic it
reads exists with the configured partition count (a wrong count stops the worker with
:class:`~services.kernel.kafka.TopicMismatch`). Every ``verify_seconds`` it asks the broker
(:class:`~services.kernel.kafka.BrokerView`) for the topics' ids and end offsets and the group's
committed offsets. When a topic is gone or was created again (another id), a committed offset lies
beyond its partition's end, or the broker has forgotten an offset this consumer committed, the
Kafka client is closed and a new one is built: nothing kept in memory from before (assignment,
positions) survives; the new member starts at the committed offsets, or at the earliest offset
where the broker has none, and the inbox makes the repeats harmless. The same check reports the
lag of every partition of the subscribed topics, held by this member or not: end offset minus
committed offset, or minus the beginning offset where nothing is committed. It also tells Kafka
again an offset the database keeps that Kafka's committed one is behind (a commit lost on its way),
and it builds a new client when it has stopped getting on: a partition it holds has records beyond
what the group applied (its database's offset, Kafka's committed one), and that did not move for
``stall_seconds`` and at least ``stall_polls`` polls (drills saw a group stop one record short of a
partition's end, for minutes: an ignored record's waiting offset kept after a later batch's moved
the database's offset back, mended in :meth:`EventConsumer._kept`; the check stays for any other
way a client stops getting on).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import msgspec
import psycopg
import sqlalchemy as sa
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.engine import Connection, Engine

from services.kernel import metrics
from services.kernel.db import Prepared, write_transaction
from services.kernel.errors import ConcurrencyError
from services.kernel.events import EnvelopeError, StoredEvent, from_micros, to_micros, utc_now
from services.kernel.eventstore import kernel_metadata
from services.kernel.kafka import (DLQ_SUFFIX, FETCH_WAIT_MS, IDLE_FETCH_WAIT_MS, MAX_POLL_RECORDS, BrokerView,
                                  TopicMissing, TopicPolicy, make_consumer, make_producer, paced_wait, set_fetch_wait)
from services.kernel.logs import correlation_id_var

log = logging.getLogger(__name__)

Handler = Callable[[Connection, StoredEvent], None]
ANY_EVENT = "*"  # a handler under this key receives every event type without its own handler

inbox_table = sa.Table(
    "inbox",
    kernel_metadata,
    sa.Column("group_id", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("processed_at_us", sa.BigInteger, nullable=False),
)

_INBOX_COLUMNS = ("group_id", "event_id", "topic", "partition", "offset", "processed_at_us")
_INBOX_ADD = Prepared(inbox_table.insert().values(**{name: sa.bindparam(name) for name in _INBOX_COLUMNS}))
# A batch's ids in one parameter, a JSON array (the expanding IN of 500 parameters was built and
# compiled by SQLAlchemy on every poll: a tenth of a consumer's batch, issue 23).
_INBOX_SEEN_SQLITE = "SELECT event_id FROM inbox WHERE group_id = ? AND event_id IN (SELECT value FROM json_each(?))"


def _already_applied(connection: Connection, group_id: str, event_ids: list[str]) -> set[str]:
    """Those of ``event_ids`` that ``group_id``'s inbox holds."""
    if connection.dialect.name == "sqlite":
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.execute(_INBOX_SEEN_SQLITE, (group_id, _ENCODE_IDS(event_ids).decode()))
            return {row[0] for row in cursor.fetchall()}
        finally:
            cursor.close()
    seen: set[str] = set()
    for start in range(0, len(event_ids), 500):
        seen.update(connection.execute(sa.select(inbox_table.c.event_id).where(
            inbox_table.c.group_id == group_id, inbox_table.c.event_id.in_(event_ids[start:start + 500]))).scalars())
    return seen


_ENCODE_IDS = msgspec.json.encode

# Where each group goes on reading (the next offset), kept with its effects: see the module's doc.
consumer_offsets_table = sa.Table(
    "consumer_offsets",
    kernel_metadata,
    sa.Column("group_id", sa.String(200), primary_key=True),
    sa.Column("topic", sa.String(200), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("topic_id", sa.String(64), nullable=True),  # the offsets hold for this incarnation of the topic only
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at_us", sa.BigInteger, nullable=False),
)

dead_letters_table = sa.Table(
    "dead_letters",
    kernel_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group_id", sa.String(200), nullable=False),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("key", sa.LargeBinary, nullable=True),
    sa.Column("value", sa.LargeBinary, nullable=True),
    sa.Column("headers", sa.Text, nullable=False),  # JSON [[name, latin-1 text], ...]
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("dead_lettered_at_us", sa.BigInteger, nullable=False),
    sa.Column("republished_at_us", sa.BigInteger, nullable=True),
)

# The drivers' own errors too: the hot paths run statements on the driver itself (SQLite's
# BEGIN IMMEDIATE, services.kernel.db.Prepared), where SQLAlchemy does not wrap what they raise.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, ConcurrencyError, TimeoutError,
    sqlite3.OperationalError, sqlite3.InterfaceError, psycopg.OperationalError, psycopg.InterfaceError,
)


_OFFSETS_UPSERTS: dict[str, Prepared] = {}


def _offsets_upsert(dialect: str) -> Prepared:
    """``INSERT … ON CONFLICT (group, topic, partition) DO UPDATE`` of ``consumer_offsets``, built
    once per dialect: every poll runs it, and building its ``excluded`` alias each time was a third
    of an idle-handler consumer's time (issue 23)."""
    found = _OFFSETS_UPSERTS.get(dialect)
    if found is None:
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        o = consumer_offsets_table
        statement = insert(o).values(**{c.name: sa.bindparam(c.name) for c in o.columns})
        statement = statement.on_conflict_do_update(
            index_elements=[o.c.group_id, o.c.topic, o.c.partition],
            set_={"topic_id": statement.excluded.topic_id, "offset": statement.excluded["offset"],
                  "updated_at_us": statement.excluded.updated_at_us})
        found = _OFFSETS_UPSERTS[dialect] = Prepared(statement)
    return found


def list_dead_letters(engine: Engine) -> list[dict]:
    """The dead letters kept in this database, oldest first, as JSON-ready rows."""
    d = dead_letters_table
    with engine.connect() as connection:
        rows = connection.execute(sa.select(d).order_by(d.c.id)).mappings().all()
    return [{"id": r["id"], "group": r["group_id"], "topic": r["topic"], "partition": r["partition"],
             "offset": r["offset"], "error": r["error"],
             "dead_lettered_at": from_micros(r["dead_lettered_at_us"]).isoformat(),
             "republished_at": from_micros(r["republished_at_us"]).isoformat() if r["republished_at_us"] else None,
             "value": (r["value"] or b"").decode("utf-8", "replace")} for r in rows]


def database_offsets(engine: Engine, group_id: str) -> dict[tuple[str, int], tuple[str | None, int]]:
    """The group's offsets kept in its database: ``{(topic, partition): (topic id, next offset)}``."""
    o = consumer_offsets_table
    with engine.connect() as connection:
        rows = connection.execute(sa.select(o.c.topic, o.c.partition, o.c.topic_id, o.c["offset"])
                                  .where(o.c.group_id == group_id)).all()
    return {(topic, partition): (topic_id, offset) for topic, partition, topic_id, offset in rows}


class ConsumerStalled(RuntimeError):
    """A transient error outlived the retries; the worker exits so it is restarted."""


class TopicReplaced(KafkaError):
    """A client was assigned partitions of a topic that is no longer the one it was built for (the
    broker lost it and it was created again): its poll fails, and a new client is built."""


class _StartAtDatabaseOffsets(ConsumerRebalanceListener):
    """On assignment, move each partition to the offset kept in the consumer's database."""

    def __init__(self, owner: "EventConsumer") -> None:
        self.owner = owner
        self.consumer = None  # set once the Kafka client exists (callbacks come from its poll)

    def on_partitions_revoked(self, revoked) -> None:
        return None

    def on_partitions_assigned(self, assigned) -> None:
        self.owner._start_at_database_offsets(self.consumer, assigned)


class EventConsumer:
    def __init__(
        self,
        *,
        engine: Engine,
        group_id: str,
        topics: Iterable[str],
        handlers: Mapping[str, Handler],
        bootstrap_servers: str,
        max_retries: int = 5,
        base_backoff_seconds: float = 0.1,
        topic_policy: TopicPolicy = TopicPolicy(),
        verify_seconds: float = 2.0,
        broker_view: BrokerView | None = None,
        pace_max_seconds: float = 0.1,
    ) -> None:
        self.engine = engine
        self.pace_max_seconds = pace_max_seconds  # (services.kernel.kafka.paced_wait)
        self.group_id = group_id
        self.topics = list(topics)
        self.handlers = dict(handlers)
        self.bootstrap_servers = bootstrap_servers
        self.max_retries = max_retries
        self.base_backoff_seconds = base_backoff_seconds
        self.topic_policy = topic_policy
        self._dlq_producer = None
        self.broker_ok = False
        self.verify_seconds = verify_seconds
        self.view = broker_view or BrokerView(bootstrap_servers, f"consumer-{group_id}")
        self._topic_ids: dict[str, str | None] = {}
        self._committed: dict[tuple[str, int], int] = {}  # what this member committed, since it was built
        self._to_commit: dict[TopicPartition, int] = {}  # applied (the database says) but not yet committed
        self._commit_retry_at = 0.0
        self._commit_due_at = 0.0  # Kafka is told at most every kafka_commit_seconds
        self._verified_at = 0.0
        self._unassigned_since: float | None = None
        self.unassigned_grace_seconds = 10.0
        # A client that stopped getting on (see the module's doc): no progress of what was applied.
        self.stall_seconds = 20.0
        self.stall_polls = 10
        # The ends fetched at a check are used again while nothing was appended, for at most this
        # long (BrokerView.end_offsets: an idle consumer built a fetching client every check).
        self.ends_reuse_seconds = 30.0
        self._kept_at_last_check: dict[tuple[str, int], int] = {}  # the database's offsets, last check
        self._behind: dict[tuple[str, int], tuple[int, float, int]] = {}  # (progress, since, polls then)
        self._polls = 0
        # Offsets of polls that held only records no handler takes, not yet kept in the database:
        # kept with the next poll that applies something, or after ``offsets_wait_seconds``.
        self._waiting: dict[tuple[str, int], int] = {}
        self._waiting_since = 0.0
        self.offsets_wait_seconds = 1.0
        # Kafka is told the applied offsets at most this often (a poll of a few records each time an
        # event arrives told it after every poll: an offset commit per poll for the broker and the
        # client, issue 23). Kafka's offsets only show the group's progress (a new member starts at
        # the database's), so they trail by this much at most.
        self.kafka_commit_seconds = 0.5
        # After this long without a record the broker may hold each fetch longer (IDLE_FETCH_WAIT_MS:
        # an idle consumer asks about three times a second instead of ten; a record that arrives
        # is still answered at once); the first record brings the short wait back.
        self.idle_after_seconds = 2.0
        self._fetch_wait = FETCH_WAIT_MS
        self._record_at = time.monotonic()

    # -- one message ------------------------------------------------------------------------

    def handle(self, record) -> str:
        """Apply one record; returns 'handled', 'duplicate', 'ignored' or 'dead_lettered'."""
        try:
            event = StoredEvent.from_json(record.value)
        except EnvelopeError as exc:
            self.dead_letter(record, f"invalid envelope: {exc}")
            return "dead_lettered"
        handler = self.handlers.get(event.event_type) or self.handlers.get(ANY_EVENT)
        token = correlation_id_var.set(event.metadata.get("correlation_id") or event.event_id)
        try:
            return self._handle_with_retries(record, event, handler)
        finally:
            correlation_id_var.reset(token)

    def _handle_with_retries(self, record, event: StoredEvent, handler: Handler | None) -> str:
        for attempt in range(1, self.max_retries + 1):
            try:
                outcome = self._apply(record, event, handler)
            except TRANSIENT_ERRORS as exc:
                metrics.MESSAGES_FAILED.labels(self.group_id, record.topic, "transient").inc()
                if attempt == self.max_retries:
                    raise ConsumerStalled(
                        f"{record.topic}/{record.partition}@{record.offset}: {exc!r} after {attempt} attempts"
                    ) from exc
                delay = self.base_backoff_seconds * 2 ** (attempt - 1)
                log.warning("transient error; retrying", extra={"attempt": attempt, "delay_s": delay,
                                                                 "error": repr(exc), "event_id": event.event_id})
                time.sleep(delay)
                continue
            except Exception as exc:  # the handler refused the message: it is poison
                metrics.MESSAGES_FAILED.labels(self.group_id, record.topic, "poison").inc()
                self.dead_letter(record, f"{exc.__class__.__name__}: {exc}")
                return "dead_lettered"
            if outcome == "duplicate":
                metrics.MESSAGES_DUPLICATE.labels(self.group_id, record.topic).inc()
            else:
                metrics.MESSAGES_HANDLED.labels(self.group_id, record.topic, event.event_type).inc()
            return outcome
        raise AssertionError("unreachable")

    def _apply(self, record, event: StoredEvent, handler: Handler | None) -> str:
        if handler is None:
            # No effect, so nothing to dedupe: the inbox records applied effects only.
            return "ignored"
        with write_transaction(self.engine) as connection:
            seen = connection.execute(
                sa.select(inbox_table.c.event_id).where(
                    inbox_table.c.group_id == self.group_id, inbox_table.c.event_id == event.event_id)
            ).first()
            if seen is not None:
                return "duplicate"
            connection.execute(inbox_table.insert().values(
                group_id=self.group_id, event_id=event.event_id, topic=record.topic,
                partition=record.partition, offset=record.offset, processed_at_us=to_micros(utc_now()),
            ))
            handler(connection, event)
        return "handled"

    def handle_together(self, records, offsets: Mapping[tuple[str, int], int] | None = None) -> bool:
        """Apply a poll's records in one write transaction (one commit instead of one per record),
        with the group's ``offsets`` (``{(topic, partition): next offset}``) kept in the same one —
        and those that waited. A poll none of whose records a handler takes opens no transaction:
        its offsets wait, for the next transaction or :meth:`save_waiting_offsets`.

        Returns False, having changed nothing, when any record is not a valid envelope or any
        handler raises: the caller then applies the records one by one, with the retries and the
        dead-lettering of :meth:`handle`. Partition order is kept; records of different partitions
        are independent, so their interleaving does not matter.
        """
        try:
            events = [StoredEvent.from_json(record.value) for record in records]
        except EnvelopeError:
            return False
        wanted = [e.event_id for e in events
                  if (self.handlers.get(e.event_type) or self.handlers.get(ANY_EVENT)) is not None]
        if not wanted:
            # Nothing to apply: no transaction (no commit, no fsync) only to keep the offsets of
            # records that change nothing — they wait (issue 23: most events of a topic are no
            # other service's business, and each such poll cost every consumer a durable commit).
            # Kept later, or read again after a restart and ignored again: harmless either way.
            if offsets:
                self._wait(offsets)
            self._count((record, event, "ignored") for record, event in zip(records, events))
            return True
        outcomes: list[tuple[object, StoredEvent, str]] = []
        saving = {**self._waiting, **(offsets or {})}
        try:
            with write_transaction(self.engine) as connection:
                seen = _already_applied(connection, self.group_id, wanted)
                now = to_micros(utc_now())
                group = self.group_id
                inbox_rows = []
                for record, event in zip(records, events):
                    handler = self.handlers.get(event.event_type) or self.handlers.get(ANY_EVENT)
                    if handler is None:
                        outcomes.append((record, event, "ignored"))
                        continue
                    if event.event_id in seen:
                        outcomes.append((record, event, "duplicate"))
                        continue
                    seen.add(event.event_id)
                    inbox_rows.append((group, event.event_id, record.topic, record.partition, record.offset, now))
                    token = correlation_id_var.set(event.metadata.get("correlation_id") or event.event_id)
                    try:
                        handler(connection, event)
                    finally:
                        correlation_id_var.reset(token)
                    outcomes.append((record, event, "handled"))
                # one statement for the batch, in the same transaction as the effects
                _INBOX_ADD.execute_many(connection, inbox_rows, _INBOX_COLUMNS)
                if saving:  # this poll's and those that waited
                    self._save_offsets(connection, saving)
        except Exception as exc:  # rolled back: the records are applied one by one instead
            log.info("batch not applied together; applying one by one", extra={"error": repr(exc)})
            return False
        self._kept(saving)
        self._count(outcomes)
        return True

    def _count(self, outcomes) -> None:
        """The metrics of a batch's ``(record, event, outcome)``: each counter child incremented once
        by its count (not labelled per record: issue 23). Handled, or ignored (no handler), is
        counted as handled, as in :meth:`handle`."""
        counts = Counter((outcome == "duplicate", record.topic, event.event_type) for record, event, outcome in outcomes)
        for (duplicate, topic, event_type), count in counts.items():
            if duplicate:
                metrics.MESSAGES_DUPLICATE.labels(self.group_id, topic).inc(count)
            else:
                metrics.MESSAGES_HANDLED.labels(self.group_id, topic, event_type).inc(count)

    # -- the offsets kept with the effects -------------------------------------------------

    def _wait(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if not self._waiting:
            self._waiting_since = time.monotonic()
        self._waiting.update(offsets)

    def _kept(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """``offsets`` are in the database now: nothing of them waits — nor an offset of the same
        partition before them, which kept later would move the database's offset back (an ignored
        record's offset waiting when a later batch applied the next record: the group then stood
        one record short of the partition's end until its client was built again, as the
        broker-loss drills saw) — and Kafka is told them."""
        for key, offset in offsets.items():
            waiting = self._waiting.get(key)
            if waiting is not None and waiting <= offset:
                del self._waiting[key]
        self._tell_kafka(offsets)

    def _tell_kafka(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit ``offsets`` to Kafka after this poll (:meth:`_commit_applied`)."""
        for key, offset in offsets.items():
            self._to_commit[TopicPartition(*key)] = offset

    def save_waiting_offsets(self, *, due_only: bool = True) -> None:
        """Keep the offsets that wait (:meth:`handle_together`) once they have waited
        ``offsets_wait_seconds`` (or now, with ``due_only`` false: a member leaving)."""
        if not self._waiting or (due_only and time.monotonic() - self._waiting_since < self.offsets_wait_seconds):
            return
        saving = dict(self._waiting)
        try:
            with write_transaction(self.engine) as connection:
                self._save_offsets(connection, saving)
        except TRANSIENT_ERRORS as exc:  # behind is harmless: the inbox dedupes what is read again
            log.warning("offsets not kept in the database", extra={"error": repr(exc)})
            self._waiting_since = time.monotonic()
            return
        self._kept(saving)

    def _save_offsets(self, connection: Connection, offsets: Mapping[tuple[str, int], int]) -> None:
        """Upsert the next offset of each partition (moving back is harmless: the inbox dedupes)."""
        upsert = _offsets_upsert(connection.dialect.name)
        now = to_micros(utc_now())
        for (topic, partition), offset in sorted(offsets.items()):
            upsert.execute(connection, {"group_id": self.group_id, "topic": topic, "partition": partition,
                                        "topic_id": self._topic_ids.get(topic), "offset": offset,
                                        "updated_at_us": now})

    def _start_at_database_offsets(self, consumer, assigned) -> None:
        """Where each assigned partition starts, decided by the database (restored or not):

        * at the offset kept for it, when it was kept for the topic as it is now (same topic id);
        * at the beginning when the database keeps offsets for other partitions of the topic as it
          is now but none for this one (nothing of it was applied), or when it has neither offsets
          nor inbox rows of the group (it never applied anything: restored to before the group's
          first event, or new);
        * elsewhere where Kafka says: the topic was created again (the broker-loss handling
          decides), or the database predates the offsets it keeps (inbox rows but no offsets).

        A database that cannot be read raises: the poll fails and the client is built again. So
        does an assignment of a topic that the broker now holds under another id than this client
        was built for: a client that outlived a broker's loss can rejoin the new broker before its
        check sees the topics created again, and it would start their partitions at the offsets
        kept for the old ones — past the records of the new topic that bear the same offsets (seen
        in ``tests/integration/test_broker_recovery.py``; then Kafka's committed offsets carry the
        skip over to the next client)."""
        topics = sorted({tp.topic for tp in assigned})
        if topics:
            now = {topic: (info.topic_id if info is not None else None)
                   for topic, info in self.view.topics(topics).items()}
            replaced = {topic: [self._topic_ids.get(topic), now.get(topic)] for topic in topics
                        if now.get(topic) != self._topic_ids.get(topic)}
            if replaced:
                log.warning("assigned a topic created again since this Kafka client was built; building a new one",
                            extra={"group": self.group_id, "topic_ids_then_and_now": replaced})
                raise TopicReplaced(f"topics created again since the client was built: {sorted(replaced)}")
        kept = database_offsets(self.engine, self.group_id)
        current = {topic for (topic, _p), (topic_id, _o) in kept.items()
                   if topic_id is not None and topic_id == self._topic_ids.get(topic)}
        never_applied = False
        if not kept:
            with self.engine.connect() as connection:
                never_applied = connection.execute(sa.select(inbox_table.c.event_id).where(
                    inbox_table.c.group_id == self.group_id).limit(1)).first() is None
        for tp in assigned:
            topic_id, offset = kept.get((tp.topic, tp.partition), (None, None))
            if tp.topic in current and topic_id == self._topic_ids.get(tp.topic):
                consumer.seek(tp, offset)
                where = offset
                # Kafka may not know it yet (the last commit was refused, or the process died between
                # the two commits): told after this poll, even when no record follows.
                self._to_commit[tp] = offset
            elif tp.topic in current or never_applied:
                consumer.seek_to_beginning(tp)
                where = "the beginning"
            else:
                continue
            log.info("starting where the database says", extra={
                "group": self.group_id, "topic": tp.topic, "partition": tp.partition, "offset": where})

    def dead_letter(self, record, reason: str) -> None:
        """Keep the record in the database, then on ``<topic>.dlq`` (acknowledged before the offset
        moves past it)."""
        log.error("dead-lettering message", extra={"topic": record.topic, "partition": record.partition,
                                                    "offset": record.offset, "reason": reason})
        d = dead_letters_table
        with write_transaction(self.engine) as connection:
            kept = connection.execute(sa.select(d.c.id).where(  # a redelivery after a failed send
                d.c.group_id == self.group_id, d.c.topic == record.topic, d.c.partition == record.partition,
                d.c.offset == record.offset, d.c.value == record.value)).first()
            if kept is None:
                connection.execute(d.insert().values(
                    group_id=self.group_id, topic=record.topic, partition=record.partition, offset=record.offset,
                    key=record.key, value=record.value, error=reason[:2000],
                    headers=json.dumps([[name, (value or b"").decode("latin-1")] for name, value in record.headers or []]),
                    dead_lettered_at_us=to_micros(utc_now())))
        self._send_dead_letter(record.topic, record.partition, record.offset, record.key, record.value,
                               list(record.headers or []), reason)
        metrics.MESSAGES_DEAD_LETTERED.labels(self.group_id, record.topic).inc()

    def _send_dead_letter(self, topic, partition, offset, key, value, headers, reason: str) -> None:
        dlq = f"{topic}{DLQ_SUFFIX}"
        # The DLQ must exist with its count before a producer names it (naming it may create it).
        self.topic_policy.check(self.view, [dlq])
        headers = headers + [
            ("dlq.error", reason[:2000].encode()),
            ("dlq.origin.topic", topic.encode()),
            ("dlq.origin.partition", str(partition).encode()),
            ("dlq.origin.offset", str(offset).encode()),
            ("dlq.group", self.group_id.encode()),
        ]
        if self._dlq_producer is None:
            self._dlq_producer = make_producer(self.bootstrap_servers, f"dlq-{self.group_id}")
        try:
            self._dlq_producer.send(dlq, key=key, value=value, headers=headers).get(timeout=30)
        except Exception:
            self._dlq_producer.close(timeout=1)
            self._dlq_producer = None
            raise

    def republish_dead_letters(self, *, all_of_them: bool = False) -> int:
        """Send the dead letters kept in the database to their DLQ topics again (those never
        re-published, or every one); returns how many were sent."""
        d = dead_letters_table
        query = sa.select(d).where(d.c.group_id == self.group_id).order_by(d.c.id)
        if not all_of_them:
            query = query.where(d.c.republished_at_us.is_(None))
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        try:
            for row in rows:
                headers = [(name, text.encode("latin-1")) for name, text in json.loads(row["headers"])]
                self._send_dead_letter(row["topic"], row["partition"], row["offset"], row["key"], row["value"],
                                       headers, row["error"])
                with write_transaction(self.engine) as connection:
                    connection.execute(d.update().where(d.c.id == row["id"])
                                       .values(republished_at_us=to_micros(utc_now())))
        finally:
            if self._dlq_producer is not None:
                self._dlq_producer.close(timeout=5)
                self._dlq_producer = None
            self.view.close()
        return len(rows)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        consumer = None
        backoff = 0.5
        try:
            while not stop.is_set():
                if consumer is None:
                    try:
                        consumer = self._connect()
                        backoff = 0.5
                    except (KafkaError, TopicMissing, OSError) as exc:
                        self.broker_ok = False
                        log.warning("not consuming yet; retrying", extra={"error": repr(exc), "backoff_s": backoff})
                        stop.wait(backoff)
                        backoff = min(5.0, backoff * 2)
                        continue
                try:
                    received = self.poll_once(consumer)
                    if 0 < received < MAX_POLL_RECORDS:  # fewer, fuller fetches while records flow
                        stop.wait(paced_wait(received, 0.0, self.pace_max_seconds))  # (a full poll: a backlog)
                except (KafkaError, TopicMissing, OSError) as exc:  # a dead letter that could not be sent
                    log.warning("broker failed mid-poll; reconnecting", extra={"error": repr(exc)})
                    self._disconnect(consumer)
                    consumer = None
                    stop.wait(backoff)
                    continue
                if self._verify_due(consumer) and not self.verify(consumer):
                    self._disconnect(consumer)
                    consumer = None
        finally:
            if consumer is not None:
                if stop.is_set():
                    try:
                        self.save_waiting_offsets(due_only=False)
                    except Exception:  # noqa: BLE001 — leaving anyway: they are read again and ignored
                        log.info("waiting offsets not kept on leaving", exc_info=True)
                    self._commit_before_leaving(consumer)
                self._disconnect(consumer)
            if self._dlq_producer is not None:
                self._dlq_producer.close(timeout=5)
            self.view.close()

    def _connect(self):
        """A new Kafka client, once every topic read exists with its configured partition count."""
        found = self.topic_policy.check(self.view, self.topics + [f"{t}{DLQ_SUFFIX}" for t in self.topics])
        self._topic_ids = {t: found[t].topic_id for t in self.topics}
        listener = _StartAtDatabaseOffsets(self)
        consumer = make_consumer(self.bootstrap_servers, self.group_id, self.topics,
                                 client_id=f"consumer-{self.group_id}", listener=listener)
        listener.consumer = consumer
        self._committed = {}
        self._to_commit = {}
        # Offsets read by the client before (of the topics as they were then, perhaps): the new
        # member starts at the database's offsets and reads those records again.
        self._waiting = {}
        self._behind, self._kept_at_last_check = {}, {}
        self._commit_retry_at = 0.0
        self._commit_due_at = 0.0
        self._fetch_wait, self._record_at = FETCH_WAIT_MS, time.monotonic()
        self._verified_at = time.monotonic()
        self._unassigned_since = None
        log.info("consumer started", extra={"group": self.group_id, "topics": self.topics})
        return consumer

    def _disconnect(self, consumer) -> None:
        try:
            consumer.close(autocommit=False)
        except Exception:  # a client of a vanished broker may fail to close cleanly
            log.debug("closing the consumer failed", exc_info=True)

    def _verify_due(self, consumer) -> bool:
        """Every ``verify_seconds`` while the member holds partitions. Not while it is joining the
        group: the local broker restarts a join that an offset fetch or a fetch of the group's
        topics meets halfway, so a check then would keep the group from ever forming. A member
        that gets no partitions for ``unassigned_grace_seconds`` is checked all the same (its topics
        may be gone)."""
        now = time.monotonic()
        if now - self._verified_at < self.verify_seconds:
            return False
        if consumer.assignment():
            self._unassigned_since = None
            return True
        if self._unassigned_since is None:
            self._unassigned_since = now
        if now - self._unassigned_since >= self.unassigned_grace_seconds:
            self._unassigned_since = now
            return True
        return False

    def verify(self, consumer=None) -> bool:
        """Compare what the broker holds with what this member assumes, and report the lag of every
        partition. False when the broker lost the topics or the group's offsets: the caller builds
        a new client. True when nothing was lost, or when the broker did not answer (the poll loop
        keeps trying; the next check decides)."""
        self._verified_at = time.monotonic()
        try:
            found = self.view.topics(self.topics)
            committed = self.view.committed(self.group_id)
            for topic in self.topics:
                info = found.get(topic)
                if self._topic_ids and (info is None or info.topic_id != self._topic_ids.get(topic)):
                    log.warning("the broker lost a topic this consumer reads; starting again from the broker's "
                                "committed offsets", extra={"topic": topic, "group": self.group_id,
                                                            "topic_id_was": self._topic_ids.get(topic),
                                                            "topic_id_now": info.topic_id if info else None})
                    return False
            counts = {topic: info.partitions for topic, info in found.items() if info is not None}
            ends = self.view.end_offsets(counts, reuse_seconds=self.ends_reuse_seconds)
            begins = self.view.begin_offsets(counts)
        except KafkaError as exc:
            log.info("broker check failed; polling on", extra={"error": repr(exc)})
            return True
        if consumer is not None:
            kept = self._applied_offsets()
            stalled = {}
            if kept is not None:
                self._tell_kafka_again(consumer, committed, kept)
                stalled = self._stalled(consumer, ends, committed, begins, kept)
            if stalled:
                log.warning("nothing more of a partition this member holds is applied although the broker has "
                            "more; building a new Kafka client", extra={"group": self.group_id, "stalled": stalled})
                return False
        for key, end in ends.items():
            done = committed.get(key)
            lag = end - (done if done is not None else begins.get(key, 0))
            metrics.CONSUMER_LAG.labels(self.group_id, key[0], str(key[1])).set(max(0, lag))
            ours = self._committed.get(key)
            if (done is not None and done > end) or (ours is not None and (done is None or done < ours)):
                log.warning("the broker lost records or committed offsets; starting again from what it holds",
                            extra={"topic": key[0], "partition": key[1], "group": self.group_id,
                                   "committed_by_us": ours, "committed_on_broker": done, "end_offset": end})
                return False
        return True

    def _applied_offsets(self) -> dict[tuple[str, int], int] | None:
        """The offsets the group's database keeps for its topics as they are now (what it applied
        and skipped); None when the database cannot be read (the next check tries again)."""
        try:
            kept = database_offsets(self.engine, self.group_id)
        except TRANSIENT_ERRORS as exc:
            log.info("offsets not read from the database", extra={"error": repr(exc)})
            return None
        return {key: offset for key, (topic_id, offset) in kept.items()
                if topic_id is not None and topic_id == self._topic_ids.get(key[0])}

    def _stalled(self, consumer, ends: Mapping[tuple[str, int], int], committed: Mapping[tuple[str, int], int],
                 begins: Mapping[tuple[str, int], int], kept: Mapping[tuple[str, int], int]) -> dict[str, list[int]]:
        """The partitions this member holds whose end lies beyond what the group applied — the
        offset its database keeps, Kafka's committed offset, or the beginning — with no progress for
        ``stall_seconds`` and ``stall_polls`` polls: ``{"topic/partition": [progress, end]}``. What
        counts is what was applied, not what the client received: drills saw a group stop one record
        short of a partition's end, for minutes, with nothing said (a paused process makes no polls;
        a member that holds nothing is joining the group, and a new client would restart its join)."""
        now, held, stalled = time.monotonic(), set(), {}
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            held.add(key)
            end = ends.get(key)
            progress = max(kept.get(key, 0), committed.get(key, 0), begins.get(key, 0))
            if end is None or progress >= end:
                self._behind.pop(key, None)
                continue
            seen = self._behind.get(key)
            if seen is None or seen[0] != progress:
                self._behind[key] = (progress, now, self._polls)
            elif now - seen[1] >= self.stall_seconds and self._polls - seen[2] >= self.stall_polls:
                stalled[f"{tp.topic}/{tp.partition}"] = [progress, end]
        for key in [key for key in self._behind if key not in held]:
            del self._behind[key]
        return stalled

    def _tell_kafka_again(self, consumer, committed: Mapping[tuple[str, int], int],
                          kept: Mapping[tuple[str, int], int]) -> None:
        """Where Kafka's committed offset of a partition this member holds is behind the one its
        database keeps (for the topic as it is now) and the database's has not moved since the last
        check (no poll is about to commit it), Kafka is told again after the next poll: a commit
        lost on its way (a rebalance, the broker restarting) would otherwise leave the group short
        of the end of its topics until another record came."""
        assigned = consumer.assignment()
        if not assigned:
            return
        before, self._kept_at_last_check = self._kept_at_last_check, {}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            offset = kept.get(key)
            if offset is None:
                continue
            self._kept_at_last_check[key] = offset
            done = committed.get(key)
            if (done is None or done < offset) and before.get(key) == offset and self._to_commit.get(tp, -1) < offset:
                log.info("telling Kafka the offset the database keeps", extra={
                    "group": self.group_id, "topic": tp.topic, "partition": tp.partition, "offset": offset,
                    "committed_on_broker": done})
                self._to_commit[tp] = offset

    def poll_once(self, consumer, timeout_ms: int = 500) -> int:
        batch = consumer.poll(timeout_ms=timeout_ms)
        self.broker_ok = True
        self._polls += 1
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        count = 0
        records = [record for partition_records in batch.values() for record in partition_records]
        for partition, partition_records in batch.items():
            if partition_records:
                offsets[partition] = OffsetAndMetadata(partition_records[-1].offset + 1, "", -1)
        kept = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
        self._pace_fetches(consumer, bool(records))
        if records and self.handle_together(records, kept):
            count = len(records)
        else:
            for record in records:
                self.handle(record)
                count += 1
            if kept:
                saving = {**self._waiting, **kept}
                try:
                    with write_transaction(self.engine) as connection:
                        self._save_offsets(connection, saving)
                    self._kept(saving)
                except TRANSIENT_ERRORS as exc:  # behind is harmless: the inbox dedupes what is read again
                    log.warning("offsets not kept in the database", extra={"error": repr(exc)})
                    self._tell_kafka(kept)  # all the same, as the records are applied (as before)
        self.save_waiting_offsets()
        self._commit_applied(consumer)
        return count

    def _pace_fetches(self, consumer, received: bool) -> None:
        """The short fetch wait while records come; the long one after ``idle_after_seconds``
        without any (see ``services.kernel.kafka.make_consumer``)."""
        now = time.monotonic()
        if received:
            self._record_at = now
            wait = FETCH_WAIT_MS
        else:
            wait = IDLE_FETCH_WAIT_MS if now - self._record_at >= self.idle_after_seconds else self._fetch_wait
        if wait != self._fetch_wait and set_fetch_wait(consumer, wait):
            self._fetch_wait = wait

    def _commit_applied(self, consumer) -> None:
        """Tell Kafka what the database holds as applied and Kafka was not yet told: this poll's
        offsets, offsets a refused commit left (a rebalance, the broker away) and those a new
        assignment started at — even when no record follows, so a group ends at the end of its
        topics instead of reporting lag until the next record.

        Asynchronously: the next poll does not wait for the broker's answer (issue 23: with it an
        event's way from one service to another, p50, went from 100 to 76-81 ms). That is safe because Kafka's offsets are not where a
        member starts (the database's are) and the inbox dedupes a redelivery. A refusal puts the
        offsets back, to be sent again after a later poll (at most once a second while refused);
        only partitions still assigned are sent (another member commits its own). At most once
        every ``kafka_commit_seconds``: what is applied meanwhile goes with the next commit."""
        now = time.monotonic()
        if not self._to_commit or now < self._commit_retry_at or now < self._commit_due_at:
            return
        self._commit_due_at = now + self.kafka_commit_seconds
        offsets = self._to_commit_assigned(consumer)
        self._to_commit = {}
        if not offsets:
            return
        try:
            consumer.commit_async(offsets, callback=self._commit_answered)
        except KafkaError as exc:
            self._commit_answered(offsets, exc)

    def _to_commit_assigned(self, consumer) -> dict[TopicPartition, OffsetAndMetadata]:
        """What is still to tell Kafka, of the partitions this member holds."""
        assigned = consumer.assignment()
        return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._to_commit.items() if tp in assigned}

    def _commit_answered(self, offsets, response) -> None:
        """The broker's answer to a commit (run by the client, in a later poll)."""
        if isinstance(response, Exception):
            for tp, meta in offsets.items():
                self._to_commit.setdefault(tp, meta.offset)  # a newer offset applied since goes instead
            log.warning("offset commit failed; sent again after a later poll", extra={"error": repr(response)})
            self._commit_retry_at = time.monotonic() + 1.0
            return
        for tp, meta in offsets.items():
            key = (tp.topic, tp.partition)
            self._committed[key] = max(meta.offset, self._committed.get(key, meta.offset))

    def _commit_before_leaving(self, consumer) -> None:
        """On a clean stop: wait for what is still to tell Kafka (a few seconds at most; what is
        not told is harmless, the next member starts at the database's offsets and commits them)."""
        offsets = self._to_commit_assigned(consumer)
        if not offsets:
            return
        try:
            consumer.commit(offsets, timeout_ms=5_000)
        except Exception as exc:  # noqa: BLE001 — leaving anyway
            log.info("offsets not committed on leaving", extra={"error": repr(exc)})
