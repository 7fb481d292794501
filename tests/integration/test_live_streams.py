"""The gateway's live streams at scale (issue 22, decision 17), in one process on SQLite: the per-caller
cap across the gateway's processes (429 ``too_many_streams``), the process's capacity (503
``live_streams_full``), the shared poller's handover from a stream's backlog to the live rows (no
gap, no duplicate), slow readers closed, stream tickets through the hub, what ``/readyz`` says, and
the gunicorn settings that put the gateway (only) on gevent. The streams of hundreds of readers on
the local platform: ``tests/e2e/test_live_streams_at_scale.py``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
import threading
import time

import pytest

from gateway import live
from gateway.app import create_app, load_settings
from gateway.store import GatewayStore, live_streams
from services.kernel.db import write_transaction
from services.kernel.events import StoredEvent, to_micros, utc_now
from services.kernel.model import Principal
from tests.conftest import TEST_SECRET
from tests.support.platform import ROOT, procfile
from tests.support.projects import Person

NOWHERE = "http://127.0.0.1:9"  # the services are not needed by the live stream


def gateway(tmp_path, **env):
    environ = {"COCREATE_JWT_SECRET": TEST_SECRET, "COCREATE_DATA_DIR": str(tmp_path / "gateway"),
               "GATEWAY_PROJECTS_URL": NOWHERE, "GATEWAY_VOLUNTEERS_URL": NOWHERE, "GATEWAY_FEEDBACK_URL": NOWHERE,
               "GATEWAY_LIVE_POLL_SECONDS": "0.05", **env}
    app = create_app(load_settings(environ=environ))
    return app


@pytest.fixture
def app(tmp_path):
    app = gateway(tmp_path)
    yield app
    app.extensions["cocreate.live_hub"].stop()


def feed(store: GatewayStore, community: str, n: int, event_type: str = "ProjectProposed", data: dict | None = None,
         stream: str | None = None) -> None:
    """One event in the gateway's feed, as the feed worker writes it."""
    with write_transaction(store.engine) as connection:
        feed_in(store, connection, community, n, event_type, data, stream)


def feed_in(store: GatewayStore, connection, community: str, n: int, event_type: str = "ProjectProposed",
            data: dict | None = None, stream: str | None = None) -> None:
    event = StoredEvent(event_id=f"{community}-e{n}", event_type=event_type, schema_version=1,
                        stream_id=stream or f"project-{community}-{n}", version=1, position=n,
                        occurred_at=dt.datetime.now(dt.timezone.utc),
                        data=data or {"project_id": f"{community}-{n}", "community_id": community, "title": f"项目{n}"},
                        metadata={})
    store.add_feed_event(connection, event)


class Reader:
    """A stream through Flask's test client, read chunk by chunk (the generator runs in this thread,
    the hub in its own)."""

    def __init__(self, app, query: str = "", headers=None) -> None:
        self.response = app.test_client().get("/api/v1/live" + query, headers=headers or {}, buffered=False)
        self.status = self.response.status_code
        self.chunks = self.response.iter_encoded() if self.status == 200 else iter(())
        self.text = ""

    def json(self) -> dict:
        return self.response.get_json()

    def until(self, needle: str, timeout: float = 10.0) -> str:
        """Read until ``needle`` has come (each chunk is one write of the stream)."""
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert time.monotonic() < deadline, f"{needle!r} did not come: {self.text[-500:]!r}"
            self.text += next(self.chunks).decode()
        return self.text

    def ids(self) -> list[int]:
        return [int(line[4:]) for line in self.text.splitlines() if line.startswith("id: ")]

    def close(self) -> None:
        self.response.close()


def resident(community: str, n: int = 0) -> Person:
    return Person(f"{community}-r{n}", f"居民{n}", ("resident",), community)


def principal(person: Person) -> Principal:
    """The caller as the gateway sees a verified token (the hub's own tests open streams directly)."""
    return Principal(person.person_id, person.name, frozenset(person.roles), person.community)


