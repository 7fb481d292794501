"""The relay coming back whole after the broker lost data, against the in-memory fake broker.

The relay records each acknowledged round (positions, topic id, offsets per partition) and before
each round compares the newest with what the broker holds; on a loss it moves its checkpoint back
and publishes again from the event store. Here the broker is :mod:`tests.support.fake_broker`, so
every loss can be inflicted exactly: wiped, truncated mid-round, created again.
"""

from __future__ import annotations

import itertools
import json

import pytest

from services.kernel import metrics
from services.kernel.db import make_engine
from services.kernel.events import NewEvent
from services.kernel.eventstore import EventStore
from services.kernel.kafka import TopicMismatch, TopicMissing, TopicPolicy
from services.kernel.relay import Relay
from tests.support.fake_broker import FakeBroker

SERVICE = "relayrecovery"


def make_store(url: str) -> EventStore:
    store = EventStore(make_engine(url), service=SERVICE)
    store.create_schema()
    return store


def streams_by_partition(unique: str, partitions: int = 3) -> list[str]:
    """One stream id per partition: ``[stream on 0, stream on 1, ...]`` (keys hash as the producer's)."""
    found: dict[int, str] = {}
    for n in itertools.count():
        stream = f"s-{unique}-{n}"
        found.setdefault(FakeBroker.partition_for(stream.encode(), partitions), stream)
        if len(found) == partitions:
            return [found[p] for p in range(partitions)]
    raise AssertionError("unreachable")


def append_round_robin(store: EventStore, streams: list[str], count: int) -> None:
    """Events at positions 1..count, position p on ``streams[(p - 1) % len(streams)]``."""
    versions = {stream: store.current_version(stream) for stream in streams}
    start = store.last_position()
    for position in range(start + 1, start + count + 1):
        stream = streams[(position - 1) % len(streams)]
        store.append(stream, versions[stream], [NewEvent("Happened", {"position": position})])
        versions[stream] += 1


def make_relay(store: EventStore, broker: FakeBroker, topic: str, **kwargs) -> Relay:
    """A relay on the fake; ``verify_seconds=0`` unless given, so that every check asks for the
    true end offsets (a relay fetches them at most every ``verify_seconds``)."""
    producer = broker.producer()
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("verify_seconds", 0)
    return Relay(store, topic=topic, bootstrap_servers="unused", producer_factory=lambda: producer,
                 broker_view=broker.view(), **kwargs)


def publish_all(relay: Relay) -> int:
    published = 0
    for _ in range(1000):
        count = relay.publish_once()
        if count == 0:
            return published
        published += count
    raise AssertionError("the relay never caught up")


def positions_on(broker: FakeBroker, topic: str) -> list[int]:
    """The position of every record on the topic (duplicates kept), sorted."""
    return sorted(json.loads(record.value)["position"] for record in broker.records(topic))


def event_ids_on(broker: FakeBroker, topic: str) -> set[str]:
    return {dict(record.headers)["event_id"].decode() for record in broker.records(topic)}


def all_event_ids(store: EventStore) -> set[str]:
    return {event.event_id for event in store.read_all(0, 10_000)}


def losses(topic: str) -> float:
    return metrics.RELAY_BROKER_DATA_LOSS.labels(SERVICE, topic)._value.get()


def republished(topic: str) -> float:
    return metrics.RELAY_REPUBLISHED.labels(SERVICE, topic)._value.get()


@pytest.fixture
def store(sqlite_url) -> EventStore:
    return make_store(sqlite_url)


@pytest.fixture
def topic(unique) -> str:
    return f"relayrecovery-{unique}.events"


def test_a_broker_that_came_back_empty_gets_every_event_again_from_position_1(store, topic, unique):
    broker = FakeBroker()
    append_round_robin(store, streams_by_partition(unique), 12)
    relay = make_relay(store, broker, topic)
    assert publish_all(relay) == 12
    assert len(relay.rounds()) == 3 and relay.checkpoint() == 12
    lost_before, republished_before = losses(topic), republished(topic)

    broker.wipe()
    assert relay.publish_once() == 4  # the idle relay notices, rewinds to 0 and publishes the first page
    assert positions_on(broker, topic) == [1, 2, 3, 4]
    assert broker.has_topic(topic) and broker.has_topic(f"{topic}.dlq")  # created again, with its DLQ
    assert losses(topic) == lost_before + 1
    assert republished(topic) == republished_before + 12

    assert publish_all(relay) == 8
    assert positions_on(broker, topic) == list(range(1, 13))  # each exactly once on the new topic
    assert event_ids_on(broker, topic) == all_event_ids(store)
    assert relay.checkpoint() == 12
    assert losses(topic) == lost_before + 1  # counted once, not once per page


