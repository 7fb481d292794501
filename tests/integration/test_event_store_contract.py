"""The event store's contract, run against the in-memory store (the unit tier's), SQLite always, and
PostgreSQL when TEST_POSTGRES_URL is set. Tests that need a database of their own (processes racing
on one file or server, the schema created by several processes) run on the two databases only."""

from __future__ import annotations

import json
import linecache
import multiprocessing
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.kernel.db import make_engine
from services.kernel.errors import ConcurrencyError
from services.kernel.events import Metadata, NewEvent, UpcasterChain
from services.kernel.eventstore import EventStore, events_table
from services.kernel.memory import InMemoryEventStore


def make_store(url: str, **kwargs) -> EventStore:
    store = EventStore(make_engine(url), service="contract", **kwargs)
    store.create_schema()
    return store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make(request):
    """A factory of empty stores of one backend: ``make(**kwargs)``."""
    if request.param == "memory":
        return lambda **kwargs: InMemoryEventStore(service="contract", **kwargs)
    url = request.getfixturevalue(f"{request.param}_url")
    return lambda **kwargs: make_store(url, **kwargs)


def ev(kind: str = "Happened", **data) -> NewEvent:
    return NewEvent(kind, data or {"n": 1})


def positions(store: EventStore) -> list[int]:
    return [e.position for e in store.iterate_all()]


def test_append_and_load_in_version_order(make, unique):
    store = make()
    stream = f"project-{unique}"
    stored = store.append(stream, 0, [ev(n=1), ev(n=2)], metadata=Metadata(actor="p1", correlation_id="c1"))
    store.append(stream, 2, [ev(n=3)])
    loaded = store.load(stream)
    assert [e.version for e in loaded] == [1, 2, 3]
    assert [e.data["n"] for e in loaded] == [1, 2, 3]
    assert [e.position for e in loaded] == [1, 2, 3]
    assert loaded[0].metadata == {"actor": "p1", "correlation_id": "c1", "causation_id": None}
    assert loaded[0].event_id == stored[0].event_id
    assert loaded[0].occurred_at.tzinfo is not None
    assert store.current_version(stream) == 3
    assert store.current_version(f"missing-{unique}") == 0


def test_conflicting_append_is_refused_and_changes_nothing(make, unique):
    store = make()
    stream = f"project-{unique}"
    store.append(stream, 0, [ev(n=1)])
    with pytest.raises(ConcurrencyError) as stale:
        store.append(stream, 0, [ev(n=99)])
    assert stale.value.actual_version == 1
    with pytest.raises(ConcurrencyError) as ahead:
        store.append(stream, 5, [ev(n=99)])  # ahead of the stream: would leave a version gap
    assert ahead.value.actual_version == 1
    with pytest.raises(ConcurrencyError) as ahead_with_more:
        store.append(stream, 2, [ev(n=98), ev(n=99)])
    assert ahead_with_more.value.actual_version == 1
    assert [e.data["n"] for e in store.load(stream)] == [1]
    assert store.last_position() == 1


def test_a_batch_is_atomic(make, unique):
    store = make()
    first = ev(n=1)
    store.append(f"a-{unique}", 0, [first])
    duplicate_id = NewEvent("Happened", {"n": 2}, event_id=first.event_id)
    with pytest.raises(ConcurrencyError):
        store.append(f"b-{unique}", 0, [ev(n=1), duplicate_id])
    assert store.load(f"b-{unique}") == []
    assert positions(store) == [1]


def test_streams_keep_their_own_order_while_positions_interleave(make, unique):
    store = make()
    for round_ in range(5):
        for name in ("a", "b", "c"):
            store.append(f"{name}-{unique}", round_, [ev(n=round_)])
    assert positions(store) == list(range(1, 16))
    for name in ("a", "b", "c"):
        events = store.load(f"{name}-{unique}")
        assert [e.version for e in events] == [1, 2, 3, 4, 5]
        assert [e.data["n"] for e in events] == [0, 1, 2, 3, 4]
        assert all(x.position < y.position for x, y in zip(events, events[1:]))


def test_two_threads_appending_never_leave_a_gap_or_interleave_batches(make, unique):
    store = make()
    per_thread, batch = 40, 3
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(per_thread):
                store.append(f"{name}-{unique}", i * batch, [ev(n=i) for _ in range(batch)])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    events = list(store.iterate_all(page_size=7))
    assert [e.position for e in events] == list(range(1, 2 * per_thread * batch + 1))
    # a batch's events are contiguous: no other writer's event sits inside it
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        assert len({e.stream_id for e in chunk}) == 1
        assert [e.version for e in chunk] == list(range(chunk[0].version, chunk[0].version + batch))


