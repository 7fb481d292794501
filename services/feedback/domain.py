"""居民评价排队: satisfaction ratings, follow-up of bad ratings, appeals, rankings, support plans.

Pure domain (no I/O; the standard library and :mod:`services.kernel.model` only). The scale is the national government-service scheme (政务服务"好差评"):

    5 非常满意 · 4 满意 · 3 基本满意 · 2 不满意 · 1 非常不满意

Rules kept here, all explained where they are decided:

- Periods are calendar months (``2026-11``) or quarters (``2026-Q4``) in China Standard Time
  (UTC+8, no daylight saving), chosen per community by its policy. One rating per resident, per
  subject, per period, per source: a resident's own rating is revisable until its period ends; a
  project evaluation (共评) is a separate rating of the project's responsible unit, one per project.
- A rating of 1 or 2 (差评) opens a follow-up case with a deadline at the end of the N-th working
  day (default 5) after the rating, local time; Saturdays and Sundays do not count (statutory
  holidays are not modelled). Past the deadline the case becomes overdue by an event, which the
  periodic sweep records (``SweepOverdue``); a case closed past its deadline is closed late.
- An upheld appeal, or a staff review of a burst incident, *excludes* a rating by an event; nothing
  is deleted and the rating stays visible in its history. Its follow-up case, if still open, closes
  in the same unit of work (``FollowUpClosedByExclusion``, reason ``rating_excluded``): it is no
  longer overdue and no longer counted open.
- A burst of top ratings of one subject is one incident: it opens with ``burst_min_ratings`` top
  ratings within ``burst_window_minutes``, grows by each further top rating within the window of
  the one before, ends when none has come for a whole window (read from the clock, no event), and
  is reviewed once, after it has ended. Flags stored before (``BurstFlagged``) are incidents of
  their own.
- Ranking formula ``bayes-v1``: score = (prior_mean × prior_weight + Σ levels) / (prior_weight + n),
  rounded half-even to 4 decimals; satisfaction rate = (#4 + #5) / n. Subjects with fewer than
  ``min_ratings`` ratings are listed as not enough ratings, not ranked. Ranked by score, then n,
  both descending, then subject id; equal scores and equal n share a rank.
- Support plans (帮扶) open when a ranked subject's satisfaction rate is below the threshold, or
  when it is ranked last in two consecutive published periods; a plan closes when a later
  published period shows the subject ranked with a rate at or above the threshold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from itertools import chain
from typing import Any, ClassVar

from services.kernel.model import (
    LOCAL_TZ, Aggregate, Conflict, DomainError, Forbidden, NewEvent, Principal, format_time, parse_time,
    require_member, role_names,
)

LEVELS = {5: "非常满意 very satisfied", 4: "满意 satisfied", 3: "基本满意 basically satisfied",
          2: "不满意 dissatisfied", 1: "非常不满意 very dissatisfied"}
DIMENSIONS = ("efficiency", "attitude", "result")
SUBJECT_KINDS = ("cadre", "grid_worker", "unit", "service", "project")
PEOPLE_KINDS = ("cadre", "grid_worker")
RATERS = role_names("resident", "representative")
STAFF = role_names("cadre", "admin")
CASE_HANDLERS = role_names("cadre", "grid_worker", "admin")
LOCAL = LOCAL_TZ  # China Standard Time: periods and working days
FORMULA_VERSION = "bayes-v1"
DEFAULT_POLICY = {
    "period": "month",                  # or "quarter"
    "min_ratings": 10,                  # fewer: listed as "not enough ratings", not ranked
    "prior_mean": "3.00",               # Bayesian prior: 基本满意
    "prior_weight": 10,                 # how many ratings the prior weighs as
    "satisfaction_threshold_pct": 80,   # below: a support plan opens
    "followup_working_days": 5,
    "burst_window_minutes": 60,         # this many top ratings within the window are flagged
    "burst_min_ratings": 10,
}


# -- periods and working days -----------------------------------------------------------------

def period_of(moment: datetime, kind: str) -> str:
    local = moment.astimezone(LOCAL)
    if kind == "quarter":
        return f"{local.year}-Q{(local.month - 1) // 3 + 1}"
    return f"{local.year}-{local.month:02d}"


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """[start, end) of a period, as aware UTC datetimes."""
    year, rest = int(period[:4]), period[5:]
    if rest.startswith("Q"):
        first_month = (int(rest[1]) - 1) * 3 + 1
        months = 3
    else:
        first_month, months = int(rest), 1
    start = datetime(year, first_month, 1, tzinfo=LOCAL)
    end_month = first_month + months
    end = datetime(year + (end_month - 1) // 12, (end_month - 1) % 12 + 1, 1, tzinfo=LOCAL)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def previous_period(period: str) -> str:
    year, rest = int(period[:4]), period[5:]
    if rest.startswith("Q"):
        quarter = int(rest[1])
        return f"{year - 1}-Q4" if quarter == 1 else f"{year}-Q{quarter - 1}"
    month = int(rest)
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


def valid_period(period: str) -> bool:
    return bool(re.fullmatch(r"20\d\d-(0[1-9]|1[0-2]|Q[1-4])", period))


def working_deadline(moment: datetime, working_days: int) -> datetime:
    """The end (local midnight) of the ``working_days``-th working day after ``moment``'s day;
    Saturdays and Sundays are skipped."""
    day = moment.astimezone(LOCAL).date()
    counted = 0
    while counted < working_days:
        day += timedelta(days=1)
        if day.weekday() < 5:
            counted += 1
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=LOCAL).astimezone(timezone.utc)


# -- the ranking formula ---------------------------------------------------------------------

def empty_stats() -> dict[str, int]:
    return {"n": 0, "total": 0, "top": 0, "l1": 0, "l2": 0, "l3": 0, "l4": 0, "l5": 0}


def count_level(stats: dict[str, int], level: int, sign: int) -> None:
    stats["n"] += sign
    stats["total"] += sign * level
    stats[_LEVEL_COUNTS[level]] += sign  # (a level outside 1–5: a KeyError, as "l7" would be)
    if level >= 4:
        stats["top"] += sign


_LEVEL_COUNTS = {level: f"l{level}" for level in range(1, 6)}  # once, not per event of a replay
_SUBMITTED = {level: ((level, 1),) for level in range(1, 6)}


STATS_EVENTS = ("RatingSubmitted", "RatingRevised", "RatingExcluded")


def stats_changes(event_type: str, d: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """How a rating event changes its subject's counts in its period: ((level, +1 | -1), …)."""
    if event_type == "RatingSubmitted":  # most of a log: one tuple per level, made once
        return _SUBMITTED.get(d["level"]) or ((d["level"], 1),)
    if event_type == "RatingRevised":
        return ((d["previous_level"], -1), (d["level"], 1)) if d["counted"] else ()
    if event_type == "RatingExcluded":
        return ((d["level"], -1),)
    return ()


