"""Database engines for event stores: SQLite (default, one file per service) or PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` (every commit is fsynced: durable), a busy
timeout so that concurrent writers wait instead of failing with "database is locked", and write
transactions opened with ``BEGIN IMMEDIATE`` so that writers are serialised from their first
statement (no deadlock-prone lock upgrades); before it they queue on the file's writers' lock
(:class:`WriterQueue`), which wakes the next writer as soon as one ends, where SQLite's busy handler
would sleep. Use :func:`write_transaction` for every write.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from services.kernel.metrics import process_id

SQLITE_BUSY_TIMEOUT_MS = 60_000


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


# Every process of a service creates or updates its tables when it starts (the API pods' init
# container `migrate`, each gunicorn worker, relay, consumer and job), several at once in a
# rollout: on PostgreSQL they take this advisory lock for it, one after the other.
SCHEMA_LOCK_KEY = 7202611


def lock_schema(connection: Connection) -> None:
    """Serialise this transaction's ``CREATE TABLE IF NOT EXISTS`` with every other process of the
    service doing the same (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already does)."""
    if not is_sqlite(connection):
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _switch_to_wal(cursor) -> None:
    """``PRAGMA journal_mode=WAL``, retried: switching a new file to WAL needs an exclusive lock
    and SQLite answers "database is locked" at once, without waiting for the busy timeout, when
    another process (the other gunicorn worker, the relay) is opening the same file at that moment.
    A worker that gave up here would fail to boot and take the whole app down."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(0.2, delay * 2)


def _sqlite_engine(url: str) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_size=8,
        max_overflow=8,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's begin() decide when a transaction starts (pysqlite otherwise defers it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # the driver's own execute: a statement through SQLAlchemy costs more than the BEGIN itself
        driver = connection.connection.dbapi_connection
        if driver.in_transaction:  # opened by write_transaction: SQLAlchemy joins it
            return
        driver.execute("BEGIN IMMEDIATE" if connection.get_execution_options().get("write") else "BEGIN DEFERRED")

    return engine


class WriterQueue:
    """The writers of one SQLite file, queued in the kernel instead of in SQLite's busy handler.

    A writer that finds SQLite's write lock taken does not wait on it: SQLite's busy handler sleeps
    and retries, with sleeps that grow to 100 ms, so a writer usually wakes long after the lock was
    released (a command holds it for about a millisecond). With two gunicorn workers writing one file
    that made every other write wait several milliseconds, and halved the rate (issue 23: ballots at
    217 req/s where the one-command anchor, which takes the lock only for its save, made 498). So the
    writers of a file first take an exclusive ``flock`` on a file beside it (``<db>-writers``): the
    kernel wakes the next one the moment the holder releases it, in every process. Threads of one
    process queue on a lock first (a ``flock`` does not exclude threads sharing one open file), and
    a process opens its own file after a fork (one inherited would be shared with the parent).

    Only :func:`write_transaction` takes it, around ``BEGIN IMMEDIATE`` … commit; a writer that does
    not (a schema change, SQLite's own tools) still meets SQLite's lock and its busy timeout, and
    cannot deadlock with one that does: whoever holds the ``flock`` needs nothing else but SQLite's
    lock, which its holder releases without asking for the ``flock``. A process that dies releases
    both. Memory databases have no file and no other process: no queue."""

    _queues: dict[str, "WriterQueue"] = {}
    _of_engine: "weakref.WeakKeyDictionary[Engine, WriterQueue | None]" = weakref.WeakKeyDictionary()
    _guard = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    @classmethod
    def of(cls, engine: Engine) -> "WriterQueue | None":
        try:
            return cls._of_engine[engine]
        except KeyError:
            queue = cls._of_engine[engine] = cls._of_file(engine)
            return queue

    @classmethod
    def _of_file(cls, engine: Engine) -> "WriterQueue | None":
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        path = os.path.abspath(database) + "-writers"
        queue = cls._queues.get(path)
        if queue is None:
            with cls._guard:
                queue = cls._queues.setdefault(path, cls(path))
        return queue

    def _file(self) -> int:
        if self._fd is None or self._pid != process_id():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = process_id()
        return self._fd

    @classmethod
    def _after_fork(cls) -> None:
        """In a forked child: its own thread locks (one held by a parent's thread at the fork would
        never be released here) and its own files (an inherited one shares the parent's lock)."""
        for queue in cls._queues.values():
            queue.threads, queue._fd = threading.Lock(), None

    def acquire(self) -> None:
        # as long as SQLite's busy timeout, and the same error after it (a thread of this process
        # stuck in a transaction); another process's turn ends with its transaction or its life
        if not self.threads.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError("database is locked (waited for this process's other writer)")
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self.threads.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self.threads.release()


