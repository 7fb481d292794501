"""Where an HTTP request's time goes, layer by layer: ``python -m bench.profile_http``.

    python -m bench.profile_http [--part ballot rating ranking overview] [--requests 300] [--interval-ms 0.2]

- ``ballot``: ``POST /projects/<id>/vote/ballots`` (a representative casts a council ballot) to the
  projects service built in this process (as :mod:`tests.support.apps` builds it) on a SQLite file
  (WAL, ``synchronous=FULL``), called through Flask's test client: no gunicorn, no socket.
- ``rating``: ``POST /subjects/<id>/ratings`` to the feedback service, the same way; the ratings
  of ``make bench``'s pools (:func:`bench.http.rating_writes`: their levels, a bad one in ten
  opening a follow-up case, top ones growing burst incidents), 8 subjects so that each gets many.
- ``ranking``: ``GET /rankings/<community>/service`` (the live ranking) to the feedback service,
  beside a hello-world Flask app through the same test client (the fixed cost of a request).
- ``overview``: ``GET /api/v1/projects/<id>/overview`` to the gateway built in a child process
  monkey-patched by gevent (as gunicorn's gevent worker serves it), its three services the real
  ones of :class:`bench.platform.Platform` (gunicorn, sync workers); the child also times each
  upstream call and the same three reads sent to the services directly.

Each part's requests run one after the other, first without the profiler (the wall time per
request), then under pyinstrument's sampling profiler (``pyinstrument``; without it, cProfile's
per-function times are classified instead). Every sample's call stack is put in one layer by the
rules of :data:`RULES`: walking the stack from the outside in, the innermost frame a rule names
sets the layer (a rule may decline under a layer already set), and some layers keep everything
below them (token verification, logging and metrics, the upstream HTTP calls, a commit). The
figures are milliseconds per request and shares of the profiled time; the profiler's overhead
inflates the Python layers (not the C calls, such as a commit), so the unprofiled wall time and the
process's CPU time per request are printed too, and for the ballot every commit timed without the
profiler. Under gevent the sampler charges the time the process waits on a socket to the greenlet
that resumes, so the overview's upstream layer holds both the calls' own work and the wait for the
replies: the CPU time of the gateway's process tells them apart. The logs the apps write go to a
file, as under gunicorn they go to a pipe; ``PROMETHEUS_MULTIPROC_DIR`` is set, as under gunicorn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# -- layers and the rules that put a stack in one ----------------------------------------------

TEST = "Flask test client (in process only; gunicorn in production)"
WSGI = "WSGI/Flask/werkzeug: routing, request & response objects"
CHECKS = "request hooks: correlation id, URL/body limits, JSON shape, edge"
AUTH = "auth: bearer token verification (JWT)"
PARSE = "request parsing & validation (webargs/marshmallow → command)"
BUS = "message bus, unit of work (Python)"
TXN = "transaction handling (SQLAlchemy connection, begin/commit)"
BEGIN = "BEGIN IMMEDIATE (the write lock)"
LOAD = "load the aggregate (view row → state)"
DECIDE = "domain: decide (handler, aggregate rules)"
APPEND = "event store append (heads, insert, event JSON)"
PROJ = "projections: read models in the append transaction"
COMMIT = "COMMIT (WAL write + fsync)"
ANSWER = "answer: read model query (project detail)"
SERIAL = "serialisation (marshmallow dump, JSON encode/decode)"
LOG = "logging & metrics"
COMPOSE = "compose: submit parts, gather, merge, shape"
UPSTREAM = "upstream HTTP: urllib3 calls, sockets, and waiting for the replies"
WAIT = "gevent hub (between greenlets)"
OTHER = "other"


@dataclass(frozen=True)
class Frame:
    function: str  # qualified name
    file: str

    @property
    def short(self) -> str:
        return self.function.rsplit(".", 1)[-1]

    def under(self, *parts: str) -> bool:
        return any(part in self.file for part in parts)


@dataclass(frozen=True)
class Rule:
    layer: str
    matches: Callable[[Frame], bool]
    keeps_below: bool = False  # everything below this frame stays in its layer
    not_under: frozenset[str] = frozenset()  # declines when the layer so far is one of these


def _in(file: str, *names: str) -> Callable[[Frame], bool]:
    return lambda f: f.file.endswith(file) and (not names or f.short in names)


_READ_SIDE = frozenset({LOAD, APPEND, PROJ, ANSWER, SERIAL})
_MARSHMALLOW_LOAD = ("load", "deserial", "valid", "_invoke_field_validators", "_run_validator")
_MARSHMALLOW_DUMP = ("dump", "serial")

RULES: list[Rule] = [
    Rule(TEST, lambda f: f.file.endswith(("werkzeug/test.py", "flask/testing.py"))),
    Rule(WSGI, _in("flask/app.py", "wsgi_app", "__call__")),
    Rule(CHECKS, _in("services/kernel/web.py", "_start", "hostile_json", "_hostile_value", "_buffer_chunked_body",
                     "_has_body")),
    Rule(CHECKS, _in("gateway/app.py", "_limit", "_cors", "_body_limit", "_check_body")),
    Rule(LOG, _in("services/kernel/web.py", "_finish"), keeps_below=True),
    Rule(AUTH, _in("services/kernel/web.py", "_authenticate", "current_principal"), keeps_below=True),
    Rule(AUTH, lambda f: f.under("services/kernel/auth.py", "gateway/tokens.py", "/jwt/"), keeps_below=True),
    Rule(PARSE, lambda f: f.under("/webargs/")),
    Rule(PARSE, _in("services/kernel/web.py", "to_command")),
    Rule(PARSE, lambda f: f.under("/marshmallow/") and any(w in f.short.lower() for w in _MARSHMALLOW_LOAD)),
    Rule(SERIAL, lambda f: f.under("/marshmallow/") and any(w in f.short.lower() for w in _MARSHMALLOW_DUMP)),
    Rule(SERIAL, lambda f: f.under("flask/json/")),
    Rule(SERIAL, _in("services/kernel/web.py", "etagged", "command_answer", "recorded_json")),
    Rule(BUS, lambda f: f.under("services/kernel/bus.py")),
    Rule(TXN, _in("services/kernel/aggregate.py", "unit_of_work")),
    Rule(TXN, _in("services/kernel/db.py", "write_transaction", "read_transaction")),
    Rule(TXN, _in("services/kernel/eventstore.py", "write_transaction", "read_transaction")),
    Rule(LOAD, lambda f: f.file.endswith("services/kernel/aggregate.py")
         and f.function.startswith("UnitOfWork.") and f.short in ("load", "_snapshot", "get", "events_of")),
    Rule(LOAD, _in("services/kernel/eventstore.py", "load", "_events_of", "_row_to_event")),
    Rule(DECIDE, lambda f: f.under("services/projects/domain.py", "services/projects/handlers.py",
                                   "services/projects/commands.py", "services/projects/community.py",
                                   "services/projects/rounds.py", "services/projects/budgeting.py",
                                   "services/feedback/domain.py", "services/feedback/handlers.py",
                                   "services/feedback/commands.py", "services/feedback/ids.py",
                                   "services/kernel/model.py"),
         not_under=_READ_SIDE),
    Rule(APPEND, lambda f: f.file.endswith("services/kernel/aggregate.py") and f.function == "UnitOfWork.record"),
    Rule(APPEND, _in("services/kernel/eventstore.py", "append", "_append", "_sqlite_append", "_rows")),
    Rule(PROJ, lambda f: f.file.endswith("services/kernel/aggregate.py") and f.function.startswith("AggregateView.")
         and f.short.startswith("apply")),
    Rule(PROJ, lambda f: f.under("services/projects/views.py", "services/feedback/views.py",
                                 "services/kernel/history.py") and f.short.startswith(("apply", "_apply", "_add"))),
    Rule(ANSWER, lambda f: f.under("services/projects/views.py", "services/feedback/views.py")
         and not f.short.startswith(("apply", "_apply", "_add")), not_under=frozenset({PROJ, LOAD})),
    Rule(ANSWER, _in("services/projects/api.py", "project_answer")),
    Rule(BEGIN, _in("services/kernel/db.py", "_on_begin"), keeps_below=True),
    Rule(LOG, lambda f: f.under("/logging/", "/prometheus_client/", "services/kernel/logs.py",
                                "services/kernel/metrics.py"), keeps_below=True),
    Rule(COMPOSE, lambda f: f.under("gateway/compose.py", "concurrent/futures/")),
    Rule(COMPOSE, _in("gateway/app.py", "composed", "forward_headers", "get")),
    Rule(SERIAL, lambda f: f.file.endswith("gateway/upstream.py") and f.function == "UpstreamResponse.json"),
    Rule(UPSTREAM, lambda f: f.file.endswith("gateway/upstream.py") and f.function.startswith("Upstream.")
         or f.under("/urllib3/"), keeps_below=True),
    Rule(WAIT, lambda f: f.under("gevent/hub.py", "gevent/_hub_primitives") or f.function == "Hub.run",
         keeps_below=True),
    # innermost: the C call that commits (SQLAlchemy -> sqlite3.Connection.commit)
    Rule(COMMIT, lambda f: f.file == "<built-in>" and f.function == "Connection.commit", keeps_below=True),
]


def classify(stack: list[Frame]) -> str:
    """The layer of one sampled stack (outermost frame first)."""
    layer = OTHER
    for frame in stack:
        for rule in RULES:
            if rule.matches(frame) and layer not in rule.not_under:
                layer = rule.layer
                if rule.keeps_below:
                    return layer
                break
    return layer


def _frame(identifier: str) -> Frame:
    parts = identifier.split("\x00")
    return Frame(parts[0], parts[1] if len(parts) > 1 else "")


class Profile:
    """Samples of one part: with pyinstrument, each call stack and its time."""

    def __init__(self, interval_s: float, explain: str = "") -> None:
        self.interval_s = interval_s
        self.explain = explain.lower()  # a layer (a part of its name) whose innermost frames to list
        self.explained: dict[str, float] = defaultdict(float)
        self.by_layer: dict[str, float] = defaultdict(float)
        self.others: dict[str, float] = defaultdict(float)  # innermost frames of unclassified time
        self.seconds = 0.0
        self.samples = 0
        self.tool = ""

    @contextlib.contextmanager
    def running(self):
        try:
            from pyinstrument import Profiler
        except ImportError:
            Profiler = None
        if Profiler is None:
            import cProfile
            import pstats

            self.tool = "cProfile (self time per function; pip install pyinstrument for call stacks)"
            profiler = cProfile.Profile()
            profiler.enable()
            try:
                yield
            finally:
                profiler.disable()
                for (file, _line, function), (_cc, _nc, tottime, _ct, _callers) in \
                        pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
                    frame = Frame(function, file if file != "~" else "<built-in>")
                    self._add([frame], tottime)
            return
        self.tool = f"pyinstrument (sampling every {self.interval_s * 1000:g} ms, whole call stacks)"
        profiler = Profiler(interval=self.interval_s)
        profiler.start()
        try:
            yield
        finally:
            profiler.stop()
            for stack, seconds in profiler.last_session.frame_records:
                self._add([_frame(identifier) for identifier in stack], seconds)

    def _add(self, stack: list[Frame], seconds: float) -> None:
        layer = classify(stack)
        self.by_layer[layer] += seconds
        self.seconds += seconds
        self.samples += 1
        if layer == OTHER and stack:
            inner = stack[-1]
            self.others[f"{inner.function} ({Path(inner.file).name})"] += seconds
        if self.explain and self.explain in layer.lower():
            self.explained[" > ".join(f"{f.function} ({Path(f.file).name})" for f in stack[-3:])] += seconds

    def table(self, requests: int, notes: list[str]) -> str:
        lines = [*notes, (f"profiled: {self.seconds * 1000 / requests:.2f} ms per request; {self.tool}; "
                          f"{self.samples} samples"), "", f"  {'layer':<66} {'ms/req':>7} {'share':>6}"]
        for layer, seconds in sorted(self.by_layer.items(), key=lambda item: -item[1]):
            lines.append(f"  {layer:<66} {seconds * 1000 / requests:7.2f} {seconds / self.seconds:6.1%}")
        if self.others:
            top = sorted(self.others.items(), key=lambda item: -item[1])[:4]
            lines.append("  (other: " + "; ".join(f"{name} {s * 1000 / requests:.2f}" for name, s in top) + ")")
        if self.explained:
            lines.append(f"  innermost frames of the layer(s) matching {self.explain!r}, ms/req:")
            for frames, seconds in sorted(self.explained.items(), key=lambda item: -item[1])[:15]:
                lines.append(f"    {seconds * 1000 / requests:6.2f}  {frames}")
        return "\n".join(lines)


@contextlib.contextmanager
def logs_to(path: Path):
    """The process's stderr (the apps' JSON log lines) into ``path``, as gunicorn's go to a pipe."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            for handler in logging.getLogger().handlers:  # the lines a handler batches go there too
                handler.flush()
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def fsync_floor(directory: Path, rounds: int = 200) -> float:
    """Median ms of a 4 KiB append and ``fsync`` on ``directory``'s file system: a durable commit's floor."""
    path = directory / "fsync-probe"
    times = []
    with open(path, "ab") as probe:
        for _ in range(rounds):
            began = time.perf_counter()
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
            times.append((time.perf_counter() - began) * 1000)
    path.unlink()
    return statistics.median(times)