def bayesian_score(total: int, n: int, prior_mean: str, prior_weight: int) -> Decimal:
    value = (Decimal(prior_mean) * prior_weight + total) / Decimal(prior_weight + n)
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)


def rank(stats: dict[str, dict[str, Any]], policy: dict[str, Any]) -> dict[str, Any]:
    """``stats``: subject id -> {name, n, total, top, l1..l5}. Returns the ranked and the unranked."""
    entries = []
    for subject_id, s in stats.items():
        if s["n"] <= 0:
            continue
        entries.append({
            "subject_id": subject_id, "name": s.get("name", ""), "ratings": s["n"],
            "score": str(bayesian_score(s["total"], s["n"], policy["prior_mean"], policy["prior_weight"])),
            "average": str((Decimal(s["total"]) / s["n"]).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)),
            "satisfaction_rate": str((Decimal(s["top"]) / s["n"]).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)),
            "levels": {str(level): s[f"l{level}"] for level in range(5, 0, -1)},
        })
    ranked = [e for e in entries if e["ratings"] >= policy["min_ratings"]]
    ranked.sort(key=lambda e: (-Decimal(e["score"]), -e["ratings"], e["subject_id"]))
    previous = None
    for position, entry in enumerate(ranked, start=1):
        key = (entry["score"], entry["ratings"])
        entry["rank"] = previous[1] if previous and previous[0] == key else position
        previous = (key, entry["rank"])
    unranked = sorted((e for e in entries if e["ratings"] < policy["min_ratings"]),
                      key=lambda e: e["subject_id"])
    for entry in unranked:
        entry["rank"] = None
        entry["note"] = "not enough ratings 评价数不足"
    return {"formula": {"version": FORMULA_VERSION, "prior_mean": policy["prior_mean"],
                        "prior_weight": policy["prior_weight"], "min_ratings": policy["min_ratings"],
                        "text": "score = (prior_mean × prior_weight + Σ levels) / (prior_weight + n)"},
            "ranked": ranked, "not_enough_ratings": unranked}


