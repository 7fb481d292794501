"""The feedback service over HTTP (Flask's test client; SQLite, and PostgreSQL for the key tests
when TEST_POSTGRES_URL is set): policy, subjects, ratings and revisions, the bad-rating loop,
overdue cases, appeals, burst flags, rankings with a replay check, support plans, who sees the
rater, and refusals in the common error shape that change nothing."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.feedback import handlers
from services.feedback.commands import SubmitRating, SweepOverdue
from services.feedback.ids import RatingIds, legacy_rating_id
from services.feedback.service import DEFINITION, _project_evaluation_handlers
from services.kernel.auth import Principal
from services.kernel.bus import MessageBus
from services.kernel.db import read_transaction, write_transaction
from services.kernel.events import Metadata, StoredEvent
from services.kernel.eventstore import rebuild
from services.kernel.settings import SettingsError
from tests.support.errors import assert_error
from tests.support.apps import TickingClock as Clock, container, driver, service_app
from tests.support.projects import Person

UTC = timezone.utc
C = "haicang"
MON = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)      # Monday 2026-10-05 10:00 in China
OCT_END = datetime(2026, 10, 31, 16, 0, tzinfo=UTC)  # 2026-11-01 00:00 in China
NOV = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
DEC = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
JAN = datetime(2027, 1, 4, 2, 0, tzinfo=UTC)

CADRE = Person("c1", "社区干部", ("cadre",), C)
CADRE2 = Person("c2", "副书记", ("cadre",), C)
GRID = Person("g1", "网格员", ("grid_worker",), C)
ADMIN = Person("admin-1", "管理员", ("admin",), None)
RES = [Person(f"r{i}", f"居民{i}", ("resident",), C) for i in range(12)]
OUTSIDER = Person("x1", "外社区居民", ("resident",), "jimei")
OUTSIDE_CADRE = Person("xc", "外社区干部", ("cadre",), "jimei")
WANG = Person("p-wang", "王书记", ("cadre", "resident"), C)  # a rated cadre who also lives here
ZHAO = Person("p-zhao", "赵主任", ("cadre",), C)


class World:
    """One feedback service on its own database, driven over its API."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.app = service_app(DEFINITION, url, clock=clock)
        self.container = container(self.app)
        self.store = self.container.store
        self.d = driver(self.app)
        self.clock = clock

    # plumbing
    def call(self, person, method, path, body=None, headers=None):
        return self.d.call(person, method, path, body, headers)

    def ok(self, person, method, path, body=None, status=None):
        return self.d.ok(person, method, path, body, status)

    def get(self, person, path):
        return self.d.get(person, path)

    def sweep(self) -> int:
        """What ``python -m services.feedback sweep-overdue`` does: how many cases became overdue."""
        return self.container.bus.handle(SweepOverdue(), metadata=Metadata(actor="system:overdue-sweep")).result

    def events(self) -> int:
        return self.store.last_position()

    def stream(self, stream_id: str) -> list[str]:
        return [e["event_type"] for e in self.get(ADMIN, f"/streams/{stream_id}/events")["events"]]

    def streams(self, prefix: str) -> list[str]:
        with read_transaction(self.store.engine) as connection:
            return sorted(connection.execute(sa.text("SELECT DISTINCT stream_id FROM events WHERE stream_id LIKE :p"),
                                             {"p": prefix + "%"}).scalars())

    # scenario steps
    def register(self, subject_id, kind="cadre", name=None, person_id=None, community=C):
        body = {"subject_id": subject_id, "kind": kind, "name": name or subject_id, "community_id": community}
        if kind in ("cadre", "grid_worker"):
            body |= {"person_id": person_id or f"p-{subject_id}", "unit_id": "jiedao"}
        return self.ok(CADRE if community == C else OUTSIDE_CADRE, "POST", "/subjects", body, 201)["resource"]

    def rate(self, person, subject_id, level, status=None, **body):
        return self.ok(person, "POST", f"/subjects/{subject_id}/ratings", {"level": level, **body}, status)

    def rate_all(self, subject_id, levels, first=0):
        return [self.rate(RES[first + i], subject_id, level, 201)["resource"] for i, level in enumerate(levels)]

    def policy(self, **changes):
        return self.ok(CADRE, "PATCH", f"/policies/{C}", changes, 200)["resource"]

    def publish(self, period, kind="cadre", status=201):
        return self.ok(CADRE, "POST", "/rankings", {"community_id": C, "kind": kind, "period": period}, status)

    def figures(self, subject_id, period="2026-10"):
        return self.get(CADRE, f"/subjects/{subject_id}?period={period}")["figures"]


@pytest.fixture
def clock() -> Clock:
    """The service's clock (injected into the app): tests move it through periods
    and deadlines."""
    return Clock(MON)


@pytest.fixture
def w(sqlite_url, clock):
    world = World(sqlite_url, clock)
    yield world
    world.store.engine.dispose()


@pytest.fixture
def both(database_url, clock):
    """The same world on SQLite and on PostgreSQL."""
    world = World(database_url, clock)
    yield world
    world.store.engine.dispose()


def refused(reply, status: int, reason: str | None = None) -> dict:
    """The common error shape, with the status and (for domain refusals) the reason."""
    return assert_error(reply, status, reason)


def invalid(reply, *fields: str, location: str = "json") -> dict:
    """A 422 from request validation naming the offending fields."""
    body = refused(reply, 422)
    for field in fields:
        assert field in body["errors"][location], body
    return body


# -- policy ------------------------------------------------------------------------------------

def test_policy_defaults_change_and_effect_on_periods_and_minimum(w):
    policy = w.get(RES[0], f"/policies/{C}")
    assert policy["version"] == 0
    assert policy["settings"] == {"period": "month", "min_ratings": 10, "prior_mean": "3.00", "prior_weight": 10,
                                  "satisfaction_threshold_pct": 80, "followup_working_days": 5,
                                  "burst_window_minutes": 60, "burst_min_ratings": 10}
    w.register("wang", person_id="p-wang")
    w.rate_all("wang", [5, 4, 4])
    live = w.get(CADRE, f"/rankings/{C}/cadre")
    assert live["period"] == "2026-10" and live["ranked"] == []
    assert [e["subject_id"] for e in live["not_enough_ratings"]] == ["wang"]

    before = w.events()
    refused(w.call(RES[0], "PATCH", f"/policies/{C}", {"min_ratings": 3}), 403)
    refused(w.call(OUTSIDE_CADRE, "PATCH", f"/policies/{C}", {"min_ratings": 3}), 403, "other_community")
    invalid(w.call(CADRE, "PATCH", f"/policies/{C}", {"min_ratings": 3, "colour": "red"}), "colour")
    invalid(w.call(CADRE, "PATCH", f"/policies/{C}", {"period": "week"}), "period")
    invalid(w.call(CADRE, "PATCH", f"/policies/{C}", {"min_ratings": 0}), "min_ratings")
    refused(w.call(CADRE, "PATCH", f"/policies/{C}", {"min_ratings": 3}, {"If-Match": '"4"'}), 412,
            "concurrency_conflict")
    refused(w.call(CADRE, "PATCH", f"/policies/{C}", {"min_ratings": 10}), 409, "no_change")
    assert w.events() == before and w.get(CADRE, f"/policies/{C}")["version"] == 0

    reply = w.call(CADRE, "PATCH", f"/policies/{C}", {"min_ratings": 3}, {"If-Match": '"0"'})
    assert reply.status_code == 200 and reply.headers["ETag"] == '"1"'
    assert reply.json()["resource"]["settings"]["min_ratings"] == 3
    live = w.get(CADRE, f"/rankings/{C}/cadre")
    # (30 + 13) / 13 = 3.3077; rate 3/3
    assert [(e["subject_id"], e["rank"], e["score"]) for e in live["ranked"]] == [("wang", 1, "3.3077")]
    assert live["formula"]["min_ratings"] == 3 and live["not_enough_ratings"] == []

    resource = w.policy(prior_mean="4.00", prior_weight=5)
    assert (resource["settings"]["prior_mean"], resource["settings"]["prior_weight"]) == ("4.00", 5)
    live = w.get(CADRE, f"/rankings/{C}/cadre")
    # (4.00 × 5 + 13) / (5 + 3) = 33 / 8 = 4.1250
    assert [(e["subject_id"], e["score"]) for e in live["ranked"]] == [("wang", "4.1250")]
    assert (live["formula"]["prior_mean"], live["formula"]["prior_weight"]) == ("4.00", 5)
    refused(w.call(CADRE, "PATCH", f"/policies/{C}", {"prior_mean": "5.50"}), 422)

    resource = w.policy(period="quarter")
    assert resource["version"] == 3 and resource["settings"]["period"] == "quarter"
    # From now on ratings belong to the quarter: the same resident rates anew (201), in 2026-Q4.
    fresh = w.rate(RES[0], "wang", 2, 201)["resource"]
    assert fresh["period"] == "2026-Q4"
    assert w.get(CADRE, f"/rankings/{C}/cadre")["period"] == "2026-Q4"
    assert w.get(CADRE, "/subjects/wang")["period"] == "2026-Q4"
    assert w.figures("wang", "2026-10")["ratings"] == 3
    assert w.figures("wang", "2026-Q4")["ratings"] == 1
    w.clock.at = DEC  # the quarter is still open in December
    refused(w.call(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-Q4"}), 409,
            "period_open")
    w.clock.at = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)  # 2027-01-01 00:00 in China
    published = w.publish("2026-Q4")["resource"]
    assert [e["subject_id"] for e in published["not_enough_ratings"]] == ["wang"]


