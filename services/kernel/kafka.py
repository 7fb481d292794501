"""Kafka clients as the workers use them. API processes never import this module's clients.

Time-outs are short on purpose: a relay or consumer that cannot reach the broker should notice
within seconds, back off and retry, not hang for the library's default minute.

Topics are only ever created on purpose. A broker may create a topic whenever a client's metadata
request names it (the local tansu does, with 4 partitions, whatever the client asks), so:

* every client here is built with ``allow_auto_create_topics=False``, and :func:`no_auto_create`
  makes sure kafka-python really sends it (both brokers honour it then);
* consumers subscribe by pattern, whose metadata requests name no topic;
* every worker checks with the admin client (``describe_topics`` creates nothing) that each topic
  it uses exists with the configured partition count before it subscribes or produces
  (:meth:`TopicPolicy.check`); only the relay creates a missing topic, its own and its DLQ;
* a topic with another partition count stops the worker with :class:`TopicMismatch`, whose
  message names the topic, both counts and the fix.

:class:`BrokerView` answers what the broker holds now: topic ids (a recreated topic has a new
one), end offsets, a group's committed offsets, and the records themselves (a group-less reader:
:meth:`BrokerView.records`, :meth:`BrokerView.last_records`). End offsets are the high watermark of a fetch
response, not of ``ListOffsets``: the local broker answers ``ListOffsets(latest)`` with the base
offset of the last record batch plus one, which undercounts whenever records were batched.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import DefaultPartitioner, murmur2

log = logging.getLogger(__name__)

CLIENT_TIMEOUTS = {"request_timeout_ms": 10_000}
# kafka-python's own metrics (sensors recorded on every request, fetch and record batch) are read by
# nobody here — the workers export their own (services.kernel.metrics) —, so they are not kept.
CLIENT_METRICS = {"metrics_enabled": False}
# The admin client's bootstrap (30 s by default) and reconnect back-off (up to 30 s): a worker
# probing a broker that is away should hear "no" within seconds and find it soon after it is back.
ADMIN_TIMEOUTS = {**CLIENT_TIMEOUTS, "bootstrap_timeout_ms": 5_000, "reconnect_backoff_max_ms": 1_000}
DLQ_SUFFIX = ".dlq"


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than the configuration says: the worker stops."""


class TopicMissing(RuntimeError):
    """A topic the worker needs does not exist (yet); the worker waits for it."""


def no_auto_create(client):
    """Make the client's metadata requests really say ``allow_auto_topic_creation=false``.

    kafka-python 3.0 accepts ``allow_auto_create_topics`` but does not pass it on to the cluster
    metadata its requests are built from, so every client would ask the broker to create any
    topic it names. Both brokers we run honour the flag once it is sent."""
    from kafka.cluster import ClusterMetadata

    clusters = [value for value in vars(client).values() if isinstance(value, ClusterMetadata)]
    if not clusters:
        raise RuntimeError(f"no cluster metadata found on {type(client).__name__}: kafka-python changed; "
                           "check that allow_auto_create_topics=False reaches its metadata requests")
    for cluster in clusters:
        cluster.config["allow_auto_create_topics"] = False
    return client