def ranking_digest(table: dict[str, Any]) -> str:
    canonical = json.dumps({"ranked": table["ranked"], "not_enough_ratings": table["not_enough_ratings"],
                            "formula": table["formula"]}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _at(event) -> str:
    return format_time(event.occurred_at)


def last_ranked(ranked: list[dict[str, Any]]) -> str | None:
    """The subject ranked last, when more than one is ranked (a single subject is never "last")."""
    return ranked[-1]["subject_id"] if len(ranked) > 1 else None


# -- policy per community --------------------------------------------------------------------
#
# Each aggregate keeps what its decisions need; what readers are shown besides (names, notes,
# timestamps, a rating's earlier versions, a ranking's figures) is kept by the read models
# (:mod:`services.feedback.views`), folded from the same events.

@dataclasses.dataclass
class Policy(Aggregate):
    stream_prefix: ClassVar[str] = "policy"
    label: ClassVar[str] = "rating policy"

    settings: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_POLICY))

    def change(self, actor: Principal, changes: dict[str, Any]) -> list[NewEvent]:
        require_member(actor, self.id, STAFF)
        merged = {**self.settings, **changes}
        if "prior_mean" in changes:
            merged["prior_mean"] = f"{Decimal(str(changes['prior_mean'])):.2f}"
        if not Decimal("1") <= Decimal(merged["prior_mean"]) <= Decimal("5"):
            raise DomainError("the prior mean is a level between 1 and 5", reason="invalid_policy",
                              details={"prior_mean": "1.00 to 5.00"})
        if merged == self.settings:
            raise Conflict("the policy already has these settings", reason="no_change")
        return [NewEvent("RatingPolicyChanged", {"community_id": self.id, "settings": merged,
                                                 "changed": sorted(changes), "by": actor.person_id})]

    def on_RatingPolicyChanged(self, d, event) -> None:
        self.settings = dict(d["settings"])


