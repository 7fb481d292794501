"""Instructions per write in a real gunicorn worker, counted by callgrind: ``python -m bench.instructions``.

    python -m bench.instructions [--requests 100] [--workers 2] [--only anchor ballot rating] [--simulate]

This machine's speed drifts by a tenth or more within minutes, so requests per second and CPU
milliseconds cannot tell apart two writes whose costs differ by less than that. An instruction
count can: valgrind's callgrind counts every instruction a process executes in user space, the
same for the same code, inputs and environment whatever else the machine does. For each write —
the write anchor's command (:mod:`bench.anchors`: get, decide, save with ``eventsourcing`` on
SQLite WAL, ``synchronous=FULL``), a council ballot (projects), a satisfaction rating (feedback) —
this starts the app under gunicorn with the same settings as ``make bench`` (``--workers`` sync
workers, :mod:`services.kernel.gunicorn_conf`), each worker under callgrind; sends
:data:`WARM_UP` writes, zeroes the workers' counters (``callgrind_control -z``), sends
``--requests`` writes one after the other over HTTP, dumps the counters (``callgrind_control -d``)
and prints the instructions per request summed over the workers, and each write's ratio to the
anchor's. The aggregates have the shape of ``make bench``'s: 25 ballots on a box or a project,
ratings as :func:`bench.http.rating_calls` makes them.

Not counted: what the kernel does for the process (system calls, the fsync, page faults), and time
a process spends waiting; and an instruction is not a fixed time (a process whose data misses the
CPU's caches more runs fewer instructions per second). The figure says how much work the code
does per request, not how fast the machine does it; ``make bench`` says that. With ``--simulate``
callgrind also runs its model of this CPU's caches and of a branch predictor (:data:`SIMULATION`)
and prints, per request, the misses and mispredicted branches of each write beside the anchor's:
where an instruction count and a CPU time disagree, the stalls the model counts are the first
suspects.

Under valgrind a request takes fifty to a hundred times longer, so work a worker does on a timer would be
counted many times more per request than at ``make bench``'s rates; the key store's keys are kept
for :data:`KEYS_KEPT_SECONDS` (``COCREATE_KEYSTORE_CACHE_SECONDS``) so that they are read once, as
a worker serving hundreds of writes a second reads them once per thousands of requests.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 40
WRITES = ("anchor", "ballot", "rating")
START_SECONDS = 600  # an app's start under valgrind (imports run some 50 times slower)
KEYS_KEPT_SECONDS = "300"
# --simulate: callgrind's model of the caches (first-level instruction and data caches and the
# last-level cache, sized as valgrind reads them from this CPU) and of a branch predictor. Each
# event is what a request would cost on that model: D1mr/D1mw first-level data misses, DLmr/DLmw
# last-level misses (a trip to memory), I1mr/ILmr instruction fetch misses, Bcm/Bim mispredicted
# conditional and indirect branches. A model, not this CPU's counters (this VM exposes none): it
# knows no other tenant sharing the last-level cache and no prefetcher.
SIMULATION = ("--cache-sim=yes", "--branch-sim=yes")
EVENTS_SHOWN = ("Ir", "I1mr", "ILmr", "D1mr", "D1mw", "DLmr", "DLmw", "Bcm", "Bim")


def summary_counts(dump_text: str) -> dict[str, int]:
    """Every event's count in a callgrind dump's ``summary:`` line (what ``callgrind_annotate`` calls
    the program's totals), by the names of its ``events:`` line: ``Ir`` alone, or with
    ``--simulate`` also the simulated caches' and branch predictor's (``D1mr``, ``DLmr``, ``Bcm``…)."""
    names: list[str] = []
    for line in dump_text.splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith("summary:") and names:
            return dict(zip(names, (int(value) for value in line.split()[1:])))
    raise ValueError("no 'events:' and 'summary:' lines: not a callgrind dump")


def summary_instructions(dump_text: str) -> int:
    """The instruction count of a callgrind dump (its summary's ``Ir``)."""
    return summary_counts(dump_text)["Ir"]


def ratios(per_request: dict[str, float]) -> dict[str, float]:
    """Each write's instructions per request as a multiple of the write anchor's."""
    anchor = per_request["anchor"]
    return {name: value / anchor for name, value in per_request.items()}


def _prepare(write: str, workdir: Path, count: int) -> tuple[str, dict[str, str], list[tuple[str, bytes, dict]]]:
    """The gunicorn target, its environment and ``count`` writes (path, body, headers) of ``write``,
    its database made beforehand in this process."""
    if write == "anchor":
        from bench.anchors import ballot_requests, open_boxes
        from bench.http import VOTERS_PER_BOX

        boxes = open_boxes(workdir / "ballots.db", -(-count // VOTERS_PER_BOX))
        # VOTERS_PER_BOX ballots on a box, box after box (as a pool of `make bench` fills its boxes)
        requests = [request for start in range(0, count, VOTERS_PER_BOX)
                    for request in ballot_requests([boxes[start // VOTERS_PER_BOX]], min(VOTERS_PER_BOX, count - start),
                                                   f"box{start}")]
        return ("bench.anchors:write_app()", {"BENCH_WRITE_ANCHOR_DB": str(workdir / "ballots.db")},
                [(r.path, r.body, dict(r.headers)) for r in requests])
    from tests.conftest import TEST_SECRET
    from tests.support.apps import KEYSTORE_URL, service_app

    service = {"ballot": "projects", "rating": "feedback"}[write]
    url = f"sqlite:///{workdir}/{service}.db"
    if write == "ballot":
        from bench.http import ballot_calls
        from services.projects.service import DEFINITION

        app = service_app(DEFINITION, url)
        calls, _projects = ballot_calls(app.test_client(), count)
    else:
        from bench.http import rating_calls
        from services.feedback.service import DEFINITION

        app = service_app(DEFINITION, url)
        calls, _subjects = rating_calls(app.test_client(), count)
    env = {f"{service.upper()}_DATABASE_URL": url, "COCREATE_JWT_SECRET": TEST_SECRET,
           "COCREATE_KEYSTORE_CACHE_SECONDS": KEYS_KEPT_SECONDS,
           "COCREATE_KEYSTORE_URL": KEYSTORE_URL, "COCREATE_DATA_DIR": str(workdir)}
    return (f"services.{service}.app:build()", env,
            [(path, json.dumps(body).encode(), dict(headers)) for path, body, headers in calls[:count]])


def _post(port: int, path: str, body: bytes, headers: dict) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        reply = connection.getresponse()
        answer = reply.read()
    finally:
        connection.close()
    if reply.status != 201:
        raise RuntimeError(f"POST {path} -> {reply.status}: {answer[:300]!r}")


@contextlib.contextmanager
def _under_callgrind(target: str, env: dict[str, str], workdir: Path, workers: int,
                     simulate: bool = False) -> Iterator[tuple[int, list[int]]]:
    """gunicorn serving ``target`` with ``workers`` sync workers, the master and each worker under
    callgrind (dumps in ``workdir``; ``simulate``: with its cache and branch simulation); yields its
    port and the workers' pids once it answers."""
    from services.kernel.broker import free_port
    from tests.support.platform import stop_group

    port = free_port()
    full_env = {**os.environ, **env, "GUNICORN_WORKERS": str(workers), "GUNICORN_BIND": f"127.0.0.1:{port}",
                "GUNICORN_TIMEOUT": str(START_SECONDS), "COCREATE_APP_NAME": "instructions",
                "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics")}
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    with open(workdir / "gunicorn.log", "wb") as log:
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/callgrind.%p", "--trace-children=yes",
             *(SIMULATION if simulate else ()), gunicorn, "-c", "python:services.kernel.gunicorn_conf", target],
            cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn under valgrind exited: "
                                       f"{(workdir / 'gunicorn.log').read_text(errors='replace')[-2000:]}")
                pids = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                                                            text=True).stdout.split()]
                if len(pids) == workers:
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=1):
                            break
                    except OSError:
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{target} did not start under valgrind in {START_SECONDS} s")
                time.sleep(1)
            yield port, pids
        finally:
            stop_group(process, signal.SIGTERM, timeout=120)


