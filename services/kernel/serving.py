"""gunicorn's sync worker, whose lingering close does not hold up the next request.

After each response a sync worker closes the connection as RFC 9112 §9.6 asks: it half-closes
(FIN after the response), then reads and discards what the client still sends until the client
closes too — at most 2 s and 64 KiB — before closing for good. Closing while unread request data
sits in the socket would make the kernel answer with a reset, which can destroy the response
before the client has read it (a 413 refused before its body was read, a 401 before a large
upload). gunicorn >= 27 (``gunicorn.util.close_graceful``) waits for that end in the worker itself:
one client round trip per request in which a worker that serves one request at a time does
nothing. Under load on 2 cores — the load generator, or the gateway's greenlets, waiting for CPU
before they read the answer and close — that was a sixth of a busy worker's samples (issue 23;
``python -m bench --only http`` before and after, same machine: hello-world 2,737 → 3,677 req/s,
the write anchor 744 → 850, a ballot 581 → 679, a project page 1,677 → 2,229).

:class:`SyncWorker` keeps the same close, off the request path: the half-close and a read of what
is already there happen at once; a connection whose client has not closed yet is kept in
:class:`Lingering` and looked at again — without waiting — before each later close and whenever the
worker waits for connections (at least every :data:`SWEEP_SECONDS` while any is kept), until its
client closes, :data:`LINGER_SECONDS` pass or :data:`MAX_DRAIN_BYTES` were discarded. At most
:data:`MAX_LINGERING` are kept; beyond that the oldest is closed at once.

``services.kernel.gunicorn_conf`` makes it every sync app's worker class (``GUNICORN_WORKER_CLASS``
``sync``, one thread), the benchmark's anchors included. Thread workers (``gthread``) and the
gateway's gevent worker are gunicorn's own. Imported by gunicorn's master: nothing of an app here.
"""

from __future__ import annotations

import socket
import time

from gunicorn import util
from gunicorn.workers.sync import SyncWorker as _GunicornSyncWorker

LINGER_SECONDS = 2.0  # as gunicorn's close_graceful
MAX_DRAIN_BYTES = 65_536  # as gunicorn's close_graceful
MAX_LINGERING = 256  # connections a worker keeps lingering; beyond, the oldest is closed at once
SWEEP_SECONDS = 0.5  # how long an idle worker waits at most while connections linger


class Lingering:
    """Connections half-closed after their response, kept until their client closes (see the module)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        # socket -> (deadline, bytes discarded, at most); dicts keep insertion order: the oldest first
        self._kept: dict[socket.socket, tuple[float, int, int]] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, sock: socket.socket) -> bool:
        return sock in self._kept

    def close(self, sock: socket.socket, timeout: float = LINGER_SECONDS, max_drain: int = MAX_DRAIN_BYTES) -> None:
        """Half-close ``sock`` and close it now if its client is done; else keep it (the signature of
        ``gunicorn.util.close_graceful``, which this replaces in the worker)."""
        self.sweep()
        if sock in self._kept:  # gunicorn may close a socket twice (an error after the headers)
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # not connected (any more), or closed already
            _close(sock)
            return
        drained = _drain(sock, 0, max_drain)
        if drained is None:
            _close(sock)
            return
        if len(self._kept) >= MAX_LINGERING:
            oldest = next(iter(self._kept))
            del self._kept[oldest]
            _close(oldest)
        self._kept[sock] = (self._clock() + timeout, drained, max_drain)

    def sweep(self) -> None:
        """Close every kept connection whose client closed, that was drained to the limit, or whose
        time is up; never waits."""
        if not self._kept:
            return
        now = self._clock()
        for sock, (deadline, drained, max_drain) in list(self._kept.items()):
            left = _drain(sock, drained, max_drain) if now < deadline else None
            if left is None:
                del self._kept[sock]
                _close(sock)
            elif left != drained:
                self._kept[sock] = (deadline, left, max_drain)


def _drain(sock: socket.socket, drained: int, max_drain: int) -> int | None:
    """Discard what ``sock`` holds without waiting: the bytes discarded so far, or None when the
    connection is done with (its client closed, the limit reached, an error)."""
    while drained < max_drain:
        try:
            data = sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return drained
        except OSError:
            return None
        if not data:
            return None
        drained += len(data)
    return None


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class SyncWorker(_GunicornSyncWorker):
    """gunicorn's sync worker with :class:`Lingering` closes (see the module)."""

    def init_process(self) -> None:
        self.lingering = Lingering()
        # the sync worker's module calls util.close_graceful; this process runs this worker only
        util.close_graceful = self.lingering.close
        super().init_process()

    def wait(self, timeout):
        self.lingering.sweep()
        return super().wait(min(timeout, SWEEP_SECONDS) if len(self.lingering) else timeout)
