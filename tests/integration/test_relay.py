"""The relay against a real broker: order, envelope, headers, checkpoint after acknowledgement."""

from __future__ import annotations

import json
import threading

import pytest

from services.kernel.db import make_engine
from services.kernel.events import Metadata, NewEvent, StoredEvent
from services.kernel.eventstore import EventStore
from services.kernel.relay import PublishFailed, Relay
from tests.support.broker import read_topic

pytestmark = pytest.mark.broker


def make_store(url: str) -> EventStore:
    store = EventStore(make_engine(url), service="relaytest")
    store.create_schema()
    return store


def test_relay_publishes_in_position_order_with_envelope_and_headers(broker, sqlite_url, unique):
    store = make_store(sqlite_url)
    topic = f"relaytest-{unique}.events"
    for i in range(30):
        stream = f"project-{unique}-{i % 3}"
        store.append(stream, i // 3, [NewEvent("Pledged", {"amount_fen": i, "名": "张三"})],
                     metadata=Metadata(actor="p-1", correlation_id=f"c-{i}"))
    relay = Relay(store, topic=topic, bootstrap_servers=broker.bootstrap, batch_size=8)
    published = 0
    while (count := relay.publish_once()) > 0:
        published += count
    assert published == 30
    assert relay.checkpoint() == 30
    records = read_topic(broker.bootstrap, topic, expected=30)
    assert len(records) == 30
    stored = {e.event_id: e for e in store.read_all(0, 100)}
    by_key: dict[bytes, list[int]] = {}
    for record in records:
        envelope = json.loads(record.value)
        event = StoredEvent.from_envelope(envelope)
        assert event == stored[event.event_id]
        assert record.key == event.stream_id.encode()
        headers = dict(record.headers)
        assert headers["event_type"] == b"Pledged"
        assert headers["schema_version"] == b"1"
        assert headers["event_id"] == event.event_id.encode()
        assert envelope["metadata"]["actor"] == "p-1"
        by_key.setdefault(record.key, []).append(event.version)
    assert len(by_key) == 3
    for versions in by_key.values():
        assert versions == sorted(versions) == list(range(1, 11))
    assert relay.publish_once() == 0


def test_checkpoint_does_not_move_when_the_broker_does_not_acknowledge(broker, sqlite_url, unique):
    store = make_store(sqlite_url)
    store.append(f"project-{unique}", 0, [NewEvent("Pledged", {"amount_fen": 1})])
    relay = Relay(store, topic=f"t-{unique}", bootstrap_servers=broker.bootstrap, producer_factory=_unreachable_producer)
    with pytest.raises(PublishFailed):
        relay.publish_once()
    assert relay.checkpoint() == 0


class _FailedFuture:
    is_done = True
    exception = RuntimeError("broker unreachable")

    def failed(self):
        return True


class _UnreachableProducer:
    """Only for the refusal path: a producer whose sends all fail (the same interface)."""

    def send(self, *args, **kwargs):
        return _FailedFuture()

    def flush(self, timeout=None):
        return None

    def close(self, timeout=None):
        return None


def _unreachable_producer():
    return _UnreachableProducer()


def test_relay_loop_catches_up_and_stops_on_request(broker, sqlite_url, unique):
    store = make_store(sqlite_url)
    topic = f"relaytest-{unique}.events"
    relay = Relay(store, topic=topic, bootstrap_servers=broker.bootstrap, idle_seconds=0.02)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    try:
        for i in range(50):
            store.append(f"card-{unique}", i, [NewEvent("HoursApproved", {"minutes": 30})])
        records = read_topic(broker.bootstrap, topic, expected=50)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert [json.loads(r.value)["version"] for r in records] == list(range(1, 51))
    assert relay.checkpoint() == 50
