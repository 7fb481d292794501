"""The local platform (``bin/run-platform``, as ``make run`` starts it) and the hello-world anchors,
started on free ports for the HTTP and end-to-end benchmarks.

Differences from ``make run``, both stated in the report: the gateway's rate limits are off (a
load test is one caller sending far more than 600 requests a minute), and tokens are signed
with the tests' HS256 secret so that the benchmark can issue them itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.kernel.broker import free_port
from tests.conftest import TEST_SECRET
from tests.support.platform import stop_group

ROOT = Path(__file__).resolve().parents[1]
APPS = ("gateway", "projects", "volunteers", "feedback", "web")
WORKERS = ("projects_relay", "volunteers_relay", "feedback_relay", "volunteers_consumer", "feedback_consumer",
           "feedback_sweep", "gateway_feed")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    stop_group(process, sig)


class Platform:
    """Broker, three services with their relays and consumers, feedback's overdue sweep, gateway and
    feed worker, and the web client — every process of ``make run``, each on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "platform"
        self.users_file = self.data_dir / "users.json"  # the gateway's token endpoint (signing in to the web client)
        self.ports = {name: free_port() for name in (*APPS, *WORKERS, "broker")}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Platform":
        env = {**os.environ, "COCREATE_DATA_DIR": str(self.data_dir), "COCREATE_JWT_SECRET": TEST_SECRET,
               "COCREATE_BROKER_PORT": str(self.ports["broker"]), "GATEWAY_RATE_LIMIT_PER_CALLER": "0",
               "GATEWAY_RATE_LIMIT_PER_IP": "0", "COCREATE_USERS_FILE": str(self.users_file)}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        for name, port in self.ports.items():
            env[f"{name.upper()}_PORT"] = str(port)
        self.log_path = self.workdir / "platform.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([str(ROOT / "bin" / "run-platform")], cwd=ROOT, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        pending = set(APPS) | set(WORKERS)
        deadline = time.monotonic() + 180
        while pending and time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the platform exited: {self.log_path.read_text()[-3000:]}")
            pending = {name for name in pending if not _ready(self.urls[name])}
            time.sleep(0.5)
        if pending:
            self.__exit__(None, None, None)
            raise RuntimeError(f"not ready after 180 s: {sorted(pending)}")
        return self

    def __exit__(self, *_exc) -> None:
        if self.process is not None:
            _stop(self.process)
        self._log.close()

    def worker_rss_mb(self, app: str) -> list[float]:
        """Resident memory of each gunicorn worker of ``app`` (the children of its master)."""
        return gunicorn_worker_rss(self.ports[app])

    # -- the event pipeline: relays, consumers, the feed worker, the jobs ------------------------

    def processes(self) -> dict[int, str]:
        """Every process of the platform (pid -> command line), the supervisor's children included."""
        return descendants(self.process.pid) if self.process is not None else {}

    def pipeline_pids(self) -> list[int]:
        """The processes that move events after a command: every ``python -m <module> <role>`` of the
        platform (relays, consumers, the feed worker, feedback's sweep, the rounds job), not the
        HTTP apps (gunicorn), the broker or the supervisor."""
        return [pid for pid, command in self.processes().items()
                if re.match(r"\S*python\S* -m (services\.\w+|gateway) ", command)]

    @contextlib.contextmanager
    def pipeline_paused(self):
        """The pipeline stopped (SIGSTOP) while the block runs: what the HTTP apps do alone, the same
        work as an anchor that runs one command and saves it. Then resumed (SIGCONT), and the block
        returns only once every relay has published what was written meanwhile and every
        consumer's lag is back to 0 (the next measurement starts from a quiet platform)."""
        pids = self.pipeline_pids()
        if not pids:
            raise RuntimeError("no pipeline process found to pause")
        # A process stopped inside a write transaction (a relay saving its checkpoint) would hold its
        # database's writers' turn (services.kernel.db.WriterQueue) and stop the HTTP apps too: pause
        # again until no stopped process holds one.
        for _attempt in range(200):
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            if self._writers_free():
                break
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
        else:
            raise RuntimeError("the pipeline never paused outside a write transaction")
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        self.wait_until_drained()

    def _writers_free(self) -> bool:
        """No process holds the writers' turn of any SQLite file of the platform."""
        for path in self.data_dir.glob("*.db-writers"):
            with open(path, "rb") as queue:
                try:
                    fcntl.flock(queue, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                fcntl.flock(queue, fcntl.LOCK_UN)
        return True

    def _lag(self) -> float:
        """Events not yet published by the relays plus messages not yet consumed, from the workers'
        /metrics (``cocreate_relay_lag_events``, ``cocreate_consumer_lag_messages``)."""
        total = 0.0
        for name in WORKERS:
            try:
                with urllib.request.urlopen(self.urls[name] + "/metrics", timeout=5) as reply:
                    text = reply.read().decode()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return float("inf")
            for line in text.splitlines():
                if line.startswith(("cocreate_relay_lag_events", "cocreate_consumer_lag_messages")):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_until_drained(self, timeout: float = 180.0, verify_seconds: float = 2.0) -> None:
        """Until the relays' and consumers' lag reads 0 twice, a consumer's verification apart (its
        lag is measured every ``verify_seconds``: once would read a figure from before the load)."""
        deadline = time.monotonic() + timeout
        quiet = 0
        time.sleep(2 * verify_seconds)
        while time.monotonic() < deadline:
            quiet = quiet + 1 if self._lag() == 0 else 0
            if quiet >= 2:
                return
            time.sleep(verify_seconds + 0.5)
        raise RuntimeError(f"the pipeline did not drain within {timeout:.0f} s (lag {self._lag():.0f})")


class HelloWorld:
    """A hello-world Flask app under the same gunicorn settings as the services: ``bench.hello:app``
    by default, or another anchor's gunicorn target (``app``) with ``env`` added to the environment
    (e.g. ``GUNICORN_WORKER_CLASS=gevent`` for a gateway-like anchor; see :mod:`bench.anchors`)."""

    def __init__(self, workdir: Path, app: str = "bench.hello:app", *, name: str = "hello",
                 env: dict[str, str] | None = None, ready_path: str = "/hello") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.app, self.name, self.extra_env, self.ready_path = app, name, dict(env or {}), ready_path

    def __enter__(self) -> "HelloWorld":
        env = {**os.environ, "GUNICORN_BIND": f"127.0.0.1:{self.port}", "COCREATE_APP_NAME": self.name,
               "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"{self.name}-metrics"), **self.extra_env}
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self._log = open(self.workdir / f"{self.name}.log", "wb")
        self.process = subprocess.Popen([gunicorn, "-c", "python:services.kernel.gunicorn_conf", self.app],
                                        cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        _stop(self.process, signal.SIGTERM)
        self._log.close()
        raise RuntimeError(f"{self.name} ({self.app}) did not start: "
                           f"{(self.workdir / f'{self.name}.log').read_text(errors='replace')[-2000:]}")

    def __exit__(self, *_exc) -> None:
        _stop(self.process, signal.SIGTERM)
        self._log.close()

    def worker_rss_mb(self) -> list[float]:
        return gunicorn_worker_rss(self.port)


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process under ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            commands[int(name)] = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            continue
        parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = commands[pid]
        todo += children.get(pid, [])
    return found


def cpu_split(pids) -> dict[int, tuple[float, float]]:
    """CPU time (user, system: s) each of ``pids`` has used so far ((0, 0) for one that is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) / ticks, int(fields[12]) / ticks)
        except OSError:
            used[pid] = (0.0, 0.0)
    return used


def cpu_seconds(pids) -> dict[int, float]:
    """CPU time (user + system, s) each of ``pids`` has used so far (0 for one that is gone)."""
    return {pid: user + system for pid, (user, system) in cpu_split(pids).items()}


def gunicorn_pids(port: int) -> list[int]:
    """The gunicorn master and workers serving ``port`` (started with that bind)."""
    marker = f"GUNICORN_BIND=127.0.0.1:{port}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if marker in Path(f"/proc/{name}/environ").read_bytes() and \
                    b"gunicorn" in Path(f"/proc/{name}/cmdline").read_bytes():
                found.append(int(name))
        except OSError:
            continue
    return found


def gunicorn_worker_rss(port: int) -> list[float]:
    """VmRSS (MB) of the gunicorn workers serving ``port``: processes started with that bind whose
    parent is one too (the master's children)."""
    marker = f"GUNICORN_BIND=127.0.0.1:{port}".encode()
    processes: dict[int, tuple[int, float]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if marker not in Path(f"/proc/{name}/environ").read_bytes():
                continue
            if b"gunicorn" not in Path(f"/proc/{name}/cmdline").read_bytes():
                continue
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{name}/status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        processes[int(name)] = (int(fields["PPid"]), int(fields.get("VmRSS", "0 kB").split()[0]) / 1024)
    return [round(rss, 1) for parent, rss in processes.values() if parent in processes]