# -- subjects ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Subject(Aggregate):
    stream_prefix: ClassVar[str] = "subject"
    label: ClassVar[str] = "rated subject"

    kind: str = ""
    name: str = ""
    community_id: str = ""
    person_id: str | None = None
    # flag_id -> {rating_ids, status, last_at, window_minutes}: one burst incident each (see below)
    incidents: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # the flagged ratings were kept a second time beside their incidents, in a list every top
    # rating of a growing incident made longer (and every rating of the subject read and wrote)
    retired: ClassVar[frozenset[str]] = frozenset({"flagged_ratings"})

    @property
    def flagged_ratings(self) -> frozenset[str]:
        """The ratings in the subject's burst incidents (each in one)."""
        return frozenset(chain.from_iterable(incident["rating_ids"] for incident in self.incidents.values()))

    def register(self, actor: Principal | None, body: dict[str, Any], via: str = "staff") -> list[NewEvent]:
        if self.exists:
            raise Conflict(f"subject {self.id} is already registered ({self.kind} {self.name})",
                           reason="already_registered")
        if actor is not None:
            require_member(actor, body["community_id"], STAFF)
        kind = body["kind"]
        if kind in PEOPLE_KINDS and not (body.get("person_id") and body.get("unit_id")):
            raise DomainError(f"a {kind} is a person: give their person_id and unit_id",
                              reason="person_and_unit_required",
                              details={k: "required for people" for k in ("person_id", "unit_id")
                                       if not body.get(k)})
        return [NewEvent("SubjectRegistered", {
            "subject_id": self.id, "kind": kind, "name": body["name"], "community_id": body["community_id"],
            "unit_id": body.get("unit_id"), "person_id": body.get("person_id") if kind in PEOPLE_KINDS else None,
            "description": body.get("description", ""), "via": via,
            "by": actor.person_id if actor else None})]

    def may_be_rated_by(self, actor: Principal) -> None:
        actor.require(*RATERS)
        if actor.community != self.community_id:
            raise Forbidden(f"residents rate only subjects of their own community ({actor.community}); "
                            f"{self.name} serves {self.community_id}", reason="other_community")
        if self.person_id and actor.person_id == self.person_id:
            raise Forbidden("nobody rates themselves", reason="self_rating")

    # A burst of top ratings is one *incident* (its id is the flag id readers see): it opens when
    # ``burst_min_ratings`` top ratings of the subject not in an incident came within the window,
    # grows by every further top rating that comes within the window of the one before, and ends
    # when none has come for a whole window (the window it opened with). Ending is not an event:
    # it follows from the time of its last rating and the clock (docs/adr/0013), and staff review
    # an incident once, after it has ended.

    def growing_incident(self, now: datetime) -> str | None:
        """The incident a top rating coming ``now`` joins (at most one grows at a time)."""
        return next((flag_id for flag_id, incident in self.incidents.items()
                     if incident["status"] == "open" and now < incident_end(incident)), None)

    def open_incident(self, flag_id: str, rating_ids: list[str], window_from: datetime, now: datetime,
                      window_minutes: int) -> list[NewEvent]:
        return [NewEvent("BurstIncidentOpened", {
            "subject_id": self.id, "flag_id": flag_id, "rating_ids": rating_ids, "count": len(rating_ids),
            "window_from": format_time(window_from), "window_to": format_time(now),
            "window_minutes": window_minutes, "community_id": self.community_id})]

    def grow_incident(self, flag_id: str, rating_ids: list[str], now: datetime) -> list[NewEvent]:
        incident = self.incidents[flag_id]
        return [NewEvent("BurstIncidentGrew", {
            "subject_id": self.id, "flag_id": flag_id, "rating_ids": rating_ids,
            "count": len(incident["rating_ids"]) + len(rating_ids), "window_to": format_time(now),
            "community_id": self.community_id})]

    def review_flag(self, actor: Principal, flag_id: str, decision: str, reason: str,
                    now: datetime) -> list[NewEvent]:
        """Staff keep or exclude the ratings of an incident, once, after it has ended."""
        require_member(actor, self.community_id, STAFF)
        incident = self.incidents.get(flag_id)
        if incident is None:
            raise DomainError(f"subject {self.id} has no flag {flag_id}", reason="unknown_flag",
                              details={"flag_id": "unknown"})
        if incident["status"] != "open":
            raise Conflict(f"flag {flag_id} was already reviewed", reason="already_reviewed")
        ends = incident_end(incident)
        if now < ends:
            raise Conflict(f"the burst of flag {flag_id} is still going on: top ratings keep coming; it ends "
                           f"{format_time(ends)} unless another comes before", reason="burst_ongoing",
                           details={"ends_at": format_time(ends)})
        return [NewEvent("BurstReviewed", {"subject_id": self.id, "flag_id": flag_id, "decision": decision,
                                           "reason": reason, "rating_ids": incident["rating_ids"],
                                           "community_id": self.community_id, "by": actor.person_id})]

    def on_SubjectRegistered(self, d, event) -> None:
        self.kind, self.name, self.community_id = d["kind"], d["name"], d["community_id"]
        self.person_id = d.get("person_id")

    def on_BurstIncidentOpened(self, d, event) -> None:
        self.incidents[d["flag_id"]] = {"rating_ids": list(d["rating_ids"]), "status": "open",
                                        "last_at": d["window_to"], "window_minutes": d["window_minutes"]}

    def on_BurstIncidentGrew(self, d, event) -> None:
        incident = self.incidents[d["flag_id"]]
        incident["rating_ids"] = [*incident["rating_ids"], *d["rating_ids"]]
        incident["last_at"] = d["window_to"]

    def on_BurstFlagged(self, d, event) -> None:
        """A flag stored before bursts were incidents (one per top rating after the first ten of a
        burst): an incident of its own, with the window it looked at."""
        self.incidents[d["flag_id"]] = legacy_incident(d)

    def on_BurstReviewed(self, d, event) -> None:
        self.incidents[d["flag_id"]]["status"] = "excluded" if d["decision"] == "exclude" else "kept"


def incident_end(incident: dict[str, Any]) -> datetime:
    """When a burst incident ends unless another top rating comes first: a window after its last."""
    return parse_time(incident["last_at"]) + timedelta(minutes=incident["window_minutes"])


def legacy_incident(flag: dict[str, Any]) -> dict[str, Any]:
    """The incident a flag stored before incidents reads as (``BurstFlagged``'s data, or a read
    model's flag row of that time): its ratings, its window, its last rating at the window's end."""
    window = parse_time(flag["window_to"]) - parse_time(flag["window_from"])
    return {"rating_ids": list(flag["rating_ids"]), "status": flag.get("status", "open"),
            "last_at": flag["window_to"], "window_minutes": max(1, round(window.total_seconds() / 60))}


