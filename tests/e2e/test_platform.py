"""The local platform as `make run` starts it: broker, three services, relays, consumers, gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from tests.support.broker import free_port

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]
APPS = ("gateway", "projects", "volunteers", "feedback")
WORKERS = ("projects_relay", "volunteers_relay", "feedback_relay", "volunteers_consumer", "feedback_consumer",
           "feedback_sweep", "gateway_feed")


def get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def why_it_stopped(log_path: Path) -> str:
    """The log's first lines up to the first process that stopped by itself, and its tail."""
    lines = log_path.read_text(errors="replace").splitlines()
    first = next((i for i, line in enumerate(lines) if "stopped (rc=" in line and "rc=-15" not in line
                  and "rc=-2)" not in line), len(lines))
    head = "\n".join(lines[max(0, first - 60):first + 1])
    return f"{head[-6000:]}\n...\n" + "\n".join(lines[-15:])


@pytest.fixture
def platform(tmp_path):
    ports = {name: free_port() for name in (*APPS, *WORKERS, "broker")}
    env = {**os.environ, "COCREATE_DATA_DIR": str(tmp_path / "var"), "COCREATE_BROKER_PORT": str(ports["broker"])}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    for name, port in ports.items():
        env[f"{name.upper()}_PORT"] = str(port)
    log = open(tmp_path / "platform.log", "wb")
    process = subprocess.Popen([str(ROOT / "bin" / "run-platform")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process, ports, tmp_path / "platform.log"
    finally:
        if process.poll() is None:  # the test failed half-way: stop everything as Ctrl-C would
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_run_starts_everything_and_ctrl_c_stops_everything(platform):
    process, ports, log_path = platform
    urls = {name: f"http://127.0.0.1:{ports[name]}" for name in (*APPS, *WORKERS)}
    deadline = time.monotonic() + 120
    pending = set(urls)
    while pending and time.monotonic() < deadline:
        assert process.poll() is None, f"the platform exited:\n{why_it_stopped(log_path)}"
        for name in list(pending):
            try:
                if get(urls[name] + "/readyz")[0] == 200:
                    pending.discard(name)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
        time.sleep(0.5)
    assert not pending, f"not ready: {sorted(pending)}\n{log_path.read_text()[-3000:]}"

    for name, url in urls.items():
        status, body, _ = get(url + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok", name
        status, body, _ = get(url + "/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready", name
        status, body, content_type = get(url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain"), name
        assert b"# TYPE " in body, name
    status, body, _ = get(urls["projects"] + "/nope")
    assert status == 404 and set(json.loads(body)) == {"code", "status", "message", "errors"}
    # request metrics are aggregated across gunicorn workers (multiprocess mode)
    _, body, _ = get(urls["projects"] + "/metrics")
    assert b'cocreate_http_requests_total{app="projects"' in body
    _, body, _ = get(urls["projects_relay"] + "/metrics")
    assert b"cocreate_relay_lag_events" in body

    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{ports['broker']}")
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert {"projects.events", "volunteers.events", "feedback.events", "projects.events.dlq"} <= topics

    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
    process.wait(timeout=60)
    time.sleep(0.5)
    still_listening = [name for name, port in ports.items() if listening(port)]
    assert still_listening == [], f"left running: {still_listening}"
    leftovers = subprocess.run(["pgrep", "-f", str(log_path.parent / "var")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "processes were left behind"