# -- caps -----------------------------------------------------------------------------------------

def test_a_caller_holds_at_most_the_cap_counted_in_the_database_tickets_included(tmp_path):
    app = gateway(tmp_path, GATEWAY_LIVE_STREAMS_PER_CALLER="2")
    store, hub = app.extensions["cocreate.gateway_store"], app.extensions["cocreate.live_hub"]
    someone, neighbour = resident("capped"), resident("capped", 1)
    try:
        first, second = Reader(app, headers=someone.headers), Reader(app, headers=someone.headers)
        assert (first.status, second.status) == (200, 200)
        assert store.open_streams(someone.person_id) == 2
        third = Reader(app, headers=someone.headers)
        assert third.status == 429 and third.response.headers["Retry-After"] == str(live.CALLER_RETRY_SECONDS)
        body = third.json()
        assert body["errors"]["reason"] == "too_many_streams" and body["errors"]["limit"] == 2
        assert body["message"] == "您同时打开的实时动态页面太多，请关闭一些后再试"
        english = Reader(app, headers={**someone.headers, "Accept-Language": "en"}).json()
        assert english["message"].startswith("you have 2 live streams open already")
        # A stream ticket counts for its holder; someone else is not affected.
        ticket = app.test_client().post("/api/v1/live/tickets", json={}, headers=someone.headers).get_json()["ticket"]
        by_ticket = Reader(app, f"?ticket={ticket}")
        assert by_ticket.status == 429 and by_ticket.json()["errors"]["reason"] == "too_many_streams"
        other = Reader(app, headers=neighbour.headers)
        assert other.status == 200, other.json()
        # A stream that ends gives its place back (read or not: its response is closed).
        first.close()
        assert store.open_streams(someone.person_id) == 1
        again = Reader(app, headers=someone.headers)
        assert again.status == 200
        # Rows of a process that died (not seen for a while) do not count, and are pruned.
        with write_transaction(store.engine) as connection:
            connection.execute(live_streams.update().values(seen_us=to_micros(utc_now() - dt.timedelta(minutes=5))))
        assert store.open_streams(someone.person_id) == 0
        more = [Reader(app, headers=someone.headers) for _ in range(2)]
        assert [r.status for r in more] == [200, 200]
        assert store.touch_streams(set(), 30.0) == 3  # the stale ones (second, again, other) go
        for reader in (second, other, again, *more):
            reader.close()
        assert store.open_streams() == 0 and hub.open_streams == 0
    finally:
        hub.stop()


def test_a_full_process_answers_503_and_stays_ready(tmp_path):
    app = gateway(tmp_path, GATEWAY_LIVE_MAX_STREAMS_PER_PROCESS="2", GATEWAY_LIVE_STREAMS_PER_CALLER="0")
    hub = app.extensions["cocreate.live_hub"]
    readers = [Reader(app, headers=resident("full", i).headers) for i in range(2)]
    try:
        assert [r.status for r in readers] == [200, 200] and hub.open_streams == 2
        refused = Reader(app, headers=resident("full", 9).headers)
        assert refused.status == 503 and refused.response.headers["Retry-After"] == str(live.FULL_RETRY_SECONDS)
        assert refused.json()["errors"]["reason"] == "live_streams_full"
        # Still ready: it answers every other request; the 503 sends new streams to another replica.
        ready = app.test_client().get("/readyz").get_json()
        assert ready["checks"]["live"] == "ok" and ready["live"]["full"] is True and ready["live"]["streams"] == 2
        text = app.test_client().get("/metrics").get_data(as_text=True)
        assert "cocreate_gateway_live_streams " in text and "cocreate_gateway_live_stream_capacity " in text
        readers[0].close()
        assert Reader(app, headers=resident("full", 9).headers).status == 200
    finally:
        for reader in readers:
            reader.close()
        hub.stop()


