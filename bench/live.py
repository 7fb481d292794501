"""Live streams at scale: 1,000 open server-sent event streams of the gateway, 20 events a second
flowing to them, and a normal request at a fixed rate beside them.

On the running local platform (the gateway as ``make run`` serves it: gunicorn's gevent worker
class, 2 workers — the worker class is read from the Procfile's gateway line and stated in the
row):

- 1,000 streams (``GET /api/v1/live``) of 1,000 residents spread over 10 communities, opened by one
  asyncio process (:mod:`tests.support.live_streams`), each read as ``EventSource`` reads it;
- 20 events a second written into the gateway's feed the way the feed worker writes them
  (:meth:`gateway.store.GatewayStore.add_feed_event` in one transaction each, on the gateway's
  SQLite database), round-robin over the communities, on a fixed schedule, by another process;
- meanwhile ``GET /api/v1/me`` (a composed view: three services) at a fixed 20 requests a second
  (open loop, :mod:`bench.load`: latency from the scheduled send time), p50/p99;
- afterwards: did every stream receive every event of its community, once, and nothing else
  (waiting up to 30 s for the last ones), and how long events took from their commit to the
  reader.

The anchor is the same ``/api/v1/me`` schedule with no stream open, measured first in the same run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import multiprocessing
import re
import time
from pathlib import Path

from bench.load import Request, open_loop
from bench.platform import ROOT, Platform
from tests.support.projects import Person

COMMUNITIES = 10
EVENT_RATE = 20.0
ME_RATE = 20.0
TARGET_P99_MS = 100.0


def worker_class() -> str:
    """The gateway's gunicorn worker class as the Procfile's line sets it (``GATEWAY_WORKER_CLASS``)."""
    import os

    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("gateway:"))
    found = re.search(r"GUNICORN_WORKER_CLASS=\$\{GATEWAY_WORKER_CLASS:-(\w+)\}", line)
    return os.environ.get("GATEWAY_WORKER_CLASS") or (found.group(1) if found else "sync")


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


# -- the readers (a process of their own: one asyncio loop) ------------------------------------------

def _readers(port: int, streams: int, commands, results) -> None:
    from tests.support.live_streams import LiveReader, close_all, open_all

    async def main() -> None:
        readers = [LiveReader("127.0.0.1", port, headers=Person(
            f"live-c{i % COMMUNITIES}-r{i}", f"居民{i}", ("resident",), f"live-c{i % COMMUNITIES}").headers,
            label=f"live-c{i % COMMUNITIES}") for i in range(streams)]
        began = time.monotonic()
        await open_all(readers, batch=100, timeout=120)
        results.put(("open", sum(r.status == 200 for r in readers), time.monotonic() - began,
                     next((r.body[:300] for r in readers if r.status != 200), b"")))
        expected: dict[str, dict[str, float]] = await asyncio.to_thread(commands.get)  # community -> {event id: committed}
        deadline = time.monotonic() + 30

        def complete(reader) -> bool:
            return len(reader.events) >= len(expected.get(reader.label, {}))

        while not all(complete(r) for r in readers) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # anything extra (a duplicate, another community's) would come by now
        good, missing, extra, delays = 0, 0, 0, []
        for reader in readers:
            mine = expected.get(reader.label, {})
            got = [json.loads(event["data"])["event_id"] for event in reader.events]
            wanted = [event_id for event_id in got if event_id in mine]
            missing += len(set(mine) - set(wanted))
            extra += len(got) - len(set(wanted))
            if set(wanted) == set(mine) and len(got) == len(mine):
                good += 1
            delays += [(at_wall - mine[event_id]) * 1000 for event_id, at_wall in
                       zip(got, (began_wall + (at - began_mono) for at in reader.received_at)) if event_id in mine]
        await close_all(readers)
        results.put(("done", good, missing, extra, delays))

    began_wall, began_mono = time.time(), time.monotonic()
    asyncio.run(main())


# -- the events (a process of its own, as the feed worker is) -------------------------------------

def _inject(database_url: str, count: int, rate: float, start_at: float, results) -> None:
    from gateway.store import GatewayStore
    from services.kernel.db import write_transaction
    from services.kernel.events import StoredEvent

    store = GatewayStore(database_url)
    committed: dict[str, dict[str, float]] = {}
    while time.time() < start_at:
        time.sleep(0.001)
    began = time.perf_counter()
    for i in range(count):
        scheduled = began + i / rate
        now = time.perf_counter()
        if scheduled > now:
            time.sleep(scheduled - now)
        community = f"live-c{i % COMMUNITIES}"
        event = StoredEvent(event_id=f"bench-live-{i}", event_type="ProjectProposed", schema_version=1,
                            stream_id=f"project-bench-live-{i}", version=1, position=i + 1,
                            occurred_at=dt.datetime.now(dt.timezone.utc),
                            data={"project_id": f"bench-live-{i}", "community_id": community, "title": f"楼道照明{i}"},
                            metadata={"actor": "bench"})
        with write_transaction(store.engine) as connection:
            store.add_feed_event(connection, event)
        committed.setdefault(community, {})[event.event_id] = time.time()
    store.engine.dispose()
    results.put((committed, time.perf_counter() - began))


def run(workdir: Path, quick: bool, platform: Platform) -> list[dict]:
    streams = 200 if quick else 1000
    seconds = 8.0 if quick else 30.0
    gateway = platform.urls["gateway"]
    me = Person("live-c0-me", "居民", ("resident",), "live-c0")
    calls = [Request("GET", "/api/v1/me", None, tuple(me.headers.items()))] * int(ME_RATE * seconds + 10)

    anchor = open_loop(gateway, calls, rate=ME_RATE, concurrency=2, duration=seconds)

    context = multiprocessing.get_context("fork")
    commands, results = context.Queue(), context.Queue()
    readers = context.Process(target=_readers, args=(platform.ports["gateway"], streams, commands, results))
    readers.start()
    try:
        _, opened, open_seconds, refused = results.get(timeout=180)
        if opened != streams:
            raise RuntimeError(f"only {opened} of {streams} live streams opened: {refused!r}")
        count = int(EVENT_RATE * seconds)
        injected = context.Queue()
        injector = context.Process(target=_inject, args=(f"sqlite:///{platform.data_dir}/gateway.db", count,
                                                         EVENT_RATE, time.time() + 0.3, injected))
        injector.start()
        loaded = open_loop(gateway, calls, rate=ME_RATE, concurrency=2, duration=seconds)
        rss = platform.worker_rss_mb("gateway")
        committed, inject_seconds = injected.get(timeout=seconds + 120)
        injector.join()
        commands.put(committed)
        _, good, missing, extra, delays = results.get(timeout=180)
    finally:
        readers.join(timeout=60)
        if readers.is_alive():
            readers.kill()
    p99, anchor_p99 = loaded.percentile(99), anchor.percentile(99)
    total = sum(len(events) for events in committed.values())
    return [{
        "measure": f"live streams: GET /api/v1/me at a fixed {ME_RATE:.0f} req/s while {streams:,} streams are open "
                   f"({COMMUNITIES} communities) and {EVENT_RATE:.0f} events/s flow to them",
        "unit": "ms p99", "ours": p99,
        "anchors": {"the same /me schedule with no stream open": anchor_p99},
        "extra": {"worker class": worker_class(), "gateway workers": 2, "p50 ms": round(loaded.percentile(50), 1),
                  "anchor p50 ms": round(anchor.percentile(50), 1), "streams opened in s": round(open_seconds, 1),
                  "events": total, "events/s achieved": round(total / inject_seconds, 1),
                  "streams with every event of their community, once, and no other": f"{good}/{streams}",
                  "events missing": missing, "events extra": extra,
                  "delivery p50 ms": round(_percentile(delays, 50), 1),
                  "delivery p99 ms": round(_percentile(delays, 99), 1),
                  "RSS MB per worker": rss, "errors": loaded.errors + anchor.errors},
        "targets": [{"what": f"p99 < {TARGET_P99_MS:.0f} ms with the streams open", "met": p99 < TARGET_P99_MS},
                    {"what": "every stream got every event of its community", "met": good == streams}],
    }]
