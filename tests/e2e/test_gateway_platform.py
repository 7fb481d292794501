"""The whole platform as `make run` starts it (broker, services, relays, consumers, gateway, feed),
driven only through the gateway with the Python client: one project from proposal to 共享, and its
effects in the other services — the contributor's volunteer card and the responsible unit's
satisfaction figures — plus the live stream of the community's events, resumed by Last-Event-ID."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from cocreate_client import ApiError, Client
from gateway.tokens import hash_password
from services.kernel import privacy
from services.kernel.personal import KeyStore, Sealer
from tests.support.run_platform import ROOT, get

pytestmark = pytest.mark.broker
C = "haixin"
UNIT = {"unit_id": "haixin-jsb", "name": "海新街道建设办"}


# What residents write that is personal (issue 25): stored and published sealed, shown opened.
NAMES = dict(zip((f"res{i}" for i in range(8)), ("林晓燕", "黄志明", "陈美玲", "吴建国", "郑丽华", "王海涛",
                                                  "蔡雅婷", "许文彬")))
PHONE, OPINION, COMMENT, NOTE = "13912345678", "建议把警务室设在路口旁边", "晚上巡逻太少了", "砌墙两天"


def users() -> list[dict]:
    hashed = hash_password("pw", iterations=5_000)
    people = [("admin", ["admin"], None), ("cadre", ["cadre"], C), ("grid", ["grid_worker"], C)]
    people += [(f"rep{i}", ["representative", "resident"], C) for i in range(5)]
    people += [(f"res{i}", ["resident"], C) for i in range(8)]
    return [{"username": name, "password_hash": hashed, "person_id": name, "name": NAMES.get(name, name),
             "roles": roles, "community": community} for name, roles, community in people]


def wait_until(condition, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def live_events(url: str, token: str, last_event_id: int, count: int, quiet: float = 3.0) -> list[dict]:
    """Events of the stream after ``last_event_id``: ``count`` of them, or all that came before
    the stream stayed quiet for ``quiet`` seconds."""
    request = urllib.request.Request(url + "/api/v1/live", headers={
        "Authorization": f"Bearer {token}", "Last-Event-ID": str(last_event_id), "Accept": "text/event-stream"})
    events, current = [], {}
    try:
        with urllib.request.urlopen(request, timeout=quiet) as stream:
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if not line:
                    if "data" in current:
                        events.append(current)
                        if len(events) >= count:
                            return events
                    current = {}
                elif not line.startswith(":") and ":" in line:
                    key, _, value = line.partition(": ")
                    current[key] = value
    except TimeoutError:
        pass
    return events


def test_one_project_through_the_gateway_reaches_every_service(platform):
    process, ports, log_path = platform
    url = f"http://127.0.0.1:{ports['gateway']}"
    wait_until(lambda: _ready(url) and _ready(f"http://127.0.0.1:{ports['gateway_feed']}"), 120, "the platform")
    # The gateway learns every service's routes from its GET /openapi.json (it may be ready before).
    wait_until(lambda: _catalogue_states(url) == {"projects": "current", "volunteers": "current",
                                                  "feedback": "current"}, 120, "every service's routes")
    users_file = log_path.parent / "var" / "users.json"
    users_file.write_text(json.dumps({"users": users()}), encoding="utf-8")
    u = {entry["username"]: Client(url).login(entry["username"], "pw") for entry in users()}
    cadre, grid, res, reps = u["cadre"], u["grid"], [u[f"res{i}"] for i in range(8)], [u[f"rep{i}"] for i in range(5)]

    u["admin"].post("/communities", {"community_id": C, "name": "海新社区", "district": "海沧区",
                                     "grids": [{"grid_id": "g1", "name": "第一网格"}]})
    cadre.request("PUT", f"/communities/{C}/representatives",
                  {"representatives": [{"person_id": f"rep{i}", "name": f"rep{i}"} for i in range(5)]})
    cadre.post(f"/communities/{C}/fund/credits", {"amount_fen": 5_000_000, "source": "government_allocation",
                                                  "reference": "海财〔2026〕7号"})
    pid = res[0].propose(community_id=C, grid_id="g1", title="社区警务室", category="safety",
                         description="建一间警务室", location="海新路 3 号", estimated_cost_fen=2_000_000,
                         requested_fen=1_500_000)["project_id"]
    for person in res[1:7]:
        project = person.cosign(pid)
    assert project["phase"] == "deliberation"
    res[1].command(pid, "opinions", {"stance": "support", "text": OPINION})
    res[0].post("/cards", {"skills": ["护理"], "phone": PHONE})
    cadre.open_vote(pid, UNIT)
    for rep in reps[:4]:
        rep.ballot(pid, "yes")
    assert cadre.close_vote(pid)["stage"] == "co_build"
    pledge = res[7].pledge(pid, kind="labour", labour_minutes=300)
    grid.deliver(pid, pledge, labour_minutes=270, note=NOTE)
    cadre.command(pid, "spending", {"amount_fen": 1_000_000, "receipt_ref": "FP-1", "description": "材料"})
    cadre.command(pid, "milestones", {"progress": 100, "note": "完工"})
    assert cadre.command(pid, "completion")["stage"] == "co_manage"
    cadre.command(pid, "evaluation/open")
    for person, score in zip(res[:5], (5, 5, 4, 2, 4)):
        person.command(pid, "evaluation/ratings", {"score": score, **({"comment": COMMENT} if score == 2 else {})})
    cadre.command(pid, "evaluation/close")
    assert cadre.command(pid, "results", {"benefits": "居民安全感提升"})["stage"] == "co_share"

    # Labour reached the contributor's card (a card made for them) and ratings reached the unit.
    wait_until(lambda: (res[7].me()["card"] or {}).get("approved_minutes") == 270, what="the labour credit")
    card = res[7].me()["card"]
    assert card["points_balance"] == 270 * 10 // 60
    wait_until(lambda: _unit_ratings(cadre) == 5, what="the unit's ratings")
    unit = cadre.get(f"/subjects/{UNIT['unit_id']}")["figures"]
    assert unit["levels"] == {"5": 2, "4": 2, "3": 0, "2": 1, "1": 0} and unit["satisfaction_rate"] == "0.8000"
    ranking = cadre.ranking(C, kind="unit")  # 5 ratings: listed, but fewer than the minimum of 10
    assert [(e["subject_id"], e["ratings"]) for e in ranking["not_enough_ratings"]] == [(UNIT["unit_id"], 5)]
    overview = cadre.project(pid)
    assert overview["missing"] == [] and overview["project"]["stage"] == "co_share"
    assert overview["volunteer_minutes"]["minutes"] == 270 and overview["satisfaction"]["ratings"] == 5
    dashboard = cadre.dashboard(C, kind="unit")
    assert dashboard["missing"] == [] and dashboard["projects"]["per_stage"]["co_share"] == 1
    assert dashboard["fund"]["spent_fen"] == 1_000_000 and dashboard["follow_ups"]["open"] == 2
    assert dashboard["top_volunteers"]["items"][0]["person_id"] == "res7"

    # The live stream: the community's events, resumable from any id. Staff who are not rated see
    # each rating with its rater; residents never get a rating event, only a subject-level
    # RatingsChanged at most once a minute (on a fixed grid); no phone or check-in code ever.
    wait_until(lambda: _feed_has(url, cadre.token, "ResultsPublished"), what="the feed")
    staff = live_events(url, cadre.token, 0, 100_000)
    ids = [int(e["id"]) for e in staff]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {"ProjectProposed", "ProjectCosigned", "BallotCast", "ResultsPublished", "ContributionDelivered",
            "ProjectLabourCredited", "ProjectRated", "RatingSubmitted", "FollowUpOpened"} <= {e["event"] for e in staff}
    resumed = live_events(url, cadre.token, ids[2], 2)
    assert [int(e["id"]) for e in resumed] == ids[3:5]
    submitted = [json.loads(e["data"]) for e in staff if e["event"] == "RatingSubmitted"]
    assert submitted and all(s["data"]["person_id"] in {f"res{i}" for i in range(5)} for s in submitted)
    resident = live_events(url, res[0].token, 0, 100_000)
    assert {"ProjectProposed", "BallotCast", "ResultsPublished"} <= {e["event"] for e in resident}
    assert not {e["event"] for e in resident} & set(privacy.RATING_EVENTS)
    for event in staff + resident:
        envelope = json.loads(event["data"])
        assert envelope["event_type"] == event["event"]
        assert "phone" not in envelope["data"] and "checkin_code" not in envelope["data"]
    wait_until(lambda: _feed_has(url, res[0].token, "RatingsChanged"), 100, "the subject-level summary")
    changed = [json.loads(e["data"])["data"] for e in live_events(url, res[0].token, 0, 100_000)
               if e["event"] == "RatingsChanged"]
    assert {c["subject_id"] for c in changed} <= {UNIT["unit_id"], f"project-{pid}"}
    assert all(set(c) == {"subject_id", "community_id"} for c in changed)

    # Personal fields: opened for those who may read them (the API, the live stream)...
    assert cadre.project(pid)["project"]["proposer_name"] == NAMES["res0"]
    assert res[0].get("/cards/res0")["phone"] == PHONE and cadre.get("/cards/res0")["phone"] == PHONE
    assert res[1].get("/cards/res0")["phone"] == "139****5678"
    cosigned = {json.loads(e["data"])["data"]["name"] for e in staff if e["event"] == "ProjectCosigned"}
    assert cosigned == {NAMES[f"res{i}"] for i in range(1, 7)}
    # ...and nowhere in clear at rest or in transit: no service database, no topic, not the gateway's feed.
    data_dir, bootstrap = log_path.parent / "var", f"127.0.0.1:{ports['broker']}"
    _no_plaintext_anywhere(data_dir, bootstrap, [PHONE, OPINION, COMMENT, NOTE, *NAMES.values()])

    # A copy of what the platform holds about a resident (JSON, and a ZIP of the same with CSV).
    mine = res[0].get("/me/data")
    assert mine["missing"] == [] and mine["person_id"] == "res0"
    kinds = {(r["event_type"], json.dumps(r["data"], ensure_ascii=False)) for r in mine["projects_records"]}
    assert any(kind == "ProjectProposed" and NAMES["res0"] in data for kind, data in kinds)
    assert any(r["event_type"] == "CardRegistered" and r["data"]["phone"] == PHONE for r in mine["volunteers_records"])
    assert mine["ratings_given"] and mine["erasure"]["erasure"] is None
    copy_text = json.dumps(mine, ensure_ascii=False)
    assert not [name for person, name in NAMES.items() if person != "res0" and name in copy_text]  # nobody else's
    assert "pii1" not in copy_text
    request = urllib.request.Request(f"{url}/api/v1/me/data?format=zip",
                                     headers={"Authorization": f"Bearer {res[0].token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.headers["Content-Type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(reply.read()))
    assert sorted(archive.namelist()) == ["credits.csv", "data.json", "ratings.csv", "records.csv"]
    assert PHONE in archive.read("records.csv").decode("utf-8-sig")
    assert json.loads(archive.read("data.json"))["volunteers_records"] == mine["volunteers_records"]

    # Correction through the gateway: the old phone's key goes, so it reads 已注销 where it was kept.
    assert res[0].request("PATCH", "/cards/res0", {"phone": "13987654321"})["resource"]["phone"] == "13987654321"

    def phones() -> dict[str, str]:
        return {r["event_type"]: r["data"]["phone"] for r in res[0].get("/me/data/volunteers")["records"]
                if "phone" in r["data"]}

    # (a process keeps a key it read for COCREATE_KEYSTORE_CACHE_SECONDS, 5 s: the other workers too)
    wait_until(lambda: phones() == {"CardRegistered": "已注销", "CardCorrected": "13987654321"}, 20,
               f"the old phone unreadable in every worker: {phones()}")

    # Erasure: refused while a follow-up case of the person's bad rating is open (learnt by volunteers
    # from feedback's events)...
    wait_until(lambda: res[3].get("/me/erasure")["obligations"], what="res3's follow-up case, learnt by volunteers")
    res[3].post("/me/erasure", {"reason": "moved_away"})
    with pytest.raises(ApiError) as refused:
        cadre.post("/erasures/res3/confirmation")
    assert (refused.value.status, refused.value.reason) == (409, "obligation_open")
    # ...and confirmed for the contributor: their keys go, for every service and copy at once.
    copy = data_dir.parent / "projects-before-erasure.db"
    with sqlite3.connect(data_dir / "projects.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)
    assert _kept_answers(data_dir, "res7") > 0
    res[7].post("/me/erasure", {"reason": "consent_withdrawn"})
    assert cadre.post("/erasures/res7/confirmation")["resource"]["erasure"] == "erased"
    # (every worker of the volunteers API within COCREATE_KEYSTORE_CACHE_SECONDS)
    wait_until(lambda: cadre.get("/cards/res7")["name"] == "已注销", 20, "res7's name unreadable in every worker")
    card = cadre.get("/cards/res7")
    assert (card["name"], card["approved_minutes"], card["points_balance"]) == ("已注销", 270, 270 * 10 // 60)
    assert cadre.get("/cards/res0")["name"] == NAMES["res0"]
    wait_until(lambda: _kept_answers(data_dir, "res7") == 0, what="the gateway forgetting res7's kept answers")
    assert _kept_answers(data_dir, "res1") > 0
    _unreadable(data_dir, copy, bootstrap, "res7")


def _kept_answers(data_dir: Path, person_id: str) -> int:
    engine = sa.create_engine(f"sqlite:///{data_dir}/gateway.db")
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT count(*) FROM idempotency_keys WHERE caller = :p"),
                                      {"p": person_id}).scalar()
    finally:
        engine.dispose()


def _unreadable(data_dir: Path, copy: Path, bootstrap: str, person_id: str) -> None:
    """Every sealed value of ``person_id`` in a copy of the projects database taken before their
    erasure and on every service's topic reads 已注销: their keys are gone (shredded, by key id)."""
    from tests.support.broker import read_topic

    keys = KeyStore(f"sqlite:///{data_dir}/keys.db", cache_seconds=0)
    with keys.engine.connect() as connection:
        gone = set(connection.execute(sa.text("SELECT kid FROM shredded_keys WHERE person_id = :p AND cause = 'erased'"),
                                      {"p": person_id}).scalars())
    assert gone
    sealer = Sealer(keys)
    with sqlite3.connect(copy) as connection:
        stored = "\n".join(row[0] for row in connection.execute("SELECT data FROM events"))
    published = "\n".join((record.value or b"").decode() for topic in ("projects.events", "volunteers.events")
                          for record in read_topic(bootstrap, topic))
    for where, text in (("the copy", stored), ("the topics", published)):
        theirs = [token for token in re.findall(r"pii1\.k[0-9a-f]{32}\.[A-Za-z0-9_-]+", text)
                  if token.split(".")[1] in gone]
        assert theirs, where
        assert {sealer.open(token) for token in theirs} == {"已注销"}, where
    keys.engine.dispose()


