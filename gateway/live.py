"""Live streams (``GET /api/v1/live``) of one gateway process: one shared poller, many parked streams.

The gateway runs under gunicorn's gevent worker class (decision 17,
``docs/adr/0017-live-streams-on-gevent.md``): an open stream is a parked greenlet, not a request
thread, so a thousand of them leave the process free to answer ``/healthz`` and every other request.
This module is written with :mod:`threading`, which gevent's monkey-patching turns into greenlets;
under a thread worker class, or Flask's test client, the same code runs on real threads.

- :class:`LiveHub` — one per app (so one per gunicorn worker process). Started by the first stream
  and stopped after a while without any, its loop puts due ``RatingsChanged`` summaries into the
  feed (:meth:`~gateway.store.GatewayStore.flush_summaries`) and reads the feed's new rows after its
  cursor every ``GATEWAY_LIVE_POLL_SECONDS`` — one query for every community and every stream of
  the process — and hands each row to the subscribers of the row's community and to admins'
  all-community streams. It also marks the process's rows of ``live_streams`` seen every few
  seconds (one UPDATE), which is what keeps them counting for the per-caller cap.
- :class:`Subscriber` — a stream's bounded queue of rows. A reader that falls more than
  ``GATEWAY_LIVE_QUEUE_EVENTS`` behind (it reads slower than events come) is closed, with a log
  line, rather than let its queue grow: its client reconnects with ``Last-Event-ID`` and catches
  up from the database.
- :class:`LiveStream` — one open stream: its place in the process (at most
  ``GATEWAY_LIVE_MAX_STREAMS_PER_PROCESS``: 503 ``live_streams_full``), its row in ``live_streams``
  (at most ``GATEWAY_LIVE_STREAMS_PER_CALLER`` per caller: 429 ``too_many_streams``) and its
  subscription; :meth:`LiveStream.release` gives all three back, once.
- :func:`event_stream` — the server-sent events: ``retry:``, the backlog after the client's position
  read from the database (the subscription is taken first, so nothing committed meanwhile is missed,
  and rows the hub queued that the backlog already sent are dropped by id: no gap, no duplicate),
  ``: caught-up <id>``, then the hub's rows as they come, ``: keep-alive`` every 5 s of quiet, until
  the stream's lifetime (5 minutes) is over. Each reader sees each event as the privacy policy lets
  them (:func:`services.kernel.privacy.live_view`); a row renders each distinct view once, however
  many streams share it.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import Counter, Gauge

from gateway.store import STREAM_STALE_SECONDS, GatewayStore
from services.kernel import privacy

log = logging.getLogger(__name__)

MAX_SECONDS = 300.0  # a stream's lifetime; the client reconnects with Last-Event-ID
HEARTBEAT_SECONDS = 5.0  # ": keep-alive" after this much quiet (and a look whether the client is still there)
STALE_POLL_SECONDS = 5.0  # a hub whose last good poll is older than this makes the process not ready
REFRESH_SECONDS = 5.0  # how often a hub marks its streams' rows seen
IDLE_STOP_SECONDS = 30.0  # a hub without streams for this long stops polling (the next stream starts it)
WRITE_TIMEOUT_SECONDS = 30.0  # a send to a client that reads nothing for this long fails: the stream ends
PAGE = 200  # rows per feed query
DISPATCH_SLICE = 25  # streams woken before the hub yields (under gevent) to everything else that is ready
GAP_WAIT_SECONDS = 2.0  # how long the hub waits for a missing id (a slower transaction's) before passing it
CALLER_RETRY_SECONDS = 10  # Retry-After of a 429 too_many_streams (a stream of theirs may have ended by then)
FULL_RETRY_SECONDS = 3  # Retry-After of a 503 live_streams_full (another replica takes the reconnect)
_ALL = object()  # the subscribers of every community (admins' streams without a community)
_HUBS: "weakref.WeakSet[LiveHub]" = weakref.WeakSet()  # this process's (one per app)

STREAMS_OPEN = Gauge("cocreate_gateway_live_streams", "Live streams (server-sent events) open",
                     multiprocess_mode="livesum")
STREAM_CAPACITY = Gauge("cocreate_gateway_live_stream_capacity",
                        "Live streams the gateway's processes can hold (GATEWAY_LIVE_MAX_STREAMS_PER_PROCESS each)",
                        multiprocess_mode="livesum")
STREAMS_REFUSED = Counter("cocreate_gateway_live_streams_refused_total",
                          "Live streams refused: too_many_streams (the caller's cap), live_streams_full (the process's)",
                          ["reason"])
SLOW_READERS = Counter("cocreate_gateway_live_slow_readers_total",
                       "Live streams closed because their reader fell too far behind")


class TooManyStreams(Exception):
    """The caller holds ``limit`` streams already (429 ``too_many_streams``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} live streams per caller")
        self.limit = limit