# -- ratings ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Rating(Aggregate):
    stream_prefix: ClassVar[str] = "rating"
    label: ClassVar[str] = "rating"

    subject_id: str = ""
    subject_kind: str = ""
    subject_person_id: str | None = None
    community_id: str = ""
    period: str = ""
    person_id: str = ""
    level: int = 0
    dimensions: dict[str, int] = dataclasses.field(default_factory=dict)
    comment: str = ""
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    excluded: dict[str, Any] | None = None
    appeal: dict[str, Any] | None = None
    case_id: str | None = None

    def submit(self, subject: Subject, person_id: str, period: str, level: int, dimensions: dict[str, int],
               comment: str, source: dict[str, Any], rated_at: datetime) -> list[NewEvent]:
        if self.exists:
            raise Conflict("this rating exists already: revise it instead", reason="already_rated")
        _check_level(level, dimensions)
        return [NewEvent("RatingSubmitted", {
            "rating_id": self.id, "subject_id": subject.id, "subject_kind": subject.kind,
            "subject_name": subject.name, "subject_person_id": subject.person_id,
            "community_id": subject.community_id, "period": period, "person_id": person_id, "level": level,
            "dimensions": dimensions, "comment": comment, "source": source, "rated_at": format_time(rated_at)})]

    def revise(self, actor: Principal, now: datetime, level: int, dimensions: dict[str, int],
               comment: str, stored_comment: str | None = None) -> list[NewEvent]:
        """``stored_comment``: the rating's comment as its rater wrote it (it is stored sealed; the
        handler opens it), to refuse a revision that changes nothing."""
        if actor.person_id != self.person_id:
            raise Forbidden("only the resident who rated may revise the rating", reason="not_the_rater")
        if self.source.get("kind") != "resident":
            raise Conflict("a project evaluation is revised in the projects service, not here",
                           reason="not_revisable")
        if now >= period_bounds(self.period)[1]:
            raise Conflict(f"the period {self.period} is closed: its ratings can no longer be revised",
                           reason="period_closed")
        _check_level(level, dimensions)
        if (level, dimensions, comment) == (self.level, self.dimensions,
                                            self.comment if stored_comment is None else stored_comment):
            raise Conflict("the rating already says this", reason="no_change")
        return [NewEvent("RatingRevised", {
            "rating_id": self.id, "subject_id": self.subject_id, "subject_kind": self.subject_kind,
            "community_id": self.community_id, "period": self.period, "person_id": self.person_id,
            "previous_level": self.level, "level": level, "dimensions": dimensions, "comment": comment,
            "counted": self.excluded is None, "rated_at": format_time(now)})]

    def file_appeal(self, actor: Principal, subject: Subject, grounds: str, statement: str) -> list[NewEvent]:
        is_subject = bool(subject.person_id) and actor.person_id == subject.person_id
        if not is_subject:
            require_member(actor, self.community_id, ("cadre", "grid_worker", "admin"))
        if actor.person_id == self.person_id:
            raise Forbidden("a resident does not appeal their own rating; revise it instead", reason="own_rating")
        if self.excluded is not None:
            raise Conflict("the rating is already excluded", reason="already_excluded")
        if self.appeal is not None:
            raise Conflict(f"this rating was already appealed ({self.appeal['status']})", reason="already_appealed")
        return [NewEvent("AppealFiled", {"rating_id": self.id, "subject_id": self.subject_id,
                                         "community_id": self.community_id, "grounds": grounds,
                                         "statement": statement, "by": actor.person_id})]

    def decide_appeal(self, actor: Principal, upheld: bool, reason: str) -> list[NewEvent]:
        require_member(actor, self.community_id, STAFF)
        if self.appeal is None or self.appeal["status"] != "pending":
            raise Conflict("there is no pending appeal on this rating", reason="no_pending_appeal")
        if actor.person_id in (self.appeal["by"], self.subject_person_id):
            raise Forbidden("the appellant and the rated person do not decide the appeal", reason="own_appeal")
        events = [NewEvent("AppealDecided", {"rating_id": self.id, "subject_id": self.subject_id,
                                             "community_id": self.community_id, "upheld": upheld,
                                             "reason": reason, "by": actor.person_id})]
        if upheld:
            events += self.exclude(f"appeal upheld ({self.appeal['grounds']}): {reason}", actor.person_id, "appeal")
        return events

    def exclude(self, reason: str, by: str, via: str) -> list[NewEvent]:
        if self.excluded is not None:
            return []
        return [NewEvent("RatingExcluded", {"rating_id": self.id, "subject_id": self.subject_id,
                                            "subject_kind": self.subject_kind, "community_id": self.community_id,
                                            "period": self.period, "level": self.level, "reason": reason,
                                            "via": via, "by": by})]

    def link_case(self, case_id: str) -> list[NewEvent]:
        return [NewEvent("FollowUpLinked", {"rating_id": self.id, "case_id": case_id})]

    def on_RatingSubmitted(self, d, event) -> None:
        self.subject_id, self.subject_kind = d["subject_id"], d["subject_kind"]
        self.subject_person_id, self.community_id, self.period = d.get("subject_person_id"), d["community_id"], d["period"]
        self.person_id, self.level, self.dimensions = d["person_id"], d["level"], dict(d["dimensions"])
        self.comment, self.source = d["comment"], dict(d["source"])

    def on_RatingRevised(self, d, event) -> None:
        self.level, self.dimensions, self.comment = d["level"], dict(d["dimensions"]), d["comment"]

    def on_AppealFiled(self, d, event) -> None:
        self.appeal = {"grounds": d["grounds"], "statement": d["statement"], "by": d["by"],
                       "filed_at": _at(event), "status": "pending", "decision": None}

    def on_AppealDecided(self, d, event) -> None:
        self.appeal["status"] = "upheld" if d["upheld"] else "dismissed"
        self.appeal["decision"] = {"reason": d["reason"], "by": d["by"], "at": _at(event)}

    def on_RatingExcluded(self, d, event) -> None:
        self.excluded = {"reason": d["reason"], "via": d["via"], "by": d["by"], "at": _at(event)}

    def on_FollowUpLinked(self, d, event) -> None:
        self.case_id = d["case_id"]


