"""The outbox relay: publishes a service's events to its topic in position order.

The event table is the outbox. The relay reads pages after its checkpoint, sends each event keyed
by stream id (so one stream's events share a partition and keep their order) with the JSON
envelope as value and the type, schema version and id in headers, waits for the broker's
acknowledgement, and only then advances the checkpoint to the last position of the acknowledged
prefix. A crash or a broker outage therefore means re-sending, never losing: consumers dedupe by
event id. Run exactly one relay per service (the Kubernetes Deployment uses one replica and the
Recreate strategy).

The log is the source of truth; the broker may lose data (the local broker keeps everything in
memory and comes back empty; a Kafka topic can be deleted and created again, or truncated by an
unclean leader election). So with each checkpoint move the relay records the round it published:
its positions, the topic's id and, per partition, the first and last offsets the broker
acknowledged (``relay_rounds``, the newest ``rounds_kept``). Before a round that follows a pause
(``busy_seconds`` without a round), at least every ``verify_seconds`` while rounds follow each other
or nothing is published, and after any producer error it compares what the recorded rounds say was
acknowledged with what the broker holds now (:class:`~services.kernel.kafka.BrokerView`):
the topic is missing or has another id, or a partition ends at or before the last offset
acknowledged on it. Then it logs the loss, counts it (``cocreate_relay_broker_data_loss_total``),
moves its checkpoint back past every round the broker no longer holds in full — to the start of
the newest round of the held prefix, or of the log when even the oldest recorded round is gone
(e.g. an empty broker) — and publishes again from there. Offsets acknowledged lower than the
previous round's on the same topic mean the same (the broker lost records mid-round): that is
checked after every round, and a loss found either way makes the next round compare first. A
broker restarted between two rounds of a busy relay is noticed by the round's own producer (its
connection fails), and a partition lost that the rounds of the next second do not write to, by
the check a second later (issue 23: a check before every round, two requests to the broker, was a
quarter of a busy relay's time and of the broker's for it).

The opposite case — the topic holds more than the log — means the service's database was restored
to an earlier point: events after it are gone from the log although they are on the topic and
applied by other services, and new appends would reuse their positions for other events. So before
its first round the relay reads the last record of each partition and checks that the log holds
each one's position with the same event id (:meth:`Relay.check_log_holds_topic`). When it does
not, the relay publishes nothing and stops with :class:`LogBehindTopic`, whose message names the
position, both ids and the way out (``python -m services.<name> recover-tail``, which appends the
missing events from the topic, as they were: :mod:`services.kernel.restore`; docs/operations.md,
"Backups and restore"). An empty or recreated topic is not a restore: nothing to compare, and the
broker-loss handling above publishes the log again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa
from kafka.errors import KafkaError

from services.kernel import metrics
from services.kernel.db import Prepared, read_transaction, write_transaction
from services.kernel.eventstore import EventStore, events_table, kernel_metadata
from services.kernel.events import EnvelopeError, StoredEvent, to_micros, utc_now
from services.kernel.kafka import (
    DLQ_SUFFIX, BrokerView, TopicInfo, TopicMissing, TopicPolicy, make_producer, paced_wait,
)

log = logging.getLogger(__name__)

relay_checkpoints = sa.Table(
    "relay_checkpoints",
    kernel_metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at_us", sa.BigInteger, nullable=False),
)

relay_rounds = sa.Table(
    "relay_rounds",
    kernel_metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("first_position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("topic_id", sa.String(64), nullable=True),
    # {"partition": [first offset, last offset]} as the broker acknowledged them
    sa.Column("offsets", sa.Text, nullable=False),
    sa.Column("published_at_us", sa.BigInteger, nullable=False),
)


# What every round runs, prepared once (issue 23: built through SQLAlchemy each round they were a
# fifth of a busy relay's time).
_CHECKPOINT = Prepared(sa.select(relay_checkpoints.c.position).where(relay_checkpoints.c.name == sa.bindparam("name")))
_CHECKPOINT_MOVE = Prepared(relay_checkpoints.update().where(
    relay_checkpoints.c.name == sa.bindparam("name"), relay_checkpoints.c.position < sa.bindparam("position"))
    .values(position=sa.bindparam("position"), updated_at_us=sa.bindparam("now")))
_CHECKPOINT_ADD = Prepared(relay_checkpoints.insert().values(
    name=sa.bindparam("name"), position=sa.bindparam("position"), updated_at_us=sa.bindparam("now")))
_ROUND_ADD = Prepared(relay_rounds.insert().values(**{c.name: sa.bindparam(c.name) for c in relay_rounds.columns}))


class PublishFailed(RuntimeError):
    """The broker did not acknowledge part of a batch; the unacknowledged rest will be re-sent."""


RUNBOOK = 'docs/operations.md, "Backups and restore" (What a restore means for the event log)'


class LogBehindTopic(RuntimeError):
    """The topic holds an event at a position where the log holds none, or another event: the
    service's database was restored to an earlier point (or written to after such a restore).
    Restarting does not help; the worker stops (exit code 4) until an operator acts."""

    def __init__(self, service: str, topic: str, position: int, topic_event_id: str, log_event_id: str | None,
                 log_end: int, partition: int, offset: int) -> None:
        self.service, self.topic, self.position = service, topic, position
        self.topic_event_id, self.log_event_id, self.log_end = topic_event_id, log_event_id, log_end
        where = f"{topic} partition {partition} offset {offset}"
        if log_event_id is None:
            found = (f"position {position} is on {where} as event {topic_event_id}, but the log of {service} "
                     f"ends at position {log_end}")
        else:
            found = (f"position {position} holds event {log_event_id} in the log of {service} but event "
                     f"{topic_event_id} on {where}")
        super().__init__(
            f"{found}: the database of {service} was restored to an earlier point (or written to after "
            f"such a restore), so the log no longer holds what consumers have already received. Publishing "
            f"would put other events under positions they have seen, so the relay publishes nothing. Stop "
            f"{service}'s API and consumers, run `python -m services.{service} recover-tail` (it appends the "
            f"events that are on {topic} and not in the log, as they were), then start the relay, consumers "
            f"and API again. See {RUNBOOK}.")


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
        verify_seconds: float = 1.0,
        rounds_kept: int = 1000,
        broker_view: BrokerView | None = None,
        pace_max_seconds: float = 0.1,
    ) -> None:
        self.store = store
        self.topic = topic
        self.pace_max_seconds = pace_max_seconds  # (services.kernel.kafka.paced_wait)
        self.name = f"{store.service}->{topic}"
        self.bootstrap_servers = bootstrap_servers
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        self.topic_policy = topic_policy
        self._producer_factory = producer_factory or (lambda: make_producer(bootstrap_servers, f"relay-{store.service}"))
        self._producer = None
        self.max_backoff_seconds = max_backoff_seconds
        self.verify_seconds = verify_seconds
        self.rounds_kept = rounds_kept
        self.view = broker_view or BrokerView(bootstrap_servers, f"relay-{store.service}")
        self.broker_ok = False
        self._lag_updated_at = 0.0
        self._verified_at = float("-inf")
        # While rounds follow each other within this, the broker is compared at most every
        # verify_seconds (module docstring); a round after a longer pause compares first. A paced
        # wait (services.kernel.kafka.paced_wait) is not a pause: it is added.
        self.busy_seconds = 0.25 + pace_max_seconds
        self._round_at = float("-inf")
        self._topic: TopicInfo | None = None
        self._rounds_since_prune = 0
        # (topic id, last acknowledged offset per partition, first offset of the newest round per partition)
        self._acknowledged_cache: tuple[str | None, dict[int, int], dict[int, int]] | None = None
        self._fetched_at = float("-inf")
        self._log_checked = False  # the log holds the topic's last records (checked before the first round)

    # -- checkpoint -------------------------------------------------------------------------

    def checkpoint(self) -> int:
        with read_transaction(self.store.engine) as connection:
            row = _CHECKPOINT.first(connection, {"name": self.name})
        return (row[0] if row else 0) or 0

    def _save_checkpoint(self, connection, position: int, now: int) -> None:
        cursor = _CHECKPOINT_MOVE.run(connection, {"name": self.name, "position": position, "now": now})
        updated = cursor.rowcount
        cursor.close()
        if not updated and _CHECKPOINT.first(connection, {"name": self.name}) is None:
            _CHECKPOINT_ADD.execute(connection, {"name": self.name, "position": position, "now": now})

    def _record_round(self, first: int, last: int, offsets: dict[int, list[int]]) -> None:
        """Move the checkpoint over an acknowledged round and record what the broker acknowledged."""
        now = to_micros(utc_now())
        with write_transaction(self.store.engine) as connection:
            self._save_checkpoint(connection, last, now)
            _ROUND_ADD.execute(connection, {
                "name": self.name, "first_position": first, "last_position": last,
                "topic_id": self._topic.topic_id if self._topic else None,
                "offsets": json.dumps({str(p): span for p, span in sorted(offsets.items())}), "published_at_us": now})
            self._rounds_since_prune += 1
            if self._rounds_since_prune >= 100:
                self._rounds_since_prune = 0
                self._prune(connection)
        cached = self._acknowledged_cache
        topic_id = self._topic.topic_id if self._topic else None
        if cached is not None and cached[0] == topic_id:
            for partition, (first, offset) in offsets.items():
                cached[1][partition] = max(offset, cached[1].get(partition, -1))
                cached[2][partition] = first
        else:
            self._acknowledged_cache = None
        metrics.RELAY_CHECKPOINT.labels(self.store.service).set(last)

    def _prune(self, connection) -> None:
        r = relay_rounds
        cutoff = connection.execute(
            sa.select(r.c.first_position).where(r.c.name == self.name)
            .order_by(r.c.first_position.desc()).offset(self.rounds_kept - 1).limit(1)).scalar()
        if cutoff is not None:
            connection.execute(r.delete().where(r.c.name == self.name, r.c.first_position < cutoff))
            self._acknowledged_cache = None

    def rounds(self, limit: int | None = None) -> list[dict]:
        """The recorded rounds, newest first."""
        r = relay_rounds
        query = sa.select(r).where(r.c.name == self.name).order_by(r.c.first_position.desc())
        if limit is not None:
            query = query.limit(limit)
        with read_transaction(self.store.engine) as connection:
            rows = connection.execute(query).mappings().all()
        return [{**row, "offsets": {int(p): span for p, span in json.loads(row["offsets"]).items()}}
                for row in rows]

    def _rewind(self, position: int) -> None:
        """Move the checkpoint back to ``position``; rounds after it are no longer on the broker."""
        now = to_micros(utc_now())
        with write_transaction(self.store.engine) as connection:
            connection.execute(relay_rounds.delete().where(relay_rounds.c.name == self.name,
                                                           relay_rounds.c.first_position > position))
            updated = connection.execute(relay_checkpoints.update().where(relay_checkpoints.c.name == self.name)
                                         .values(position=position, updated_at_us=now)).rowcount
            if not updated:
                connection.execute(relay_checkpoints.insert().values(name=self.name, position=position,
                                                                     updated_at_us=now))
        self._acknowledged_cache = None
        metrics.RELAY_CHECKPOINT.labels(self.store.service).set(position)

    # -- what the broker still holds --------------------------------------------------------

    def verify(self) -> int | None:
        """Compare what the broker acknowledged with what it holds; on a loss move the checkpoint back.

        Every partition is compared with the last offset acknowledged on it in any recorded round
        (a round of a few events touches only some partitions). Creates the topic and its DLQ
        when missing (if the topic policy allows). Returns the position the checkpoint was moved
        back to, or None when nothing was lost.
        """
        self._verified_at = time.monotonic()
        self._topic = self.topic_policy.check(self.view, [self.topic, self.topic + DLQ_SUFFIX], create=True)[self.topic]
        acknowledged = self._acknowledged()
        if acknowledged is None:
            return None
        topic_id, last_offsets, newest_firsts = acknowledged
        if topic_id != self._topic.topic_id:
            return self._lost(0, reason="the topic is not the one that acknowledged them (created again)",
                              acknowledged=last_offsets)
        # ListOffsets never overstates an end but may undercount (the local broker counts from the
        # last batch's first offset; a round's batches hold only that round's records). An end at
        # or before the first offset of the newest round on a partition is a loss for certain;
        # between that and the last acknowledged offset it cannot tell, and a fetch gives the true
        # end — at most every verify_seconds, so that a busy relay does not pay for one per round.
        listed = self._ends(fetch=False)
        if all(listed.get(p, 0) > last for p, last in last_offsets.items()):
            return None
        certain = any(listed.get(p, 0) <= first for p, first in newest_firsts.items())
        if not certain and time.monotonic() - self._fetched_at < self.verify_seconds:
            return None
        ends = self._ends(fetch=True)
        if all(ends.get(p, 0) > last for p, last in last_offsets.items()):
            return None
        return self._rewind_past_lost(ends, reason="the broker holds fewer records than it acknowledged",
                                      acknowledged=last_offsets)

    def _ends(self, *, fetch: bool) -> dict[int, int]:
        if fetch:
            self._fetched_at = time.monotonic()
        assert self._topic is not None
        return {p: end for (_t, p), end in self.view.end_offsets({self.topic: self._topic.partitions},
                                                                 fetch=fetch).items()}

    def _rewind_past_lost(self, ends: dict[int, int], *, reason: str, acknowledged: dict,
                          overwritten: dict[int, int] | None = None) -> int:
        """Back past every round the broker no longer holds in full: to the start of the newest
        round of the held prefix (the start of the log when the oldest recorded round is gone).
        ``overwritten``: per partition, the first offset the broker gave again to other records."""
        held = None
        for recorded in reversed(self.rounds(limit=self.rounds_kept)):  # oldest first
            if not self._holds(recorded, ends) or any(
                    partition in recorded["offsets"] and recorded["offsets"][partition][1] >= offset
                    for partition, offset in (overwritten or {}).items()):
                break
            held = recorded
        return self._lost(0 if held is None else held["first_position"] - 1, reason=reason,
                          acknowledged=acknowledged, ends=ends)

    def _acknowledged(self) -> tuple[str | None, dict[int, int], dict[int, int]] | None:
        """The newest round's topic id and, per partition, the last offset acknowledged on it by
        any recorded round of that topic and the first offset of the newest round that wrote to it
        (kept in memory, read from the table after a change)."""
        if self._acknowledged_cache is None:
            rounds = self.rounds(limit=self.rounds_kept)
            if not rounds:
                return None
            topic_id = rounds[0]["topic_id"]
            last: dict[int, int] = {}
            firsts: dict[int, int] = {}
            for recorded in rounds:  # newest first
                if recorded["topic_id"] == topic_id:
                    for partition, (first, offset) in recorded["offsets"].items():
                        last[partition] = max(offset, last.get(partition, -1))
                        firsts.setdefault(partition, first)
            self._acknowledged_cache = (topic_id, last, firsts)
        return self._acknowledged_cache

    def _holds(self, recorded: dict, ends: dict[int, int]) -> bool:
        if self._topic is None or recorded["topic_id"] != self._topic.topic_id:
            return False
        return all(ends.get(partition, 0) > last for partition, (_first, last) in recorded["offsets"].items())

    def _lost(self, position: int, *, reason: str, acknowledged: dict | None = None, ends: dict | None = None) -> int:
        checkpoint = self.checkpoint()
        log.error("the broker lost acknowledged events; publishing again from the event store",
                  extra={"topic": self.topic, "reason": reason, "acknowledged_offsets": acknowledged,
                         "broker_end_offsets": ends, "checkpoint_from": checkpoint, "checkpoint_to": position})
        metrics.RELAY_BROKER_DATA_LOSS.labels(self.store.service, self.topic).inc()
        metrics.RELAY_REPUBLISHED.labels(self.store.service, self.topic).inc(max(0, checkpoint - position))
        self._rewind(position)
        self._drop_producer()  # a broker that lost its data lost our producer id too
        self._verified_at = self._round_at = float("-inf")  # the next round compares first
        return position

    # -- what the topic holds that the log must hold too ------------------------------------

    def check_log_holds_topic(self) -> None:
        """Raise :class:`LogBehindTopic` unless the log holds, at the position of each partition's
        last record, the event that record carries (a record that is no envelope of ours, e.g.
        written by hand, is skipped). An empty or missing topic passes: nothing was published to
        it, or the broker lost it and :meth:`verify` publishes the log again."""
        if self._topic is None:
            self.verify()
        assert self._topic is not None
        published = []  # (position, event id, partition, offset)
        for partition, record in sorted(self.view.last_records(self.topic, self._topic.partitions).items()):
            try:
                event = StoredEvent.from_json(record.value)
            except EnvelopeError as exc:
                log.warning("the last record of a partition is not an event envelope; not compared",
                            extra={"topic": self.topic, "partition": partition, "offset": record.offset,
                                   "error": str(exc)})
                continue
            published.append((event.position, event.event_id, partition, record.offset))
        if published:
            with read_transaction(self.store.engine) as connection:
                held = dict(connection.execute(
                    sa.select(events_table.c.position, events_table.c.event_id)
                    .where(events_table.c.position.in_([p[0] for p in published]))).all())
                log_end = self.store.last_position(connection=connection)
            for position, event_id, partition, offset in sorted(published, reverse=True):
                if held.get(position) != event_id:
                    refusal = LogBehindTopic(self.store.service, self.topic, position, event_id, held.get(position),
                                             log_end, partition, offset)
                    log.error("the log does not hold what the topic holds; publishing nothing",
                              extra={"topic": self.topic, "position": position, "topic_event_id": event_id,
                                     "log_event_id": held.get(position), "log_end": log_end,
                                     "partition": partition, "offset": offset, "runbook": RUNBOOK})
                    raise refusal
        self._log_checked = True

    # -- publishing -------------------------------------------------------------------------

    def _ensure_producer(self):
        if self._producer is None:
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
        """Publish one page after the checkpoint; returns how many events were acknowledged.
        Before the first, the log must hold what the topic holds (:meth:`check_log_holds_topic`)."""
        if not self._log_checked:
            self.check_log_holds_topic()
        start = self.checkpoint()
        page = self.store.read_all(start, self.batch_size)
        if not page:
            if time.monotonic() - self._verified_at >= self.verify_seconds:
                if self.verify() is not None:
                    return self.publish_once()
            self._caught_up()
            return 0
        if self._compare_before_round() and self.verify() is not None:  # a broker that lost data
            start = self.checkpoint()
            page = self.store.read_all(start, self.batch_size)
        producer = self._ensure_producer()
        # Encoded first, then sent back to back: sends spaced by the encoding each find the sender
        # thread has just taken the last batch, open a new one and wake it (a socket write and the
        # accumulator's lock per record: half the relay's time, issue 23)
        records = [(event.stream_id.encode(), event.to_json(), _headers(event)) for event in page]
        futures = [(event, producer.send(self.topic, key=key, value=value, headers=headers))
                   for event, (key, value, headers) in zip(page, records)]
        try:
            producer.flush(timeout=30)
        except KafkaError as exc:
            log.warning("flush failed", extra={"error": repr(exc)})
        acknowledged = start
        failure: BaseException | None = None
        offsets: dict[int, list[int]] = {}
        for event, future in futures:
            if not future.is_done:
                failure = PublishFailed(f"no acknowledgement for position {event.position}")
                break
            if future.failed():
                failure = future.exception
                break
            record = future.value
            span = offsets.setdefault(record.partition, [record.offset, record.offset])
            span[0], span[1] = min(span[0], record.offset), max(span[1], record.offset)
            acknowledged = event.position
        if acknowledged > start:
            overwritten = self._went_back(offsets)
            if overwritten:
                # Offsets acknowledged before were given again: the broker lost records (and this
                # round's records now sit where recorded rounds thought theirs were).
                self._rewind_past_lost(self._ends(fetch=True), overwritten=overwritten,
                                       reason="the broker acknowledged offsets it had given before",
                                       acknowledged=self._acknowledged()[1])
                return 0
            self._record_round(start + 1, acknowledged, offsets)
            self._round_at = time.monotonic()
            metrics.RELAY_PUBLISHED.labels(self.store.service, self.topic).inc(acknowledged - start)
        if failure is not None or time.monotonic() - self._lag_updated_at >= 1.0:
            self._update_lag(acknowledged)  # at most once a second; an empty page says "caught up" at once
        if failure is not None:
            raise PublishFailed(f"published up to position {acknowledged}: {failure!r}") from (
                failure if isinstance(failure, BaseException) else None)
        return acknowledged - start

    def _compare_before_round(self) -> bool:
        """Whether to compare with the broker before this round: after a pause of ``busy_seconds``
        (or none yet), a loss found, a producer error; else at most every ``verify_seconds``."""
        now = time.monotonic()
        return now - self._round_at >= self.busy_seconds or now - self._verified_at >= self.verify_seconds

    def _went_back(self, offsets: dict[int, list[int]]) -> dict[int, int]:
        """Per partition, the first offset of this round when it is not past every offset
        acknowledged before on that partition (empty when all is well)."""
        acknowledged = self._acknowledged()
        if acknowledged is None or self._topic is None or acknowledged[0] != self._topic.topic_id:
            return {}
        previous = acknowledged[1]
        return {partition: first for partition, (first, _last) in offsets.items()
                if partition in previous and first <= previous[partition]}

    def _caught_up(self) -> None:
        """No event after the checkpoint (an empty page): no lag, known without asking the log (an
        idle relay asked it twice every ``idle_seconds``)."""
        self._lag_updated_at = time.monotonic()
        metrics.RELAY_LAG_EVENTS.labels(self.store.service).set(0)
        metrics.RELAY_LAG_SECONDS.labels(self.store.service).set(0.0)

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
        try:
            while not stop.is_set():
                try:
                    if self._topic is None:
                        self.verify()  # creates the topic at start, even before the first event
                    published = self.publish_once()
                    self.broker_ok = True
                    backoff = 0.2
                    if published < self.batch_size:  # (a full page: the next one at once)
                        stop.wait(paced_wait(published, self.idle_seconds, self.pace_max_seconds))
                except (KafkaError, PublishFailed, TopicMissing, OSError) as exc:
                    self.broker_ok = False
                    metrics.RELAY_ERRORS.labels(self.store.service, self.topic).inc()
                    try:  # the lag keeps growing while the broker is away: show it
                        self._update_lag(self.checkpoint())
                    except Exception:  # noqa: BLE001 — the database may be the thing that is down
                        log.debug("lag not updated", exc_info=True)
                    log.warning("publishing failed; retrying", extra={"error": repr(exc), "backoff_s": backoff})
                    self._drop_producer()
                    self._topic = None  # after any producer error: compare with the broker again first
                    stop.wait(backoff)
                    backoff = min(self.max_backoff_seconds, backoff * 2)
        finally:
            self._drop_producer()
            self.view.close()
        log.info("relay stopped", extra={"checkpoint": self.checkpoint()})


def _headers(event: StoredEvent) -> list[tuple[str, bytes]]:
    return [
        ("event_type", event.event_type.encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("event_id", event.event_id.encode()),
    ]
