"""Answers that a version fixes forever, kept per process (issue 23).

A read model row only ever changes by an event, and every event moves the log's position and its
stream's version. So a page computed from a stream at version *v* (a project's page as of its
version) is the same page every time it is asked for at *v*; a view computed from the whole store
at position *p* (a live ranking) is the same until the next event. :class:`AtVersion` keeps such
answers, keyed by what they are of and the version or position they were computed at: a changed
stream or a new event gives a new key, so nothing stale is ever served, and nothing has to be
invalidated. A rebuild replays the same log to the same rows at the same positions, so what is
kept stays true through it; a database restored to an earlier point is started on with the
service's processes stopped (docs/operations.md, "Backups and restore"), so none keeps answers of
the log it had before.

Kept per process (a gunicorn worker) and per database (the engine a connection belongs to: the
tests run several stores in one process), least recently used dropped first, ``size`` entries at
most per database; the values are shared: callers copy before they change anything.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from services.kernel import metrics
from services.kernel.personal import MARK

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EncodedAnswer:
    """A JSON answer kept encoded, and whether it holds a sealed personal field (:mod:`services.kernel.personal`).
    Every JSON answer is searched for sealed fields as it leaves the process
    (:func:`services.kernel.web.open_personal_fields`); a kept answer is searched once, when it is made,
    not each time it is given (the search of a live ranking's 15 KB took 9 µs of its 155 in process: issue 23)."""

    body: bytes
    sealed: bool

    @classmethod
    def of(cls, body: bytes) -> "EncodedAnswer":
        return cls(body, MARK in body)


def joined_objects(*objects: bytes) -> bytes:
    """Encoded JSON objects (compact, as :func:`services.kernel.events.dumps` writes them) joined into
    one holding their members in order, without decoding them; an empty object adds none. The
    callers give objects whose keys differ (a page's parts, an answer and what differs per caller)."""
    members = [found for found in objects if found != b"{}"]
    if len(members) == 1:
        return members[0]  # (a kept answer with nothing added: not copied)
    return b"{" + b",".join(found[1:-1] for found in members) + b"}"


class _Counted:
    """Lookups counted per process and added to ``cocreate_cache_lookups_total`` at most every
    COUNT_SECONDS or COUNTS_HELD lookups: a multiprocess counter's increment writes its file under a
    lock, and two a page were a fiftieth of a kept page's time (issue 23). A scrape may miss the
    lookups of the last second; a process that stops loses them."""

    COUNT_SECONDS = 1.0
    COUNTS_HELD = 256
    RESULTS: tuple[str, ...] = ("hit", "miss")

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self._kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> OrderedDict
        self._lock = threading.Lock()
        self._counted: tuple | None = None  # a child per result: labelled once, when first counted
        self._counts = [0] * len(self.RESULTS)  # since they were last added to the metric
        self._count_by = 0.0  # the first lookup is counted at once

    def _find(self, engine: Engine, entry: Hashable) -> tuple[OrderedDict, Any]:
        """Under the lock: this database's kept values, and the one of ``entry`` (None if none),
        made the most recently used."""
        kept = self._kept.get(engine)
        if kept is None:
            kept = self._kept[engine] = OrderedDict()
        value = kept.get(entry)
        if value is not None:
            kept.move_to_end(entry)
        return kept, value

    def _note(self, result: int | None) -> bool:
        """Count a lookup (an index of RESULTS; None: nothing to count), under the lock; whether the
        counts are due."""
        if result is not None:
            self._counts[result] += 1
        return sum(self._counts) >= self.COUNTS_HELD or time.monotonic() >= self._count_by

    def _count(self) -> None:
        """Add the lookups counted since the last time to ``cocreate_cache_lookups_total``."""
        with self._lock:
            counts, self._counts = self._counts, [0] * len(self.RESULTS)
            self._count_by = time.monotonic() + self.COUNT_SECONDS
        if self._counted is None:
            self._counted = tuple(metrics.CACHE_LOOKUPS.labels(self.name, result) for result in self.RESULTS)
        for child, count in zip(self._counted, counts):
            if count:
                child.inc(count)


class AtVersion(_Counted, Generic[T]):
    """Answers kept at the version (or position) they were computed at (see the module's text)."""

    def __init__(self, name: str, size: int = 512) -> None:
        super().__init__(name, size)

    def get(self, connection: Connection, key: Hashable, version: int, make: Callable[[], T]) -> T:
        """The value of ``key`` at ``version`` in ``connection``'s database: kept, or made by
        ``make()`` (outside the lock) and kept."""
        return self.get_of(connection.engine, key, version, make)

    def get_of(self, engine: Engine, key: Hashable, version: int, make: Callable[[], T]) -> T:
        """:meth:`get` by the database's engine: for a value made of what the caller holds already
        (an aggregate at ``version``), with no transaction."""
        with self._lock:
            _kept, value = self._find(engine, (key, version))
            due = self._note(0 if value is not None else 1)
        if due:
            self._count()
        if value is not None:
            return value
        value = make()
        self.keep(engine, key, version, value)
        return value

    def kept(self, engine: Engine, key: Hashable, version: int) -> T | None:
        """The value kept for ``key`` at ``version`` in ``engine``'s database, or None (nothing
        made: a caller that finds nothing opens its transaction and calls :meth:`get`, which
        counts the miss)."""
        with self._lock:
            kept = self._kept.get(engine)
            value = kept.get((key, version)) if kept is not None else None
            if value is not None:
                kept.move_to_end((key, version))
            due = self._note(0 if value is not None else None)  # (a miss: the caller's get counts it)
        if due:
            self._count()
        return value

    def keep(self, engine: Engine, key: Hashable, version: int, value: T) -> None:
        """Keep ``value`` as ``key``'s at ``version`` in ``engine``'s database: made in a transaction
        that has committed (a command's answer, read in its own transaction, is kept only once
        the command is durable: a version that was rolled back may be written again otherwise)."""
        with self._lock:
            kept = self._kept.get(engine)
            if kept is None:
                kept = self._kept[engine] = OrderedDict()
            kept[(key, version)] = value
            kept.move_to_end((key, version))
            while len(kept) > self.size:
                kept.popitem(last=False)


class Newest(_Counted, Generic[T]):
    """The newest value made of each key, grown to a later version instead of made anew (issue 23).

    For what a stream's events only add to, version by version — a project's page rows
    (``services.projects.views.ProjectDetails``): what there is up to version *v* is what there was
    up to an earlier version *u* and what the versions after *u* added. So the value kept at *u* is
    grown to *v* by ``grow(value, u)``, which reads only what came after *u* (most often nothing: a
    ballot adds no row), instead of ``make()`` reading everything again. One value per key — the
    newest made — per process and database, ``size`` keys at most, least recently used dropped
    first. A version older than the one kept is made anew and not kept; the one kept is never
    changed (``grow`` makes a new value; callers copy before they change anything).

    As for :class:`AtVersion`, what is kept must have been read in a transaction that cannot be
    rolled back — a read transaction, or after the write has committed: callers read pages there.
    Counted as ``hit`` (the version kept), ``grown`` and ``miss`` in ``cocreate_cache_lookups_total``.
    """

    RESULTS = ("hit", "grown", "miss")

    def __init__(self, name: str, size: int = 1024) -> None:
        super().__init__(name, size)

    def get(self, connection: Connection, key: Hashable, version: int, make: Callable[[], T],
            grow: Callable[[T, int], T]) -> T:
        with self._lock:
            kept, found = self._find(connection.engine, key)
            result = 2 if found is None or found[0] > version else (0 if found[0] == version else 1)
            due = self._note(result)
        if due:
            self._count()
        if result == 0:
            return found[1]
        value = grow(found[1], found[0]) if result == 1 else make()
        if found is None or version > found[0]:
            with self._lock:
                newest = kept.get(key)
                if newest is None or version > newest[0]:  # (another thread may have kept a newer one)
                    kept[key] = (version, value)
                    kept.move_to_end(key)
                    while len(kept) > self.size:
                        kept.popitem(last=False)
        return value
