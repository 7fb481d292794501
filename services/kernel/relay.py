"""The outbox relay: publishes a service's events to its topic in position order.

The event table is the outbox. The relay reads pages after its checkpoint, sends each event keyed
by stream id (so one stream's events share a partition and keep their order) with the JSON
envelope as value and the type, schema version and id in headers, waits for the broker's
acknowledgement, and only then advances the checkpoint to the last position of the acknowledged
prefix. A crash or a broker outage therefore means re-sending, never losing: consumers dedupe by
event id. Run exactly one relay per service (the Kubernetes Deployment uses one replica and the
Recreate strategy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from kafka.errors import KafkaError

from services.kernel import metrics
from services.kernel.db import read_transaction, write_transaction
from services.kernel.eventstore import EventStore, kernel_metadata
from services.kernel.events import StoredEvent, to_micros, utc_now
from services.kernel.kafka import TopicPolicy, make_producer

log = logging.getLogger(__name__)

relay_checkpoints = sa.Table(
    "relay_checkpoints",
    kernel_metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at_us", sa.BigInteger, nullable=False),
)


class PublishFailed(RuntimeError):
    """The broker did not acknowledge part of a batch; the unacknowledged rest will be re-sent."""


class Relay:
    def __init__(
        self,
        store: EventStore,
        *,
        topic: str,
        bootstrap_servers: str,
        batch_size: int = 2000,
        idle_seconds: float = 0.05,
        topic_policy: TopicPolicy = TopicPolicy(),
        producer_factory: Callable | None = None,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.topic = topic
        self.name = f"{store.service}->{topic}"
        self.bootstrap_servers = bootstrap_servers
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.topic_policy = topic_policy
        self._producer_factory = producer_factory or (lambda: make_producer(bootstrap_servers, f"relay-{store.service}"))
        self._producer = None
        self.max_backoff_seconds = max_backoff_seconds
        self.broker_ok = False
        self._lag_updated_at = 0.0

    # -- checkpoint -------------------------------------------------------------------------

    def checkpoint(self) -> int:
        with read_transaction(self.store.engine) as connection:
            value = connection.execute(
                sa.select(relay_checkpoints.c.position).where(relay_checkpoints.c.name == self.name)
            ).scalar()
        return value or 0

    def _save_checkpoint(self, position: int) -> None:
        now = to_micros(utc_now())
        with write_transaction(self.store.engine) as connection:
            updated = connection.execute(
                relay_checkpoints.update()
                .where(relay_checkpoints.c.name == self.name, relay_checkpoints.c.position < position)
                .values(position=position, updated_at_us=now)
            ).rowcount
            if not updated:
                exists = connection.execute(
                    sa.select(relay_checkpoints.c.position).where(relay_checkpoints.c.name == self.name)
                ).first()
                if exists is None:
                    connection.execute(relay_checkpoints.insert().values(
                        name=self.name, position=position, updated_at_us=now))
        metrics.RELAY_CHECKPOINT.labels(self.store.service).set(position)

    # -- publishing -------------------------------------------------------------------------

    def _ensure_producer(self):
        if self._producer is None:
            self.topic_policy.ensure(self.bootstrap_servers, [self.topic])
            self._producer = self._producer_factory()
        return self._producer

    def _drop_producer(self) -> None:
        # A fresh producer gets a fresh producer id: needed after UnknownProducerIdError (a broker
        # that lost its state) and harmless after any other failure.
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # closing a broken client must not mask the original failure
                log.debug("closing producer failed", exc_info=True)
            self._producer = None

    def publish_once(self) -> int:
        """Publish one page after the checkpoint; returns how many events were acknowledged."""
        start = self.checkpoint()
        page = self.store.read_all(start, self.batch_size)
        if not page:
            self._update_lag(start)
            return 0
        producer = self._ensure_producer()
        futures = [(event, producer.send(self.topic, key=event.stream_id.encode(), value=event.to_json(),
                                         headers=_headers(event))) for event in page]
        try:
            producer.flush(timeout=30)
        except KafkaError as exc:
            log.warning("flush failed", extra={"error": repr(exc)})
        acknowledged = start
        failure: BaseException | None = None
        for event, future in futures:
            if not future.is_done:
                failure = PublishFailed(f"no acknowledgement for position {event.position}")
                break
            if future.failed():
                failure = future.exception
                break
            acknowledged = event.position
        if acknowledged > start:
            self._save_checkpoint(acknowledged)
            metrics.RELAY_PUBLISHED.labels(self.store.service, self.topic).inc(acknowledged - start)
        if failure is not None or len(page) < self.batch_size or time.monotonic() - self._lag_updated_at >= 1.0:
            self._update_lag(acknowledged)  # while draining a backlog, at most once a second
        if failure is not None:
            raise PublishFailed(f"published up to position {acknowledged}: {failure!r}") from (
                failure if isinstance(failure, BaseException) else None)
        return acknowledged - start

    def _update_lag(self, checkpoint: int) -> None:
        self._lag_updated_at = time.monotonic()
        last = self.store.last_position()
        metrics.RELAY_LAG_EVENTS.labels(self.store.service).set(max(0, last - checkpoint))
        seconds = 0.0
        if last > checkpoint:
            oldest = self.store.occurred_at_of(checkpoint + 1)
            if oldest is not None:
                seconds = max(0.0, (utc_now() - oldest).total_seconds())
        metrics.RELAY_LAG_SECONDS.labels(self.store.service).set(seconds)

    def run(self, stop: threading.Event) -> None:
        log.info("relay started", extra={"topic": self.topic, "checkpoint": self.checkpoint()})
        backoff = 0.2
        while not stop.is_set():
            try:
                self._ensure_producer()  # creates the topic at start, even before the first event
                published = self.publish_once()
                self.broker_ok = True
                backoff = 0.2
                if published < self.batch_size:
                    stop.wait(self.idle_seconds)
            except (KafkaError, PublishFailed, OSError) as exc:
                self.broker_ok = False
                metrics.RELAY_ERRORS.labels(self.store.service, self.topic).inc()
                try:  # the lag keeps growing while the broker is away: show it
                    self._update_lag(self.checkpoint())
                except Exception:  # noqa: BLE001 — the database may be the thing that is down
                    log.debug("lag not updated", exc_info=True)
                log.warning("publishing failed; retrying", extra={"error": repr(exc), "backoff_s": backoff})
                self._drop_producer()
                stop.wait(backoff)
                backoff = min(self.max_backoff_seconds, backoff * 2)
        self._drop_producer()
        log.info("relay stopped", extra={"checkpoint": self.checkpoint()})


def _headers(event: StoredEvent) -> list[tuple[str, bytes]]:
    return [
        ("event_type", event.event_type.encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("event_id", event.event_id.encode()),
    ]