def count(write: str, requests: int, workers: int, simulate: bool = False) -> dict[str, float]:
    """Each event's count per request of ``write`` (instructions, ``Ir``; with ``simulate`` the
    simulated misses too), summed over the workers."""
    workdir = Path(tempfile.mkdtemp(prefix=f"cocreate-instructions-{write}-"))
    try:
        logging.disable(logging.CRITICAL)  # the set-up's own lines (its app runs in this process)
        try:
            target, env, calls = _prepare(write, workdir, WARM_UP + requests)
        finally:
            logging.disable(logging.NOTSET)
        with _under_callgrind(target, env, workdir, workers, simulate) as (port, pids):
            for call in calls[:WARM_UP]:  # imports, first statements, caches: not counted
                _post(port, *call)
            for pid in pids:
                subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
            for call in calls[WARM_UP:]:
                _post(port, *call)
            for pid in pids:
                subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
            totals: collections.Counter = collections.Counter()
            for pid in pids:
                dumps = glob.glob(f"{workdir}/callgrind.{pid}.*")  # the dump made by -d (the rest is at exit)
                if len(dumps) != 1:
                    raise RuntimeError(f"worker {pid}: {len(dumps)} dumps, expected the one made after the writes")
                totals.update(summary_counts(Path(dumps[0]).read_text(errors="replace")))
        return {event: total / requests for event, total in totals.items()}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def simulation_table(simulated: dict[str, dict[str, float]]) -> str:
    """Per request, each simulated event of each write, and its ratio to the anchor's."""
    writes = list(simulated)
    lines = [f"{'per request':>12}" + "".join(f"{write:>14}" for write in writes)
             + "".join(f"{write + '/anchor':>16}" for write in writes[1:])]
    for event in EVENTS_SHOWN:
        if all(event in simulated[write] for write in writes):
            anchor = simulated[writes[0]][event]
            lines.append(f"{event:>12}" + "".join(f"{simulated[write][event]:>14,.0f}" for write in writes)
                         + "".join(f"{simulated[write][event] / anchor if anchor else float('nan'):>15.2f}×"
                                   for write in writes[1:]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="writes counted, after the warm-up")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (make bench serves 2)")
    parser.add_argument("--only", nargs="*", choices=WRITES, default=list(WRITES))
    parser.add_argument("--simulate", action="store_true",
                        help="with callgrind's cache and branch simulation: misses per request too (about 3× slower)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="cocreate-instructions-metrics-"))
    per_request: dict[str, float] = {}
    simulated: dict[str, dict[str, float]] = {}
    for write in ("anchor", *[w for w in WRITES if w != "anchor" and w in args.only]):
        began = time.monotonic()
        simulated[write] = count(write, args.requests, args.workers, args.simulate)
        per_request[write] = simulated[write]["Ir"]
        print(f"{write}: {per_request[write]:,.0f} instructions per request "
              f"({args.requests} requests, {args.workers} workers, {time.monotonic() - began:.0f} s)", flush=True)
    for write, ratio in ratios(per_request).items():
        if write != "anchor":
            print(f"{write} / write anchor: {ratio:.2f}×")
    if args.simulate:
        print(simulation_table(simulated))
    return 0


if __name__ == "__main__":
    sys.exit(main())
