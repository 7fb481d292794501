"""The local platform's processes, each started by the test itself, for drills that kill some of
them: the broker (:class:`~tests.support.broker.Broker`) and every ``Procfile`` entry, run with
the same command line as ``make run`` (``bash -c "exec env <command>"``, so the variables of the line
expand as under honcho) on free ports, each with its own log. Unlike ``bin/run-platform``, one
process dying does not stop the others, and any one can be SIGKILLed and started again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import TEST_SECRET
from tests.support.broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[2]
# Procfile entry -> the variable its port comes from (see the Procfile)
PORT_VARIABLES = {
    "projects": "PROJECTS_PORT", "volunteers": "VOLUNTEERS_PORT", "feedback": "FEEDBACK_PORT",
    "gateway": "GATEWAY_PORT", "projects-relay": "PROJECTS_RELAY_PORT", "volunteers-relay": "VOLUNTEERS_RELAY_PORT",
    "feedback-relay": "FEEDBACK_RELAY_PORT", "volunteers-consumer": "VOLUNTEERS_CONSUMER_PORT",
    "volunteers-cases": "VOLUNTEERS_CASES_PORT",
    "feedback-consumer": "FEEDBACK_CONSUMER_PORT", "feedback-sweep": "FEEDBACK_SWEEP_PORT",
    "projects-rounds": "PROJECTS_ROUNDS_PORT",
    "gateway-feed": "GATEWAY_FEED_PORT", "web": "WEB_PORT",
}


def stop_group(process: subprocess.Popen, sig: int, timeout: float = 60) -> None:
    """Send ``sig`` to the process group a process leads; SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


class LocalPlatform:
    def __init__(self, workdir: Path, env: dict[str, str] | None = None, only: tuple[str, ...] = ()) -> None:
        """``only``: these Procfile entries (and the broker) instead of all of them."""
        self.workdir = workdir
        self.data_dir = workdir / "var"
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.commands = procfile()
        self.broker = Broker()
        self.ports = {name: free_port() for name in self.commands if name != "broker" and (not only or name in only)}
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "COCREATE_DATA_DIR": str(self.data_dir), "COCREATE_JWT_SECRET": TEST_SECRET,
                    "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap, "PYTHONUNBUFFERED": "1",
                    # as bin/run-platform sets them for the web client of a local run
                    "WEB_SECRET_KEY": "local-platform-test-web-key", "WEB_COOKIE_SECURE": "false",
                    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                    **{PORT_VARIABLES[name]: str(port) for name, port in self.ports.items()}, **(env or {})}
        for app in ("projects", "volunteers", "feedback", "gateway", "web"):
            (self.data_dir / "metrics" / app).mkdir(parents=True, exist_ok=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(
            ["bash", "-c", f"exec env {self.commands[name]}"], cwd=ROOT, env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        stop_group(self.processes[name], sig)

    def wait_ready(self, names, timeout: float = 120) -> None:
        pending = set(names)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            self.check_alive()
            pending = {name for name in pending if not ready(self.url(name))}
            if pending:
                time.sleep(0.3)
        if pending:
            raise AssertionError(f"not ready after {timeout} s: {sorted(pending)}\n{self.tails(sorted(pending))}")

    def check_alive(self) -> None:
        """Fail with its log when a process stopped that the test did not stop."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.tails([name])}")

    def tails(self, names, lines: int = 30) -> str:
        out = []
        for name in names:
            path = self.logs / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def __enter__(self) -> "LocalPlatform":
        self.broker.start()
        try:
            # The services' APIs first (each creates its store's schema), then the workers that
            # share their SQLite files, so that no two processes create one schema at once.
            first = [name for name in ("projects", "volunteers", "feedback") if name in self.ports]
            for name in first:
                self.start(name)
            self.wait_ready(first)
            for name in self.ports:
                if name not in first:
                    self.start(name)
            self.wait_ready(self.ports)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc) -> None:
        for name in list(self.processes):
            self.kill(name, signal.SIGTERM)
        self.broker.stop()