# -- subjects ----------------------------------------------------------------------------------

def test_subjects_are_registered_by_staff_listed_and_read(w):
    reply = w.call(CADRE, "POST", "/subjects", {"subject_id": "wang", "kind": "cadre", "name": "王书记",
                                                "community_id": C, "person_id": "p-wang", "unit_id": "jiedao"})
    assert reply.status_code == 201 and reply.headers["Location"].endswith("/subjects/wang")
    assert reply.headers["ETag"] == '"1"' and reply.json()["created_id"] == "wang"
    assert reply.json()["resource"]["person_id"] == "p-wang"
    w.register("svc", kind="service", name="便民服务站")
    w.register("other", kind="unit", community="jimei")

    before = w.events()
    body = {"subject_id": "li", "kind": "cadre", "name": "李主任", "community_id": C}
    refused(w.call(RES[0], "POST", "/subjects", {**body, "kind": "unit"}), 403)
    refused(w.call(GRID, "POST", "/subjects", {**body, "kind": "unit"}), 403)
    refused(w.call(OUTSIDE_CADRE, "POST", "/subjects", {**body, "kind": "unit"}), 403, "other_community")
    refused(w.call(CADRE, "POST", "/subjects", body), 422, "person_and_unit_required")
    refused(w.call(CADRE, "POST", "/subjects", {**body, "subject_id": "svc", "kind": "unit"}), 409,
            "already_registered")
    invalid(w.call(CADRE, "POST", "/subjects", {**body, "kind": "mayor"}), "kind")
    invalid(w.call(CADRE, "POST", "/subjects", {**body, "kind": "unit", "subject_id": "李 主任"}), "subject_id")
    invalid(w.call(CADRE, "POST", "/subjects", {**body, "kind": "unit", "rank": 1}), "rank")
    invalid(w.call(CADRE, "POST", "/subjects", {"subject_id": "li", "kind": "unit", "community_id": C}), "name")
    refused(w.call(None, "POST", "/subjects", {**body, "kind": "unit"}), 401)
    assert w.events() == before

    items = w.get(RES[0], f"/subjects?community_id={C}")["items"]
    assert [s["subject_id"] for s in items] == ["svc", "wang"]
    assert [s["subject_id"] for s in w.get(RES[0], f"/subjects?community_id={C}&kind=cadre")["items"]] == ["wang"]
    # A token's community scopes its reads: another community's subjects are the admin's to list.
    refused(w.call(RES[0], "GET", "/subjects?community_id=jimei"), 403, "other_community")
    assert [s["subject_id"] for s in w.get(ADMIN, "/subjects?community_id=jimei")["items"]] == ["other"]
    assert [s["subject_id"] for s in w.get(RES[0], "/subjects")["items"]] == ["svc", "wang"]
    subject = w.get(RES[0], "/subjects/svc")
    assert (subject["kind"], subject["name"], subject["period"], subject["figures"]) == (
        "service", "便民服务站", "2026-10", None)
    refused(w.call(RES[0], "GET", "/subjects/nobody"), 404, "not_found")
    invalid(w.call(RES[0], "GET", "/subjects/svc?period=2026-13"), "period", location="query")


# -- the bad-rating loop -----------------------------------------------------------------------

def test_a_bad_rating_opens_a_case_that_is_followed_up_and_closed_by_the_resident(both):
    w = both
    w.register("wang", person_id="p-wang")
    reply = w.call(RES[0], "POST", "/subjects/wang/ratings",
                   {"level": 2, "dimensions": {"efficiency": 1, "attitude": 3}, "comment": "办事太慢"})
    assert reply.status_code == 201
    answer = reply.json()
    assert [e["event_type"] for e in answer["recorded"]] == ["RatingSubmitted", "FollowUpOpened", "FollowUpLinked"]
    rating = answer["resource"]
    case_id = rating["case_id"]
    assert case_id and rating["level_label"].startswith("不满意") and rating["period"] == "2026-10"

    case = w.get(GRID, f"/cases/{case_id}")
    # Monday 2026-10-05 10:00 local: Tue 6, Wed 7, Thu 8, Fri 9, Mon 12 → end of Mon 12 local
    assert case["deadline"] == "2026-10-12T16:00:00.000000Z"
    assert (case["status"], case["overdue"], case["person_id"], case["level"], case["comment"]) == (
        "open", False, "r0", 2, "办事太慢")
    listing = w.get(CADRE, f"/cases?community_id={C}")
    assert (listing["open"], listing["overdue"], [c["case_id"] for c in listing["items"]]) == (1, 0, [case_id])

    before = w.events()
    refused(w.call(CADRE, "POST", f"/cases/{case_id}/rectifications", {"actions": "加快办理"}), 409, "contact_first")
    refused(w.call(RES[0], "POST", f"/cases/{case_id}/confirmation", {"satisfied": True}), 409,
            "rectification_first")
    refused(w.call(RES[1], "POST", f"/cases/{case_id}/contacts", {"channel": "phone", "note": "x"}), 403)
    refused(w.call(OUTSIDE_CADRE, "POST", f"/cases/{case_id}/contacts", {"channel": "phone", "note": "x"}), 403,
            "other_community")
    invalid(w.call(CADRE, "POST", f"/cases/{case_id}/contacts", {"channel": "pigeon", "note": "x"}), "channel")
    assert w.events() == before and w.get(CADRE, f"/cases/{case_id}")["version"] == 1

    w.clock.at = MON + timedelta(days=1)
    contacted = w.ok(GRID, "POST", f"/cases/{case_id}/contacts", {"channel": "phone", "note": "已电话回访"}, 200)
    assert contacted["resource"]["contacts"][0]["by"] == "g1"
    rectified = w.ok(CADRE, "POST", f"/cases/{case_id}/rectifications", {"actions": "开通绿色通道"}, 200)
    assert rectified["resource"]["rectifications"][0]["actions"] == "开通绿色通道"
    refused(w.call(RES[1], "POST", f"/cases/{case_id}/confirmation", {"satisfied": True}), 403)
    closed = w.ok(RES[0], "POST", f"/cases/{case_id}/confirmation", {"satisfied": True, "comment": "满意"}, 200)
    assert closed["resource"]["status"] == "closed" and closed["resource"]["version"] == 4
    outcome = closed["resource"]["outcome"]
    assert (outcome["satisfied"], outcome["by_resident"], outcome["confirmed_by"], outcome["late"]) == (
        True, True, "r0", False)

    before = w.events()
    refused(w.call(CADRE, "POST", f"/cases/{case_id}/contacts", {"channel": "visit", "note": "x"}), 409,
            "case_closed")
    refused(w.call(RES[0], "POST", f"/cases/{case_id}/confirmation", {"satisfied": False}), 409, "case_closed")
    assert w.events() == before

    mine = w.get(RES[0], "/me/ratings")["items"]
    assert len(mine) == 1 and mine[0]["rating_id"] == rating["rating_id"] and mine[0]["person_id"] == "r0"
    assert mine[0]["case"]["case_id"] == case_id and mine[0]["case"]["status"] == "closed"
    assert mine[0]["case"]["outcome"]["satisfied"] is True
    assert w.get(RES[1], "/me/ratings")["items"] == []
    listing = w.get(CADRE, f"/cases?community_id={C}&status=closed")
    assert [c["case_id"] for c in listing["items"]] == [case_id] and listing["open"] == 0
    assert w.get(RES[5], f"/cases/summary?community_id={C}") == {"community_id": C, "open": 0, "overdue": 0,
                                                                 "closed": 1}


def test_cases_are_read_by_the_resident_and_handlers_only(w):
    w.register("wang", person_id="p-wang")
    case_id = w.rate(RES[0], "wang", 1, 201)["resource"]["case_id"]
    assert w.get(RES[0], f"/cases/{case_id}")["person_id"] == "r0"
    assert w.get(GRID, f"/cases/{case_id}")["person_id"] == "r0"
    refused(w.call(RES[1], "GET", f"/cases/{case_id}"), 404)
    refused(w.call(RES[1], "GET", "/cases"), 403)
    refused(w.call(CADRE, "GET", "/cases/nope"), 404, "not_found")
    refused(w.call(CADRE, "POST", "/cases/nope/contacts", {"channel": "phone", "note": "x"}), 404, "not_found")
    invalid(w.call(CADRE, "GET", "/cases?status=lost"), "status", location="query")


def test_a_rating_decided_while_the_policy_changes_is_decided_again_on_the_new_policy(both, monkeypatch):
    """A rating loads the subject, the policy and the rating before it takes the writers' turn
    (``reads_first``, ADR 21). A cadre changes the period from month to quarter between the rating's
    loads and its record, from another thread: the change does not wait for the rating (it holds no
    turn yet), and the rating's first record finds the policy moved and is decided again on the
    new policy — it belongs to the quarter, not to the month it was first decided in."""
    import threading

    from services.kernel import metrics

    both.register("wang", person_id="p-wang")
    plain = handlers.RatingHandlers._rating
    changes: list[str] = ["quarter"]

    def rating_after_a_policy_change(self, uow, *args):
        if changes:
            cadre = threading.Thread(target=both.policy, kwargs={"period": changes.pop()})
            cadre.start()
            cadre.join(15)
            assert not cadre.is_alive(), "the policy change waited for a rating that was only reading"
        return plain(self, uow, *args)

    monkeypatch.setattr(handlers.RatingHandlers, "_rating", rating_after_a_policy_change)
    before = metrics.COMMANDS_RERUN.labels("SubmitRating")._value.get()
    rating = both.rate(RES[0], "wang", 4, 201)["resource"]
    assert rating["period"] == "2026-Q4"
    assert both.get(CADRE, f"/policies/{C}")["settings"]["period"] == "quarter"
    assert metrics.COMMANDS_RERUN.labels("SubmitRating")._value.get() == before + 1
    assert both.figures("wang", "2026-Q4")["ratings"] == 1 and both.figures("wang", "2026-10") is None  # none in the month