def keep_completed_joins(consumer: KafkaConsumer) -> KafkaConsumer:
    """Make a group member use a join the broker completed while no ``poll`` was waiting for it.

    kafka-python 3.0 runs a member's JoinGroup and SyncGroup as one task on its network thread;
    ``poll`` waits for it at most its own timeout and leaves it running. The next ``poll`` awaits
    the same task if it is still running — but when it has finished in between, the library drops
    its answer (the assignment) and sends a new JoinGroup, which starts another round. A member
    that does anything between polls (the consumer checks the broker, writes its offsets) lost its
    assignment whenever the round ended in that gap; the local broker makes each round last 3 s,
    so members joined 2 to 11 times, and one that polled 200 ms with a second between polls never
    got an assignment at all (13 joins in 40 s: ``tests/integration/test_consumer.py``,
    ``test_a_join_the_broker_completes_between_two_polls_is_used``).

    Here the finished task's assignment is applied as the library applies one it awaited (the same
    state changes, then its ``_on_join_complete_async``: partitions assigned, the listener called)
    — only while it is still the member's: the member is still joining under the generation the
    task gave it, and the task finished less than the session time-out less one heartbeat interval
    ago (no heartbeat goes out during a join: after longer, the broker may have dropped the member
    and given its partitions to another). Otherwise, and for a failed task, the library goes on as
    before (a new JoinGroup). Raises where the client is not built the way this relies on: another
    kafka-python needs this looked at again."""
    from kafka.coordinator.base import MemberState

    coordinator = getattr(consumer, "_coordinator", None)
    needed = ("_join_task", "rejoining", "rejoin_needed", "state", "_lock", "_generation", "config",
              "_enable_heartbeat", "_on_join_complete_async", "join_group_async", "_do_join_and_sync_async")
    if coordinator is None or not all(hasattr(coordinator, name) for name in needed):
        raise RuntimeError("kafka-python changed how a group member joins; check whether a join that ends "
                           "between two polls is still dropped (services.kernel.kafka.keep_completed_joins)")
    plain_join, plain_round = coordinator.join_group_async, coordinator._do_join_and_sync_async
    fresh_for = (coordinator.config["session_timeout_ms"] - coordinator.config["heartbeat_interval_ms"]) / 1000
    finished = {"at": None}  # when the last join round's task ended, on the network thread

    async def do_join_and_sync_async():
        finished["at"] = None
        try:
            return await plain_round()
        finally:
            finished["at"] = time.monotonic()

    async def join_group_async(timeout_ms=None):
        task = coordinator._join_task
        if task is not None and task.is_done and task.succeeded() and coordinator.rejoining:
            generation, ended = coordinator._generation, finished["at"]
            if (coordinator.state is MemberState.REBALANCING and not generation.is_lost()
                    and generation.protocol is not None
                    and ended is not None and time.monotonic() - ended < fresh_for):
                coordinator._join_task = None
                with coordinator._lock:
                    coordinator.rejoining = False
                    coordinator.rejoin_needed = False
                    coordinator.state = MemberState.STABLE
                    coordinator._enable_heartbeat()
                log.debug("a join completed between two polls is used", extra={"group": coordinator.group_id})
                await coordinator._on_join_complete_async(generation.generation_id, generation.member_id,
                                                          generation.protocol, task.value)
                return True
            log.info("a join completed between two polls is too old to use, or no longer the member's; "
                     "joining again", extra={"group": coordinator.group_id})
        return await plain_join(timeout_ms=timeout_ms)

    coordinator._do_join_and_sync_async = do_join_and_sync_async
    coordinator.join_group_async = join_group_async
    return consumer


class KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner — a keyed record goes to the partition the Java client
    would choose: murmur2 of the key, modulo the partition count — with each key's hash remembered
    (at most :attr:`KEYS_KEPT`). The hash is pure Python there, a few microseconds a record; a relay
    sends each stream's events under the same key, one after the other (issue 23: an eighth of
    the relay's time). A record without a key goes where the default partitioner sends it."""

    KEYS_KEPT = 16_384

    def __init__(self) -> None:
        self._hash = functools.lru_cache(maxsize=self.KEYS_KEPT)(murmur2)

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:  # no key, or a topic the metadata does not hold: as the default does
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        ordered = sorted(partitions)
        return ordered[(self._hash(bytes(serialized_key)) & 0x7FFFFFFF) % len(ordered)]


def make_producer(bootstrap_servers: str, client_id: str) -> KafkaProducer:
    """Idempotent producer, acks from all in-sync replicas, order kept per partition; keyed
    records partitioned as kafka-python's default does, each key hashed once (:class:`KeyHashPartitioner`)."""
    return no_auto_create(KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        client_id=client_id,
        partitioner=KeyHashPartitioner(),
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,
        linger_ms=5,
        max_block_ms=10_000,
        delivery_timeout_ms=30_000,
        retry_backoff_ms=200,
        allow_auto_create_topics=False,
        **CLIENT_TIMEOUTS,
        **CLIENT_METRICS,
    ))


