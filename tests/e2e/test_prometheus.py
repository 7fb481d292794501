"""A real Prometheus scrapes the running local platform — every app's and worker's /metrics — and
one metric of each app is read back through Prometheus' HTTP API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from tests.conftest import require_tool
from tests.support.broker import free_port
from tests.support.run_platform import APPS, WORKERS, get

pytestmark = pytest.mark.broker


def query(prometheus: str, expression: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_every_app_and_worker(platform, tmp_path):
    binary = require_tool("prometheus", "Debian package prometheus; .ci/run installs it")
    process, ports, log_path = platform
    targets = {name: f"127.0.0.1:{ports[name]}" for name in (*APPS, *WORKERS)}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(_ready(t) for t in targets.values()):
        time.sleep(0.5)
    for app in APPS:  # some traffic, so that request metrics exist
        assert get(f"http://{targets[app]}/healthz")[0] == 200
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
              "scrape_configs": [{"job_name": name, "metrics_path": "/metrics",
                                  "static_configs": [{"targets": [target]}]} for name, target in targets.items()]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT)
    prometheus = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        up: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                up = {r["metric"]["job"]: r["value"][1] for r in query(prometheus, "up")}
            except OSError:
                up = {}
            if len(up) == len(targets) and set(up.values()) == {"1"}:
                break
            time.sleep(0.5)
        assert up == {name: "1" for name in targets}, (up, (tmp_path / "prometheus.log").read_text()[-2000:])
        for app in APPS:
            series = query(prometheus, f'cocreate_http_requests_total{{job="{app}", app="{app}", route="/healthz"}}')
            assert series and float(series[0]["value"][1]) >= 1, app
        relays = query(prometheus, "cocreate_relay_lag_events")
        assert {(r["metric"]["job"], r["metric"]["service"]) for r in relays} == {
            ("projects_relay", "projects"), ("volunteers_relay", "volunteers"), ("feedback_relay", "feedback")}
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ready(target: str) -> bool:
    try:
        return get(f"http://{target}/readyz")[0] == 200
    except OSError:
        return False
