"""The consumer loop against a real broker: inbox dedupe, dead letters, retries, offsets."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid

import psycopg
import pytest
import sqlalchemy as sa
from kafka import KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError

from services.kernel.consumer import ConsumerStalled, EventConsumer, TopicReplaced, database_offsets, inbox_table
from services.kernel.db import make_engine
from services.kernel.events import StoredEvent, utc_now
from services.kernel.eventstore import EventStore
from services.kernel.kafka import FETCH_WAIT_MS, IDLE_FETCH_WAIT_MS, ensure_topics, set_fetch_wait
from services.kernel.kafka import make_consumer as make_kafka_consumer
from tests.support.broker import committed_to_end, read_topic
from tests.support.consumers import consume_until
from tests.support.drill_service import effects, record_effect

pytestmark = pytest.mark.broker


def envelope(stream: str, version: int, **data) -> StoredEvent:
    return StoredEvent(event_id=str(uuid.uuid4()), event_type="Happened", schema_version=1,
                       stream_id=stream, version=version, position=version, occurred_at=utc_now(),
                       data=data, metadata={"actor": None, "correlation_id": None, "causation_id": None})


@pytest.fixture
def setup(broker, sqlite_url, unique):
    engine = make_engine(sqlite_url)
    EventStore(engine, service="consumertest").create_schema()
    effects.create(engine, checkfirst=True)
    topic = f"consumertest-{unique}.events"
    ensure_topics(broker.bootstrap, [topic, f"{topic}.dlq"])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    yield engine, topic, producer
    producer.close()


def effect_rows(engine) -> list[str]:
    with engine.connect() as connection:
        return [row.event_id for row in connection.execute(sa.select(effects.c.event_id))]


# How long a test waits for what it expects (a positive signal: most arrive within seconds). A group's
# join on the local broker takes 3 s a round; before services.kernel.kafka.keep_completed_joins a new
# member could need several rounds (CI saw 18 s on a 2-core AMD EPYC), now one. The budget stays
# generous: a loaded machine only makes a failing test slower to say so, never a passing one fail.
WITHIN = 90


def make_consumer(broker, engine, topic, unique, kind=EventConsumer, **kwargs) -> EventConsumer:
    return kind(engine=engine, group_id=f"test-{unique}", topics=[topic],
                handlers={"Happened": record_effect}, bootstrap_servers=broker.bootstrap, **kwargs)


def publish(producer, topic: str, unique: str, count: int) -> list[StoredEvent]:
    """``count`` events of one stream on ``topic``, acknowledged."""
    events = [envelope(f"s-{unique}", v) for v in range(1, count + 1)]
    for event in events:
        producer.send(topic, key=event.stream_id.encode(), value=event.to_json())
    producer.flush()
    return events


def test_the_same_event_delivered_twice_has_one_effect(broker, setup, unique):
    engine, topic, producer = setup
    first, second = envelope(f"s-{unique}", 1), envelope(f"s-{unique}", 2)
    sentinel = envelope(f"s-{unique}", 3)  # after the last repeat, on the same partition
    for event in (first, first, second, first, sentinel):
        producer.send(topic, key=event.stream_id.encode(), value=event.to_json())
    producer.flush()
    consumer = make_consumer(broker, engine, topic, unique)
    # The sentinel's effect proves every repeat before it was handled: none had a second effect.
    consume_until(consumer, lambda: sentinel.event_id in effect_rows(engine), timeout=WITHIN)
    assert sorted(effect_rows(engine)) == sorted([first.event_id, second.event_id, sentinel.event_id])
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(inbox_table)).scalar() == 3


def test_a_malformed_record_is_dead_lettered_and_the_next_is_processed(broker, setup, unique):
    engine, topic, producer = setup
    good = envelope(f"s-{unique}", 1)
    poison = envelope(f"s-{unique}", 2, poison=True)
    after = envelope(f"s-{unique}", 3)
    key = f"s-{unique}".encode()
    producer.send(topic, key=key, value=b"{not json")
    producer.send(topic, key=key, value=json.dumps({"event_id": "x"}).encode())
    for event in (good, poison, after):
        producer.send(topic, key=key, value=event.to_json())
    producer.flush()
    consumer = make_consumer(broker, engine, topic, unique)
    consume_until(consumer, lambda: after.event_id in effect_rows(engine), timeout=WITHIN)
    assert effect_rows(engine) == [good.event_id, after.event_id]
    dead = read_topic(broker.bootstrap, f"{topic}.dlq", expected=3)
    assert [r.value for r in dead][:2] == [b"{not json", json.dumps({"event_id": "x"}).encode()]
    assert json.loads(dead[2].value)["event_id"] == poison.event_id
    headers = dict(dead[2].headers)
    assert headers["dlq.origin.topic"] == topic.encode()
    assert int(headers["dlq.origin.offset"]) == 3  # 0 not JSON, 1 bad envelope, 2 good, 3 poison
    assert b"poison" in headers["dlq.error"]
    assert headers["dlq.group"] == f"test-{unique}".encode()
    assert b"not JSON" in dict(dead[0].headers)["dlq.error"]


def test_offsets_are_committed_so_a_new_run_starts_after_the_handled_messages(broker, setup, unique):
    engine, topic, producer = setup
    publish(producer, topic, unique, 5)
    consume_until(make_consumer(broker, engine, topic, unique), lambda: len(effect_rows(engine)) == 5, timeout=WITHIN)
    later = envelope(f"s-{unique}", 6)
    producer.send(topic, key=later.stream_id.encode(), value=later.to_json())
    producer.flush()
    consumer = make_consumer(broker, engine, topic, unique)
    # The group's offset at the end: the second run has handled (and counted) all it was given.
    consume_until(consumer, lambda: len(effect_rows(engine)) == 6
                  and committed_to_end(broker.bootstrap, f"test-{unique}", topic), timeout=WITHIN)
    from services.kernel import metrics
    duplicates = metrics.MESSAGES_DUPLICATE.labels(f"test-{unique}", topic)._value.get()
    assert duplicates == 0, "the second run must not see the first run's messages again"


def test_transient_errors_are_retried_then_the_consumer_stalls_without_dead_lettering(setup, unique):
    engine, topic, _ = setup
    attempts = []

    def flaky(connection, event):
        attempts.append(event.event_id)
        if len(attempts) < 3:
            raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is away"))
        record_effect(connection, event)

    consumer = EventConsumer(engine=engine, group_id=f"g-{unique}", topics=[topic], handlers={"Happened": flaky},
                             bootstrap_servers="127.0.0.1:1", max_retries=5, base_backoff_seconds=0.01)
    event = envelope(f"s-{unique}", 1)
    record = _Record(topic, event.to_json())
    assert consumer.handle(record) == "handled"
    assert len(attempts) == 3 and effect_rows(engine) == [event.event_id]

    def broken(connection, event):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("database is away"))

    stalled = EventConsumer(engine=engine, group_id=f"h-{unique}", topics=[topic], handlers={"Happened": broken},
                            bootstrap_servers="127.0.0.1:1", max_retries=3, base_backoff_seconds=0.01)
    with pytest.raises(ConsumerStalled):
        stalled.handle(_Record(topic, envelope(f"s-{unique}", 2).to_json()))
    assert effect_rows(engine) == [event.event_id]


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database is locked"),
                                   psycopg.OperationalError("server closed the connection unexpectedly")])
def test_a_drivers_own_error_is_transient_too(setup, unique, error):
    """The hot paths run statements on the driver itself (services.kernel.db.Prepared, SQLite's BEGIN
    IMMEDIATE): what the driver raises there is retried like SQLAlchemy's wrapped errors, not dead-lettered."""
    engine, topic, _ = setup
    attempts = []

    def flaky(connection, event):
        attempts.append(event.event_id)
        if len(attempts) < 2:
            raise error
        record_effect(connection, event)

    consumer = EventConsumer(engine=engine, group_id=f"g-{unique}", topics=[topic], handlers={"Happened": flaky},
                             bootstrap_servers="127.0.0.1:1", max_retries=3, base_backoff_seconds=0.01)
    event = envelope(f"s-{unique}", 1)
    assert consumer.handle(_Record(topic, event.to_json())) == "handled"
    assert len(attempts) == 2 and effect_rows(engine) == [event.event_id]