FETCH_WAIT_MS = 100  # while records flow (make_consumer)
MAX_POLL_RECORDS = 500  # a poll returns at most this many (make_consumer); a full one means more are waiting
# While none came for a while (EventConsumer.poll_once): each of the platform's four consumers
# idle with 100 ms took 2.3–2.6% of a core (the broker 4.4% in all), most of it in asking; with
# 300 ms, 1.5–1.6% (the broker 3.0%). Not longer: the fetch the client already sent when records come
# again keeps the idle wait, and on the local broker the first records wait up to half of it.
IDLE_FETCH_WAIT_MS = 300


# After a busy round a relay or consumer waits a little before the next, in proportion to what the
# round held, so that the next one gathers more: each round costs kafka-python, the broker and our
# bookkeeping about the same whatever it holds (a consumer's fetch of 23 records at 400 ballots/s took
# about 3 ms of CPU, 130 µs a record, where records fetched in bulk take 7-9 µs). At 700-800 ballots/s
# on 2 cores, 2 ms an event up to 100 ms took the pipeline from 0.43-0.47 to 0.32-0.36 ms of CPU per
# ballot and the broker from 0.13-0.17 to 0.09-0.11 (issue 23); up to 200 ms, to 0.25-0.28 and
# 0.06-0.07 and the ballots' rate up by a twentieth, but one full `make bench` with it showed writes'
# p99 at half the peak near 95 ms (not seen again in a targeted run): 100 ms stays the default. A
# round of a few events (100 commands/s: about 5 every 50 ms) waits no longer than the next one
# takes to come anyway.
PACE_SECONDS_PER_EVENT = 0.002


def paced_wait(events: int, floor_seconds: float, max_seconds: float) -> float:
    """How long to wait after a round that held ``events``: 2 ms each, at most ``max_seconds``
    (``PIPELINE_PACE_MAX_SECONDS``; 0: no pacing), and never less than ``floor_seconds`` (a relay's
    idle poll interval, which it waited after every round that did not fill a page before). Not
    called after a full round (a relay's page, a consumer's ``MAX_POLL_RECORDS``): a backlog goes on at once."""
    return max(floor_seconds, min(max_seconds, events * PACE_SECONDS_PER_EVENT))


def set_fetch_wait(consumer: KafkaConsumer, wait_ms: int) -> bool:
    """Change how long the broker may hold ``consumer``'s next fetches (kafka-python reads its
    fetcher's ``fetch_max_wait_ms`` as it builds each fetch). False, changing nothing, where the
    client keeps it elsewhere (another kafka-python: ``tests/integration/test_consumer.py`` says so)."""
    config = getattr(getattr(consumer, "_fetcher", None), "config", None)
    if not isinstance(config, dict) or "fetch_max_wait_ms" not in config:
        return False
    config["fetch_max_wait_ms"] = wait_ms
    return True


def make_consumer(bootstrap_servers: str, group_id: str, topics: Iterable[str], client_id: str,
                  listener: Any = None) -> KafkaConsumer:
    """Manual-commit consumer subscribed by pattern to exactly ``topics``; short session
    time-outs so a group join takes seconds. ``listener``: a ``ConsumerRebalanceListener``."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers.split(","),
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        allow_auto_create_topics=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=60_000,
        max_poll_records=MAX_POLL_RECORDS,
        # How long the broker may hold a fetch while no record is there. Kafka answers as soon as
        # one arrives; the local tansu answers an idle consumer's fetch at once too, but while
        # records flow it holds each fetch for up to half this time (records sent every 10 ms
        # reached a consumer after 130 ms at the median with 500 here, 26 ms with 100; an event's
        # way from one service to another in `make bench`, 170 ms against 75). An idle consumer
        # asks less often (IDLE_FETCH_WAIT_MS, set by EventConsumer while nothing comes).
        fetch_max_wait_ms=FETCH_WAIT_MS,
        # A pattern subscription finds its topics in the next metadata refresh: soon, not in 5 min.
        metadata_max_age_ms=1_000,
        **CLIENT_TIMEOUTS,
        **CLIENT_METRICS,
    )
    no_auto_create(consumer)
    keep_completed_joins(consumer)
    consumer.subscribe(pattern=topics_pattern(topics), listener=listener)
    return consumer


def topics_pattern(topics: Iterable[str]) -> str:
    """A regular expression matching exactly these topic names."""
    return "^(" + "|".join(re.escape(t) for t in sorted(topics)) + ")$"


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    name: str
    topic_id: str | None
    partitions: int


class FetchedEnds:
    """The end offsets a broker view fetched, each with the ``ListOffsets`` answer and the topic id
    it was fetched under, given again while both are the same (``BrokerView.end_offsets``)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # (topic, partition) -> (topic id, ListOffsets answer, fetched end, when)
        self._kept: dict[tuple[str, int], tuple[str | None, int, int, float]] = {}

    def reusable(self, listed: Mapping[tuple[str, int], int], topic_ids: Mapping[str, str | None],
                 reuse_seconds: float) -> dict[tuple[str, int], int] | None:
        """The ends kept for every partition of ``listed`` (ListOffsets answers), or None."""
        if reuse_seconds <= 0:
            return None
        now, ends = self._clock(), {}
        for key, answer in listed.items():
            kept = self._kept.get(key)
            if kept is None or kept[0] != topic_ids.get(key[0]) or kept[1] != answer or now - kept[3] >= reuse_seconds:
                return None
            ends[key] = kept[2]
        return ends

    def keep(self, listed: Mapping[tuple[str, int], int], fetched: Mapping[tuple[str, int], int],
             topic_ids: Mapping[str, str | None]) -> None:
        now = self._clock()
        for key, end in fetched.items():
            self._kept[key] = (topic_ids.get(key[0]), listed[key], end, now)