class StreamsFull(Exception):
    """This process holds as many streams as it may (503 ``live_streams_full``)."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"this gateway process holds its {capacity} live streams")
        self.capacity = capacity


def stop_all_soon() -> None:
    """Stop every hub of this process, ending its streams (called from the worker's SIGTERM handler,
    so the work is handed to a greenlet, or a thread, of its own)."""
    hubs = list(_HUBS)

    def stop() -> None:
        for hub in hubs:
            hub.stop()

    if gevent_patched():
        import gevent

        gevent.spawn(stop)
    else:
        threading.Thread(target=stop, name="live-stop", daemon=True).start()


def gevent_patched() -> bool:
    """Whether gevent's monkey-patching is in effect (the gateway under gunicorn's gevent worker)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("socket")


def process_capacity(configured: int, environ=os.environ) -> int:
    """The streams this process may hold: the setting, but never so many that the process has no
    room left for other requests — under gevent at most ``GUNICORN_WORKER_CONNECTIONS`` less a
    tenth (at least 50 kept free); under a thread worker (``GUNICORN_THREADS`` set) at most half of
    its threads, each stream holding one."""
    if gevent_patched():
        connections = int(environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
        return max(1, min(configured, connections - max(50, connections // 10)))
    threads = environ.get("GUNICORN_THREADS")
    if threads and threads.isdigit():
        return max(1, min(configured, int(threads) // 2))
    return configured


class FeedRow:
    """A row of the feed as the streams share it: its envelope parsed once, and each distinct
    view of it (per relations of the reader and ``named``) rendered once."""

    __slots__ = ("id", "community_id", "event_type", "rated_person_id", "_raw", "_envelope", "_texts", "_sealer")

    def __init__(self, row: Any, sealer: Any | None = None) -> None:
        self.id = row.id
        self.community_id = row.community_id
        self.event_type = row.event_type
        self.rated_person_id = row.rated_person_id
        self._raw = row.envelope
        self._envelope: dict | None = None
        self._texts: dict = {}
        self._sealer = sealer  # opens the personal fields a reader may see (the feed keeps them sealed)

    def text(self, principal, named: bool) -> str:
        """The SSE message ``principal`` receives of this row ("" when they see nothing of it)."""
        rel = privacy.relations(principal, self.community_id, rated=self.rated_person_id)
        key = (rel, named)
        text = self._texts.get(key)
        if text is None:
            if self._envelope is None:
                self._envelope = json.loads(self._raw)
            seen = privacy.live_view(self._envelope, rel)
            if seen is not None and self._sealer is not None:
                seen = self._sealer.open_all(seen)
            if seen is None:
                text = ""
            else:
                kind = f"event: {self.event_type}\n" if named else ""
                text = f"id: {self.id}\n{kind}data: {json.dumps(seen, ensure_ascii=False)}\n\n"
            self._texts[key] = text
        return text


class Subscriber:
    """A stream's queue of rows from the hub, at most ``capacity`` long."""

    def __init__(self, community: str | None, capacity: int, who: str) -> None:
        self.community = community
        self.capacity = capacity
        self.who = who
        self.closed: str | None = None  # why, once closed
        self._rows: deque[FeedRow] = deque()
        self._ready = threading.Condition()

    def offer(self, rows: list[FeedRow]) -> bool:
        """Queue rows (the hub); False when the reader is too far behind: then it is closed."""
        with self._ready:
            if self.closed:
                return False
            if len(self._rows) + len(rows) > self.capacity:
                self.closed = "slow reader"
                self._rows.clear()
                self._ready.notify_all()
                return False
            self._rows.extend(rows)
            self._ready.notify_all()
            return True

    def take(self, timeout: float) -> list[FeedRow]:
        """Every queued row, waiting up to ``timeout`` seconds for one (or until closed)."""
        with self._ready:
            if not self._rows and not self.closed and timeout > 0:
                self._ready.wait(timeout)
            rows = list(self._rows)
            self._rows.clear()
            return rows

    def close(self, why: str) -> None:
        with self._ready:
            if not self.closed:
                self.closed = why
            self._rows.clear()
            self._ready.notify_all()


class LiveHub:
    """The one poller of the feed for every live stream of this app (this gunicorn worker)."""

    def __init__(self, store: GatewayStore, *, capacity: int, per_caller: int, queue_events: int,
                 poll_seconds: float = 0.5, refresh_seconds: float = REFRESH_SECONDS,
                 stale_seconds: float = STREAM_STALE_SECONDS, idle_stop_seconds: float = IDLE_STOP_SECONDS,
                 stale_poll_seconds: float = STALE_POLL_SECONDS, gap_wait_seconds: float = GAP_WAIT_SECONDS,
                 sealer: Any | None = None) -> None:
        self.store = store
        self.sealer = sealer
        self.capacity = capacity
        self.per_caller = per_caller
        self.queue_events = queue_events
        self.poll_seconds = poll_seconds
        self.refresh_seconds = refresh_seconds
        self.stale_seconds = stale_seconds
        self.idle_stop_seconds = idle_stop_seconds
        self.stale_poll_seconds = stale_poll_seconds
        self.gap_wait_seconds = gap_wait_seconds
        self._gaps: dict[int, float] = {}  # first missing id -> when the hub first saw rows after it
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.cursor = 0
        self.last_poll: float | None = None  # monotonic time of the last good poll (None: not running)
        self.last_error = ""
        self.stopping = False  # the process is ending: no new stream
        self._lock = threading.Lock()
        self._subscribers: dict[Any, set[Subscriber]] = {}
        self._open = 0  # streams holding a place in this process
        self._rows: set[str] = set()  # ids of this process's rows in live_streams
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the running loop's (each start has its own)
        STREAM_CAPACITY.inc(capacity)
        _HUBS.add(self)

    # -- streams ----------------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        return self._open

    def open(self, principal, community: str | None, sock=None) -> "LiveStream":
        """Take a place for a stream of ``principal`` reading ``community`` (None: every community):
        :class:`StreamsFull` when this process holds its capacity, :class:`TooManyStreams` when the
        caller holds their cap; otherwise the stream, subscribed (the hub started if it was not)."""
        with self._lock:
            if self._open >= self.capacity or self.stopping:
                STREAMS_REFUSED.labels("live_streams_full").inc()
                raise StreamsFull(self.capacity)
            self._open += 1
        STREAMS_OPEN.inc()
        stream = LiveStream(self, principal, community, sock)
        try:
            if self.per_caller > 0:
                held = self.store.open_stream(stream.id, principal.person_id, self.owner, self.per_caller,
                                              self.stale_seconds)
                if held is not None:
                    STREAMS_REFUSED.labels("too_many_streams").inc()
                    raise TooManyStreams(self.per_caller)
                with self._lock:
                    self._rows.add(stream.id)
                stream.recorded = True
            stream.subscriber = self._subscribe(community, principal.person_id)
        except BaseException:
            stream.release()
            raise
        return stream

    def _subscribe(self, community: str | None, who: str) -> Subscriber:
        subscriber = Subscriber(community, self.queue_events, who)
        with self._lock:
            self._subscribers.setdefault(_ALL if community is None else community, set()).add(subscriber)
            if self._thread is None:
                # The cursor is read after the subscriber is in: what is committed later, the hub
                # brings; what was committed before, the stream's backlog query reads.
                self.cursor = self.store.last_feed_id()
                self._gaps.clear()
                self.last_poll, self.last_error = time.monotonic(), ""
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="live-hub", daemon=True)
                self._thread.start()
        return subscriber

    def _unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            key = _ALL if subscriber.community is None else subscriber.community
            members = self._subscribers.get(key)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self._subscribers[key]

    def _released(self, stream: "LiveStream") -> None:
        if stream.subscriber is not None:
            stream.subscriber.close("ended")
            self._unsubscribe(stream.subscriber)
        with self._lock:
            self._open -= 1
            self._rows.discard(stream.id)
        STREAMS_OPEN.dec()
        if stream.recorded:
            try:
                self.store.close_stream(stream.id)
            except Exception:  # noqa: BLE001 — its row goes stale and stops counting
                log.warning("could not delete a closed live stream's row; it stops counting in %.0f s",
                            self.stale_seconds, exc_info=True)

    # -- the poller -------------------------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        next_refresh = time.monotonic() + self.refresh_seconds
        idle_since: float | None = None
        failing = False
        while not stop.is_set():
            try:
                self.store.flush_summaries()
                while True:
                    rows = self.store.feed_after(None, self.cursor, PAGE)
                    ready = self._past_gaps(rows)
                    self._dispatch([FeedRow(row, self.sealer) for row in ready])
                    if len(rows) < PAGE or len(ready) < len(rows):
                        break
                self.last_poll = time.monotonic()
                if failing:
                    log.info("the live hub reads the feed again")
                failing, self.last_error = False, ""
            except Exception as exc:  # noqa: BLE001 — the database may come back; readiness says so meanwhile
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if not failing:
                    log.warning("the live hub cannot read the feed; retrying", exc_info=True)
                failing = True
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + self.refresh_seconds
                with self._lock:
                    rows_of_streams = set(self._rows)
                try:
                    self.store.touch_streams(rows_of_streams, self.stale_seconds)
                except Exception:  # noqa: BLE001
                    log.warning("the live hub could not mark its streams seen", exc_info=True)
            with self._lock:
                if self._subscribers:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= self.idle_stop_seconds:
                    self._thread, self.last_poll = None, None
                    return
            stop.wait(self.poll_seconds)
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread, self.last_poll = None, None

    def _past_gaps(self, rows: list) -> list:
        """The rows the hub may hand on: up to a missing id, while it has been missing for less than
        ``gap_wait_seconds``. Ids are given at insert and rows become visible at commit, so on
        PostgreSQL a row can appear after one with a higher id (the feed worker's and a summary's
        transactions overlapping): the cursor must not pass it before it commits. A rolled-back
        insert leaves a gap that never fills; it is passed after the wait."""
        expected = self.cursor + 1
        for index, row in enumerate(rows):
            if row.id > expected:
                since = self._gaps.setdefault(expected, time.monotonic())
                if time.monotonic() - since < self.gap_wait_seconds:
                    return rows[:index]
            expected = row.id + 1
        self._gaps.clear()
        return rows

    def _dispatch(self, rows: list[FeedRow]) -> None:
        if not rows:
            return
        by_community: dict[str | None, list[FeedRow]] = {}
        for row in rows:
            by_community.setdefault(row.community_id, []).append(row)
        with self._lock:
            self.cursor = rows[-1].id
            targets = [(subscriber, rows) for subscriber in self._subscribers.get(_ALL, ())]
            for community, its_rows in by_community.items():
                if community is not None:
                    targets += [(subscriber, its_rows) for subscriber in self._subscribers.get(community, ())]
        for index, (subscriber, its_rows) in enumerate(targets, 1):
            if index % DISPATCH_SLICE == 0:
                # Woken streams run when the hub yields: in slices, so that a request that is ready
                # (its upstream answered) waits for a few dozen writes, not for a thousand.
                time.sleep(0)
            if not subscriber.offer(its_rows) and subscriber.closed == "slow reader":
                SLOW_READERS.inc()
                self._unsubscribe(subscriber)
                log.warning("closed a live stream whose reader fell more than %d events behind (it reconnects with "
                            "Last-Event-ID)", subscriber.capacity,
                            extra={"person_id": subscriber.who, "community_id": subscriber.community})

    def stop(self) -> None:
        """Stop polling and end every stream (the process is ending; tests); new streams are refused
        (503, to be taken by another replica)."""
        with self._lock:
            self.stopping = True
            self._stop.set()
            thread = self._thread
            subscribers = [s for members in self._subscribers.values() for s in members]
        for subscriber in subscribers:
            subscriber.close("stopping")
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # -- readiness --------------------------------------------------------------------------------

    def check_ready(self) -> None:
        """Raise when this process's hub cannot feed its streams: its last good read of the feed is
        older than ``stale_poll_seconds`` (the database is unreachable or the process too busy to
        poll). A full process stays ready: it still answers every other request, and refuses new
        streams with a 503 that sends them elsewhere (docs/operations.md, "Live streams")."""
        last = self.last_poll
        if last is not None and time.monotonic() - last > self.stale_poll_seconds:
            raise RuntimeError(f"the live hub has not read the feed for {time.monotonic() - last:.1f} s"
                               + (f" ({self.last_error})" if self.last_error else ""))

    def describe(self) -> dict[str, Any]:
        last = self.last_poll
        return {"streams": self._open, "capacity": self.capacity, "full": self._open >= self.capacity,
                "hub": "idle" if last is None else "polling",
                "last_poll_seconds_ago": None if last is None else round(time.monotonic() - last, 2),
                "cursor": self.cursor}


class LiveStream:
    """One open stream: its place in the process, its row in ``live_streams`` and its subscription."""

    def __init__(self, hub: LiveHub, principal, community: str | None, sock=None) -> None:
        self.hub = hub
        self.principal = principal
        self.community = community
        self.id = uuid.uuid4().hex
        self.recorded = False
        self.subscriber: Subscriber | None = None
        self.sock = sock
        self._released = False
        self._release_lock = threading.Lock()
        if sock is not None:
            try:  # a client that reads nothing for this long gets its stream ended
                sock.settimeout(WRITE_TIMEOUT_SECONDS)
            except (OSError, AttributeError):
                pass

    @property
    def closed(self) -> str | None:
        return self.subscriber.closed if self.subscriber is not None else "not subscribed"

    def render(self, rows: Iterable[FeedRow], named: bool) -> str:
        return "".join(row.text(self.principal, named) for row in rows)

    def client_gone(self) -> bool:
        """Whether the client closed its end (its socket reads as ended), without waiting."""
        sock = self.sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def release(self) -> None:
        """Give back the place, the row and the subscription (once; safe to call again)."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        if self.sock is not None:
            try:  # the connection may carry other requests after the stream (keep-alive)
                self.sock.settimeout(None)
            except (OSError, AttributeError):
                pass
        self.hub._released(self)


def event_stream(stream: LiveStream, store: GatewayStore, after: int, *, named: bool = True,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS, max_seconds: float = MAX_SECONDS) -> Iterator[str]:
    """The server-sent events of ``stream`` after the feed row ``after`` (see the module's text)."""
    try:
        yield "retry: 3000\n\n"
        deadline = time.monotonic() + max_seconds
        while True:  # the backlog, from the database; the hub queues what comes meanwhile
            rows = [FeedRow(row, stream.hub.sealer) for row in store.feed_after(stream.community, after, PAGE)]
            if rows:
                after = rows[-1].id
                text = stream.render(rows, named)
                if text:
                    yield text
            if len(rows) < PAGE or time.monotonic() >= deadline:
                break
        yield f": caught-up {after}\n\n"
        quiet_since = time.monotonic()
        while (now := time.monotonic()) < deadline:
            if stream.closed:
                return
            rows = [row for row in stream.subscriber.take(min(deadline, quiet_since + heartbeat_seconds) - now)
                    if row.id > after]
            if rows:
                after = rows[-1].id
                yield stream.render(rows, named) + f": caught-up {after}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= heartbeat_seconds:
                if stream.client_gone():
                    return
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
    finally:
        stream.release()