os.register_at_fork(after_in_child=WriterQueue._after_fork)


def _begin_immediate(driver: sqlite3.Connection) -> None:
    """Take SQLite's write lock (waiting up to the busy timeout while another writer holds it)."""
    driver.execute("BEGIN IMMEDIATE")


def _commit(driver: sqlite3.Connection) -> None:
    """Commit a transaction SQLAlchemy never joined (``bench/profile_http.py`` times it here)."""
    driver.commit()


def _roll_back(connection: Connection, driver: sqlite3.Connection) -> None:
    """Roll back a transaction opened on the driver: through SQLAlchemy when it joined, else on the driver."""
    if connection.in_transaction():
        connection.rollback()
    elif driver.in_transaction:
        driver.rollback()


def write_transaction(engine: Engine):
    """A transaction that may write (a context manager giving its connection): serialised with
    other writers on SQLite.

    On SQLite the transaction is opened and ended on the driver itself, and SQLAlchemy joins it
    when the first statement runs through it (the "begin" listener sees it open): a command that
    appends through the driver's cursor alone pays no SQLAlchemy transaction at all (issue 23:
    about a tenth of a one-event append). On a file, writers take turns (:class:`WriterQueue`)
    and write through the connection kept for the engine between turns (``_writer_connection``).
    A class rather than a generator: this runs for every write, and the generator's context manager
    took 3 µs of a one-event append's 42 (on a memory file system, where no fsync hides it: issue 23)."""
    if not is_sqlite(engine):
        return _write_transaction(engine)
    return _SQLiteWrite(engine)


@contextlib.contextmanager
def _write_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect().execution_options(write=True) as connection:
        with connection.begin():
            yield connection


class _SQLiteWrite:
    __slots__ = ("engine", "queue", "connection", "driver")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> Connection:
        engine = self.engine
        queue = self.queue = WriterQueue.of(engine)
        if queue is None:  # a memory database: no other process, nothing kept
            connection = engine.connect()
            driver = connection.connection.dbapi_connection
        else:
            queue.acquire()
        try:
            if queue is not None:
                connection, driver = _writer_connection(engine)
            self.connection, self.driver = connection, driver
            _begin_immediate(driver)  # (the "begin" listener joins; no write option needed)
        except BaseException:
            if queue is None:
                connection.close()
            else:
                queue.release()
            raise
        return connection

    def __exit__(self, exc_type, exc, traceback) -> bool:
        connection, driver, queue = self.connection, self.driver, self.queue
        try:
            if exc_type is not None:
                _roll_back(connection, driver)
                if queue is not None and (connection.invalidated or connection.closed):
                    self.engine.__dict__.pop(_WRITER, None)  # not lent again: the next turn opens another
                    connection.close()
            elif connection.in_transaction():
                connection.commit()
            elif driver.in_transaction:
                _commit(driver)
        finally:
            if queue is None:
                connection.close()
            else:
                queue.release()
        return False


# The connection each engine of a queued SQLite file writes with, kept between transactions: writers
# of one file take turns (WriterQueue), so one connection serves them all, lent to one at a time, and
# a transaction pays no pool check-out, check-in and reset (issue 23: about a tenth of a one-event
# append). Per process: one made before a fork is left alone in the child (never closed there).
# ``engine.dispose()`` closes it (a test replacing the file must not keep writing to the old one).
# Kept on the engine itself (not in a module-level map: the connection refers to its engine, and an
# engine nobody uses any more must be collected with its connections).
_WRITER = "_cocreate_writer"  # (pid, connection, driver)
_LEFT_BEHIND_BY_FORK: list[Connection] = []


