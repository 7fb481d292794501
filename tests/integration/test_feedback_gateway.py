"""Issue 19, points 2 and 4, through the gateway (``/api/v1``) in front of the feedback service
served over real HTTP in this process, so that the test moves the service's clock past deadlines
and burst windows (the projects and volunteers services are absent: the dashboard names their
parts missing).

- An upheld appeal excludes a malicious rating *and closes its follow-up case* by an event with the
  reason: the case is not overdue after its deadline, the dashboard's follow-ups, the case
  summary, the list and the overdue gauge do not count it, the sweep leaves it alone, the resident
  sees why. Cases left open by exclusions stored before are closed by the periodic job.
- A burst of top ratings is one incident (a flag) that grows while top ratings keep coming within
  the window and ends after a whole window without one; staff review it once, after it ended.
  Flags stored before incidents read as incidents of their own. The incident's events stay off the
  rated person's live feed.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.feedback.service import DEFINITION
from services.kernel import privacy
from services.kernel.auth import Principal
from services.kernel.db import read_transaction, write_transaction
from services.kernel.events import Metadata, NewEvent, format_time
from services.kernel.eventstore import rebuild
from tests.support.apps import BehindGateway, TickingClock
from tests.support.errors import assert_error
from tests.support.projects import Person

UTC = timezone.utc
C = "g19"
MON = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)  # Monday 2026-10-05 10:00 in China
DEADLINE = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)  # end of the 5th working day after MON, local

CADRE = Person("g19-c1", "社区干部", ("cadre",), C)
CADRE2 = Person("g19-c2", "副书记", ("cadre",), C)
GRID = Person("g19-g1", "网格员", ("grid_worker",), C)
WANG = Person("g19-wang", "王书记", ("cadre", "resident"), C)  # rated, and lives here
RES = [Person(f"g19-r{i}", f"居民{i}", ("resident",), C) for i in range(40)]


class World(BehindGateway):
    """The gateway in front of one feedback service (its clock the test's), both in this process."""

    def __init__(self, tmp_path) -> None:
        super().__init__(DEFINITION, f"sqlite:///{tmp_path}/feedback.db", tmp_path / "gateway", TickingClock(MON))

    # through the gateway
    def call(self, person, method, path, body=None):
        return self.d.call(person, method, path, body)

    def ok(self, person, method, path, body=None, status=200):
        return self.d.ok(person, method, path, body, status)

    def get(self, person, path):
        return self.d.get(person, path)

    def rate(self, person, subject_id, level, **body):
        return self.ok(person, "POST", f"/subjects/{subject_id}/ratings", {"level": level, **body}, 201)

    def register(self, subject_id, kind="cadre", person_id=None):
        body = {"subject_id": subject_id, "kind": kind, "name": subject_id, "community_id": C}
        if kind == "cadre":
            body |= {"person_id": person_id, "unit_id": "jiedao"}
        return self.ok(CADRE, "POST", "/subjects", body, 201)["resource"]

    def refused(self, reply, status, reason=None):
        """Refused as said, and nothing recorded."""
        return assert_error(reply, status, reason)

    # the service's side: its log, its job, its metrics
    def events(self) -> int:
        return self.store.last_position()

    def stream(self, stream_id: str) -> list[str]:
        return [e.event_type for e in self.store.load(stream_id)]

    def job(self) -> str:
        """What ``python -m services.feedback sweep-overdue`` does once."""
        return DEFINITION.commands["sweep-overdue"][1](self.container)

    def gauge(self, name: str) -> float:
        text = self.service.test_client().get("/metrics").get_data(as_text=True)
        found = re.search(rf'^{name}\{{community="{C}"\}} (\S+)$', text, flags=re.M)
        return float(found.group(1)) if found else 0.0

    def stored_rating_id(self, public_id: str) -> str:
        return self.container.resources["rating_ids"].resolve(public_id)

    def append_as_before(self, stream_id: str, *events: tuple[str, dict]) -> None:
        """Events as the service stored them before this change (straight into its log)."""
        version = len(self.store.load(stream_id))
        self.store.append(stream_id, version, [NewEvent(t, d) for t, d in events],
                          metadata=Metadata(actor=CADRE2.person_id))


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    yield world
    world.close()


def principal(person: Person) -> Principal:
    return Principal(person.person_id, person.name, frozenset(person.roles), person.community)


def follow_ups(w: World, person=CADRE) -> dict:
    """The dashboard's follow-ups part (the other services are absent: their parts are missing)."""
    dashboard = w.get(person, f"/communities/{C}/dashboard")
    assert "follow_ups" not in {m["part"] for m in dashboard["missing"]}, dashboard["missing"]
    return dashboard["follow_ups"]


# -- point 2: a malicious rating's case closes with its exclusion -----------------------------------

def test_an_upheld_appeal_closes_the_case_by_an_event_and_it_never_goes_overdue(w):
    w.register("cadre-wang", person_id=WANG.person_id)
    malicious = w.rate(RES[0], "cadre-wang", 1, comment="乱评")["resource"]
    genuine = w.rate(RES[1], "cadre-wang", 2, comment="办事慢")["resource"]
    case_id, other_id = malicious["case_id"], genuine["case_id"]
    assert follow_ups(w) == {"community_id": C, "open": 2, "overdue": 0, "closed": 0}

    w.ok(WANG, "POST", f"/ratings/{malicious['rating_id']}/appeal", {"grounds": "malicious", "statement": "当天未来办事"},
         201)
    decided = w.ok(CADRE2, "POST", f"/ratings/{malicious['rating_id']}/appeal/decision",
                   {"upheld": True, "reason": "监控核实为恶意评价"})
    assert [e["event_type"] for e in decided["recorded"]] == ["AppealDecided", "RatingExcluded",
                                                             "FollowUpClosedByExclusion"]
    closing = decided["recorded"][2]["data"]
    assert (closing["case_id"], closing["reason"], closing["by"], closing["was_overdue"]) == (
        case_id, "rating_excluded", CADRE2.person_id, False)
    assert closing["exclusion"] == {"reason": "appeal upheld (malicious): 监控核实为恶意评价", "via": "appeal"}
    assert "person_id" not in closing  # the resident is not in the case's events

    # The resident sees why the case closed; the rated cadre sees it too, never who rated.
    mine = w.get(RES[0], f"/cases/{case_id}")
    assert (mine["status"], mine["overdue"], mine["outcome"]) == ("closed", False, None)
    assert (mine["closure"]["reason"], mine["closure"]["exclusion"]["via"]) == ("rating_excluded", "appeal")
    assert "恶意" in mine["closure"]["exclusion"]["reason"]
    [rated] = [r for r in w.get(RES[0], "/me/ratings")["items"] if r["rating_id"] == malicious["rating_id"]]
    assert rated["case"]["closure"]["reason"] == "rating_excluded" and rated["excluded"] is not None
    assert w.get(WANG, f"/cases/{case_id}")["person_id"] is None

    # Past the deadline: only the genuine case is overdue, on every read and for the job.
    w.clock.at = DEADLINE + timedelta(hours=1)
    assert w.get(GRID, f"/cases/{case_id}")["overdue"] is False
    assert w.get(GRID, f"/cases/{other_id}")["overdue"] is True
    assert follow_ups(w) == {"community_id": C, "open": 1, "overdue": 1, "closed": 1}
    assert w.get(RES[5], f"/cases/summary?community_id={C}") == {"community_id": C, "open": 1, "overdue": 1,
                                                                 "closed": 1}
    listing = w.get(CADRE, "/cases")
    assert (listing["open"], listing["overdue"]) == (1, 1)
    assert [c["case_id"] for c in w.get(CADRE, "/cases?overdue=true")["items"]] == [other_id]
    assert [c["case_id"] for c in w.get(CADRE, "/cases?status=open")["items"]] == [other_id]
    assert (w.gauge("cocreate_followups_open"), w.gauge("cocreate_followups_overdue")) == (1.0, 1.0)
    assert w.job() == "feedback: 1 follow-up case(s) became overdue"
    assert w.stream(f"case-{case_id}") == ["FollowUpOpened", "FollowUpClosedByExclusion"]
    assert w.stream(f"case-{other_id}") == ["FollowUpOpened", "FollowUpOverdue"]
    assert follow_ups(w)["overdue"] == 1

    # Nothing more to do on it, and the appeal is decided: clear refusals that change nothing.
    before = w.events()
    w.refused(w.call(GRID, "POST", f"/cases/{case_id}/contacts", {"channel": "phone", "note": "回访"}), 409,
              "case_closed")
    w.refused(w.call(RES[0], "POST", f"/cases/{case_id}/confirmation", {"satisfied": True}), 409, "case_closed")
    w.refused(w.call(CADRE2, "POST", f"/ratings/{malicious['rating_id']}/appeal/decision",
                     {"upheld": True, "reason": "再次"}), 409, "no_pending_appeal")
    w.refused(w.call(CADRE, "POST", f"/ratings/{malicious['rating_id']}/appeal",
                     {"grounds": "malicious", "statement": "再次"}), 409, "already_excluded")
    assert w.events() == before

    # Revising the excluded rating opens no new case (it counts for nothing).
    revised = w.ok(RES[0], "POST", "/subjects/cadre-wang/ratings", {"level": 2, "comment": "改评"})
    assert [e["event_type"] for e in revised["recorded"]] == ["RatingRevised"]
    assert follow_ups(w)["open"] == 1


def test_a_burst_excluded_on_review_closes_the_case_a_rating_had_open(w):
    """A rating revised from 1 to 5 may still have its case open; excluded with its burst, the
    case closes too (via ``burst_review``)."""
    w.ok(CADRE, "PATCH", f"/policies/{C}", {"burst_min_ratings": 3, "burst_window_minutes": 10})
    w.register("svc", kind="service")
    first = w.rate(RES[0], "svc", 1)["resource"]
    w.ok(RES[0], "PATCH", f"/ratings/{first['rating_id']}", {"level": 5})
    w.rate(RES[1], "svc", 5)
    opened = w.rate(RES[2], "svc", 5)
    [flag_id] = [e["data"]["flag_id"] for e in opened["recorded"] if e["event_type"] == "BurstIncidentOpened"]
    w.clock.at = MON + timedelta(minutes=11)
    reviewed = w.ok(CADRE, "POST", f"/subjects/svc/flags/{flag_id}/review", {"decision": "exclude", "reason": "刷分"})
    assert [e["event_type"] for e in reviewed["recorded"]] == [
        "BurstReviewed", "RatingExcluded", "FollowUpClosedByExclusion", "RatingExcluded", "RatingExcluded"]
    case = w.get(RES[0], f"/cases/{first['case_id']}")
    assert (case["status"], case["closure"]["exclusion"]["via"]) == ("closed", "burst_review")
    assert follow_ups(w) == {"community_id": C, "open": 0, "overdue": 0, "closed": 1}


def test_cases_left_open_by_exclusions_stored_before_are_closed_by_the_periodic_job(w):
    """Before this change an upheld appeal left the case open. Such cases still read as open (and,
    past the deadline, overdue) until the periodic job's first run closes them, each by an event
    with the exclusion's reason; later runs find none."""
    w.register("cadre-wang", person_id=WANG.person_id)
    old = w.rate(RES[0], "cadre-wang", 1)["resource"]
    stored = w.stored_rating_id(old["rating_id"])
    w.append_as_before(f"rating-{stored}", ("RatingExcluded", {
        "rating_id": stored, "subject_id": "cadre-wang", "subject_kind": "cadre", "community_id": C,
        "period": "2026-10", "level": 1, "reason": "appeal upheld (malicious): 旧的裁决", "via": "appeal",
        "by": CADRE2.person_id}))
    w.clock.at = DEADLINE + timedelta(hours=1)
    assert w.get(CADRE, f"/ratings/{old['rating_id']}")["excluded"]["reason"] == "appeal upheld (malicious): 旧的裁决"
    assert w.get(CADRE, f"/cases/{old['case_id']}")["status"] == "open"  # as stored
    assert follow_ups(w) == {"community_id": C, "open": 1, "overdue": 1, "closed": 0}

    assert w.job() == "feedback: 0 follow-up case(s) became overdue; 1 case(s) of excluded ratings closed"
    assert w.stream(f"case-{old['case_id']}") == ["FollowUpOpened", "FollowUpClosedByExclusion"]
    case = w.get(RES[0], f"/cases/{old['case_id']}")
    assert (case["status"], case["overdue"], case["closure"]["was_overdue"]) == ("closed", False, True)
    assert case["closure"]["exclusion"] == {"reason": "appeal upheld (malicious): 旧的裁决", "via": "appeal"}
    assert follow_ups(w) == {"community_id": C, "open": 0, "overdue": 0, "closed": 1}
    before = w.events()
    assert w.job() == "feedback: 0 follow-up case(s) became overdue"
    assert w.events() == before


# -- point 4: one burst, one incident ---------------------------------------------------------------

def burst_events(reply: dict) -> list[tuple[str, int]]:
    return [(e["event_type"], e["data"]["count"]) for e in reply["recorded"] if e["event_type"].startswith("Burst")]


def test_twenty_top_ratings_in_a_minute_are_one_incident_reviewed_once(w):
    w.register("cadre-wang", person_id=WANG.person_id)  # default policy: 10 within 60 minutes
    seen = []
    for i in range(20):  # 20 top ratings in a minute
        w.clock.at = MON + timedelta(seconds=3 * i)
        seen += [(i, *event) for event in burst_events(w.rate(RES[i], "cadre-wang", 5))]
    assert seen == [(9, "BurstIncidentOpened", 10)] + [(i, "BurstIncidentGrew", i + 1) for i in range(10, 20)]
    [flag] = w.get(CADRE, "/subjects/cadre-wang/flags")["flags"]
    assert (flag["count"], len(set(flag["rating_ids"])), flag["status"], flag["ongoing"]) == (20, 20, "open", True)
    assert w.get(CADRE, "/subjects/cadre-wang")["open_flags"] == 1

    # More top ratings within the window of the one before grow it, even an hour after it began.
    for i, minutes in ((20, 40), (21, 95)):
        w.clock.at = MON + timedelta(minutes=minutes)
        assert burst_events(w.rate(RES[i], "cadre-wang", 5)) == [("BurstIncidentGrew", i + 1)]
    last = MON + timedelta(minutes=95)
    [flag] = w.get(CADRE, "/subjects/cadre-wang/flags")["flags"]
    assert flag["count"] == 22 and flag["ends_at"][:19] == format_time(last + timedelta(minutes=60))[:19]

    # Reviewed once, after it has ended: refusals first, each changing nothing.
    review = f"/subjects/cadre-wang/flags/{flag['flag_id']}/review"
    before = w.events()
    w.clock.at = last + timedelta(minutes=30)
    body = w.refused(w.call(CADRE, "POST", review, {"decision": "keep", "reason": "核实"}), 409, "burst_ongoing")
    assert body["errors"]["ends_at"] == flag["ends_at"]
    w.clock.at = last + timedelta(minutes=61)
    w.refused(w.call(CADRE, "POST", "/subjects/cadre-wang/flags/no-such-incident/review",
                     {"decision": "keep", "reason": "核实"}), 422, "unknown_flag")
    w.refused(w.call(GRID, "POST", review, {"decision": "keep", "reason": "核实"}), 403)
    w.refused(w.call(CADRE, "POST", review, {"decision": "maybe", "reason": "核实"}), 422)
    assert w.events() == before
    assert w.get(CADRE, "/subjects/cadre-wang/flags")["flags"][0]["ongoing"] is False
    kept = w.ok(CADRE, "POST", review, {"decision": "keep", "reason": "核实为真实评价"})
    assert [e["event_type"] for e in kept["recorded"]] == ["BurstReviewed"]
    assert kept["resource"]["flags"][flag["flag_id"]]["review"]["decision"] == "keep"
    before = w.events()
    w.refused(w.call(CADRE, "POST", review, {"decision": "exclude", "reason": "再审"}), 409, "already_reviewed")
    assert w.events() == before
    assert w.get(CADRE, "/subjects/cadre-wang")["open_flags"] == 0

    # After a quiet window a top rating joins nothing, and a new burst is a new incident.
    assert burst_events(w.rate(RES[22], "cadre-wang", 5)) == []
    w.clock.at = last + timedelta(hours=3)
    seen = [event for i in range(23, 33) for event in burst_events(w.rate(RES[i], "cadre-wang", 5))]
    assert seen == [("BurstIncidentOpened", 10)]
    flags = w.get(CADRE, "/subjects/cadre-wang/flags")["flags"]
    assert [(f["count"], f["status"], f["ongoing"]) for f in flags] == [(22, "kept", False), (10, "open", True)]
    assert not set(flags[0]["rating_ids"]) & set(flags[1]["rating_ids"])

    # The rated cadre's live feed never carries the incident (the gateway's feed rules).
    feed = w.gateway.extensions["cocreate.gateway_store"]
    with write_transaction(feed.engine) as connection:
        for event in w.store.load("subject-cadre-wang"):
            feed.add_feed_event(connection, event)
    rows = [row for row in feed.feed_after(None, 0, 1000) if row.event_type.startswith("Burst")]
    assert {row.event_type for row in rows} == {"BurstIncidentOpened", "BurstIncidentGrew", "BurstReviewed"}
    assert all(row.rated_person_id == WANG.person_id and privacy.is_rating_event(row.event_type) for row in rows)
    for row in rows:  # as the gateway's /live decides for each reader
        envelope = json.loads(row.envelope)
        seen_by = {p.person_id: privacy.live_view(envelope, privacy.relations(principal(p), C,
                                                                             rated=row.rated_person_id))
                   for p in (WANG, RES[0], CADRE)}
        assert seen_by[WANG.person_id] is None and seen_by[RES[0].person_id] is None
        assert seen_by[CADRE.person_id]["data"]["flag_id"] in {f["flag_id"] for f in flags}


def test_flags_stored_before_incidents_read_as_incidents_of_their_own(w):
    """The 10, 1, 1 flags of one burst stored before: three incidents, reviewed each once, read the
    same from the events (a rebuild) and from a read-model row kept before incidents."""
    w.ok(CADRE, "PATCH", f"/policies/{C}", {"burst_min_ratings": 100})  # the new rule flags nothing here
    w.register("svc", kind="service")
    ratings = []
    for i in range(12):
        w.clock.at = MON + timedelta(seconds=5 * i)
        ratings.append(w.stored_rating_id(w.rate(RES[i], "svc", 5)["resource"]["rating_id"]))

    def flagged(flag_id, rating_ids, at):
        return ("BurstFlagged", {"subject_id": "svc", "flag_id": flag_id, "rating_ids": rating_ids,
                                 "count": len(rating_ids), "window_from": format_time(at - timedelta(minutes=60)),
                                 "window_to": format_time(at), "community_id": C})

    w.append_as_before("subject-svc", flagged("old-1", ratings[:10], MON + timedelta(seconds=45)),
                       flagged("old-2", ratings[10:11], MON + timedelta(seconds=50)),
                       flagged("old-3", ratings[11:], MON + timedelta(seconds=55)),
                       ("BurstReviewed", {"subject_id": "svc", "flag_id": "old-3", "decision": "keep",
                                          "reason": "核实", "rating_ids": ratings[11:], "by": CADRE2.person_id}))

    def incidents():
        return [(f["flag_id"], f["count"], f["status"], f["legacy"], f["window_minutes"], f["ongoing"])
                for f in w.get(CADRE, "/subjects/svc/flags")["flags"]]

    w.clock.at = MON + timedelta(minutes=30)
    assert incidents() == [("old-1", 10, "open", True, 60, True), ("old-2", 1, "open", True, 60, True),
                           ("old-3", 1, "kept", True, 60, False)]
    assert w.get(CADRE, "/subjects/svc")["open_flags"] == 2
    assert all(r["flagged"] for r in w.get(CADRE, "/subjects/svc/ratings")["items"])
    before = w.events()
    w.refused(w.call(CADRE, "POST", "/subjects/svc/flags/old-1/review", {"decision": "exclude", "reason": "刷分"}),
              409, "burst_ongoing")
    w.refused(w.call(CADRE, "POST", "/subjects/svc/flags/old-3/review", {"decision": "keep", "reason": "再审"}),
              409, "already_reviewed")
    assert w.events() == before

    # A read-model row kept before incidents (its ``flags``) reads the same; so does a rebuild.
    listing = w.get(CADRE, "/subjects/svc/flags")
    with write_transaction(w.store.engine) as connection:
        state = json.loads(connection.execute(sa.text("SELECT state FROM subjects_view WHERE id = 'svc'")).scalar())
        state["flags"] = {flag_id: {"rating_ids": i["rating_ids"], "count": len(i["rating_ids"]),
                                    "window_from": i["window_from"], "window_to": i["last_at"],
                                    "flagged_at": i["flagged_at"], "status": i["status"], "review": i["review"]}
                          for flag_id, i in state.pop("incidents").items()}
        connection.execute(sa.text("UPDATE subjects_view SET state = :s WHERE id = 'svc'"), {"s": json.dumps(state)})
    assert w.get(CADRE, "/subjects/svc/flags") == listing
    rebuild(w.store)
    assert w.get(CADRE, "/subjects/svc/flags") == listing
    with read_transaction(w.store.engine) as connection:
        assert "incidents" in json.loads(connection.execute(
            sa.text("SELECT state FROM subjects_view WHERE id = 'svc'")).scalar())

    w.clock.at = MON + timedelta(minutes=61)  # a whole window after each flag's last rating
    excluded = w.ok(CADRE, "POST", "/subjects/svc/flags/old-1/review", {"decision": "exclude", "reason": "刷分"})
    assert [e["event_type"] for e in excluded["recorded"]] == ["BurstReviewed"] + ["RatingExcluded"] * 10
    assert incidents() == [("old-1", 10, "excluded", True, 60, False), ("old-2", 1, "open", True, 60, False),
                           ("old-3", 1, "kept", True, 60, False)]
    assert w.get(CADRE, "/subjects/svc?period=2026-10")["figures"]["ratings"] == 2
