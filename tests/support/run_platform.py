"""The local platform as ``make run`` (``bin/run-platform`` → ``python -m localrun`` → supervisord)
starts it, seen from outside: its apps and workers, a plain HTTP GET, its ready banner, its
processes under supervisord, and what its screen says about a process that stopped by itself. The
``platform`` fixture that starts it is in ``tests/e2e/conftest.py``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from localrun.__main__ import live_processes

ROOT = Path(__file__).resolve().parents[2]
APPS = ("gateway", "projects", "volunteers", "feedback", "web")
# every worker's probe port (the Procfile's ``<NAME>_PORT``): a platform fixture gives each a free
# one, so that no default port is taken on a machine where something else holds it
WORKERS = ("projects_relay", "volunteers_relay", "feedback_relay", "volunteers_consumer", "volunteers_cases",
           "feedback_consumer",
           "feedback_sweep", "projects_rounds", "gateway_feed")


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
    """The screen's lines up to the first process that stopped by itself (as the launcher,
    ``python -m localrun``, reports it), and its last lines."""
    lines = log_path.read_text(errors="replace").splitlines()
    first = next((i for i, line in enumerate(lines) if "stopped unexpectedly" in line or "KEEPS FAILING" in line),
                 len(lines))
    head = "\n".join(lines[max(0, first - 60):first + 1])
    return f"{head[-6000:]}\n...\n" + "\n".join(lines[-15:])


BANNER = "共同缔造 is running"


def platform_environment(data_dir: Path, ports: dict[str, int]) -> dict[str, str]:
    """The environment of a platform on ``ports`` (by app or worker name, and "broker") with its data
    in ``data_dir`` and its own local broker."""
    env = {**os.environ, "COCREATE_DATA_DIR": str(data_dir), "COCREATE_BROKER_PORT": str(ports["broker"])}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    for name, port in ports.items():
        env[f"{name.upper()}_PORT"] = str(port)
    return env


def wait_for_line(process: subprocess.Popen, log_path: Path, text: str, timeout: float, after: int = 0) -> str:
    """The first line of the screen (from character ``after`` on) that contains ``text``, waiting
    for it while the launcher runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = log_path.read_text(errors="replace")[after:]
        for line in screen.splitlines():
            if text in line:
                return line
        assert process.poll() is None, f"the launcher exited ({process.returncode}):\n{why_it_stopped(log_path)}"
        time.sleep(0.5)
    raise AssertionError(f"no line with {text!r} after {timeout:.0f} s:\n{why_it_stopped(log_path)}")


def wait_for_banner(process: subprocess.Popen, log_path: Path, timeout: float = 240) -> str:
    """The ready banner the launcher prints once every app and worker answers /readyz."""
    wait_for_line(process, log_path, BANNER, timeout)
    screen = log_path.read_text(errors="replace")
    start = screen.index(BANNER)
    return screen[start:screen.index("=" * 20, start)]


def supervisorctl(data_dir: Path, *args: str) -> str:
    """``supervisorctl`` against the platform whose data directory is ``data_dir``."""
    command = [str(Path(sys.executable).with_name("supervisorctl")), "-c", str(data_dir / "supervisord.conf"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout


def pid_of(data_dir: Path, name: str) -> int:
    """The pid of a process under supervisord (``cocreate:projects``, ``broker``), 0 when not running."""
    text = supervisorctl(data_dir, "pid", name).strip()
    return int(text) if text.isdigit() else 0


def session_processes(session: int) -> list[int]:
    """Every live process of a session (the launcher runs supervisord in a session of its own)."""
    return [pid for pid, _group, sid in live_processes() if sid == session]


def group_processes(group: int) -> list[int]:
    """Every live process of a process group."""
    return [pid for pid, pgrp, _sid in live_processes() if pgrp == group]


def supervisord_pid(data_dir: Path) -> int:
    return int((data_dir / "supervisord.pid").read_text().strip())