def test_the_process_capacity_leaves_room_for_other_requests(monkeypatch):
    monkeypatch.setattr(live, "gevent_patched", lambda: True)
    assert live.process_capacity(1000, {"GUNICORN_WORKER_CONNECTIONS": "1200"}) == 1000
    assert live.process_capacity(1000, {"GUNICORN_WORKER_CONNECTIONS": "1000"}) == 900
    assert live.process_capacity(1000, {"GUNICORN_WORKER_CONNECTIONS": "100"}) == 50
    monkeypatch.setattr(live, "gevent_patched", lambda: False)
    assert live.process_capacity(1000, {"GUNICORN_THREADS": "16"}) == 8  # a thread each: half of them
    assert live.process_capacity(1000, {}) == 1000


# -- the shared poller ----------------------------------------------------------------------------

def test_the_handover_from_backlog_to_hub_has_no_gap_and_no_duplicate(tmp_path):
    """The stream subscribes first, then reads its backlog from the database: rows the hub queued
    meanwhile that the backlog already sent are dropped by id, and everything later comes once."""
    store = GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    hub = live.LiveHub(store, capacity=10, per_caller=5, queue_events=100, poll_seconds=0.05)
    reader = resident("hand")
    try:
        for n in range(1, 6):
            feed(store, "hand", n)
        feed(store, "other", 99)
        stream = hub.open(principal(reader), "hand")
        assert hub.cursor == 6  # read after the subscription
        for n in range(6, 8):  # committed before the stream reads its backlog: queued by the hub too
            feed(store, "hand", n)
        deadline = time.monotonic() + 10
        while hub.cursor < 8:
            assert time.monotonic() < deadline, "the hub did not read the new rows"
            time.sleep(0.02)
        events = live.event_stream(stream, store, after=2, heartbeat_seconds=0.2, max_seconds=30)
        text = ""
        while ": caught-up" not in text:
            text += next(events)
        assert ": caught-up 8\n" in text  # the backlog: rows 3, 4, 5, 7, 8 (6 is another community's)
        feed(store, "hand", 8)
        while "hand-8" not in text:
            text += next(events)
        ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
        assert ids == [3, 4, 5, 7, 8, 9] and "other-99" not in text
        events.close()  # the client went away: the stream gives everything back
        assert hub.open_streams == 0 and store.open_streams() == 0
    finally:
        hub.stop()


def test_the_hub_does_not_pass_a_row_committed_late_with_a_lower_id(tmp_path):
    """On PostgreSQL a row may become visible after one with a higher id (two writers' transactions
    overlapping): the hub waits for the missing id (a while) before its cursor passes it."""
    from gateway.store import feed_events

    store = GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    hub = live.LiveHub(store, capacity=10, per_caller=0, queue_events=100, poll_seconds=0.02, gap_wait_seconds=1.0)

    def row(row_id: int) -> None:
        with write_transaction(store.engine) as connection:
            connection.execute(feed_events.insert().values(
                id=row_id, event_id=f"gap-{row_id}", community_id="gap", stream_id=f"project-gap-{row_id}",
                event_type="ProjectProposed", envelope=json.dumps({
                    "event_id": f"gap-{row_id}", "event_type": "ProjectProposed", "stream_id": f"project-gap-{row_id}",
                    "data": {"community_id": "gap"}, "metadata": {}}), received_us=to_micros(utc_now())))

    def delivered(stream, until: int, timeout: float = 10.0) -> list[int]:
        got, deadline = [], time.monotonic() + timeout
        while not got or got[-1] < until:
            assert time.monotonic() < deadline, f"only {got} came"
            got += [r.id for r in stream.subscriber.take(0.1)]
        return got

    row(1)
    stream = hub.open(principal(resident("gap")), "gap")
    try:
        row(3)  # 2 is "still in a transaction"
        time.sleep(0.3)
        assert stream.subscriber.take(0) == [] and hub.cursor == 1
        row(2)
        assert delivered(stream, 3) == [2, 3]
        row(5)  # 4 never comes (a rolled-back insert): passed after the wait
        began = time.monotonic()
        assert delivered(stream, 5) == [5] and time.monotonic() - began >= 0.9
    finally:
        stream.release()
        hub.stop()