# -- (a) a write: a ballot to the projects service, a rating to the feedback service ---------------

def _writes(workdir: Path, service: str, calls: list[tuple[str, dict, dict]], app, requests: int,
            interval_s: float, explain: str, title: str) -> str:
    """Time and profile ``calls`` (path, body, headers; each a new write, answered 201) sent to
    ``app`` through Flask's test client: 20 to warm up, ``requests`` unprofiled with every commit
    timed, ``requests`` more under the profiler."""
    from services.kernel import db
    from services.kernel.db import _commit as _driver_commit
    from tests.support.apps import container

    client = app.test_client()

    def send(part) -> None:
        for path, body, headers in part:
            reply = client.post(path, json=body, headers=headers)
            if reply.status_code != 201:
                raise RuntimeError(f"POST {path} -> {reply.status_code}: {reply.get_data()[:300]!r}")

    if len(calls) < 20 + 2 * requests:
        raise ValueError(f"{len(calls)} writes prepared for {20 + 2 * requests}")
    send(calls[:20])  # warm-up
    dialect = container(app).store.engine.dialect
    commits: list[float] = []

    def timed_commit(dbapi_connection, _plain=dialect.do_commit):
        began = time.perf_counter()
        try:
            _plain(dbapi_connection)
        finally:
            commits.append((time.perf_counter() - began) * 1000)

    dialect.do_commit = timed_commit  # the unprofiled run times every commit (SQLAlchemy -> sqlite3)
    db._commit = timed_commit  # and those on the driver alone (write_transaction on SQLite)
    began, cpu = time.perf_counter(), time.process_time()
    send(calls[20:20 + requests])
    plain_ms = (time.perf_counter() - began) * 1000 / requests
    cpu_ms = (time.process_time() - cpu) * 1000 / requests
    del dialect.do_commit
    db._commit = _driver_commit
    profile = Profile(interval_s, explain)
    with profile.running():
        send(calls[20 + requests:20 + 2 * requests])
    floor = fsync_floor(workdir)
    return profile.table(requests, [
        title,
        (f"unprofiled: {plain_ms:.2f} ms per request (CPU of this process {cpu_ms:.2f} ms), of which the commits "
         f"{sum(commits) / requests:.2f} ms ({len(commits) / requests:.1f} per request: the write transactions'; "
         f"a read transaction ends on the driver untimed; median {statistics.median(commits):.2f}, "
         f"max {max(commits):.1f} ms); fsync of 4 KiB on this disk: "
         f"{floor:.2f} ms (median)")])


