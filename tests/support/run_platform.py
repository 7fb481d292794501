"""The local platform as ``make run`` (``bin/run-platform``) starts it, seen from outside: its apps
and workers, a plain HTTP GET, and what its log says about a process that stopped by itself. The
``platform`` fixture that starts it is in ``tests/e2e/conftest.py``."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("gateway", "projects", "volunteers", "feedback", "web")
WORKERS = ("projects_relay", "volunteers_relay", "feedback_relay", "volunteers_consumer", "feedback_consumer",
           "feedback_sweep", "gateway_feed")


def get(url: str) -> tuple[int, bytes, str]:
    """Status, body and content type of a GET (an HTTP error status is an answer, not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def listening(port: int) -> bool:
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
