"""The HTTP benchmark's anchors beyond hello-world: what the smallest app doing the same kind of
work gets, served by the same gunicorn settings and measured by the same load generator.

**Write anchor** (``bench.anchors:write_app()``): a hello-world Flask endpoint that runs one
command of the ``eventsourcing`` library (9.x, the bench extra) per request —
``POST /boxes/<id>/ballots`` with ``{"voter", "choice"}``: get the ballot box (an
``eventsourcing.domain.Aggregate``, replayed from its events), decide (a known choice, one ballot
per voter), save the new ``BallotCast`` event; 201 with the box's new version. Two sync workers
share one SQLite file, like ours; the boxes are created before the clock starts. Each pool of
requests has boxes of its own and holds :data:`bench.http.VOTERS_PER_BOX` ballots for each (each a
new voter), as each of our pools has projects of its own with as many representatives casting
their ballot on each: the same number of ballots per aggregate on both sides (eventsourcing replays
the box's events without a snapshot; ours starts from its view row of the project). A save that
loses the race for a version to the other worker (``IntegrityError``) is retried with a fresh get,
as a caller of ``Application.save`` would.

Durability, the same as ours (``services.kernel.db``: WAL, ``PRAGMA synchronous=FULL``, every
commit fsynced): eventsourcing's SQLite datastore (``eventsourcing.sqlite``) switches a file
database to WAL itself but sets no ``synchronous`` pragma, and has no environment variable or
constructor option for it (its settings are ``SQLITE_DBNAME``, ``SQLITE_LOCK_TIMEOUT``,
``SINGLE_ROW_TRACKING``, ``ORIGINATOR_ID_TYPE``, ``CREATE_TABLE``); a connection then has the
library's compiled default (FULL for the SQLite that CPython ships, but a build may define another).
So the application names :class:`DurableSQLiteFactory` as its ``PERSISTENCE_MODULE``: the library's
SQLite factory whose connection pool runs ``PRAGMA synchronous=FULL`` on each new connection;
``SQLITE_LOCK_TIMEOUT`` is 60 s (our busy timeout). :func:`open_boxes` checks that a connection
answers ``journal_mode=wal`` and ``synchronous=2`` (FULL) before the boxes are created. One
difference stays: eventsourcing opens a write transaction with a plain ``BEGIN`` after reading the
stream (optimistic: a conflict is an ``IntegrityError``, hence the retry); ours takes the write lock
first (``BEGIN IMMEDIATE``) and reads the aggregate's view row inside it.

**Composed anchor**: a hello-world gateway (:func:`bench.hello.composed_app`, gevent workers like
our gateway) calling three hello-world services (:data:`bench.hello.app`, sync workers like our
services) concurrently over HTTP and merging their JSON; see :mod:`bench.hello`.

:class:`WriteAnchor` and :class:`ComposedAnchor` start them on free ports for :mod:`bench.http`.
This module is also what the write anchor's gunicorn workers import: Flask and eventsourcing at
the top, nothing of the benchmark's own machinery (that is imported when an anchor is started).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError
from eventsourcing.sqlite import SQLiteConnectionPool, SQLiteFactory

CHOICES = frozenset({"yes", "no", "abstain"})
SAVE_ATTEMPTS = 5
LOCK_TIMEOUT_S = 60  # services.kernel.db.SQLITE_BUSY_TIMEOUT_MS


class Refused(Exception):
    pass


# -- the domain: a ballot box -------------------------------------------------------------------

class BallotBox(Aggregate):
    def __init__(self, name: str) -> None:
        self.name = name
        self.ballots: dict[str, str] = {}

    def cast(self, voter: str, choice: str) -> None:
        """Decide: a known choice, one ballot per voter."""
        if choice not in CHOICES:
            raise Refused(f"unknown choice {choice!r}")
        if voter in self.ballots:
            raise Refused(f"{voter} has voted already")
        self._ballot_cast(voter=voter, choice=choice)

    @event("BallotCast")
    def _ballot_cast(self, voter: str, choice: str) -> None:
        self.ballots[voter] = choice


# -- persistence: eventsourcing's SQLite, made durable --------------------------------------------

class DurableSQLiteConnectionPool(SQLiteConnectionPool):
    def _create_connection(self):
        connection = super()._create_connection()  # WAL for a file database, by the library itself
        connection._sqlite_conn.execute("PRAGMA synchronous=FULL")
        return connection


class DurableSQLiteFactory(SQLiteFactory):
    """``eventsourcing.sqlite.SQLiteFactory`` whose connections run ``PRAGMA synchronous=FULL``."""

    def __init__(self, env) -> None:
        super().__init__(env)
        plain = self.datastore.pool
        self.datastore.pool = DurableSQLiteConnectionPool(db_name=plain.db_name, lock_timeout=plain.lock_timeout)
        plain.close()  # it has opened no connection yet


def environment(db_path: str | Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": f"{__name__}:DurableSQLiteFactory", "SQLITE_DBNAME": str(db_path),
            "SQLITE_LOCK_TIMEOUT": str(LOCK_TIMEOUT_S)}


class Ballots(Application):
    def open_boxes(self, count: int) -> list[UUID]:
        boxes = [BallotBox(f"box {i}") for i in range(count)]
        self.save(*boxes)
        return [box.id for box in boxes]

    def cast(self, box_id: UUID, voter: str, choice: str) -> int:
        """One command: get, decide, save (again from a fresh get if the other worker saved first)."""
        for attempt in range(SAVE_ATTEMPTS):
            box = self.repository.get(box_id)
            box.cast(voter, choice)
            try:
                self.save(box)
            except IntegrityError:
                if attempt == SAVE_ATTEMPTS - 1:
                    raise
                continue
            return box.version
        raise AssertionError("unreachable")

    def pragmas(self) -> tuple[str, int]:
        with self.factory.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            return journal, cursor.fetchone()[0]


# -- the app: one command per request ------------------------------------------------------------

def write_app():
    """The write anchor's Flask app, for ``gunicorn 'bench.anchors:write_app()'``; the SQLite file is
    ``BENCH_WRITE_ANCHOR_DB``."""
    from flask import Flask, request

    app = Flask("write-anchor")
    ballots = Ballots(env=environment(os.environ["BENCH_WRITE_ANCHOR_DB"]))

    @app.get("/hello")
    def hello():
        return {"hello": "world"}

    @app.post("/boxes/<uuid:box_id>/ballots")
    def cast(box_id: UUID):
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("voter"), str) \
                or not isinstance(body.get("choice"), str):
            return {"message": "expected {voter: string, choice: string}"}, 422
        try:
            version = ballots.cast(box_id, body["voter"], body["choice"])
        except AggregateNotFoundError:
            return {"message": f"no ballot box {box_id}"}, 404
        except Refused as exc:
            return {"message": str(exc)}, 409
        return {"box_id": str(box_id), "version": version}, 201

    return app


# -- starting the anchors (the benchmark's side) -------------------------------------------------

def open_boxes(db_path: Path, count: int) -> list[UUID]:
    """Create the SQLite file (tables, WAL) and ``count`` ballot boxes; check its durability."""
    ballots = Ballots(env=environment(db_path))
    journal, synchronous = ballots.pragmas()
    if journal.lower() != "wal" or synchronous != 2:
        raise RuntimeError(f"write anchor: journal_mode={journal}, synchronous={synchronous}; "
                           "expected wal and 2 (FULL)")
    ids = ballots.open_boxes(count)
    ballots.close()
    with sqlite3.connect(db_path) as check:  # the mode is the file's: every worker's connection is WAL
        if check.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            raise RuntimeError("write anchor: the database file is not in WAL mode")
    return ids


def ballot_requests(boxes: list[UUID], count: int, pool: str) -> list:
    """``count`` new ballots, one voter each, spread round-robin over ``boxes``."""
    import json

    from bench.load import Request

    choices = ("yes", "no", "yes", "abstain")
    return [Request("POST", f"/boxes/{boxes[i % len(boxes)]}/ballots",
                    json.dumps({"voter": f"voter-{pool}-{i}", "choice": choices[i % len(choices)]}).encode())
            for i in range(count)]


class WriteAnchor:
    """The write anchor under gunicorn (2 sync workers), its boxes created before it starts."""

    def __init__(self, workdir: Path, boxes: int, voters_per_box: int) -> None:
        from bench.platform import HelloWorld

        self.db_path = workdir / "write-anchor" / "ballots.db"
        self.boxes_count = boxes
        self.voters_per_box = voters_per_box
        self.server = HelloWorld(workdir, "bench.anchors:write_app()", name="write-anchor",
                                 env={"BENCH_WRITE_ANCHOR_DB": str(self.db_path)})
        self.url = self.server.url
        self.boxes: list[UUID] = []
        self._taken = 0  # boxes given to pools so far

    def __enter__(self) -> "WriteAnchor":
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.boxes = open_boxes(self.db_path, self.boxes_count)
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)

    def requests(self, count: int, pool: str) -> list:
        """``count`` ballots on boxes of this pool's own, ``voters_per_box`` on each."""
        needed = -(-count // self.voters_per_box)
        if self._taken + needed > len(self.boxes):
            raise ValueError(f"the write anchor has {len(self.boxes) - self._taken} boxes left, {needed} needed")
        boxes = self.boxes[self._taken:self._taken + needed]
        self._taken += needed
        return ballot_requests(boxes, count, pool)

    def most_events_per_box(self) -> int:
        """The most events a box holds (its opening and its ballots)."""
        with sqlite3.connect(self.db_path) as db:
            return db.execute("SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM stored_events "
                              "GROUP BY originator_id)").fetchone()[0]

    def worker_rss_mb(self) -> list[float]:
        return self.server.worker_rss_mb()


class ComposedAnchor:
    """Three hello-world services (2 sync workers each) and a hello-world gateway in front of them
    (2 gevent workers, as ``make run`` serves ours), each under gunicorn on a free port."""

    WORKER_CONNECTIONS = "1200"  # the gateway's GATEWAY_WORKER_CONNECTIONS in the Procfile

    def __init__(self, workdir: Path) -> None:
        from bench.platform import HelloWorld

        self.services = [HelloWorld(workdir, name=f"hello-service-{i}") for i in range(3)]
        self.front = HelloWorld(workdir, "bench.hello:composed_app()", name="hello-gateway",
                                env={"GUNICORN_WORKER_CLASS": "gevent",
                                     "GUNICORN_WORKER_CONNECTIONS": self.WORKER_CONNECTIONS,
                                     "BENCH_HELLO_UPSTREAMS": ",".join(s.url for s in self.services)})
        self.url = self.front.url

    def __enter__(self) -> "ComposedAnchor":
        started = []
        try:
            for server in (*self.services, self.front):
                server.__enter__()
                started.append(server)
        except BaseException:
            for server in reversed(started):
                server.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for server in (self.front, *self.services):
            server.__exit__(*exc)

    def worker_rss_mb(self) -> list[float]:
        return self.front.worker_rss_mb()