def test_the_rated_person_does_not_learn_the_bad_rater_through_the_case(w):
    """A rater is never shown to the rated subject (api.py's docstring); the follow-up case of a
    bad rating about the cadre must not name the resident to that cadre either."""
    w.register("wang", person_id="p-wang")
    case_id = w.rate(RES[0], "wang", 1, 201)["resource"]["case_id"]
    assert w.get(WANG, f"/ratings/{w.get(CADRE, f'/cases/{case_id}')['rating_id']}")["person_id"] is None
    assert w.get(WANG, f"/cases/{case_id}")["person_id"] is None
    assert all(c["person_id"] is None for c in w.get(WANG, f"/cases?community_id={C}")["items"])


def test_staff_of_another_community_do_not_see_its_raters_or_case_residents(w):
    """Every case command needs a handler *of the case's community*; reading the case list, a case
    or a subject's ratings must not name that community's residents to staff of another one."""
    w.register("svc", kind="service", name="便民服务站")
    case_id = w.rate(RES[0], "svc", 1, 201)["resource"]["case_id"]
    refused(w.call(OUTSIDE_CADRE, "GET", "/subjects/svc/ratings"), 403, "other_community")
    refused(w.call(OUTSIDE_CADRE, "GET", f"/cases/{case_id}"), 404)
    refused(w.call(OUTSIDE_CADRE, "GET", f"/cases?community_id={C}"), 403, "other_community")


def test_a_revision_to_a_bad_level_opens_one_case(w):
    w.register("wang", person_id="p-wang")
    rating = w.rate(RES[0], "wang", 4, 201)["resource"]
    assert rating["case_id"] is None
    revised = w.rate(RES[0], "wang", 2, 200)
    assert "FollowUpOpened" in [e["event_type"] for e in revised["recorded"]]
    again = w.ok(RES[0], "PATCH", f"/ratings/{rating['rating_id']}", {"level": 1}, 200)
    assert [e["event_type"] for e in again["recorded"]] == ["RatingRevised"]
    assert again["resource"]["case_id"] == revised["resource"]["case_id"]
    assert w.get(CADRE, "/cases")["open"] == 1


# -- overdue -----------------------------------------------------------------------------------

def test_overdue_shows_on_read_and_is_recorded_by_the_sweep_exactly_once(both):
    w = both
    w.register("wang", person_id="p-wang")
    w.clock.at = datetime(2026, 10, 9, 14, 0, tzinfo=UTC)  # Friday 22:00 local
    case_a = w.rate(RES[0], "wang", 1, 201)["resource"]["case_id"]
    case_b = w.rate(RES[1], "wang", 2, 201)["resource"]["case_id"]
    # Mon 12 … Fri 16 → end of Friday 2026-10-16 local
    deadline = datetime(2026, 10, 16, 16, 0, tzinfo=UTC)
    assert w.get(CADRE, f"/cases/{case_a}")["deadline"] == "2026-10-16T16:00:00.000000Z"

    w.clock.at = deadline - timedelta(seconds=1)
    assert w.get(CADRE, f"/cases/{case_a}")["overdue"] is False
    assert w.get(CADRE, "/cases")["overdue"] == 0
    assert w.sweep() == 0
    assert w.stream(f"case-{case_a}") == ["FollowUpOpened"]

    # Past the deadline every read shows both cases overdue, and no read records anything.
    w.clock.at = deadline + timedelta(hours=1)
    before = w.events()
    reply = w.call(CADRE, "GET", f"/cases/{case_a}")
    assert reply.status_code == 200 and reply.json()["overdue"] is True and reply.headers["ETag"] == '"1"'
    listing = w.get(GRID, "/cases")
    assert (listing["open"], listing["overdue"]) == (2, 2)
    assert all(case["overdue"] for case in listing["items"])
    assert w.get(RES[1], f"/cases/{case_b}")["overdue"] is True
    assert w.get(RES[5], f"/cases/summary?community_id={C}")["overdue"] == 2
    assert [r["case"]["overdue"] for r in w.get(RES[0], "/me/ratings")["items"]] == [True]
    assert {c["case_id"] for c in w.get(CADRE, "/cases?overdue=true")["items"]} == {case_a, case_b}
    assert w.get(CADRE, "/cases?overdue=false")["items"] == []
    assert w.events() == before
    assert w.stream(f"case-{case_a}") == ["FollowUpOpened"]

    # The sweep records them, once.
    assert w.sweep() == 2
    assert w.sweep() == 0
    assert w.stream(f"case-{case_a}") == ["FollowUpOpened", "FollowUpOverdue"]
    assert w.stream(f"case-{case_b}") == ["FollowUpOpened", "FollowUpOverdue"]
    reply = w.call(CADRE, "GET", f"/cases/{case_a}")
    assert reply.json()["overdue"] is True and reply.headers["ETag"] == '"2"'
    assert (w.get(GRID, "/cases")["overdue"], w.get(CADRE, "/cases?overdue=false")["items"]) == (2, [])

    w.ok(CADRE, "POST", f"/cases/{case_a}/contacts", {"channel": "visit", "note": "上门"}, 200)
    w.ok(CADRE, "POST", f"/cases/{case_a}/rectifications", {"actions": "整改"}, 200)
    closed = w.ok(CADRE, "POST", f"/cases/{case_a}/confirmation", {"satisfied": False, "comment": "电话里说不满意"},
                  200)["resource"]
    assert closed["outcome"]["late"] is True and closed["outcome"]["by_resident"] is False
    assert w.stream(f"case-{case_a}").count("FollowUpOverdue") == 1


def test_a_case_worked_past_its_deadline_before_the_sweep_is_closed_late(w):
    """Case commands do not record overdue (only the sweep does): the closure says it was late, the
    closed case shows as overdue, and the sweep leaves it alone."""
    w.register("wang", person_id="p-wang")
    case_id = w.rate(RES[0], "wang", 1, 201)["resource"]["case_id"]
    w.clock.at = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)  # the deadline: end of Monday 12 local
    contacted = w.ok(GRID, "POST", f"/cases/{case_id}/contacts", {"channel": "phone", "note": "回访"}, 200)
    assert [e["event_type"] for e in contacted["recorded"]] == ["ResidentContacted"]
    assert contacted["resource"]["overdue"] is True and contacted["resource"]["version"] == 2
    w.ok(CADRE, "POST", f"/cases/{case_id}/rectifications", {"actions": "整改"}, 200)
    closed = w.ok(RES[0], "POST", f"/cases/{case_id}/confirmation", {"satisfied": True}, 200)
    assert [e["event_type"] for e in closed["recorded"]] == ["FollowUpClosed"]
    assert closed["recorded"][0]["data"]["late"] is True
    case = closed["resource"]
    assert (case["status"], case["overdue"], case["outcome"]["late"]) == ("closed", True, True)
    assert w.sweep() == 0
    assert w.stream(f"case-{case_id}") == ["FollowUpOpened", "ResidentContacted", "RectificationRecorded",
                                           "FollowUpClosed"]
    assert w.get(RES[5], f"/cases/summary?community_id={C}") == {"community_id": C, "open": 0, "overdue": 0,
                                                                 "closed": 1}
    assert [c["case_id"] for c in w.get(CADRE, "/cases?overdue=true")["items"]] == [case_id]


def test_the_case_summary_counts_overdue_cases_and_records_nothing(w):
    w.register("wang", person_id="p-wang")
    case_id = w.rate(RES[0], "wang", 1, 201)["resource"]["case_id"]
    w.rate(RES[1], "wang", 2, 201)
    w.register("other", kind="unit", community="jimei")
    w.rate(OUTSIDER, "other", 1, 201)
    assert w.get(RES[5], f"/cases/summary?community_id={C}") == {"community_id": C, "open": 2, "overdue": 0,
                                                                 "closed": 0}
    w.clock.at = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)  # the deadline: end of Monday 12 local
    before = w.events()
    assert w.get(RES[5], f"/cases/summary?community_id={C}") == {"community_id": C, "open": 2, "overdue": 2,
                                                                 "closed": 0}
    assert w.events() == before and w.stream(f"case-{case_id}") == ["FollowUpOpened"]
    assert w.sweep() == 3
    assert w.stream(f"case-{case_id}") == ["FollowUpOpened", "FollowUpOverdue"]
    assert w.get(RES[5], f"/cases/summary?community_id={C}")["overdue"] == 2
    assert w.get(OUTSIDER, "/cases/summary?community_id=jimei")["overdue"] == 1
    invalid(w.call(RES[5], "GET", "/cases/summary"), "community_id", location="query")
    refused(w.call(None, "GET", f"/cases/summary?community_id={C}"), 401)


