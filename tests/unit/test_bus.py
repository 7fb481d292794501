"""The message bus on the in-memory event store: one handler per command, one unit of work each,
the clock and the ids injected, a refusal storing nothing."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from services.kernel.bus import MessageBus
from services.kernel.memory import InMemoryEventStore
from services.kernel.model import (
    Aggregate, Conflict, Forbidden, NewEvent, Principal, command, fields_of,
)

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)
ALICE = Principal("alice", "Alice", frozenset({"resident"}), "haicang")


@dataclasses.dataclass
class Counter(Aggregate):
    stream_prefix = "counter"
    label = "counter"
    total: int = 0

    def add(self, amount: int, by: str) -> list[NewEvent]:
        if amount <= 0:
            raise Conflict("only positive amounts", reason="not_positive")
        return [NewEvent("Added", {"amount": amount, "by": by})]

    def on_Added(self, d, _event) -> None:
        self.total += d["amount"]


@command
class Add:
    counter_id: str
    amount: int
    expected_version: int | None = None


@command
class AddTwice:
    counter_id: str
    other_id: str
    amount: int


@command
class Open:
    pass


def add(cmd: Add, uow) -> Counter:
    counter = uow.load(Counter, cmd.counter_id)
    if cmd.expected_version is not None:
        counter = uow.get(Counter, cmd.counter_id, expected_version=cmd.expected_version)
    uow.record(counter, counter.add(cmd.amount, uow.actor.person_id))
    return counter


def add_twice(cmd: AddTwice, uow) -> Counter:
    first, second = uow.load(Counter, cmd.counter_id), uow.load(Counter, cmd.other_id)
    uow.record(first, first.add(cmd.amount, uow.actor.person_id))
    uow.record(second, second.add(-cmd.amount, uow.actor.person_id))  # refused: nothing is kept
    return first


def open_counter(cmd: Open, uow) -> Counter:
    counter = uow.load(Counter, uow.new_id())
    uow.record(counter, [NewEvent("Added", {"amount": 1, "at": uow.now().isoformat(), "by": "-"})])
    return counter


@pytest.fixture
def bus() -> MessageBus:
    ids = iter(f"id{n}" for n in range(100))
    return MessageBus(InMemoryEventStore(service="test"), {Add: add, AddTwice: add_twice, Open: open_counter},
                      clock=lambda: T0, new_id=lambda: next(ids))


def test_a_command_runs_its_handler_and_returns_its_result_and_events(bus):
    outcome = bus.handle(Add(counter_id="c1", amount=3), actor=ALICE)
    assert (outcome.result.total, outcome.result.version) == (3, 1)
    assert [(e.event_type, e.data) for e in outcome.recorded] == [("Added", {"amount": 3, "by": "alice"})]
    assert outcome.first("Added", "amount") == 3 and outcome.first("Removed", "amount") is None
    again = bus.handle(Add(counter_id="c1", amount=4), actor=ALICE)
    assert (again.result.total, again.result.version) == (7, 2)


def test_the_clock_and_the_ids_are_the_injected_ones(bus):
    outcome = bus.handle(Open())
    assert outcome.result.id == "id0"
    assert outcome.recorded[0].data["at"] == T0.isoformat()


def test_a_refusal_stores_nothing_even_after_an_earlier_append_in_the_same_command(bus):
    with pytest.raises(Conflict) as refused:
        bus.handle(AddTwice(counter_id="c1", other_id="c2", amount=5), actor=ALICE)
    assert refused.value.reason == "not_positive"
    assert bus.store.last_position() == 0 and bus.store.load("counter-c1") == []


def test_a_stale_expected_version_is_a_conflict(bus):
    bus.handle(Add(counter_id="c1", amount=1), actor=ALICE)
    with pytest.raises(Conflict) as stale:
        bus.handle(Add(counter_id="c1", amount=1, expected_version=0), actor=ALICE)
    assert stale.value.reason == "concurrency_conflict"
    assert bus.store.current_version("counter-c1") == 1


def test_a_command_without_a_caller_cannot_act_for_one(bus):
    with pytest.raises(Forbidden) as nobody:
        bus.handle(Add(counter_id="c1", amount=1))
    assert nobody.value.reason == "no_caller"


def test_commands_are_frozen_and_need_their_handler():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Add(counter_id="c1", amount=1).amount = 2  # type: ignore[misc]
    assert fields_of(Add(counter_id="c1", amount=1)) == {"counter_id": "c1", "amount": 1, "expected_version": None}

    @dataclasses.dataclass
    class Mutable:
        x: int = 0

    with pytest.raises(TypeError, match="not a frozen dataclass"):
        MessageBus(InMemoryEventStore(), {Mutable: add})
    with pytest.raises(LookupError, match="no handler for the command Add"):
        MessageBus(InMemoryEventStore(), {}).handle(Add(counter_id="c1", amount=1), actor=ALICE)


# -- optimistic units: a handler that reads first (services.kernel.aggregate.reads_first) ----------

def _rerun_count(command: str) -> float:
    from services.kernel import metrics
    return metrics.COMMANDS_RERUN.labels(command)._value.get()


def _adding_after(store: InMemoryEventStore, runs: list[int], meanwhile):
    """An ``Add`` handler that reads first and calls ``meanwhile(counter, run)`` between its load
    and its record (another writer's work), keeping each run's loaded version in ``runs``."""
    from services.kernel.aggregate import reads_first

    @reads_first
    def add_late(cmd: Add, uow) -> Counter:
        counter = uow.load(Counter, cmd.counter_id)
        runs.append(counter.version)
        meanwhile(counter, len(runs))
        uow.record(counter, counter.add(cmd.amount, uow.actor.person_id))
        return counter

    return add_late


def test_a_handler_that_reads_first_is_run_again_in_the_turn_when_a_stream_it_loaded_moved():
    """Between its load and its first record another command appends to the stream it loaded: its
    first record finds the stream moved, writes nothing, and the bus runs it again from the start in
    the write transaction, where it decides on the new state (no lost update, no 409 to its caller)."""
    store = InMemoryEventStore(service="test")
    runs: list[int] = []

    def another_writer(counter: Counter, run: int) -> None:
        if run == 1:
            store.append(counter.stream_id, counter.version, [NewEvent("Added", {"amount": 10, "by": "bob"})])

    bus = MessageBus(store, {Add: _adding_after(store, runs, another_writer)})
    before = _rerun_count("Add")
    outcome = bus.handle(Add(counter_id="c1", amount=2), actor=ALICE)
    assert runs == [0, 1], "run again after the stream moved, on the state with the other writer's event"
    assert (outcome.result.total, outcome.result.version) == (12, 2)
    assert [(e.version, e.data["amount"]) for e in store.load("counter-c1")] == [(1, 10), (2, 2)]
    assert [e.version for e in outcome.recorded] == [2], "the first run recorded nothing"
    assert _rerun_count("Add") == before + 1
    again = bus.handle(Add(counter_id="c1", amount=3), actor=ALICE)
    assert runs == [0, 1, 2] and again.result.version == 3 and _rerun_count("Add") == before + 1


def test_a_handler_that_reads_first_runs_once_when_only_other_streams_moved():
    store = InMemoryEventStore(service="test")
    runs: list[int] = []

    def beside(_counter: Counter, run: int) -> None:
        store.append(f"counter-other{run}", 0, [NewEvent("Added", {"amount": 1, "by": "bob"})])

    before = _rerun_count("Add")
    outcome = MessageBus(store, {Add: _adding_after(store, runs, beside)}).handle(Add(counter_id="c1", amount=2),
                                                                                  actor=ALICE)
    assert runs == [0] and outcome.result.version == 1 and _rerun_count("Add") == before


def test_a_handler_that_reads_first_and_records_nothing_never_opens_a_write_transaction():
    from services.kernel.aggregate import reads_first

    store = InMemoryEventStore(service="test")
    opened: list[str] = []
    plain = store.write_transaction

    def write_transaction():
        opened.append("write")
        return plain()

    store.write_transaction = write_transaction

    @reads_first
    def refuse(cmd: Add, uow) -> Counter:
        counter = uow.load(Counter, cmd.counter_id)
        uow.record(counter, counter.add(cmd.amount, uow.actor.person_id))  # refused for 0 before it writes
        return counter

    bus = MessageBus(store, {Add: refuse})
    with pytest.raises(Conflict):
        bus.handle(Add(counter_id="c1", amount=0), actor=ALICE)
    assert opened == [] and store.last_position() == 0
    bus.handle(Add(counter_id="c1", amount=4), actor=ALICE)
    assert opened == ["write"] and store.current_version("counter-c1") == 1