def _writer_connection(engine: Engine) -> tuple[Connection, sqlite3.Connection]:
    """Called in the engine's writers' turn: the kept connection and its driver's, or new ones."""
    kept = engine.__dict__.get(_WRITER)
    if kept is not None:
        pid, connection, driver = kept
        if pid == process_id() and not (connection.closed or connection.invalidated):
            return connection, driver
        if pid != process_id():
            _LEFT_BEHIND_BY_FORK.append(connection)  # the parent's: not this process's to close
        else:
            connection.close()
    connection = _detached(engine)
    driver = connection.connection.dbapi_connection
    engine.__dict__[_WRITER] = (process_id(), connection, driver)
    return connection, driver


def _detached(engine: Engine) -> Connection:
    """A new connection to keep, detached from the engine's pool: a connection checked out of a
    pool holds its engine alive (SQLAlchemy keeps checked-out records strongly), and an engine
    nobody uses any more must be collected with the connections kept on it (closed then)."""
    connection = engine.connect()
    connection.detach()
    return connection


@sa.event.listens_for(Engine, "engine_disposed")
def _close_writer(engine: Engine) -> None:
    kept = engine.__dict__.pop(_WRITER, None)
    if kept is not None and kept[0] == process_id():
        kept[1].detach()  # closed for real, not checked in to the pool dispose has just replaced
        kept[1].close()
    readers = engine.__dict__.pop(_READERS, None)
    if readers is not None and readers[0] == process_id() and readers[1]:
        while readers[1]:
            connection, _driver = readers[1].pop()
            connection.detach()
            connection.close()