def ballot(workdir: Path, requests: int, interval_s: float, explain: str = "") -> str:
    from services.kernel.logs import configure_logging
    from services.projects.service import DEFINITION
    from tests.support.apps import service_app

    from bench.http import VOTERS_PER_BOX, ballot_calls

    configure_logging("projects")
    reps = VOTERS_PER_BOX  # as many ballots per project as `make bench` casts (and its anchor per box)
    with logs_to(workdir / "projects.log"):
        app = service_app(DEFINITION, f"sqlite:///{workdir}/projects.db")
        # project by project, as `make bench`'s pools (each ballot a new one)
        calls, projects = ballot_calls(app.test_client(), 20 + 2 * requests)
        return _writes(workdir, "projects", calls, app, requests, interval_s, explain, (
            f"(a) POST /projects/<id>/vote/ballots — the projects service in process (Flask test client), SQLite "
            f"WAL + synchronous=FULL, {requests} ballots over {projects} projects ({reps} each), one after the other"))


def rating(workdir: Path, requests: int, interval_s: float, explain: str = "") -> str:
    from services.feedback.service import DEFINITION
    from services.kernel.logs import configure_logging
    from tests.support.apps import service_app

    from bench.http import rating_calls

    configure_logging("feedback")
    with logs_to(workdir / "feedback.log"):
        app = service_app(DEFINITION, f"sqlite:///{workdir}/feedback.db")
        calls, subjects = rating_calls(app.test_client(), 20 + 2 * requests)
        return _writes(workdir, "feedback", calls, app, requests, interval_s, explain, (
            f"(a') POST /subjects/<id>/ratings — the feedback service in process (Flask test client), SQLite "
            f"WAL + synchronous=FULL, {requests} ratings of {subjects} subjects, the levels of `make bench`'s "
            f"pools, one after the other"))


