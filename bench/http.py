"""HTTP: requests per second and latency of representative writes and reads, each beside the
anchor that does the same kind of work.

Every figure comes from the same load generator (:mod:`bench.load`) against apps served by the
same gunicorn settings (``services.kernel.gunicorn_conf``: 2 workers; the services and their
anchors with gunicorn's default sync worker, the gateway and its anchor with gevent, as ``make run``
serves them), all measured in the same run:

- anchors: ``GET /hello`` of a hello-world Flask app (:mod:`bench.hello`), for the plain reads;
  a hello-world write — one command of the ``eventsourcing`` library per request (get a ballot box,
  decide, save) on a durable SQLite file (WAL, ``synchronous=FULL``) shared by both workers
  (:mod:`bench.anchors`), for the writes; a hello-world gateway (gevent) calling three hello-world
  services concurrently and merging their JSON, for the composed view;
- writes: cast a council ballot (projects), submit a satisfaction rating (feedback) — each request a
  new ballot or rating, prepared through the API before the clock starts;
- reads: project detail (projects), live ranking of a community's services (feedback);
- composed: the gateway's project overview (project + volunteer minutes + satisfaction, fetched
  from three services concurrently).

For each: the peak rate (closed loop, 4 concurrent clients), then p50/p99 latency at half that
rate (open loop, latency from the scheduled send time) in three runs — the row gives the median
of the three and the spread (min–max) of p99 — and the resident memory of each worker. A row's
first anchor is the one its "ours = x%" compares with.

Every row is judged in :data:`PAIRS` rounds, after its peak and latency runs: in each, back to
back and for half the peak time, its anchor's peak (the anchors serve throughout), ours, and for a
write ours with the pipeline paused. The row's figure and the anchor's are the medians of the
rounds' rates, and each target the median of the rounds' own ratios (a write's row gives the CPU
time per write, user and system, of the anchor's workers and of ours paused in its rounds too: where
the two spend their time, read from ``/proc``): on a shared machine whose
speed drifts by a tenth or more within minutes, one anchor run measured minutes before ours decided
as much as the code. Before the first write is measured the pipeline is through the events of the
set-up.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.load import Request, Result, closed_loop, open_loop
from bench.platform import HelloWorld, Platform, cpu_split, descendants, gunicorn_pids
from services.feedback.domain import period_of
from services.kernel.events import utc_now
from tests.support.projects import Community, FlaskClient, HttpClient, Person, ProjectsDriver

if TYPE_CHECKING:  # (bench.anchors needs the bench's extras, eventsourcing: imported where the anchors run)
    from bench.anchors import WriteAnchor

CONCURRENCY = 4
LATENCY_RUNS = 3
# Ballots per aggregate, the same on both sides: a council's representatives voting on one project
# (ours), voters on one ballot box (the write anchor). Each pool of ballots has projects (boxes) of
# its own, so neither side's aggregates grow past this.
VOTERS_PER_BOX = 25
# Rounds in which the write anchor's peak, ours and ours with the pipeline paused are measured back
# to back, each for half the peak time: a write's ratio to the anchor is the median of the rounds'
# ratios (this machine's speed drifts by a tenth and more over minutes: a single anchor run measured
# minutes before ours moved the ratio by as much as the difference it was to show).
PAIRS = 3
READ_PROJECTS = 48  # the project pages read (detail, overview), in turn: spread over the ballot pools

HELLO = "hello-world Flask, same gunicorn settings"
WRITE_ANCHOR = "eventsourcing command (get, decide, save) on SQLite WAL + synchronous FULL, same gunicorn settings"
COMPOSED_ANCHOR = "hello-world gateway (gevent) over 3 hello-world services, same gunicorn settings"


def _request(method: str, path: str, person: Person | None = None, body=None) -> Request:
    headers = tuple((person.headers if person else {}).items())
    return Request(method, path, None if body is None else json.dumps(body).encode(), headers)


# -- scenario set-up, through the services' APIs ------------------------------------------------

def ballot_pools(projects_url: str, representatives: int, projects_per_pool: int, count: int = 2) -> tuple:
    """``count`` pools of ballots (peak, half rate, …) on projects whose votes are open; then the
    projects."""
    d = ProjectsDriver(HttpClient(projects_url))
    c = Community(d, "bench", representatives=representatives, residents=8, fund_fen=1_000_000_000)
    pools, all_projects = [], []
    for _pool in range(count):
        ids = []
        for _ in range(projects_per_pool):
            project = c.propose(requested_fen=100_000, estimated_cost_fen=200_000)
            c.qualify(project["project_id"])
            d.post(c.cadre, f"/projects/{project['project_id']}/vote/open", {}, status=200)
            ids.append(project["project_id"])
        all_projects += ids
        pools.append([_request("POST", f"/projects/{pid}/vote/ballots", rep, {"choice": "yes"})
                      for rep in c.representatives for pid in ids])
    return (*pools, [(pid, c.residents[0]) for pid in all_projects])


RATING_LEVELS = (5, 4, 5, 4, 3, 5, 4, 2, 5, 4)  # a bad one (2) in ten opens a follow-up case


def rating_writes(driver: ProjectsDriver, pool: int, subjects_per_pool: int,
                  residents: int) -> list[tuple[str, dict, Person]]:
    """One pool of new ratings (path, body, rater), resident by resident, each rating every one of
    ``subjects_per_pool`` services registered for the pool."""
    cadre = Person("bench-cadre", "社区干部", ("cadre",), "bench")
    people = [Person(f"bench-rater{i}", f"居民{i}", ("resident",), "bench") for i in range(residents)]
    subjects = [f"svc-{pool}-{i}" for i in range(subjects_per_pool)]
    for subject in subjects:
        driver.post(cadre, "/subjects", {"subject_id": subject, "kind": "service", "name": f"便民服务{subject}",
                                         "community_id": "bench"})
    return [(f"/subjects/{subject}/ratings", {"level": RATING_LEVELS[(i + j) % len(RATING_LEVELS)]}, person)
            for i, person in enumerate(people) for j, subject in enumerate(subjects)]


def rating_pools(feedback_url: str, subjects_per_pool: int, residents: int, count: int = 2) -> tuple:
    d = ProjectsDriver(HttpClient(feedback_url))
    return tuple([_request("POST", path, person, body)
                  for path, body, person in rating_writes(d, pool, subjects_per_pool, residents)]
                 for pool in range(count))


def rating_calls(client, count: int, subjects: int = 8) -> tuple[list[tuple[str, dict, dict]], int]:
    """``count`` new ratings (path, body, headers) as :func:`rating_pools` makes them, for the
    feedback app behind Flask's test ``client`` (``python -m bench.profile_http``); and how many
    subjects they rate."""
    d = ProjectsDriver(FlaskClient(client))
    writes = rating_writes(d, 0, subjects, -(-count // subjects))
    return [(path, body, person.headers) for path, body, person in writes[:count]], subjects


def ballot_calls(client, count: int) -> tuple[list[tuple[str, dict, dict]], int]:
    """``count`` new ballots (path, body, headers) for the projects app behind Flask's test
    ``client``: projects with open votes, :data:`VOTERS_PER_BOX` representatives each, ballot after
    ballot project after project (``python -m bench.profile_http``, ``python -m bench.instructions``);
    and how many projects they vote on."""
    d = ProjectsDriver(FlaskClient(client))
    c = Community(d, "bench", representatives=VOTERS_PER_BOX, residents=8, fund_fen=1_000_000_000)
    projects = -(-count // VOTERS_PER_BOX)
    calls = []
    for _ in range(projects):
        project_id = c.propose(requested_fen=100_000, estimated_cost_fen=200_000)["project_id"]
        c.qualify(project_id)
        d.post(c.cadre, f"/projects/{project_id}/vote/open", {}, status=200)
        calls += [(f"/projects/{project_id}/vote/ballots", {"choice": "yes"}, rep.headers) for rep in c.representatives]
    return calls[:count], projects


# -- measuring ----------------------------------------------------------------------------------

def measure(url: str, peak_pool: list[Request], half_pool: list[Request], duration: float) -> dict:
    """The peak rate, then one open-loop run at half of it (:mod:`bench.web` measures this way)."""
    peak = closed_loop(url, peak_pool, concurrency=CONCURRENCY, duration=duration)
    half = open_loop(url, half_pool, rate=max(1.0, peak.per_second / 2), concurrency=CONCURRENCY,
                     duration=duration)
    return {"peak": peak, "half": half}


def measure_spread(url: str, peak_pool: list[Request], half_pools: list[list[Request]], peak_seconds: float,
                   latency_seconds: float) -> dict:
    """The peak rate, then :data:`LATENCY_RUNS` open-loop runs at half of it, one per pool in
    ``half_pools`` (a write needs a new request each time; a read may pass the same pool again)."""
    peak = closed_loop(url, peak_pool, concurrency=CONCURRENCY, duration=peak_seconds)
    rate = max(1.0, peak.per_second / 2)
    halves = [open_loop(url, pool, rate=rate, concurrency=CONCURRENCY, duration=latency_seconds)
              for pool in half_pools]
    return {"peak": peak, "halves": halves}


def _check(result: Result, what: str) -> None:
    if result.ok == 0 or result.errors > result.ok * 0.01:
        raise RuntimeError(f"{what}: {result.ok} ok, {result.errors} errors; first: {result.first_error}")


def _check_all(figures: dict, what: str) -> None:
    _check(figures["peak"], what)
    for i, half in enumerate(figures["halves"], 1):
        _check(half, f"{what} at half the peak, run {i}")


def latency(figures: dict) -> dict:
    """p50 and p99 at half the peak: the median of the runs, and the spread of p99."""
    p50s = [half.percentile(50) for half in figures["halves"]]
    p99s = [half.percentile(99) for half in figures["halves"]]
    return {"p50": statistics.median(p50s), "p99": statistics.median(p99s), "p99 min": min(p99s),
            "p99 max": max(p99s), "errors": figures["peak"].errors + sum(h.errors for h in figures["halves"])}


def _latency_extra(figures: dict) -> dict:
    lat = latency(figures)
    return {"p50 ms @ half peak": round(lat["p50"], 1),
            f"p99 ms @ half peak (median of {len(figures['halves'])})": round(lat["p99"], 1),
            "p99 spread ms": f"{lat['p99 min']:.1f}–{lat['p99 max']:.1f}"}


def _anchor_row(label: str, figures: dict, rss: list[float], **extra) -> dict:
    return {"measure": label, "unit": "req/s", "ours": figures["peak"].per_second, "anchors": {}, "targets": [],
            "extra": {**_latency_extra(figures), "RSS MB per worker": rss, **extra,
                      "errors": latency(figures)["errors"]}}


def _row(label: str, figures: dict, anchors: list[tuple[str, dict]], target: tuple[str, float],
         rss: list[float]) -> dict:
    """``anchors``: (name, figures) with the one the target is about first; ``target``: (how it is
    said, the share of the first anchor's peak to reach)."""
    peak = figures["peak"].per_second
    first_peak = anchors[0][1]["peak"].per_second
    share = peak / first_peak if first_peak else 0.0
    lat = latency(figures)
    said, wanted = target
    return {"measure": label, "unit": "req/s", "ours": peak,
            "anchors": {name: anchor["peak"].per_second for name, anchor in anchors},
            "extra": {**_latency_extra(figures),
                      "anchor p99 ms @ half peak (median)": round(latency(anchors[0][1])["p99"], 1),
                      "RSS MB per worker": rss, "errors": lat["errors"]},
            "targets": [{"what": said, "met": share >= wanted},
                        {"what": "p99 < 50 ms at half the peak rate (median of 3 runs)", "met": lat["p99"] < 50}]}


def with_cpu(groups: dict[str, list[int]], go: Callable[[], dict]) -> tuple[dict, dict[str, tuple[float, float]]]:
    """Run ``go`` (a peak and its latency runs) and return its figures with the CPU time, in ms per
    request answered, each group of processes used meanwhile: (user, system)."""
    before = cpu_split([pid for pids in groups.values() for pid in pids])
    figures = go()
    after = cpu_split(before)
    answered = figures["peak"].ok + sum(half.ok for half in figures["halves"])
    return figures, {name: cpu_per_request({pid: before[pid] for pid in pids}, after, answered)
                     for name, pids in groups.items()}


def platform_groups(platform: Platform, app: str) -> dict[str, list[int]]:
    """The platform's processes in the groups a write's CPU is told by: the app's gunicorn master
    and workers, the pipeline (relays, consumers, feed worker, jobs), the broker, and the rest (the
    other apps, mostly idle, and the supervisor)."""
    everything = platform.processes()
    workers, pipeline = gunicorn_pids(platform.ports[app]), platform.pipeline_pids()
    broker = [pid for pid, command in everything.items() if "broker" in command and "python" not in command]
    rest = [pid for pid in everything if pid not in {*workers, *pipeline, *broker}]
    return {"workers": workers, "pipeline": pipeline, "broker": broker, "rest": rest}


def cpu_text(cpu: dict[str, tuple[float, float]]) -> str:
    """Each group's CPU ms per request, user + system, and for the workers the two apart (where a
    write's time goes in the worker: its own code, or the kernel's work for it)."""
    return ", ".join(f"{name} {user + system:.2f}" + (f" (user {user:.2f}, system {system:.2f})"
                                                      if name == "workers" else "")
                     for name, (user, system) in cpu.items())


def _thirds(pool: list[Request], runs: int = LATENCY_RUNS) -> list[list[Request]]:
    """``runs`` disjoint slices of a pool of writes (each request is a new ballot or rating)."""
    size = len(pool) // runs
    return [pool[i * size:(i + 1) * size] for i in range(runs)]


def run(workdir, quick: bool, platform: Platform) -> list[dict]:
    from bench.anchors import WriteAnchor
    peak_seconds, latency_seconds = (3.0, 2.0) if quick else (8.0, 4.0)
    reads = 20_000 if quick else 60_000

    def spread(url: str, peak_pool: list[Request], half_pools: list[list[Request]]) -> dict:
        return measure_spread(url, peak_pool, half_pools, peak_seconds, latency_seconds)

    # -- the anchors (the hello-world and composed ones in _run; the write anchor serves throughout) --
    anchor_writes = 3_000 if quick else 8_000  # the peak pool; each half-rate pool has half
    pair_writes = anchor_writes // 2  # a round's pool, for half the peak time (PAIRS)
    boxes = (-(-anchor_writes // VOTERS_PER_BOX) + LATENCY_RUNS * -(-(anchor_writes // 2) // VOTERS_PER_BOX)
             + 2 * PAIRS * -(-pair_writes // VOTERS_PER_BOX))  # (the rounds of both writes)
    with WriteAnchor(workdir, boxes, VOTERS_PER_BOX) as write_app:  # serving until the writes' rounds are done
        rows = _run(workdir, quick, platform, write_app, peak_seconds, latency_seconds, reads, anchor_writes,
                    pair_writes, spread)
        most_per_box = write_app.most_events_per_box()
    if most_per_box > VOTERS_PER_BOX + 1:  # its opening and its ballots
        raise RuntimeError(f"a write anchor box holds {most_per_box} events, more than "
                           f"{VOTERS_PER_BOX} ballots: not the shape of our projects")
    return rows


def _run(workdir, quick: bool, platform: Platform, write_app: WriteAnchor, peak_seconds: float,
         latency_seconds: float, reads: int, anchor_writes: int, pair_writes: int, spread) -> list[dict]:
    from bench.anchors import ComposedAnchor
    # the read anchors serve until the reads' rounds are done, as the write anchor until the writes'
    with HelloWorld(workdir) as hello_app, ComposedAnchor(workdir) as composed_app:
        return _run_beside(workdir, quick, platform, write_app, hello_app, composed_app, peak_seconds, reads,
                           anchor_writes, pair_writes, spread)


def _run_beside(workdir, quick: bool, platform: Platform, write_app: WriteAnchor, hello_app: HelloWorld,
                composed_app, peak_seconds: float, reads: int, anchor_writes: int, pair_writes: int,
                spread) -> list[dict]:
    hello_requests = [Request("GET", "/hello")] * reads
    hello = spread(hello_app.url, hello_requests, [hello_requests] * LATENCY_RUNS)
    _check_all(hello, "hello-world")
    hello_rss = hello_app.worker_rss_mb()
    anchor_pids = [write_app.server.process.pid, *descendants(write_app.server.process.pid)]
    written, anchor_cpu = with_cpu({"workers": anchor_pids}, lambda: spread(
        write_app.url, write_app.requests(anchor_writes, "peak"),
        [write_app.requests(anchor_writes // 2, f"half{i}") for i in range(LATENCY_RUNS)]))
    _check_all(written, "write anchor")
    write_rss, most_per_box = write_app.worker_rss_mb(), write_app.most_events_per_box()
    boxes = write_app.boxes_count
    composed = spread(composed_app.url, hello_requests, [hello_requests] * LATENCY_RUNS)
    _check_all(composed, "composed anchor")
    composed_rss = composed_app.worker_rss_mb()
    rows = [
        _anchor_row("HTTP anchor: hello-world Flask GET /hello", hello, hello_rss),
        _anchor_row("HTTP anchor: hello-world write, one eventsourcing 9.x command per request (cast a ballot: "
                    "get, decide, save; SQLite WAL, synchronous FULL)", written, write_rss,
                    **{"ballot boxes": boxes, "ballots per box": VOTERS_PER_BOX,
                       "most events in a box at the end": most_per_box,
                       "CPU ms per request": cpu_text(anchor_cpu)}),
        _anchor_row("HTTP anchor: hello-world gateway (gevent) GET /hello composing 3 hello-world services",
                    composed, composed_rss, **{"worker class": "gevent"}),
    ]

    # -- ours ---------------------------------------------------------------------------------
    u = platform.urls
    ballots_peak, ballots_half, *ballot_rounds, projects = ballot_pools(
        u["projects"], VOTERS_PER_BOX, -(-anchor_writes // VOTERS_PER_BOX), count=2 + PAIRS)
    ratings_peak, ratings_half, *rating_rounds = rating_pools(u["feedback"], 40 if quick else 80,
                                                              60 if quick else 70, count=2 + 2 * PAIRS)
    # each round: ours and ours paused, on requests of their own (a ballot pool's halves; a rating pool each)
    rounds = {"projects": [(pool[:len(pool) // 2], pool[len(pool) // 2:]) for pool in ballot_rounds],
              "feedback": list(zip(rating_rounds[::2], rating_rounds[1::2]))}
    # The pools' set-up wrote thousands of events: measured before the relays and consumers are
    # through them, the first write shared the cores with that backlog (577 against 815–868 req/s
    # for the same ballots once it was gone, on one machine).
    platform.wait_until_drained()
    period = period_of(utc_now(), "month")
    viewer = projects[0][1]
    projects = projects[::max(1, len(projects) // READ_PROJECTS)][:READ_PROJECTS]  # the pages read
    detail = [_request("GET", f"/projects/{pid}", viewer) for pid, _ in projects] * (reads // len(projects) + 1)
    ranking = [_request("GET", f"/rankings/bench/service?period={period}", viewer)] * reads
    overview = [_request("GET", f"/api/v1/projects/{pid}/overview", viewer)
                for pid, _ in projects] * (reads // len(projects) + 1)

    write_target = ("≥ 1.0× the eventsourcing write anchor", 1.0)
    read_target = ("≥ 60% of hello-world", 0.60)
    composed_target = ("≥ 60% of the hello-world composed anchor", 0.60)
    writes = [(WRITE_ANCHOR, written), (HELLO, hello)]
    # a read's rounds: its anchor's URL and requests, and ours
    hello_pair, composed_pair = (hello_app.url, hello_requests), (composed_app.url, hello_requests)
    cases: list[tuple[str, str, Callable[[], dict], list, tuple[str, float], tuple | None]] = [
        ("HTTP write: cast a council ballot (projects)", "projects",
         lambda: spread(u["projects"], ballots_peak, _thirds(ballots_half)), writes, write_target, None),
        ("HTTP write: submit a satisfaction rating (feedback)", "feedback",
         lambda: spread(u["feedback"], ratings_peak, _thirds(ratings_half)), writes, write_target, None),
        ("HTTP read: project detail (projects)", "projects",
         lambda: spread(u["projects"], detail, [detail] * LATENCY_RUNS), [(HELLO, hello)], read_target,
         (hello_pair, detail)),
        ("HTTP read: live ranking of the community's rated services (feedback)", "feedback",
         lambda: spread(u["feedback"], ranking, [ranking] * LATENCY_RUNS), [(HELLO, hello)], read_target,
         (hello_pair, ranking)),
        ("HTTP composed: gateway project overview (3 services)", "gateway",
         lambda: spread(u["gateway"], overview, [overview] * LATENCY_RUNS),
         [(COMPOSED_ANCHOR, composed), (HELLO, hello)], composed_target, (composed_pair, overview)),
    ]
    for label, app, go, anchors, target, read in cases:
        if anchors[0][0] != WRITE_ANCHOR:
            figures = go()
            _check_all(figures, label)
            row = _row(label, figures, anchors, target, platform.worker_rss_mb(app))
            (anchor_url, anchor_pool), pool = read
            _paired_into(row, read_rounds(anchor_url, anchor_pool, u[app], pool, peak_seconds / 2, label),
                         target[1])
            rows.append(row)
            continue
        figures, cpu = with_cpu(platform_groups(platform, app), go)
        _check_all(figures, label)
        row = _row(label, figures, anchors, target, platform.worker_rss_mb(app))
        row["extra"]["CPU ms per request"] = cpu_text(cpu)
        paired = paired_rounds(write_app, u[app], rounds[app], pair_writes, peak_seconds / 2, platform, label,
                               gunicorn_pids(platform.ports[app]))
        _paired_into(row, paired, target[1])
        rows.append(row)
    return rows


def paired_rounds(write_app: WriteAnchor, url: str, pools: list[tuple[list[Request], list[Request]]],
                  anchor_writes: int, seconds: float, platform: Platform, label: str,
                  workers: list[int]) -> list[dict]:
    """:data:`PAIRS` rounds, each back to back: the write anchor's peak, ours, and ours with the
    pipeline stopped — the anchor's work alone (a command and its save); the rates of each, and the
    CPU time (user, system: ms per write) of the anchor's workers and of ours (``workers``) paused."""
    anchor_workers = [write_app.server.process.pid, *descendants(write_app.server.process.pid)]
    measured = []
    for i, (ours_pool, paused_pool) in enumerate(pools[:PAIRS], 1):
        before = cpu_split(anchor_workers)
        anchor = closed_loop(write_app.url, write_app.requests(anchor_writes, f"round{label[:12]}{i}"),
                             concurrency=CONCURRENCY, duration=seconds)
        anchor_cpu = cpu_per_request(before, cpu_split(anchor_workers), anchor.ok)
        _check(anchor, f"write anchor, round {i}")
        ours = closed_loop(url, ours_pool, concurrency=CONCURRENCY, duration=seconds)
        _check(ours, f"{label}, round {i}")
        with platform.pipeline_paused():
            before = cpu_split(workers)
            paused = closed_loop(url, paused_pool, concurrency=CONCURRENCY, duration=seconds)
            paused_cpu = cpu_per_request(before, cpu_split(workers), paused.ok)
        _check(paused, f"{label}, pipeline paused, round {i}")
        measured.append({"anchor": anchor.per_second, "ours": ours.per_second, "paused": paused.per_second,
                         "anchor_cpu": anchor_cpu, "paused_cpu": paused_cpu})
    return measured


def cpu_per_request(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]],
                    answered: int) -> tuple[float, float]:
    """(user, system) ms per request that ``before`` and ``after`` (:func:`bench.platform.cpu_split`) say."""
    return tuple(sum(after[pid][i] - before[pid][i] for pid in before) * 1000 / max(1, answered) for i in (0, 1))


def read_rounds(anchor_url: str, anchor_pool: list[Request], url: str, pool: list[Request], seconds: float,
                label: str) -> list[dict[str, float]]:
    """:data:`PAIRS` rounds, each back to back: the read's anchor's peak and ours, for ``seconds``
    each (a read may pass its pool again)."""
    measured = []
    for i in range(1, PAIRS + 1):
        anchor = closed_loop(anchor_url, anchor_pool, concurrency=CONCURRENCY, duration=seconds)
        _check(anchor, f"{label}: its anchor, round {i}")
        ours = closed_loop(url, pool, concurrency=CONCURRENCY, duration=seconds)
        _check(ours, f"{label}, round {i}")
        measured.append({"anchor": anchor.per_second, "ours": ours.per_second})
    return measured


def _paired_into(row: dict, rounds: list[dict[str, float]], wanted: float) -> None:
    """A row from its rounds: ours and its first anchor, the medians of the rounds' rates; the
    target (``wanted``: the share of the anchor to reach), the median of the rounds' own ratios
    (each round's anchor measured just before ours). A write's rounds measure ours with the
    pipeline paused too: a target of its own."""
    ratio = statistics.median(r["ours"] / r["anchor"] for r in rounds)
    said = f"{ratio:.2f}×" if wanted >= 1.0 else f"{ratio:.0%}"
    row["extra"]["first peak (sets the half rate): req/s"] = round(row["ours"])
    row["ours"] = statistics.median(r["ours"] for r in rounds)
    row["anchors"][next(iter(row["anchors"]))] = statistics.median(r["anchor"] for r in rounds)
    paused = "paused" in rounds[0]
    legs = "anchor, ours, ours with the pipeline paused" if paused else "anchor, ours"
    row["extra"][f"rounds ({legs}: req/s)"] = "; ".join(
        ", ".join(f"{r[leg]:,.0f}" for leg in ("anchor", "ours", "paused") if leg in r) for r in rounds)
    row["extra"]["ours / anchor (median of the rounds' ratios)"] = said
    if "paused_cpu" in rounds[0]:  # where the paused rounds' time goes: the workers' own work, or the kernel's
        row["extra"]["CPU ms per write in the rounds, user/system (median): the anchor's workers, ours paused"] = (
            "; ".join(f"{statistics.median(r[leg][0] for r in rounds):.2f}/"
                      f"{statistics.median(r[leg][1] for r in rounds):.2f}" for leg in ("anchor_cpu", "paused_cpu")))
    row["targets"][0] = {"what": f"{row['targets'][0]['what']} ({said})", "met": ratio >= wanted}
    if paused:
        alone = statistics.median(r["paused"] / r["anchor"] for r in rounds)
        row["targets"].append({"what": f"pipeline paused (the anchor's work alone): ≥ 1.0× the write anchor "
                                       f"({alone:.2f}×)", "met": alone >= 1.0})