def test_a_truncated_partition_moves_the_checkpoint_back_to_the_newest_round_held_in_full(store, topic, unique):
    broker = FakeBroker()
    append_round_robin(store, streams_by_partition(unique), 20)  # 5 rounds of 4, each on all 3 partitions
    relay = make_relay(store, broker, topic, batch_size=4)
    assert publish_all(relay) == 20
    r1, r2, r3, r4, r5 = reversed(relay.rounds())
    assert [(r["first_position"], r["last_position"]) for r in (r1, r2, r3, r4, r5)] == [
        (1, 4), (5, 8), (9, 12), (13, 16), (17, 20)]
    # Partition 0 holds two of R4's records (positions 13 and 16): keep the first, lose the second
    # and everything of R5 there. R1..R3 are held in full.
    first, last = r4["offsets"][0]
    assert last > first
    broker.truncate(topic, 0, first + 1)
    assert all(broker.end(topic, p) > held for p, (_first, held) in r3["offsets"].items())
    lost_before, republished_before = losses(topic), republished(topic)

    assert relay.verify() == r3["first_position"] - 1 == 8
    assert relay.checkpoint() == 8
    assert [r["first_position"] for r in relay.rounds()] == [5, 1]  # the rounds after it are forgotten
    assert losses(topic) == lost_before + 1
    assert republished(topic) == republished_before + 12

    assert 16 not in positions_on(broker, topic)
    assert publish_all(relay) == 12
    assert event_ids_on(broker, topic) == all_event_ids(store)
    assert relay.checkpoint() == 20
    assert relay.verify() is None


def test_a_topic_created_again_with_a_new_id_moves_the_checkpoint_back_to_0(store, topic, unique):
    broker = FakeBroker()
    append_round_robin(store, streams_by_partition(unique), 8)
    relay = make_relay(store, broker, topic)
    assert publish_all(relay) == 8
    old_id = broker.topic_id(topic)
    lost_before = losses(topic)

    new_id = broker.recreate(topic)
    assert new_id != old_id
    assert relay.verify() == 0
    assert relay.checkpoint() == 0
    assert relay.rounds() == []
    assert losses(topic) == lost_before + 1

    append_round_robin(store, streams_by_partition(unique), 1)
    assert publish_all(relay) == 9
    assert positions_on(broker, topic) == list(range(1, 10))
    assert {r["topic_id"] for r in relay.rounds()} == {new_id}


def test_nothing_lost_means_no_rewind(store, topic, unique):
    broker = FakeBroker()
    append_round_robin(store, streams_by_partition(unique), 8)
    relay = make_relay(store, broker, topic)
    assert publish_all(relay) == 8
    broker.append(topic, key=b"someone-else", value=b"{}")  # more than acknowledged is not a loss
    lost_before, republished_before, rounds = losses(topic), republished(topic), relay.rounds()

    assert relay.verify() is None
    assert relay.checkpoint() == 8
    assert relay.rounds() == rounds
    assert losses(topic) == lost_before
    assert republished(topic) == republished_before
    assert relay.publish_once() == 0
    assert len(broker.records(topic)) == 9


@pytest.mark.parametrize("verify_seconds", [0, 60], ids=["fetching", "not-fetching"])
def test_a_list_offsets_answer_that_undercounts_is_not_a_loss(store, topic, unique, verify_seconds):
    broker = FakeBroker()
    append_round_robin(store, streams_by_partition(unique), 12)
    relay = make_relay(store, broker, topic, verify_seconds=verify_seconds)
    assert publish_all(relay) == 12
    broker.listed_behind = 3  # ListOffsets(latest) as the local broker answers it for batched records
    lost_before = losses(topic)

    assert relay.verify() is None
    assert relay.checkpoint() == 12
    assert losses(topic) == lost_before
    assert len(relay.rounds()) == 3


