"""The local platform as `make run` starts it: broker, three services, relays, consumers, gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error

import pytest
from kafka import KafkaAdminClient

from tests.support.run_platform import APPS, WORKERS, get, listening, why_it_stopped

pytestmark = pytest.mark.broker


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
