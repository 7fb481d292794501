"""A service's one-shot command run periodically (``--every``), as the local platform runs the
overdue sweep: it runs again and again, serves its probes, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_the_sweep_runs_every_period_serves_probes_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "COCREATE_DATA_DIR": str(tmp_path), "FEEDBACK_HEALTH_PORT": str(port),
           "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "services.feedback", "sweep-overdue", "--every", "0.2"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        runs = []
        deadline = time.monotonic() + 60
        while len(runs) < 3 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("feedback:"):
                runs.append(line.strip())
        assert len(runs) == 3, f"ran {len(runs)} times: {process.stderr.read() if process.poll() is not None else ''}"
        assert all("overdue" in run for run in runs)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as reply:
            assert reply.status == 200 and json.loads(reply.read())["status"] == "ready"
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    assert returncode == 0


def test_every_needs_a_positive_period(tmp_path):
    done = subprocess.run([sys.executable, "-m", "services.feedback", "sweep-overdue", "--every", "0"], cwd=ROOT,
                          env={**os.environ, "COCREATE_DATA_DIR": str(tmp_path)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "positive" in done.stderr