class _Record:
    """The attributes of a kafka-python ConsumerRecord that the consumer reads."""

    def __init__(self, topic: str, value: bytes) -> None:
        self.topic, self.partition, self.offset = topic, 0, 0
        self.key, self.value, self.headers = b"k", value, []


def test_effects_and_inbox_roll_back_together(setup, unique):
    engine, topic, _ = setup

    def half_done(connection, event):
        record_effect(connection, event)
        raise sa.exc.OperationalError("INSERT", {}, Exception("connection lost mid-transaction"))

    consumer = EventConsumer(engine=engine, group_id=f"g-{unique}", topics=[topic],
                             handlers={"Happened": half_done}, bootstrap_servers="127.0.0.1:1",
                             max_retries=2, base_backoff_seconds=0.01)
    with pytest.raises(ConsumerStalled):
        consumer.handle(_Record(topic, envelope(f"s-{unique}", 1).to_json()))
    assert effect_rows(engine) == []
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(inbox_table)).scalar() == 0


def test_a_poll_is_applied_in_one_transaction_or_record_by_record(setup, unique):
    """A batch applies together (duplicates inside it have one effect); a batch with a refused
    record changes nothing together, so the records are then applied one by one."""
    engine, topic, _ = setup
    refused = envelope(f"s-{unique}", 2, poison=True)

    def picky(connection, event):
        if event.data.get("poison"):
            raise ValueError("refused")
        record_effect(connection, event)

    consumer = EventConsumer(engine=engine, group_id=f"g-{unique}", topics=[topic], handlers={"Happened": picky},
                             bootstrap_servers="127.0.0.1:1")
    first, second = envelope(f"s-{unique}", 1), envelope(f"s-{unique}", 3)
    assert consumer.handle_together([_Record(topic, e.to_json()) for e in (first, first, second)]) is True
    assert sorted(effect_rows(engine)) == sorted([first.event_id, second.event_id])
    third = envelope(f"s-{unique}", 4)
    assert consumer.handle_together([_Record(topic, e.to_json()) for e in (third, refused)]) is False
    assert sorted(effect_rows(engine)) == sorted([first.event_id, second.event_id])  # third rolled back too
    assert consumer.handle_together([_Record(topic, b"not json"), _Record(topic, third.to_json())]) is False
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(inbox_table)).scalar() == 2