@pytest.mark.parametrize("suffix, partitions, expected, variable", [
    ("", 4, 3, "COCREATE_KAFKA_TOPIC_PARTITIONS"),
    (".dlq", 2, 1, "COCREATE_KAFKA_DLQ_PARTITIONS"),
])
def test_a_topic_with_another_partition_count_stops_the_relay(store, topic, unique, suffix, partitions, expected,
                                                              variable):
    broker = FakeBroker()
    broker.create_topic(topic + suffix, partitions)
    append_round_robin(store, streams_by_partition(unique), 4)
    relay = make_relay(store, broker, topic)
    with pytest.raises(TopicMismatch) as raised:
        relay.publish_once()
    message = str(raised.value)
    assert f"topic {topic}{suffix} has {partitions} partitions" in message
    assert f"configured for {expected}" in message
    assert variable in message
    assert relay.checkpoint() == 0
    assert broker.partition_count(topic + suffix) == partitions  # left as it is
    if not suffix:
        assert broker.records(topic) == []


def test_a_missing_topic_that_is_not_ours_to_create_stops_publishing_without_moving_the_checkpoint(
        store, topic, unique):
    broker = FakeBroker()
    append_round_robin(store, streams_by_partition(unique), 8)
    assert publish_all(make_relay(store, broker, topic)) == 8
    broker.wipe()
    lost_before = losses(topic)

    relay = make_relay(store, broker, topic, topic_policy=TopicPolicy(create=False))
    with pytest.raises(TopicMissing, match=topic):
        relay.publish_once()
    append_round_robin(store, streams_by_partition(unique), 1)
    with pytest.raises(TopicMissing):
        relay.publish_once()
    assert relay.checkpoint() == 8
    assert not broker.has_topic(topic) and not broker.has_topic(f"{topic}.dlq")
    assert losses(topic) == lost_before

    broker.create_topic(topic, 3)  # a KafkaTopic made them
    broker.create_topic(f"{topic}.dlq", 1)
    assert publish_all(relay) == 9
    assert positions_on(broker, topic) == list(range(1, 10))
    assert losses(topic) == lost_before + 1


def test_rounds_are_pruned_to_rounds_kept(store, topic, unique):
    broker = FakeBroker()
    store.append(f"s-{unique}", 0, [NewEvent("Happened", {"n": n}) for n in range(101)])
    relay = make_relay(store, broker, topic, batch_size=1, rounds_kept=5)
    for _ in range(99):
        assert relay.publish_once() == 1
    assert len(relay.rounds()) == 99  # pruned every 100 rounds, not every round
    assert relay.publish_once() == 1
    assert [r["first_position"] for r in relay.rounds()] == [100, 99, 98, 97, 96]
    assert relay.publish_once() == 1
    assert [r["first_position"] for r in relay.rounds()] == [101, 100, 99, 98, 97, 96]
    assert relay.verify() is None

    broker.wipe()  # still recovers from the kept rounds alone
    assert relay.verify() == 0
    assert publish_all(relay) == 101
    assert event_ids_on(broker, topic) == all_event_ids(store)


# -- losses outside the newest round (each round of a few events touches only some partitions) ------


def test_a_partition_lost_outside_the_newest_round_is_noticed(store, topic, unique):
    broker = FakeBroker()
    on_0, on_1, _ = streams_by_partition(unique)
    store.append(on_0, 0, [NewEvent("Happened", {"position": 1})])
    store.append(on_1, 0, [NewEvent("Happened", {"position": 2})])
    store.append(on_0, 1, [NewEvent("Happened", {"position": 3}), NewEvent("Happened", {"position": 4})])
    relay = make_relay(store, broker, topic, batch_size=2)
    assert publish_all(relay) == 4  # R1 on partitions 0 and 1, R2 on partition 0 only
    broker.truncate(topic, 1, 0)  # partition 1 lost position 2
    relay.verify()
    publish_all(relay)
    assert event_ids_on(broker, topic) == all_event_ids(store)


