"""A service's database restored to an earlier point while the topic and the other services are ahead.

Each test takes a copy of a database (SQLite's backup API; PostgreSQL's ``CREATE DATABASE ... TEMPLATE``)
as a backup would, lets the service go on, then "restores": points a relay or consumer at the copy, as
the runbook switches a service to a cluster restored to a point in time. What must hold:

* the relay refuses to publish when the log no longer holds what the topic holds (a position that is
  gone, or that holds another event), naming the position, both ids and the runbook; an empty topic
  is no restore;
* ``recover-tail`` appends the lost tail from the topic exactly as it was, marks the events that
  caused the service's own reactions as applied, and refuses (changing nothing) what it cannot do;
* a consumer whose database was restored applies again, once, the events whose effects the restore
  took away, although Kafka's committed offsets are past them, and applies nothing twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from services.kernel.consumer import EventConsumer, consumer_offsets_table, inbox_table
from services.kernel.db import make_engine, normalise_url
from services.kernel.events import Metadata, NewEvent, StoredEvent, utc_now
from services.kernel.eventstore import EventStore
from services.kernel.kafka import BrokerView, ensure_topics
from services.kernel.relay import LogBehindTopic, Relay
from services.kernel.restore import TailNotRecoverable, recover_tail
from tests.support.broker import committed_to_end, read_topic
from tests.support.consumers import consume_until
from tests.support.drill_service import effects, record_effect
from tests.support.fake_broker import FakeBroker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def snapshot(request):
    """``take(url) -> url of a copy``: the database as it is now, as a backup would hold it."""
    copies: list[tuple[str, str]] = []

    def take(url: str) -> str:
        parsed = sa.engine.make_url(normalise_url(url))
        if parsed.get_backend_name() == "sqlite":
            copy = f"{parsed.database}.copy-{uuid.uuid4().hex[:6]}"
            source, target = sqlite3.connect(parsed.database), sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            return f"sqlite:///{copy}"
        name = f"{parsed.database}_copy_{uuid.uuid4().hex[:6]}"
        admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:  # a template must have no other session
            connection.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": parsed.database})
            connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{parsed.database}"')
        admin.dispose()
        copies.append((parsed.set(database="postgres").render_as_string(hide_password=False), name))
        return parsed.set(database=name).render_as_string(hide_password=False)

    yield take
    for admin_url, name in copies:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def make_store(url: str, service: str = "restored") -> EventStore:
    store = EventStore(make_engine(url), service=service)
    store.create_schema()
    return store


def append(store: EventStore, stream: str, count: int, event_type: str = "Happened",
           metadata: Metadata | None = None) -> list[StoredEvent]:
    version = store.current_version(stream)
    return store.append(stream, version, [NewEvent(event_type, {"n": version + i + 1}) for i in range(count)],
                        metadata=metadata)


def publish_all(relay: Relay) -> None:
    while relay.publish_once():
        pass


def the_log(store: EventStore) -> list[tuple]:
    """Everything of every event, as stored."""
    with store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(
            "SELECT position, event_id, stream_id, version, event_type, schema_version, occurred_at_us, data, "
            "metadata FROM events ORDER BY position"))]


def stopped(store: EventStore) -> None:
    store.engine.dispose()  # a PostgreSQL template must have no session open


# -- the relay's check ----------------------------------------------------------------------------

@pytest.mark.broker
def test_the_relay_refuses_a_log_that_lost_published_events_and_recover_tail_puts_them_back(
        broker, database_url, snapshot, unique):
    topic = f"restored-{unique}.events"
    store = make_store(database_url)
    append(store, f"a-{unique}", 3)
    append(store, f"b-{unique}", 2)
    publish_all(Relay(store, topic=topic, bootstrap_servers=broker.bootstrap))
    stopped(store)
    backup = snapshot(database_url)  # positions 1-5, all published
    append(store, f"a-{unique}", 2)
    tail = append(store, f"c-{unique}", 2)  # positions 6-9, published after the backup
    relay = Relay(store, topic=topic, bootstrap_servers=broker.bootstrap)
    publish_all(relay)
    assert relay.checkpoint() == 9
    before = the_log(store)
    stopped(store)

    restored = make_store(backup)
    refused = Relay(restored, topic=topic, bootstrap_servers=broker.bootstrap)
    with pytest.raises(LogBehindTopic) as raised:
        refused.publish_once()
    message = str(raised.value)
    assert f"position 9 is on {topic}" in message and tail[-1].event_id in message
    assert "the log of restored ends at position 5" in message
    assert "python -m services.restored recover-tail" in message and "Backups and restore" in message
    assert len(read_topic(broker.bootstrap, topic)) == 9  # nothing published

    view = BrokerView(broker.bootstrap, "test-recover")
    try:
        dry = recover_tail(restored, topic, view, dry_run=True)
        assert dry.appended == (6, 7, 8, 9) and restored.last_position() == 5
        recovered = recover_tail(restored, topic, view)
        assert "appended 4 event(s)" in recovered.report() and "positions 6-9" in recovered.report()
        assert the_log(restored) == before  # exactly as they were
        assert recover_tail(restored, topic, view).appended == ()  # a second run finds nothing
    finally:
        view.close()
    assert restored.current_version(f"c-{unique}") == 2
    relay = Relay(restored, topic=topic, bootstrap_servers=broker.bootstrap)
    publish_all(relay)  # the check passes; the tail goes again (consumers dedupe by id)
    assert relay.checkpoint() == 9
    append(restored, f"d-{unique}", 1)
    publish_all(relay)
    records = read_topic(broker.bootstrap, topic)
    assert {json.loads(r.value)["position"] for r in records} == set(range(1, 11))


@pytest.mark.broker
def test_the_relay_refuses_a_log_written_to_after_a_restore(broker, database_url, snapshot, unique):
    topic = f"restored-{unique}.events"
    store = make_store(database_url)
    append(store, f"a-{unique}", 2)
    publish_all(Relay(store, topic=topic, bootstrap_servers=broker.bootstrap))
    stopped(store)
    backup = snapshot(database_url)
    published = append(store, f"a-{unique}", 2)  # positions 3-4 on the topic
    publish_all(Relay(store, topic=topic, bootstrap_servers=broker.bootstrap))
    stopped(store)

    restored = make_store(backup)
    other = append(restored, f"b-{unique}", 3)  # the API wrote before anyone noticed: positions 3-5
    with pytest.raises(LogBehindTopic) as raised:
        Relay(restored, topic=topic, bootstrap_servers=broker.bootstrap).publish_once()
    assert (f"position 4 holds event {other[1].event_id} in the log of restored but event "
            f"{published[1].event_id} on {topic}") in str(raised.value)
    view = BrokerView(broker.bootstrap, "test-recover")
    try:
        with pytest.raises(TailNotRecoverable, match="written to after the restore"):
            recover_tail(restored, topic, view)
    finally:
        view.close()
    assert restored.last_position() == 5  # nothing changed
    assert len(read_topic(broker.bootstrap, topic)) == 4


@pytest.mark.broker
def test_the_relay_process_exits_with_code_4_and_the_message(own_broker, tmp_path):
    """``python -m <service> relay`` on a restored SQLite file: the refusal as an operator sees it."""
    url = f"sqlite:///{tmp_path}/drill.db"
    store = make_store(url, service="drill")
    append(store, "s-1", 3)
    relay = Relay(store, topic="drill.events", bootstrap_servers=own_broker.bootstrap)
    publish_all(relay)
    backup = tmp_path / "backup.db"
    with sqlite3.connect(tmp_path / "drill.db") as source, sqlite3.connect(backup) as target:
        source.backup(target)
    append(store, "s-1", 2)
    publish_all(relay)

    environment = {**os.environ, "DRILL_DATABASE_URL": f"sqlite:///{backup}",
                   "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tests.support.drill_service", "relay"], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 4, done.stderr
    assert "log behind topic: position 5 is on drill.events" in done.stderr
    assert "the log of drill ends at position 3" in done.stderr
    assert "python -m services.drill recover-tail" in done.stderr


def test_an_empty_or_recreated_topic_is_not_a_restore(sqlite_url, unique):
    broker = FakeBroker()
    topic = f"restored-{unique}.events"
    store = make_store(sqlite_url)
    append(store, f"a-{unique}", 4)
    relay = Relay(store, topic=topic, bootstrap_servers="unused", producer_factory=broker.producer,
                  broker_view=broker.view(), verify_seconds=0)
    publish_all(relay)
    broker.wipe()  # the broker came back empty
    relay = Relay(store, topic=topic, bootstrap_servers="unused", producer_factory=broker.producer,
                  broker_view=broker.view(), verify_seconds=0)
    publish_all(relay)
    assert [json.loads(r.value)["position"] for r in broker.records(topic)] == [1, 2, 3, 4]
    broker.append(topic, key=b"by-hand", value=b"not an envelope")  # the last record of its partition
    relay = Relay(store, topic=topic, bootstrap_servers="unused", producer_factory=broker.producer,
                  broker_view=broker.view(), verify_seconds=0)
    assert relay.publish_once() == 0  # compared what it could, refused nothing


def test_recover_tail_refuses_a_tail_the_topic_no_longer_holds(sqlite_url, unique):
    broker = FakeBroker()
    topic = f"restored-{unique}.events"
    store = make_store(sqlite_url)
    store.append(f"a-{unique}", 0, [NewEvent("Happened", {"n": n}) for n in range(6)])
    events = store.read_all(0, 100)
    broker.create_topic(topic, 1)
    for event in events:
        broker.append(topic, key=event.stream_id.encode(), value=event.to_json(), partition=0)
    broker.delete_before(topic, 0, 4)  # retention: positions 1-4 gone from the topic
    restored = make_store(f"sqlite:///{Path(sqlite_url.removeprefix('sqlite:///')).parent}/restored.db")
    restored.append(f"a-{unique}", 0, [NewEvent("Happened", {"n": 0})])  # the restored log ends at 1
    with pytest.raises(TailNotRecoverable, match=r"3 position\(s\) .*\(first 2, last 4; retention"):
        recover_tail(restored, topic, broker.view())
    assert restored.last_position() == 1


# -- consumers after a restore --------------------------------------------------------------------

def envelope(stream: str, version: int) -> StoredEvent:
    return StoredEvent(event_id=str(uuid.uuid4()), event_type="Happened", schema_version=1, stream_id=stream,
                       version=version, position=version, occurred_at=utc_now(), data={},
                       metadata={"actor": None, "correlation_id": None, "causation_id": None})


def effect_ids(engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(sa.select(effects.c.event_id)).scalars())


@pytest.mark.broker
def test_a_consumer_whose_database_was_restored_applies_the_lost_effects_once(
        broker, database_url, snapshot, unique):
    topic, group = f"restoredsource-{unique}.events", f"restored-{unique}"
    ensure_topics(broker.bootstrap, [topic, f"{topic}.dlq"])
    engine = make_engine(database_url)
    EventStore(engine, service="restored").create_schema()
    effects.create(engine, checkfirst=True)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")

    def send(*events: StoredEvent) -> None:
        for event in events:
            producer.send(topic, key=event.stream_id.encode(), value=event.to_json())
        producer.flush()

    def consumer(on) -> EventConsumer:
        return EventConsumer(engine=on, group_id=group, topics=[topic], handlers={"Happened": record_effect},
                             bootstrap_servers=broker.bootstrap)

    try:
        early = [envelope(f"s-{unique}-{n % 3}", n) for n in range(1, 6)]
        send(*early)
        consume_until(consumer(engine), lambda: committed_to_end(broker.bootstrap, group, topic), timeout=90)
        assert effect_ids(engine) == sorted(e.event_id for e in early)
        engine.dispose()
        backup = snapshot(database_url)
        late = [envelope(f"s-{unique}-{n % 3}", n) for n in range(6, 11)]
        send(*late)
        consume_until(consumer(engine), lambda: committed_to_end(broker.bootstrap, group, topic), timeout=90)
        assert len(effect_ids(engine)) == 10
        engine.dispose()

        restored = make_engine(backup)  # the group's offsets on Kafka are at the end; the database's at 5
        assert effect_ids(restored) == sorted(e.event_id for e in early)
        send(early[1], late[2], late[2])  # redeliveries: one applied before the backup, one after
        every = sorted(e.event_id for e in early + late)
        consume_until(consumer(restored), lambda: len(effect_ids(restored)) >= 10
                      and committed_to_end(broker.bootstrap, group, topic), timeout=90,
                      what="the effects lost with the restore were not applied again")
        assert effect_ids(restored) == every  # each exactly once
        with restored.connect() as connection:
            assert connection.execute(sa.select(sa.func.count()).select_from(inbox_table)).scalar() == 10
            kept = dict(connection.execute(sa.select(consumer_offsets_table.c.partition,
                                                     consumer_offsets_table.c["offset"])).all())
        view = BrokerView(broker.bootstrap, "test-offsets")
        try:
            ends = view.end_offsets({topic: 3})
        finally:
            view.close()
        assert kept == {p: end for (_t, p), end in ends.items() if end}
        restored.dispose()
    finally:
        producer.close()


# -- recover-tail and the service's own reactions -------------------------------------------------

@pytest.mark.broker
def test_after_recover_tail_the_services_reactions_are_not_made_twice(broker, database_url, snapshot, unique):
    """The restored service reacts to another service's events (each reaction a new event, caused by
    the source event): the reactions after the backup come back with the tail, and the consumer,
    starting again from the restored offsets, does not react to those sources a second time."""
    source_topic, topic, group = f"upstream-{unique}.events", f"restored-{unique}.events", f"restored-{unique}"
    ensure_topics(broker.bootstrap, [source_topic, f"{source_topic}.dlq"])
    store = make_store(database_url)

    def react(connection, event) -> None:  # not idempotent by itself: a new stream per reaction
        store.append(f"reaction-{uuid.uuid4().hex}", 0, [NewEvent("Reacted", {"to": event.event_id})],
                     metadata=Metadata.caused_by(event), connection=connection)

    def consumer(on: EventStore) -> EventConsumer:
        return EventConsumer(engine=on.engine, group_id=group, topics=[source_topic], handlers={"Happened": react},
                             bootstrap_servers=broker.bootstrap)

    def reactions(on: EventStore) -> list[str]:
        return sorted(e.data["to"] for e in on.iterate_all() if e.event_type == "Reacted")

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        sources = [envelope(f"u-{unique}", n) for n in range(1, 7)]
        for event in sources[:3]:
            producer.send(source_topic, key=event.stream_id.encode(), value=event.to_json())
        producer.flush()
        consume_until(consumer(store), lambda: committed_to_end(broker.bootstrap, group, source_topic), timeout=90)
        publish_all(Relay(store, topic=topic, bootstrap_servers=broker.bootstrap))
        stopped(store)
        backup = snapshot(database_url)
        for event in sources[3:]:
            producer.send(source_topic, key=event.stream_id.encode(), value=event.to_json())
        producer.flush()
        consume_until(consumer(store), lambda: committed_to_end(broker.bootstrap, group, source_topic), timeout=90)
        publish_all(Relay(store, topic=topic, bootstrap_servers=broker.bootstrap))
        assert reactions(store) == sorted(e.event_id for e in sources)
        stopped(store)

        restored = make_store(backup)
        store = restored  # the handler appends to the restored store from now on
        view = BrokerView(broker.bootstrap, "test-recover")
        try:
            recovered = recover_tail(restored, topic, view, subscriptions={group: (source_topic,)})
        finally:
            view.close()
        assert recovered.appended == (4, 5, 6) and recovered.marked == {group: 3}
        # A sentinel after the others: its reaction proves every source before it was handled.
        sentinel = envelope(f"u-{unique}", 7)
        producer.send(source_topic, key=sentinel.stream_id.encode(), value=sentinel.to_json())
        producer.flush()
        consume_until(consumer(restored), lambda: sentinel.event_id in reactions(restored), timeout=90)
        assert reactions(restored) == sorted(e.event_id for e in sources + [sentinel])  # none twice
        restored.engine.dispose()
    finally:
        producer.close()
