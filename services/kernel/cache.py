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
from typing import Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from services.kernel import metrics

T = TypeVar("T")


class AtVersion(Generic[T]):
    # Lookups are counted per process and added to the metric at most every COUNT_SECONDS or
    # COUNTS_HELD lookups: a multiprocess counter's increment writes its file under a lock, and
    # two a page were a fiftieth of a kept page's time (issue 23). A scrape may miss the lookups
    # of the last second; a process that stops loses them.
    COUNT_SECONDS = 1.0
    COUNTS_HELD = 256

    def __init__(self, name: str, size: int = 512) -> None:
        self.name, self.size = name, size
        self._kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> OrderedDict
        self._lock = threading.Lock()
        self._counted: tuple | None = None  # (hits, misses): labelled once, when first counted
        self._hits = self._misses = 0  # since they were last added to the metric
        self._count_by = 0.0  # the first lookup is counted at once

    def get(self, connection: Connection, key: Hashable, version: int, make: Callable[[], T]) -> T:
        """The value of ``key`` at ``version`` in ``connection``'s database: kept, or made by
        ``make()`` (outside the lock) and kept."""
        entry = (key, version)
        with self._lock:
            kept = self._kept.get(connection.engine)
            if kept is None:
                kept = self._kept[connection.engine] = OrderedDict()
            value = kept.get(entry)
            if value is not None:
                kept.move_to_end(entry)
                self._hits += 1
            else:
                self._misses += 1
            due = self._hits + self._misses >= self.COUNTS_HELD or time.monotonic() >= self._count_by
        if due:
            self._count()
        if value is not None:
            return value
        value = make()
        self.keep(connection.engine, key, version, value)
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
                self._hits += 1
            due = self._hits + self._misses >= self.COUNTS_HELD or time.monotonic() >= self._count_by
        if due:
            self._count()
        return value

    def _count(self) -> None:
        """Add the lookups counted since the last time to ``cocreate_cache_lookups_total``."""
        with self._lock:
            hits, misses, self._hits, self._misses = self._hits, self._misses, 0, 0
            self._count_by = time.monotonic() + self.COUNT_SECONDS
        if self._counted is None:
            self._counted = (metrics.CACHE_LOOKUPS.labels(self.name, "hit"),
                             metrics.CACHE_LOOKUPS.labels(self.name, "miss"))
        if hits:
            self._counted[0].inc(hits)
        if misses:
            self._counted[1].inc(misses)

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
