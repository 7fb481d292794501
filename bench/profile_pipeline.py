"""Where the event pipeline's CPU goes while the platform takes writes: ``python -m bench.profile_pipeline``.

    python -m bench.profile_pipeline [--write ballot|rating] [--rate 400] [--seconds 12] [--frames N] [--no-profile]

The platform as ``make bench`` starts it (:class:`bench.platform.Platform`: every process of
``make run``, the local tansu broker), its pools set up as ``make bench`` sets up its own
(:func:`bench.http.ballot_pools`, :func:`bench.http.rating_pools`), drained; then writes sent at a
fixed rate (open loop, :func:`bench.load.open_loop`, 4 clients) for a while. Printed:

- per pipeline process (relays, consumers, the gateway's feed worker, the jobs) and the broker,
  the CPU time (user + system, from ``/proc``) per write, beside what the same process used per
  second while the platform stood idle (5 s measured before the writes), scaled to the same time;
- with py-spy (``pip install -e '.[bench]'``): every pipeline process sampled while it holds the
  GIL (``py-spy record --gil``: time the process runs Python, or C called from Python, on a
  core), and each sample put in the package of the innermost frame that is not the standard
  library's — so a thread's ``Condition.wait`` or ``select`` counts for the code that called it:
  kafka-python, ours (``services/``, ``gateway/``), SQLAlchemy, prometheus_client, msgspec; the
  samples of the standard library alone (a thread's start) as ``stdlib``. The shares apply to the
  pipeline's CPU per write; the broker is tansu (Rust), not sampled.

What it answers: of a write's pipeline CPU, how much is this project's code and how much the Kafka
client's and the broker's (issue 23's closing note). Numbers move with the machine's hour; compare
shares, and runs of the same hour.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.http import VOTERS_PER_BOX, ballot_pools, rating_pools
from bench.load import open_loop
from bench.platform import Platform, cpu_seconds

IDLE_SECONDS = 5.0
PACKAGES = (("/kafka/", "kafka-python"), ("/sqlalchemy/", "SQLAlchemy"), ("/prometheus_client/", "prometheus_client"),
            ("/msgspec/", "msgspec"), ("/services/", "ours"), ("/gateway/", "ours"))


def package_of(frame: str) -> str | None:
    """The package a py-spy frame (``function (path:line)``) belongs to, None for the standard library."""
    found = re.search(r"\(([^()]*)\)\s*$", frame)
    path = "/" + (found.group(1) if found else frame)
    for marker, name in PACKAGES:
        if marker in path:
            return name
    return None


def classify(raw: str) -> tuple[collections.Counter, collections.Counter]:
    """Samples per package, and per (package, innermost frame of that package), from py-spy's
    ``--format raw`` (collapsed stacks, outermost first)."""
    shares: collections.Counter = collections.Counter()
    frames: collections.Counter = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        package, frame = "stdlib", stack.split(";")[-1]
        for candidate in reversed(stack.split(";")):
            found = package_of(candidate)
            if found is not None:
                package, frame = found, candidate
                break
        shares[package] += int(count)
        frames[package, frame.strip()] += int(count)
    return shares, frames


def pools(platform: Platform, write: str, count: int) -> tuple[str, list]:
    if write == "ballot":
        pool, *_ = ballot_pools(platform.urls["projects"], VOTERS_PER_BOX, -(-count // VOTERS_PER_BOX), count=1)
        return platform.urls["projects"], pool
    subjects = 8
    (pool,) = rating_pools(platform.urls["feedback"], subjects, -(-count // subjects), count=1)
    return platform.urls["feedback"], pool


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--write", choices=("ballot", "rating"), default="ballot")
    parser.add_argument("--rate", type=float, default=400.0, help="writes per second (open loop)")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--no-profile", action="store_true", help="CPU per process only, no py-spy")
    parser.add_argument("--frames", type=int, default=0, metavar="N", help="also the N functions sampled most")
    args = parser.parse_args(argv)
    spy = None if args.no_profile else (shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"))
    if spy is not None and not Path(spy).exists():
        print("py-spy is not installed (pip install -e '.[bench]'): CPU per process only", file=sys.stderr)
        spy = None
    workdir = Path(tempfile.mkdtemp(prefix="cocreate-pipeline-"))
    try:
        with Platform(workdir) as platform:
            url, pool = pools(platform, args.write, int(args.rate * args.seconds * 1.2))
            platform.wait_until_drained()
            processes = platform.processes()
            pipeline = platform.pipeline_pids()
            broker = [pid for pid, command in processes.items() if "tansu" in command]
            before = cpu_seconds(pipeline + broker)
            time.sleep(IDLE_SECONDS)
            idle = {pid: used - before[pid] for pid, used in cpu_seconds(pipeline + broker).items()}
            spies = []
            if spy is not None:
                for pid in pipeline:
                    out = workdir / f"py-spy-{pid}.txt"
                    spies.append((out, subprocess.Popen(
                        [spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", "250",
                         "--duration", str(int(args.seconds)), "--format", "raw", "--output", str(out)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
                time.sleep(1.0)  # every sampler attached
            start = cpu_seconds(pipeline + broker)
            result = open_loop(url, pool, rate=args.rate, concurrency=4, duration=args.seconds)
            end = cpu_seconds(pipeline + broker)
            for _out, process in spies:
                process.wait(timeout=args.seconds + 60)
        writes = result.ok
        if writes == 0:
            raise SystemExit(f"no write succeeded ({result.errors} errors: {result.first_error})")
        scale = result.seconds / IDLE_SECONDS
        print(f"{args.write}s: {writes} in {result.seconds:.1f} s ({writes / result.seconds:.0f}/s), {result.errors} errors")
        print(f"{'ms/write':>9} {'idle':>6}  process (idle: the same process's CPU while the platform stood idle, "
              f"over the same time, per write)")
        for pid in pipeline + broker:
            used = end[pid] - start[pid]
            print(f"{used / writes * 1000:9.3f} {idle[pid] * scale / writes * 1000:6.3f}  {processes[pid][-90:]}")
        pipeline_ms = sum(end[pid] - start[pid] for pid in pipeline) / writes * 1000
        broker_ms = sum(end[pid] - start[pid] for pid in broker) / writes * 1000
        print(f"pipeline {pipeline_ms:.3f} ms per {args.write} (idle {sum(idle[p] for p in pipeline) * scale / writes * 1000:.3f}), "
              f"broker {broker_ms:.3f}")
        if spies and any(out.exists() and out.stat().st_size for out, _process in spies):
            shares: collections.Counter = collections.Counter()
            frames: collections.Counter = collections.Counter()
            for out, _process in spies:
                if out.exists():
                    found, where = classify(out.read_text())
                    shares += found
                    frames += where
            total = sum(shares.values())
            print(f"py-spy, {total} samples of the pipeline's processes holding the GIL:")
            for package, samples in shares.most_common():
                print(f"  {samples / total:6.1%}  {samples / total * pipeline_ms:6.3f} ms/{args.write}  {package}")
            if args.frames:
                print(f"the {args.frames} functions sampled most (the innermost frame of the package a sample is put in):")
                for (package, frame), samples in frames.most_common(args.frames):
                    print(f"  {samples / total:6.1%}  {package}: {frame[:110]}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
