"""End-to-end propagation: a command accepted by projects, to its effect in volunteers and feedback.

On the running local platform (broker, relays, consumers as ``make run`` starts them), commands
are sent to the projects service at a steady 100 per second (open loop, :mod:`bench.load`),
alternating

- a labour delivery confirmed by a grid worker (→ ``ContributionDelivered`` → the volunteers
  consumer credits the card: ``ProjectLabourCredited``), and
- a resident's evaluation of a finished project (→ ``ProjectRated`` → the feedback consumer
  records ratings of the project and of its responsible unit: ``RatingSubmitted``).

Each command carries its own ``X-Correlation-ID``, which the events it causes keep. Afterwards
the three stores are read: latency = the effect's commit stamp (``occurred_at`` of the event in
volunteers or feedback) − the command's (``occurred_at`` of its event in projects). Both stamps
come from the same clock.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from bench.load import Request, open_loop
from bench.platform import Platform
from tests.support.projects import Community, HttpClient, Person, ProjectsDriver

RATE = 100.0


def commands(projects_url: str, count: int, tag: str = "flow") -> list[Request]:
    """``count`` commands in a community of their own, ``tag``; their correlation ids ``<tag>-<i>``."""
    d = ProjectsDriver(HttpClient(projects_url))
    c = Community(d, tag, representatives=9, residents=8, fund_fen=100_000_000)
    building = c.approved_project(requested_fen=100_000)["project_id"]
    evaluated = c.project_in_evaluation({"unit_id": "jsb", "name": "街道建设办"}, requested_fen=100_000)
    workers = [Person(f"{tag}-w{i}", f"志愿者{i}", ("resident",), tag) for i in range(count // 20 + 1)]
    pledges = [d.post(w, f"/projects/{building}/pledges", {"kind": "labour", "labour_minutes": 600})["created_id"]
               for w in workers]
    auth = dict(c.grid_worker.headers)
    requests = []
    for i in range(count):
        headers = {"X-Correlation-ID": f"{tag}-{i}"}
        if i % 2 == 0:
            body, path = {"labour_minutes": 30}, f"/projects/{building}/pledges/{pledges[(i // 2) % len(pledges)]}/deliveries"
            headers |= auth
        else:
            # 3s and 4s: hundreds of 5s in minutes would be a burst, flagged for review by design
            body, path = {"score": 3 + (i // 2) % 2}, f"/projects/{evaluated}/evaluation/ratings"
            headers |= Person(f"{tag}-e{i}", f"居民{i}", ("resident",), tag).headers
        requests.append(Request("POST", path, json.dumps(body).encode(), tuple(headers.items())))
    return requests


def _stamps(db: Path, event_types: tuple[str, ...], tag: str) -> dict[str, int]:
    """correlation id → latest ``occurred_at_us`` of events of those types caused by a command of ``tag``."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(event_types))
        rows = connection.execute(f"SELECT metadata, occurred_at_us FROM events WHERE event_type IN ({marks})",
                                  event_types).fetchall()
    finally:
        connection.close()
    found: dict[str, int] = {}
    for metadata, at in rows:
        correlation = json.loads(metadata).get("correlation_id") or ""
        if correlation.startswith(f"{tag}-"):
            found[correlation] = max(at, found.get(correlation, 0))
    return found


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


RUNS = 3  # latency on 2 cores: three runs, the median and the spread


def one_run(platform: Platform, seconds: int, tag: str) -> dict:
    """One run at RATE commands/s: per effect, the latencies (ms) and how many were expected."""
    requests = commands(platform.urls["projects"], int(RATE * seconds), tag)
    sent = open_loop(platform.urls["projects"], requests, rate=RATE, concurrency=4, duration=seconds)
    if sent.errors:
        raise RuntimeError(f"propagation commands failed: {sent.errors}; first: {sent.first_error}")
    data = platform.data_dir
    deadline = time.monotonic() + 120
    while True:
        accepted = _stamps(data / "projects.db", ("ContributionDelivered", "ProjectRated"), tag)
        credited = _stamps(data / "volunteers.db", ("ProjectLabourCredited",), tag)
        rated = _stamps(data / "feedback.db", ("RatingSubmitted",), tag)
        done = len(credited) + len(rated)
        if done >= len(accepted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    figures = {"sent": sent}
    for label, effects in (("volunteers (labour credited)", credited), ("feedback (evaluation counted)", rated)):
        latencies = [(at - accepted[key]) / 1000 for key, at in effects.items() if key in accepted]
        expected = sum(1 for key in accepted if (int(key.split("-")[1]) % 2 == 0) == label.startswith("volunteers"))
        figures[label] = (latencies, expected)
    return figures


def run(workdir: Path, quick: bool, platform: Platform) -> list[dict]:
    seconds = 5 if quick else 20
    runs = [one_run(platform, seconds, f"flow{n}") for n in range(RUNS)]
    rows = []
    for label in ("volunteers (labour credited)", "feedback (evaluation counted)"):
        p50s = sorted(_percentile(r[label][0], 50) for r in runs)
        p99s = sorted(_percentile(r[label][0], 99) for r in runs)
        seen = [f"{len(r[label][0])}/{r[label][1]}" for r in runs]
        complete = all(len(r[label][0]) == r[label][1] for r in runs)
        p50, p99 = p50s[len(p50s) // 2], p99s[len(p99s) // 2]
        rows.append({"measure": f"propagation at {RATE:.0f} commands/s: projects → {label}", "unit": "ms p50",
                     "ours": p50, "anchors": {},
                     "extra": {"runs": RUNS, "p50 ms spread": f"{p50s[0]:.0f}–{p50s[-1]:.0f}",
                               "p99 ms (median)": round(p99, 1), "p99 ms spread": f"{p99s[0]:.0f}–{p99s[-1]:.0f}",
                               "effects seen": ", ".join(seen),
                               "commands/s achieved": ", ".join(f"{r['sent'].per_second:.1f}" for r in runs),
                               "command p99 ms": ", ".join(f"{r['sent'].percentile(99):.0f}" for r in runs)},
                     "targets": [{"what": "p50 < 100 ms", "met": p50 < 100},
                                 {"what": "p99 < 500 ms", "met": p99 < 500},
                                 {"what": "every effect arrived", "met": complete}]})
    return rows