def test_the_rewind_goes_back_past_every_round_not_held(store, topic, unique):
    broker = FakeBroker()
    on_0, on_1, _ = streams_by_partition(unique)
    store.append(on_0, 0, [NewEvent("Happened", {"position": 1})])
    store.append(on_1, 0, [NewEvent("Happened", {"position": 2})])  # R1: partitions 0 and 1
    store.append(on_0, 1, [NewEvent("Happened", {"position": 3}), NewEvent("Happened", {"position": 4})])  # R2: 0
    store.append(on_0, 3, [NewEvent("Happened", {"position": 5})])
    store.append(on_1, 1, [NewEvent("Happened", {"position": 6})])  # R3: partitions 0 and 1
    relay = make_relay(store, broker, topic, batch_size=2)
    assert publish_all(relay) == 6
    broker.truncate(topic, 1, 0)  # partition 1 lost positions 2 and 6: R1 and R3 are not held, R2 is
    assert relay.verify() == 0
    publish_all(relay)
    assert event_ids_on(broker, topic) == all_event_ids(store)


def count_questions(relay: Relay) -> list[int]:
    """How many times the relay asks the broker which topics it holds (each comparison asks once
    at least): a one-item list, counted as it goes."""
    asked, topics = [0], relay.view.topics

    def counted(names):
        asked[0] += 1
        return topics(names)

    relay.view.topics = counted
    return asked


def test_a_busy_relay_compares_with_the_broker_after_a_pause_and_otherwise_every_verify_seconds(store, topic, unique):
    """Before every round the relay asked the broker twice (its topics, their end offsets): a quarter
    of a busy relay's time, and of the broker's for it (issue 23). Rounds that follow each other
    within ``busy_seconds`` compare at most every ``verify_seconds``; a round after a pause compares
    first, and with ``verify_seconds`` 0 every round does (the tests above)."""
    broker = FakeBroker()
    streams = streams_by_partition(unique)
    append_round_robin(store, streams, 4)
    relay = make_relay(store, broker, topic, verify_seconds=60)
    relay.busy_seconds = 60  # every round below follows the one before within it, however slow the machine
    asked = count_questions(relay)
    assert relay.publish_once() == 4  # the first round compares
    first = asked[0]
    assert first >= 1
    for _ in range(3):
        append_round_robin(store, streams, 4)
        assert relay.publish_once() == 4
    assert asked[0] == first  # busy: not asked again within verify_seconds

    relay.busy_seconds = 0  # the next round comes after a pause
    append_round_robin(store, streams, 4)
    assert relay.publish_once() == 4
    assert asked[0] == first + 1
    assert positions_on(broker, topic) == list(range(1, 21))


def test_a_busy_relay_whose_offsets_are_given_again_republishes_and_compares_before_its_next_round(
        store, topic, unique):
    """A round that does not compare first still finds a broker that lost records where it writes:
    the offsets it is given are ones acknowledged before. It moves back, and the round after it
    compares with the broker first."""
    broker = FakeBroker()
    streams = streams_by_partition(unique)
    append_round_robin(store, streams, 12)
    relay = make_relay(store, broker, topic, verify_seconds=60)
    relay.busy_seconds = 60
    assert publish_all(relay) == 12
    broker.truncate(topic, 0, broker.end(topic, 0) - 1)  # partition 0 lost its last record
    lost_before = losses(topic)
    asked = count_questions(relay)

    append_round_robin(store, streams, 4)  # the next round writes to partition 0 again
    assert relay.publish_once() == 0  # not compared before; given an offset acknowledged before: moved back
    assert asked[0] == 0
    assert losses(topic) == lost_before + 1
    assert relay.checkpoint() < 12

    publish_all(relay)
    assert asked[0] >= 1  # the round after the loss compared first
    assert event_ids_on(broker, topic) == all_event_ids(store)
    assert relay.checkpoint() == 16


def test_an_idle_relay_reports_no_lag_without_reading_the_log(store, topic, unique, monkeypatch):
    """An empty page after the checkpoint means nothing is waiting: the lag is 0, known without a
    read of the log's last position (an idle relay made one every ``idle_seconds``)."""
    broker = FakeBroker()
    append_round_robin(store, streams_by_partition(unique), 4)
    relay = make_relay(store, broker, topic, verify_seconds=60)
    assert publish_all(relay) == 4
    metrics.RELAY_LAG_EVENTS.labels(SERVICE).set(7)

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the idle relay read the log's last position")

    monkeypatch.setattr(store, "last_position", no_reading)
    assert relay.publish_once() == 0
    assert metrics.RELAY_LAG_EVENTS.labels(SERVICE)._value.get() == 0
