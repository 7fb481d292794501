"""``python -m localrun [process ...]``: the local platform under supervisord, in the foreground.

1. Reads the Procfile (every process, or the ones named) and checks that every port is free: a
   busy one is one line naming the port and the variable that moves it, exit code 1, nothing
   started.
2. Writes ``$COCREATE_DATA_DIR/supervisord.conf`` and runs supervisord in the foreground; each
   process logs to ``$COCREATE_DATA_DIR/logs/<name>.log`` and the screen shows every log line,
   readable (time, process, level, message).
3. Once every app and worker answers ``/readyz`` (and the broker its port), prints the banner:
   where the web client, the gateway and its docs are, and what to do next.
4. Says plainly when a process stops unexpectedly (supervisord restarts it), when it answers
   again, and when one keeps failing and is given up on (FATAL): its exit code and the end of its log.
5. Ctrl-C (or SIGTERM): supervisord stops every process group; whatever is left is stopped too;
   exit code 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from localrun.config import START_SECONDS, STOP_WAIT_SECONDS, render, supervisor_name
from localrun.procfile import Process, ProcfileError, read_procfile

LABEL = "platform"
_SUPERVISOR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<message>.*)$")
_SPAWNED = re.compile(r"spawned: '(?P<name>[^']+)' with pid (?P<pid>\d+)")
_EXITED = re.compile(r"exited: (?P<name>\S+) \((?P<how>.*); (?P<expected>not expected|expected)\)")
_GAVE_UP = re.compile(r"gave up: (?P<name>\S+) entered FATAL state")
_RUNNING = re.compile(r"success: (?P<name>\S+) entered RUNNING state")
_SPAWNERR = re.compile(r"spawnerr: (?P<error>.*)")
_KILLING = re.compile(r"killing '(?P<name>[^']+)' \((?P<pid>\d+)\) with SIGKILL")
_WAITING = re.compile(r"waiting for (?P<names>.*) to die")


def port_problems(processes: list[Process]) -> list[str]:
    """One line per port that is given twice or is already in use."""
    problems, owners = [], {}
    for process in processes:
        if process.port is None:
            continue
        variable = process.port_variable or f"the Procfile's {process.name} line"
        if process.port in owners and owners[process.port] != variable:
            problems.append(f"port {process.port} is given to both {owners[process.port]} and {variable}:"
                            f" set one of them to another port")
            continue
        owners[process.port] = variable
        if _in_use(process.host, process.port):
            fix = f"set {variable}=… to a free port" if process.port_variable else f"change {variable}"
            problems.append(f"port {process.port} is in use ({variable}): stop what uses it or {fix}")
    return problems


def _in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails as the process's own bind would (SO_REUSEADDR like gunicorn,
    http.server and tansu, so a port left in TIME_WAIT by a previous run counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def readable(line: str) -> str:
    """A JSON log line as ``LEVEL message key=value ...``; anything else as it is."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "message" not in record:
        return line
    extras = " ".join(f"{key}={value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
                      for key, value in record.items()
                      if key not in ("ts", "level", "service", "logger", "message", "exception"))
    text = f"{record.get('level', ''):<7} {record['message']}" + (f"  {extras}" if extras else "")
    if record.get("exception"):
        text += "\n" + str(record["exception"])
    return text


