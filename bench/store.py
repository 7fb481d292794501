"""Event-store appends beside their anchors, and replay of a large log.

- ours: :class:`services.kernel.eventstore.EventStore` on SQLite (WAL, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE``), one event per transaction and batches of 100 events per transaction;
- ceiling: a bare ``sqlite3`` loop inserting the same rows into *our* table — its DDL is compiled
  from :data:`services.kernel.eventstore.events_table`, so a narrower table moves the ceiling too —
  with the same durability, a new id per event (the same time-ordered ids) and each event's JSON
  serialised per event with the same codec: what any store of this shape can reach on this disk;
- peer: the ``eventsourcing`` library's SQLite application recorder, made fair (issue 23): each
  event gets its own id and its payload serialised per event by the library's own JSON transcoder,
  inside the timed loop, as ours does; WAL with ``synchronous=FULL`` (SQLite's default in WAL,
  read back from the peer's connection and reported);
- PostgreSQL (ours) when ``TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from services.kernel.db import make_engine
from services.kernel.events import NewEvent, dumps
from services.kernel.eventstore import EventStore, events_table
from services.kernel.model import new_event_id

PAYLOAD = {"project_id": "p-0001", "person_id": "resident-42", "choice": "yes", "note": "同意修建休闲活动室"}


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


class Ours:
    """:class:`EventStore` appending ``batch`` events per transaction to ``streams`` streams in turn."""

    def __init__(self, url: str, streams: int, batch: int) -> None:
        self.store = EventStore(make_engine(url), service="bench", projections=[])
        self.store.create_schema()
        self.batch, self.versions, self.turn = batch, [0] * streams, 0

    def write(self, transactions: int) -> None:
        store, batch, versions = self.store, self.batch, self.versions
        for _ in range(transactions):
            s = self.turn % len(versions)
            store.append(f"project-{s}", versions[s], [NewEvent("BallotCast", PAYLOAD) for _ in range(batch)])
            versions[s] += batch
            self.turn += 1

    def close(self) -> None:
        self.store.engine.dispose()


def ours(url: str, events: int, batch: int) -> float:
    """Our rate appending ``events`` alone (PostgreSQL; SQLite's is measured in turn with its anchors)."""
    writer = Ours(url, max(1, events // (batch * 4)), batch)
    started = time.perf_counter()
    writer.write(events // batch)
    figure = rate(events // batch * batch, time.perf_counter() - started)
    writer.close()
    return figure


def events_ddl() -> list[str]:
    """Our ``events`` table and its indexes as SQLite DDL, compiled from the kernel's own table."""
    dialect = sqlite_dialect.dialect()
    return [str(sa.schema.CreateTable(events_table).compile(dialect=dialect))] + [
        str(sa.schema.CreateIndex(index).compile(dialect=dialect)) for index in events_table.indexes]


class Ceiling:
    """A bare ``sqlite3`` loop writing the same rows into our table (its DDL compiled from the kernel's)."""

    def __init__(self, path: Path, streams: int, batch: int) -> None:
        self.connection = connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        for statement in events_ddl():
            connection.execute(statement)
        self.meta = dumps({"actor": None, "causation_id": None, "correlation_id": None})
        self.batch, self.versions, self.turn, self.position = batch, [0] * streams, 0, 0

    def write(self, transactions: int) -> None:
        connection, batch, versions, meta = self.connection, self.batch, self.versions, self.meta
        for _ in range(transactions):
            s = self.turn % len(versions)
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO events (position, event_id, stream_id, version, event_type, schema_version, "
                "occurred_at_us, data, metadata) VALUES (?, ?, ?, ?, 'BallotCast', 1, ?, ?, ?)",
                [(self.position + k + 1, new_event_id(), f"project-{s}", versions[s] + k + 1, time.time_ns() // 1000,
                  dumps(PAYLOAD), meta)  # every store serialises every event
                 for k in range(batch)])
            connection.execute("COMMIT")
            versions[s] += batch
            self.position += batch
            self.turn += 1

    def close(self) -> None:
        self.connection.close()


class Peer:
    """The ``eventsourcing`` library's SQLite recorder, an id and a payload serialised per event."""

    def __init__(self, path: Path, streams: int, batch: int) -> None:
        from eventsourcing.persistence import JSONTranscoder, StoredEvent
        from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

        self.datastore = SQLiteDatastore(str(path))
        self.recorder = SQLiteApplicationRecorder(self.datastore)
        self.recorder.create_table()
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA synchronous")
            self.synchronous = cursor.fetchone()[0]  # what its connections run with
        self.transcoder, self.stored_event = JSONTranscoder(), StoredEvent
        self.streams = [uuid.uuid4() for _ in range(streams)]
        self.batch, self.versions, self.turn = batch, [0] * streams, 0

    def write(self, transactions: int) -> None:
        batch, versions, encode, event = self.batch, self.versions, self.transcoder.encode, self.stored_event
        for _ in range(transactions):
            s = self.turn % len(self.streams)
            self.recorder.insert_events([event(self.streams[s], versions[s] + k + 1, "bench:BallotCast",
                                               encode({**PAYLOAD, "event_id": str(uuid.uuid4())}))
                                         for k in range(batch)])
            versions[s] += batch
            self.turn += 1

    def close(self) -> None:
        self.datastore.close()


ROUNDS = 40  # the rounds of an SQLite append row: each writer's share of a round, in turn


def appends(workdir: Path, quick: bool) -> list[dict]:
    """SQLite: ours, the ceiling and the peer write in turn, :data:`ROUNDS` rounds of a few hundred
    events (one event per transaction) or a few thousand (batches) each, the order turning every
    round, each on a database of its own made before the clock starts. A figure is a writer's
    events over its time in all rounds; a target is the median of the rounds' own ratios. The disk's
    fsync time drifts within seconds (five rounds of 2,000 events each, one writer after the other,
    gave ours between 61% and 84% of the ceiling in one minute): writers measured in turn, a few
    tenths of a second apart, meet the same disk."""
    single, batched = (2_000, 20_000) if quick else (10_000, 200_000)
    rows = []
    for batch, events in ((1, single), (100, batched)):
        label = "one event per transaction" if batch == 1 else "batches of 100 events"
        streams = max(1, events // (batch * 4))
        per_round = events // batch // ROUNDS  # transactions of each writer in a round
        writers = {"ours": Ours(f"sqlite:///{workdir}/ours-{batch}.db", streams, batch),
                   "ceiling": Ceiling(workdir / f"ceiling-{batch}.db", streams, batch),
                   "peer": Peer(workdir / f"peer-{batch}.db", streams, batch)}
        seconds = {name: [] for name in writers}
        names = list(writers)
        for round_ in range(ROUNDS):
            for name in names[round_ % 3:] + names[:round_ % 3]:
                started = time.perf_counter()
                writers[name].write(per_round)
                seconds[name].append(time.perf_counter() - started)
        synchronous = writers["peer"].synchronous
        for writer in writers.values():
            writer.close()
        written = per_round * batch
        figures = {name: rate(written * ROUNDS, sum(times)) for name, times in seconds.items()}
        rates = {name: [rate(written, t) for t in times] for name, times in seconds.items()}
        to_peer = statistics.median(o / p for o, p in zip(rates["ours"], rates["peer"]))
        to_ceiling = statistics.median(o / c for o, c in zip(rates["ours"], rates["ceiling"]))
        rows.append({"measure": f"append, SQLite, {label}", "unit": "events/s", "ours": figures["ours"],
                     "anchors": {"eventsourcing (peer)": figures["peer"], "bare sqlite3 (ceiling)": figures["ceiling"]},
                     "extra": {"rounds": f"{ROUNDS}, {written:,} events of each writer in turn",
                               "ours per round": f"{min(rates['ours']):,.0f}–{max(rates['ours']):,.0f}",
                               "ours / ceiling (median of the rounds' ratios)": f"{to_ceiling:.1%}",
                               "ours / peer (median of the rounds' ratios)": f"{to_peer:.2f}×",
                               "synchronous (all three)": {2: "FULL", 3: "EXTRA"}.get(synchronous, synchronous)},
                     "targets": [{"what": f"≥ 1.0× peer ({to_peer:.2f}×)", "met": to_peer >= 1.0}] + (
                         [{"what": f"≥ 80% of ceiling ({to_ceiling:.1%})", "met": to_ceiling >= 0.8}]
                         if batch == 1 else [])})
    postgres = os.environ.get("TEST_POSTGRES_URL")
    if postgres:
        for batch, events in ((1, single // 2), (100, batched // 2)):
            url = _fresh_postgres(postgres)
            try:
                value = ours(url, events, batch)
            finally:
                _drop_postgres(postgres, url)
            rows.append({"measure": f"append, PostgreSQL, {'one per transaction' if batch == 1 else 'batches of 100'}",
                         "unit": "events/s", "ours": value, "anchors": {}, "targets": []})
    return rows


def _fresh_postgres(admin_url: str) -> str:
    import sqlalchemy as sa

    from services.kernel.db import normalise_url

    admin = sa.create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    name = f"cocreate_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.engine.make_url(normalise_url(admin_url)).set(database=name).render_as_string(hide_password=False)


def _drop_postgres(admin_url: str, url: str) -> None:
    import sqlalchemy as sa

    from services.kernel.db import normalise_url

    admin = sa.create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}"')
    admin.dispose()


# -- replay --------------------------------------------------------------------------------------

REPLAY_SCRIPT = r"""
import json, resource, sys, time
from services.feedback.views import STATS
from services.kernel.db import make_engine
from services.kernel.eventstore import EventStore, rebuild
store = EventStore(make_engine(sys.argv[1]), service="bench", projections=[STATS])
started = time.perf_counter()
count = rebuild(store)
elapsed = time.perf_counter() - started
print(json.dumps({"events": count, "seconds": elapsed,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def fill_ratings_log(path: Path, events: int, subjects: int) -> None:
    """``events`` RatingSubmitted events written straight into a store's table (fast bulk load)."""
    store = EventStore(make_engine(f"sqlite:///{path}"), service="bench", projections=[])
    store.create_schema()
    store.engine.dispose()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")  # loading the fixture, not measuring it
    now = time.time_ns() // 1000
    chunk = 50_000
    for start in range(0, events, chunk):
        rows = []
        for i in range(start, min(events, start + chunk)):
            # mostly satisfied, each subject a little differently: about 85% 4–5 overall
            draw = (i * 7919 + (i % subjects) * 37) % 100 + (i % subjects) % 13
            level = 5 if draw < 50 else 4 if draw < 85 else 3 if draw < 96 else 2 if draw < 104 else 1
            data = json.dumps({"rating_id": f"r{i}", "subject_id": f"s{i % subjects}", "subject_kind": "cadre",
                               "subject_name": f"干部{i % subjects}", "subject_person_id": None, "community_id": "c1",
                               "period": "2026-10", "person_id": f"resident-{i}", "level": level, "dimensions": {},
                               "comment": "", "source": {"kind": "resident"}, "rated_at": "2026-10-05T02:00:00Z"},
                              ensure_ascii=False)
            rows.append((i + 1, str(uuid.uuid4()), f"rating-r{i}", 1, "RatingSubmitted", 1, now, data, "{}"))
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO events (position, event_id, stream_id, version, event_type, schema_version, occurred_at_us, "
            "data, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        connection.execute("COMMIT")
    connection.close()


def replay(workdir: Path, quick: bool) -> list[dict]:
    """Rebuild ``subject_stats`` from logs of two sizes (the memory must not grow with the log);
    the larger log is kept as ``ratings.db`` for the ranking benchmark."""
    rows = []
    sizes = (20_000, 100_000) if quick else (100_000, 1_000_000)
    for events in sizes:
        path = workdir / ("ratings.db" if events == sizes[-1] else f"replay-{events}.db")
        fill_ratings_log(path, events, subjects=10_000)
        done = subprocess.run([sys.executable, "-c", REPLAY_SCRIPT, f"sqlite:///{path}"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        per_second = rate(figures["events"], figures["seconds"])
        rows.append({"measure": f"replay {events:,} rating events into subject_stats", "unit": "events/s",
                     "ours": per_second, "anchors": {},
                     "extra": {"peak RSS MB": round(figures["peak_rss_mb"], 1), "seconds": round(figures["seconds"], 1)},
                     "targets": [{"what": "≥ 100,000 events/s", "met": per_second >= 100_000},
                                 {"what": "peak memory < 300 MB, flat in the number of events",
                                  "met": figures["peak_rss_mb"] < 300}]})
        if path.name != "ratings.db":
            path.unlink(missing_ok=True)
    return rows
