"""Calls from the gateway to one service: pooled connections, per-call timeouts, retries for
idempotent reads only, and a circuit breaker.

A breaker is per service and per gateway process: after ``failure_threshold`` consecutive
failures (connection refused, timeout, 5xx) it opens and calls fail at once for
``open_seconds``; then one trial call is let through (half-open) and its outcome closes or
re-opens it. 4xx answers are the caller's problem, not the service's, and count as successes.
"""

from __future__ import annotations

import _socket  # the system's own functions (gevent patches the socket module, not this)
import ipaddress
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from gevent.resolver.thread import Resolver as _ThreadResolver

from services.kernel import metrics

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class UpstreamUnavailable(Exception):
    """The service could not answer: down, too slow, failing, or its breaker is open."""

    def __init__(self, service: str, why: str, retry_after: int) -> None:
        super().__init__(f"the {service} service is unavailable: {why}")
        self.service = service
        self.why = why
        self.retry_after = retry_after


@dataclass
class UpstreamResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class CircuitBreaker:
    def __init__(self, failure_threshold: int, open_seconds: float, clock=time.monotonic) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_in_flight = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.open_seconds else "open"

    def allow(self) -> bool:
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "half_open" and not self.trial_in_flight:
                self.trial_in_flight = True
                return True
            return False

    def retry_after(self) -> int:
        if self.opened_at is None:
            return 1
        return max(1, int(self.open_seconds - (self.clock() - self.opened_at)) + 1)

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.opened_at, self.trial_in_flight = 0, None, False

    def failed(self) -> None:
        with self._lock:
            self.trial_in_flight = False
            self.failures += 1
            if self.failures >= self.failure_threshold or self.opened_at is not None:
                self.opened_at = self.clock()


class Upstream:
    """One service behind the gateway."""

    def __init__(self, name: str, base_url: str, *, timeout: float, read_retries: int,
                 failure_threshold: int, open_seconds: float, pool_size: int = 10) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.read_retries = read_retries
        self.breaker = CircuitBreaker(failure_threshold, open_seconds)
        self.pool = urllib3.PoolManager(num_pools=2, maxsize=pool_size, block=False, retries=False)

    def request(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
                body: bytes | None = None, timeout: float | None = None) -> UpstreamResponse:
        if not self.breaker.allow():
            metrics.UPSTREAM_CALLS.labels(self.name, "breaker_open").inc()
            raise UpstreamUnavailable(self.name, "circuit breaker open after repeated failures",
                                      self.breaker.retry_after())
        attempts = 1 + (self.read_retries if method in IDEMPOTENT else 0)
        why = ""
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                reply = self.pool.request(method, self.base_url + path, headers=dict(headers or {}), body=body,
                                          timeout=urllib3.Timeout(total=timeout or self.timeout),
                                          redirect=False, preload_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                why = _describe(exc)
                metrics.UPSTREAM_CALLS.labels(self.name, "error").inc()
            else:
                metrics.UPSTREAM_SECONDS.labels(self.name).observe(time.perf_counter() - started)
                if reply.status < 500 or reply.status in (501, 505):
                    self.breaker.succeeded()
                    metrics.UPSTREAM_CALLS.labels(self.name, "ok").inc()
                    return UpstreamResponse(reply.status, reply.data, dict(reply.headers))
                why = f"answered {reply.status}"
                metrics.UPSTREAM_CALLS.labels(self.name, "5xx").inc()
                if attempt == attempts - 1:
                    self.breaker.failed()
                    return UpstreamResponse(reply.status, reply.data, dict(reply.headers))
            if attempt < attempts - 1:
                time.sleep(0.05 * (attempt + 1))
        self.breaker.failed()
        raise UpstreamUnavailable(self.name, why, self.breaker.retry_after() if self.breaker.opened_at else 5)


def keep_addresses(seconds: float) -> bool:
    """Under gevent (gunicorn's gevent worker), resolve the services' host names through
    :class:`KeptAddresses`; True when it was installed.

    Every call to a service opens a connection (the services' sync workers close each one after
    the answer), and gevent's default resolver sends every lookup to a native thread and back —
    a numeric address too. That hop was about a tenth of the gateway's CPU for a composed view
    (issue 23)."""
    if seconds <= 0:
        return False
    from gevent import get_hub, monkey

    if not monkey.is_module_patched("socket"):
        return False
    hub = get_hub()
    if not isinstance(hub.resolver, KeptAddresses):
        hub.resolver = KeptAddresses(hub, seconds)
    return True


class KeptAddresses(_ThreadResolver):
    """gevent's thread resolver, with each answer kept for ``seconds`` (a Kubernetes Service's name
    stands for a cluster IP that does not change; a changed answer is seen within that time, and a
    failed lookup is never kept), and a numeric address answered in the calling greenlet (the
    system's ``getaddrinfo`` looks nothing up for one: it cannot block)."""

    def __init__(self, hub, seconds: float) -> None:
        super().__init__(hub)
        self.seconds = seconds
        self._kept: dict = {}

    def getaddrinfo(self, *args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept is not None and now < kept[1]:
            return kept[0]
        if _numeric(args[0] if args else kwargs.get("host")):
            answer = _socket.getaddrinfo(*args, **kwargs)
        else:
            answer = super().getaddrinfo(*args, **kwargs)
        if len(self._kept) >= 1_000:
            self._kept.clear()
        self._kept[key] = (answer, now + self.seconds)
        return answer


def _numeric(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(host)
    except (TypeError, ValueError):
        return False
    return True


def _describe(exc: Exception) -> str:
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "timed out"
    return type(exc).__name__