def _no_plaintext_anywhere(data_dir: Path, bootstrap: str, texts: list[str]) -> None:
    """None of ``texts`` in any byte of the services' database files (log, read models, inboxes,
    WAL), in any record of any topic, or in the gateway's live feed: each is stored sealed."""
    from kafka import KafkaConsumer

    from tests.support.broker import read_topic

    # as UTF-8 and as a JSON writer that escapes non-ASCII would write them
    wanted = sorted({form for text in texts for form in (text.encode(), json.dumps(text)[1:-1].encode())})
    files = [path for path in data_dir.rglob("*") if path.is_file() and path.name.split(".db")[0] in
             ("projects", "volunteers", "feedback", "keys") and ".db" in path.name]
    assert {path.name for path in files} >= {"projects.db", "volunteers.db", "feedback.db", "keys.db"}
    for path in files:
        content = path.read_bytes()
        assert not [text for text in wanted if text in content], path
    lister = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        topics = sorted(topic for topic in lister.topics() if not topic.startswith("__"))
    finally:
        lister.close()
    assert {"projects.events", "volunteers.events", "feedback.events"} <= set(topics)
    published = 0
    for topic in topics:
        for record in read_topic(bootstrap, topic):
            published += 1
            assert not [t for t in wanted if t in (record.value or b"")], (topic, record.offset)
    assert published > 50
    engine = sa.create_engine(f"sqlite:///{data_dir}/gateway.db")
    try:
        with engine.connect() as connection:
            feed = [row[0] for row in connection.execute(sa.text("SELECT envelope FROM feed_events"))]
    finally:
        engine.dispose()
    assert feed and not [text for text in wanted if any(text.decode() in envelope for envelope in feed)]


