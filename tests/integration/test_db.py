"""SQLite connections: switching to WAL while another process opens the same file is retried; the
writers of one file queue on its writers' lock, across processes and threads."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time

import pytest

from services.kernel.db import WriterQueue, _switch_to_wal, make_engine, read_transaction, write_transaction


class FlakyCursor:
    """Answers "database is locked" to the first ``failures`` WAL switches, as SQLite does (without
    waiting for the busy timeout) when another process is switching the same new file."""

    def __init__(self, failures: int, message: str = "database is locked") -> None:
        self.failures, self.message, self.calls = failures, message, 0

    def execute(self, sql: str) -> None:
        assert sql == "PRAGMA journal_mode=WAL"
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError(self.message)


def test_a_locked_wal_switch_is_retried_until_it_succeeds():
    cursor = FlakyCursor(failures=3)
    _switch_to_wal(cursor)
    assert cursor.calls == 4


def test_other_errors_are_not_retried():
    cursor = FlakyCursor(failures=1, message="disk I/O error")
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _switch_to_wal(cursor)
    assert cursor.calls == 1


def test_a_new_file_is_opened_in_wal_mode(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def _waiting_in_the_queue(thread: threading.Thread) -> bool:
    import sys

    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == "acquire" and frame.f_code.co_filename.endswith("kernel/db.py"):  # WriterQueue's
            return True
        frame = frame.f_back
    return False


def _hold_the_turn(url: str, held, release) -> None:
    engine = make_engine(url)
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        held.set()
        release.wait(30)


def test_a_writer_waits_in_the_queue_for_another_processs_transaction_and_goes_on_when_it_ends(tmp_path):
    """No busy-handler sleeps: the waiting writer is in the queue (the writers' file lock), and
    writes as soon as the other process commits."""
    url = f"sqlite:///{tmp_path / 'queued.db'}"
    engine = make_engine(url)
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    assert (tmp_path / "queued.db-writers").exists()
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    other = context.Process(target=_hold_the_turn, args=(url, held, release))
    other.start()
    try:
        assert held.wait(60), "the other process never took its turn"
        done = threading.Event()

        def write() -> None:
            with write_transaction(engine) as connection:
                connection.exec_driver_sql("INSERT INTO t VALUES (2)")
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.5), "a second writer went ahead while another process held the turn"
        assert _waiting_in_the_queue(writer), "the second writer waits in SQLite's busy handler, not in the queue"
        release.set()
        assert done.wait(30), "the queued writer did not write after the other process committed"
        writer.join(5)
    finally:
        release.set()
        other.join(30)
    assert other.exitcode == 0
    with engine.connect() as connection:
        assert [n for (n,) in connection.exec_driver_sql("SELECT n FROM t ORDER BY rowid")] == [1, 2]


def test_threads_of_one_process_take_turns_and_an_error_releases_the_turn(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'threads.db'}")
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    inside, overlaps = [0], []

    def write(n: int) -> None:
        with write_transaction(engine) as connection:
            inside[0] += 1
            overlaps.append(inside[0])
            connection.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
            time.sleep(0.002)
            inside[0] -= 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert max(overlaps) == 1
    with pytest.raises(RuntimeError):
        with write_transaction(engine) as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (99)")
            raise RuntimeError("the command failed")
    with write_transaction(engine) as connection:  # the turn was released with the rollback
        connection.exec_driver_sql("INSERT INTO t VALUES (100)")
    with engine.connect() as connection:
        assert sorted(n for (n,) in connection.exec_driver_sql("SELECT n FROM t")) == [*range(8), 100]


def test_a_memory_database_has_no_queue():
    import sqlalchemy as sa

    assert WriterQueue.of(sa.create_engine("sqlite://")) is None
    assert WriterQueue.of(sa.create_engine("sqlite:///:memory:")) is None


def _write_in_a_forked_child(url: str, done) -> None:
    with write_transaction(make_engine(url)) as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (3)")
    done.set()


def test_a_process_forked_while_a_thread_has_the_turn_queues_on_the_file_not_on_the_inherited_thread_lock(tmp_path):
    """(The parent holds the turn only: SQLite itself does not survive a fork inside a transaction.)"""
    url = f"sqlite:///{tmp_path / 'forked.db'}"
    engine = make_engine(url)
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    engine.dispose()  # no connection of the parent's pool goes into the child
    context = multiprocessing.get_context("fork")
    done = context.Event()
    queue = WriterQueue.of(engine)
    queue.acquire()
    try:
        child = context.Process(target=_write_in_a_forked_child, args=(url, done))
        child.start()
        assert not done.wait(0.5), "the child wrote while the parent held the turn"
    finally:
        queue.release()
    assert done.wait(30), "the child never got its turn: it waits on the thread lock it inherited"
    child.join(30)
    with engine.connect() as connection:
        assert [n for (n,) in connection.exec_driver_sql("SELECT n FROM t ORDER BY rowid")] == [3]


def test_writers_share_one_kept_connection_which_dispose_closes(tmp_path):
    """Write transactions reuse one connection per engine (no pool check-out per write); after a
    restore replaced the file and the engine was disposed, writes reach the new file, not the old."""
    path = tmp_path / "kept.db"
    engine = make_engine(f"sqlite:///{path}")
    drivers = []
    for n in (1, 2):
        with write_transaction(engine) as connection:
            if n == 1:
                connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
            connection.exec_driver_sql(f"INSERT INTO t VALUES ({n})")
            drivers.append(connection.connection.dbapi_connection)
    assert drivers[0] is drivers[1]
    replacement = make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    with write_transaction(replacement) as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        connection.exec_driver_sql("INSERT INTO t VALUES (10)")
    replacement.dispose()
    engine.dispose()  # as a restore does before it puts the file back
    os.replace(tmp_path / "restored.db", path)
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (11)")
        assert connection.connection.dbapi_connection is not drivers[0]
    engine.dispose()
    assert [n for (n,) in sqlite3.connect(path).execute("SELECT n FROM t ORDER BY rowid")] == [10, 11]


def test_reads_reuse_kept_connections_each_a_snapshot_which_dispose_closes(tmp_path):
    """Read transactions on a SQLite file reuse kept connections (no pool check-out per read): one
    after another the same, side by side different; each is a snapshot that ends with it (the next
    read sees what was written meanwhile), a read that failed leaves no transaction open on the
    connection it gives back, and after a restore replaced the file reads see the new file."""
    path = tmp_path / "kept.db"
    engine = make_engine(f"sqlite:///{path}")
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        connection.exec_driver_sql("INSERT INTO t VALUES (1)")

    def count(connection) -> int:
        return connection.exec_driver_sql("SELECT count(*) FROM t").scalar()

    with read_transaction(engine) as first:
        driver = first.connection.dbapi_connection
        assert count(first) == 1
        with read_transaction(engine) as beside:
            assert beside.connection.dbapi_connection is not driver
        with write_transaction(engine) as connection:
            connection.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert count(first) == 1  # a snapshot: the write after its first read is not in it
    with read_transaction(engine) as again:
        assert again.connection.dbapi_connection is driver and count(again) == 2
    with pytest.raises(ZeroDivisionError):
        with read_transaction(engine) as failing:
            count(failing)
            raise ZeroDivisionError
    assert not driver.in_transaction
    with read_transaction(engine) as after:
        assert after.connection.dbapi_connection is driver and count(after) == 2
    replacement = make_engine(f"sqlite:///{tmp_path / 'restored.db'}")
    with write_transaction(replacement) as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        connection.exec_driver_sql("INSERT INTO t VALUES (10), (11), (12)")
    replacement.dispose()
    engine.dispose()  # as a restore does before it puts the file back
    os.replace(tmp_path / "restored.db", path)
    with read_transaction(engine) as restored:
        assert count(restored) == 3 and restored.connection.dbapi_connection is not driver
    engine.dispose()


def test_an_engine_nobody_uses_is_collected_with_the_connections_kept_on_it(tmp_path):
    """Kept write and read connections are detached from the pool: an engine dropped without
    dispose() (a test's, a one-off command's) is garbage-collected, and its SQLite files closed."""
    import gc
    import weakref

    engine = make_engine(f"sqlite:///{tmp_path / 'dropped.db'}")
    with write_transaction(engine) as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    with read_transaction(engine) as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0

    def open_files() -> int:
        names = {str(tmp_path / f"dropped.db{suffix}") for suffix in ("", "-wal", "-shm")}  # not the writers' lock file
        return sum(os.readlink(f"/proc/self/fd/{fd}") in names
                   for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))

    assert open_files() >= 2  # the kept writer and reader (the database, its WAL)
    dropped = weakref.ref(engine)
    del engine, connection
    gc.collect()
    assert dropped() is None and open_files() == 0


def test_a_prepared_statement_runs_once_per_row_with_its_written_values_on_both_backends(database_url):
    """``Prepared.execute_many`` (a consumer's inbox rows): one driver call on SQLite, SQLAlchemy's
    batched insert elsewhere; the values written into the statement apply to every row, and a row
    that breaks a constraint fails the whole call inside the caller's transaction."""
    import sqlalchemy as sa

    from services.kernel.db import Prepared

    metadata = sa.MetaData()
    table = sa.Table("prepared_rows", metadata, sa.Column("id", sa.String(20), primary_key=True),
                     sa.Column("n", sa.Integer, nullable=False), sa.Column("kind", sa.String(20), nullable=False))
    engine = make_engine(database_url)
    metadata.create_all(engine)
    add = Prepared(table.insert().values(id=sa.bindparam("id"), n=sa.bindparam("n"), kind="inbox"))
    with write_transaction(engine) as connection:
        add.execute_many(connection, [{"id": f"r{i}", "n": i} for i in range(5)])
        add.execute_many(connection, [])
    with pytest.raises((sa.exc.IntegrityError, sqlite3.IntegrityError)):
        with write_transaction(engine) as connection:
            add.execute_many(connection, [{"id": "r9", "n": 9}, {"id": "r0", "n": 0}])  # r0 is there already
    with read_transaction(engine) as connection:
        rows = connection.execute(sa.select(table.c.id, table.c.n, table.c.kind).order_by(table.c.id)).all()
    assert [tuple(row) for row in rows] == [(f"r{i}", i, "inbox") for i in range(5)]  # r9 rolled back with it
    engine.dispose()


def test_a_prepared_statement_takes_rows_as_tuples_of_named_columns_in_any_order(database_url):
    """``Prepared.execute_many(..., columns=...)``: rows as tuples, passed to SQLite's driver as they
    are when the statement binds the columns in that order, mapped by name otherwise (another
    order, a value written into the statement, PostgreSQL)."""
    import sqlalchemy as sa

    from services.kernel.db import Prepared

    metadata = sa.MetaData()
    table = sa.Table("tuple_rows", metadata, sa.Column("id", sa.String(20), primary_key=True),
                     sa.Column("n", sa.Integer, nullable=False), sa.Column("kind", sa.String(20), nullable=False))
    engine = make_engine(database_url)
    metadata.create_all(engine)
    same = Prepared(table.insert().values(id=sa.bindparam("id"), n=sa.bindparam("n"), kind=sa.bindparam("kind")))
    written = Prepared(table.insert().values(id=sa.bindparam("id"), n=sa.bindparam("n"), kind="written"))
    with write_transaction(engine) as connection:
        same.execute_many(connection, [("a1", 1, "same"), ("a2", 2, "same")], ("id", "n", "kind"))
        same.execute_many(connection, [("same", 3, "a3")], ("kind", "n", "id"))  # another order
        written.execute_many(connection, [(4, "a4")], ("n", "id"))
        same.execute_many(connection, [], ("id", "n", "kind"))
    with read_transaction(engine) as connection:
        rows = connection.execute(sa.select(table.c.id, table.c.n, table.c.kind).order_by(table.c.id)).all()
    assert [tuple(row) for row in rows] == [("a1", 1, "same"), ("a2", 2, "same"), ("a3", 3, "same"), ("a4", 4, "written")]
    engine.dispose()
