"""HTTP: requests per second and latency of representative writes and reads, beside hello-world.

Every figure comes from the same load generator (:mod:`bench.load`) against apps served by the
same gunicorn settings (``services.kernel.gunicorn_conf``: 2 sync workers, 1 thread; the gateway
as ``make run`` serves it, 2 gevent workers):

- anchor: ``GET /hello`` of a hello-world Flask app (:mod:`bench.hello`);
- writes: cast a council ballot (projects), submit a satisfaction rating (feedback) — each request a
  new ballot or rating, prepared through the API before the clock starts;
- reads: project detail (projects), live ranking of a community's services (feedback);
- composed: the gateway's project overview (project + volunteer minutes + satisfaction, fetched
  from three services concurrently).

For each: the peak rate (closed loop, 4 concurrent clients), then p50/p99 latency at half that
rate (open loop, latency from the scheduled send time), and the resident memory of each worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from bench.load import Request, Result, closed_loop, open_loop
from bench.platform import HelloWorld, Platform
from services.feedback.domain import period_of
from services.kernel.events import utc_now
from tests.support.projects import Community, HttpClient, Person, ProjectsDriver

CONCURRENCY = 4


def _request(method: str, path: str, person: Person | None = None, body=None) -> Request:
    headers = tuple((person.headers if person else {}).items())
    return Request(method, path, None if body is None else json.dumps(body).encode(), headers)


# -- scenario set-up, through the services' APIs ------------------------------------------------

def ballot_pools(projects_url: str, representatives: int, projects_per_pool: int) -> tuple[list, list, list]:
    """Two pools of ballots (peak, half rate) on projects whose votes are open; and the projects."""
    d = ProjectsDriver(HttpClient(projects_url))
    c = Community(d, "bench", representatives=representatives, residents=8, fund_fen=1_000_000_000)
    pools, all_projects = [], []
    for _pool in range(2):
        ids = []
        for _ in range(projects_per_pool):
            project = c.propose(requested_fen=100_000, estimated_cost_fen=200_000)
            c.qualify(project["project_id"])
            d.post(c.cadre, f"/projects/{project['project_id']}/vote/open", {}, status=200)
            ids.append(project["project_id"])
        all_projects += ids
        pools.append([_request("POST", f"/projects/{pid}/vote/ballots", rep, {"choice": "yes"})
                      for rep in c.representatives for pid in ids])
    return pools[0], pools[1], [(pid, c.residents[0]) for pid in all_projects]


def rating_pools(feedback_url: str, subjects_per_pool: int, residents: int) -> tuple[list, list]:
    d = ProjectsDriver(HttpClient(feedback_url))
    cadre = Person("bench-cadre", "社区干部", ("cadre",), "bench")
    people = [Person(f"bench-rater{i}", f"居民{i}", ("resident",), "bench") for i in range(residents)]
    levels = (5, 4, 5, 4, 3, 5, 4, 2, 5, 4)
    pools = []
    for pool in range(2):
        subjects = [f"svc-{pool}-{i}" for i in range(subjects_per_pool)]
        for subject in subjects:
            d.post(cadre, "/subjects", {"subject_id": subject, "kind": "service", "name": f"便民服务{subject}",
                                        "community_id": "bench"})
        pools.append([_request("POST", f"/subjects/{subject}/ratings", person,
                               {"level": levels[(i + j) % len(levels)]})
                      for i, person in enumerate(people) for j, subject in enumerate(subjects)])
    return pools[0], pools[1]


# -- measuring ----------------------------------------------------------------------------------

def measure(url: str, peak_pool: list[Request], half_pool: list[Request], duration: float) -> dict:
    peak = closed_loop(url, peak_pool, concurrency=CONCURRENCY, duration=duration)
    half = open_loop(url, half_pool, rate=max(1.0, peak.per_second / 2), concurrency=CONCURRENCY,
                     duration=duration)
    return {"peak": peak, "half": half}


def _check(result: Result, what: str) -> None:
    if result.ok == 0 or result.errors > result.ok * 0.01:
        raise RuntimeError(f"{what}: {result.ok} ok, {result.errors} errors; first: {result.first_error}")


def _row(label: str, figures: dict, hello: dict, target_share: float, rss: list[float]) -> dict:
    peak, half = figures["peak"], figures["half"]
    hello_peak = hello["peak"].per_second
    share = peak.per_second / hello_peak if hello_peak else 0.0
    p99 = half.percentile(99)
    return {"measure": label, "unit": "req/s", "ours": peak.per_second,
            "anchors": {"hello-world Flask, same gunicorn settings": hello_peak},
            "extra": {"p50 ms @ half peak": round(half.percentile(50), 1),
                      "p99 ms @ half peak": round(p99, 1), "hello p99 ms @ half peak":
                      round(hello["half"].percentile(99), 1), "RSS MB per worker": rss,
                      "errors": peak.errors + half.errors},
            "targets": [{"what": f"≥ {target_share:.0%} of hello-world", "met": share >= target_share},
                        {"what": "p99 < 50 ms at half the peak rate", "met": p99 < 50}]}


def run(workdir, quick: bool, platform: Platform) -> list[dict]:
    duration = 3.0 if quick else 8.0
    reads = 20_000 if quick else 60_000
    with HelloWorld(workdir) as hello_app:
        hello_requests = [Request("GET", "/hello")] * reads
        hello = measure(hello_app.url, hello_requests, hello_requests, duration)
        _check(hello["peak"], "hello-world")
        hello_rss = hello_app.worker_rss_mb()
    rows = [{"measure": "HTTP anchor: hello-world Flask GET /hello", "unit": "req/s", "ours": hello["peak"].per_second,
             "anchors": {}, "targets": [],
             "extra": {"p50 ms @ half peak": round(hello["half"].percentile(50), 1),
                       "p99 ms @ half peak": round(hello["half"].percentile(99), 1), "RSS MB per worker": hello_rss}}]

    u = platform.urls
    ballots_peak, ballots_half, projects = ballot_pools(u["projects"], 120 if quick else 250, 10 if quick else 16)
    ratings_peak, ratings_half = rating_pools(u["feedback"], 40 if quick else 80, 60 if quick else 70)
    period = period_of(utc_now(), "month")
    viewer = projects[0][1]
    detail = [_request("GET", f"/projects/{pid}", viewer) for pid, _ in projects] * (reads // len(projects) + 1)
    ranking = [_request("GET", f"/rankings/bench/service?period={period}", viewer)] * reads
    overview = [_request("GET", f"/api/v1/projects/{pid}/overview", viewer)
                for pid, _ in projects] * (reads // len(projects) + 1)

    cases: list[tuple[str, str, Callable[[], dict], float]] = [
        ("HTTP write: cast a council ballot (projects)", "projects",
         lambda: measure(u["projects"], ballots_peak, ballots_half, duration), 0.40),
        ("HTTP write: submit a satisfaction rating (feedback)", "feedback",
         lambda: measure(u["feedback"], ratings_peak, ratings_half, duration), 0.40),
        ("HTTP read: project detail (projects)", "projects",
         lambda: measure(u["projects"], detail, detail, duration), 0.60),
        ("HTTP read: live ranking of the community's rated services (feedback)", "feedback",
         lambda: measure(u["feedback"], ranking, ranking, duration), 0.60),
        ("HTTP composed: gateway project overview (3 services)", "gateway",
         lambda: measure(u["gateway"], overview, overview, duration), 0.25),
    ]
    for label, app, go, share in cases:
        figures = go()
        _check(figures["peak"], label)
        rows.append(_row(label, figures, hello, share, platform.worker_rss_mb(app)))
    return rows