def test_two_threads_racing_on_one_stream_one_wins_each_round(make, unique):
    store = make()
    stream = f"race-{unique}"
    outcomes = {"ok": 0, "conflict": 0}
    lock = threading.Lock()
    for round_ in range(10):
        barrier = threading.Barrier(2)

        def contender() -> None:
            barrier.wait()
            try:
                store.append(stream, round_, [ev(n=round_)])
                result = "ok"
            except ConcurrencyError:
                result = "conflict"
            with lock:
                outcomes[result] += 1

        threads = [threading.Thread(target=contender) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outcomes == {"ok": 10, "conflict": 10}
    assert [e.version for e in store.load(stream)] == list(range(1, 11))
    assert positions(store) == list(range(1, 11))


def _append_in_process(url: str, stream: str, ready, start, results) -> None:
    store = EventStore(make_engine(url), service="contract")
    ready.put("ready")
    start.wait()
    try:
        store.append(stream, 0, [NewEvent("Happened", {"pid": multiprocessing.current_process().pid})])
        results.put("ok")
    except ConcurrencyError:
        results.put("conflict")
    except BaseException as exc:
        results.put(f"error: {exc!r}")


def test_two_processes_racing_on_one_stream(database_url, unique):
    store = make_store(database_url)
    stream = f"race-{unique}"
    context = multiprocessing.get_context("spawn")
    ready, start, results = context.Queue(), context.Event(), context.Queue()
    processes = [context.Process(target=_append_in_process, args=(database_url, stream, ready, start, results))
                 for _ in range(2)]
    for process in processes:
        process.start()
    for _ in processes:  # both imported, with a store, and waiting on the event
        assert ready.get(timeout=120) == "ready"
    start.set()
    for process in processes:
        process.join(timeout=60)
    outcomes = sorted(results.get(timeout=5) for _ in processes)
    assert outcomes == ["conflict", "ok"]
    assert [e.version for e in store.load(stream)] == [1]
    assert positions(store) == [1]


WRITE_LOCKS = ("BEGIN IMMEDIATE", "LOCK TABLE events IN EXCLUSIVE MODE")  # SQLite's and PostgreSQL's


def waiting_for_the_write_lock(thread: threading.Thread) -> bool:
    """``thread`` is inside the statement that serialises writers (``WRITE_LOCKS``, or SQLite's
    writers' queue and ``BEGIN IMMEDIATE`` in :mod:`services.kernel.db`), or taking the
    in-memory store's writer lock: where it can only wait while another write transaction is open."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "do_execute" and frame.f_locals.get("statement") in WRITE_LOCKS:
            return True
        # SQLite: write_transaction queues writers (WriterQueue.acquire), then runs BEGIN IMMEDIATE on
        # the driver itself
        if code.co_name in ("_begin_immediate", "acquire") and code.co_filename.endswith("kernel/db.py"):
            return True
        if code.co_name == "write_transaction" and code.co_filename.endswith("memory.py") and \
                linecache.getline(code.co_filename, frame.f_lineno).strip() == "with self._writer:":
            return True
        frame = frame.f_back
    return False


def test_a_reader_never_passes_a_gap_filled_later(make, unique):
    """A slow transaction holds the append lock; a later writer waits, so positions follow commit order."""
    store = make()
    store.append(f"base-{unique}", 0, [ev(n=0)])
    later_done = threading.Event()

    def later_writer() -> None:
        store.append(f"later-{unique}", 0, [ev(n=2)])
        later_done.set()

    with store.write_transaction() as connection:
        store.append(f"slow-{unique}", 0, [ev(n=1)], connection=connection)
        thread = threading.Thread(target=later_writer)
        thread.start()
        deadline = time.monotonic() + 30
        while not waiting_for_the_write_lock(thread) and not later_done.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not later_done.is_set(), "a second writer must wait for the open append transaction"
        assert waiting_for_the_write_lock(thread), "the second writer never reached the write lock"
        assert [e.position for e in store.read_all(0)] == [1], "uncommitted events are invisible"
    thread.join(timeout=30)
    assert later_done.is_set()
    events = store.read_all(0)
    assert [(e.position, e.stream_id) for e in events] == [
        (1, f"base-{unique}"), (2, f"slow-{unique}"), (3, f"later-{unique}")]


def test_the_last_position_asked_alone_sees_every_commit_of_another_writer(database_url, unique):
    """``last_position()`` without a transaction is one statement on a kept reader connection
    (``services.kernel.db.read_alone``): it must leave no snapshot open behind it, or the next
    question on that connection would be answered from the old snapshot."""
    reader, writer = make_store(database_url), make_store(database_url)  # two engines: as two processes
    start = reader.last_position()
    for n in range(1, 4):
        writer.append(f"project-{unique}", n - 1, [ev(n=n)])
        assert reader.last_position() == start + n
        with reader.read_transaction() as connection:
            assert reader.last_position(connection=connection) == start + n
    reader.engine.dispose()
    writer.engine.dispose()


def test_a_transaction_sees_its_own_appends_and_an_error_discards_them_all(make, unique):
    store = make()
    store.append(f"kept-{unique}", 0, [ev(n=0)])
    with pytest.raises(RuntimeError):
        with store.write_transaction() as connection:
            store.append(f"a-{unique}", 0, [ev(n=1)], connection=connection)
            store.append(f"b-{unique}", 0, [ev(n=2)], connection=connection)
            assert [e.data["n"] for e in store.load(f"a-{unique}", connection=connection)] == [1]
            assert store.current_version(f"b-{unique}", connection=connection) == 1
            assert store.last_position(connection=connection) == 3
            raise RuntimeError("the command failed after appending")
    assert store.load(f"a-{unique}") == [] and store.load(f"b-{unique}") == []
    assert positions(store) == [1]
    assert store.append(f"a-{unique}", 0, [ev(n=3)])[0].position == 2


def test_upcasters_run_on_read_and_stored_payloads_are_never_rewritten(make, unique):
    store = make()
    stream = f"project-{unique}"
    store.append(stream, 0, [NewEvent("ProjectProposed", {"title": "路灯", "cost": 12}, schema_version=1)])
    chain = UpcasterChain()
    chain.register("ProjectProposed", 1, lambda d: {**d, "cost_fen": d["cost"] * 100})
    chain.register("ProjectProposed", 2, lambda d: {k: v for k, v in d.items() if k != "cost"})
    store.upcasters = chain
    [event] = store.load(stream)
    assert event.schema_version == 3
    assert event.data == {"title": "路灯", "cost_fen": 1200}
    assert store.read_all(0)[0].data == {"title": "路灯", "cost_fen": 1200}
    store.upcasters = UpcasterChain()  # what is stored is still version 1, as it was appended
    [stored] = store.load(stream)
    assert (stored.schema_version, stored.data) == (1, {"title": "路灯", "cost": 12})
    if store.engine is not None:  # and so is the row itself
        with store.engine.connect() as connection:
            row = connection.execute(sa.select(events_table.c.schema_version, events_table.c.data)).one()
        assert row.schema_version == 1
        assert json.loads(row.data) == {"title": "路灯", "cost": 12}


def test_large_and_unicode_payloads_round_trip(make, unique):
    store = make()
    text = "共同缔造 海沧区 🏮 " * 40_000  # ~ 1 MB of UTF-8
    payload = {"text": text, "nested": {"list": list(range(1000)), "名称": "居民议事会"}, "null": None}
    store.append(f"big-{unique}", 0, [NewEvent("Big", payload)])
    [event] = store.load(f"big-{unique}")
    assert event.data == payload
    assert StoredEventRoundTrip.check(event)


class StoredEventRoundTrip:
    @staticmethod
    def check(event) -> bool:
        from services.kernel.events import StoredEvent

        return StoredEvent.from_json(event.to_json()) == event


def test_reads_by_version_and_by_time(make, unique):
    moments = iter(datetime(2026, 1, 1, 8, 0, tzinfo=timezone.utc) + timedelta(days=i) for i in range(10))
    store = make(clock=lambda: next(moments))
    stream = f"project-{unique}"
    for version in range(4):
        store.append(stream, version, [ev(n=version + 1)])
    assert [e.version for e in store.load(stream, up_to_version=2)] == [1, 2]
    as_of = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)
    assert [e.version for e in store.load(stream, as_of=as_of)] == [1, 2]
    assert [e.version for e in store.load(stream, as_of=as_of.astimezone(timezone(timedelta(hours=8))))] == [1, 2]
    assert store.load(stream, as_of=datetime(2025, 12, 31, tzinfo=timezone.utc)) == []
    assert store.load(stream)[2].occurred_at == datetime(2026, 1, 3, 8, 0, tzinfo=timezone.utc)


def test_read_all_pages_by_position(make, unique):
    store = make()
    for i in range(25):
        store.append(f"s{i % 4}-{unique}", i // 4, [ev(n=i)])
    page = store.read_all(10, limit=5)
    assert [e.position for e in page] == [11, 12, 13, 14, 15]
    assert [e.position for e in store.read_all(20, limit=100)] == [21, 22, 23, 24, 25]
    assert store.read_all(25) == []
    assert [e.position for e in store.read_all(0, limit=100, up_to_position=3)] == [1, 2, 3]
    assert [e.data["n"] for e in store.iterate_all(page_size=4)] == list(range(25))
    assert store.last_position() == 25


def test_schema_creation_is_safe_when_processes_start_together(database_url):
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_create_schema, args=(database_url,)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    store = make_store(database_url)
    assert store.append("after-schema", 0, [ev()])[0].position == 1


def _create_schema(url: str) -> None:
    EventStore(make_engine(url), service="contract").create_schema()
