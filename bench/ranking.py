"""Rankings at scale: 10,000 subjects and 1,000,000 ratings in one community and period.

The feedback store is the log the replay benchmark built (``ratings.db``: ``RatingSubmitted``
events and the ``subject_stats`` read model rebuilt from them); the feedback service runs on it
under gunicorn as ``make run`` serves it (with a longer worker timeout, so that a slow publish is
measured rather than killed). Measured:

- publish: ``POST /rankings`` — the ranking recomputed from ``subject_stats`` (Bayesian scores
  for every subject), the ``RankingPublished`` event with the full table, and the support plans
  it opens for subjects under the satisfaction threshold;
- verification: the published ranking recomputed from the log up to its last position (every
  rating event folded again) — the "same ranking from the log later" guarantee;
- read: ``GET /rankings/{community}/{kind}/{period}?limit=50&offset=…`` pages of the published
  ranking, p50/p99 under a closed loop of 2 clients;
- the live (unpublished) ranking of the same 10,000 subjects, once, for reference.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from pathlib import Path

from bench.load import Request, closed_loop
from tests.support.projects import Person
from tests.support.servers import ServiceServer

COMMUNITY, KIND, PERIOD = "c1", "cadre", "2026-10"


def _timed(method: str, url: str, person: Person, body=None) -> tuple[float, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={**person.headers, "Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as reply:
        payload = json.loads(reply.read())
    return time.perf_counter() - started, payload


def run(workdir: Path, quick: bool) -> list[dict]:
    path = workdir / "ratings.db"
    server = ServiceServer("feedback", workdir, env={"FEEDBACK_DATABASE_URL": f"sqlite:///{path}",
                                                     "GUNICORN_TIMEOUT": "600"})
    server.start(timeout=120)
    try:
        cadre = Person(f"{COMMUNITY}-cadre", "社区干部", ("cadre",), COMMUNITY)
        base = server.base_url
        publish_s, published = _timed("POST", f"{base}/rankings", cadre,
                                      {"community_id": COMMUNITY, "kind": KIND, "period": PERIOD})
        ranking = published["resource"]
        subjects = len(ranking["ranked"]) + len(ranking["not_enough_ratings"])
        ratings = sum(e["ratings"] for e in ranking["ranked"] + ranking["not_enough_ratings"])
        plans = sum(1 for e in published["recorded"] if e["event_type"] == "SupportPlanOpened")
        verify_s, verification = _timed("GET", f"{base}/rankings/{COMMUNITY}/{KIND}/{PERIOD}/verification", cadre)
        live_s, _ = _timed("GET", f"{base}/rankings/{COMMUNITY}/{KIND}?period={PERIOD}", cadre)
        rng = random.Random(8)
        pages = [Request("GET", f"/rankings/{COMMUNITY}/{KIND}/{PERIOD}?limit=50&offset={rng.randrange(0, subjects, 50)}",
                         headers=tuple(cadre.headers.items())) for _ in range(20_000)]
        reads = closed_loop(base, pages, concurrency=2, duration=3.0 if quick else 6.0)
    finally:
        server.stop()
    if reads.ok == 0 or reads.errors:
        raise RuntimeError(f"ranking reads failed: {reads.first_error}")
    scale = f"{subjects:,} subjects, {ratings:,} ratings"
    p99 = reads.percentile(99)
    return [
        {"measure": f"ranking read: a page of 50 of the published ranking ({scale})", "unit": "ms p99",
         "ours": p99, "anchors": {},
         "extra": {"p50 ms": round(reads.percentile(50), 2), "req/s (2 clients)": round(reads.per_second)},
         "targets": [{"what": "p99 < 20 ms", "met": p99 < 20}]},
        {"measure": f"ranking recompute and publish ({scale})", "unit": "s", "ours": publish_s, "anchors": {},
         "extra": {"support plans opened": plans, "live ranking read (s)": round(live_s, 2)},
         "targets": [{"what": "< 10 s", "met": publish_s < 10}]},
        {"measure": f"ranking recomputed from the log for verification ({scale})", "unit": "s", "ours": verify_s,
         "anchors": {}, "extra": {"identical": verification["identical"]},
         "targets": [{"what": "< 10 s", "met": verify_s < 10}, {"what": "identical", "met": verification["identical"]}]},
    ]
