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


def commands(projects_url: str, count: int) -> list[Request]:
    d = ProjectsDriver(HttpClient(projects_url))
    c = Community(d, "flow", representatives=9, residents=8, fund_fen=100_000_000)
    building = c.approved_project(requested_fen=100_000)["project_id"]
    evaluated = c.project_in_evaluation({"unit_id": "jsb", "name": "街道建设办"}, requested_fen=100_000)
    workers = [Person(f"flow-w{i}", f"志愿者{i}", ("resident",), "flow") for i in range(count // 20 + 1)]
    pledges = [d.post(w, f"/projects/{building}/pledges", {"kind": "labour", "labour_minutes": 600})["created_id"]
               for w in workers]
    auth = dict(c.grid_worker.headers)
    requests = []
    for i in range(count):
        headers = {"X-Correlation-ID": f"flow-{i}"}
        if i % 2 == 0:
            body, path = {"labour_minutes": 30}, f"/projects/{building}/pledges/{pledges[(i // 2) % len(pledges)]}/deliveries"
            headers |= auth
        else:
            # 3s and 4s: hundreds of 5s in minutes would be a burst, flagged for review by design
            body, path = {"score": 3 + (i // 2) % 2}, f"/projects/{evaluated}/evaluation/ratings"
            headers |= Person(f"flow-e{i}", f"居民{i}", ("resident",), "flow").headers
        requests.append(Request("POST", path, json.dumps(body).encode(), tuple(headers.items())))
    return requests


def _stamps(db: Path, event_types: tuple[str, ...]) -> dict[str, int]:
    """correlation id → latest ``occurred_at_us`` of events of those types caused by a bench command."""
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
        if correlation.startswith("flow-"):
            found[correlation] = max(at, found.get(correlation, 0))
    return found


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def run(workdir: Path, quick: bool, platform: Platform) -> list[dict]:
    seconds = 5 if quick else 20
    requests = commands(platform.urls["projects"], int(RATE * seconds))
    sent = open_loop(platform.urls["projects"], requests, rate=RATE, concurrency=4, duration=seconds)
    if sent.errors:
        raise RuntimeError(f"propagation commands failed: {sent.errors}; first: {sent.first_error}")
    data = platform.data_dir
    deadline = time.monotonic() + 120
    while True:
        accepted = _stamps(data / "projects.db", ("ContributionDelivered", "ProjectRated"))
        credited = _stamps(data / "volunteers.db", ("ProjectLabourCredited",))
        rated = _stamps(data / "feedback.db", ("RatingSubmitted",))
        done = len(credited) + len(rated)
        if done >= len(accepted) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rows = []
    for label, effects in (("volunteers (labour credited)", credited), ("feedback (evaluation counted)", rated)):
        latencies = [(at - accepted[key]) / 1000 for key, at in effects.items() if key in accepted]
        expected = sum(1 for key in accepted if (int(key.split("-")[1]) % 2 == 0) == label.startswith("volunteers"))
        p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
        rows.append({"measure": f"propagation at {RATE:.0f} commands/s: projects → {label}", "unit": "ms p50",
                     "ours": p50, "anchors": {},
                     "extra": {"p99 ms": round(p99, 1), "effects seen": f"{len(latencies)}/{expected}",
                               "commands/s achieved": round(sent.per_second, 1),
                               "command p99 ms": round(sent.percentile(99), 1)},
                     "targets": [{"what": "p50 < 100 ms", "met": p50 < 100},
                                 {"what": "p99 < 500 ms", "met": p99 < 500},
                                 {"what": "every effect arrived", "met": len(latencies) == expected}]})
    return rows
