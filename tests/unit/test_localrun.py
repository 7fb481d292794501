"""The local launcher's pieces that need no process: the Procfile as the shell would expand it, the
configuration supervisord gets, and log lines made readable (the port check opens sockets: it is
tested end to end, in tests/e2e/test_local_supervisor.py)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from localrun.__main__ import readable
from localrun.config import render
from localrun.procfile import ProcfileError, expand, parse_line, read_procfile

ROOT = Path(__file__).resolve().parents[2]


def test_expansion_as_a_shell_does():
    env = {"A": "1", "EMPTY": ""}
    assert expand("x$A-${A}", env) == "x1-1"
    assert expand("${B:-${A}0}", env) == "10"
    assert expand("${EMPTY:-d}", env) == "d"
    assert expand("${MISSING}", env) == ""
    assert expand("http://h:${P:-http://x:${A:-9}}/", env) == "http://h:http://x:1/"
    with pytest.raises(ProcfileError):
        expand("${A", env)
    with pytest.raises(ProcfileError):
        expand("${A:=x}", env)


def test_every_process_of_the_procfile_and_where_it_listens():
    processes = {p.name: p for p in read_procfile(ROOT / "Procfile", {"GATEWAY_PORT": "18000"})}
    assert set(processes) == {"broker", "projects", "projects-relay", "projects-rounds", "volunteers", "volunteers-relay",
                              "volunteers-consumer", "volunteers-cases", "feedback", "feedback-relay", "feedback-consumer",
                              "feedback-sweep", "gateway", "gateway-feed", "web"}
    gateway = processes["gateway"]
    assert (gateway.kind, gateway.host, gateway.port, gateway.port_variable) == ("app", "127.0.0.1", 18000, "GATEWAY_PORT")
    assert gateway.env["GATEWAY_CORS_ORIGINS"] == "http://127.0.0.1:8080,http://localhost:8080"
    assert gateway.argv == ("gunicorn", "-c", "python:services.kernel.gunicorn_conf", "gateway.app:build()")
    assert processes["web"].env["WEB_GATEWAY_URL"] == "http://127.0.0.1:18000"
    relay = processes["projects-relay"]
    assert (relay.kind, relay.host, relay.port, relay.port_variable) == ("worker", "0.0.0.0", 9101, "PROJECTS_RELAY_PORT")
    assert relay.probe_url == "http://127.0.0.1:9101/readyz"
    broker = processes["broker"]
    assert (broker.kind, broker.port, broker.port_variable, broker.probe_url) == ("broker", 9092, "COCREATE_BROKER_PORT", None)


def test_a_port_that_is_not_a_number_names_its_variable():
    with pytest.raises(ProcfileError, match="set WEB_PORT"):
        parse_line("web", "GUNICORN_BIND=127.0.0.1:${WEB_PORT:-8080} gunicorn x", {"WEB_PORT": "eighty"})


def test_supervisord_gets_each_command_as_the_procfile_says(tmp_path):
    processes = read_procfile(ROOT / "Procfile", {"COCREATE_DATA_DIR": "/data/100%"})
    text = render(processes, root=ROOT, logs=tmp_path / "logs", socket_path=tmp_path / "s.sock",
                  pidfile=tmp_path / "pid")
    parser = configparser.ConfigParser(interpolation=configparser.BasicInterpolation())
    parser.read_string(text)
    projects = parser["program:projects"]
    words = shlex.split(projects["command"])  # after supervisord's own %-expansion
    assert words[0] == "env" and "PROMETHEUS_MULTIPROC_DIR=/data/100%/metrics/projects" in words
    assert words[-1] == "services.projects.app:build()"
    assert projects["stopasgroup"] == projects["killasgroup"] == "true"
    assert projects["autorestart"] == "true"
    assert projects["stdout_logfile"] == str(tmp_path / "logs" / "projects.log")
    assert parser["supervisord"]["nodaemon"] == "true"
    assert "broker" not in parser["group:cocreate"]["programs"].split(",")
    assert len(parser["group:cocreate"]["programs"].split(",")) == 14


def test_json_log_lines_are_made_readable():
    line = ('{"ts": "2026-01-01T00:00:00+00:00", "level": "INFO", "service": "projects", "logger": "x", '
            '"message": "relay started", "topic": "projects.events", "counts": {"a": 1}}')
    assert readable(line) == 'INFO    relay started  topic=projects.events counts={"a": 1}'
    assert readable("plain text") == "plain text"
    assert readable("{not json") == "{not json"


def test_the_platform_fixtures_give_every_port_of_the_procfile_a_free_one():
    """The tests that run ``make run`` give every process's port a free one (``APPS``, ``WORKERS``,
    the broker's): a port left at its default is taken on a machine where anything holds it (a
    platform left over from an interrupted run held 9121, the budgeting rounds job's, and every
    test of ``make run``'s client failed at its start)."""
    import re

    from tests.support.run_platform import APPS, WORKERS

    defaults = set(re.findall(r"\$\{([A-Z_]+)_PORT:-\d+\}", (ROOT / "Procfile").read_text()))
    assert defaults == {name.upper() for name in (*APPS, *WORKERS)} | {"COCREATE_BROKER"}
