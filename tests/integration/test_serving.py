"""The sync worker's lingering close (services.kernel.serving): connections are half-closed after
their response and closed once their client is done, without a worker waiting for that — and what
the lingering close exists for still holds: an answer sent before the request's body was read
reaches the client whole."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.kernel import serving
from services.kernel.broker import free_port, wait_for_port
from services.kernel.serving import Lingering
from tests.support.platform import stop_group

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair on the loopback: (the server's end, the client's end)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


def closed(sock: socket.socket) -> bool:
    return sock.fileno() == -1


def test_a_connection_whose_client_is_still_there_is_kept_half_closed_then_closed_when_the_client_closes():
    lingering = Lingering()
    server, client = pair()
    server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    lingering.close(server)  # returns at once: the client has not closed yet
    assert server in lingering and not closed(server)
    client.settimeout(5)
    received = b""
    while chunk := client.recv(4096):  # the whole answer, then the server's FIN
        received += chunk
    assert received.endswith(b"\r\n\r\nok")
    lingering.sweep()
    assert server in lingering  # the client is still connected
    client.close()
    gone(lingering, server)


def gone(lingering: Lingering, sock: socket.socket) -> None:
    """Sweep until ``sock`` is closed (its client's FIN arrives on the loopback)."""
    for _ in range(500):
        lingering.sweep()
        if sock not in lingering:
            break
        time.sleep(0.01)
    assert sock not in lingering and closed(sock)


def test_a_client_that_closed_first_is_closed_and_what_it_sent_is_discarded():
    lingering = Lingering()
    server, client = pair()
    client.sendall(b"x" * 10_000)  # a body the app never read
    client.close()
    lingering.close(server)
    gone(lingering, server)


def test_a_client_that_keeps_sending_is_closed_after_the_drain_limit_and_one_that_stays_after_the_time():
    clock = Clock()
    lingering = Lingering(clock)
    talker, talking = pair()
    lingering.close(talker)
    assert talker in lingering
    talking.sendall(b"y" * (serving.MAX_DRAIN_BYTES // 2))
    sent = serving.MAX_DRAIN_BYTES // 2
    for _ in range(400):
        if talker not in lingering:
            break
        try:
            sent += talking.send(b"y" * 4096)
        except OSError:
            break
        lingering.sweep()
    assert talker not in lingering and closed(talker)
    assert sent >= serving.MAX_DRAIN_BYTES

    stayer, staying = pair()
    lingering.close(stayer)
    clock.now += serving.LINGER_SECONDS - 0.1
    lingering.sweep()
    assert stayer in lingering
    clock.now += 0.2
    lingering.sweep()
    assert stayer not in lingering and closed(stayer)
    staying.close()
    talking.close()


def test_at_most_max_lingering_are_kept_the_oldest_closed_first_and_a_second_close_is_ignored(monkeypatch):
    monkeypatch.setattr(serving, "MAX_LINGERING", 3)
    lingering = Lingering()
    pairs = [pair() for _ in range(4)]
    for server, _client in pairs:
        lingering.close(server)
        lingering.close(server)  # gunicorn closes twice after an error once the headers were sent
    assert len(lingering) == 3
    assert closed(pairs[0][0]) and [s in lingering for s, _ in pairs] == [False, True, True, True]
    for server, client in pairs:
        client.close()
        server.close()


def test_a_socket_already_closed_or_not_connected_is_closed_without_being_kept():
    lingering = Lingering()
    never = socket.socket()
    lingering.close(never)  # not connected: shutdown fails
    assert never not in lingering and closed(never)


# -- under gunicorn, with the settings every app has -------------------------------------------

@pytest.fixture
def served():
    port = free_port()
    env = {**os.environ, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1",
           "PROMETHEUS_MULTIPROC_DIR": "", "PYTHONPATH": str(ROOT)}
    env.pop("GUNICORN_WORKER_CLASS", None)
    env.pop("GUNICORN_THREADS", None)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:services.kernel.gunicorn_conf",
                                "tests.support.serving_app:app"], cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=30)
        yield port, process
    finally:
        stop_group(process, signal.SIGTERM)


def get(port: int, path: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_one_worker_answers_the_next_client_while_the_last_one_has_not_closed_its_connection(served):
    port, _process = served
    first = socket.create_connection(("127.0.0.1", port), timeout=10)
    first.sendall(b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n")
    answer = b""
    while chunk := first.recv(4096):  # the answer, then the worker's half-close
        answer += chunk
    assert b'{"hello":"world"}' in answer
    mine = first.getsockname()[1]
    # gunicorn's own close would keep the only worker waiting here for this client (up to 2 s)
    status, body = get(port, "/lingering")
    assert status == 200 and mine in body["ports"]
    first.close()
    for _ in range(100):  # closed by the worker once its client closed (looked at within 0.5 s idle)
        status, body = get(port, "/lingering")
        if mine not in body["ports"]:
            break
    assert mine not in body["ports"]


def test_an_answer_sent_before_the_body_was_read_reaches_the_client_whole(served):
    """The answer and its length as sent, the body left unread. (On the loopback a reset rarely
    destroys an answer the client's kernel already holds, so a plain close passes this too: it
    guards what the worker sends, while the reason to linger is a client on a real network.)"""
    port, _process = served
    for _ in range(5):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        body = b"z" * 48_000  # not read by the app: left in the worker's socket when it answers
        client.sendall(b"POST /refuse HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
        answer = b""
        while chunk := client.recv(4096):  # a reset would raise here, or cut the answer short
            answer += chunk
        client.close()
        head, _, content = answer.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        assert head.startswith(b"HTTP/1.1 413") and len(content) == length and json.loads(content) == {"refused": True}


def test_the_services_and_the_web_client_run_this_worker_and_thread_workers_stay_gunicorns():
    def worker_class(**environ: str) -> str:
        env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": "/tmp/cocreate-test-unused", **environ}
        return subprocess.run([sys.executable, "-c", "import services.kernel.gunicorn_conf as c; print(c.worker_class)"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()

    assert worker_class() == "services.kernel.serving.SyncWorker"
    assert worker_class(GUNICORN_THREADS="4") == "sync"  # gunicorn runs it as gthread
    assert worker_class(GUNICORN_WORKER_CLASS="gevent") == "gevent"
