"""Multiprocess metrics (services.kernel.metrics): the values know their process's pid without asking
the kernel at every change (issue 23), and still write a forked child's counts to the child's own
files; with a metric made before the module, the library's class stays."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import inspect, json, os, sys
first = sys.argv[1]
if first == "early":
    from prometheus_client import Counter
    early = Counter("test_early_total", "a metric made before services.kernel.metrics")
from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector
from services.kernel import metrics
asks = inspect.getclosurevars(values.ValueClass._MmapedValue__check_for_pid_change).nonlocals["process_identifier"]
counter = metrics.HTTP_REQUESTS.labels("test", "/x", "GET", "200")
counter.inc()
if first == "early":
    early.inc(5)
child = os.fork()
if child == 0:
    counter.inc(2)  # the child's own file
    os._exit(0)
os.waitpid(child, 0)
counter.inc(4)
registry = CollectorRegistry()
MultiProcessCollector(registry)
total = {sample.name: sample.value for family in registry.collect() for sample in family.samples
         if sample.name in ("cocreate_http_requests_total", "test_early_total")}
print(json.dumps({"asks": asks.__name__, "total": total, "pids": [os.getpid(), child],
                  "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))}))
"""


def run(tmp_path: Path, first: str) -> dict:
    directory = tmp_path / first
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, first], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_values_take_the_pid_from_the_process_and_a_forked_child_writes_its_own_files(tmp_path):
    found = run(tmp_path, "services")
    assert found["asks"] == "process_id"  # not os.getpid at every change
    assert found["total"]["cocreate_http_requests_total"] == 1 + 2 + 4
    parent, child = found["pids"]
    assert {f"counter_{parent}.db", f"counter_{child}.db"} <= set(found["files"])


def test_with_a_metric_made_before_the_module_the_librarys_class_stays_and_counts_alike(tmp_path):
    found = run(tmp_path, "early")
    assert found["asks"] == "getpid"  # one class for every value of the process
    assert found["total"] == {"cocreate_http_requests_total": 7, "test_early_total": 5}
    parent, child = found["pids"]
    assert {f"counter_{parent}.db", f"counter_{child}.db"} <= set(found["files"])
