"""The client library honours the gateway's "not now" answers: a 429 (rate limit) or 503 is tried
again after the ``Retry-After`` it names — at most ``longest_wait`` seconds (5 by default, which an
interactive command wants; the demo, a bulk loader, waits up to a minute: the limits count per
minute) — with the same ``Idempotency-Key`` for a POST, ``retries`` times, then refused."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

import cocreate_client
from cocreate_client import ApiError, Client


class Gateway(http.server.BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 30) to the first ``refusals`` requests, then 200."""

    refusals = 0
    seen: list[tuple[str, str | None]] = []

    def _answer(self) -> None:
        type(self).seen.append((self.command, self.headers.get("Idempotency-Key")))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if len(type(self).seen) <= type(self).refusals:
            body, status, extra = {"code": 429, "errors": {"reason": "rate_limited"}}, 429, {"Retry-After": "30"}
        else:
            body, status, extra = {"ok": True}, 200, {}
        raw = json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(raw)), **extra}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def gateway(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    waits: list[float] = []
    monkeypatch.setattr(cocreate_client.time, "sleep", waits.append)
    Gateway.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}", waits
    server.shutdown()
    server.server_close()


def test_a_rate_limited_post_is_sent_again_with_its_key_after_the_wait_it_may_take(gateway):
    url, waits = gateway
    Gateway.refusals = 2
    assert Client(url, longest_wait=61).post("/things", {"a": 1}) == {"ok": True}
    assert waits == [30.0, 30.0]
    keys = {key for _method, key in Gateway.seen}
    assert len(Gateway.seen) == 3 and len(keys) == 1 and None not in keys


def test_an_interactive_client_waits_five_seconds_at_most_then_gives_up(gateway):
    url, waits = gateway
    Gateway.refusals = 10
    with pytest.raises(ApiError) as refused:
        Client(url, retries=3).get("/things")
    assert refused.value.status == 429 and refused.value.reason == "rate_limited"
    assert waits == [5.0, 5.0, 5.0] and len(Gateway.seen) == 4