def test_a_batch_skips_what_its_group_applied_in_an_earlier_one_on_both_backends(database_url, unique):
    """The inbox's lookup for a whole poll (one statement on SQLite, the ids as one JSON array): an
    event another poll of this group applied is a duplicate; one only another group applied is not."""
    engine = make_engine(database_url)
    EventStore(engine, service="consumertest").create_schema()
    effects.create(engine, checkfirst=True)
    topic = f"consumertest-{unique}.events"
    ours, theirs = (EventConsumer(engine=engine, group_id=f"{name}-{unique}", topics=[topic],
                                  handlers={"Happened": handler}, bootstrap_servers="127.0.0.1:1")
                    for name, handler in (("ours", record_effect), ("theirs", lambda connection, event: None)))
    a, b, c, d = (envelope(f"s-{unique}", v) for v in range(1, 5))
    assert theirs.handle_together([_Record(topic, e.to_json()) for e in (c, d)]) is True
    assert ours.handle_together([_Record(topic, e.to_json()) for e in (a, b)]) is True
    assert ours.handle_together([_Record(topic, e.to_json()) for e in (b, c, a, d, c)]) is True
    assert sorted(effect_rows(engine)) == sorted(e.event_id for e in (a, b, c, d))  # each once
    with engine.connect() as connection:
        kept = connection.execute(sa.select(inbox_table.c.group_id, inbox_table.c.event_id)).all()
    assert sorted(kept) == sorted([(f"ours-{unique}", e.event_id) for e in (a, b, c, d)]
                                  + [(f"theirs-{unique}", e.event_id) for e in (c, d)])
    engine.dispose()


