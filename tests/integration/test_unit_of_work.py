"""Optimistic units of work (:func:`services.kernel.aggregate.reads_first`) on SQLite and PostgreSQL:
a command that loads and decides outside the writers' turn, and is run again in it when a stream
it loaded moved before its first write."""

from __future__ import annotations

import threading

import pytest

from services.kernel import metrics
from services.kernel.aggregate import AggregateView, reads_first, unit_of_work
from services.kernel.bus import MessageBus
from services.kernel.db import make_engine
from services.kernel.events import NewEvent
from services.kernel.eventstore import EventStore
from services.kernel.model import command
from tests.support.events import Crate


@command
class Pack:
    crate_id: str
    n: int


@pytest.fixture
def store(database_url, unique):
    view = AggregateView(Crate, f"crates_{unique[:8]}")
    engine = make_engine(database_url)
    store = EventStore(engine, service="drill", projections=[view])
    store.create_schema()
    yield store
    with engine.begin() as connection:
        view.table.drop(connection)
    engine.dispose()


def pack_from_another_thread(store, crate_id: str, n: int) -> None:
    """Another writer's command, on a thread of its own: it must not wait for the reading one."""
    def pack():
        with unit_of_work(store) as uow:
            crate = uow.load(Crate, crate_id)
            uow.record(crate, [NewEvent("Packed", {"n": n})])

    writer = threading.Thread(target=pack)
    writer.start()
    writer.join(15)
    assert not writer.is_alive(), "another writer waited for a command that was only reading"


@pytest.mark.parametrize("loads_again", [False, True], ids=["load-once", "load-again"])
def test_a_command_that_reads_first_does_not_hold_the_turn_and_reruns_when_its_stream_moved(store, unique,
                                                                                           loads_again):
    """While the command reads, another writer appends to the stream it loaded (it can: the command
    holds no turn and no lock yet). The command's first record finds the stream moved and writes
    nothing; the bus runs it again in the write transaction, on the new state: both packs kept, no
    409. Loading the stream again after the other write (PostgreSQL reads each statement at its own
    moment) ends the first run at once."""
    runs: list[int] = []
    others: list[int] = []  # the other writer's packs, one per run until none is left

    @reads_first
    def pack(cmd: Pack, uow) -> Crate:
        crate = uow.load(Crate, cmd.crate_id)
        runs.append(crate.version)
        if others:
            pack_from_another_thread(store, cmd.crate_id, others.pop())
            if loads_again:
                crate = uow.load(Crate, cmd.crate_id)
        uow.record(crate, [NewEvent("Packed", {"n": cmd.n})])
        return crate

    bus = MessageBus(store, {Pack: pack})
    bus.handle(Pack(crate_id=unique, n=1))  # a first pack: the stream exists (version 1)
    runs.clear()
    others.append(10)
    before = metrics.COMMANDS_RERUN.labels("Pack")._value.get()
    outcome = bus.handle(Pack(crate_id=unique, n=2))
    assert runs == [1, 2], "run again on the stream as the other writer left it"
    assert (outcome.result.version, outcome.result.items) == (3, 13)
    assert [(e.version, e.data["n"]) for e in store.load(f"crate-{unique}")] == [(1, 1), (2, 10), (3, 2)]
    assert [e.version for e in outcome.recorded] == [3]
    assert metrics.COMMANDS_RERUN.labels("Pack")._value.get() == before + 1
    with store.read_transaction() as connection:
        row = store.view_of(Crate).get(connection, unique)
    assert (row.version, row.items) == (3, 13), "the read model as the log"


def test_a_command_that_reads_first_runs_once_when_other_streams_moved(store, unique):
    runs: list[int] = []

    @reads_first
    def pack(cmd: Pack, uow) -> Crate:
        crate = uow.load(Crate, cmd.crate_id)
        runs.append(crate.version)
        pack_from_another_thread(store, f"{cmd.crate_id}-beside-{len(runs)}", 5)
        uow.record(crate, [NewEvent("Packed", {"n": cmd.n})])
        return crate

    before = metrics.COMMANDS_RERUN.labels("Pack")._value.get()
    outcome = MessageBus(store, {Pack: pack}).handle(Pack(crate_id=unique, n=2))
    assert runs == [0] and (outcome.result.version, outcome.result.items) == (1, 2)
    assert metrics.COMMANDS_RERUN.labels("Pack")._value.get() == before