def test_the_cap_holds_when_one_caller_opens_many_streams_at_once(database_url):
    store = GatewayStore(database_url)
    store.create_schema()
    outcomes: list = []
    racers = [threading.Thread(target=lambda i=i: outcomes.append(store.open_stream(f"s{i}", "racer", "p1", 2)))
              for i in range(12)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(outcome is None for outcome in outcomes) == [False] * 10 + [True] * 2
    assert store.open_streams("racer") == 2
    store.engine.dispose()


def test_on_postgresql_a_row_committed_after_a_higher_id_still_comes_in_order(postgres_url):
    """Two writers of the feed (the feed worker, a process flushing summaries) overlap: the one with
    the lower id commits last. The hub's cursor waits for it instead of passing it for good."""
    store = GatewayStore(postgres_url)
    store.create_schema()
    hub = live.LiveHub(store, capacity=10, per_caller=0, queue_events=100, poll_seconds=0.05, gap_wait_seconds=5.0)
    stream = hub.open(principal(resident("pg")), "pg")
    try:
        slow = store.engine.connect()
        transaction = slow.begin()
        feed_in(store, slow, "pg", 1)  # its id is taken; the row is not visible yet
        feed(store, "pg", 2)
        time.sleep(0.5)
        assert stream.subscriber.take(0) == []
        transaction.commit()
        slow.close()
        got, deadline = [], time.monotonic() + 10
        while len(got) < 2:
            assert time.monotonic() < deadline, got
            got += [row.id for row in stream.subscriber.take(0.1)]
        assert got == sorted(got) and len(got) == 2
    finally:
        stream.release()
        hub.stop()
        store.engine.dispose()


def test_one_query_for_every_stream_of_the_process(tmp_path, monkeypatch):
    store = GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    hub = live.LiveHub(store, capacity=100, per_caller=0, queue_events=100, poll_seconds=0.1)
    reads = []
    real = store.feed_after
    monkeypatch.setattr(store, "feed_after", lambda community, after, limit=100: reads.append(community) or
                        real(community, after, limit))
    streams = [hub.open(principal(resident(f"c{i % 3}", i)), f"c{i % 3}") for i in range(30)]
    streams.append(hub.open(principal(Person("admin-1", "管理员", ("admin",), None)), None))  # every community
    try:
        time.sleep(1.0)
        assert reads and set(reads) == {None}  # the hub's: all communities at once, never per stream
        assert len(reads) <= 12
        feed(store, "c1", 1)
        deadline = time.monotonic() + 10
        while not all(s.subscriber._rows for s in streams if s.community in ("c1", None)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert not any(s.subscriber._rows for s in streams if s.community in ("c0", "c2"))
    finally:
        for stream in streams:
            stream.release()
        hub.stop()


def test_a_slow_reader_is_closed_with_a_log_line_not_left_to_grow(tmp_path, caplog):
    store = GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    hub = live.LiveHub(store, capacity=10, per_caller=5, queue_events=3, poll_seconds=0.05)
    slow, keeping_up = resident("slow"), resident("slow", 1)
    stream = hub.open(principal(slow), "slow")
    other = hub.open(principal(keeping_up), "slow")
    events = live.event_stream(stream, store, after=0, heartbeat_seconds=0.2, max_seconds=30)
    try:
        while ": caught-up" not in next(events):
            pass
        before = live.SLOW_READERS._value.get()
        with caplog.at_level(logging.WARNING, logger="gateway.live"):
            for n in range(1, 6):  # more than its queue holds, while it reads nothing (the other one reads)
                feed(store, "slow", n)
                deadline = time.monotonic() + 10
                while hub.cursor < n:
                    assert time.monotonic() < deadline, "the hub did not read the new row"
                    time.sleep(0.02)
                # the hub moves its cursor, then hands the rows on: wait for the row itself
                assert [row.id for row in other.subscriber.take(10)] == [n]
        assert stream.closed == "slow reader" and len(stream.subscriber._rows) == 0
        assert live.SLOW_READERS._value.get() == before + 1
        line = next(r for r in caplog.records if "fell more than 3 events behind" in r.getMessage())
        assert line.person_id == slow.person_id and line.community_id == "slow"
        # Its next read ends the stream (the client reconnects with Last-Event-ID) and frees its place.
        assert list(events) == []
        assert hub.open_streams == 1 and store.open_streams() == 1
        assert other.closed is None  # the other reader, keeping up, is not touched
    finally:
        other.release()
        hub.stop()


def test_the_hub_stops_when_idle_and_starts_again_with_the_next_stream(tmp_path):
    store = GatewayStore(f"sqlite:///{tmp_path}/gateway.db")
    store.create_schema()
    hub = live.LiveHub(store, capacity=10, per_caller=5, queue_events=10, poll_seconds=0.02, idle_stop_seconds=0.2)
    stream = hub.open(principal(resident("idle")), "idle")
    assert hub.describe()["hub"] == "polling"
    stream.release()
    deadline = time.monotonic() + 10
    while hub.describe()["hub"] != "idle":
        assert time.monotonic() < deadline, "the hub kept polling without streams"
        time.sleep(0.02)
    feed(store, "idle", 1)
    again = hub.open(principal(resident("idle")), "idle")
    assert hub.describe()["hub"] == "polling" and hub.cursor == 1
    again.release()
    hub.stop()


# -- tickets, privacy and readiness through the app ------------------------------------------------

def test_ticket_streams_get_live_rows_from_the_hub_each_as_its_reader_may_see_them(app):
    store = app.extensions["cocreate.gateway_store"]
    client = app.test_client()
    person, cadre = resident("tk"), Person("tk-cadre", "社区干部", ("cadre",), "tk")
    admin = Person("admin-1", "管理员", ("admin",), None)

    def ticket(who, body=None):
        return client.post("/api/v1/live/tickets", json=body or {}, headers=who.headers).get_json()["ticket"]

    readers = {"resident": Reader(app, f"?ticket={ticket(person)}&named=false"),
               "cadre": Reader(app, f"?ticket={ticket(cadre)}"),
               "admin, every community": Reader(app, f"?ticket={ticket(admin)}")}
    try:
        for reader in readers.values():
            assert reader.status == 200
            reader.until(": caught-up")
        feed(store, "tk", 1, "RatingSubmitted", {"rating_id": "r1", "subject_id": "cadre-wang", "community_id": "tk",
                                                  "subject_person_id": "p-wang", "person_id": "tk-r5", "level": 1},
             stream="rating-r1")
        feed(store, "tk", 2)
        feed(store, "elsewhere", 3)
        readers["resident"].until("tk-2")
        readers["cadre"].until("tk-2")
        readers["admin, every community"].until("elsewhere-3")
        resident_text, cadre_text = readers["resident"].text, readers["cadre"].text
        assert "RatingSubmitted" not in resident_text and "event:" not in resident_text  # unnamed; no rating
        assert "event: RatingSubmitted" in cadre_text and "event: ProjectProposed" in cadre_text
        assert "elsewhere" not in resident_text + cadre_text
        # (a RatingsChanged summary may follow at the end of the minute)
        assert readers["resident"].ids()[0] == 2 and 1 not in readers["resident"].ids()
        assert readers["cadre"].ids()[:2] == [1, 2]
    finally:
        for reader in readers.values():
            reader.close()


def test_readiness_says_when_the_hub_cannot_read_the_feed(app, monkeypatch):
    store, hub = app.extensions["cocreate.gateway_store"], app.extensions["cocreate.live_hub"]
    hub.stale_poll_seconds = 0.3
    reader = Reader(app, headers=resident("rd").headers)
    try:
        reader.until(": caught-up")
        assert app.test_client().get("/readyz").get_json()["checks"]["live"] == "ok"

        def broken(*_args, **_kwargs):
            raise RuntimeError("the database is unreachable")

        monkeypatch.setattr(store, "feed_after", broken)
        time.sleep(0.8)
        answer = app.test_client().get("/readyz")
        assert answer.status_code == 503
        assert answer.get_json()["checks"]["live"].startswith("failing: RuntimeError: the live hub has not read the feed")
        assert "the database is unreachable" in answer.get_json()["checks"]["live"]
        monkeypatch.undo()
        deadline = time.monotonic() + 10
        while app.test_client().get("/readyz").get_json()["checks"]["live"] != "ok":
            assert time.monotonic() < deadline, "the hub did not recover"
            time.sleep(0.05)
    finally:
        reader.close()


# -- gunicorn: gevent for the gateway, and nothing of the app in the master -----------------------

def test_the_gateway_alone_runs_on_gevent():
    lines = procfile()
    assert "GUNICORN_WORKER_CLASS=${GATEWAY_WORKER_CLASS:-gevent}" in lines["gateway"]
    assert "GUNICORN_WORKER_CONNECTIONS=" in lines["gateway"]
    assert not [name for name, line in lines.items() if name != "gateway" and "GUNICORN_WORKER_CLASS" in line]


def test_the_gunicorn_settings_load_nothing_of_an_app_in_the_master():
    """gevent's worker monkey-patches when it starts: an app imported by the master before the fork
    would run with unpatched sockets, locks and threads."""
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": "/tmp/cocreate-test-unused"}
    code = ("import sys; import services.kernel.gunicorn_conf as c; "
            "assert c.preload_app is False and c.worker_class == 'services.kernel.serving.SyncWorker', c.worker_class; "
            "loaded = [m for m in ('flask', 'gateway', 'sqlalchemy', 'urllib3', 'gevent', 'prometheus_client') "
            "if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=ROOT, env=env)
    gevent = subprocess.run([sys.executable, "-c", "import services.kernel.gunicorn_conf as c; "
                             "print(c.worker_class, c.worker_connections)"], cwd=ROOT,
                            env={**env, "GUNICORN_WORKER_CLASS": "gevent", "GUNICORN_WORKER_CONNECTIONS": "1200"},
                            capture_output=True, text=True, timeout=60, check=True)
    assert gevent.stdout.split() == ["gevent", "1200"]


# -- Kubernetes: the autoscaler counts streams ----------------------------------------------------

def test_the_gateway_autoscales_on_its_open_streams_as_the_adapter_rule_serves_them(monkeypatch):
    import re

    import yaml

    k8s = ROOT / "deploy" / "k8s"
    [hpa] = [o for o in yaml.safe_load_all((k8s / "overlays" / "production" / "autoscaling.yaml").read_text())
             if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "gateway"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"  # CPU still counts
    pods = metrics["Pods"]["pods"]
    assert pods["metric"]["name"] == "cocreate_gateway_live_streams" == live.STREAMS_OPEN._name
    [config] = [o for o in yaml.safe_load_all((k8s / "base" / "gateway.yaml").read_text())
                if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "gateway-config"]
    env = config["data"]
    assert env["GUNICORN_WORKER_CLASS"] == "gevent"
    per_worker = int(env["GATEWAY_LIVE_MAX_STREAMS_PER_PROCESS"])
    monkeypatch.setattr(live, "gevent_patched", lambda: True)
    assert live.process_capacity(per_worker, env) == per_worker  # its connections leave room for other requests
    per_pod = int(env["GUNICORN_WORKERS"]) * per_worker
    assert 0 < int(pods["target"]["averageValue"]) < per_pod  # scale out before the pods are full
    # The rule prometheus-adapter needs (docs/operations.md) serves exactly that metric, per pod.
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = page.split("### Live streams", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    [rule] = yaml.safe_load(block)["rules"]["custom"]
    assert rule["name"]["as"] == pods["metric"]["name"] and pods["metric"]["name"] in rule["seriesQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