class RefusedCommits(EventConsumer):
    """A consumer whose Kafka client has its first ``refusals`` offset commits refused, as a broker
    does in a rebalance (the client is real; only its answer to those commits is replaced)."""

    def __init__(self, *args, refusals: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refusals = refusals
        self.refused = 0

    def _connect(self):
        client = super()._connect()
        commit = client.commit

        def refusing_commit(offsets=None):
            if self.refused < self.refusals:
                self.refused += 1
                raise CommitFailedError("the group is rebalancing")
            return commit(offsets)

        def refusing_commit_async(offsets=None, callback=None):
            if self.refused < self.refusals:
                self.refused += 1
                callback(offsets, CommitFailedError("the group is rebalancing"))
                return None
            return commit_async(offsets, callback=callback)

        commit_async = client.commit_async
        client.commit = refusing_commit
        client.commit_async = refusing_commit_async
        return client


class CountedCommits(EventConsumer):
    """A consumer that counts the offset commits its Kafka client sends while it polls."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commits = 0

    def _connect(self):
        client = super()._connect()
        commit_async = client.commit_async

        def counted_commit_async(offsets=None, callback=None):
            self.commits += 1
            return commit_async(offsets, callback=callback)

        client.commit_async = counted_commit_async
        return client


def test_kafka_is_told_at_most_once_an_interval_and_everything_on_leaving(broker, setup, unique):
    """An offset commit per poll cost the broker and the client a request for every few records:
    within ``kafka_commit_seconds`` of a commit, what is applied waits for the next one — or for a
    clean stop, which tells Kafka everything."""
    engine, topic, producer = setup
    consumer = make_consumer(broker, engine, topic, unique, kind=CountedCommits)
    consumer.kafka_commit_seconds = 3600.0
    publish(producer, topic, unique, 1)
    more: list = []

    def applied_in_two_steps() -> bool:
        if not more:
            if len(effect_rows(engine)) == 1 and consumer.commits == 1:
                more.extend(publish(producer, topic, unique, 4))  # after the first commit
            return False
        return len(effect_rows(engine)) == 5

    consume_until(consumer, applied_in_two_steps, timeout=WITHIN, what="the records were not applied")
    assert consumer.commits == 1  # the first poll's; the next four records' offsets waited
    assert committed_to_end(broker.bootstrap, f"test-{unique}", topic)  # told when the member left


class KeptClient(EventConsumer):
    """A consumer that keeps its Kafka client where the test can look at it."""

    def _connect(self):
        self.client = super()._connect()
        return self.client


def test_an_idle_consumer_lets_the_broker_hold_its_fetches_longer_until_a_record_comes(broker, setup, unique):
    """Idle, a consumer asked ten times a second (two hundredths of a core each, and the broker's
    time): after ``idle_after_seconds`` without a record its fetches may wait IDLE_FETCH_WAIT_MS;
    a record is still received, and brings the short wait back. Read from the installed
    kafka-python's fetcher itself: another version keeping it elsewhere fails here.

    The consumer's own thread notes the wait after each poll, with how many records the poll
    applied: the poll that brings the record is seen even when the consumer is idle again before
    the test's thread looks (``idle_after_seconds`` later; a slow machine missed that window)."""
    engine, topic, producer = setup
    polls: list[tuple[int | None, int]] = []

    class Watched(KeptClient):
        def poll_once(self, consumer, timeout_ms: int = 500) -> int:
            count = super().poll_once(consumer, timeout_ms)
            polls.append((consumer._fetcher.config["fetch_max_wait_ms"], count))
            return count

    consumer = make_consumer(broker, engine, topic, unique, kind=Watched)
    consumer.idle_after_seconds = 0.5
    published: list[int] = []

    def idle_then_busy() -> bool:
        seen = list(polls)
        waits = [wait for wait, _count in seen]
        if IDLE_FETCH_WAIT_MS not in waits:
            return False
        if not published:
            published.append(len(seen))
            publish(producer, topic, unique, 1)  # once, after the long wait is first seen
            return False
        return bool(effect_rows(engine)) and any(
            count and wait == FETCH_WAIT_MS for wait, count in seen[published[0]:])

    consume_until(consumer, idle_then_busy, timeout=WITHIN, what="the consumer did not go idle and back")
    assert all(count == 0 for _wait, count in polls[:published[0]])  # idle: nothing came before the record
    assert FETCH_WAIT_MS < IDLE_FETCH_WAIT_MS


def test_a_join_the_broker_completes_between_two_polls_is_used(broker, setup, unique, caplog):
    """kafka-python 3.0 dropped a group join that the broker completed while no ``poll`` waited
    for it and sent a new JoinGroup: a member that polls briefly with work between its polls (every
    consumer here: broker checks, offsets) started round after round (3 s each on the local
    broker). Polled for 0.2 s once a second, the kernel's client holds its partitions after one
    round; the library's own client, asked the same way, had none after 40 s and 13 joins
    (``services.kernel.kafka.keep_completed_joins``)."""
    _engine, topic, _producer = setup
    client = make_kafka_consumer(broker.bootstrap, f"joins-{unique}", [topic], client_id=f"joins-{unique}")
    try:
        with caplog.at_level(logging.INFO, logger="kafka.coordinator"):
            deadline = time.monotonic() + WITHIN
            while not client.assignment() and time.monotonic() < deadline:
                client.poll(timeout_ms=200)
                time.sleep(1.0)  # the member is busy between polls
        assigned = {tp.topic for tp in client.assignment()}
        joins = [r for r in caplog.records if r.name == "kafka.coordinator" and "joining group" in r.getMessage()]
    finally:
        client.close()
    assert joins, "no JoinGroup was logged: the test could not count the joins"
    assert assigned == {topic}, f"no assignment after {len(joins)} joins"
    # One round: the first JoinGroup asks the broker for a member id (KIP-394), the second joins.
    assert len(joins) <= 3, f"{len(joins)} joins for one member of a new group"


def test_a_client_without_the_fetch_wait_where_we_look_is_left_alone():
    assert set_fetch_wait(object(), IDLE_FETCH_WAIT_MS) is False


def test_a_refused_offset_commit_is_made_again_when_no_record_follows(broker, setup, unique):
    engine, topic, producer = setup
    publish(producer, topic, unique, 3)
    consumer = make_consumer(broker, engine, topic, unique, kind=RefusedCommits, refusals=2)
    consume_until(consumer, lambda: len(effect_rows(engine)) == 3
                  and committed_to_end(broker.bootstrap, f"test-{unique}", topic), timeout=WITHIN,
                  what="the group stayed behind after its commit was refused")
    assert consumer.refused == 2


def test_a_member_tells_kafka_what_the_database_applied_before_a_crash(broker, setup, unique):
    """The process died between the database's commit and Kafka's (every commit refused here), and
    no record follows: the next member starts at the database's offsets and commits them."""
    engine, topic, producer = setup
    events = publish(producer, topic, unique, 3)
    first = make_consumer(broker, engine, topic, unique, kind=RefusedCommits, refusals=10**6)
    consume_until(first, lambda: len(effect_rows(engine)) == 3, timeout=WITHIN)
    assert not committed_to_end(broker.bootstrap, f"test-{unique}", topic), "Kafka was told: the drill is void"
    consume_until(make_consumer(broker, engine, topic, unique),
                  lambda: committed_to_end(broker.bootstrap, f"test-{unique}", topic), timeout=WITHIN,
                  what="the group never reached the end the database had applied")
    assert sorted(effect_rows(engine)) == sorted(e.event_id for e in events)


class LostCommits(EventConsumer):
    """A consumer whose first ``losses`` asynchronous offset commits vanish on their way: neither
    sent nor answered (as one can be when the broker restarts or the group rebalances under it)."""

    def __init__(self, *args, losses: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.losses = losses
        self.lost = 0

    def _connect(self):
        client = super()._connect()
        commit_async = client.commit_async

        def losing_commit_async(offsets=None, callback=None):
            if self.lost < self.losses:
                self.lost += 1
                return None
            return commit_async(offsets, callback=callback)

        client.commit_async = losing_commit_async
        return client


def test_a_lost_offset_commit_is_made_again_when_no_record_follows(broker, setup, unique):
    """The database holds the offsets, Kafka never got them and no record follows: the member's
    periodic check with the broker sees Kafka behind its database and tells it again."""
    engine, topic, producer = setup
    group = f"test-{unique}"
    publish(producer, topic, unique, 3)
    consumer = make_consumer(broker, engine, topic, unique, kind=LostCommits, losses=10**6, verify_seconds=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))  # one member all along
    thread.start()
    try:
        deadline = time.monotonic() + WITHIN
        while not (len(effect_rows(engine)) == 3 and consumer.lost >= 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(effect_rows(engine)) == 3 and consumer.lost >= 1, "the records were not applied"
        assert not committed_to_end(broker.bootstrap, group, topic), "Kafka was told: the drill is void"
        consumer.losses = consumer.lost  # from now on commits arrive; no record comes to carry one
        while not committed_to_end(broker.bootstrap, group, topic) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert committed_to_end(broker.bootstrap, group, topic), "the group stayed behind its database"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


class BlindFirstClient(EventConsumer):
    """A consumer whose first Kafka client joins the group and polls, but receives no record (as a
    client whose fetching stalled): its polls answer nothing. The clients built after it are plain."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clients = 0

    def _connect(self):
        client = super()._connect()
        self.clients += 1
        if self.clients == 1:
            poll = client.poll
            client.poll = lambda timeout_ms=0, **kwargs: (poll(timeout_ms=timeout_ms, **kwargs), {})[1]
        return client


def test_a_client_that_receives_nothing_of_a_partition_it_holds_is_built_again(broker, setup, unique):
    """Records wait on a partition the member holds, nothing of them arrives poll after poll: the
    member's check with the broker sees no progress towards the partition's end and builds a new
    client, which reads them."""
    engine, topic, producer = setup
    events = publish(producer, topic, unique, 3)
    consumer = make_consumer(broker, engine, topic, unique, kind=BlindFirstClient, verify_seconds=0.3)
    consumer.stall_seconds, consumer.stall_polls = 1.0, 3
    consume_until(consumer, lambda: len(effect_rows(engine)) == 3
                  and committed_to_end(broker.bootstrap, f"test-{unique}", topic), timeout=WITHIN,
                  what="the stalled client was never replaced")
    assert consumer.clients >= 2
    assert sorted(effect_rows(engine)) == sorted(e.event_id for e in events)


class ForgetfulFirstClient(EventConsumer):
    """A consumer whose first Kafka client's records are received but never applied nor kept (as
    if they were lost between the client and the database): its polls answer them, the consumer
    drops them. The clients built after it are plain."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.clients = 0

    def _connect(self):
        client = super()._connect()
        self.clients += 1
        return client

    def handle_together(self, records, offsets=None) -> bool:
        return True if self.clients == 1 else super().handle_together(records, offsets)


def test_records_received_but_never_applied_are_read_again_by_a_new_client(broker, setup, unique):
    """What counts is what the group applied, not what its client received: records that arrived
    and were never applied (nor their offsets kept) leave the group behind the end, and a new client
    reads them again from the database's offsets."""
    engine, topic, producer = setup
    events = publish(producer, topic, unique, 3)
    consumer = make_consumer(broker, engine, topic, unique, kind=ForgetfulFirstClient, verify_seconds=0.3)
    consumer.stall_seconds, consumer.stall_polls = 1.0, 3
    consume_until(consumer, lambda: len(effect_rows(engine)) == 3
                  and committed_to_end(broker.bootstrap, f"test-{unique}", topic), timeout=WITHIN,
                  what="the records received and dropped were never read again")
    assert consumer.clients >= 2
    assert sorted(effect_rows(engine)) == sorted(e.event_id for e in events)


def test_offsets_waiting_when_the_client_is_built_again_are_not_kept_for_the_new_one(broker, setup, unique):
    """Offsets of ignored records wait in memory for a while; a new client (the broker lost the topic
    and it was created again) reads from the database's offsets, so what waited is dropped, not kept
    later under the new topic's id (an offset of the old topic there would skip the new one's records)."""
    engine, topic, _producer = setup
    consumer = make_consumer(broker, engine, topic, unique)
    consumer._waiting = {(topic, 0): 999}
    client = consumer._connect()
    try:
        assert consumer._waiting == {}
        consumer.save_waiting_offsets(due_only=False)
        assert _kept_offsets(engine, f"test-{unique}") == {}
    finally:
        consumer._disconnect(client)
        consumer.view.close()


def _kept_offsets(engine, group: str) -> dict[int, int]:
    from services.kernel.consumer import consumer_offsets_table as t

    with engine.connect() as connection:
        return dict(connection.execute(sa.select(t.c.partition, t.c["offset"]).where(t.c.group_id == group)).all())


def test_records_no_handler_takes_cost_no_transaction_and_their_offsets_are_kept_later(broker, setup, unique):
    """A poll of records that change nothing opens no transaction: their offsets wait, and Kafka is
    told only what the database holds; they are kept after ``offsets_wait_seconds``, with the next
    poll that applies something, or when the member leaves — and a new member starts after them."""
    from services.kernel import metrics

    engine, topic, producer = setup
    group = f"test-{unique}"
    others = [StoredEvent(**{**envelope(f"s-{unique}", v).__dict__, "event_type": "Other"}) for v in (1, 2, 3)]
    for event in others:
        producer.send(topic, key=event.stream_id.encode(), value=event.to_json())
    producer.flush()
    ignored = metrics.MESSAGES_HANDLED.labels(group, topic, "Other")
    consumer = make_consumer(broker, engine, topic, unique)
    consumer.offsets_wait_seconds = 3600.0  # never due while it runs
    writes = []
    plain = consumer._save_offsets
    consumer._save_offsets = lambda connection, offsets: (writes.append(dict(offsets)), plain(connection, offsets))[1]
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + WITHIN
        while ignored._value.get() < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ignored._value.get() == 3, "the records were not polled"
        time.sleep(1.0)  # polls after them: still nothing written, nothing told to Kafka
        assert writes == [] and _kept_offsets(engine, group) == {}
        assert not committed_to_end(broker.bootstrap, group, topic)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    ends = {p: o for (_t, p), o in read_ends(broker.bootstrap, topic).items() if o}
    assert _kept_offsets(engine, group) == ends  # kept as the member left, in one transaction
    assert len(writes) == 1 and committed_to_end(broker.bootstrap, group, topic)

    handled = envelope(f"s-{unique}", 4)
    producer.send(topic, key=handled.stream_id.encode(), value=handled.to_json())
    producer.flush()
    second = make_consumer(broker, engine, topic, unique)
    second.offsets_wait_seconds = 0.2
    consume_until(second, lambda: effect_rows(engine) == [handled.event_id]
                  and committed_to_end(broker.bootstrap, group, topic), timeout=WITHIN)
    assert ignored._value.get() == 3, "the new member read the ignored records again"


def read_ends(bootstrap: str, topic: str) -> dict[tuple[str, int], int]:
    from services.kernel.kafka import BrokerView

    view = BrokerView(bootstrap, "test-ends")
    try:
        return view.end_offsets({topic: view.topics([topic])[topic].partitions})
    finally:
        view.close()


class Seeks:
    """Where a rebalance listener moves a Kafka client's partitions."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, object]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks.append((tp, "beginning"))


def test_an_assignment_of_a_topic_created_again_since_the_client_was_built_is_refused(broker, setup, unique):
    """A client built before the broker lost a topic may rejoin the new broker before its check sees
    the topic created again; started at the offsets kept for the old topic, it would skip the new
    topic's records that bear the same offsets. Its assignment is refused (the poll fails with a
    KafkaError and the run loop builds a new client), before any partition is moved."""
    engine, topic, producer = setup
    publish(producer, topic, unique, 3)
    consumer = make_consumer(broker, engine, topic, unique)
    consume_until(consumer, lambda: len(effect_rows(engine)) == 3, timeout=WITHIN)
    assigned = [TopicPartition(topic, p) for p in range(3)]
    client = Seeks()
    consumer._start_at_database_offsets(client, assigned)
    assert (TopicPartition(topic, 0), "beginning") in client.seeks or any(  # the topic it was built for
        isinstance(offset, int) for _tp, offset in client.seeks)

    client = Seeks()
    consumer._topic_ids = {topic: "an-id-the-broker-no-longer-has"}  # built before the topic was created again
    with pytest.raises(TopicReplaced):
        consumer._start_at_database_offsets(client, assigned)
    assert client.seeks == []


def test_an_ignored_records_waiting_offset_does_not_move_back_the_offset_a_later_batch_kept(broker, setup, unique):
    """A record no handler takes keeps no offset at once: it waits. When the next poll's record is
    applied, its batch keeps the later offset; the earlier one waiting must not be kept after it
    (on leaving, or once it has waited): the database's offset would move back one record, and the
    group stand one short of the partition's end — the broker-loss drills' "stall" (stop 42)."""
    engine, topic, producer = setup
    consumer = make_consumer(broker, engine, topic, unique)
    consumer.offsets_wait_seconds = 60  # the ignored record's offset is still waiting when the next comes
    stream = f"s-{unique}"
    ignored = StoredEvent(event_id=str(uuid.uuid4()), event_type="NobodysBusiness", schema_version=1,
                          stream_id=stream, version=1, position=1, occurred_at=utc_now(), data={},
                          metadata={"actor": None, "correlation_id": None, "causation_id": None})
    handled = envelope(stream, 2)
    producer.send(topic, key=stream.encode(), value=ignored.to_json())
    producer.flush()
    sent = []

    def applied_after_the_wait() -> bool:
        if not sent and consumer._waiting:  # the ignored record's offset waits: now the next record
            producer.send(topic, key=stream.encode(), value=handled.to_json())
            producer.flush()
            sent.append(True)
        return handled.event_id in effect_rows(engine)

    consume_until(consumer, applied_after_the_wait, timeout=WITHIN, what="the second record was not applied")
    kept = {key: offset for key, (_id, offset) in database_offsets(engine, f"test-{unique}").items() if key[0] == topic}
    assert list(kept.values()) == [2], kept  # the end of the partition, kept after the consumer left


def test_the_kernels_kafka_clients_keep_no_metrics_of_their_own(broker, setup, unique):
    """kafka-python records sensors on every request, fetch and record batch for metrics nobody
    reads here (the workers export their own): the kernel's producer and consumer keep none (a
    tenth of kafka-python's CPU in the pipeline, ``python -m bench.profile_pipeline``)."""
    from services.kernel.kafka import make_producer

    _engine, topic, _producer = setup
    producer = make_producer(broker.bootstrap, f"probe-{unique}")
    consumer = make_kafka_consumer(broker.bootstrap, f"group-{unique}", [topic], f"probe-{unique}")
    try:
        assert producer._metrics is None and not producer.metrics()
        assert consumer._metrics is None and not consumer.metrics()
        producer.send(topic, key=b"k", value=b"{}").get(timeout=10)  # and they work all the same
    finally:
        producer.close(timeout=5)
        consumer.close()
