"""``make bench`` — every benchmark in one run, each figure beside its anchor measured in the same run.

    python -m bench [--quick] [--readme] [--only PART ...] [--out bench/results]

Writes ``<out>/latest.json`` (every figure, with the machine and the date) and ``<out>/latest.md``
(the table; quick runs under ``bench/results/quick``, not kept in git), prints the table, and with ``--readme`` (``make bench``) puts it into bench/README.md
between the bench markers. ``--quick`` uses smaller sizes (a smoke run, about two minutes); the
figures in bench/README.md come from a full run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "memory": memory, "python": sys.version.split()[0],
            "system": f"{host.system()} {host.release()}"}


REFERENCE_LOOP = 5_000_000


def reference_seconds() -> float:
    """The interpreter's speed now: the best of three runs of a fixed pure-Python loop (additions in
    a function: CPU only, in cache). Taken at the start and the end of a run and printed with its
    table, beside the absolute figures of a shared machine. It does not see everything that makes
    a run slower: on 2026-12-05 the hello-world anchor (code unchanged) fell from 2,762 to 1,287
    req/s and replay from 243,611 to 92,139 events/s between two runs while this loop stayed at
    0.30–0.34 s — the ratios to anchors measured in the same run are the figures to compare."""
    best = float("inf")
    for _ in range(3):
        began, total = time.perf_counter(), 0
        for i in range(REFERENCE_LOOP):
            total += i
        best = min(best, time.perf_counter() - began)
    return best


def _figure(value: float, unit: str) -> str:
    if unit in ("s",) or unit.startswith("ms"):
        return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{value:,.0f} {unit}"


def table(report: dict) -> str:
    m = report["machine"]
    speed = ""
    if m.get("reference_seconds"):
        start, end = m["reference_seconds"]
        speed = (f" The machine's speed: a reference loop ({REFERENCE_LOOP:,} additions in Python, best of 3) took "
                 f"{start:.2f} s at the start and {end:.2f} s at the end (`bench.__main__.reference_seconds`).")
    lines = [f"Measured {report['date']} on {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, Python {m['python']}, "
             f"{'quick' if report['quick'] else 'full'} run in {report['seconds']:.0f} s.{speed}", "",
             "| measure | ours | anchor(s), same run | details | targets |", "|---|---|---|---|---|"]
    for row in report["rows"]:
        anchors = "; ".join(f"{name}: {_figure(value, row['unit'])}" for name, value in row["anchors"].items()) or "—"
        if row["anchors"]:
            first = next(iter(row["anchors"].values()))
            if first:
                anchors += f" (ours = {row['ours'] / first:.0%})"
        extra = "; ".join(f"{k}: {v}" for k, v in (row.get("extra") or {}).items()) or "—"
        targets = "; ".join(f"{'✅' if t['met'] else '❌'} {t['what']}" for t in row["targets"]) or "—"
        lines.append(f"| {row['measure']} | {_figure(row['ours'], row['unit'])} | {anchors} | {extra} | {targets} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    parser.add_argument("--out", default=None,
                        help="where the report goes (default bench/results, quick runs bench/results/quick)")
    parser.add_argument("--readme", action="store_true",
                        help="also put the table into bench/README.md (between the bench markers)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these parts: store replay pipeline http web propagation live ranking budgeting")
    args = parser.parse_args(argv)
    parts = set(args.only or ("store", "replay", "pipeline", "http", "web", "propagation", "live", "ranking",
                                "budgeting"))
    if "ranking" in parts:
        parts.add("replay")  # the ranking runs on the log the replay built

    from bench import budgeting, http, live, pipeline, propagation, ranking, store, web
    from bench.platform import Platform

    workdir = Path(tempfile.mkdtemp(prefix="cocreate-bench-"))
    speed_at_start = reference_seconds()
    started = time.monotonic()
    rows: list[dict] = []

    left: set[str] = set()  # what parts kept for a later one (the replay's log, for the ranking)

    def step(name: str, go, keep: bool = False) -> None:
        # What an earlier part wrote (the replay's and the ranking's million-event logs) goes to the
        # disk first: its write-back would otherwise share the disk with this part's fsyncs.
        os.sync()
        before = set(os.listdir(workdir))
        began = time.monotonic()
        print(f"… {name}", file=sys.stderr, flush=True)
        rows.extend(go())
        print(f"  {name} done in {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        # A part's files go when no later part needs them: the next parts run on a machine whose
        # memory does not hold them in its page cache (a million-event log is hundreds of MB; the
        # HTTP rows measured 5-10 points lower after them than alone).
        left.update(set(os.listdir(workdir)) - before)
        if not keep:
            for entry in left:
                target = workdir / entry
                if target.is_dir():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    target.unlink(missing_ok=True)
            left.clear()

    try:
        if "store" in parts:
            step("event store appends", lambda: store.appends(workdir, args.quick))
        if "replay" in parts:
            step("replay", lambda: store.replay(workdir, args.quick), keep="ranking" in parts)
        if "ranking" in parts:
            step("rankings at scale", lambda: ranking.run(workdir, args.quick))
        if "budgeting" in parts:
            step("budgeting rounds", lambda: budgeting.run(workdir, args.quick))
        if "pipeline" in parts:
            step("relay and consumer", lambda: pipeline.run(workdir, args.quick))
        if parts & {"http", "web", "propagation", "live"}:
            with Platform(workdir) as running:
                if "http" in parts:
                    step("HTTP", lambda: http.run(workdir, args.quick, running))
                if "web" in parts:
                    step("web client", lambda: web.run(workdir, args.quick, running))
                if "propagation" in parts:
                    step("end-to-end propagation", lambda: propagation.run(workdir, args.quick, running))
                if "live" in parts:
                    step("live streams at scale", lambda: live.run(workdir, args.quick, running))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.monotonic() - started
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick,
              "machine": {**machine(), "reference_seconds": [round(speed_at_start, 2), round(reference_seconds(), 2)]},
              "seconds": seconds, "rows": rows}
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    text = table(report)
    (out / "latest.md").write_text(text)
    if args.readme:
        update_readme(ROOT / "bench" / "README.md", text)
    print(text)
    return 0


START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(path: Path, text: str) -> None:
    """Replace what stands between the bench markers of ``path`` (bench/README.md) with ``text``."""
    readme = path.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"{path} has no {START} … {END} markers")
    head, rest = readme.split(START, 1)
    _old, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}{END}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())
