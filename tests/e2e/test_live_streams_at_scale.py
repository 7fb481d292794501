"""Hundreds of live streams open on the local platform (issue 22): the gateway still answers
``/healthz`` and a composed read at once, an event written through the real path (gateway →
projects → relay → Kafka → feed worker → the gateway's feed) reaches every stream of its community
and no other, one caller cannot hold more than the cap, and streams whose clients went away give
their places back.

The gateway runs as ``make run`` runs it (the Procfile's line: gunicorn's gevent worker, two
workers); the streams are 300 residents' (100 in each of three communities) and an admin's reading
every community, all from one asyncio loop (``tests/support/live_streams.py``), not a thread each."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import urllib.request

import pytest

from tests.support.live_streams import LiveReader, close_all, open_all, wait_until
from tests.support.platform import LocalPlatform
from tests.support.projects import Community, HttpClient, Person, ProjectsDriver

pytestmark = pytest.mark.broker
PROCESSES = ("projects", "volunteers", "feedback", "projects-relay", "volunteers-relay", "feedback-relay", "gateway",
             "gateway-feed")
COMMUNITIES = ("lsa", "lsb", "lsc")
PER_COMMUNITY = 100
CAP = 5  # GATEWAY_LIVE_STREAMS_PER_CALLER's default


def timed_get(url: str, headers: dict | None = None) -> tuple[int, float]:
    began = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as reply:
        reply.read()
        return reply.status, time.monotonic() - began


def open_streams(gateway_url: str) -> float:
    """``cocreate_gateway_live_streams`` as the gateway's /metrics sums it over its workers."""
    with urllib.request.urlopen(gateway_url + "/metrics", timeout=30) as reply:
        found = re.search(r"^cocreate_gateway_live_streams (\S+)$", reply.read().decode(), re.M)
    return float(found.group(1)) if found else 0.0


def test_hundreds_of_open_streams_leave_the_gateway_answering(tmp_path):
    with LocalPlatform(tmp_path, only=PROCESSES) as platform:
        asyncio.run(scenario(platform))


async def scenario(platform: LocalPlatform) -> None:
    url, port = platform.url("gateway"), platform.ports["gateway"]
    api = ProjectsDriver(HttpClient(url + "/api/v1"))
    communities = {c: await asyncio.to_thread(Community, api, c, representatives=0, residents=1, fund_fen=0)
                   for c in COMMUNITIES}
    readers = [LiveReader("127.0.0.1", port, headers=Person(f"{c}-viewer{i}", f"居民{i}", ("resident",), c).headers,
                          label=c) for c in COMMUNITIES for i in range(PER_COMMUNITY)]
    everyone = LiveReader("127.0.0.1", port, headers=Person("ls-admin", "管理员", ("admin",), None).headers, label="*")
    capped = [LiveReader("127.0.0.1", port, headers=Person("lsa-busy", "居民", ("resident",), "lsa").headers)
              for _ in range(CAP + 1)]
    try:
        await open_all([*readers, everyone])
        assert [r.status for r in readers + [everyone]] == [200] * (len(readers) + 1)
        await wait_until(lambda: open_streams(url) == len(readers) + 1, 30, "the gauge to count every stream")

        # With 301 streams open, the gateway answers at once: its liveness probe and a composed read.
        me = communities["lsa"].residents[0].headers
        took = {"/healthz": [], "/api/v1/me": []}
        for _ in range(5):
            for path in took:
                status, seconds = await asyncio.to_thread(timed_get, url + path, me if path != "/healthz" else None)
                assert status == 200
                took[path].append(seconds)
        print("with", len(readers) + 1, "streams open:", {path: [round(s, 3) for s in seconds] for path, seconds in took.items()})
        for path, seconds in took.items():
            assert statistics.median(seconds) < 0.5 and max(seconds) < 2.0, (path, seconds)
        assert (await asyncio.to_thread(timed_get, url + "/readyz"))[0] == 200

        # One caller holds at most the cap, across the gateway's two workers: one more is a 429.
        for reader in capped[:CAP]:
            assert await reader.open() == 200
        assert await capped[CAP].open() == 429
        assert capped[CAP].error()["errors"]["reason"] == "too_many_streams"
        assert capped[CAP].response_headers["retry-after"].isdigit()

        # An event written through the real path reaches every stream of its community, and no other.
        projects = {}
        for c in COMMUNITIES:
            project = await asyncio.to_thread(communities[c].propose, title=f"{c} 加装电梯")
            projects[c] = project["project_id"]
            mine = [r for r in readers if r.label == c] + [everyone]
            await wait_until(lambda: all(r.has(projects[c]) for r in mine), 90, f"{c}'s proposal on its streams")
        for reader in readers:
            got = sorted(c for c, pid in projects.items() if reader.has(pid))
            assert got == [reader.label], (reader.label, got)
    finally:
        await close_all([*readers, everyone, *capped])
    # Streams whose clients went away give their places back (found at their next keep-alive).
    await wait_until(lambda: open_streams(url) == 0, 30, "the streams of closed connections to end")
