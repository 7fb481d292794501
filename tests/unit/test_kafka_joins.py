"""``services.kernel.kafka.keep_completed_joins``: when a group join that finished between two polls
is used, and when the library is left to join again (the broker-backed test is
``tests/integration/test_consumer.py::test_a_join_the_broker_completes_between_two_polls_is_used``).

The coordinator here is a stand-in with the attributes of kafka-python 3.0's ``ConsumerCoordinator``
that the function relies on, with the library's own ``Future``, ``Generation`` and ``MemberState``."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from kafka.coordinator.base import Generation
from kafka.future import Future
from kafka.structs import MemberState

from services.kernel import kafka as kernel_kafka
from services.kernel.kafka import keep_completed_joins

ASSIGNMENT = b"assignment bytes"


class Coordinator:
    """What ``keep_completed_joins`` reads and calls of kafka-python's coordinator."""

    group_id = "test-group"

    def __init__(self) -> None:
        self.config = {"session_timeout_ms": 6_000, "heartbeat_interval_ms": 1_000}
        self._lock = threading.Lock()
        self._join_task = None
        self.rejoining = True
        self.rejoin_needed = True
        self.state = MemberState.REBALANCING
        self._generation = Generation(3, "member-1", "range")
        self.heartbeat_enabled = False
        self.completed: list[tuple] = []
        self.joined_again = 0

    def _enable_heartbeat(self) -> None:
        self.heartbeat_enabled = True

    async def _on_join_complete_async(self, generation_id, member_id, protocol, assignment) -> None:
        self.completed.append((generation_id, member_id, protocol, assignment))

    async def join_group_async(self, timeout_ms=None) -> bool:  # the library's own: a new JoinGroup
        self.joined_again += 1
        return False

    async def _do_join_and_sync_async(self) -> bytes:
        return ASSIGNMENT


def run(coroutine):
    """Run a coroutine that never suspends (the stand-ins do not)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine suspended")


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(kernel_kafka.time, "monotonic", lambda: now[0])
    return now


def joined_between_polls(clock):
    """A member whose join round ran (on the network thread) and finished with no poll waiting."""
    coordinator = Coordinator()
    keep_completed_joins(SimpleNamespace(_coordinator=coordinator))
    # the kernel's wrapper of the round notes when it ended; the library's task holds its result
    coordinator._join_task = Future().success(run(coordinator._do_join_and_sync_async()))
    return coordinator


def test_a_fresh_join_finished_between_two_polls_is_applied_as_the_library_applies_one(clock):
    coordinator = joined_between_polls(clock)
    clock[0] += 4.9  # under the session time-out less one heartbeat interval (5 s)
    assert run(coordinator.join_group_async(timeout_ms=200)) is True
    assert coordinator.completed == [(3, "member-1", "range", ASSIGNMENT)]
    assert coordinator.state is MemberState.STABLE and coordinator.heartbeat_enabled
    assert not coordinator.rejoining and not coordinator.rejoin_needed and coordinator._join_task is None
    assert coordinator.joined_again == 0


def test_a_join_older_than_the_session_allows_is_not_used(clock):
    """No heartbeat goes out during a join: after the session time-out the broker may have dropped
    the member and given its partitions to another; the library joins again."""
    coordinator = joined_between_polls(clock)
    clock[0] += 5.1
    assert run(coordinator.join_group_async(timeout_ms=200)) is False
    assert coordinator.completed == [] and coordinator.joined_again == 1
    assert coordinator.state is MemberState.REBALANCING and not coordinator.heartbeat_enabled


def test_a_join_whose_generation_was_reset_since_is_not_used(clock):
    """The member left the group (``close``/``unsubscribe`` reset its generation): not its assignment."""
    coordinator = joined_between_polls(clock)
    coordinator._generation = Generation(-1, "", None)
    coordinator.state = MemberState.UNJOINED
    assert run(coordinator.join_group_async(timeout_ms=200)) is False
    assert coordinator.completed == [] and coordinator.joined_again == 1


def test_a_failed_join_is_left_to_the_library(clock):
    coordinator = joined_between_polls(clock)
    coordinator._join_task = Future().failure(RuntimeError("rebalance in progress"))
    assert run(coordinator.join_group_async(timeout_ms=200)) is False
    assert coordinator.completed == [] and coordinator.joined_again == 1


def test_a_join_still_running_is_awaited_by_the_library(clock):
    coordinator = joined_between_polls(clock)
    coordinator._join_task = Future()  # not done: the library awaits the same task
    assert run(coordinator.join_group_async(timeout_ms=200)) is False
    assert coordinator.joined_again == 1 and coordinator.completed == []


def test_a_client_built_otherwise_is_refused_at_start():
    with pytest.raises(RuntimeError, match="kafka-python changed"):
        keep_completed_joins(SimpleNamespace(_coordinator=SimpleNamespace(group_id="g")))