def test_the_sweep_command_records_overdue_cases(w):
    w.register("wang", person_id="p-wang")
    case_id = w.rate(RES[0], "wang", 1, 201)["resource"]["case_id"]
    w.clock.at = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)
    assert DEFINITION.commands["sweep-overdue"][1](w.container) == "feedback: 1 follow-up case(s) became overdue"
    assert w.sweep() == 0
    assert w.stream(f"case-{case_id}") == ["FollowUpOpened", "FollowUpOverdue"]
    [overdue] = [e for e in w.get(ADMIN, f"/streams/case-{case_id}/events")["events"]
                 if e["event_type"] == "FollowUpOverdue"]
    assert overdue["metadata"]["actor"] == "system:overdue-sweep"


# -- revisions ---------------------------------------------------------------------------------

def test_a_rating_is_revised_within_its_period_and_not_after(w):
    w.register("wang", person_id="p-wang")
    first = w.call(RES[0], "POST", "/subjects/wang/ratings", {"level": 4})
    assert first.status_code == 201 and first.headers["ETag"] == '"1"'
    rating_id = first.json()["created_id"]
    w.clock.at = MON + timedelta(days=3)
    again = w.call(RES[0], "POST", "/subjects/wang/ratings", {"level": 3, "comment": "一般"})
    assert again.status_code == 200 and again.json()["created_id"] is None
    assert again.json()["resource"]["rating_id"] == rating_id and again.json()["resource"]["revisions"] == 1
    items = w.get(CADRE, "/subjects/wang/ratings?period=2026-10")["items"]
    assert [(r["rating_id"], r["level"]) for r in items] == [(rating_id, 3)]
    assert w.figures("wang")["ratings"] == 1 and w.figures("wang")["levels"]["3"] == 1

    before = w.events()
    refused(w.call(RES[0], "PATCH", f"/ratings/{rating_id}", {"level": 5}, {"If-Match": '"1"'}), 412,
            "concurrency_conflict")
    refused(w.call(RES[1], "PATCH", f"/ratings/{rating_id}", {"level": 5}), 403, "not_the_rater")
    refused(w.call(RES[0], "PATCH", f"/ratings/{rating_id}", {"level": 3, "comment": "一般"}), 409, "no_change")
    invalid(w.call(RES[0], "PATCH", f"/ratings/{rating_id}", {"level": 6}), "level")
    invalid(w.call(RES[0], "PATCH", f"/ratings/{rating_id}", {"level": 5, "stars": 5}), "stars")
    refused(w.call(RES[0], "PATCH", "/ratings/nope", {"level": 5}), 404, "not_found")
    assert w.events() == before and w.get(RES[0], f"/ratings/{rating_id}")["level"] == 3

    patched = w.call(RES[0], "PATCH", f"/ratings/{rating_id}", {"level": 5, "dimensions": {"result": 5}},
                     {"If-Match": '"2"'})
    assert patched.status_code == 200 and patched.headers["ETag"] == '"3"'
    assert patched.json()["resource"]["revisions"] == 2
    assert w.figures("wang")["levels"] == {"5": 1, "4": 0, "3": 0, "2": 0, "1": 0}

    w.clock.at = OCT_END  # 2026-11-01 00:00 in China: October is closed
    before = w.events()
    refused(w.call(RES[0], "PATCH", f"/ratings/{rating_id}", {"level": 1}), 409, "period_closed")
    assert w.events() == before
    rating = w.get(RES[0], f"/ratings/{rating_id}")
    assert (rating["level"], rating["version"]) == (5, 3)
    # Rating again now is a new rating of November.
    fresh = w.rate(RES[0], "wang", 1, 201)["resource"]
    assert fresh["period"] == "2026-11" and fresh["rating_id"] != rating_id
    assert w.figures("wang")["levels"]["5"] == 1 and w.figures("wang", "2026-11")["levels"]["1"] == 1


# -- appeals -----------------------------------------------------------------------------------

def test_an_upheld_appeal_excludes_the_rating_from_live_and_republished_rankings(w):
    w.policy(min_ratings=3)
    w.register("wang", person_id="p-wang")
    w.register("li", person_id="p-li")
    bad, *_ = w.rate_all("wang", [1, 5, 5, 5])
    w.rate_all("li", [4, 4, 4], first=4)
    w.clock.at = NOV
    first = w.publish("2026-10")["resource"]
    # wang: (30 + 16) / 14 = 3.2857; li: (30 + 12) / 13 = 3.2308
    assert [(e["subject_id"], e["ratings"], e["score"]) for e in first["ranked"]] == [
        ("wang", 4, "3.2857"), ("li", 3, "3.2308")]

    before = w.events()
    appeal = {"grounds": "malicious", "statement": "该居民当天未来办事"}
    refused(w.call(RES[0], "POST", f"/ratings/{bad['rating_id']}/appeal", appeal), 403)  # the rater
    refused(w.call(RES[5], "POST", f"/ratings/{bad['rating_id']}/appeal", appeal), 403)
    refused(w.call(OUTSIDE_CADRE, "POST", f"/ratings/{bad['rating_id']}/appeal", appeal), 403, "other_community")
    invalid(w.call(WANG, "POST", f"/ratings/{bad['rating_id']}/appeal", {**appeal, "grounds": "unfair"}), "grounds")
    refused(w.call(WANG, "POST", "/ratings/nope/appeal", appeal), 404, "not_found")
    refused(w.call(CADRE2, "POST", f"/ratings/{bad['rating_id']}/appeal/decision",
                   {"upheld": True, "reason": "x"}), 409, "no_pending_appeal")
    assert w.events() == before

    filed = w.ok(WANG, "POST", f"/ratings/{bad['rating_id']}/appeal", appeal, 201)["resource"]
    assert filed["appeal"]["status"] == "pending" and filed["appeal"]["by"] == "p-wang"
    assert filed["person_id"] is None  # the rated person still does not see who rated
    before = w.events()
    refused(w.call(CADRE, "POST", f"/ratings/{bad['rating_id']}/appeal", appeal), 409, "already_appealed")
    decision = {"upheld": True, "reason": "监控核实当天未到访"}
    refused(w.call(WANG, "POST", f"/ratings/{bad['rating_id']}/appeal/decision", decision), 403, "own_appeal")
    refused(w.call(GRID, "POST", f"/ratings/{bad['rating_id']}/appeal/decision", decision), 403)
    refused(w.call(RES[1], "POST", f"/ratings/{bad['rating_id']}/appeal/decision", decision), 403)
    invalid(w.call(CADRE2, "POST", f"/ratings/{bad['rating_id']}/appeal/decision", {"upheld": True}), "reason")
    refused(w.call(CADRE2, "POST", "/ratings/nope/appeal/decision", decision), 404, "not_found")
    assert w.events() == before

    decided = w.ok(CADRE2, "POST", f"/ratings/{bad['rating_id']}/appeal/decision", decision, 200)
    # The exclusion closes the bad rating's follow-up case in the same unit of work.
    assert [e["event_type"] for e in decided["recorded"]] == ["AppealDecided", "RatingExcluded",
                                                             "FollowUpClosedByExclusion"]
    case = w.get(CADRE, f"/cases/{bad['case_id']}")
    assert (case["status"], case["overdue"], case["closure"]["reason"]) == ("closed", False, "rating_excluded")
    excluded = decided["resource"]["excluded"]
    assert excluded["reason"] == "appeal upheld (malicious): 监控核实当天未到访"
    assert (excluded["via"], excluded["by"]) == ("appeal", "c2")

    stored = w.get(CADRE, f"/ratings/{bad['rating_id']}")
    assert (stored["level"], stored["person_id"], stored["appeal"]["status"]) == (1, "r0", "upheld")
    assert stored["excluded"]["reason"] == excluded["reason"]
    assert len(w.get(CADRE, "/subjects/wang/ratings?period=2026-10")["items"]) == 4  # nothing deleted

    live = w.get(CADRE, f"/rankings/{C}/cadre?period=2026-10")
    # wang without the 1: (30 + 15) / 13 = 3.4615
    assert [(e["subject_id"], e["ratings"], e["score"], e["levels"]["1"]) for e in live["ranked"]] == [
        ("wang", 3, "3.4615", 0), ("li", 3, "3.2308", 0)]
    assert w.get(CADRE, f"/rankings/{C}/cadre/2026-10")["edition"] == 1  # published stays as published
    assert [(p["subject_id"], p["status"]) for p in plans_of(w)] == [("wang", "open")]  # 3/4 < 80 %
    republished = w.publish("2026-10")
    second = republished["resource"]
    assert second["edition"] == 2 and second["ranked"] == live["ranked"]
    # Now 3/3 satisfied, but a later edition of the same period does not close the period's own plan.
    assert [e["event_type"] for e in republished["recorded"]] == ["RankingPublished"]
    assert [(p["subject_id"], p["status"]) for p in plans_of(w)] == [("wang", "open")]
    assert w.get(CADRE, f"/rankings/{C}/cadre/2026-10")["editions"] == 2
    assert w.get(CADRE, f"/rankings/{C}/cadre/2026-10/verification")["identical"] is True
    refused(w.call(CADRE, "POST", f"/ratings/{bad['rating_id']}/appeal", appeal), 409, "already_excluded")