# -- (c) a read: the live ranking, against hello-world ------------------------------------------

def ranking(workdir: Path, requests: int, interval_s: float, explain: str = "") -> str:
    """``GET /rankings/<community>/service`` (the live ranking, cached per log position) to the
    feedback service in process, after 800 ratings of 80 services; and a hello-world Flask app's
    ``GET /hello`` through the same test client, unprofiled, for the fixed cost of a request."""
    import flask

    from services.feedback.domain import period_of
    from services.feedback.service import DEFINITION
    from services.kernel.events import utc_now
    from services.kernel.logs import configure_logging
    from tests.support.apps import service_app
    from tests.support.projects import FlaskClient, Person, ProjectsDriver

    from bench.http import rating_writes

    configure_logging("feedback")
    with logs_to(workdir / "feedback.log"):
        app = service_app(DEFINITION, f"sqlite:///{workdir}/ranking.db")
        client = app.test_client()
        for path, body, person in rating_writes(ProjectsDriver(FlaskClient(client)), 9, 80, 10):
            if client.post(path, json=body, headers=person.headers).status_code != 201:
                raise RuntimeError(f"POST {path} refused")
        viewer = Person("bench-rater0", "居民0", ("resident",), "bench")
        url = f"/rankings/bench/service?period={period_of(utc_now(), 'month')}"
        hello = flask.Flask("hello")
        hello.add_url_rule("/hello", "hello", lambda: {"hello": "world"})

        def get(client, url: str, headers: dict, count: int) -> tuple[float, float]:
            began, cpu = time.perf_counter(), time.process_time()
            for _ in range(count):
                reply = client.get(url, headers=headers)
                if reply.status_code != 200:
                    raise RuntimeError(f"GET {url} -> {reply.status_code}: {reply.get_data()[:300]!r}")
            return (time.perf_counter() - began) * 1000 / count, (time.process_time() - cpu) * 1000 / count

        get(client, url, viewer.headers, 50)  # warm-up (the cached answer)
        size = len(client.get(url, headers=viewer.headers).get_data())
        hello_client = hello.test_client()
        get(hello_client, "/hello", {}, 50)
        hello_ms, hello_cpu = get(hello_client, "/hello", {}, requests)
        plain_ms, cpu_ms = get(client, url, viewer.headers, requests)
        profile = Profile(interval_s, explain)
        with profile.running():
            get(client, url, viewer.headers, requests)
    return profile.table(requests, [
        (f"(c) GET /rankings/<community>/service — the live ranking of 80 services ({size:,} bytes), the feedback "
         f"service in process (Flask test client), {requests} requests one after the other"),
        (f"unprofiled: {plain_ms:.3f} ms per request (CPU {cpu_ms:.3f} ms); hello-world Flask through the same test "
         f"client: {hello_ms:.3f} ms (CPU {hello_cpu:.3f} ms)")])


