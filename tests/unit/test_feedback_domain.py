"""The feedback domain without a database or HTTP: the ranking formula (hand-computed), counting,
the working-day deadline, periods, ratings, appeals, follow-up cases, support plans, publishing;
and what the read models' records show of them (folded from the same events)."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone

import pytest

from services.feedback.domain import (
    DEFAULT_POLICY, FollowUpCase, Policy, Ranking, Rating, Subject, SupportPlan, clears_threshold, count_level,
    empty_stats, period_bounds, period_of, previous_period, rank, ranking_digest, stats_changes,
    support_triggers, valid_period, working_deadline,
)
from services.feedback.views import CaseRecord, PlanRecord, RatingRecord
from services.kernel.auth import Principal
from services.kernel.errors import Conflict, DomainError, Forbidden
from services.kernel.events import NewEvent, StoredEvent

UTC = timezone.utc
CST = timezone(timedelta(hours=8))
C = "haicang"
T0 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)  # Monday 2026-10-05 10:00 China time
_positions = itertools.count(1)


def person(person_id: str, *roles: str, community: str | None = C) -> Principal:
    return Principal(person_id=person_id, name=person_id, roles=frozenset(roles), community=community)


CADRE = person("c1", "cadre")
CADRE2 = person("c2", "cadre")
GRID = person("g1", "grid_worker")
ADMIN = person("admin-1", "admin", community=None)
RATER = person("r1", "resident")
OTHER_RESIDENT = person("r2", "resident")
OUTSIDER = person("x1", "resident", community="jimei")
OUTSIDE_CADRE = person("xc", "cadre", community="jimei")
WANG = person("p-wang", "cadre", "resident")  # the rated cadre, also a resident of the community


def applied(state, events, at: datetime = T0):
    """Apply decided events to ``state`` as if they had been stored."""
    for event in events:
        state.apply(StoredEvent(event_id=event.event_id, event_type=event.event_type, schema_version=1,
                                stream_id=state.stream_id, version=state.version + 1,
                                position=next(_positions), occurred_at=at, data=dict(event.data), metadata={}))
    return state


def types(events) -> list[str]:
    return [e.event_type for e in events]


def subject_wang() -> Subject:
    subject = Subject(id="wang")
    return applied(subject, subject.register(CADRE, {"kind": "cadre", "name": "王书记", "community_id": C,
                                                     "person_id": "p-wang", "unit_id": "jiedao"}))


def rating_of(subject: Subject, level: int = 4, rater: str = "r1", period: str = "2026-10",
              source=None, cls: type[Rating] = Rating) -> Rating:
    rating = cls(id=f"rt-{subject.id}-{rater}")
    return applied(rating, rating.submit(subject, rater, period, level, {}, "", source or {"kind": "resident"}, T0))


def stats_of(levels: list[int], name: str = "") -> dict:
    stats = {"name": name, **empty_stats()}
    for level in levels:
        count_level(stats, level, 1)
    return stats


POLICY = {**DEFAULT_POLICY, "min_ratings": 3}


# -- the ranking formula ----------------------------------------------------------------------

@pytest.mark.parametrize("prior_mean, prior_weight, levels, score, average, rate", [
    # (3.00×10 + 5×10) / (10+10) = 80/20 = 4.0000; rate 10/10
    ("3.00", 10, [5] * 10, "4.0000", "5.0000", "1.0000"),
    # 5×8 + 4×2 = 48: (30+48)/20 = 3.9000; rate 10/10
    ("3.00", 10, [5] * 8 + [4] * 2, "3.9000", "4.8000", "1.0000"),
    # 5+5+4 = 14: (30+14)/13 = 3.384615… → 3.3846; average 14/3 = 4.6667; rate 3/3
    ("3.00", 10, [5, 5, 4], "3.3846", "4.6667", "1.0000"),
    # 5×5 + 3×12 + 2×5 = 71, n = 22: (30+71)/32 = 3.15625 → half-even 3.1562 (half-up would be 3.1563);
    # average 71/22 = 3.22727… → 3.2273; rate 5/22 = 0.22727… → 0.2273
    ("3.00", 10, [5] * 5 + [3] * 12 + [2] * 5, "3.1562", "3.2273", "0.2273"),
    # 5×6 + 3×11 + 2×5 = 73, n = 22: (30+73)/32 = 3.21875 → half-even 3.2188; rate 6/22 = 0.2727
    ("3.00", 10, [5] * 6 + [3] * 11 + [2] * 5, "3.2188", "3.3182", "0.2727"),
    # prior 4.50 weight 2: (9+1+2)/(2+2) = 12/4 = 3.0000; average 1.5; rate 0/2
    ("4.50", 2, [1, 2], "3.0000", "1.5000", "0.0000"),
    # prior weight 0 is the plain average: (0+5+4+4+1)/4 = 3.5; rate 3/4
    ("3.00", 0, [5, 4, 4, 1], "3.5000", "3.5000", "0.7500"),
    # 4+4+3 = 11: (30+11)/13 = 3.153846… → 3.1538; rate 2/3 = 0.6667
    ("3.00", 10, [4, 4, 3], "3.1538", "3.6667", "0.6667"),
])
def test_score_is_the_bayesian_average_rounded_half_even(prior_mean, prior_weight, levels, score, average, rate):
    policy = {"prior_mean": prior_mean, "prior_weight": prior_weight, "min_ratings": 1}
    table = rank({"s": stats_of(levels, "某某")}, policy)
    [entry] = table["ranked"]
    assert (entry["score"], entry["average"], entry["satisfaction_rate"]) == (score, average, rate)
    assert entry["ratings"] == len(levels) and entry["rank"] == 1 and entry["name"] == "某某"
    assert entry["levels"] == {str(level): levels.count(level) for level in (5, 4, 3, 2, 1)}
    assert table["formula"]["version"] == "bayes-v1"
    assert (table["formula"]["prior_mean"], table["formula"]["prior_weight"]) == (prior_mean, prior_weight)


def test_fewer_ratings_than_the_minimum_are_listed_as_not_enough_not_ranked():
    # min_ratings 3: two ratings are not enough however good; exactly three are ranked.
    table = rank({"few": stats_of([5, 5]), "enough": stats_of([3, 3, 3]), "none": empty_stats() | {"name": ""}},
                 POLICY)
    assert [e["subject_id"] for e in table["ranked"]] == ["enough"]
    [few] = table["not_enough_ratings"]
    assert few["subject_id"] == "few" and few["rank"] is None and "not enough ratings" in few["note"]
    # Its figures are still shown: (30+10)/12 = 3.3333
    assert (few["ratings"], few["score"]) == (2, "3.3333")
    # A subject without counted ratings (all excluded) appears in neither list.
    assert all(e["subject_id"] != "none" for e in table["ranked"] + table["not_enough_ratings"])
    assert table["formula"]["min_ratings"] == 3


def test_ranking_order_ties_and_tie_breaks():
    stats = {
        # (30+14)/13 = 3.3846 for both: equal score and equal n share rank 1, listed by subject id
        "beta": stats_of([4, 5, 5]),
        "alpha": stats_of([5, 5, 4]),
        # (30+9)/13 = 3.0000 and (30+15)/15 = 3.0000: equal score, more ratings first, no shared rank
        "gamma": stats_of([3, 3, 3]),
        "zeta": stats_of([3, 3, 3, 3, 3]),
        # (30+3)/13 = 2.538461… → 2.5385
        "delta": stats_of([1, 1, 1]),
        # (30+4+4+2+2)/14 = 3.0000 with n = 4: between zeta (n 5) and gamma (n 3)
        "eta": stats_of([4, 4, 2, 2]),
    }
    ranked = rank(stats, POLICY)["ranked"]
    assert [(e["subject_id"], e["score"], e["ratings"], e["rank"]) for e in ranked] == [
        ("alpha", "3.3846", 3, 1),
        ("beta", "3.3846", 3, 1),
        ("zeta", "3.0000", 5, 3),
        ("eta", "3.0000", 4, 4),
        ("gamma", "3.0000", 3, 5),
        ("delta", "2.5385", 3, 6),
    ]


def test_three_way_tie_then_the_next_rank_skips():
    # (30+12)/13 = 3.230769… → 3.2308 for three subjects with n = 3; the next one, (30+1+2+3)/13 = 36/13 =
    # 2.769230… → 2.7692, is rank 4
    stats = {"c": stats_of([4, 4, 4]), "a": stats_of([5, 4, 3]), "b": stats_of([5, 5, 2]), "d": stats_of([1, 2, 3])}
    ranked = rank(stats, POLICY)["ranked"]
    assert [(e["subject_id"], e["score"], e["rank"]) for e in ranked] == [
        ("a", "3.2308", 1), ("b", "3.2308", 1), ("c", "3.2308", 1), ("d", "2.7692", 4)]
    # but satisfaction differs: 2/3, 2/3, 3/3, 0/3
    assert [e["satisfaction_rate"] for e in ranked] == ["0.6667", "0.6667", "1.0000", "0.0000"]


def test_the_digest_depends_on_the_figures_and_the_formula():
    table = rank({"a": stats_of([5, 4, 4])}, POLICY)
    same = rank({"a": stats_of([4, 5, 4])}, POLICY)
    assert ranking_digest(table) == ranking_digest(same)
    assert ranking_digest(table) != ranking_digest(rank({"a": stats_of([5, 4, 3])}, POLICY))
    assert ranking_digest(table) != ranking_digest(rank({"a": stats_of([5, 4, 4])}, {**POLICY, "prior_weight": 5}))


# -- counting rating events --------------------------------------------------------------------

def test_stats_changes_per_rating_event():
    assert stats_changes("RatingSubmitted", {"level": 4}) == ((4, 1),)
    assert stats_changes("RatingRevised", {"previous_level": 4, "level": 2, "counted": True}) == ((4, -1), (2, 1))
    assert stats_changes("RatingRevised", {"previous_level": 4, "level": 2, "counted": False}) == ()
    assert stats_changes("RatingExcluded", {"level": 2}) == ((2, -1),)
    assert stats_changes("AppealFiled", {"level": 2}) == ()


def test_count_level_through_submit_revise_and_exclude():
    stats = empty_stats()
    for event_type, data in [("RatingSubmitted", {"level": 5}), ("RatingSubmitted", {"level": 2}),
                             ("RatingSubmitted", {"level": 3}),
                             ("RatingRevised", {"previous_level": 2, "level": 4, "counted": True}),
                             ("RatingExcluded", {"level": 5})]:
        for level, sign in stats_changes(event_type, data):
            count_level(stats, level, sign)
    # left: a 4 (revised from 2) and a 3
    assert stats == {"n": 2, "total": 7, "top": 1, "l1": 0, "l2": 0, "l3": 1, "l4": 1, "l5": 0}


def test_a_revision_of_an_excluded_rating_changes_no_counts():
    subject = subject_wang()
    rating = Rating(id="rx")
    submitted = rating.submit(subject, "r1", "2026-10", 2, {}, "", {"kind": "resident"}, T0)
    applied(rating, submitted)
    excluded = rating.exclude("恶意差评", "c2", "appeal")
    applied(rating, excluded)
    [revised] = rating.revise(RATER, T0 + timedelta(days=1), 5, {}, "改评")
    assert revised.data["counted"] is False
    stats = empty_stats()
    for event in [*submitted, *excluded, revised]:
        for level, sign in stats_changes(event.event_type, event.data):
            count_level(stats, level, sign)
    assert stats == empty_stats()
    # Revised before the exclusion, the same revision moves the count from 2 to 5.
    fresh = Rating(id="ry")
    applied(fresh, fresh.submit(subject, "r1", "2026-10", 2, {}, "", {"kind": "resident"}, T0))
    [counted] = fresh.revise(RATER, T0 + timedelta(days=1), 5, {}, "改评")
    assert stats_changes(counted.event_type, counted.data) == ((2, -1), (5, 1))
    # Excluding twice decides nothing.
    assert rating.exclude("again", "c2", "burst_review") == []


# -- working days ------------------------------------------------------------------------------

@pytest.mark.parametrize("rated_at, working_days, deadline", [
    # Monday 2026-11-02 10:00 local: Tue 3, Wed 4, Thu 5, Fri 6, Mon 9 → end of Mon 9 = Tue 10 00:00 local
    (datetime(2026, 11, 2, 10, 0, tzinfo=CST), 5, datetime(2026, 11, 9, 16, 0, tzinfo=UTC)),
    # Thursday 2026-11-05 10:00: Fri 6, Mon 9, Tue 10, Wed 11, Thu 12 → end of Thu 12
    (datetime(2026, 11, 5, 10, 0, tzinfo=CST), 5, datetime(2026, 11, 12, 16, 0, tzinfo=UTC)),
    # Friday evening 2026-11-06 22:00: Mon 9 … Fri 13 → end of Fri 13
    (datetime(2026, 11, 6, 22, 0, tzinfo=CST), 5, datetime(2026, 11, 13, 16, 0, tzinfo=UTC)),
    # Saturday 2026-11-07 and Sunday 2026-11-08: also Mon 9 … Fri 13
    (datetime(2026, 11, 7, 10, 0, tzinfo=CST), 5, datetime(2026, 11, 13, 16, 0, tzinfo=UTC)),
    (datetime(2026, 11, 8, 23, 59, tzinfo=CST), 5, datetime(2026, 11, 13, 16, 0, tzinfo=UTC)),
    # Friday 2026-11-06 17:00 UTC is Saturday 01:00 in China: still Mon 9 … Fri 13
    (datetime(2026, 11, 6, 17, 0, tzinfo=UTC), 5, datetime(2026, 11, 13, 16, 0, tzinfo=UTC)),
    # Thursday 2026-11-05 17:00 UTC is Friday 01:00 in China: Mon 9 … Fri 13 (not Thu 12, as in UTC)
    (datetime(2026, 11, 5, 17, 0, tzinfo=UTC), 5, datetime(2026, 11, 13, 16, 0, tzinfo=UTC)),
    # Thursday 2026-11-05 15:59 UTC is Thursday 23:59 in China: Fri 6 … Thu 12
    (datetime(2026, 11, 5, 15, 59, tzinfo=UTC), 5, datetime(2026, 11, 12, 16, 0, tzinfo=UTC)),
    # Sunday 2026-11-08 16:00 UTC is Monday 00:00 in China: Tue 10 … Mon 16
    (datetime(2026, 11, 8, 16, 0, tzinfo=UTC), 5, datetime(2026, 11, 16, 16, 0, tzinfo=UTC)),
    # One working day from a Friday: Monday; three from a Wednesday: Thu, Fri, Mon
    (datetime(2026, 11, 6, 9, 0, tzinfo=CST), 1, datetime(2026, 11, 9, 16, 0, tzinfo=UTC)),
    (datetime(2026, 11, 4, 9, 0, tzinfo=CST), 3, datetime(2026, 11, 9, 16, 0, tzinfo=UTC)),
    # Ten working days from Monday 2026-11-02: two full weeks → end of Mon 16
    (datetime(2026, 11, 2, 9, 0, tzinfo=CST), 10, datetime(2026, 11, 16, 16, 0, tzinfo=UTC)),
])
def test_working_deadline(rated_at, working_days, deadline):
    result = working_deadline(rated_at, working_days)
    assert result == deadline
    assert result.utcoffset() == timedelta(0)
    assert result.astimezone(CST).time().isoformat() == "00:00:00"


# -- periods -----------------------------------------------------------------------------------

@pytest.mark.parametrize("moment, kind, period", [
    (datetime(2026, 1, 31, 15, 59, 59, tzinfo=UTC), "month", "2026-01"),  # 23:59:59 on Jan 31 in China
    (datetime(2026, 1, 31, 16, 0, tzinfo=UTC), "month", "2026-02"),       # 00:00 on Feb 1 in China
    (datetime(2025, 12, 31, 15, 59, 59, tzinfo=UTC), "month", "2025-12"),
    (datetime(2025, 12, 31, 16, 0, tzinfo=UTC), "month", "2026-01"),
    (datetime(2025, 12, 31, 15, 59, 59, tzinfo=UTC), "quarter", "2025-Q4"),
    (datetime(2025, 12, 31, 16, 0, tzinfo=UTC), "quarter", "2026-Q1"),
    (datetime(2026, 3, 31, 16, 0, tzinfo=UTC), "quarter", "2026-Q2"),
    (datetime(2026, 9, 30, 15, 0, tzinfo=UTC), "quarter", "2026-Q3"),
    (datetime(2026, 11, 15, 4, 0, tzinfo=UTC), "quarter", "2026-Q4"),
])
def test_period_of_is_local_china_time(moment, kind, period):
    assert period_of(moment, kind) == period


@pytest.mark.parametrize("period, start, end", [
    ("2026-01", datetime(2025, 12, 31, 16, tzinfo=UTC), datetime(2026, 1, 31, 16, tzinfo=UTC)),
    ("2026-02", datetime(2026, 1, 31, 16, tzinfo=UTC), datetime(2026, 2, 28, 16, tzinfo=UTC)),
    ("2026-12", datetime(2026, 11, 30, 16, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)),
    ("2026-Q1", datetime(2025, 12, 31, 16, tzinfo=UTC), datetime(2026, 3, 31, 16, tzinfo=UTC)),
    ("2026-Q4", datetime(2026, 9, 30, 16, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)),
])
def test_period_bounds_in_utc(period, start, end):
    assert period_bounds(period) == (start, end)
    assert period_of(start, "quarter" if "Q" in period else "month") == period
    assert period_of(end - timedelta(microseconds=1), "quarter" if "Q" in period else "month") == period
    assert period_of(end, "quarter" if "Q" in period else "month") != period


@pytest.mark.parametrize("period, previous", [
    ("2026-01", "2025-12"), ("2026-11", "2026-10"), ("2026-10", "2026-09"),
    ("2026-Q1", "2025-Q4"), ("2026-Q3", "2026-Q2"),
])
def test_previous_period(period, previous):
    assert previous_period(period) == previous


def test_valid_period():
    assert all(valid_period(p) for p in ("2026-01", "2026-12", "2026-Q1", "2026-Q4"))
    assert not any(valid_period(p) for p in ("2026-13", "2026-00", "2026-Q5", "2026-Q0", "26-01", "2026-1", "2026-011"))


# -- ratings -----------------------------------------------------------------------------------

def test_levels_one_to_five_are_accepted_others_refused():
    subject = subject_wang()
    for level in (1, 2, 3, 4, 5):
        [event] = Rating(id=f"ok{level}").submit(subject, "r1", "2026-10", level, {}, "", {"kind": "resident"}, T0)
        assert event.data["level"] == level
    for level in (0, 6, -1):
        with pytest.raises(DomainError) as refused:
            Rating(id="bad").submit(subject, "r1", "2026-10", level, {}, "", {"kind": "resident"}, T0)
        assert refused.value.reason == "invalid_level" and refused.value.status == 422


def test_dimension_names_and_scores():
    subject = subject_wang()
    [event] = Rating(id="d").submit(subject, "r1", "2026-10", 4, {"efficiency": 5, "attitude": 1, "result": 3}, "",
                                    {"kind": "resident"}, T0)
    assert event.data["dimensions"] == {"efficiency": 5, "attitude": 1, "result": 3}
    for dimensions, field in [({"speed": 3}, "speed"), ({"attitude": 6}, "attitude"), ({"result": 0}, "result")]:
        with pytest.raises(DomainError) as refused:
            Rating(id="d").submit(subject, "r1", "2026-10", 4, dimensions, "", {"kind": "resident"}, T0)
        assert refused.value.reason == "invalid_dimensions" and field in refused.value.details


def test_who_may_rate_a_subject():
    subject = subject_wang()
    subject.may_be_rated_by(RATER)  # a resident of the community
    subject.may_be_rated_by(person("rep", "representative"))
    with pytest.raises(Forbidden) as refused:
        subject.may_be_rated_by(WANG)  # the rated cadre, although also a resident
    assert refused.value.reason == "self_rating"
    with pytest.raises(Forbidden) as refused:
        subject.may_be_rated_by(OUTSIDER)
    assert refused.value.reason == "other_community"
    for staff in (CADRE, GRID, ADMIN):
        with pytest.raises(Forbidden):
            subject.may_be_rated_by(staff)


def test_a_rating_is_submitted_once():
    rating = rating_of(subject_wang(), level=4)
    with pytest.raises(Conflict) as refused:
        rating.submit(subject_wang(), "r1", "2026-10", 3, {}, "", {"kind": "resident"}, T0)
    assert refused.value.reason == "already_rated"


def test_revision_only_by_the_rater_and_only_before_the_period_ends():
    rating = rating_of(subject_wang(), level=4, cls=RatingRecord)
    end = period_bounds("2026-10")[1]  # 2026-10-31T16:00Z, Nov 1 00:00 in China
    with pytest.raises(Forbidden) as refused:
        rating.revise(OTHER_RESIDENT, T0, 3, {}, "")
    assert refused.value.reason == "not_the_rater"
    with pytest.raises(Forbidden):
        rating.revise(CADRE, T0, 3, {}, "")
    with pytest.raises(Conflict) as refused:
        rating.revise(RATER, end, 3, {}, "")
    assert refused.value.reason == "period_closed"
    [event] = rating.revise(RATER, end - timedelta(microseconds=1), 3, {"result": 2}, "慢")
    assert event.event_type == "RatingRevised"
    assert (event.data["previous_level"], event.data["level"], event.data["counted"]) == (4, 3, True)
    applied(rating, [event])
    assert (rating.level, rating.dimensions, rating.comment, rating.revisions) == (3, {"result": 2}, "慢", 1)
    assert rating.view()["rated_at"] == event.data["rated_at"] and rating.view()["revisions"] == 1


def test_a_revision_that_changes_nothing_is_refused():
    rating = rating_of(subject_wang(), level=4)
    with pytest.raises(Conflict) as refused:
        rating.revise(RATER, T0, 4, {}, "")
    assert refused.value.reason == "no_change"
    assert rating.revise(RATER, T0, 4, {}, "有变化")  # a new comment is a change
    with pytest.raises(DomainError) as refused:
        rating.revise(RATER, T0, 7, {}, "")
    assert refused.value.reason == "invalid_level"


def test_a_project_evaluation_is_not_revised_here():
    rating = rating_of(subject_wang(), level=4, source={"kind": "project_evaluation", "project_id": "p1"})
    with pytest.raises(Conflict) as refused:
        rating.revise(RATER, T0, 3, {}, "")
    assert refused.value.reason == "not_revisable"


def test_only_people_subjects_need_person_and_unit():
    with pytest.raises(DomainError) as refused:
        Subject(id="li").register(CADRE, {"kind": "cadre", "name": "李主任", "community_id": C})
    assert refused.value.reason == "person_and_unit_required"
    assert set(refused.value.details) == {"person_id", "unit_id"}
    [event] = Subject(id="svc").register(CADRE, {"kind": "service", "name": "便民服务站", "community_id": C,
                                                 "person_id": "ignored"})
    assert event.data["person_id"] is None
    with pytest.raises(Forbidden):
        Subject(id="svc").register(OUTSIDE_CADRE, {"kind": "service", "name": "x", "community_id": C})
    with pytest.raises(Forbidden):
        Subject(id="svc").register(RATER, {"kind": "service", "name": "x", "community_id": C})
    with pytest.raises(Conflict) as refused:
        subject_wang().register(CADRE, {"kind": "unit", "name": "x", "community_id": C})
    assert refused.value.reason == "already_registered"


# -- appeals -----------------------------------------------------------------------------------

@pytest.mark.parametrize("appellant", [WANG, CADRE, GRID, ADMIN], ids=["rated-person", "cadre", "grid", "admin"])
def test_the_rated_person_or_staff_may_appeal(appellant):
    rating = rating_of(subject_wang(), level=1)
    [event] = rating.file_appeal(appellant, subject_wang(), "malicious", "从未接触过此居民")
    assert event.event_type == "AppealFiled"
    assert (event.data["by"], event.data["grounds"]) == (appellant.person_id, "malicious")


@pytest.mark.parametrize("appellant, reason", [
    (RATER, "role_required"),                          # a resident, and the rater at that
    (OTHER_RESIDENT, "role_required"),
    (OUTSIDE_CADRE, "other_community"),
    (person("r1", "resident", "grid_worker"), "own_rating"),  # the rater, even when also staff
])
def test_others_may_not_appeal(appellant, reason):
    rating = rating_of(subject_wang(), level=1)
    with pytest.raises(Forbidden) as refused:
        rating.file_appeal(appellant, subject_wang(), "mistaken", "x")
    assert refused.value.reason == reason


def test_one_appeal_per_rating_even_after_it_is_dismissed():
    rating = rating_of(subject_wang(), level=1)
    applied(rating, rating.file_appeal(WANG, subject_wang(), "mistaken", "认错人了"))
    with pytest.raises(Conflict) as refused:
        rating.file_appeal(CADRE, subject_wang(), "malicious", "x")
    assert refused.value.reason == "already_appealed"
    applied(rating, rating.decide_appeal(CADRE2, False, "证据不足"))
    with pytest.raises(Conflict) as refused:
        rating.file_appeal(WANG, subject_wang(), "malicious", "again")
    assert refused.value.reason == "already_appealed"


def test_an_excluded_rating_is_not_appealed():
    rating = rating_of(subject_wang(), level=1)
    applied(rating, rating.exclude("burst", "c1", "burst_review"))
    with pytest.raises(Conflict) as refused:
        rating.file_appeal(WANG, subject_wang(), "malicious", "x")
    assert refused.value.reason == "already_excluded"


def test_neither_the_appellant_nor_the_rated_person_decides():
    rating = rating_of(subject_wang(), level=1)
    applied(rating, rating.file_appeal(CADRE, subject_wang(), "malicious", "x"))
    for decider in (CADRE, WANG):  # the appellant; the rated person (a cadre too)
        with pytest.raises(Forbidden) as refused:
            rating.decide_appeal(decider, True, "x")
        assert refused.value.reason == "own_appeal"
    for decider in (GRID, RATER, OUTSIDE_CADRE):  # not cadres (or not of this community)
        with pytest.raises(Forbidden):
            rating.decide_appeal(decider, True, "x")
    assert rating.appeal["status"] == "pending"


def test_no_decision_without_a_pending_appeal():
    rating = rating_of(subject_wang(), level=1)
    with pytest.raises(Conflict) as refused:
        rating.decide_appeal(CADRE2, True, "x")
    assert refused.value.reason == "no_pending_appeal"


def test_an_upheld_appeal_excludes_the_rating_with_the_reason():
    rating = rating_of(subject_wang(), level=1)
    applied(rating, rating.file_appeal(WANG, subject_wang(), "malicious", "恶意"))
    events = rating.decide_appeal(CADRE2, True, "核实为恶意差评")
    assert types(events) == ["AppealDecided", "RatingExcluded"]
    decided, excluded = events
    assert decided.data["upheld"] is True and decided.data["by"] == "c2"
    assert excluded.data["reason"] == "appeal upheld (malicious): 核实为恶意差评"
    assert (excluded.data["via"], excluded.data["by"], excluded.data["level"]) == ("appeal", "c2", 1)
    assert stats_changes(excluded.event_type, excluded.data) == ((1, -1),)
    applied(rating, events)
    assert rating.appeal["status"] == "upheld" and rating.excluded["reason"] == excluded.data["reason"]
    assert rating.level == 1  # nothing deleted


def test_a_dismissed_appeal_excludes_nothing():
    rating = rating_of(subject_wang(), level=2)
    applied(rating, rating.file_appeal(GRID, subject_wang(), "mistaken", "x"))
    events = rating.decide_appeal(ADMIN, False, "评价属实")
    assert types(events) == ["AppealDecided"] and events[0].data["upheld"] is False
    applied(rating, events)
    assert rating.excluded is None and rating.appeal["status"] == "dismissed"
    assert rating.appeal["decision"]["reason"] == "评价属实"
    with pytest.raises(Conflict):
        rating.decide_appeal(CADRE2, True, "改判")


# -- follow-up cases ---------------------------------------------------------------------------

def open_case(level: int = 2, at: datetime = T0, working_days: int = 5,
              cls: type[FollowUpCase] = FollowUpCase) -> FollowUpCase:
    subject = subject_wang()
    rating = rating_of(subject, level=level)
    case = cls(id="k1")
    return applied(case, case.open(rating, subject, at, working_days), at)


def test_a_case_opens_with_the_working_day_deadline():
    case = open_case()
    # Monday 2026-10-05 10:00 local: Tue 6 … Mon 12 → end of Mon 12 = 2026-10-12T16:00Z
    assert case.deadline == "2026-10-12T16:00:00.000000Z"
    assert (case.status, case.person_id, case.subject_id) == ("open", "r1", "wang")
    shown = open_case(cls=CaseRecord).view(T0)
    assert (shown["level"], shown["rating_id"], shown["subject_name"], shown["overdue"]) == (
        2, "rt-wang-r1", "王书记", False)


def test_contact_before_rectification_before_confirmation():
    case = open_case()
    with pytest.raises(Conflict) as refused:
        case.rectify(CADRE, "加快办理")
    assert refused.value.reason == "contact_first"
    with pytest.raises(Conflict) as refused:
        case.confirm(RATER, True, "", T0)
    assert refused.value.reason == "rectification_first"
    applied(case, case.contact(GRID, "phone", "已回访"))
    with pytest.raises(Conflict) as refused:
        case.confirm(RATER, True, "", T0)
    assert refused.value.reason == "rectification_first"
    applied(case, case.rectify(CADRE, "加快办理"))
    [closed] = case.confirm(RATER, False, "还是慢", T0)
    assert closed.data == {"case_id": "k1", "satisfied": False, "comment": "还是慢", "confirmed_by": "r1",
                           "by_resident": True, "late": False}


def test_only_handlers_of_the_community_work_a_case():
    case = open_case()
    for actor in (RATER, OTHER_RESIDENT, OUTSIDE_CADRE):
        with pytest.raises(Forbidden):
            case.contact(actor, "visit", "x")


def test_the_resident_or_a_handler_confirms():
    case = open_case()
    applied(case, case.contact(CADRE, "visit", "上门"))
    applied(case, case.rectify(CADRE, "整改"))
    with pytest.raises(Forbidden):
        case.confirm(OTHER_RESIDENT, True, "", T0)
    with pytest.raises(Forbidden):
        case.confirm(OUTSIDE_CADRE, True, "", T0)
    [by_handler] = case.confirm(GRID, True, "电话确认满意", T0)
    assert (by_handler.data["by_resident"], by_handler.data["confirmed_by"]) == (False, "g1")


def test_a_closed_case_refuses_every_command():
    case = open_case(cls=CaseRecord)
    applied(case, case.contact(CADRE, "visit", "上门"))
    applied(case, case.rectify(CADRE, "整改"))
    applied(case, case.confirm(RATER, True, "", T0))
    assert case.status == "closed" and case.outcome["late"] is False and case.overdue is False
    assert [c["by"] for c in case.contacts] == ["c1"] and case.rectifications[0]["actions"] == "整改"
    for command in (lambda: case.contact(CADRE, "phone", "x"), lambda: case.rectify(CADRE, "x"),
                    lambda: case.confirm(RATER, True, "", T0)):
        with pytest.raises(Conflict) as refused:
            command()
        assert refused.value.reason == "case_closed"
    assert case.overdue_events(datetime(2027, 1, 1, tzinfo=UTC)) == []


def test_overdue_only_after_the_deadline_and_only_once():
    case = open_case(cls=CaseRecord)
    deadline = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)
    assert case.overdue_events(deadline - timedelta(microseconds=1)) == []
    assert case.is_overdue(deadline - timedelta(microseconds=1)) is False
    assert case.is_overdue(deadline) is True and case.view(deadline)["overdue"] is True  # shown before the sweep
    assert case.overdue is False
    [overdue] = case.overdue_events(deadline)
    assert overdue.event_type == "FollowUpOverdue" and overdue.data["deadline"] == case.deadline
    applied(case, [overdue])
    assert case.overdue is True
    assert case.overdue_events(deadline + timedelta(days=30)) == []
    # Closed late: the outcome says so.
    applied(case, case.contact(CADRE, "phone", "x"))
    applied(case, case.rectify(CADRE, "x"))
    [closed] = case.confirm(RATER, True, "", deadline + timedelta(days=1))
    assert closed.data["late"] is True
    applied(case, [closed])
    assert case.outcome["late"] is True


def test_a_case_closed_past_its_deadline_before_the_sweep_is_late_and_overdue():
    case = open_case(cls=CaseRecord)
    deadline = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)
    applied(case, case.contact(CADRE, "phone", "x"))
    applied(case, case.rectify(CADRE, "x"))
    [closed] = case.confirm(RATER, True, "", deadline)
    assert closed.data["late"] is True
    applied(case, [closed])
    assert (case.overdue, case.outcome["late"], case.view(deadline)["overdue"]) == (True, True, True)
    assert case.overdue_events(deadline + timedelta(days=1)) == []  # closed: nothing for the sweep
    # Closed in time, a closed case never shows as overdue afterwards.
    on_time = open_case(cls=CaseRecord)
    applied(on_time, on_time.contact(CADRE, "phone", "x"))
    applied(on_time, on_time.rectify(CADRE, "x"))
    applied(on_time, on_time.confirm(RATER, True, "", deadline - timedelta(microseconds=1)))
    assert (on_time.outcome["late"], on_time.view(deadline + timedelta(days=9))["overdue"]) == (False, False)


def test_a_closure_recorded_before_closures_said_whether_they_were_late():
    """``FollowUpClosed`` events stored before they carried ``late``: late when recorded overdue."""
    for recorded_overdue in (False, True):
        case = open_case(cls=CaseRecord)
        if recorded_overdue:
            applied(case, case.overdue_events(datetime(2026, 10, 12, 16, 0, tzinfo=UTC)))
        applied(case, [NewEvent("FollowUpClosed", {"case_id": "k1", "satisfied": True, "comment": "",
                                                   "confirmed_by": "r1", "by_resident": True})])
        assert (case.outcome["late"], case.overdue) == (recorded_overdue, recorded_overdue)


def test_excluding_its_rating_closes_an_open_case_and_it_is_never_overdue_again():
    deadline = datetime(2026, 10, 12, 16, 0, tzinfo=UTC)
    for recorded_overdue in (False, True):
        case = open_case(cls=CaseRecord)
        if recorded_overdue:
            applied(case, case.overdue_events(deadline))
        rating = rating_of(subject_wang(), level=1)
        assert case.close_for_exclusion(rating, deadline) == []  # not excluded: nothing
        applied(rating, rating.exclude("appeal upheld (malicious): 恶意", "c2", "appeal"))
        [closed] = case.close_for_exclusion(rating, deadline + timedelta(days=1))
        assert (closed.event_type, closed.data["reason"], closed.data["by"]) == (
            "FollowUpClosedByExclusion", "rating_excluded", "c2")
        assert closed.data["exclusion"] == {"reason": "appeal upheld (malicious): 恶意", "via": "appeal"}
        assert closed.data["was_overdue"] is True and "person_id" not in closed.data
        applied(case, [closed])
        shown = case.view(deadline + timedelta(days=9))
        assert (shown["status"], shown["overdue"], shown["outcome"]) == ("closed", False, None)
        assert shown["closure"]["was_overdue"] is True
        assert case.overdue_events(deadline + timedelta(days=9)) == []
        assert case.close_for_exclusion(rating, deadline) == []  # closed already
        with pytest.raises(Conflict) as refused:
            case.contact(CADRE, "phone", "x")
        assert refused.value.reason == "case_closed"


# -- burst incidents ---------------------------------------------------------------------------

def test_a_burst_incident_grows_within_its_window_ends_after_a_quiet_one_and_is_reviewed_once():
    subject = subject_wang()
    assert subject.growing_incident(T0) is None
    applied(subject, subject.open_incident("f1", [f"r{i}" for i in range(10)], T0 - timedelta(minutes=60), T0, 60))
    assert subject.growing_incident(T0 + timedelta(minutes=59)) == "f1"
    [grew] = subject.grow_incident("f1", ["r10"], T0 + timedelta(minutes=59))
    assert (grew.event_type, grew.data["count"]) == ("BurstIncidentGrew", 11)
    applied(subject, [grew])
    later = T0 + timedelta(minutes=59 + 60)  # a whole window after the last top rating
    assert subject.growing_incident(later - timedelta(microseconds=1)) == "f1"
    assert subject.growing_incident(later) is None
    with pytest.raises(Conflict) as refused:
        subject.review_flag(CADRE, "f1", "keep", "ok", later - timedelta(microseconds=1))
    assert refused.value.reason == "burst_ongoing"
    with pytest.raises(DomainError) as refused:
        subject.review_flag(CADRE, "nope", "keep", "ok", later)
    assert refused.value.reason == "unknown_flag"
    [reviewed] = subject.review_flag(CADRE, "f1", "exclude", "刷分", later)
    assert reviewed.data["rating_ids"] == [f"r{i}" for i in range(11)]
    applied(subject, [reviewed])
    assert subject.growing_incident(later) is None
    with pytest.raises(Conflict) as refused:
        subject.review_flag(CADRE, "f1", "keep", "ok", later)
    assert refused.value.reason == "already_reviewed"


def test_a_flag_stored_before_incidents_is_an_incident_of_its_own():
    subject = subject_wang()
    for flag_id, ids, minute in (("f1", ["a", "b"], 0), ("f2", ["c"], 1)):
        at = T0 + timedelta(minutes=minute)
        applied(subject, [NewEvent("BurstFlagged", {
            "subject_id": "wang", "flag_id": flag_id, "rating_ids": ids, "count": len(ids),
            "window_from": (at - timedelta(minutes=30)).isoformat(), "window_to": at.isoformat(),
            "community_id": C})])
    assert {k: (v["rating_ids"], v["window_minutes"], v["status"]) for k, v in subject.incidents.items()} == {
        "f1": (["a", "b"], 30, "open"), "f2": (["c"], 30, "open")}
    assert subject.flagged_ratings == {"a", "b", "c"}
    assert subject.growing_incident(T0 + timedelta(minutes=30, seconds=30)) == "f2"  # f1 ended, f2 not yet


# -- support plans -----------------------------------------------------------------------------

def entry(subject_id: str, rate: str) -> dict:
    return {"subject_id": subject_id, "name": subject_id, "satisfaction_rate": rate}


def test_below_the_threshold_triggers_a_plan_and_exactly_at_it_does_not():
    policy = dict(DEFAULT_POLICY)  # 80 %
    assert support_triggers(entry("li", "0.7999"), policy, None, None, "2026-10") == [
        {"trigger": "low_satisfaction", "satisfaction_rate": "0.7999", "threshold": "0.80"}]
    assert support_triggers(entry("li", "0.8000"), policy, None, None, "2026-10") == []
    assert support_triggers(entry("li", "0.6667"), {**policy, "satisfaction_threshold_pct": 60}, None, None,
                            "2026-10") == []
    assert support_triggers(entry("li", "0.9999"), {**policy, "satisfaction_threshold_pct": 100}, None, None,
                            "2026-10")[0]["threshold"] == "1.00"


def test_ranked_last_in_two_consecutive_periods_triggers_a_plan():
    policy = dict(DEFAULT_POLICY)
    assert support_triggers(entry("zhao", "0.9000"), policy, "zhao", "zhao", "2026-11") == [
        {"trigger": "ranked_last_twice", "periods": ["2026-10", "2026-11"]}]
    assert support_triggers(entry("zhao", "0.9000"), policy, "zhao", "zhao", "2026-01")[0]["periods"] == [
        "2025-12", "2026-01"]
    assert support_triggers(entry("zhao", "0.9000"), policy, "zhao", "zhao", "2026-Q1")[0]["periods"] == [
        "2025-Q4", "2026-Q1"]
    assert support_triggers(entry("zhao", "0.9000"), policy, "zhao", "wang", "2026-11") == []
    assert support_triggers(entry("zhao", "0.9000"), policy, "zhao", None, "2026-11") == []
    assert support_triggers(entry("zhao", "0.9000"), policy, "wang", "zhao", "2026-11") == []
    both = support_triggers(entry("zhao", "0.5000"), policy, "zhao", "zhao", "2026-11")
    assert [t["trigger"] for t in both] == ["low_satisfaction", "ranked_last_twice"]


def test_clears_threshold():
    policy = dict(DEFAULT_POLICY)
    assert clears_threshold(entry("li", "0.8000"), policy)
    assert clears_threshold(entry("li", "1.0000"), policy)
    assert not clears_threshold(entry("li", "0.7999"), policy)
    assert clears_threshold(entry("li", "0.7000"), {**policy, "satisfaction_threshold_pct": 70})


def opened_plan(cls: type[SupportPlan] = SupportPlan) -> SupportPlan:
    plan = cls(id="pl1")
    return applied(plan, plan.open({"subject_id": "wang", "name": "王书记"}, "p-wang", C, "cadre", "2026-10",
                                   [{"trigger": "low_satisfaction"}]))


def test_a_plan_is_drawn_up_by_staff_noted_by_mentor_or_staff_and_closed():
    plan = opened_plan(cls=PlanRecord)
    assert (plan.status, plan.opened_for, plan.subject_id) == ("open", "2026-10", "wang")
    with pytest.raises(Forbidden):
        plan.draw_up(RATER, {"person_id": "c2", "name": "陈"}, ["谈心"], date(2026, 12, 31))
    with pytest.raises(Forbidden):
        plan.draw_up(OUTSIDE_CADRE, {"person_id": "c2", "name": "陈"}, ["谈心"], date(2026, 12, 31))
    applied(plan, plan.draw_up(CADRE, {"person_id": "m1", "name": "老党员"}, ["谈心", "跟班学习"], date(2026, 12, 31)))
    assert plan.deadline == "2026-12-31" and plan.actions == ["谈心", "跟班学习"]
    mentor = person("m1", "resident")
    [note] = plan.note(mentor, "第一次谈心")
    assert note.data["by"] == "m1"
    applied(plan, [note])
    assert [(n["note"], n["by"]) for n in plan.view()["notes"]] == [("第一次谈心", "m1")]
    with pytest.raises(Forbidden):
        plan.note(OTHER_RESIDENT, "x")
    applied(plan, plan.close("2026-11", "0.9000"))
    assert plan.status == "closed" and plan.closed["period"] == "2026-11"
    with pytest.raises(Conflict) as refused:
        plan.note(CADRE, "x")
    assert refused.value.reason == "plan_closed"


def test_the_rated_person_is_never_their_own_mentor_by_subject_or_person_id():
    plan = opened_plan()
    for mentor in ("p-wang", "wang"):
        with pytest.raises(DomainError) as refused:
            plan.draw_up(CADRE, {"person_id": mentor, "name": "王书记"}, ["自学"], date(2026, 12, 31))
        assert refused.value.reason == "invalid_mentor"
    assert plan.mentor is None and plan.version == 1


# -- publishing --------------------------------------------------------------------------------

def test_publishing_refuses_an_open_period_and_an_identical_republication():
    table = rank({"a": stats_of([5, 4, 4]), "b": stats_of([3, 3, 3])}, POLICY)
    end = period_bounds("2026-10")[1]
    ranking = Ranking(id=f"{C}.cadre.2026-10")
    with pytest.raises(Conflict) as refused:
        ranking.publish(CADRE, C, "cadre", "2026-10", end - timedelta(microseconds=1), table, 10, 0)
    assert refused.value.reason == "period_open"
    with pytest.raises(Forbidden):
        ranking.publish(RATER, C, "cadre", "2026-10", end, table, 10, 0)
    [published] = ranking.publish(CADRE, C, "cadre", "2026-10", end, table, 10, 0)
    assert published.data["edition"] == 1 and published.data["digest"] == ranking_digest(table)
    assert (published.data["last_position"], published.data["formula"]["version"]) == (10, "bayes-v1")
    applied(ranking, [published])
    with pytest.raises(Conflict) as refused:
        ranking.publish(CADRE, C, "cadre", "2026-10", end + timedelta(days=3), table, 12, 0)
    assert refused.value.reason == "no_change"
    changed = rank({"a": stats_of([5, 4]), "b": stats_of([3, 3, 3])}, POLICY)
    [second] = ranking.publish(CADRE, C, "cadre", "2026-10", end + timedelta(days=3), changed, 12, 1)
    assert second.data["edition"] == 2


def test_a_provisional_edition_only_while_the_period_is_open():
    table = rank({"a": stats_of([5, 4, 4]), "b": stats_of([3, 3, 3])}, POLICY)
    end = period_bounds("2026-10")[1]
    ranking = Ranking(id=f"{C}.cadre.2026-10")
    with pytest.raises(Conflict) as refused:
        ranking.publish(CADRE, C, "cadre", "2026-10", end, table, 10, 0, provisional=True)
    assert refused.value.reason == "period_closed"
    [interim] = ranking.publish(CADRE, C, "cadre", "2026-10", end - timedelta(days=5), table, 10, 0,
                                provisional=True)
    assert interim.data["provisional"] is True and interim.data["edition"] == 1
    applied(ranking, [interim])
    assert ranking.latest["provisional"] is True and ranking.latest_final is None
    with pytest.raises(Conflict) as refused:
        ranking.publish(CADRE, C, "cadre", "2026-10", end - timedelta(days=4), table, 11, 0, provisional=True)
    assert refused.value.reason == "no_change"


def test_the_final_ranking_follows_an_unchanged_provisional_edition():
    """A provisional edition is not the final ranking: when no rating changed after it, the final
    publication once the period has ended must still be possible (it is what opens support plans)."""
    table = rank({"a": stats_of([5, 4, 4]), "b": stats_of([3, 3, 3])}, POLICY)
    end = period_bounds("2026-10")[1]
    ranking = Ranking(id=f"{C}.cadre.2026-10")
    applied(ranking, ranking.publish(CADRE, C, "cadre", "2026-10", end - timedelta(days=5), table, 10, 0,
                                     provisional=True))
    [final] = ranking.publish(CADRE, C, "cadre", "2026-10", end, table, 10, 0)
    assert final.data["provisional"] is False and final.data["edition"] == 2


# -- policy ------------------------------------------------------------------------------------

def test_policy_changes_by_staff_only_and_refuses_no_change_and_a_bad_prior():
    policy = Policy(id=C)
    with pytest.raises(Forbidden):
        policy.change(RATER, {"period": "quarter"})
    with pytest.raises(Forbidden):
        policy.change(OUTSIDE_CADRE, {"period": "quarter"})
    with pytest.raises(Conflict) as refused:
        policy.change(CADRE, {"period": "month", "min_ratings": 10})
    assert refused.value.reason == "no_change"
    with pytest.raises(DomainError) as refused:
        policy.change(CADRE, {"prior_mean": "5.5"})
    assert refused.value.reason == "invalid_policy"
    [event] = policy.change(CADRE, {"period": "quarter", "prior_mean": 4})
    assert event.data["settings"] == {**DEFAULT_POLICY, "period": "quarter", "prior_mean": "4.00"}
    assert event.data["changed"] == ["period", "prior_mean"]


def test_a_subjects_row_is_read_by_the_kernels_codec_and_a_row_of_before_incidents_still_folds_its_flags():
    from services.feedback.views import SubjectRecord
    from services.kernel.events import dumps

    subject = SubjectRecord(id="subject-svc", version=3, kind="service", name='窗口 "flags": 服务',
                            community_id="haicang", description='说明 {"flags": {}}',
                            incidents={"f1": {"rating_ids": ["r1", "r2"], "status": "open", "last_at": "2026-11-20T02:00:00.000000Z",
                                              "window_minutes": 60}})
    text = subject.to_json()
    assert '"flags":' not in text  # a key's spelling inside a string is escaped: the fast way reads it
    assert SubjectRecord.from_json(text) == subject
    assert SubjectRecord.from_json(text.encode()) == subject
    legacy = {**{k: v for k, v in subject.__dict__.items() if k != "incidents"},
              "flags": {"f0": {"rating_ids": ["r1", "r2"], "window_from": "2026-11-20T01:00:00.000000Z",
                               "window_to": "2026-11-20T02:00:00.000000Z", "status": "open"}}}
    read = SubjectRecord.from_json(dumps(legacy))
    assert read.incidents["f0"]["rating_ids"] == ["r1", "r2"] and read.incidents["f0"]["legacy"] is True
    assert read.incidents["f0"]["window_minutes"] == 60 and read.description == subject.description
    # a row of before the flagged ratings were derived from the incidents holds them a second time:
    # read as it was, written again without them (the fast way and the way of a row with flags)
    assert '"flagged_ratings"' not in text and subject.flagged_ratings == {"r1", "r2"}
    older = SubjectRecord.from_json(dumps({**subject.__dict__, "flagged_ratings": ["r1", "r2"]}))
    assert older == subject and '"flagged_ratings"' not in older.to_json()
    assert SubjectRecord.from_json(dumps({**legacy, "flagged_ratings": ["r1", "r2"]})).flagged_ratings == {"r1", "r2"}