def _check_level(level: int, dimensions: dict[str, int]) -> None:
    if level not in LEVELS:
        raise DomainError("the level is 1 (非常不满意) to 5 (非常满意)", reason="invalid_level",
                          details={"level": "1 to 5"})
    bad = {k: "1 to 5" for k, value in dimensions.items() if k not in DIMENSIONS or value not in LEVELS}
    if bad:
        raise DomainError("dimension scores are efficiency, attitude and result, each 1 to 5",
                          reason="invalid_dimensions", details=bad)


def is_bad(level: int) -> bool:
    return level <= 2


# -- follow-up cases --------------------------------------------------------------------------

@dataclasses.dataclass
class FollowUpCase(Aggregate):
    stream_prefix: ClassVar[str] = "case"
    label: ClassVar[str] = "follow-up case"

    subject_id: str = ""
    community_id: str = ""
    person_id: str = ""
    deadline: str = ""
    status: str = ""  # open, closed
    overdue: bool = False
    contacted: bool = False
    rectified: bool = False

    def open(self, rating: Rating, subject: Subject, opened_at: datetime, working_days: int) -> list[NewEvent]:
        return [NewEvent("FollowUpOpened", {
            "case_id": self.id, "rating_id": rating.id, "subject_id": rating.subject_id,
            "subject_name": subject.name, "subject_person_id": rating.subject_person_id,
            "community_id": rating.community_id, "person_id": rating.person_id, "level": rating.level,
            "comment": rating.comment,
            "working_days": working_days, "deadline": format_time(working_deadline(opened_at, working_days))})]

    def _handler(self, actor: Principal) -> None:
        require_member(actor, self.community_id, CASE_HANDLERS)
        if self.status != "open":
            raise Conflict(f"case {self.id} is closed", reason="case_closed")

    def contact(self, actor: Principal, channel: str, note: str) -> list[NewEvent]:
        self._handler(actor)
        return [NewEvent("ResidentContacted", {"case_id": self.id, "channel": channel, "note": note,
                                               "by": actor.person_id})]

    def rectify(self, actor: Principal, actions: str) -> list[NewEvent]:
        self._handler(actor)
        if not self.contacted:
            raise Conflict("call back the resident (回访) before recording the rectification",
                           reason="contact_first")
        return [NewEvent("RectificationRecorded", {"case_id": self.id, "actions": actions, "by": actor.person_id})]

    def confirm(self, actor: Principal, satisfied: bool, comment: str, now: datetime) -> list[NewEvent]:
        """The resident confirms the outcome; staff may record what the resident said on a call.
        Closed past the deadline, the case was closed late (whether or not the sweep had recorded it
        overdue yet)."""
        if actor.person_id != self.person_id:
            require_member(actor, self.community_id, CASE_HANDLERS)
        if self.status != "open":
            raise Conflict(f"case {self.id} is closed", reason="case_closed")
        if not self.rectified:
            raise Conflict("the case is closed after its rectification is recorded", reason="rectification_first")
        return [NewEvent("FollowUpClosed", {"case_id": self.id, "satisfied": satisfied, "comment": comment,
                                            "confirmed_by": actor.person_id,
                                            "by_resident": actor.person_id == self.person_id,
                                            "late": self.is_overdue(now)})]

    def close_for_exclusion(self, rating: "Rating", now: datetime) -> list[NewEvent]:
        """The rating was excluded (an appeal upheld, a burst excluded on review): its case, if still
        open, closes with that reason. Nothing is left to follow up, so the case is no longer
        overdue, whether or not it had been (``was_overdue`` keeps that)."""
        if self.status != "open" or rating.excluded is None:
            return []
        return [NewEvent("FollowUpClosedByExclusion", {
            "case_id": self.id, "rating_id": rating.id, "community_id": self.community_id,
            "subject_id": self.subject_id, "reason": "rating_excluded",
            "exclusion": {"reason": rating.excluded["reason"], "via": rating.excluded["via"]},
            "by": rating.excluded["by"], "was_overdue": self.is_overdue(now)})]

    def is_overdue(self, now: datetime) -> bool:
        """Recorded overdue, or open and past its deadline (the sweep records it later)."""
        return self.overdue or (self.status == "open" and now >= parse_time(self.deadline))

    def overdue_events(self, now: datetime) -> list[NewEvent]:
        if self.status == "open" and not self.overdue and now >= parse_time(self.deadline):
            return [NewEvent("FollowUpOverdue", {"case_id": self.id, "deadline": self.deadline,
                                                 "community_id": self.community_id, "subject_id": self.subject_id})]
        return []

    def on_FollowUpOpened(self, d, event) -> None:
        for key in ("subject_id", "community_id", "person_id", "deadline"):
            setattr(self, key, d[key])
        self.status = "open"

    def on_ResidentContacted(self, d, event) -> None:
        self.contacted = True

    def on_RectificationRecorded(self, d, event) -> None:
        self.rectified = True

    def on_FollowUpClosed(self, d, event) -> None:
        self.status = "closed"
        if d.get("late"):  # closed past its deadline before the sweep recorded it overdue
            self.overdue = True

    def on_FollowUpOverdue(self, d, event) -> None:
        self.overdue = True

    def on_FollowUpClosedByExclusion(self, d, event) -> None:
        self.status, self.overdue = "closed", False


