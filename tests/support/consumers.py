"""Running a service's consumer in the test's process until what the test waits for is there."""

from __future__ import annotations

import threading
import time

from services.kernel.consumer import EventConsumer
from services.kernel.eventstore import EventStore


def consume_until(consumer: EventConsumer, condition, timeout: float = 60.0,
                  what: str = "the consumer did not reach the expected state in time") -> None:
    """``consumer.run`` in a thread until ``condition()`` holds (or ``timeout``), then stopped.

    To assert that something did *not* happen, make ``condition`` a positive signal that the
    consumer had its chance: e.g. :func:`tests.support.broker.committed_to_end`, or the effect of
    a sentinel event sent after the ones that must have none."""
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), name="consumer-under-test")
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not condition():
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the consumer did not stop"
    assert condition(), what


def count_events(store: EventStore, event_type: str) -> int:
    return sum(1 for e in store.iterate_all() if e.event_type == event_type)
