"""A reusable consumer loop for services that react to another service's events.

Exactly-once effects over at-least-once delivery:

* each message is handled in a database transaction that also inserts an inbox row
  ``(group_id, event_id)``; a redelivered event finds its row and has no second effect. The
  records of one poll share one transaction (one durable commit for up to 500 records); if any
  of them fails, that transaction is rolled back and the records are applied one at a time,
  each in its own transaction, with the retry and dead-letter rules below;
* offsets are committed to Kafka (offset + 1) only after the database commit of every message
  before them, so a crash re-delivers, never skips;
* a poison message (not an envelope, or a handler that refuses it) goes to ``<topic>.dlq`` with
  the error and its origin topic/partition/offset in headers, then consumption continues;
* a transient error (database unreachable, a concurrent writer) is retried with bounded
  exponential backoff; when the retries are spent the worker stops without committing, so the
  process supervisor restarts it and the message is delivered again. Transient failures are never
  dead-lettered: an outage must not empty the topic into the DLQ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import sqlalchemy as sa
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.engine import Connection, Engine

from services.kernel import metrics
from services.kernel.db import write_transaction
from services.kernel.errors import ConcurrencyError
from services.kernel.events import EnvelopeError, StoredEvent, to_micros, utc_now
from services.kernel.eventstore import kernel_metadata
from services.kernel.kafka import TopicPolicy, make_consumer, make_producer
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

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, ConcurrencyError, TimeoutError,
)


class ConsumerStalled(RuntimeError):
    """A transient error outlived the retries; the worker exits so it is restarted."""


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
    ) -> None:
        self.engine = engine
        self.group_id = group_id
        self.topics = list(topics)
        self.handlers = dict(handlers)
        self.bootstrap_servers = bootstrap_servers
        self.max_retries = max_retries
        self.base_backoff_seconds = base_backoff_seconds
        self.topic_policy = topic_policy
        self._dlq_producer = None
        self.broker_ok = False

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

    def handle_together(self, records) -> bool:
        """Apply a poll's records in one write transaction (one commit instead of one per record).

        Returns False, having changed nothing, when any record is not a valid envelope or any
        handler raises: the caller then applies the records one by one, with the retries and the
        dead-lettering of :meth:`handle`. Partition order is kept; records of different partitions
        are independent, so their interleaving does not matter.
        """
        try:
            events = [StoredEvent.from_json(record.value) for record in records]
        except EnvelopeError:
            return False
        outcomes: list[tuple[object, StoredEvent, str]] = []
        try:
            with write_transaction(self.engine) as connection:
                wanted = [e.event_id for e in events
                          if (self.handlers.get(e.event_type) or self.handlers.get(ANY_EVENT)) is not None]
                seen: set[str] = set()
                for start in range(0, len(wanted), 500):
                    seen.update(connection.execute(sa.select(inbox_table.c.event_id).where(
                        inbox_table.c.group_id == self.group_id,
                        inbox_table.c.event_id.in_(wanted[start:start + 500]))).scalars())
                now = to_micros(utc_now())
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
                    inbox_rows.append({"group_id": self.group_id, "event_id": event.event_id, "topic": record.topic,
                                       "partition": record.partition, "offset": record.offset,
                                       "processed_at_us": now})
                    token = correlation_id_var.set(event.metadata.get("correlation_id") or event.event_id)
                    try:
                        handler(connection, event)
                    finally:
                        correlation_id_var.reset(token)
                    outcomes.append((record, event, "handled"))
                if inbox_rows:  # one statement for the batch, in the same transaction as the effects
                    connection.execute(inbox_table.insert(), inbox_rows)
        except Exception as exc:  # rolled back: the records are applied one by one instead
            log.info("batch not applied together; applying one by one", extra={"error": repr(exc)})
            return False
        for record, event, outcome in outcomes:
            if outcome == "duplicate":
                metrics.MESSAGES_DUPLICATE.labels(self.group_id, record.topic).inc()
            else:  # handled, or ignored (no handler), counted as handled as in handle()
                metrics.MESSAGES_HANDLED.labels(self.group_id, record.topic, event.event_type).inc()
        return True

    def dead_letter(self, record, reason: str) -> None:
        log.error("dead-lettering message", extra={"topic": record.topic, "partition": record.partition,
                                                    "offset": record.offset, "reason": reason})
        headers = list(record.headers or []) + [
            ("dlq.error", reason[:2000].encode()),
            ("dlq.origin.topic", record.topic.encode()),
            ("dlq.origin.partition", str(record.partition).encode()),
            ("dlq.origin.offset", str(record.offset).encode()),
            ("dlq.group", self.group_id.encode()),
        ]
        if self._dlq_producer is None:
            self._dlq_producer = make_producer(self.bootstrap_servers, f"dlq-{self.group_id}")
        # Wait for the acknowledgement: the offset must not be committed past an unsaved message.
        self._dlq_producer.send(f"{record.topic}.dlq", key=record.key, value=record.value,
                                headers=headers).get(timeout=30)
        metrics.MESSAGES_DEAD_LETTERED.labels(self.group_id, record.topic).inc()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        consumer = None
        backoff = 0.5
        try:
            while not stop.is_set():
                if consumer is None:
                    try:
                        self.topic_policy.ensure(self.bootstrap_servers,
                                                 self.topics + [f"{t}.dlq" for t in self.topics])
                        consumer = make_consumer(self.bootstrap_servers, self.group_id, self.topics,
                                                 client_id=f"consumer-{self.group_id}")
                        backoff = 0.5
                        log.info("consumer started", extra={"group": self.group_id, "topics": self.topics})
                    except (KafkaError, OSError) as exc:
                        self.broker_ok = False
                        log.warning("broker not reachable; retrying", extra={"error": repr(exc)})
                        stop.wait(backoff)
                        backoff = min(5.0, backoff * 2)
                        continue
                self.poll_once(consumer)
        finally:
            if consumer is not None:
                consumer.close(autocommit=False)
            if self._dlq_producer is not None:
                self._dlq_producer.close(timeout=5)

    def poll_once(self, consumer, timeout_ms: int = 500) -> int:
        batch = consumer.poll(timeout_ms=timeout_ms)
        self.broker_ok = True
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        count = 0
        records = [record for partition_records in batch.values() for record in partition_records]
        if len(records) > 1 and self.handle_together(records):
            count = len(records)
        else:
            for record in records:
                self.handle(record)
                count += 1
        for partition, partition_records in batch.items():
            if partition_records:
                offsets[partition] = OffsetAndMetadata(partition_records[-1].offset + 1, "", -1)
        if offsets:
            try:
                consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The inbox makes the redelivery that follows harmless.
                log.warning("offset commit failed", extra={"error": repr(exc)})
        self._update_lag(consumer)
        return count

    def _update_lag(self, consumer) -> None:
        for partition in consumer.assignment():
            highwater = consumer.highwater(partition)
            if highwater is None:
                continue
            try:
                position = consumer.position(partition, timeout_ms=1000)
            except KafkaError:
                continue
            metrics.CONSUMER_LAG.labels(self.group_id, partition.topic, str(partition.partition)).set(
                max(0, highwater - position))
