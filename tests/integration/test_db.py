"""SQLite connections: switching to WAL while another process opens the same file is retried."""

from __future__ import annotations

import sqlite3

import pytest

from services.kernel.db import _switch_to_wal, make_engine


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
