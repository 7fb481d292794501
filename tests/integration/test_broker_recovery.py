"""Consumers against a real broker that loses everything (tansu keeps its data in memory): coming
back whole after a restart, lag of partitions nobody holds, dead letters kept in the database, and
a topic with the wrong partition count."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError

from services.kernel import kafka as kernel_kafka
from services.kernel import metrics
from services.kernel.consumer import EventConsumer, dead_letters_table, list_dead_letters
from services.kernel.db import make_engine
from services.kernel.events import StoredEvent, utc_now
from services.kernel.eventstore import EventStore
from services.kernel.kafka import BrokerView, TopicMismatch, TopicPolicy, ensure_topics
from services.kernel.worker import run_until_signalled
from tests.support.broker import committed_to_end, read_topic
from tests.support.drill_service import effects, record_effect
from tests.support.fake_broker import FakeBroker

pytestmark = pytest.mark.broker


def envelope(stream: str, version: int, **data) -> StoredEvent:
    return StoredEvent(event_id=str(uuid.uuid4()), event_type="Happened", schema_version=1,
                       stream_id=stream, version=version, position=version, occurred_at=utc_now(),
                       data=data, metadata={"actor": None, "correlation_id": None, "causation_id": None})


def make_database(url: str):
    engine = make_engine(url)
    EventStore(engine, service="brokerrecovery").create_schema()
    effects.create(engine, checkfirst=True)
    return engine


def effect_rows(engine) -> list[str]:
    with engine.connect() as connection:
        return [row.event_id for row in connection.execute(sa.select(effects.c.event_id))]


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]], **settings) -> None:
    """Send and close at once: a producer kept open would name the topic in a metadata request
    after a broker restart, and the local broker would create it then (with 4 partitions)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **settings)
    try:
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)


def streams_on_each_partition(unique: str, per_partition: int, partitions: int = 3) -> list[str]:
    """Stream ids, ``per_partition`` of them on each partition (the producer's murmur2 partitioning)."""
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(streams) < per_partition for streams in found.values()):
        stream = f"s-{unique}-{n}"
        bucket = found[FakeBroker.partition_for(stream.encode(), partitions)]
        if len(bucket) < per_partition:
            bucket.append(stream)
        n += 1
    return [stream for p in range(partitions) for stream in found[p]]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


