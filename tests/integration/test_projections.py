"""Read models: updated with the append (read your own write), and rebuilt from the log identically."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa

from services.feedback.service import DEFINITION as FEEDBACK
from services.kernel.errors import ConcurrencyError
from services.kernel.events import NewEvent
from services.kernel.eventstore import rebuild
from services.kernel.service import bootstrap, load_settings
from services.projects.service import DEFINITION as PROJECTS
from services.volunteers.service import DEFINITION as VOLUNTEERS
from tests.conftest import TEST_SECRET
from tests.support.drill_service import DEFINITION as DRILL


def snapshot(store) -> dict[str, list[tuple]]:
    tables = {}
    with store.engine.connect() as connection:
        for projection in store.projections:
            for table in projection.tables:
                rows = connection.execute(sa.select(table)).all()
                tables[table.name] = sorted(tuple(row) for row in rows)
    return tables


def fill(store, unique: str, count: int = 300) -> None:
    rng = random.Random(7)
    versions: dict[str, int] = {}
    for i in range(count):
        stream = f"{rng.choice(['project', 'card', 'rating'])}-{unique}-{rng.randrange(12)}"
        kind = rng.choice(["Proposed", "CoSigned", "Pledged"])
        version = versions.get(stream, 0)
        store.append(stream, version, [NewEvent(kind, {"amount_fen": rng.randrange(10_000), "i": i})])
        versions[stream] = version + 1


@pytest.mark.parametrize("page_size", [7, 5000])
@pytest.mark.parametrize("definition", [PROJECTS, VOLUNTEERS, FEEDBACK, DRILL], ids=lambda d: d.name)
def test_rebuilt_read_models_equal_the_incremental_ones(definition, page_size, database_url, unique, tmp_path):
    settings = load_settings(definition, environ={"COCREATE_JWT_SECRET": TEST_SECRET},
                             database_url=database_url, data_dir=tmp_path)
    container = bootstrap(definition, settings)
    store = container.store
    fill(store, unique)
    incremental = snapshot(store)
    assert sum(len(rows) for rows in incremental.values()) > 0
    with store.engine.begin() as connection:  # damage the read models: rebuild must not depend on them
        for projection in store.projections:
            for table in projection.tables:
                connection.execute(table.delete())
    assert rebuild(store, page_size=page_size) == 300  # small pages: rows continued across pages
    assert snapshot(store) == incremental


def test_read_model_changes_commit_with_the_append_or_not_at_all(database_url, unique, tmp_path):
    settings = load_settings(DRILL, environ={"COCREATE_JWT_SECRET": TEST_SECRET},
                             database_url=database_url, data_dir=tmp_path)
    store = bootstrap(DRILL, settings).store
    stream = f"project-{unique}"
    store.append(stream, 0, [NewEvent("Pledged", {"amount_fen": 500})])
    assert snapshot(store)["type_counts"] == [("Pledged", 1, 500)]  # visible straight after append
    with pytest.raises(ConcurrencyError):
        store.append(stream, 0, [NewEvent("Pledged", {"amount_fen": 700})])
    assert snapshot(store)["type_counts"] == [("Pledged", 1, 500)]
    summary = container_summary(store, stream)
    assert summary["version"] == 1 and summary["last_event_type"] == "Pledged"


def container_summary(store, stream):
    from services.kernel.history import stream_summary

    with store.engine.connect() as connection:
        return stream_summary(connection, stream)


def test_the_rebuild_command_replays_a_service_store(tmp_path, unique):
    import os
    import subprocess
    import sys
    from pathlib import Path

    url = f"sqlite:///{tmp_path}/projects.db"
    settings = load_settings(PROJECTS, environ={"COCREATE_JWT_SECRET": TEST_SECRET}, database_url=url)
    store = bootstrap(PROJECTS, settings).store
    fill(store, unique, count=40)
    before = snapshot(store)
    emptied = max((t for p in store.projections for t in p.tables), key=lambda t: len(before[t.name]))
    with store.engine.begin() as connection:
        connection.execute(emptied.delete())
    assert before[emptied.name] and snapshot(store)[emptied.name] == []
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "services.projects", "rebuild"], cwd=root, capture_output=True, text=True,
        env={**os.environ, "PROJECTS_DATABASE_URL": url}, timeout=60)  # commands need no token settings
    assert result.returncode == 0, result.stderr
    assert "from 40 events" in result.stdout
    assert snapshot(store) == before


def test_a_missing_setting_stops_a_worker_with_the_variable_named(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PROJECTS_DATABASE_URL": f"sqlite:///{tmp_path}/p.db", "PROJECTS_RELAY_BATCH_SIZE": "many"}
    result = subprocess.run([sys.executable, "-m", "services.projects", "relay"], cwd=root, capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "PROJECTS_RELAY_BATCH_SIZE" in result.stderr


def test_a_new_aggregate_is_loaded_as_its_views_class_and_its_row_is_written_without_being_read(
        database_url, unique, tmp_path):
    """An aggregate without a row in its view (a new one) is loaded as the view's class: its append
    writes the row from that state (no read of the row first) and a handler answering with the
    record has it already; an existing one is loaded from its row, as before."""
    from services.feedback.domain import Subject
    from services.feedback.views import SubjectRecord
    from services.kernel.aggregate import unit_of_work

    settings = load_settings(FEEDBACK, environ={"COCREATE_JWT_SECRET": TEST_SECRET},
                             database_url=database_url, data_dir=tmp_path)
    store = bootstrap(FEEDBACK, settings).store
    view = store.view_of(Subject)
    reads = []
    plain = view._read.first
    view._read.first = lambda connection, params: (reads.append(params["id"]), plain(connection, params))[1]
    body = {"kind": "service", "name": "便民服务", "community_id": f"c-{unique}"}
    with unit_of_work(store) as uow:
        subject = uow.load(Subject, f"s-{unique}")
        assert type(subject) is SubjectRecord and not subject.exists
        reads.clear()
        uow.record(subject, subject.register(None, body))
    assert reads == [], "the new row was read before it was written"
    at_head = view._read_at_head.first
    view._read_at_head.first = lambda connection, params: (reads.append(params["id"]), at_head(connection, params))[1]
    with unit_of_work(store) as uow:
        again = uow.load(Subject, f"s-{unique}")
    assert type(again) is SubjectRecord and again.version == 1 and again.name == "便民服务"
    assert reads == [f"s-{unique}"]  # an existing one: from its row


def test_a_command_loads_an_aggregate_in_one_statement_unless_its_row_is_behind_the_log(database_url, unique):
    """A command's load reads the aggregate's row and its stream's last version in one statement;
    the stream's events are read only when the row is behind them (appended by a writer that does
    not keep the view: an older release during a rolling upgrade), missing (a view added since) or
    no longer fits the class — and then the state is the fold of the whole log all the same."""
    from services.kernel.aggregate import AggregateView, unit_of_work
    from services.kernel.db import make_engine
    from services.kernel.eventstore import EventStore
    from tests.support.events import Crate

    view = AggregateView(Crate, f"crates_{unique[:8]}")
    engine = make_engine(database_url)
    store = EventStore(engine, service="drill", projections=[view])
    store.create_schema()
    without_view = EventStore(engine, service="drill")  # a writer that does not keep the view
    loads: list[int] = []
    plain = store.load

    def load(stream_id, **kwargs):
        loads.append(kwargs.get("after_version", 0))
        return plain(stream_id, **kwargs)

    store.load = load

    def loaded(aggregate_id: str) -> Crate:
        with unit_of_work(store) as uow:
            return uow.load(Crate, aggregate_id)

    try:
        new = loaded(f"new-{unique}")
        assert (new.version, new.items, loads) == (0, 0, []), "a new aggregate: one statement, no stream read"
        stream = f"crate-{unique}"
        store.append(stream, 0, [NewEvent("Packed", {"n": 2}), NewEvent("Packed", {"n": 3})])
        crate = loaded(unique)
        assert (crate.version, crate.items, loads) == (2, 5, []), "a row at the stream's head: nothing else read"

        without_view.append(stream, 2, [NewEvent("Packed", {"n": 4})])
        behind = loaded(unique)
        assert (behind.version, behind.items, loads) == (3, 9, [2]), "a row behind: the events after it"

        with engine.begin() as connection:
            connection.execute(view.table.update().values(state='{"id": "x", "version": 3, "gone": 1}'))
        loads.clear()
        unfit = loaded(unique)
        assert (unfit.version, unfit.items, loads) == (3, 9, [0]), "a row that no longer fits: the whole stream"

        with engine.begin() as connection:
            connection.execute(view.table.delete())
        loads.clear()
        missing = loaded(unique)
        assert (missing.version, missing.items, loads) == (3, 9, [0]), "no row: the whole stream"
    finally:
        with engine.begin() as connection:
            view.table.drop(connection)
        engine.dispose()


def test_an_update_sets_an_indexed_column_only_when_its_value_changes(database_url, unique):
    """SQLite rewrites the index entry of every column an UPDATE sets, changed or not: a view's
    update leaves out the indexed columns whose value stayed the same (a ballot's commit wrote two
    index pages of ``projects_view`` more for nothing), and sets one that changed; the row is what a
    rebuild makes of the log either way."""
    import dataclasses

    from services.kernel.aggregate import AggregateView
    from services.kernel.db import make_engine
    from services.kernel.eventstore import EventStore
    from services.kernel.model import Aggregate

    @dataclasses.dataclass
    class Parcel(Aggregate):
        stream_prefix = "parcel"
        owner: str = ""
        notes: int = 0

        def on_Owned(self, data, _event):
            self.owner = data["owner"]

        def on_Noted(self, _data, _event):
            self.notes += 1

    view = AggregateView(Parcel, f"parcels_{unique[:8]}", [
        sa.Column("owner", sa.String(100), nullable=False, index=True),
        sa.Column("notes", sa.Integer, nullable=False),
    ], lambda p: {"owner": p.owner, "notes": p.notes})
    engine = make_engine(database_url)
    store = EventStore(engine, service="drill", projections=[view])
    store.create_schema()
    updates: list[str] = []  # each UPDATE's SET clause, as run (its statement is run on the driver's cursor)
    plain = view._statement

    def statement(kind, values):
        prepared = plain(kind, values)
        if kind == "update":
            updates.append(prepared._sql(engine.dialect)[0].split("WHERE")[0])
        return prepared

    view._statement = statement

    stream = f"parcel-{unique}"
    store.append(stream, 0, [NewEvent("Owned", {"owner": "a"})])
    store.append(stream, 1, [NewEvent("Noted", {})])
    assert len(updates) == 1 and "owner" not in updates[0] and "notes" in updates[0], updates
    store.append(stream, 2, [NewEvent("Owned", {"owner": "b"})])
    assert len(updates) == 2 and "owner" in updates[1], updates
    store.append(stream, 3, [NewEvent("Noted", {})])
    with engine.connect() as connection:
        row = connection.execute(sa.select(view.table.c.owner, view.table.c.notes, view.table.c.version)).one()
        assert tuple(row) == ("b", 2, 4)
        assert connection.execute(sa.select(view.table.c.id).where(view.table.c.owner == "b")).scalar() == unique
    try:
        before = snapshot(store)
        assert rebuild(store) >= 4
        assert snapshot(store) == before
    finally:
        with engine.begin() as connection:
            view.table.drop(connection)
        engine.dispose()