@contextlib.contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A consistent read snapshot.

    On a SQLite file the snapshot is taken on a connection kept for the engine between reads
    (``_reader_connections``), opened and ended on the driver as :func:`write_transaction` does:
    no pool check-out, check-in and reset, and no SQLAlchemy transaction unless a statement runs
    through SQLAlchemy (issue 23: a twentieth of a project page's time)."""
    free = _reader_connections(engine)
    if free is None:  # PostgreSQL, a memory database: the pool's connections
        with engine.connect() as connection:
            with connection.begin():
                yield connection
        return
    connection, driver = _borrow_reader(engine, free)
    try:
        driver.execute("BEGIN DEFERRED")
    except BaseException:
        connection.close()  # not lent again
        raise
    try:
        yield connection
    except BaseException:
        _roll_back(connection, driver)
        _keep_reader(free, connection, driver)
        raise
    if connection.in_transaction():
        connection.commit()
    elif driver.in_transaction:
        driver.commit()  # ends the snapshot (as the pool's transaction did, it commits whatever was done)
    _keep_reader(free, connection, driver)


# The connections each engine of a SQLite file reads with, kept between read transactions: a list
# that a reader pops one from (or opens one) and puts it back on (at most READERS_KEPT are kept;
# list.pop and append are atomic, threads and greenlets share it safely). Per process, as the writer's.
READERS_KEPT = 8
_READERS = "_cocreate_readers"  # (pid, the list, or None: this engine's reads use the pool), on the engine


def _reader_connections(engine: Engine) -> "list[tuple[Connection, sqlite3.Connection]] | None":
    kept = engine.__dict__.get(_READERS)
    if kept is not None and kept[0] == process_id():
        return kept[1]
    if kept is not None and kept[1]:
        _LEFT_BEHIND_BY_FORK.extend(connection for connection, _driver in kept[1])  # the parent's
    free = [] if is_sqlite(engine) and WriterQueue.of(engine) is not None else None
    engine.__dict__[_READERS] = (process_id(), free)
    return free


def _borrow_reader(engine: Engine, free: list) -> "tuple[Connection, sqlite3.Connection]":
    """A kept reader connection of ``engine`` (``free``), or a new one to keep after (:func:`_keep_reader`)."""
    try:
        return free.pop()
    except IndexError:
        connection = _detached(engine)
        return connection, connection.connection.dbapi_connection


def _keep_reader(free: list, connection: Connection, driver: sqlite3.Connection) -> None:
    if connection.invalidated or connection.closed or driver.in_transaction or len(free) >= READERS_KEPT:
        connection.close()
    else:
        free.append((connection, driver))


def read_alone(engine: Engine, statement: "Prepared", params: dict | None = None):
    """The first row of ``statement``, read as a statement of its own: it sees what was committed
    when it ran, as one statement of a read transaction would, without the transaction around it.
    On a SQLite file a kept reader connection runs it with no ``BEGIN``/``COMMIT`` (two statements
    of the driver, and the transaction's bookkeeping: a twentieth of a cached live ranking's time,
    issue 23); elsewhere in a read transaction. For one question asked alone (the log's last
    position, to find a kept answer); a read of two statements that must agree needs a transaction."""
    free = _reader_connections(engine)
    if free is None:
        with read_transaction(engine) as connection:
            return statement.first(connection, params)
    connection, driver = _borrow_reader(engine, free)
    try:
        return statement.first(connection, params)
    finally:
        _keep_reader(free, connection, driver)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


class Prepared:
    """A statement compiled once per dialect and run on the driver's own cursor, in the caller's
    transaction: no statement building, cache key or result processing per run. For the few
    statements every command runs (a read model's row read and written, the stream index), where
    SQLAlchemy's per-execution work cost more than the database did (issue 23). Parameters are
    plain values (str, int, bool, None); rows come back as tuples."""

    def __init__(self, statement) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict]] = {}

    def _sql(self, dialect) -> tuple[str, tuple[str, ...] | None, dict]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            positional = tuple(compiled.positiontup) if compiled.positional else None
            # the values written into the statement (a literal compared with, a LIMIT): its defaults
            defaults = {name: value for name, value in compiled.params.items() if value is not None}
            found = self._compiled[dialect.name] = (compiled.string, positional, defaults)
        return found

    def run(self, connection: Connection, params: dict | None = None):
        """Execute with ``params`` (by bind name); the driver's cursor, for a query's rows."""
        sql, order, defaults = self._sql(connection.dialect)
        values = {**defaults, **params} if params else defaults
        cursor = connection.connection.dbapi_connection.cursor()
        cursor.execute(sql, tuple(values[name] for name in order) if order is not None else values)
        return cursor

    def first(self, connection: Connection, params: dict | None = None):
        cursor = self.run(connection, params)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def all(self, connection: Connection, params: dict | None = None) -> list:
        cursor = self.run(connection, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def execute(self, connection: Connection, params: dict | None = None) -> None:
        self.run(connection, params).close()

    def execute_many(self, connection: Connection, rows: list, columns: tuple[str, ...] | None = None) -> None:
        """Execute once per row of ``rows``: dicts by bind name, or — with ``columns`` — tuples of
        those binds' values in that order (a consumer's batch: no dict per row, and on SQLite the
        tuples go to the driver as they are when the statement binds them in that order). One
        ``executemany`` of the driver on SQLite (SQLAlchemy built each row's parameters in Python);
        through SQLAlchemy elsewhere, whose batched insert PostgreSQL is better served by."""
        if not rows:
            return
        if columns is not None:
            if connection.dialect.name == "sqlite":
                sql, order, defaults = self._sql(connection.dialect)
                if order == columns and not defaults:
                    cursor = connection.connection.dbapi_connection.cursor()
                    try:
                        cursor.executemany(sql, rows)
                    finally:
                        cursor.close()
                    return
            rows = [dict(zip(columns, row)) for row in rows]
        if connection.dialect.name != "sqlite":
            connection.execute(self.statement, rows)
            return
        sql, order, defaults = self._sql(connection.dialect)
        values = [{**defaults, **row} for row in rows] if defaults else rows
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.executemany(sql, [tuple(row[name] for name in order) for row in values]
                               if order is not None else values)
        finally:
            cursor.close()
