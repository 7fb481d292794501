"""A real Kafka-protocol broker process (tansu, memory storage) for tests, and topic readers."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from services.kernel.broker import broker_command, free_port, wait_for_port
from services.kernel.kafka import BrokerView, no_auto_create

# free_port is the kernel's, offered here with the broker (tests/support/servers.py and platform.py
# take it from this module).
__all__ = ["Broker", "committed_to_end", "first_occurrences", "free_port", "read_topic"]


class Broker:
    """Start, stop and restart a tansu broker on a fixed port (it loses everything on stop)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.process = subprocess.Popen(broker_command(self.port), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would: the memory-only broker loses everything."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def read_topic(bootstrap: str, topic: str, expected: int | None = None, timeout: float = 30.0) -> list:
    """Every record of ``topic`` from the beginning (waiting until ``expected`` are there).

    The topic is looked up with the admin client first: a consumer that names a missing topic
    makes the local broker create it (with 4 partitions), which would spoil the drill."""
    deadline = time.monotonic() + timeout
    view = BrokerView(bootstrap, "test-reader")
    try:
        info = None
        while info is None and time.monotonic() < deadline:
            try:
                info = view.topics([topic]).get(topic)
            except KafkaError:
                info = None
            if info is None:
                time.sleep(0.2)
    finally:
        view.close()
    if info is None:
        return []
    consumer = no_auto_create(KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                            consumer_timeout_ms=1000, allow_auto_create_topics=False))
    try:
        assigned = [TopicPartition(topic, p) for p in range(info.partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list = []
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
            if expected is not None and len(records) >= expected:
                end = consumer.end_offsets(assigned)
                if all(consumer.position(tp) >= end[tp] for tp in assigned):
                    break
            if expected is None and not batch:
                end = consumer.end_offsets(assigned)
                if all(consumer.position(tp) >= end[tp] for tp in assigned):
                    break
        return records
    finally:
        consumer.close()


def first_occurrences(records: Iterable) -> list:
    """Records with redeliveries dropped (first occurrence of each event id kept)."""
    seen, kept = set(), []
    for record in records:
        event_id = dict(record.headers)["event_id"]
        if event_id not in seen:
            seen.add(event_id)
            kept.append(record)
    return kept


def committed_to_end(bootstrap: str, group: str, *topics: str) -> bool:
    """``group`` has committed the end offset of every partition of ``topics``: every record in
    them, redeliveries included, was handled (a consumer commits an offset only after the
    database commit of the effects before it). Asked through the admin client, which creates no
    topic; False while a topic is missing or the broker does not answer."""
    return not behind_the_end(bootstrap, group, *topics)


def behind_the_end(bootstrap: str, group: str, *topics: str) -> dict[str, object]:
    """What keeps ``group`` from having committed the end of ``topics``: ``{"topic/partition":
    (committed offset or None, end offset)}`` for each partition behind, ``{topic: "missing"}`` for a
    topic the broker does not hold, ``{"broker": error}`` when it does not answer; empty when the
    group is at the end of every partition."""
    view = BrokerView(bootstrap, "test-offsets")
    try:
        found = view.topics(topics)
        missing = {topic: "missing" for topic in topics if found.get(topic) is None}
        if missing:
            return missing
        ends = view.end_offsets({topic: found[topic].partitions for topic in topics})
        committed = view.committed(group)
    except (KafkaError, OSError) as exc:  # the broker is not (yet, or no longer) answering
        return {"broker": repr(exc)}
    finally:
        view.close()
    return {f"{topic}/{partition}": (committed.get((topic, partition)), end)
            for (topic, partition), end in sorted(ends.items())
            if end != 0 and committed.get((topic, partition), -1) < end}