# -- published rankings -----------------------------------------------------------------------

def ranking_key(community_id: str, kind: str, period: str) -> str:
    return f"{community_id}.{kind}.{period}"


@dataclasses.dataclass
class Ranking(Aggregate):
    stream_prefix: ClassVar[str] = "ranking"
    label: ClassVar[str] = "published ranking"

    community_id: str = ""
    kind: str = ""
    period: str = ""
    # One per edition: {edition, digest, provisional, last_ranked}; the figures are the read model's.
    editions: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def publish(self, actor: Principal, community_id: str, kind: str, period: str, now: datetime,
                table: dict[str, Any], last_position: int, policy_version: int,
                provisional: bool = False) -> list[NewEvent]:
        """Publish the ranking of a closed period; a *provisional* edition (月中排名) of an open
        period is allowed, marked so, and opens no support plans."""
        require_member(actor, community_id, STAFF)
        period_open = now < period_bounds(period)[1]
        if period_open and not provisional:
            raise Conflict(f"the period {period} is still open: its ratings may change until it ends "
                           "(publish a provisional edition instead)", reason="period_open")
        if provisional and not period_open:
            raise Conflict(f"the period {period} is closed: publish the final ranking", reason="period_closed")
        digest = ranking_digest(table)
        latest = self.latest
        if latest and latest["digest"] == digest and latest["provisional"] == provisional:
            raise Conflict("this ranking is already published with the same figures", reason="no_change")
        return [NewEvent("RankingPublished", {
            "community_id": community_id, "kind": kind, "period": period, "edition": len(self.editions) + 1,
            "formula": table["formula"], "last_position": last_position, "policy_version": policy_version,
            "ranked": table["ranked"], "not_enough_ratings": table["not_enough_ratings"], "digest": digest,
            "provisional": provisional, "by": actor.person_id})]

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.editions[-1] if self.editions else None

    @property
    def latest_final(self) -> dict[str, Any] | None:
        return next((e for e in reversed(self.editions) if not e["provisional"]), None)

    def on_RankingPublished(self, d, event) -> None:
        self.community_id, self.kind, self.period = d["community_id"], d["kind"], d["period"]
        self.editions.append({"edition": d["edition"], "digest": d["digest"],
                              "provisional": d.get("provisional", False), "last_ranked": last_ranked(d["ranked"])})