# -- (b) the gateway's project overview -----------------------------------------------------------

def overview(workdir: Path, requests: int, interval_s: float, explain: str = "") -> str:
    from bench.http import ballot_pools
    from bench.platform import Platform

    with Platform(workdir) as platform:
        _peak, _half, projects = ballot_pools(platform.urls["projects"], 4, 3)
        viewer = projects[0][1]
        job = {"urls": {name: platform.urls[name] for name in ("projects", "volunteers", "feedback")},
               "projects": [pid for pid, _ in projects], "authorization": viewer.headers["Authorization"],
               "requests": requests, "interval_s": interval_s, "explain": explain, "workdir": str(workdir / "gateway")}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        reply = subprocess.run(
            [sys.executable, "-c", ("from gevent import monkey; monkey.patch_all()\n"
                                    "import sys, bench.profile_http as p; p.overview_child(sys.stdin.read())")],
            check=False, input=json.dumps(job), capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    if reply.returncode != 0:
        raise RuntimeError(f"the overview child failed: {reply.stderr[-3000:]}")
    return reply.stdout.rstrip("\n")


def overview_child(job_text: str) -> None:
    """Run in a process that gevent has monkey-patched (``python -m bench.profile_http`` starts it)."""
    job = json.loads(job_text)
    workdir = Path(job["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(workdir / "metrics"))
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    import urllib3

    from gateway.compose import project_overview_parts
    from services.kernel.logs import configure_logging
    from tests.support.apps import gateway_app

    requests, interval_s = job["requests"], job["interval_s"]
    urls = job["urls"]
    configure_logging("gateway")
    with logs_to(workdir / "gateway.log"):
        app = gateway_app(COCREATE_DATA_DIR=str(workdir), GATEWAY_RATE_LIMIT_PER_CALLER="0",
                          GATEWAY_RATE_LIMIT_PER_IP="0", GATEWAY_PROJECTS_URL=urls["projects"],
                          GATEWAY_VOLUNTEERS_URL=urls["volunteers"], GATEWAY_FEEDBACK_URL=urls["feedback"])
        client = app.test_client()
        headers = {"Authorization": job["authorization"]}
        paths = [f"/api/v1/projects/{job['projects'][i % len(job['projects'])]}/overview" for i in range(requests)]

        upstream_ms: dict[str, list[float]] = defaultdict(list)
        for name, upstream in app.extensions["cocreate.upstreams"].items():
            def timed(*args, _name=name, _plain=upstream.request, **kwargs):
                began = time.perf_counter()
                try:
                    return _plain(*args, **kwargs)
                finally:
                    upstream_ms[_name].append((time.perf_counter() - began) * 1000)
            upstream.request = timed

        def get(calls) -> list[float]:
            times = []
            for path in calls:
                began = time.perf_counter()
                reply = client.get(path, headers=headers)
                times.append((time.perf_counter() - began) * 1000)
                body = reply.get_json(silent=True) or {}
                if reply.status_code != 200 or body.get("missing"):
                    raise RuntimeError(f"GET {path} -> {reply.status_code}: {reply.get_data()[:300]!r}")
            return times

        get(paths[:20])  # warm-up (the catalogue, the pools)
        upstream_ms.clear()
        cpu = time.process_time()
        wall = get(paths)
        cpu_ms = (time.process_time() - cpu) * 1000 / requests
        calls = {name: statistics.median(times) for name, times in upstream_ms.items()}
        # The same three reads sent straight to the services, one after the other.
        pool = urllib3.PoolManager(retries=False)
        direct: dict[str, list[float]] = defaultdict(list)
        for pid in job["projects"] * (60 // len(job["projects"])):
            for part in project_overview_parts(pid):
                began = time.perf_counter()
                reply = pool.request("GET", urls[part.service] + part.path,
                                     headers={**headers, "Accept-Language": "zh-CN"})
                direct[part.service].append((time.perf_counter() - began) * 1000)
                if reply.status not in (200, 404):
                    raise RuntimeError(f"{part.service} {part.path} -> {reply.status}")
        profile = Profile(interval_s, job.get("explain", ""))
        with profile.running():
            get(paths)
    said = "; ".join(f"{name} {calls[name]:.1f} ms (direct {statistics.median(direct[name]):.1f})"
                     for name in ("projects", "volunteers", "feedback"))
    print(profile.table(requests, [
        (f"(b) GET /api/v1/projects/<id>/overview — the gateway in process under gevent (monkey-patched, as its "
         f"gunicorn worker), Flask test client; its 3 services the platform's (gunicorn, sync workers); "
         f"{requests} requests one after the other"),
        (f"unprofiled: {statistics.median(wall):.2f} ms per request (median; mean {statistics.fmean(wall):.2f}); CPU "
         f"of the gateway's process {cpu_ms:.2f} ms per request (all its greenlets and threads): the rest of the wall "
         f"time is waiting for the services"),
        (f"each upstream call as the gateway times it, median (the same read sent straight to the service, "
         f"median): {said}")]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_http", description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="*", choices=("ballot", "rating", "ranking", "overview"),
                        default=["ballot", "rating", "ranking", "overview"])
    parser.add_argument("--requests", type=int, default=300, help="requests per part (profiled, and unprofiled)")
    parser.add_argument("--interval-ms", type=float, default=1.0, help="pyinstrument's sampling interval")
    parser.add_argument("--explain", default="", metavar="LAYER",
                        help="also list the innermost frames of the layers whose name contains LAYER")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cocreate-profile-"))
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(workdir / "metrics"))
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    try:
        if "ballot" in args.part:
            print(ballot(workdir, args.requests, args.interval_ms / 1000, args.explain), "\n", flush=True)
        if "rating" in args.part:
            print(rating(workdir, args.requests, args.interval_ms / 1000, args.explain), "\n", flush=True)
        if "ranking" in args.part:
            print(ranking(workdir, args.requests, args.interval_ms / 1000, args.explain), "\n", flush=True)
        if "overview" in args.part:
            print(overview(workdir, args.requests, args.interval_ms / 1000, args.explain), "\n", flush=True)
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
