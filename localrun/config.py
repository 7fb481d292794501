"""supervisord's configuration for the local platform, written at every start from the Procfile."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from localrun.procfile import Process

# A process must stay up this long to count as started; one that exits sooner is retried after 1 s,
# then 2 s, 3 s ... and given up (FATAL) after START_RETRIES retries. A gunicorn master that finds
# its port still held (the workers of a master that was killed let go of it within seconds) tries
# to bind for about 5 s before it exits, so each of its attempts counts as a failed start and the
# retries leave it about 30 s in all.
START_SECONDS = 10
START_RETRIES = 6
# Ctrl-C: every process gets SIGTERM (its whole process group: a gunicorn master and its workers),
# then SIGKILL after this long.
STOP_WAIT_SECONDS = 15
GROUP = "cocreate"  # every process but the broker: stopped together, before the broker


def _value(text: str) -> str:
    """A value for supervisord's configuration file, which expands %(name)s itself."""
    return text.replace("%", "%%")


def command_line(process: Process) -> str:
    """The command supervisord runs: ``env NAME=value ... program arguments`` (env then execs the
    program, so the pid supervisord watches is the program's own)."""
    words = ["env", *(f"{name}={value}" for name, value in process.env.items()), *process.argv]
    return " ".join(shlex.quote(word) for word in words)


def render(processes: Sequence[Process], *, root: Path, logs: Path, socket_path: Path, pidfile: Path) -> str:
    lines = [
        "; Written by `python -m localrun` (bin/run-platform, `make run`) at every start: edit the Procfile",
        "; instead. With the platform running: supervisorctl -c <this file> status | restart <name> | tail -f <name>",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={_value(str(logs / 'supervisord.log'))}",
        "logfile_maxbytes=5MB",
        "logfile_backups=1",
        "loglevel=info",
        f"pidfile={_value(str(pidfile))}",
        f"childlogdir={_value(str(logs))}",
        f"directory={_value(str(root))}",
        "identifier=cocreate-local",
    ]
    if os.geteuid() == 0:  # otherwise supervisord warns that it runs as root without being told to
        lines.append("user=root")
    lines += [
        "",
        "[unix_http_server]",
        f"file={_value(str(socket_path))}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_value(str(socket_path))}",
        "",
    ]
    grouped = [p.name for p in processes if p.kind != "broker"]
    if grouped:
        lines += [f"[group:{GROUP}]", f"programs={','.join(grouped)}", "priority=200", ""]
    for process in processes:
        lines += [
            f"[program:{process.name}]",
            f"command={_value(command_line(process))}",
            f"directory={_value(str(root))}",
            f"priority={100 if process.kind == 'broker' else 200}",
            "autostart=true",
            # restarted whatever its exit code, as Kubernetes restarts a container: a worker exits
            # with code 3 when it must be restarted (its database is unreachable, ...)
            "autorestart=true",
            f"startsecs={START_SECONDS}",
            f"startretries={START_RETRIES}",
            "stopsignal=TERM",
            f"stopwaitsecs={STOP_WAIT_SECONDS}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_value(str(logs / f'{process.name}.log'))}",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=2",
            "",
        ]
    return "\n".join(lines)


def supervisor_name(process: Process) -> str:
    """The name supervisorctl knows the process by."""
    return process.name if process.kind == "broker" else f"{GROUP}:{process.name}"
