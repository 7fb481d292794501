"""Relays and consumers pace their rounds under load (services.kernel.kafka.paced_wait, issue 23): after a
round they wait 2 ms for each event it held, at most ``PIPELINE_PACE_MAX_SECONDS``, so that the next round
gathers more; a relay never waits less than its idle poll interval after a page it did not fill."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.kernel.consumer import EventConsumer
from services.kernel.kafka import paced_wait
from services.kernel.relay import Relay


@pytest.mark.parametrize(("events", "floor", "maximum", "wait"), [
    (5, 0.05, 0.1, 0.05),  # a small round (100 commands/s): the relay's idle interval, as before
    (40, 0.05, 0.1, 0.08),  # 2 ms an event
    (400, 0.05, 0.1, 0.1),  # at most the maximum
    (40, 0.0, 0.1, 0.08),  # a consumer: no floor
    (3, 0.0, 0.1, 0.006),
    (400, 0.05, 0.0, 0.05),  # pacing off: the relay's idle interval after every round, as before
    (400, 0.0, 0.0, 0.0),  # pacing off: a consumer polls again at once, as before
])
def test_the_wait_after_a_round_grows_with_what_it_held_up_to_the_maximum(events, floor, maximum, wait):
    assert paced_wait(events, floor, maximum) == pytest.approx(wait)


class Stop:
    """A stop event that records each wait and is set after ``rounds`` waits."""

    def __init__(self, rounds: int) -> None:
        self.rounds, self.waits = rounds, []

    def is_set(self) -> bool:
        return len(self.waits) >= self.rounds

    def wait(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 6))
        return self.is_set()


def test_a_relay_waits_after_each_round_by_what_it_published_and_not_after_a_full_page():
    relay = Relay(SimpleNamespace(service="test"), topic="t.events", bootstrap_servers="127.0.0.1:1",
                  batch_size=100, idle_seconds=0.05, pace_max_seconds=0.1)
    published = iter([0, 10, 40, 100, 70, 400, 20])
    relay.checkpoint = lambda: 0
    relay._topic = object()  # (known: no comparison with a broker first)
    relay.publish_once = lambda: next(published)
    stop = Stop(rounds=5)
    relay.run(stop)
    assert stop.waits == [0.05, 0.05, 0.08, 0.1, 0.05]  # (a full page, 100 or more: the next at once)


def test_a_consumer_waits_after_a_poll_that_brought_records_and_at_once_after_an_empty_or_a_full_one():
    consumer = EventConsumer(engine=None, group_id="g", topics=["t.events"], handlers={},
                             bootstrap_servers="127.0.0.1:1", pace_max_seconds=0.1)
    received = iter([0, 0, 12, 500, 0, 60, 3])  # (500: a full poll, a backlog: the next at once)
    polls = []

    def poll_once(_client):
        polls.append(1)
        return next(received)

    consumer._connect = lambda: object()
    consumer.poll_once = poll_once
    consumer._verify_due = lambda _client: False
    consumer.save_waiting_offsets = lambda due_only=True: None
    consumer._commit_before_leaving = consumer._disconnect = lambda _client: None
    consumer.view = SimpleNamespace(close=lambda: None)
    stop = Stop(rounds=3)
    consumer.run(stop)
    assert stop.waits == [0.024, 0.1, 0.006] and len(polls) == 7



def test_a_paced_wait_is_not_a_pause_after_which_the_relay_compares_with_the_broker_first():
    for pace in (0.0, 0.2, 1.0):
        relay = Relay(SimpleNamespace(service="test"), topic="t.events", bootstrap_servers="127.0.0.1:1",
                      pace_max_seconds=pace)
        assert relay.busy_seconds == pytest.approx(0.25 + pace)  # (0.25 s: the pause it compared after before)