class BrokerView:
    """What the broker holds now, asked without creating anything: one admin client kept open
    between calls, and a group-less consumer for fetch high watermarks, opened per question (and
    its answers reused while nothing was appended, where the caller asks: :class:`FetchedEnds`)."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self._admin: KafkaAdminClient | None = None
        self._topic_ids: dict[str, str | None] = {}  # as :meth:`topics` last saw them
        self._fetched = FetchedEnds()

    def _admin_client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers.split(","),
                                           client_id=f"{self.client_id}-admin", **ADMIN_TIMEOUTS)
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except Exception:  # closing a broken client must not mask what broke it
                log.debug("closing a broker client failed", exc_info=True)
        self._admin = None

    def _ask(self, question: Callable[[KafkaAdminClient], Any]) -> Any:
        """One admin request; a failed one closes the client, so the next starts afresh."""
        try:
            return question(self._admin_client())
        except Exception:
            self.close()
            raise

    def _listed(self, partitions: Mapping[str, int], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        wanted = [TopicPartition(topic, p) for topic, count in partitions.items() for p in range(count)]
        listed = self._ask(lambda admin: admin.list_partition_offsets({tp: spec for tp in wanted}))
        return {(tp.topic, tp.partition): listed[tp].offset for tp in wanted}

    def topics(self, names: Iterable[str]) -> dict[str, TopicInfo | None]:
        """Each topic's id and partition count, or None when the broker does not have it."""
        found: dict[str, TopicInfo | None] = {}
        described = self._ask(lambda admin: admin.describe_topics(list(names)))
        for topic in described:
            if topic.get("error_code") or not topic.get("partitions"):
                found[topic["name"]] = None
            else:
                found[topic["name"]] = TopicInfo(topic["name"], topic.get("topic_id"), len(topic["partitions"]))
        for name, info in found.items():
            self._topic_ids[name] = info.topic_id if info is not None else None
        return found

    def create(self, topics: Mapping[str, int], replication_factor: int) -> None:
        try:
            self._ask(lambda admin: admin.create_topics(
                {name: {"num_partitions": n, "replication_factor": replication_factor} for name, n in topics.items()}))
            log.info("created topics", extra={"topics": dict(topics)})
        except TopicAlreadyExistsError:
            pass

    def end_offsets(self, partitions: Mapping[str, int], beyond: Mapping[tuple[str, int], int] | None = None,
                    timeout: float = 5.0, fetch: bool = True, reuse_seconds: float = 0.0) -> dict[tuple[str, int], int]:
        """Each partition's end offset (the offset the next record will get), for topics that
        exist: ``{topic: partition count}`` in, ``{(topic, partition): end}`` out.

        ``ListOffsets`` never overstates the end, so when it already lies beyond each offset of
        ``beyond`` that answer is enough; otherwise a fetch near the end gives the high watermark
        (unless ``fetch`` is false: then the ``ListOffsets`` answer, a lower bound, is returned).
        The fetching consumer is closed at once: a client that keeps a topic in its metadata asks
        for it again after a broker restart, and the local broker would create it then.

        ``reuse_seconds``: the ends fetched before are given again, without a fetch, while for
        every partition ``ListOffsets`` answers what it answered then, the topics have the ids
        :meth:`topics` saw then, and the fetch is younger than this. A batch appended moves that
        answer: Kafka's is the end itself; the local broker's, one past the first offset of the
        last batch (measured: 0 for an empty partition, 1 after a first batch of 3, 4 after one
        more record; ``tests/integration/test_broker_recovery.py`` holds it to that), and a new
        batch starts at the old end. Issue 23: an idle consumer's check every two seconds built a
        fetching client each time, 12 ms of CPU.
        """
        ends = self._listed(partitions, OffsetSpec.LATEST)
        if not fetch or (beyond is not None and all(ends[key] > beyond.get(key, -1) for key in ends)):
            return ends
        reused = self._fetched.reusable(ends, self._topic_ids, reuse_seconds)
        if reused is not None:
            return reused
        fetched = self._fetch_ends(ends, partitions, timeout)
        self._fetched.keep(ends, fetched, self._topic_ids)
        return fetched

    def _fetch_ends(self, ends: dict[tuple[str, int], int], partitions: Mapping[str, int],
                    timeout: float) -> dict[tuple[str, int], int]:
        """The high watermarks, from a fetch at each listed end (:meth:`end_offsets`)."""
        wanted = [TopicPartition(topic, p) for topic, p in ends]
        probe = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers.split(","), client_id=f"{self.client_id}-probe",
            group_id=None, enable_auto_commit=False, auto_offset_reset="none",
            allow_auto_create_topics=False, fetch_max_wait_ms=10, max_partition_fetch_bytes=65_536,
            **ADMIN_TIMEOUTS, **CLIENT_METRICS)
        no_auto_create(probe)
        try:
            probe.assign(wanted)
            for tp in wanted:  # at most the last batch comes back; the answer carries the watermark
                probe.seek(tp, ends[(tp.topic, tp.partition)])
            deadline = time.monotonic() + timeout
            while True:
                probe.poll(timeout_ms=100)
                marks = {tp: probe.highwater(tp) for tp in wanted}
                if all(mark is not None for mark in marks.values()):
                    return {(tp.topic, tp.partition): marks[tp] for tp in wanted}
                if time.monotonic() > deadline:
                    raise KafkaError(f"no high watermark for {sorted(partitions)} within {timeout}s")
        finally:
            probe.close()

    def begin_offsets(self, partitions: Mapping[str, int]) -> dict[tuple[str, int], int]:
        return self._listed(partitions, OffsetSpec.EARLIEST)

    def records(self, topic: str, partitions: int, start: Mapping[int, int] | None = None,
                timeout: float = 30.0) -> Iterator[Any]:
        """Every record of ``topic`` from ``start`` (an offset per partition; the beginning where
        none is given) up to each partition's end as it is when called, in offset order within a
        partition. A group-less reader: it commits nothing and, since the topic is looked up first
        and the reader closed at the end, creates nothing. ``timeout`` bounds the wait for the
        next records (KafkaError when it passes)."""
        ends = {p: end for (_t, p), end in self.end_offsets({topic: partitions}).items()}
        begins = {p: begin for (_t, p), begin in self.begin_offsets({topic: partitions}).items()}
        wanted = {p: max(begins[p], (start or {}).get(p, begins[p])) for p in range(partitions)}
        left = {p for p in range(partitions) if wanted[p] < ends[p]}
        if not left:
            return
        reader = no_auto_create(KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers.split(","), client_id=f"{self.client_id}-reader",
            group_id=None, enable_auto_commit=False, auto_offset_reset="none",
            allow_auto_create_topics=False, fetch_max_wait_ms=100, **ADMIN_TIMEOUTS, **CLIENT_METRICS))
        try:
            assigned = {p: TopicPartition(topic, p) for p in sorted(left)}
            reader.assign(list(assigned.values()))
            for p, tp in assigned.items():
                reader.seek(tp, wanted[p])
            deadline = time.monotonic() + timeout
            while left:
                batch = reader.poll(timeout_ms=200)
                for tp, fetched in batch.items():
                    for record in fetched:
                        if record.offset < ends[tp.partition]:
                            yield record
                    if fetched:
                        deadline = time.monotonic() + timeout
                left = {p for p in left if reader.position(assigned[p]) < ends[p]}
                if left and time.monotonic() > deadline:
                    raise KafkaError(f"{topic}: no records from partitions {sorted(left)} within {timeout}s")
        finally:
            reader.close()

    def last_records(self, topic: str, partitions: int) -> dict[int, Any]:
        """The last record of each partition of ``topic`` that holds any: ``{partition: record}``."""
        ends = {p: end for (_t, p), end in self.end_offsets({topic: partitions}).items()}
        last: dict[int, Any] = {}
        for record in self.records(topic, partitions, {p: end - 1 for p, end in ends.items() if end > 0}):
            last[record.partition] = record
        return last

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets on the broker: ``{(topic, partition): offset}``."""
        offsets = self._ask(lambda admin: admin.list_group_offsets(group_id)).get(group_id, {})
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
                if meta is not None and meta.offset >= 0}


@dataclasses.dataclass(frozen=True)
class TopicPolicy:
    """Which partition counts topics must have, and whether the relay creates its missing ones
    (off when Strimzi's ``KafkaTopic``s manage them)."""

    create: bool = True
    partitions: int = 3
    replication_factor: int = 1
    dlq_partitions: int = 1

    def expected_partitions(self, topic: str) -> int:
        return self.dlq_partitions if topic.endswith(DLQ_SUFFIX) else self.partitions

    def check(self, view: BrokerView, topics: Iterable[str], *, create: bool = False) -> dict[str, TopicInfo]:
        """Every topic exists with its configured partition count; creates the missing ones when
        ``create`` (the relay, for its own topics) and this policy allow it.

        Raises :class:`TopicMismatch` for a topic with another count and :class:`TopicMissing`
        for a topic that does not exist and is not ours to create.
        """
        names = list(topics)
        found = view.topics(names)
        missing = [name for name in names if found.get(name) is None]
        if missing and create and self.create:
            view.create({name: self.expected_partitions(name) for name in missing}, self.replication_factor)
            found = view.topics(names)
            missing = [name for name in names if found.get(name) is None]
        for name in names:
            info = found.get(name)
            if info is not None and info.partitions != self.expected_partitions(name):
                raise TopicMismatch(
                    f"topic {name} has {info.partitions} partitions but this worker is configured for "
                    f"{self.expected_partitions(name)} "
                    f"({'COCREATE_KAFKA_DLQ_PARTITIONS' if name.endswith(DLQ_SUFFIX) else 'COCREATE_KAFKA_TOPIC_PARTITIONS'}). "
                    f"Fix: set that variable to {info.partitions} if the topic is right, or delete the topic and "
                    f"let the relay create it again (events are re-published from the event store) — a topic "
                    f"created by accident, e.g. by a client that named it before its relay created it, has the "
                    f"broker's default count.")
        if missing:
            raise TopicMissing(f"topics not on the broker yet: {', '.join(missing)}"
                               + ("" if create and self.create else " (waiting for their relay or KafkaTopic)"))
        return {name: found[name] for name in names}  # type: ignore[misc]


def ensure_topics(bootstrap_servers: str, topics: Iterable[str], policy: TopicPolicy = TopicPolicy()) -> dict[str, TopicInfo]:
    """Create the topics that do not exist yet, with the policy's counts (``.dlq`` topics with its
    DLQ count), and check the counts of those that do: what a relay does for its own topics."""
    view = BrokerView(bootstrap_servers, "cocreate-admin")
    try:
        return policy.check(view, topics, create=True)
    finally:
        view.close()


def broker_reachable(bootstrap_servers: str) -> None:
    """Raise unless the broker answers a metadata request (for all topics: it names none)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="cocreate-probe",
                             **ADMIN_TIMEOUTS)
    try:
        admin.list_topics()
    finally:
        admin.close()


__all__ = ["no_auto_create", "KafkaError", "TopicPolicy", "TopicMismatch", "TopicMissing", "BrokerView", "make_producer",
           "make_consumer", "ensure_topics", "broker_reachable", "topics_pattern"]
