"""The unit tier does no I/O: no socket, no process, no database file.

Every test here runs with socket creation, process creation and SQLite connections refused, so a
unit test that reaches for a database or a broker fails at once, naming what it tried; command
handlers run on the in-memory event store (:class:`services.kernel.memory.InMemoryEventStore`)
through the message bus. Tests that need a database, a broker or a tool live in
``tests/integration`` and ``tests/e2e``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess

import pytest


class UnitTierIO(AssertionError):
    """A unit test tried to do I/O."""


def _refuse(what: str):
    def refused(*_args, **_kwargs):
        raise UnitTierIO(f"the unit tier does no I/O, but this test tried to {what}")
    return refused


@pytest.fixture(autouse=True)
def no_io(monkeypatch):
    monkeypatch.setattr(socket.socket, "__init__", _refuse("open a socket"))
    monkeypatch.setattr(socket, "create_connection", _refuse("connect a socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("start a process"))
    monkeypatch.setattr(os, "fork", _refuse("fork a process"))
    monkeypatch.setattr(sqlite3, "connect", _refuse("open an SQLite database"))
