"""The processes of the Procfile, expanded against the environment as a shell would.

A Procfile line is ``name: [NAME=value ...] command [argument ...]``. Words are split as a POSIX
shell splits them (quotes included), then ``$NAME``, ``${NAME}`` and ``${NAME:-default}`` (the
default may hold expansions of its own) are expanded in each word; a leading ``NAME=value`` word is
an environment variable of that process only. Nothing else of the shell is supported, and nothing
more is needed.

Each process says where it listens by one of its assignments: ``GUNICORN_BIND`` (an HTTP app),
``<APP>_HEALTH_PORT`` (a worker's probes) or ``COCREATE_BROKER_PORT`` (the local broker); the
variable named in that assignment (``${GATEWAY_PORT:-8000}``) is the one that moves it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.S)
_FIRST_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


class ProcfileError(ValueError):
    """A Procfile line this reader does not understand."""


@dataclass(frozen=True)
class Process:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    kind: str = "other"  # "app" (GET /readyz), "worker" (GET /readyz on its health port), "broker" (TCP)
    host: str = "127.0.0.1"  # the address it binds
    port: int | None = None
    port_variable: str | None = None  # the variable that moves its port

    @property
    def probe_url(self) -> str | None:
        if self.port is None or self.kind not in ("app", "worker"):
            return None
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "*") else self.host
        return f"http://{host}:{self.port}/readyz"


def expand(text: str, env: Mapping[str, str]) -> str:
    """``text`` with ``$NAME``, ``${NAME}`` and ``${NAME:-default}`` replaced from ``env``."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        if text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            body = text[i + 2:end]
            name, sep, default = body.partition(":-")
            if not _NAME.fullmatch(name) or (not sep and body != name):
                raise ProcfileError(f"unsupported expansion ${{{body}}}")
            value = env.get(name, "")
            out.append(value if value or not sep else expand(default, env))
            i = end + 1
            continue
        match = _NAME.match(text, i + 1)
        if match is None:
            out.append(char)
            i += 1
            continue
        out.append(env.get(match.group(0), ""))
        i = match.end()
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        if text.startswith("${", index):
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ProcfileError(f"unclosed ${{ in {text!r}")


def parse_line(name: str, command: str, environ: Mapping[str, str]) -> Process:
    try:
        words = shlex.split(command, comments=False, posix=True)
    except ValueError as exc:
        raise ProcfileError(f"{name}: {exc}") from None
    env: dict[str, str] = {}
    raw_assignments: dict[str, str] = {}
    while words and (match := _ASSIGNMENT.fullmatch(words[0])):
        variable, raw = match.groups()
        env[variable] = expand(raw, {**environ, **env})  # later assignments see earlier ones
        raw_assignments[variable] = raw
        words.pop(0)
    if not words:
        raise ProcfileError(f"{name}: no command")
    scope = {**environ, **env}
    argv = tuple(expand(word, scope) for word in words)
    kind, host, port_text, raw = "other", "127.0.0.1", None, None
    if "GUNICORN_BIND" in env:
        kind, raw = "app", raw_assignments["GUNICORN_BIND"]
        host, _, port_text = env["GUNICORN_BIND"].rpartition(":")
    elif (health := next((v for v in env if v.endswith("_HEALTH_PORT")), None)) is not None:
        kind, host, raw, port_text = "worker", "0.0.0.0", raw_assignments[health], env[health]
    elif "COCREATE_BROKER_PORT" in env:
        kind, raw, port_text = "broker", raw_assignments["COCREATE_BROKER_PORT"], env["COCREATE_BROKER_PORT"]
    port = variable = None
    if port_text is not None:
        found = _FIRST_VARIABLE.search(raw)
        variable = found.group(1) if found else None
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            where = f"set {variable}" if variable else "fix the Procfile"
            raise ProcfileError(f"{name}: {port_text!r} is not a port number ({where})")
        port = int(port_text)
    return Process(name=name, argv=argv, env=env, kind=kind, host=host or "127.0.0.1", port=port,
                   port_variable=variable)


def read_procfile(path: Path, environ: Mapping[str, str]) -> list[Process]:
    processes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name.strip()):
            raise ProcfileError(f"{path.name}:{number}: expected 'name: command'")
        processes.append(parse_line(name.strip(), command.strip(), environ))
    return processes