def test_a_dismissed_appeal_changes_no_figures(w):
    w.policy(min_ratings=3)
    w.register("li", person_id="p-li")
    bad, *_ = w.rate_all("li", [2, 4, 4])
    w.clock.at = NOV
    w.publish("2026-10")
    figures = w.figures("li")
    w.ok(CADRE, "POST", f"/ratings/{bad['rating_id']}/appeal", {"grounds": "mistaken", "statement": "评错对象"}, 201)
    decided = w.ok(ADMIN, "POST", f"/ratings/{bad['rating_id']}/appeal/decision",
                   {"upheld": False, "reason": "评价属实"}, 200)
    assert [e["event_type"] for e in decided["recorded"]] == ["AppealDecided"]
    assert decided["resource"]["excluded"] is None and decided["resource"]["appeal"]["status"] == "dismissed"
    assert w.figures("li") == figures
    refused(w.call(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10"}), 409,
            "no_change")


# -- burst flags -------------------------------------------------------------------------------

def test_a_burst_of_top_ratings_is_one_incident_never_deleted_and_reviewed_once(w):
    """A burst is one incident (a flag): it opens at the ``burst_min_ratings``-th top rating within
    the window, grows by each further one within the window of the one before, ends when none has
    come for a whole window, and is reviewed once, after it has ended. (It used to be a flag of 4
    and a flag of 1 for each further rating: tests/integration/test_feedback_gateway.py has the 20.)"""
    w.policy(burst_min_ratings=4, burst_window_minutes=60)
    w.register("slow", kind="service", name="慢节奏")
    w.register("svc", kind="service", name="便民服务站")
    for i in range(4):  # 30 minutes apart: never 4 in one hour
        w.clock.at = MON + timedelta(minutes=30 * i)
        assert not [e for e in w.rate(RES[i], "slow", 5, 201)["recorded"] if e["event_type"].startswith("Burst")]
    flagged_at = []
    for i in range(5):  # 2 minutes apart
        w.clock.at = MON + timedelta(hours=3, minutes=2 * i)
        recorded = w.rate(RES[i], "svc", 5, 201)["recorded"]
        flagged_at += [(i, e["event_type"], e["data"]["count"]) for e in recorded
                       if e["event_type"].startswith("Burst")]
    # the 4th completes a burst; the 5th grows it
    assert flagged_at == [(3, "BurstIncidentOpened", 4), (4, "BurstIncidentGrew", 5)]
    last = MON + timedelta(hours=3, minutes=8)

    refused(w.call(RES[0], "GET", "/subjects/svc/flags"), 403)
    [flag] = w.get(GRID, "/subjects/svc/flags")["flags"]
    assert (flag["count"], flag["status"], flag["ongoing"], flag["window_minutes"], len(flag["rating_ids"])) == (
        5, "open", True, 60, 5)
    assert flag["ends_at"].startswith("2026-10-05T06:08:00")  # a window after the last top rating
    assert w.get(GRID, "/subjects/slow/flags")["flags"] == []
    refused(w.call(GRID, "GET", "/subjects/nope/flags"), 404)
    assert [s["subject_id"] for s in w.get(CADRE, "/subjects?flagged=true")["items"]] == ["svc"]
    assert w.get(CADRE, "/subjects/svc")["open_flags"] == 1
    items = w.get(CADRE, "/subjects/svc/ratings")["items"]
    assert len(items) == 5 and all(r["flagged"] and r["excluded"] is None for r in items)
    assert w.figures("svc")["ratings"] == 5

    before = w.events()
    review = {"decision": "exclude", "reason": "同一时段集中好评"}
    refused(w.call(RES[0], "POST", f"/subjects/svc/flags/{flag['flag_id']}/review", review), 403)
    refused(w.call(GRID, "POST", f"/subjects/svc/flags/{flag['flag_id']}/review", review), 403)
    refused(w.call(CADRE, "POST", "/subjects/svc/flags/nope/review", review), 422, "unknown_flag")
    refused(w.call(CADRE, "POST", f"/subjects/nope/flags/{flag['flag_id']}/review", review), 404)
    invalid(w.call(CADRE, "POST", f"/subjects/svc/flags/{flag['flag_id']}/review",
                   {**review, "decision": "delete"}), "decision")
    w.clock.at = last + timedelta(minutes=59)  # still going on: another top rating would join it
    body = refused(w.call(CADRE, "POST", f"/subjects/svc/flags/{flag['flag_id']}/review", review), 409,
                   "burst_ongoing")
    assert body["errors"]["ends_at"] == flag["ends_at"]
    assert w.events() == before

    w.clock.at = last + timedelta(minutes=60)  # a whole window without a top rating: ended
    assert w.get(GRID, "/subjects/svc/flags")["flags"][0]["ongoing"] is False
    excluded = w.ok(CADRE, "POST", f"/subjects/svc/flags/{flag['flag_id']}/review", review, 200)
    assert [e["event_type"] for e in excluded["recorded"]] == ["BurstReviewed"] + ["RatingExcluded"] * 5
    assert excluded["resource"]["flags"][flag["flag_id"]]["status"] == "excluded"
    assert w.figures("svc") is None  # no counted rating left
    items = w.get(CADRE, "/subjects/svc/ratings")["items"]
    assert len(items) == 5 and all(r["excluded"]["via"] == "burst_review" and "burst" in r["excluded"]["reason"]
                                   for r in items)
    before = w.events()
    refused(w.call(CADRE, "POST", f"/subjects/svc/flags/{flag['flag_id']}/review", review), 409, "already_reviewed")
    assert w.events() == before
    assert w.get(CADRE, "/subjects?flagged=true")["items"] == []

    # After the quiet window, a new burst is a new incident; kept, its ratings count.
    for i in range(5, 9):
        w.clock.at = MON + timedelta(hours=6, minutes=i)
        w.rate(RES[i], "svc", 5, 201)
    flags = w.get(GRID, "/subjects/svc/flags")["flags"]
    assert [(f["count"], f["status"]) for f in flags] == [(5, "excluded"), (4, "open")]
    w.clock.at = MON + timedelta(hours=7, minutes=9)
    kept = w.ok(CADRE, "POST", f"/subjects/svc/flags/{flags[1]['flag_id']}/review",
                {"decision": "keep", "reason": "核实为真实评价"}, 200)
    assert [e["event_type"] for e in kept["recorded"]] == ["BurstReviewed"]
    assert kept["resource"]["flags"][flags[1]["flag_id"]]["status"] == "kept"
    assert w.figures("svc")["ratings"] == 4


# -- rankings ----------------------------------------------------------------------------------

def test_publishing_waits_for_the_period_to_end_and_equals_the_live_ranking(both):
    w = both
    w.policy(min_ratings=3)
    for sid in ("wang", "li", "zhao"):
        w.register(sid)
    w.rate_all("wang", [5, 5, 4, 4])
    w.rate_all("li", [5, 4, 4, 4])
    w.rate_all("zhao", [3, 3])

    w.clock.at = OCT_END - timedelta(seconds=1)
    before = w.events()
    refused(w.call(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10"}), 409,
            "period_open")
    assert w.events() == before
    refused(w.call(CADRE, "GET", f"/rankings/{C}/cadre/2026-10"), 404, "not_found")

    w.clock.at = OCT_END
    refused(w.call(RES[0], "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10"}), 403)
    refused(w.call(OUTSIDE_CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10"}),
            403, "other_community")
    invalid(w.call(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10-01"}),
            "period")
    invalid(w.call(CADRE, "POST", "/rankings", {"community_id": C, "kind": "mayor", "period": "2026-10"}), "kind")
    assert w.events() == before

    reply = w.call(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10"})
    assert reply.status_code == 201 and reply.json()["created_id"] == f"{C}.cadre.2026-10"
    assert [e["event_type"] for e in reply.json()["recorded"]] == ["RankingPublished"]
    published = w.get(RES[0], f"/rankings/{C}/cadre/2026-10")
    live = w.get(RES[0], f"/rankings/{C}/cadre?period=2026-10")
    assert published["published"] is True and live["published"] is False
    for key in ("ranked", "not_enough_ratings", "formula"):
        assert published[key] == live[key]
    # wang: (30+18)/14 = 3.4286, li: (30+17)/14 = 3.3571; zhao 2 ratings < 3
    assert [(e["subject_id"], e["rank"], e["score"], e["satisfaction_rate"]) for e in published["ranked"]] == [
        ("wang", 1, "3.4286", "1.0000"), ("li", 2, "3.3571", "1.0000")]
    assert [e["subject_id"] for e in published["not_enough_ratings"]] == ["zhao"]
    assert published["edition"] == 1 and published["editions"] == 1
    assert published["last_position"] == reply.json()["recorded"][0]["position"] - 1
    assert published["formula"]["version"] == "bayes-v1"

    before = w.events()
    refused(w.call(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10"}), 409,
            "no_change")
    assert w.events() == before
    verification = w.get(RES[0], f"/rankings/{C}/cadre/2026-10/verification")
    assert verification["identical"] is True
    assert verification["recomputed_digest"] == verification["published_digest"] == published["digest"]

    refused(w.call(CADRE, "GET", f"/rankings/{C}/cadre/2026-09"), 404, "not_found")
    refused(w.call(CADRE, "GET", f"/rankings/{C}/cadre/2026-09/verification"), 404, "not_found")
    refused(w.call(CADRE, "GET", f"/rankings/{C}/mayor/2026-10"), 404)
    refused(w.call(CADRE, "GET", f"/rankings/{C}/mayor"), 404)
    refused(w.call(CADRE, "GET", f"/rankings/{C}/cadre/2026-13"), 422, "invalid_period")
    invalid(w.call(CADRE, "GET", f"/rankings/{C}/cadre?period=2026-13"), "period", location="query")
    refused(w.call(None, "GET", f"/rankings/{C}/cadre/2026-10"), 401)


def test_a_provisional_edition_of_an_open_period_opens_no_plans(w):
    w.policy(min_ratings=3)
    w.register("wang")
    w.register("zhao")
    w.rate_all("wang", [5, 5, 5])
    w.rate_all("zhao", [2, 2, 4])  # 1/3 satisfied
    w.clock.at = MON + timedelta(days=10)
    body = {"community_id": C, "kind": "cadre", "period": "2026-10", "provisional": True}
    interim = w.ok(CADRE, "POST", "/rankings", body, 201)
    assert [e["event_type"] for e in interim["recorded"]] == ["RankingPublished"]
    assert interim["resource"]["provisional"] is True and interim["resource"]["edition"] == 1
    assert plans_of(w) == []
    published = w.get(RES[0], f"/rankings/{C}/cadre/2026-10")
    assert published["provisional"] is True
    assert published["ranked"] == w.get(RES[0], f"/rankings/{C}/cadre?period=2026-10")["ranked"]
    assert w.get(RES[0], f"/rankings/{C}/cadre/2026-10/verification")["identical"] is True
    before = w.events()
    refused(w.call(CADRE, "POST", "/rankings", body), 409, "no_change")
    refused(w.call(RES[0], "POST", "/rankings", body), 403)
    assert w.events() == before

    w.rate(RES[3], "zhao", 1, 201)  # the ranking moves on after the provisional edition
    w.clock.at = NOV
    refused(w.call(CADRE, "POST", "/rankings", body), 409, "period_closed")
    final = w.publish("2026-10")
    assert [e["event_type"] for e in final["recorded"]] == ["RankingPublished", "SupportPlanOpened"]
    assert final["resource"]["provisional"] is False and final["resource"]["edition"] == 2
    assert [p["subject_id"] for p in plans_of(w)] == ["zhao"]


def test_the_final_ranking_can_follow_an_unchanged_provisional_edition(w):
    """Nothing changed after the provisional edition: the final publication must still go through
    (otherwise the period never gets a final ranking and its support plans never open)."""
    w.policy(min_ratings=3)
    w.register("zhao")
    w.rate_all("zhao", [2, 2, 4])
    w.clock.at = MON + timedelta(days=10)
    w.ok(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10",
                                      "provisional": True}, 201)
    w.clock.at = NOV
    final = w.publish("2026-10")
    assert final["resource"]["provisional"] is False
    assert [p["subject_id"] for p in plans_of(w)] == ["zhao"]


def test_a_provisional_edition_of_the_previous_period_does_not_count_for_last_twice(w):
    w.policy(min_ratings=3)
    w.register("wang")
    w.register("zhao")
    w.rate_all("wang", [5, 5, 5])
    w.rate_all("zhao", [4, 4, 4])
    w.clock.at = MON + timedelta(days=10)
    w.ok(CADRE, "POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-10",
                                      "provisional": True}, 201)  # zhao last, provisionally
    w.clock.at = NOV
    w.rate_all("wang", [5, 5, 5])
    w.rate_all("zhao", [4, 4, 4])
    w.clock.at = DEC
    november = w.publish("2026-11")
    assert november["resource"]["ranked"][-1]["subject_id"] == "zhao"
    assert [e["event_type"] for e in november["recorded"]] == ["RankingPublished"]


def test_a_published_ranking_recomputes_identically_after_the_read_models_are_rebuilt(both):
    w = both
    w.policy(min_ratings=3)
    for sid in ("wang", "li", "zhao"):
        w.register(sid)
    w.rate_all("wang", [5, 5, 4, 1])
    w.rate_all("li", [2, 4, 4], first=4)
    w.rate_all("zhao", [3, 3, 4], first=7)
    w.clock.at = MON + timedelta(days=2)
    w.rate(RES[4], "li", 3, 200)  # a revision
    [bad] = [r for r in w.get(CADRE, "/subjects/wang/ratings")["items"] if r["level"] == 1]
    w.ok(WANG, "POST", f"/ratings/{bad['rating_id']}/appeal", {"grounds": "malicious", "statement": "x"}, 201)
    w.ok(CADRE2, "POST", f"/ratings/{bad['rating_id']}/appeal/decision", {"upheld": True, "reason": "恶意"}, 200)
    w.clock.at = NOV
    w.publish("2026-10")
    w.rate(RES[0], "wang", 1, 201)  # November's ratings come after the published position
    # October's case of li's 2, past its deadline now (that of wang's 1 closed with its exclusion)
    listing = w.get(CADRE, "/cases")
    assert (listing["open"], listing["overdue"], len(listing["items"])) == (2, 1, 3)

    paths = [f"/rankings/{C}/cadre/2026-10", f"/rankings/{C}/cadre?period=2026-10",
             f"/rankings/{C}/cadre/2026-10/verification", "/subjects/li?period=2026-10",
             "/subjects/wang/ratings?period=2026-10", f"/plans?community_id={C}", "/cases",
             f"/ratings/{bad['rating_id']}"]
    snapshot = {path: w.get(CADRE, path) for path in paths}
    assert snapshot[paths[2]]["identical"] is True
    # wang without the excluded 1: (30+14)/13 = 3.3846; li 2→3, 4, 4: (30+11)/13 = 3.1538;
    # zhao 3, 3, 4: (30+10)/13 = 3.0769
    assert [(e["subject_id"], e["score"]) for e in snapshot[paths[0]]["ranked"]] == [
        ("wang", "3.3846"), ("li", "3.1538"), ("zhao", "3.0769")]
    assert {p["subject_id"] for p in snapshot[paths[5]]["items"]} == {"li", "zhao"}  # 2/3 and 1/3 satisfied

    count = rebuild(w.store, page_size=7)  # pages split streams: batched application continues rows
    assert count == w.events()
    after = {path: w.get(CADRE, path) for path in paths}
    assert after == snapshot
    verification = after[paths[2]]
    assert verification["identical"] is True and verification["recomputed"]["ranked"] == snapshot[paths[0]]["ranked"]


# -- support plans -----------------------------------------------------------------------------

def plans_of(w, **query) -> list[dict]:
    suffix = "&".join(f"{k}={v}" for k, v in {"community_id": C, **query}.items())
    return w.get(CADRE, f"/plans?{suffix}")["items"]


def test_a_low_satisfaction_rate_opens_a_plan_drawn_up_noted_and_closed_by_a_later_period(w):
    w.policy(min_ratings=3)
    w.register("svc", kind="service", name="便民服务站")
    w.register("hall", kind="service", name="办事大厅")
    w.rate_all("svc", [2, 4, 4])     # satisfaction 2/3 = 0.6667 < 0.80
    w.rate_all("hall", [5, 5, 5])
    w.clock.at = NOV
    published = w.publish("2026-10", kind="service")
    opened = [e for e in published["recorded"] if e["event_type"] == "SupportPlanOpened"]
    assert len(opened) == 1 and opened[0]["data"]["subject_id"] == "svc"
    assert opened[0]["data"]["triggers"] == [
        {"trigger": "low_satisfaction", "satisfaction_rate": "0.6667", "threshold": "0.80"}]
    [plan] = plans_of(w, status="open")
    plan_id = plan["plan_id"]
    assert (plan["subject_id"], plan["opened_for"], plan["kind"], plan["mentor"]) == ("svc", "2026-10", "service",
                                                                                       None)

    details = {"mentor": {"person_id": "r9", "name": "老党员"}, "actions": ["每周接待日", "窗口轮岗"],
               "deadline": "2026-12-31"}
    before = w.events()
    refused(w.call(RES[0], "POST", f"/plans/{plan_id}/details", details), 403)
    refused(w.call(OUTSIDE_CADRE, "POST", f"/plans/{plan_id}/details", details), 403, "other_community")
    invalid(w.call(CADRE, "POST", f"/plans/{plan_id}/details", {**details, "actions": []}), "actions")
    invalid(w.call(CADRE, "POST", f"/plans/{plan_id}/details", {**details, "deadline": "soon"}), "deadline")
    refused(w.call(CADRE, "POST", "/plans/nope/details", details), 404, "not_found")
    refused(w.call(RES[9], "POST", f"/plans/{plan_id}/notes", {"note": "x"}), 403)  # not yet the mentor
    assert w.events() == before

    drawn = w.ok(CADRE, "POST", f"/plans/{plan_id}/details", details, 200)["resource"]
    assert drawn["mentor"] == {"person_id": "r9", "name": "老党员"} and drawn["deadline"] == "2026-12-31"
    noted = w.ok(RES[9], "POST", f"/plans/{plan_id}/notes", {"note": "第一次接待日"}, 201)["resource"]
    assert [(n["note"], n["by"]) for n in noted["notes"]] == [("第一次接待日", "r9")]
    w.ok(CADRE, "POST", f"/plans/{plan_id}/notes", {"note": "已轮岗"}, 201)
    refused(w.call(RES[0], "POST", f"/plans/{plan_id}/notes", {"note": "x"}), 403)
    refused(w.call(CADRE, "POST", "/plans/nope/notes", {"note": "x"}), 404)
    invalid(w.call(CADRE, "POST", f"/plans/{plan_id}/notes", {"note": ""}), "note")
    reply = w.call(RES[0], "GET", f"/plans/{plan_id}")
    assert reply.status_code == 200 and reply.headers["ETag"] == '"4"' and len(reply.json()["notes"]) == 2
    refused(w.call(RES[0], "GET", "/plans/nope"), 404, "not_found")

    # November: svc 4/4 satisfied (and not last), hall last for the first time
    w.rate_all("svc", [5, 5, 5, 5])
    w.rate_all("hall", [5, 5, 4])
    w.clock.at = DEC
    published = w.publish("2026-11", kind="service")
    assert [e["event_type"] for e in published["recorded"]] == ["RankingPublished", "SupportPlanClosed"]
    plan = w.get(CADRE, f"/plans/{plan_id}")
    assert plan["status"] == "closed"
    assert (plan["closed"]["period"], plan["closed"]["satisfaction_rate"]) == ("2026-11", "1.0000")
    assert plans_of(w, status="open") == [] and len(plans_of(w, status="closed")) == 1
    before = w.events()
    refused(w.call(CADRE, "POST", f"/plans/{plan_id}/notes", {"note": "x"}), 409, "plan_closed")
    refused(w.call(CADRE, "POST", f"/plans/{plan_id}/details", details), 409, "plan_closed")
    assert w.events() == before


def test_ranked_last_in_two_consecutive_published_periods_opens_a_plan(w):
    w.policy(min_ratings=3)
    w.register("wang", person_id="p-wang")
    w.register("zhao", person_id="p-zhao")
    # October and November: zhao is satisfied-rated (4s) but last both times
    w.rate_all("wang", [5, 5, 5])
    w.rate_all("zhao", [4, 4, 4])
    w.clock.at = NOV
    october = w.publish("2026-10")
    assert [e["event_type"] for e in october["recorded"]] == ["RankingPublished"]
    assert october["resource"]["ranked"][-1]["subject_id"] == "zhao"
    w.rate_all("wang", [5, 5, 5])
    w.rate_all("zhao", [4, 4, 4])
    w.clock.at = DEC
    november = w.publish("2026-11")
    opened = [e for e in november["recorded"] if e["event_type"] == "SupportPlanOpened"]
    assert [(e["data"]["subject_id"], e["data"]["triggers"]) for e in opened] == [
        ("zhao", [{"trigger": "ranked_last_twice", "periods": ["2026-10", "2026-11"]}])]
    [plan] = plans_of(w, status="open")
    # December: zhao first, wang last once: zhao's plan closes, none opens for wang
    w.rate_all("wang", [4, 4, 4])
    w.rate_all("zhao", [5, 5, 5])
    w.clock.at = JAN
    december = w.publish("2026-12")
    assert [e["event_type"] for e in december["recorded"]] == ["RankingPublished", "SupportPlanClosed"]
    assert w.get(CADRE, f"/plans/{plan['plan_id']}")["status"] == "closed"
    assert plans_of(w, status="open") == []


def test_last_twice_needs_the_previous_period_published(w):
    w.policy(min_ratings=3)
    w.register("wang")
    w.register("zhao")
    w.rate_all("wang", [5, 5, 5])
    w.rate_all("zhao", [4, 4, 4])
    w.clock.at = NOV
    w.rate_all("wang", [5, 5, 5])
    w.rate_all("zhao", [4, 4, 4])
    w.clock.at = DEC
    november = w.publish("2026-11")  # October was never published
    assert [e["event_type"] for e in november["recorded"]] == ["RankingPublished"]


def test_the_rated_person_is_not_their_own_mentor(w):
    """SupportPlan.draw_up refuses a mentor equal to the plan's *subject id*; for a cadre or grid
    worker the person is the subject's person_id, so the rated cadre can be named their own mentor."""
    w.policy(min_ratings=3)
    w.register("zhao", person_id="p-zhao")
    w.rate_all("zhao", [2, 2, 4])
    w.clock.at = NOV
    w.publish("2026-10")
    [plan] = plans_of(w, status="open")
    reply = w.call(CADRE, "POST", f"/plans/{plan['plan_id']}/details",
                   {"mentor": {"person_id": "p-zhao", "name": "赵主任"}, "actions": ["自我反省"],
                    "deadline": "2026-12-31"})
    refused(reply, 422, "invalid_mentor")


# -- who sees the rater ------------------------------------------------------------------------

def test_raters_are_hidden_from_the_rated_person_and_other_residents(w):
    w.register("wang", person_id="p-wang")
    rating = w.rate(RES[0], "wang", 3, 201, comment="态度一般")["resource"]
    w.rate(RES[1], "wang", 5, 201)
    path = f"/ratings/{rating['rating_id']}"
    for viewer in (WANG, RES[5]):
        seen = w.get(viewer, path)
        assert seen["person_id"] is None and seen["comment"] == "态度一般" and seen["level"] == 3
        assert seen["source"] == {"kind": "resident", "project_id": None}
        assert all(r["person_id"] is None for r in w.get(viewer, "/subjects/wang/ratings")["items"])
    for viewer, rater in ((RES[0], "r0"), (CADRE, "r0"), (GRID, "r0"), (ADMIN, "r0")):
        assert w.get(viewer, path)["person_id"] == rater
    assert [r["person_id"] for r in w.get(CADRE, "/subjects/wang/ratings")["items"]] == ["r0", "r1"]
    assert [r["person_id"] for r in w.get(ADMIN, "/subjects/wang/ratings")["items"]] == ["r0", "r1"]
    assert sorted(r["person_id"] or "" for r in w.get(RES[1], "/subjects/wang/ratings")["items"]) == ["", "r1"]
    reply = w.call(RES[5], "GET", path)
    assert reply.headers["ETag"] == '"1"'
    # When it came is timing: those who may not know the rater see the day, and the list in an
    # order that is not the order of arrival (by public id).
    full = w.get(CADRE, path)
    assert full["rated_at"].startswith("2026-") and "T" in full["rated_at"]
    for viewer in (WANG, RES[5]):
        seen = w.get(viewer, path)
        assert re.fullmatch(r"2026-\d\d-\d\d", seen["rated_at"]) and re.fullmatch(r"2026-\d\d-\d\d", seen["created_at"])
        listed = w.get(viewer, "/subjects/wang/ratings")["items"]
        assert [r["rating_id"] for r in listed] == sorted(r["rating_id"] for r in listed)
        assert all(len(r["rated_at"]) == 10 and len(r["updated_at"]) == 10 for r in listed)


# -- refusals ----------------------------------------------------------------------------------

def test_refusals_say_why_in_the_common_shape_and_change_nothing(w):
    w.register("wang", person_id="p-wang")
    w.register("other", kind="unit", community="jimei")
    rating = w.rate(RES[0], "wang", 4, 201)["resource"]
    before, figures = w.events(), w.figures("wang")

    # 401: no token, or a bad one
    for method, path, body in [("GET", f"/policies/{C}", None), ("GET", "/subjects", None),
                               ("POST", "/subjects/wang/ratings", {"level": 5}),
                               ("GET", f"/ratings/{rating['rating_id']}", None), ("GET", "/cases", None),
                               ("GET", "/plans", None), ("GET", "/me/ratings", None),
                               ("POST", "/rankings", {"community_id": C, "kind": "cadre", "period": "2026-09"})]:
        body401 = refused(w.call(None, method, path, body), 401, "unauthenticated")
        assert body401["status"] == "Unauthorized"
    reply = w.call(None, "GET", "/me/ratings", headers={"Authorization": "Bearer not-a-token"})
    refused(reply, 401, "token_invalid")
    assert reply.headers["WWW-Authenticate"] == "Bearer"

    # 403: wrong role, other community, self-rating
    refused(w.call(CADRE, "POST", "/subjects/wang/ratings", {"level": 5}), 403, "role_required")
    refused(w.call(GRID, "POST", "/subjects/wang/ratings", {"level": 5}), 403, "role_required")
    refused(w.call(OUTSIDER, "POST", "/subjects/wang/ratings", {"level": 5}), 403, "other_community")
    refused(w.call(RES[0], "POST", "/subjects/other/ratings", {"level": 5}), 403, "other_community")
    refused(w.call(WANG, "POST", "/subjects/wang/ratings", {"level": 5}), 403, "self_rating")
    refused(w.call(RES[0], "GET", "/cases"), 403)

    # 404: unknown subject, rating, case, plan, ranking
    refused(w.call(RES[0], "POST", "/subjects/nobody/ratings", {"level": 5}), 404, "not_found")
    refused(w.call(RES[0], "GET", "/subjects/nobody/ratings"), 404, "not_found")
    refused(w.call(RES[0], "GET", "/ratings/nope"), 404, "not_found")
    refused(w.call(CADRE, "GET", "/cases/nope"), 404, "not_found")
    refused(w.call(CADRE, "POST", "/cases/nope/rectifications", {"actions": "x"}), 404, "not_found")
    refused(w.call(RES[0], "POST", "/cases/nope/confirmation", {"satisfied": True}), 404, "not_found")
    refused(w.call(CADRE, "GET", "/plans/nope"), 404, "not_found")
    refused(w.call(CADRE, "GET", f"/rankings/{C}/cadre/2026-08"), 404, "not_found")

    # 422: bad level, unknown fields, bad period
    for level in (0, 6, "5", 4.5, None):
        invalid(w.call(RES[1], "POST", "/subjects/wang/ratings", {"level": level}), "level")
    invalid(w.call(RES[1], "POST", "/subjects/wang/ratings", {}), "level")
    invalid(w.call(RES[1], "POST", "/subjects/wang/ratings", {"level": 5, "anonymous": True}), "anonymous")
    body = invalid(w.call(RES[1], "POST", "/subjects/wang/ratings", {"level": 5, "dimensions": {"speed": 5}}),
                   "dimensions")
    assert "speed" in body["errors"]["json"]["dimensions"]
    invalid(w.call(RES[1], "POST", "/subjects/wang/ratings", {"level": 5, "dimensions": {"attitude": 9}}),
            "dimensions")
    invalid(w.call(RES[1], "POST", "/subjects/wang/ratings", {"level": 5, "comment": "长" * 1001}), "comment")
    invalid(w.call(RES[0], "GET", "/subjects/wang/ratings?period=2026-Q5"), "period", location="query")
    invalid(w.call(RES[0], "GET", "/subjects/wang?period=10-2026"), "period", location="query")
    refused(w.call(RES[0], "GET", f"/rankings/{C}/cadre/2026-00"), 422, "invalid_period")

    # 412: a stale If-Match
    refused(w.call(RES[0], "PATCH", f"/ratings/{rating['rating_id']}", {"level": 2}, {"If-Match": '"7"'}), 412,
            "concurrency_conflict")
    refused(w.call(RES[0], "PATCH", f"/ratings/{rating['rating_id']}", {"level": 2}, {"If-Match": "latest"}), 422,
            "invalid_if_match")

    assert w.events() == before and w.figures("wang") == figures
    assert w.get(RES[0], f"/ratings/{rating['rating_id']}")["version"] == 1
    assert w.get(CADRE, "/cases")["items"] == [] and w.get(CADRE, "/plans")["items"] == []


# -- rating ids reveal nothing ------------------------------------------------------------------

def test_a_rating_id_cannot_be_computed_from_the_raters_person_id(w):
    """A rated cadre who knows residents' person ids (they are public: proposers, co-signers)
    cannot find their ratings: neither the old sha256 scheme nor any id the API shows is
    derivable without the deployment's secret, and only public ids open a rating."""
    w.register("wang", person_id="p-wang")
    created = w.rate(RES[0], "wang", 1, 201, comment="态度差")
    public = created["resource"]["rating_id"]
    assert created["created_id"] == public and len(public) == 33
    period = created["resource"]["period"]
    guessed = legacy_rating_id("wang", period, RES[0].person_id, "resident")
    [stream] = [s for s in w.streams("rating-")]
    stored = stream.removeprefix("rating-")
    assert stored not in (guessed, public) and public != guessed
    for wrong in (guessed, stored, "r" + "0" * 32, public[:-1] + ("0" if public[-1] != "0" else "1")):
        refused(w.call(WANG, "GET", f"/ratings/{wrong}"), 404, "not_found")
    seen = w.get(WANG, f"/ratings/{public}")
    assert (seen["level"], seen["comment"], seen["person_id"]) == (1, "态度差", None)
    # The case, the resident's list and the subject's list all show the same public id.
    case = w.get(RES[0], f"/cases/{seen['case_id']}")
    assert case["rating_id"] == public and w.get(RES[0], "/me/ratings")["items"][0]["rating_id"] == public
    assert [r["rating_id"] for r in w.get(WANG, "/subjects/wang/ratings")["items"]] == [public]
    # Another deployment (another secret) shows another id for the same rating.
    other = RatingIds(b"another-deployment-secret-0123456789")
    assert other.public(stored) != public and other.resolve(public) != stored


def test_a_rating_stored_under_a_derivable_id_is_found_again_and_shown_under_a_public_id(w):
    """Ratings stored before ids were keyed by the secret keep their stream; a resident rating
    again in the period revises it, and readers never see (nor can use) its derivable id."""
    w.register("wang", person_id="p-wang")
    old_ids = RatingIds(b"whatever-secret-the-old-service-never-had")
    old_ids.stored = legacy_rating_id  # how the service named rating streams before
    old = MessageBus(w.store, handlers.handlers_for(old_ids), clock=w.clock)
    principal = Principal(RES[0].person_id, RES[0].name, frozenset(RES[0].roles), C)
    old.handle(SubmitRating(subject_id="wang", level=2, comment="旧评价"), actor=principal,
               metadata=Metadata(actor=RES[0].person_id))
    period = w.get(RES[0], "/me/ratings")["items"][0]["period"]
    legacy = legacy_rating_id("wang", period, RES[0].person_id, "resident")
    assert w.streams("rating-") == [f"rating-{legacy}"]

    revised = w.rate(RES[0], "wang", 4, 200)["resource"]
    assert w.streams("rating-") == [f"rating-{legacy}"] and revised["revisions"] == 1
    public = revised["rating_id"]
    assert public != legacy and len(public) == 33
    refused(w.call(WANG, "GET", f"/ratings/{legacy}"), 404, "not_found")
    assert w.get(WANG, f"/ratings/{public}")["level"] == 4


def test_the_rating_id_secret_cannot_change_under_a_database(sqlite_url, clock):
    container(service_app(DEFINITION, sqlite_url, FEEDBACK_RATING_ID_SECRET="s" * 40)).store.engine.dispose()
    again = service_app(DEFINITION, sqlite_url, FEEDBACK_RATING_ID_SECRET="s" * 40)  # the same secret: fine
    container(again).store.engine.dispose()
    with pytest.raises(SettingsError, match="FEEDBACK_RATING_ID_SECRET does not hold"):
        service_app(DEFINITION, sqlite_url, FEEDBACK_RATING_ID_SECRET="t" * 40)
    with pytest.raises(SettingsError, match="FEEDBACK_RATING_ID_SECRET must be set"):
        service_app(DEFINITION, sqlite_url)
    with pytest.raises(SettingsError, match="at least 32 characters"):  # refused as the settings are read
        service_app(DEFINITION, sqlite_url, FEEDBACK_RATING_ID_SECRET="short")


# -- project evaluations -----------------------------------------------------------------------

def test_a_project_evaluation_becomes_two_ratings_once_and_is_not_revised_here(w):
    store = w.store
    record = _project_evaluation_handlers(w.container)["ProjectRated"]
    event = StoredEvent(
        event_id="0f6d2a44-3b1c-4a8e-9c1e-2d3b4c5d6e7f", event_type="ProjectRated", schema_version=1,
        stream_id="project-p1", version=9, position=99, occurred_at=MON,
        data={"project_id": "p1", "project_title": "背街小巷路灯", "community_id": C,
              "responsible_unit": {"unit_id": "jsb", "name": "街道建设办"}, "person_id": "r3", "score": 2,
              "comment": "还有两盏不亮"}, metadata={})
    for _ in range(2):
        with write_transaction(store.engine) as connection:
            record(connection, event)
    # Caused by the evaluation, in its correlation, and naming no actor (the rater is in the data).
    caused = [e for e in store.iterate_all() if e.metadata.get("causation_id") == event.event_id]
    assert [e.event_type for e in caused] == ["SubjectRegistered", "SubjectRegistered", "RatingSubmitted",
                                              "FollowUpOpened", "FollowUpLinked", "RatingSubmitted",
                                              "FollowUpOpened", "FollowUpLinked"]
    assert all(e.metadata["actor"] is None and e.metadata["correlation_id"] == event.event_id for e in caused)
    for subject_id in ("jsb", "project-p1"):
        figures = w.figures(subject_id)
        assert figures["ratings"] == 1 and figures["levels"]["2"] == 1
    mine = w.get(RES[3], "/me/ratings")["items"]
    assert sorted(r["subject_id"] for r in mine) == ["jsb", "project-p1"]
    assert all(r["case"]["status"] == "open" for r in mine)
    before = w.events()
    refused(w.call(RES[3], "PATCH", f"/ratings/{mine[0]['rating_id']}", {"level": 5}), 409, "not_revisable")
    assert w.events() == before
    # The resident's own rating of the unit is separate from the project evaluation.
    own = w.rate(RES[3], "jsb", 4, 201)["resource"]
    assert own["source"] == {"kind": "resident", "project_id": None} and w.figures("jsb")["ratings"] == 2


def test_a_published_ranking_is_read_a_page_at_a_time(w):
    w.policy(min_ratings=3)
    for subject, levels in (("wang", [5, 5, 5]), ("li", [4, 4, 4]), ("zhao", [3, 3, 3]), ("sun", [5])):
        w.register(subject)
        w.rate_all(subject, levels)
    w.clock.at = NOV
    published = w.publish("2026-10")["resource"]
    whole = w.get(CADRE, f"/rankings/{C}/cadre/2026-10")
    assert whole["ranked"] == published["ranked"] and whole["digest"] == published["digest"]
    assert (whole["total_ranked"], whole["total_not_enough_ratings"], whole["editions"]) == (3, 1, 1)
    page = w.get(CADRE, f"/rankings/{C}/cadre/2026-10?limit=1&offset=1")
    assert [e["subject_id"] for e in page["ranked"]] == ["li"] and page["ranked"][0]["rank"] == 2
    assert page["not_enough_ratings"] == [] and page["total_ranked"] == 3
    assert page["formula"] == published["formula"] and page["last_position"] == published["last_position"]
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=ten"):
        assert_error(w.d.call(CADRE, "GET", f"/rankings/{C}/cadre/2026-10?{bad}"), 422)
    assert_error(w.d.call(CADRE, "GET", f"/rankings/{C}/cadre/2026-09"), 404)