# -- support plans (帮扶) ----------------------------------------------------------------------

@dataclasses.dataclass
class SupportPlan(Aggregate):
    stream_prefix: ClassVar[str] = "plan"
    label: ClassVar[str] = "support plan"

    subject_id: str = ""
    subject_person_id: str | None = None
    community_id: str = ""
    opened_for: str = ""
    status: str = ""  # open, closed
    mentor: dict[str, str] | None = None

    def open(self, entry: dict[str, Any], subject_person_id: str | None, community_id: str, kind: str,
             period: str, triggers: list[dict[str, Any]]) -> list[NewEvent]:
        return [NewEvent("SupportPlanOpened", {"plan_id": self.id, "subject_id": entry["subject_id"],
                                               "subject_name": entry["name"], "subject_person_id": subject_person_id,
                                               "community_id": community_id, "kind": kind, "period": period,
                                               "triggers": triggers})]

    def draw_up(self, actor: Principal, mentor: dict[str, str], actions: list[str], deadline: date) -> list[NewEvent]:
        require_member(actor, self.community_id, STAFF)
        self._open()
        if mentor["person_id"] in (self.subject_id, self.subject_person_id):
            raise DomainError("the mentor is someone else", reason="invalid_mentor", details={"mentor": "not the subject"})
        return [NewEvent("SupportPlanDrawnUp", {"plan_id": self.id, "mentor": mentor, "actions": actions,
                                                "deadline": deadline.isoformat(), "by": actor.person_id})]

    def note(self, actor: Principal, text: str) -> list[NewEvent]:
        if not (self.mentor and actor.person_id == self.mentor["person_id"]):
            require_member(actor, self.community_id, STAFF)
        self._open()
        return [NewEvent("SupportProgressNoted", {"plan_id": self.id, "note": text, "by": actor.person_id})]

    def close(self, period: str, rate: str) -> list[NewEvent]:
        return [NewEvent("SupportPlanClosed", {"plan_id": self.id, "subject_id": self.subject_id, "period": period,
                                               "satisfaction_rate": rate,
                                               "reason": f"satisfaction rate {rate} in {period} clears the threshold"})]

    def _open(self) -> None:
        if self.status != "open":
            raise Conflict(f"support plan {self.id} is closed", reason="plan_closed")

    def on_SupportPlanOpened(self, d, event) -> None:
        self.subject_id, self.community_id = d["subject_id"], d["community_id"]
        self.subject_person_id = d.get("subject_person_id")
        self.opened_for, self.status = d["period"], "open"

    def on_SupportPlanDrawnUp(self, d, event) -> None:
        self.mentor = d["mentor"]

    def on_SupportPlanClosed(self, d, event) -> None:
        self.status = "closed"


def support_triggers(entry: dict[str, Any], policy: dict[str, Any], last_subject: str | None,
                     previous_last_subject: str | None, period: str) -> list[dict[str, Any]]:
    """Why a ranked subject needs a support plan (empty: it does not)."""
    triggers = []
    threshold = Decimal(policy["satisfaction_threshold_pct"]) / 100
    if Decimal(entry["satisfaction_rate"]) < threshold:
        triggers.append({"trigger": "low_satisfaction", "satisfaction_rate": entry["satisfaction_rate"],
                         "threshold": str(threshold.quantize(Decimal("0.01")))})
    if last_subject == entry["subject_id"] and previous_last_subject == entry["subject_id"]:
        triggers.append({"trigger": "ranked_last_twice", "periods": [previous_period(period), period]})
    return triggers


def clears_threshold(entry: dict[str, Any], policy: dict[str, Any]) -> bool:
    return Decimal(entry["satisfaction_rate"]) >= Decimal(policy["satisfaction_threshold_pct"]) / 100