@contextlib.contextmanager
def running(consumer: EventConsumer):
    """``consumer.run`` in a thread for the duration of the block; its failure fails the test."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def target():
        try:
            consumer.run(stop)
        except BaseException as exc:  # noqa: BLE001 — handed to the test
            failures.append(exc)

    thread = threading.Thread(target=target, name="consumer-under-test")
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the consumer did not stop"
    assert not failures, f"the consumer failed: {failures[0]!r}"


def test_a_consumer_comes_back_whole_after_the_broker_restarted_empty(own_broker, sqlite_url, unique):
    engine = make_database(sqlite_url)
    topic, group = f"recovery-{unique}.events", f"recovery-{unique}"
    topics = [topic, f"{topic}.dlq"]
    streams = streams_on_each_partition(unique, per_partition=2)  # two streams on each of the 3 partitions
    old = [envelope(streams[i % 6], i // 6 + 1) for i in range(30)]
    new = [envelope(streams[i % 6], 6 + i // 6) for i in range(15)]
    ensure_topics(own_broker.bootstrap, topics)
    produce(own_broker.bootstrap, topic, [(e.stream_id.encode(), e.to_json()) for e in old])
    consumer = EventConsumer(engine=engine, group_id=group, topics=[topic], handlers={"Happened": record_effect},
                             bootstrap_servers=own_broker.bootstrap, verify_seconds=0.5)
    duplicates = metrics.MESSAGES_DUPLICATE.labels(group, topic)
    clients = []  # each Kafka client the consumer builds
    build = consumer._connect
    consumer._connect = lambda: clients.append(build()) or clients[-1]

    with running(consumer):
        wait_for(lambda: len(effect_rows(engine)) == 30, 30, "the first 30 effects")
        own_broker.stop()
        own_broker.start()  # empty: no topics, no group offsets
        ensure_topics(own_broker.bootstrap, topics)
        # The new events first: on every partition they take the offsets the old events had, so a
        # position kept in memory from before the restart would skip them.
        produce(own_broker.bootstrap, topic, [(e.stream_id.encode(), e.to_json()) for e in new + old])
        wait_for(lambda: len(clients) >= 2, 30, "the loss noticed and a new Kafka client built")
        wait_for(lambda: len(effect_rows(engine)) >= 45, 60, "all 45 effects after the restart")
        wait_for(lambda: committed_to_end(own_broker.bootstrap, group, topic), 30,
                 "the group's offsets at the end of every partition")

    rows = effect_rows(engine)
    assert len(rows) == 45, "each event has exactly one effect"
    assert set(rows) == {e.event_id for e in old + new}
    assert duplicates._value.get() >= 30, "the old events were read again from the earliest offset"


def test_lag_is_reported_for_partitions_nobody_holds(broker, sqlite_url, unique):
    engine = make_database(sqlite_url)
    topic = f"lag-{unique}.events"
    ensure_topics(broker.bootstrap, [topic, f"{topic}.dlq"])
    counts = {0: 3, 1: 5, 2: 7}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=50)  # batched records
    try:
        for partition, count in counts.items():
            for n in range(count):
                producer.send(topic, value=f"{n}".encode(), partition=partition)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)
    group = f"lag-{unique}"
    for partition in counts:
        metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(-1)

    consumer = EventConsumer(engine=engine, group_id=group, topics=[topic], handlers={},
                             bootstrap_servers=broker.bootstrap)
    client = consumer._connect()  # as the worker builds it; it never polls, so it holds no partition
    try:
        assert client.assignment() == set()
        assert consumer.verify(client) is True
    finally:
        consumer._disconnect(client)
        consumer.view.close()
    assert {p: metrics.CONSUMER_LAG.labels(group, topic, str(p))._value.get() for p in counts} == counts


def test_dead_letters_are_kept_in_the_database_and_sent_again_to_a_broker_that_lost_them(
        own_broker, sqlite_url, unique):
    engine = make_database(sqlite_url)
    topic, group = f"dead-{unique}.events", f"dead-{unique}"
    dlq = f"{topic}.dlq"
    ensure_topics(own_broker.bootstrap, [topic, dlq])
    after = envelope(f"s-{unique}", 1)
    key = f"s-{unique}".encode()
    produce(own_broker.bootstrap, topic, [(key, b"not json"), (key, after.to_json())])

    def make() -> EventConsumer:
        return EventConsumer(engine=engine, group_id=group, topics=[topic], handlers={"Happened": record_effect},
                             bootstrap_servers=own_broker.bootstrap)

    with running(make()):
        wait_for(lambda: after.event_id in effect_rows(engine), 30, "the record after the poison handled")
    [kept] = list_dead_letters(engine)
    assert (kept["group"], kept["topic"], kept["offset"], kept["value"]) == (group, topic, 0, "not json")
    assert "not JSON" in kept["error"] and kept["republished_at"] is None
    with engine.connect() as connection:
        row = connection.execute(sa.select(dead_letters_table)).mappings().one()
    assert row["partition"] == FakeBroker.partition_for(key, 3) and row["key"] == key
    assert [r.value for r in read_topic(own_broker.bootstrap, dlq, expected=1, timeout=10)] == [b"not json"]

    own_broker.stop()
    own_broker.start()  # the DLQ topic and its record are gone
    ensure_topics(own_broker.bootstrap, [topic, dlq])
    assert make().republish_dead_letters() == 1

    [dead] = read_topic(own_broker.bootstrap, dlq, expected=1, timeout=10)
    assert dead.value == b"not json" and dead.key == key
    headers = dict(dead.headers)
    assert b"not JSON" in headers["dlq.error"]
    assert headers["dlq.origin.topic"] == topic.encode()
    assert headers["dlq.origin.partition"] == str(row["partition"]).encode()
    assert headers["dlq.origin.offset"] == b"0"
    assert headers["dlq.group"] == group.encode()
    assert list_dead_letters(engine)[0]["republished_at"] is not None
    assert make().republish_dead_letters() == 0  # sent once; `all_of_them` sends them again


def test_a_topic_with_another_partition_count_stops_the_consumer(broker, sqlite_url, unique, monkeypatch, capsys):
    engine = make_database(sqlite_url)
    topic = f"mismatch-{unique}.events"
    ensure_topics(broker.bootstrap, [topic, f"{topic}.dlq"], TopicPolicy(partitions=4))

    def make() -> EventConsumer:
        return EventConsumer(engine=engine, group_id=f"mismatch-{unique}", topics=[topic],
                             handlers={"Happened": record_effect}, bootstrap_servers=broker.bootstrap)

    stop = threading.Event()
    raised: list[BaseException] = []

    def target():
        try:
            make().run(stop)
        except BaseException as exc:  # noqa: BLE001 — handed to the test
            raised.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=20)
    stop.set()
    thread.join(timeout=30)
    assert raised, "run() went on consuming from a topic with another partition count"
    assert isinstance(raised[0], TopicMismatch), repr(raised[0])
    assert f"topic {topic} has 4 partitions but this worker is configured for 3" in str(raised[0])

    # The worker's entry point: exit code 2 and the message on stderr. A SIGTERM after 20 s ends
    # run_until_signalled if the consumer does not stop by itself.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    timer = threading.Timer(20, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(SystemExit) as exited:
            run_until_signalled(make().run, health_port=0, readiness={})
    finally:
        timer.cancel()
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert exited.value.code == 2
    assert f"topic mismatch: topic {topic} has 4 partitions" in capsys.readouterr().err


# kafka-python 3.0.12 does not pass allow_auto_create_topics on to its metadata requests
# (services.kernel.kafka.no_auto_create does): without that, the probe would create the topic.
def test_the_end_offset_probe_creates_no_topic_that_went_away_meanwhile(broker, unique, monkeypatch):
    topic = f"probe-{unique}.events"
    ensure_topics(broker.bootstrap, [topic])
    produce(broker.bootstrap, topic, [(None, b"x")])
    real = kernel_kafka.KafkaConsumer

    def topic_gone_first(*args, **kwargs):  # a broker restart or a deletion, just before the probe
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
        return real(*args, **kwargs)

    monkeypatch.setattr(kernel_kafka, "KafkaConsumer", topic_gone_first)
    view = BrokerView(broker.bootstrap, f"probe-{unique}")
    try:
        with contextlib.suppress(KafkaError):
            view.end_offsets({topic: 3}, timeout=1.0)
    finally:
        view.close()
    monkeypatch.setattr(kernel_kafka, "KafkaConsumer", real)
    check = BrokerView(broker.bootstrap, f"check-{unique}")
    try:
        assert check.topics([topic])[topic] is None, "the probe created the topic"
    finally:
        check.close()


def send_to(bootstrap: str, topic: str, partition: int, count: int) -> None:
    """``count`` records to ``partition``, one batch (a producer closed at once, as :func:`produce`)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    try:
        for n in range(count):
            producer.send(topic, value=b"x%d" % n, partition=partition)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)