def _catalogue_states(url: str) -> dict[str, str]:
    try:
        _status, body, _ = get(url + "/readyz")
    except OSError:
        return {}
    return {name: entry["state"] for name, entry in json.loads(body).get("catalogue", {}).items()}


def _ready(url: str) -> bool:
    try:
        return get(url + "/readyz")[0] == 200
    except OSError:
        return False


def _unit_ratings(cadre: Client) -> int:
    try:
        return cadre.get(f"/subjects/{UNIT['unit_id']}")["figures"]["ratings"]
    except Exception:
        return 0


def _feed_has(url: str, token: str, event_type: str) -> bool:
    try:
        events = live_events(url, token, 0, 100_000, quiet=2)
    except OSError:
        return False
    return any(e["event"] == event_type for e in events)


def test_make_demo_and_the_command_line_work_against_the_running_platform(platform, tmp_path):
    process, ports, log_path = platform
    url = f"http://127.0.0.1:{ports['gateway']}"
    wait_until(lambda: _ready(url), 120, "the gateway")
    wait_until(lambda: set(_catalogue_states(url).values()) == {"current"}, 120, "every service's routes")
    env = {**os.environ, "COCREATE_URL": url, "COCREATE_USERS_FILE": str(log_path.parent / "var" / "users.json"),
           "COCREATE_TOKEN_FILE": str(tmp_path / "token")}
    demo = subprocess.run([sys.executable, "-m", "cocreate_client.demo", "--json"], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert demo.returncode == 0, demo.stderr[-3000:]
    made = json.loads(demo.stdout)
    per_stage = made["dashboard"]["projects"]["per_stage"]
    assert {stage: per_stage[stage] for stage in ("co_plan", "co_build", "co_manage", "co_share", "rejected")} == {
        "co_plan": 6, "co_build": 1, "co_manage": 1, "co_share": 1, "rejected": 1}
    assert per_stage["co_evaluate"] == 1 and made["dashboard"]["missing"] == []
    assert [name for name, _score in made["ranking"]["ranked"]] == ["陈书记", "林主任"]

    cli = str(Path(sys.executable).with_name("cocreate"))

    def cocreate(*args):
        done = subprocess.run([cli, *args], env=env, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout, done.stderr

    code, out, err = cocreate("login", "res1", "--password", "demo", "--json")
    assert code == 0 and json.loads(out)["person_id"] == "res1", err
    code, out, _ = cocreate("me", "--json")
    me = json.loads(out)
    assert code == 0 and me["card"]["approved_minutes"] == 180 and me["missing"] == []
    code, out, _ = cocreate("projects", "--community", "xinyang", "--stage", "co_share", "--json")
    assert code == 0 and [p["title"] for p in json.loads(out)["items"]] == ["儿童游乐场翻新"]
    code, out, err = cocreate("rate", "chen", "6")
    assert code == 2 and "invalid choice" in err  # argparse refuses a level outside 1-5
    code, out, err = cocreate("call", "POST", "/subjects", '{"subject_id": "x", "kind": "unit", "name": "x", '
                                                         '"community_id": "xinyang"}', "--json")
    assert code == 1 and json.loads(err)["errors"]["reason"] == "role_required"

