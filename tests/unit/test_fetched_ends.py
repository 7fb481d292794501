"""The rule by which a broker view gives fetched end offsets again (services.kernel.kafka.FetchedEnds):
the real view's and the fake's. Against the local broker: tests/integration/test_broker_recovery.py."""

from __future__ import annotations

from services.kernel.kafka import FetchedEnds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


T0, T1 = ("t", 0), ("t", 1)


def kept(clock: Clock) -> FetchedEnds:
    ends = FetchedEnds(clock)
    ends.keep({T0: 1, T1: 4}, {T0: 3, T1: 5}, {"t": "id-1"})
    return ends


def test_ends_are_given_again_while_the_answers_and_ids_are_the_same_and_young_enough():
    clock = Clock()
    ends = kept(clock)
    clock.now += 29.9
    assert ends.reusable({T0: 1, T1: 4}, {"t": "id-1"}, 30) == {T0: 3, T1: 5}


def test_a_moved_answer_another_id_an_old_fetch_or_no_reuse_asked_means_a_fetch():
    clock = Clock()
    ends = kept(clock)
    assert ends.reusable({T0: 1, T1: 5}, {"t": "id-1"}, 30) is None  # a batch appended on partition 1
    assert ends.reusable({T0: 1, T1: 4}, {"t": "id-2"}, 30) is None  # the topic created again
    assert ends.reusable({T0: 1, T1: 4, ("t", 2): 0}, {"t": "id-1"}, 30) is None  # a partition never fetched
    assert ends.reusable({T0: 1, T1: 4}, {"t": "id-1"}, 0) is None  # not asked to reuse
    clock.now += 30
    assert ends.reusable({T0: 1, T1: 4}, {"t": "id-1"}, 30) is None  # too old
