"""EventConsumer.verify() against the in-memory fake broker view: the lag of every partition of the
subscribed topics, and the losses that make the consumer build a new Kafka client."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError, KafkaConnectionError

from services.kernel import metrics
from services.kernel.consumer import EventConsumer
from services.kernel.db import make_engine
from tests.support.fake_broker import FakeBroker


def lag(group: str, topic: str, partition: int) -> float:
    return metrics.CONSUMER_LAG.labels(group, topic, str(partition))._value.get()


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def group(unique) -> str:
    return f"recovery-{unique}"


@pytest.fixture
def topics(unique, broker) -> list[str]:
    names = [f"a-{unique}.events", f"b-{unique}.events"]
    for name in names:
        broker.create_topic(name, 3)
        broker.create_topic(f"{name}.dlq", 1)
    return names


def fill(broker: FakeBroker, topic: str, partition: int, count: int) -> None:
    for n in range(count):
        broker.append(topic, key=b"k", value=f"{n}".encode(), partition=partition)


def connected(broker: FakeBroker, group: str, topics: list[str], sqlite_url: str) -> EventConsumer:
    """An EventConsumer in the state its ``_connect`` leaves (no Kafka client: verify needs none)."""
    consumer = EventConsumer(engine=make_engine(sqlite_url), group_id=group, topics=topics, handlers={},
                             bootstrap_servers="unused", broker_view=broker.view())
    consumer._topic_ids = {topic: broker.topic_id(topic) for topic in topics}
    return consumer


def test_lag_is_reported_for_every_partition_held_or_not_committed_or_not(broker, group, topics, sqlite_url):
    a, b = topics
    fill(broker, a, 0, 5)  # nothing committed: end - begin = 5
    fill(broker, a, 1, 7)
    broker.delete_before(a, 1, 2)  # nothing committed, records before 2 deleted: 7 - 2 = 5
    fill(broker, a, 2, 4)
    broker.commit(group, a, 2, 1)  # 4 - 1 = 3
    # b/0 is empty: 0
    fill(broker, b, 1, 2)
    broker.commit(group, b, 1, 2)  # all consumed: 0
    fill(broker, b, 2, 6)
    broker.commit(group, b, 2, 4)  # 6 - 4 = 2
    broker.commit("another-group", a, 0, 5)  # another group's progress is not ours
    for topic in topics:
        for partition in range(3):
            metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(99)  # so every value is seen set

    consumer = connected(broker, group, topics, sqlite_url)
    assert consumer.verify(None) is True
    assert {(t, p): lag(group, t, p) for t in topics for p in range(3)} == {
        (a, 0): 5, (a, 1): 5, (a, 2): 3, (b, 0): 0, (b, 1): 0, (b, 2): 2}

    fill(broker, b, 0, 3)
    broker.commit(group, a, 0, 4)
    assert consumer.verify() is True
    assert lag(group, b, 0) == 3 and lag(group, a, 0) == 1


def test_a_topic_created_again_is_a_loss(broker, group, topics, sqlite_url):
    consumer = connected(broker, group, topics, sqlite_url)
    assert consumer.verify() is True
    broker.recreate(topics[1])
    assert consumer.verify() is False


def test_a_missing_topic_is_a_loss(broker, group, topics, sqlite_url):
    consumer = connected(broker, group, topics, sqlite_url)
    assert consumer.verify() is True
    broker.delete_topic(topics[0])
    assert consumer.verify() is False


def test_a_broker_that_came_back_empty_is_a_loss(broker, group, topics, sqlite_url):
    consumer = connected(broker, group, topics, sqlite_url)
    broker.wipe()
    for topic in topics:  # even once the relay created them again
        broker.create_topic(topic, 3)
    assert consumer.verify() is False


def test_a_committed_offset_beyond_the_end_is_a_loss(broker, group, topics, sqlite_url):
    a = topics[0]
    fill(broker, a, 1, 4)
    broker.commit(group, a, 1, 4)
    consumer = connected(broker, group, topics, sqlite_url)
    assert consumer.verify() is True
    broker.truncate(a, 1, 2)  # the broker lost records the group had consumed
    assert consumer.verify() is False
    assert lag(group, a, 1) == 0


@pytest.mark.parametrize("on_broker", [2, None], ids=["behind", "forgotten"])
def test_an_offset_this_member_committed_that_the_broker_lost_is_a_loss(broker, group, topics, sqlite_url,
                                                                         on_broker):
    a = topics[0]
    fill(broker, a, 0, 5)
    broker.commit(group, a, 0, 3)
    consumer = connected(broker, group, topics, sqlite_url)
    consumer._committed[(a, 0)] = 3
    assert consumer.verify() is True
    broker.commit(group, a, 0, 4)  # another member of the group moved on: nothing lost
    assert consumer.verify() is True
    if on_broker is None:
        broker.forget_offsets(group, a, 0)
    else:
        broker.commit(group, a, 0, on_broker)
    assert consumer.verify() is False


@pytest.mark.parametrize("error", [KafkaError("broker away"), KafkaConnectionError(), KafkaTimeoutError()],
                         ids=lambda e: type(e).__name__)
def test_a_broker_that_does_not_answer_is_not_a_loss(broker, group, topics, sqlite_url, error):
    a = topics[0]
    fill(broker, a, 0, 5)
    consumer = connected(broker, group, topics, sqlite_url)
    assert consumer.verify() is True
    assert lag(group, a, 0) == 5
    broker.failure = error
    fill(broker, a, 0, 2)
    assert consumer.verify() is True  # the poll loop goes on; the next check decides
    assert lag(group, a, 0) == 5  # not reported from a failed check
    broker.failure = None
    broker.recreate(a)
    assert consumer.verify() is False  # and the next check does decide
