"""Fault drills with real processes against a real broker: outages, SIGKILLs, redeliveries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from services.kernel.db import make_engine
from services.kernel.events import NewEvent
from services.kernel.eventstore import EventStore
from services.kernel.kafka import TopicPolicy, ensure_topics
from services.kernel.relay import relay_checkpoints
from tests.conftest import TEST_SECRET
from tests.support.broker import committed_to_end, first_occurrences, read_topic
from tests.support.drill_service import DRILL_TOPIC, effects

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    environment = {**os.environ, "COCREATE_JWT_SECRET": TEST_SECRET, "PYTHONPATH": str(ROOT), **env}
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=environment, stdout=log, stderr=log)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition, timeout: float, message: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(message)


def projects_store(url: str) -> EventStore:
    store = EventStore(make_engine(url), service="projects")
    store.create_schema()
    return store


def append_round_robin(store: EventStore, streams: list[str], count: int) -> None:
    versions = {s: store.current_version(s) for s in streams}
    for i in range(count):
        stream = streams[i % len(streams)]
        store.append(stream, versions[stream], [NewEvent("Pledged", {"i": i})])
        versions[stream] += 1


def relay_failures(log_path: Path) -> int:
    """How many failed publishing rounds the relay has logged (each is retried)."""
    return log_path.read_text(errors="replace").count("publishing failed; retrying")


def relay_checkpoint(store: EventStore) -> int:
    with store.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.max(relay_checkpoints.c.position))).scalar() or 0


def assert_in_order_per_key(records, store: EventStore, expected_total: int) -> None:
    kept = first_occurrences(records)
    assert len(kept) == expected_total, f"{expected_total - len(kept)} events never reached the topic"
    by_key: dict[bytes, list[int]] = {}
    for record in kept:
        by_key.setdefault(record.key, []).append(json.loads(record.value)["version"])
    for key, versions in by_key.items():
        assert versions == list(range(1, store.current_version(key.decode()) + 1)), f"order broken for {key!r}"


def test_broker_down_while_500_events_are_appended(own_broker, tmp_path, unique):
    url = f"sqlite:///{tmp_path}/projects.db"
    store = projects_store(url)
    env = {"PROJECTS_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap,
           "PROJECTS_RELAY_BATCH_SIZE": "50"}
    relay = spawn(["services.projects", "relay"], env, tmp_path / "relay.log")
    try:
        first_streams = [f"project-{unique}-{i}" for i in range(5)]
        append_round_robin(store, first_streams, 20)
        wait_for(lambda: len(read_topic(own_broker.bootstrap, "projects.events", timeout=2)) >= 20, 60,
                 "the relay did not publish the first events")
        failed_before = relay_failures(tmp_path / "relay.log")
        own_broker.stop()  # memory storage: everything published so far is gone with it
        streams = [f"project-{unique}-{i}" for i in range(10, 17)]
        append_round_robin(store, streams, 500)
        # The relay has met the outage (two failed rounds: it failed, and retried, and failed) ...
        wait_for(lambda: relay_failures(tmp_path / "relay.log") >= failed_before + 2 or relay.poll() is not None,
                 120, "the relay never tried to publish while the broker was down")
        assert relay.poll() is None, "the relay must survive a broker outage"  # ... and is still there
        own_broker.start()
        records = []

        def arrived() -> bool:
            nonlocal records
            records = read_topic(own_broker.bootstrap, "projects.events", timeout=3)
            return len(first_occurrences(records)) >= 520

        # The broker came back empty: the 20 events it had acknowledged are published again too.
        wait_for(arrived, 120, "not all 520 events reached the topic after the broker came back")
    finally:
        stop(relay)
    assert_in_order_per_key(records, store, 520)
    assert {r.key.decode() for r in records} == set(first_streams + streams)


def test_relay_killed_mid_batch_and_restarted(own_broker, tmp_path, unique):
    url = f"sqlite:///{tmp_path}/projects.db"
    store = projects_store(url)
    total = 5000
    append_round_robin(store, [f"project-{unique}-{i}" for i in range(12)], total)
    env = {"PROJECTS_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap,
           "PROJECTS_RELAY_BATCH_SIZE": "25"}
    relay = spawn(["services.projects", "relay"], env, tmp_path / "relay.log")
    try:
        wait_for(lambda: relay_checkpoint(store) > 0, 60, "the relay never started publishing", interval=0.01)
        relay.send_signal(signal.SIGKILL)
        relay.wait(timeout=10)
        # Read to the end offsets (a short read would count too few and pass the check below falsely).
        killed_at = len(read_topic(own_broker.bootstrap, "projects.events", timeout=60))
        assert killed_at < total, "the relay finished before it could be killed: drill is void"
        relay = spawn(["services.projects", "relay"], env, tmp_path / "relay.log")
        records = []

        def complete() -> bool:
            nonlocal records
            records = read_topic(own_broker.bootstrap, "projects.events", timeout=3)
            return len(first_occurrences(records)) >= total

        wait_for(complete, 120, "the restarted relay did not publish every event")
    finally:
        stop(relay)
    assert_in_order_per_key(records, store, total)


def test_consumer_killed_mid_batch_and_restarted_applies_each_effect_once(own_broker, tmp_path, unique):
    url = f"sqlite:///{tmp_path}/drill.db"
    engine = make_engine(url)
    EventStore(engine, service="drill").create_schema()
    effects.create(engine, checkfirst=True)
    ensure_topics(own_broker.bootstrap, [DRILL_TOPIC, f"{DRILL_TOPIC}.dlq"])
    source = projects_store(f"sqlite:///{tmp_path}/source.db")
    total = 1000
    append_round_robin(source, [f"project-{unique}-{i}" for i in range(8)], total)
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap, acks="all")
    for event in source.iterate_all():
        producer.send(DRILL_TOPIC, key=event.stream_id.encode(), value=event.to_json())
    producer.flush()
    producer.close()
    env = {"DRILL_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap,
           "DRILL_HANDLER_DELAY": "0.003"}

    def counts() -> tuple[int, int]:
        with engine.connect() as connection:
            rows = connection.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(effects.c.event_id)))
                                      .select_from(effects)).one()
        return rows[0], rows[1]

    consumer = spawn(["tests.support.drill_service", "consumer", "drill.effects"], env, tmp_path / "consumer.log")
    try:
        wait_for(lambda: counts()[0] > 50, 90, "the consumer never applied anything")
        consumer.send_signal(signal.SIGKILL)
        consumer.wait(timeout=10)
        applied_before_kill = counts()[0]
        assert applied_before_kill < total, "the consumer finished before it could be killed: drill is void"
        consumer = spawn(["tests.support.drill_service", "consumer", "drill.effects"], env,
                         tmp_path / "consumer.log")
        wait_for(lambda: counts()[1] >= total, 120, "the restarted consumer did not apply every event")
        # Every record handled, redeliveries included (the group's offsets at the end of the topic):
        # any second effect would be there by now.
        wait_for(lambda: committed_to_end(own_broker.bootstrap, "drill.effects", DRILL_TOPIC), 120,
                 "the restarted consumer did not commit the end of the topic")
    finally:
        stop(consumer)
    assert counts() == (total, total)


def test_a_topic_with_another_partition_count_stops_every_worker_that_uses_it(own_broker, tmp_path):
    # As a client that named the topic before its relay created it would leave it: 4 partitions.
    ensure_topics(own_broker.bootstrap, ["projects.events", "projects.events.dlq"], TopicPolicy(partitions=4))
    env = {**os.environ, "COCREATE_JWT_SECRET": TEST_SECRET, "PYTHONPATH": str(ROOT),
           "COCREATE_DATA_DIR": str(tmp_path / "var"), "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap}
    for command in (["services.projects", "relay"], ["services.volunteers", "consumer", "volunteers.project-labour"],
                    ["gateway", "feed"]):
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, (command, done.returncode, done.stderr[-2000:])
        assert ("topic mismatch: topic projects.events has 4 partitions but this worker is configured for 3 "
                "(COCREATE_KAFKA_TOPIC_PARTITIONS)") in done.stderr, (command, done.stderr[-2000:])
        assert "Fix: set that variable to 4" in done.stderr
    assert ensure_topics(own_broker.bootstrap, ["projects.events"], TopicPolicy(partitions=4))[
        "projects.events"].partitions == 4  # nothing was changed or created again
