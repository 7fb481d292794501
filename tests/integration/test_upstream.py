"""The gateway's calls to a service: breaker states, retries for reads only, pooled connections.
A real HTTP server on a local port stands in for the service."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.upstream import CircuitBreaker, Upstream, UpstreamUnavailable


class Script:
    """What the fake service answers, call by call, and what it saw."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.calls: list[tuple[str, str]] = []
        self.connections: set[int] = set()


@pytest.fixture
def service():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self):
            script.calls.append((self.command, self.path))
            script.connections.add(self.client_address[1])
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status = script.statuses.pop(0) if script.statuses else 200
            body = b'{"ok": true}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def upstream(url: str, **kwargs) -> Upstream:
    options = {"timeout": 2.0, "read_retries": 1, "failure_threshold": 3, "open_seconds": 30.0, **kwargs}
    return Upstream("svc", url, **options)


def test_a_failed_read_is_retried_once(service):
    script, url = service
    script.statuses = [503, 200]
    reply = upstream(url).request("GET", "/things")
    assert reply.status == 200 and script.calls == [("GET", "/things"), ("GET", "/things")]


def test_a_failed_write_is_never_retried(service):
    script, url = service
    script.statuses = [500, 200]
    reply = upstream(url).request("POST", "/things", body=b"{}", headers={"Content-Type": "application/json"})
    assert reply.status == 500 and script.calls == [("POST", "/things")]


def test_client_errors_are_answers_not_failures(service):
    script, url = service
    up = upstream(url, failure_threshold=1)
    script.statuses = [404, 409, 422]
    assert [up.request("GET", "/x").status for _ in range(3)] == [404, 409, 422]
    assert up.breaker.state == "closed"


def test_connections_are_pooled(service):
    script, url = service
    up = upstream(url)
    for _ in range(5):
        assert up.request("GET", "/x").status == 200
    assert len(script.calls) == 5 and len(script.connections) == 1


def test_a_down_service_opens_the_breaker_which_then_refuses_at_once():
    up = upstream("http://127.0.0.1:9", failure_threshold=2, read_retries=0)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable) as failed:
            up.request("GET", "/x")
        assert failed.value.why == "connection refused"
    assert up.breaker.state == "open"
    with pytest.raises(UpstreamUnavailable) as refused:
        up.request("GET", "/x")
    assert "circuit breaker open" in refused.value.why and 1 <= refused.value.retry_after <= 31


def test_breaker_half_opens_after_the_pause_and_one_trial_decides():
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, open_seconds=10, clock=lambda: now[0])
    breaker.failed()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failed()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.5
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failed()  # the trial failed: open again for a full pause
    assert breaker.state == "open" and breaker.retry_after() == 11
    now[0] = 21.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_under_gevent_addresses_are_kept_and_numeric_ones_looked_up_in_place(monkeypatch):
    """The gateway's gevent workers resolve through KeptAddresses: a numeric address never goes to
    the thread pool, a name's answer is kept for its time and then looked up again, a failed lookup
    is not kept."""
    import socket
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    from gevent import get_hub

    from gateway import upstream

    looked_up: list[tuple] = []
    real = upstream._ThreadResolver.getaddrinfo

    def spy(self, *args, **kwargs):
        looked_up.append(args)
        if args[0] == "down.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(upstream._ThreadResolver, "getaddrinfo", spy)
    clock = [100.0]
    monkeypatch.setattr(upstream, "time", SimpleNamespace(monotonic=lambda: clock[0], perf_counter=time.perf_counter,
                                                          sleep=time.sleep))
    resolver = upstream.KeptAddresses(get_hub(), seconds=5)
    assert resolver.getaddrinfo("127.0.0.1", 8001, 0, socket.SOCK_STREAM) == \
        socket.getaddrinfo("127.0.0.1", 8001, 0, socket.SOCK_STREAM)
    assert looked_up == []  # numeric: answered in place
    named = resolver.getaddrinfo("localhost", 8001, 0, socket.SOCK_STREAM)
    assert named and resolver.getaddrinfo("localhost", 8001, 0, socket.SOCK_STREAM) == named
    assert len(looked_up) == 1  # kept
    clock[0] += 5.1
    resolver.getaddrinfo("localhost", 8001, 0, socket.SOCK_STREAM)
    assert len(looked_up) == 2  # its time was up
    for _ in range(2):
        with pytest.raises(socket.gaierror):
            resolver.getaddrinfo("down.example", 80)
    assert len(looked_up) == 4  # a failure is not kept
    assert upstream.keep_addresses(5) is False  # not under gevent: nothing installed
    installed = subprocess.run(
        [sys.executable, "-c", "from gevent import monkey; monkey.patch_all()\n"
         "from gevent import get_hub\nfrom gateway.upstream import KeptAddresses, keep_addresses\n"
         "assert keep_addresses(5) and isinstance(get_hub().resolver, KeptAddresses)\n"
         "assert not keep_addresses(0)\n"
         "print(len(get_hub().resolver.getaddrinfo('127.0.0.1', 80)) > 0)"],
        capture_output=True, text=True, timeout=60)
    assert installed.stdout.strip() == "True", installed.stderr