def test_fetched_end_offsets_are_used_again_only_while_nothing_was_appended(broker, unique, monkeypatch):
    """An idle consumer's check built a fetching client every two seconds (12 ms of CPU) to learn
    ends that had not moved. With ``reuse_seconds`` the ends fetched are given again while the
    broker's ``ListOffsets`` answers the same; a record appended (to an empty partition too: the
    local broker's answer moves from 0 to 1) or a topic created again fetch again."""
    topic = f"reuse-{unique}.events"
    ensure_topics(broker.bootstrap, {topic: 3})
    for partition in range(3):
        send_to(broker.bootstrap, topic, partition, 3)
    view = BrokerView(broker.bootstrap, f"reuse-{unique}")
    fetches: list[int] = []
    real = view._fetch_ends

    def counted(*args, **kwargs):
        fetches.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(view, "_fetch_ends", counted)
    try:
        view.topics([topic])
        first = view.end_offsets({topic: 3}, reuse_seconds=30)
        assert first == {(topic, p): 3 for p in range(3)} and len(fetches) == 1
        assert view.end_offsets({topic: 3}, reuse_seconds=30) == first and len(fetches) == 1  # reused
        assert view.end_offsets({topic: 3}) == first and len(fetches) == 2  # not asked to reuse: fetched

        send_to(broker.bootstrap, topic, 1, 1)  # one more record on partition 1
        moved = view.end_offsets({topic: 3}, reuse_seconds=30)
        assert moved == {**first, (topic, 1): 4} and len(fetches) == 3
        assert view.end_offsets({topic: 3}, reuse_seconds=30) == moved and len(fetches) == 3

        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()
        ensure_topics(broker.bootstrap, {topic: 3})  # created again: its ids differ, partition 2 stays empty
        for partition in (0, 1):
            send_to(broker.bootstrap, topic, partition, 3)
        view.topics([topic])
        again = view.end_offsets({topic: 3}, reuse_seconds=30)
        assert again == {(topic, 0): 3, (topic, 1): 3, (topic, 2): 0} and len(fetches) == 4
        assert view.end_offsets({topic: 3}, reuse_seconds=30) == again and len(fetches) == 4  # empty one too
        send_to(broker.bootstrap, topic, 2, 2)  # the empty partition's first batch
        assert view.end_offsets({topic: 3}, reuse_seconds=30)[(topic, 2)] == 2 and len(fetches) == 5
    finally:
        view.close()