def live_processes() -> list[tuple[int, int, int]]:
    """``(pid, process group, session)`` of every live process (Linux's /proc; elsewhere none)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] not in ("Z", "X"):
            found.append((int(entry), int(fields[2]), int(fields[3])))
    return found


def session_members(session: int) -> list[tuple[int, int]]:
    """``(pid, process group)`` of every live process of a session."""
    return [(pid, group) for pid, group, sid in live_processes() if sid == session]


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    """supervisord gets SIGTERM (and stops everything) if the launcher itself is killed."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class Launcher:
    def __init__(self, processes: list[Process], *, root: Path, data_dir: Path, conf: Path, logs: Path,
                 supervisorctl: str) -> None:
        self.processes = {p.name: p for p in processes}
        self.root, self.data_dir, self.conf, self.logs = root, data_dir, conf, logs
        self.supervisorctl = supervisorctl
        self.width = max(len(LABEL), *(len(name) for name in self.processes))
        self._print_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.banner_shown = False
        self.pids: dict[str, int] = {}  # the current instance of each process
        self.started: set[str] = set()
        self.running: set[str] = set()  # up for START_SECONDS since its last start
        self.last_exit: dict[str, str] = {}
        self.quick_failures: dict[str, int] = {}
        self.fatal: set[str] = set()
        self.coming_back: dict[str, float] = {}  # exited unexpectedly at; waiting for it to answer again
        self.old_groups: dict[str, set[int]] = {}  # process groups of its previous instances still alive
        self.supervisord: subprocess.Popen | None = None
        self._offsets = {name: self._size(self.logs / f"{name}.log") for name in self.processes}

    # -- the screen ------------------------------------------------------------------------------
    def show(self, name: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        lines = text.split("\n")
        out = [f"{stamp} {name:<{self.width}} | {lines[0]}"]
        out += [f"{' ' * len(stamp)} {'':<{self.width}} | {line}" for line in lines[1:]]
        with self._print_lock:
            try:
                sys.stdout.write("\n".join(out) + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass

    def say(self, text: str) -> None:
        self.show(LABEL, text)

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        supervisord = str(Path(sys.executable).with_name("supervisord"))
        if not os.path.exists(supervisord):
            supervisord_cmd = [sys.executable, "-m", "supervisor.supervisord"]
        else:
            supervisord_cmd = [supervisord]
        self.say(f"starting {len(self.processes)} processes under supervisord; their logs: "
                 f"{self.rel(self.logs)}/<process>.log")
        self.supervisord = subprocess.Popen(
            [*supervisord_cmd, "-c", str(self.conf)], cwd=self.root, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
            start_new_session=True, preexec_fn=_die_with_parent)
        reader = threading.Thread(target=self._read_supervisord, name="supervisord-output", daemon=True)
        tailer = threading.Thread(target=self._tail_logs, name="logs", daemon=True)
        reader.start()
        tailer.start()
        code = self._watch()
        return self._shutdown(code, reader, tailer)

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping.is_set():
            self.force.set()  # a second Ctrl-C: stop waiting, kill what is left
        self.stopping.set()

    def _watch(self) -> int:
        started = time.monotonic()
        pending = set(self.processes)
        last_note = started
        while not self.stopping.wait(1.0):
            if self.supervisord.poll() is not None:
                self.say(f"supervisord stopped by itself (exit code {self.supervisord.returncode}): see "
                         f"{self.rel(self.logs / 'supervisord.log')}")
                return 1
            now = time.monotonic()
            if not self.banner_shown:
                pending = {name for name in pending if name not in self.fatal and not self.ready(name)}
                if not pending:
                    self.banner(now - started)
                    self.banner_shown = True
                elif now - last_note >= 30:
                    last_note = now
                    self.say(f"still starting after {now - started:.0f} s: {', '.join(sorted(pending))}")
                continue
            for name, since in list(self.coming_back.items()):
                if name in self.fatal:
                    self.coming_back.pop(name, None)
                elif not self.old_groups.get(name) and self.pids.get(name) and self.ready(name):
                    self.coming_back.pop(name, None)
                    self.say(f"{name} is back: it answers again, {time.monotonic() - since:.0f} s after it stopped")
        return 0

    def ready(self, name: str) -> bool:
        process = self.processes[name]
        if process.kind == "broker" and process.port is not None:
            with socket.socket() as sock:
                sock.settimeout(1)
                return sock.connect_ex(("127.0.0.1", process.port)) == 0
        url = process.probe_url
        if url is None:
            return name in self.running
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def banner(self, seconds: float) -> None:
        apps = self.processes
        lines = ["", "=" * 78, f"  共同缔造 is running: {len(apps) - len(self.fatal)} processes answer, "
                 f"ready after {seconds:.0f} s", ""]
        if "web" in apps:
            lines.append(f"  web client (网页端)   http://127.0.0.1:{apps['web'].port}/")
        if "gateway" in apps:
            gateway = f"http://127.0.0.1:{apps['gateway'].port}"
            lines.append(f"  gateway (the API)     {gateway}/api/v1")
            lines.append(f"  API docs              {gateway}/docs")
            lines.append(f"  demo community        {self.demo_command()}   (in another terminal)")
        lines.append(f"  logs                  {self.rel(self.logs)}/<process>.log")
        lines.append(f"  processes             {self.rel(Path(self.supervisorctl))} -c {self.rel(self.conf)} status")
        lines.append("  stop                  Ctrl-C")
        if self.fatal:
            lines.append("")
            lines.append(f"  NOT running (given up on, see above): {', '.join(sorted(self.fatal))}")
        lines += ["=" * 78, ""]
        with self._print_lock:
            try:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass

    def demo_command(self) -> str:
        """``make demo``, with the variables it needs when this run is not on the defaults."""
        prefix = []
        gateway = self.processes["gateway"].port
        if gateway != 8000:
            prefix.append(f"COCREATE_URL=http://127.0.0.1:{gateway}")
        if "web" in self.processes and self.processes["web"].port != 8080:
            prefix.append(f"WEB_PORT={self.processes['web'].port}")
        if self.data_dir.resolve() != (self.root / "var").resolve():
            prefix.append(f"COCREATE_DATA_DIR={self.data_dir}")
        return " ".join([*prefix, "make demo"])

    # -- supervisord's own lines -----------------------------------------------------------------
    def _read_supervisord(self) -> None:
        assert self.supervisord is not None and self.supervisord.stdout is not None
        for raw in self.supervisord.stdout:
            line = raw.rstrip("\n")
            match = _SUPERVISOR_LINE.match(line)
            if match is None:
                if line.strip():
                    self.show("supervisord", line)
                continue
            self._on_supervisor_line(match.group("level"), match.group("message"))

    def _on_supervisor_line(self, level: str, message: str) -> None:
        if match := _SPAWNED.match(message):
            name, pid = match.group("name"), int(match.group("pid"))
            with self._state_lock:
                again = name in self.started
                self.started.add(name)
                self.pids[name] = pid
            if again and not self.stopping.is_set():
                self.say(f"{name} started again (pid {pid})")
        elif match := _EXITED.match(message):
            self._on_exit(match.group("name"), match.group("how"))
        elif match := _GAVE_UP.match(message):
            self._on_fatal(match.group("name"))
        elif match := _RUNNING.match(message):
            name = match.group("name")
            self.quick_failures[name] = 0
            self.running.add(name)
            if name in self.fatal:
                self.fatal.discard(name)
                self.say(f"{name} is running again")
        elif match := _SPAWNERR.match(message):
            self.say(f"supervisord could not start a process: {match.group('error')}")
        elif match := _KILLING.match(message):
            self.say(f"{match.group('name')} did not stop within {STOP_WAIT_SECONDS} s: killing it (SIGKILL)")
        elif match := _WAITING.match(message):
            self.say(f"waiting for {match.group('names')} to stop")
        elif level in ("CRIT", "ERRO") and "without any HTTP authentication" not in message:
            self.show("supervisord", f"{level} {message}")

    def _on_exit(self, name: str, how: str) -> None:
        if self.stopping.is_set():
            return
        with self._state_lock:
            old_pid = self.pids.pop(name, None)
        plain = how.replace("exit status", "exit code").replace("terminated by", "killed by")
        self.last_exit[name] = plain
        if name in self.running:  # it had been up for START_SECONDS: not a failure to start
            self.running.discard(name)
            self.quick_failures[name] = 0
        else:
            self.quick_failures[name] = self.quick_failures.get(name, 0) + 1
        self.say(f"{name} stopped unexpectedly ({plain}); supervisord restarts it")
        if self.banner_shown:
            self.coming_back.setdefault(name, time.monotonic())
        if old_pid is not None:
            self._stop_leftovers(name, old_pid)

    def _stop_leftovers(self, name: str, old_pid: int) -> None:
        """The processes a dead one leaves in its group (a killed gunicorn master's workers, still
        holding its port until they notice) are stopped, so that its successor can bind at once."""
        session = self.supervisord.pid if self.supervisord else None
        if session is None:
            return
        left = [pid for pid, group in session_members(session) if group == old_pid]
        if not left:
            return
        self.old_groups.setdefault(name, set()).add(old_pid)
        self.say(f"{name}: {len(left)} process(es) of its previous instance still run "
                 f"(pids {', '.join(map(str, sorted(left)))}); stopping them")

        def finish() -> None:
            for signum, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
                for pid in left:
                    try:
                        os.kill(pid, signum)
                    except OSError:
                        pass
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    if not any(group == old_pid for _pid, group in session_members(session)):
                        break
                    time.sleep(0.1)
                else:
                    continue
                break
            self.old_groups.get(name, set()).discard(old_pid)

        threading.Thread(target=finish, name=f"leftovers-{name}", daemon=True).start()

    def _on_fatal(self, name: str) -> None:
        if self.stopping.is_set():
            return
        self.fatal.add(name)
        log = self.logs / f"{name}.log"
        tail = [readable(line) for line in self._last_lines(log, 12)]
        failures = self.quick_failures.get(name, 0)
        last = self.last_exit.get(name, "no exit code")
        process = self.processes.get(name)
        target = supervisor_name(process) if process else name
        text = [f"{name} KEEPS FAILING and is given up on (FATAL): it stopped {failures} time(s) in a row "
                f"within {START_SECONDS} s of starting, the last time with {last}.",
                f"Its log {self.rel(log)} ends with:"]
        text += [f"    {line}" for chunk in tail for line in chunk.split("\n")] or ["    (nothing)"]
        text.append("The other processes keep running. Once the cause is fixed, start it again with: "
                    f"{self.rel(Path(self.supervisorctl))} -c {self.rel(self.conf)} start {target}")
        self.say("\n".join(text))

    # -- every process's log on the screen -------------------------------------------------------
    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    @staticmethod
    def _last_lines(path: Path, count: int) -> list[str]:
        try:
            with open(path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64_000))
                data = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in data.splitlines() if line.strip()][-count:]

    def _tail_logs(self) -> None:
        files: dict[str, tuple] = {}  # name -> (file, inode, unfinished line)
        while True:
            done = self.stopping.is_set() and self.supervisord is not None and self.supervisord.poll() is not None
            for name in self.processes:
                path = self.logs / f"{name}.log"
                try:
                    inode = path.stat().st_ino
                except OSError:
                    continue
                entry = files.get(name)
                if entry is None or entry[1] != inode:
                    if entry is not None:  # rotated: the rest of the old file first
                        self._emit(name, entry[2] + entry[0].read())
                        entry[0].close()
                    handle = open(path, "r", encoding="utf-8", errors="replace")
                    handle.seek(self._offsets.pop(name, 0))
                    entry = (handle, inode, "")
                handle, inode, unfinished = entry
                if handle.tell() > self._size(path):  # truncated
                    handle.seek(0)
                data = unfinished + handle.read()
                complete, _, unfinished = data.rpartition("\n")
                if complete:
                    self._emit(name, complete)
                files[name] = (handle, inode, unfinished)
            if done:
                return
            time.sleep(0.25)

    def _emit(self, name: str, text: str) -> None:
        for line in text.split("\n"):
            if line.strip():
                self.show(name, readable(line))

    # -- stopping --------------------------------------------------------------------------------
    def _shutdown(self, code: int, reader: threading.Thread, tailer: threading.Thread) -> int:
        self.stopping.set()
        supervisord = self.supervisord
        if supervisord.poll() is None:
            self.say("stopping every process (Ctrl-C again to kill them at once) ...")
            supervisord.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 2 * STOP_WAIT_SECONDS + 30
            while supervisord.poll() is None and time.monotonic() < deadline and not self.force.is_set():
                time.sleep(0.2)
            if supervisord.poll() is None:
                self.say("killing every process (SIGKILL)")
                self._kill_session(signal.SIGKILL)
                supervisord.kill()
                supervisord.wait()
        left = session_members(supervisord.pid)
        if left:
            self.say(f"{len(left)} process(es) outlived supervisord; stopping them")
            self._kill_session(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while session_members(supervisord.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            self._kill_session(signal.SIGKILL)
        reader.join(timeout=5)
        tailer.join(timeout=5)
        self.say("stopped: nothing of the platform is left running")
        return code

    def _kill_session(self, signum: int) -> None:
        for pid, _group in session_members(self.supervisord.pid):
            try:
                os.kill(pid, signum)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localrun", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="the processes to run (default: every one of the Procfile)")
    parser.add_argument("--procfile", default="Procfile")
    args = parser.parse_args(argv)
    try:
        sys.stdout.reconfigure(errors="replace")
    except AttributeError:
        pass
    import importlib.util

    if importlib.util.find_spec("supervisor") is None:
        print("supervisor is not installed in this environment: run `make venv` (or pip install -e '.[local]')",
              file=sys.stderr)
        return 2
    root = Path.cwd().resolve()
    data_dir = Path(os.environ.get("COCREATE_DATA_DIR") or root / "var").resolve()
    try:
        processes = read_procfile(root / args.procfile, os.environ)
    except (OSError, ProcfileError) as exc:
        print(f"cannot read {args.procfile}: {exc}", file=sys.stderr)
        return 2
    if args.names:
        known = {p.name for p in processes}
        unknown = [name for name in args.names if name not in known]
        if unknown:
            print(f"not in {args.procfile}: {', '.join(unknown)} (it has {', '.join(sorted(known))})", file=sys.stderr)
            return 2
        processes = [p for p in processes if p.name in args.names]
    problems = port_problems(processes)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr, flush=True)
        return 1
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    socket_path = data_dir / "supervisor.sock"
    if len(str(socket_path)) > 100:  # a Unix socket's path has at most 107 bytes
        import tempfile

        socket_path = Path(tempfile.mkdtemp(prefix="cocreate-")) / "supervisor.sock"
    conf = data_dir / "supervisord.conf"
    conf.write_text(render(processes, root=root, logs=logs, socket_path=socket_path,
                           pidfile=data_dir / "supervisord.pid"), encoding="utf-8")
    launcher = Launcher(processes, root=root, data_dir=data_dir, conf=conf, logs=logs,
                        supervisorctl=str(Path(sys.executable).with_name("supervisorctl")))
    try:
        return launcher.run()
    finally:
        if socket_path.parent != data_dir:
            try:
                socket_path.unlink(missing_ok=True)
                socket_path.parent.rmdir()
            except OSError:
                pass


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before anything was started
        sys.exit(130)
