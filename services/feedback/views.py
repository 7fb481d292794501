"""Read models of the feedback service and the queries over them.

- ``policies_view``, ``subjects_view``, ``ratings_view``, ``cases_view``, ``rankings_view``,
  ``plans_view``: current state as JSON with indexed columns. Each keeps a *record*: the
  aggregate's state and what readers are shown besides (names, notes, timestamps, a rating's
  number of revisions, a ranking's figures), folded from the same events, with its ``view()``;
- ``subject_stats``: per subject and period the counted ratings (n, Σ levels, #4–5, per level),
  kept incrementally so that a live ranking is one indexed read; a published ranking is checked
  by folding the same events from the log instead (:func:`fold_stats`).

Published rankings are also read without a token (:func:`public_ranking`), through the privacy
policy's allow-lists (:func:`services.kernel.privacy.public_view`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.feedback.domain import (
    DEFAULT_POLICY, LEVELS, STATS_EVENTS, FollowUpCase, Policy, Ranking, Rating, Subject, SupportPlan, count_level,
    empty_stats, incident_end, legacy_incident, period_of, rank, ranking_digest, ranking_key, stats_changes,
)
from services.kernel import privacy
from services.kernel.aggregate import AggregateView
from services.kernel.cache import AtVersion, EncodedAnswer
from services.kernel.db import Prepared
from services.kernel.events import StoredEvent, dumps, format_time, parse_time, to_micros
from services.kernel.eventstore import EventStore, chunked


def _at(event) -> str:
    return format_time(event.occurred_at)


# -- records: an aggregate's state and what readers see of it besides -----------------------------

@dataclasses.dataclass
class SubjectRecord(Subject):
    unit_id: str | None = None
    description: str = ""
    registered_via: str = ""

    @classmethod
    def from_json(cls, text: str) -> "SubjectRecord":
        """A row; one kept before bursts were incidents holds ``flags``, each an incident of its own
        (as :meth:`on_BurstFlagged` folds the events a rebuild reads)."""
        if (b'"flags":' if isinstance(text, bytes) else '"flags":') not in text:  # (inside a string it reads \"flags\")
            return super().from_json(text)  # the kernel's codec and its way without __init__ (issue 23)
        fields = json.loads(text)
        if "flags" in fields:
            fields["incidents"] = {flag_id: _legacy_row(flag) for flag_id, flag in fields.pop("flags").items()}
        return cls.from_fields(fields)

    def view(self) -> dict[str, Any]:
        return {"subject_id": self.id, "kind": self.kind, "name": self.name, "community_id": self.community_id,
                "unit_id": self.unit_id, "person_id": self.person_id, "description": self.description,
                "registered_via": self.registered_via, "version": self.version, "created_at": self.created_at,
                "open_flags": open_flags(self)}

    def flags(self, now: datetime) -> list[dict[str, Any]]:
        """The burst incidents (flags), oldest first, as they stand ``now``: ``ongoing`` while top
        ratings keep coming within the window, ``ends_at`` a window after the last one."""
        return sorted(({"flag_id": flag_id, **incident, "count": len(incident["rating_ids"]),
                        "window_to": incident["last_at"], "ends_at": format_time(incident_end(incident)),
                        "ongoing": incident["status"] == "open" and now < incident_end(incident)}
                       for flag_id, incident in self.incidents.items()),
                      key=lambda flag: (flag["flagged_at"], flag["flag_id"]))

    def on_SubjectRegistered(self, d, event) -> None:
        super().on_SubjectRegistered(d, event)
        self.unit_id, self.description = d.get("unit_id"), d.get("description", "")
        self.registered_via = d.get("via", "staff")

    def on_BurstIncidentOpened(self, d, event) -> None:
        super().on_BurstIncidentOpened(d, event)
        self.incidents[d["flag_id"]].update({"window_from": d["window_from"], "first_at": d["window_to"],
                                             "flagged_at": _at(event), "legacy": False, "review": None})

    def on_BurstFlagged(self, d, event) -> None:
        super().on_BurstFlagged(d, event)
        self.incidents[d["flag_id"]].update({"window_from": d["window_from"], "first_at": d["window_to"],
                                             "flagged_at": _at(event), "legacy": True, "review": None})

    def on_BurstReviewed(self, d, event) -> None:
        super().on_BurstReviewed(d, event)
        self.incidents[d["flag_id"]]["review"] = {"decision": d["decision"], "reason": d["reason"], "by": d["by"],
                                                  "at": _at(event)}


def _legacy_row(flag: dict[str, Any]) -> dict[str, Any]:
    """A read model's flag row of before incidents, as the incident its event folds to now."""
    return {**legacy_incident(flag), "window_from": flag["window_from"], "first_at": flag["window_to"],
            "flagged_at": flag.get("flagged_at", flag["window_to"]), "legacy": True, "review": flag.get("review")}


def open_flags(subject: Subject) -> int:
    """Burst incidents awaiting review (ongoing ones too)."""
    return sum(1 for incident in subject.incidents.values() if incident["status"] == "open")


@dataclasses.dataclass
class RatingRecord(Rating):
    subject_name: str = ""
    rated_at: str = ""
    revisions: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.revisions, list):  # a row kept when ratings held their earlier versions
            self.revisions = len(self.revisions)

    def view(self) -> dict[str, Any]:
        """Everything; readers get it through the privacy policy (``kind="rating"``), with the public id."""
        return {"rating_id": self.id, "subject_id": self.subject_id, "subject_kind": self.subject_kind,
                "subject_name": self.subject_name, "community_id": self.community_id, "period": self.period,
                "person_id": self.person_id, "level": self.level,
                "level_label": LEVELS.get(self.level), "dimensions": self.dimensions, "comment": self.comment,
                "rated_at": self.rated_at, "source": {"kind": self.source.get("kind"),
                                                      "project_id": self.source.get("project_id")},
                "revisions": self.revisions, "excluded": self.excluded,
                "appeal": self.appeal, "case_id": self.case_id, "version": self.version,
                "created_at": self.created_at, "updated_at": self.updated_at}

    def on_RatingSubmitted(self, d, event) -> None:
        super().on_RatingSubmitted(d, event)
        self.subject_name, self.rated_at = d["subject_name"], d["rated_at"]

    def on_RatingRevised(self, d, event) -> None:
        super().on_RatingRevised(d, event)
        self.revisions += 1
        self.rated_at = d["rated_at"]


@dataclasses.dataclass
class CaseRecord(FollowUpCase):
    rating_id: str = ""
    subject_name: str = ""
    subject_person_id: str | None = None
    level: int = 0
    comment: str = ""
    contacts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rectifications: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    outcome: dict[str, Any] | None = None
    closure: dict[str, Any] | None = None  # closed because its rating was excluded

    def __post_init__(self) -> None:
        # A row kept before cases held these two flags: they follow from the lists.
        self.contacted = self.contacted or bool(self.contacts)
        self.rectified = self.rectified or bool(self.rectifications)

    def view(self, now: datetime) -> dict[str, Any]:
        """Everything; readers get it through the privacy policy (``kind="case"``), with the public
        rating id. An open case past its deadline shows as overdue before the sweep records it."""
        return {"case_id": self.id, "rating_id": self.rating_id, "subject_id": self.subject_id,
                "subject_name": self.subject_name, "community_id": self.community_id,
                "person_id": self.person_id, "level": self.level,
                "level_label": LEVELS.get(self.level), "comment": self.comment, "deadline": self.deadline,
                "status": self.status, "overdue": self.is_overdue(now), "contacts": self.contacts,
                "rectifications": self.rectifications, "outcome": self.outcome, "closure": self.closure,
                "version": self.version,
                "created_at": self.created_at, "updated_at": self.updated_at}

    def on_FollowUpOpened(self, d, event) -> None:
        super().on_FollowUpOpened(d, event)
        self.rating_id, self.subject_name, self.level, self.comment = (
            d["rating_id"], d["subject_name"], d["level"], d["comment"])
        self.subject_person_id = d.get("subject_person_id")

    def on_ResidentContacted(self, d, event) -> None:
        super().on_ResidentContacted(d, event)
        self.contacts.append({"channel": d["channel"], "note": d["note"], "by": d["by"], "at": _at(event)})

    def on_RectificationRecorded(self, d, event) -> None:
        super().on_RectificationRecorded(d, event)
        self.rectifications.append({"actions": d["actions"], "by": d["by"], "at": _at(event)})

    def on_FollowUpClosed(self, d, event) -> None:
        late = d.get("late", self.overdue)  # before the event said so: overdue when it was closed
        super().on_FollowUpClosed(d, event)
        self.outcome = {"satisfied": d["satisfied"], "comment": d["comment"], "confirmed_by": d["confirmed_by"],
                        "by_resident": d["by_resident"], "at": _at(event), "late": late}

    def on_FollowUpClosedByExclusion(self, d, event) -> None:
        super().on_FollowUpClosedByExclusion(d, event)
        self.closure = {"reason": d["reason"], "exclusion": d["exclusion"], "by": d["by"],
                        "was_overdue": d["was_overdue"], "at": _at(event)}


@dataclasses.dataclass
class RankingRecord(Ranking):
    """Every edition with its figures (the aggregate keeps only what the next decision needs).

    A record keeps what its aggregate keeps, and more (each edition here is the aggregate's, with
    the figures added): the read model's rows are the aggregate's snapshots too."""

    def on_RankingPublished(self, d, event) -> None:
        super().on_RankingPublished(d, event)
        self.editions[-1].update({k: d[k] for k in ("formula", "last_position", "policy_version", "ranked",
                                                     "not_enough_ratings", "by")})
        self.editions[-1].update({"published_at": _at(event), "position": event.position})


@dataclasses.dataclass
class PlanRecord(SupportPlan):
    subject_name: str = ""
    kind: str = ""
    triggers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    actions: list[str] = dataclasses.field(default_factory=list)
    deadline: str | None = None
    notes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    closed: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {"plan_id": self.id, "subject_id": self.subject_id, "subject_name": self.subject_name,
                "community_id": self.community_id, "kind": self.kind, "opened_for": self.opened_for,
                "triggers": self.triggers, "status": self.status, "mentor": self.mentor, "actions": self.actions,
                "deadline": self.deadline, "notes": self.notes, "closed": self.closed, "version": self.version,
                "created_at": self.created_at, "updated_at": self.updated_at}

    def on_SupportPlanOpened(self, d, event) -> None:
        super().on_SupportPlanOpened(d, event)
        self.subject_name, self.kind, self.triggers = d["subject_name"], d["kind"], d["triggers"]

    def on_SupportPlanDrawnUp(self, d, event) -> None:
        super().on_SupportPlanDrawnUp(d, event)
        self.actions, self.deadline = d["actions"], d["deadline"]

    def on_SupportProgressNoted(self, d, event) -> None:
        self.notes.append({"note": d["note"], "by": d["by"], "at": _at(event)})

    def on_SupportPlanClosed(self, d, event) -> None:
        super().on_SupportPlanClosed(d, event)
        self.closed = {"period": d["period"], "satisfaction_rate": d["satisfaction_rate"], "reason": d["reason"],
                       "at": _at(event)}


POLICIES = AggregateView(Policy, "policies_view")
SUBJECTS = AggregateView(SubjectRecord, "subjects_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("open_flags", sa.Integer, nullable=False),
], lambda s: {"community_id": s.community_id, "kind": s.kind, "open_flags": open_flags(s)})
RATINGS = AggregateView(RatingRecord, "ratings_view", [
    sa.Column("subject_id", sa.String(100), nullable=False),
    sa.Column("community_id", sa.String(100), nullable=False),
    sa.Column("period", sa.String(10), nullable=False),
    sa.Column("person_id", sa.String(100), nullable=False, index=True),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("excluded", sa.Boolean, nullable=False),
    sa.Column("rated_at_us", sa.BigInteger, nullable=False),
    sa.Index("ix_ratings_subject_period", "subject_id", "period"),
    sa.Index("ix_ratings_subject_level_time", "subject_id", "level", "rated_at_us"),
], lambda r: {"subject_id": r.subject_id, "community_id": r.community_id, "period": r.period,
              "person_id": r.person_id, "level": r.level, "excluded": r.excluded is not None,
              "rated_at_us": to_micros(parse_time(r.rated_at)) if r.rated_at else 0},
                        index_created=False)  # its lists are of a subject's period or a person's
CASES = AggregateView(CaseRecord, "cases_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("subject_id", sa.String(100), nullable=False),
    sa.Column("person_id", sa.String(100), nullable=False, index=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("overdue", sa.Boolean, nullable=False),
    sa.Column("deadline_us", sa.BigInteger, nullable=False, index=True),
], lambda c: {"community_id": c.community_id, "subject_id": c.subject_id, "person_id": c.person_id,
              "status": c.status, "overdue": c.overdue, "deadline_us": to_micros(parse_time(c.deadline))})
RANKINGS = AggregateView(RankingRecord, "rankings_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("period", sa.String(10), nullable=False),
], lambda r: {"community_id": r.community_id, "kind": r.kind, "period": r.period})
PLANS = AggregateView(PlanRecord, "plans_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("subject_id", sa.String(100), nullable=False, index=True),
    sa.Column("status", sa.String(10), nullable=False),
], lambda p: {"community_id": p.community_id, "subject_id": p.subject_id, "status": p.status})


class SubjectStats:
    """Counted ratings per subject and period, changed by rating events only."""

    name = "subject_stats"
    COUNTS = ("n", "total", "top", "l1", "l2", "l3", "l4", "l5")

    def __init__(self) -> None:
        self.table = sa.Table(
            "subject_stats", sa.MetaData(),
            sa.Column("subject_id", sa.String(100), primary_key=True),
            sa.Column("period", sa.String(10), primary_key=True),
            sa.Column("community_id", sa.String(100), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            *(sa.Column(c, sa.Integer, nullable=False) for c in self.COUNTS),
            sa.Index("ix_subject_stats_ranking", "community_id", "kind", "period"),
        )
        self.tables = [self.table]

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        """The event's change added to its subject's row by one upsert (a rating: one statement)."""
        if event.event_type in STATS_EVENTS:
            self.apply_many(connection, (event,))

    def apply_many(self, connection: Connection, events: Sequence[StoredEvent]) -> None:
        """The same as :meth:`apply` for each event: the page's changes are summed per subject and
        period in memory and added to the rows by one upsert (``n = n + excluded.n`` …), sent with
        the driver's own executemany (no statement compiling per row)."""
        deltas: dict[tuple[str, str], tuple[dict[str, Any], dict[str, int]]] = {}
        self._sum(deltas, events)
        self._add(connection, deltas)

    def replayer(self, connection: Connection) -> "_Replay":
        """For a rebuild (:func:`services.kernel.eventstore.rebuild`): the changes of the whole log
        summed in memory — one entry per subject and period, the size of the table itself, however
        long the log — and written once at the end."""
        return _Replay(self, connection)

    def _sum(self, deltas: dict, events: Sequence[StoredEvent]) -> None:
        for event in events:
            event_type = event.event_type
            if event_type not in STATS_EVENTS:
                continue
            d = event.data_as(Counted)
            changes = stats_changes(event_type, d)
            if not changes:
                continue
            key = (d.subject_id, d.period)
            entry = deltas.get(key)
            if entry is None:
                entry = deltas[key] = ({"subject_id": d.subject_id, "period": d.period,
                                        "community_id": d.community_id, "subject_kind": d.subject_kind},
                                       empty_stats())
            for level, sign in changes:
                count_level(entry[1], level, sign)

    def _add(self, connection: Connection, deltas: dict) -> None:
        if not deltas:
            return
        rows = [(d["subject_id"], d["period"], d["community_id"], d["subject_kind"], *(stats[c] for c in self.COUNTS))
                for d, stats in deltas.values()]
        # on the driver's cursor, in the caller's transaction: a rating's command runs this, and a
        # statement through SQLAlchemy would make it join (and end) the command's transaction itself
        upsert = _stats_upsert(connection.dialect.paramstyle, self.COUNTS)
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            if len(rows) == 1:
                cursor.execute(upsert, rows[0])
            else:
                cursor.executemany(upsert, rows)
        finally:
            cursor.close()

    def for_ranking(self, connection: Connection, community_id: str, kind: str, period: str) -> dict[str, dict]:
        t, s = self.table, SUBJECTS.table
        rows = connection.execute(
            sa.select(t, s.c.state).join(s, s.c.id == t.c.subject_id, isouter=True)
            .where(t.c.community_id == community_id, t.c.kind == kind, t.c.period == period)).all()
        return {r.subject_id: {"name": _name(r.state), **{c: getattr(r, c) for c in self.COUNTS}} for r in rows}

    def for_subject(self, connection: Connection, subject_id: str, period: str) -> dict[str, int]:
        t = self.table
        row = connection.execute(sa.select(t).where(t.c.subject_id == subject_id, t.c.period == period)).first()
        return {c: getattr(row, c) for c in self.COUNTS} if row is not None else empty_stats()


@functools.cache
def _stats_upsert(paramstyle: str, counts: tuple[str, ...]) -> str:
    """``subject_stats``' upsert that adds a row's counts to the stored ones, in the driver's style."""
    mark = "?" if paramstyle == "qmark" else "%s"
    columns = ("subject_id", "period", "community_id", "kind", *counts)
    return (f"INSERT INTO subject_stats ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))}) "
            f"ON CONFLICT (subject_id, period) DO UPDATE SET "
            + ", ".join(f"{c} = subject_stats.{c} + excluded.{c}" for c in counts))


@dataclasses.dataclass
class _Replay:
    stats: SubjectStats
    connection: Connection
    deltas: dict = dataclasses.field(default_factory=dict)

    def apply(self, events: Sequence[StoredEvent]) -> None:
        self.stats._sum(self.deltas, events)

    def finish(self) -> None:
        for chunk in chunked(list(self.deltas.items()), 5000):
            self.stats._add(self.connection, dict(chunk))


class RankingPages:
    """Published rankings by page: one row per edition (its figures without the lists) and one
    per entry, so that reading a page of a 10,000-subject ranking is two indexed reads instead of
    parsing every edition of the ranking's state."""

    name = "ranking_pages"
    SECTIONS = ("ranked", "not_enough_ratings")

    def __init__(self) -> None:
        metadata = sa.MetaData()
        self.editions = sa.Table(
            "ranking_editions", metadata,
            sa.Column("ranking_id", sa.String(200), primary_key=True),
            sa.Column("edition", sa.Integer, primary_key=True),
            sa.Column("header", sa.Text, nullable=False),
            sa.Column("ranked", sa.Integer, nullable=False),
            sa.Column("not_enough_ratings", sa.Integer, nullable=False),
        )
        self.entries = sa.Table(
            "ranking_entries", metadata,
            sa.Column("ranking_id", sa.String(200), primary_key=True),
            sa.Column("edition", sa.Integer, primary_key=True),
            sa.Column("section", sa.SmallInteger, primary_key=True),
            sa.Column("seq", sa.Integer, primary_key=True),
            sa.Column("entry", sa.Text, nullable=False),
        )
        self.tables = [self.editions, self.entries]

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        if event.event_type != "RankingPublished":
            return
        d = event.data
        ranking_id = ranking_key(d["community_id"], d["kind"], d["period"])
        edition = RankingRecord(id=ranking_id)
        edition.apply(event)  # the edition exactly as the ranking's record keeps it
        header = {k: v for k, v in edition.latest.items() if k not in self.SECTIONS}
        connection.execute(self.editions.insert().values(
            ranking_id=ranking_id, edition=d["edition"], header=json.dumps(header, ensure_ascii=False),
            ranked=len(d["ranked"]), not_enough_ratings=len(d["not_enough_ratings"])))
        rows = [{"ranking_id": ranking_id, "edition": d["edition"], "section": section, "seq": seq,
                 "entry": json.dumps(entry, ensure_ascii=False)}
                for section, name in enumerate(self.SECTIONS) for seq, entry in enumerate(d[name])]
        if rows:
            connection.execute(self.entries.insert(), rows)

    def page(self, connection: Connection, ranking_id: str, limit: int, offset: int) -> dict[str, Any] | None:
        """The latest edition with ``limit`` entries of each list from ``offset``, or None."""
        e, t = self.editions, self.entries
        row = connection.execute(sa.select(e).where(e.c.ranking_id == ranking_id)
                                 .order_by(e.c.edition.desc()).limit(1)).first()
        if row is None:
            return None
        result = {**json.loads(row.header), "editions": row.edition, "limit": limit, "offset": offset,
                  "total_ranked": row.ranked, "total_not_enough_ratings": row.not_enough_ratings}
        for section, name in enumerate(self.SECTIONS):
            result[name] = [json.loads(r.entry) for r in connection.execute(
                sa.select(t.c.entry).where(t.c.ranking_id == ranking_id, t.c.edition == row.edition,
                                           t.c.section == section, t.c.seq >= offset)
                .order_by(t.c.seq).limit(limit))]
        return result


class _Named(msgspec.Struct):
    name: str = ""


_NAME_OF = msgspec.json.Decoder(_Named)  # a subject's name out of its state, the rest skipped unread


def _name(state: str | None) -> str:
    return _NAME_OF.decode(state).name if state else ""


class Counted(msgspec.Struct):
    """What the rating counts read of a rating event (``STATS_EVENTS``), decoded alone from the
    log's bytes by :meth:`StoredEvent.data_as` (a rating's other fields are skipped unread); read
    like the payload (``d["level"]``), so :func:`stats_changes` takes either."""

    subject_id: str
    period: str
    community_id: str
    subject_kind: str
    level: int
    previous_level: int | None = None
    counted: bool = False

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def fold_stats(events: Iterable[StoredEvent], community_id: str, kind: str, period: str,
               names: dict[str, str]) -> dict[str, dict]:
    """The same counts as ``subject_stats``, folded from the log (for verifying a ranking)."""
    stats: dict[str, dict] = {}
    for event in events:
        if event.event_type not in STATS_EVENTS:
            continue
        d = event.data_as(Counted)
        if d.community_id != community_id or d.subject_kind != kind or d.period != period:
            continue
        entry = stats.get(d.subject_id)
        if entry is None:
            entry = stats[d.subject_id] = {"name": names.get(d.subject_id, ""), **empty_stats()}
        for level, sign in stats_changes(event.event_type, d):
            count_level(entry, level, sign)
    return stats


def policy_for(connection: Connection, community_id: str) -> tuple[dict[str, Any], int]:
    policy = POLICIES.get(connection, community_id)
    return (dict(policy.settings), policy.version) if policy is not None else (dict(DEFAULT_POLICY), 0)


# -- named queries (the API's reads, and what the handlers' decisions read) ------------------------

def current_period(connection: Connection, community_id: str, now: datetime) -> str:
    """The community's rating period at ``now`` (its policy says month or quarter)."""
    policy, _ = policy_for(connection, community_id)
    return period_of(now, policy["period"])


def list_subjects(connection: Connection, community_id: str | None, kind: str | None,
                  flagged: bool = False) -> list[SubjectRecord]:
    where = [SUBJECTS.table.c.open_flags > 0] if flagged else []
    return SUBJECTS.find(connection, where=where, community_id=community_id, kind=kind)


def ratings_of_subject(connection: Connection, subject_id: str, period: str) -> list[RatingRecord]:
    return RATINGS.find(connection, order_by=[RATINGS.table.c.created_at_us], subject_id=subject_id, period=period)


def ratings_of_person(connection: Connection, person_id: str, limit: int = 200) -> list[RatingRecord]:
    """A resident's ratings, newest first."""
    return RATINGS.find(connection, order_by=[RATINGS.table.c.created_at_us.desc()], limit=limit, person_id=person_id)


_TOP_SINCE = Prepared(  # every rating runs it (the burst check): prepared once
    sa.select(RATINGS.table.c.id).where(
        RATINGS.table.c.subject_id == sa.bindparam("subject_id"), RATINGS.table.c.level == 5,
        RATINGS.table.c.rated_at_us >= sa.bindparam("since"), RATINGS.table.c.excluded.is_(False))
    .order_by(RATINGS.table.c.rated_at_us, RATINGS.table.c.id))


def top_ratings_since(connection: Connection, subject_id: str, since: datetime) -> list[str]:
    """The ids of the subject's counted top ratings (5) made since ``since``, oldest first."""
    return [row[0] for row in _TOP_SINCE.all(connection, {"subject_id": subject_id, "since": to_micros(since)})]


def cases_of_person(connection: Connection, person_id: str) -> list[CaseRecord]:
    return CASES.find(connection, person_id=person_id)


def _overdue(now: datetime):
    """SQL: the case is overdue at ``now`` (recorded so, or open and past its deadline)."""
    t = CASES.table
    return sa.or_(t.c.overdue.is_(True), sa.and_(t.c.status == "open", t.c.deadline_us <= to_micros(now)))


def list_cases(connection: Connection, community_id: str | None, status: str | None, overdue: bool | None,
               limit: int, now: datetime) -> list[CaseRecord]:
    """Cases by deadline; ``overdue`` as the cases show it at ``now``."""
    where = [] if overdue is None else [_overdue(now) if overdue else sa.not_(_overdue(now))]
    return CASES.find(connection, order_by=[CASES.table.c.deadline_us], limit=limit, where=where,
                      community_id=community_id, status=status)


def case_counts(connection: Connection, community_id: str | None, now: datetime) -> dict[str, int]:
    """Open cases, of them overdue at ``now``, and closed cases (of a community, or of all)."""
    t = CASES.table
    of_community = [t.c.community_id == community_id] if community_id else []
    is_open = t.c.status == "open"
    opened, overdue, closed = connection.execute(sa.select(
        _count(is_open), _count(sa.and_(is_open, _overdue(now))), _count(t.c.status == "closed"),
    ).where(*of_community)).one()
    return {"open": int(opened), "overdue": int(overdue), "closed": int(closed)}


def _count(condition):
    """SQL: how many rows meet ``condition``."""
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def cases_past_deadline(connection: Connection, now: datetime) -> list[str]:
    """Open cases past their deadline at ``now`` and not yet recorded overdue (for the sweep)."""
    t = CASES.table
    return list(connection.execute(sa.select(t.c.id).where(
        t.c.status == "open", t.c.overdue.is_(False), t.c.deadline_us <= to_micros(now)).order_by(t.c.id)).scalars())


def open_cases_of_excluded_ratings(connection: Connection) -> list[tuple[str, str]]:
    """(case id, rating id) of every open case whose rating is excluded (cases left open by an
    exclusion stored before exclusions closed their cases). Reads the open cases only."""
    t, r = CASES.table, RATINGS.table
    open_cases = {case_id: CaseRecord.from_json(state).rating_id for case_id, state in connection.execute(
        sa.select(t.c.id, t.c.state).where(t.c.status == "open").order_by(t.c.id))}
    found = []
    for chunk in chunked(sorted(set(open_cases.values()))):
        found += connection.execute(sa.select(r.c.id).where(r.c.id.in_(chunk), r.c.excluded.is_(True))).scalars()
    excluded = set(found)
    return [(case_id, rating_id) for case_id, rating_id in open_cases.items() if rating_id in excluded]


def list_plans(connection: Connection, community_id: str | None, status: str | None) -> list[PlanRecord]:
    return PLANS.find(connection, order_by=[PLANS.table.c.created_at_us], community_id=community_id, status=status)


def open_plan_of(connection: Connection, subject_id: str) -> str | None:
    """The id of the subject's open support plan, if it has one."""
    t = PLANS.table
    return connection.execute(sa.select(t.c.id).where(t.c.subject_id == subject_id, t.c.status == "open")
                              .order_by(t.c.id)).scalars().first()


def ranking_table(connection: Connection, community_id: str, kind: str, period: str) -> dict[str, Any]:
    """The ranking of ``kind`` subjects in ``period`` as it stands (by the community's policy)."""
    policy, _ = policy_for(connection, community_id)
    return rank(STATS.for_ranking(connection, community_id, kind, period), policy)


# The live ranking as it stands at a position of the log: the same until the next event (a rating,
# a subject renamed, the policy changed all move the position), so it is kept per worker, encoded.
_LIVE: AtVersion[EncodedAnswer] = AtVersion("live_ranking", size=256)


def live_ranking(store: EventStore, community_id: str, kind: str, period: str) -> EncodedAnswer:
    """The live ranking's answer as JSON, as of the log's last position:
    ``{community_id, kind, period, published: false, formula, ranked, not_enough_ratings}``.

    The answer kept for the position the log is at is given without a transaction (the position is
    one statement, and a kept answer is that position's answer); otherwise it is made in a read
    transaction, at the position of that transaction's snapshot."""
    key = (community_id, kind, period)
    kept = _LIVE.kept(store.engine, key, store.last_position())
    if kept is not None:
        return kept
    with store.read_transaction() as connection:
        def make() -> EncodedAnswer:
            table = ranking_table(connection, community_id, kind, period)
            return EncodedAnswer.of(dumps({"community_id": community_id, "kind": kind, "period": period,
                                           "published": False, **table}).encode())
        return _LIVE.get(connection, key, store.last_position(connection=connection), make)


def verify_ranking(store: EventStore, ranking: RankingRecord, edition: int | None = None) -> dict[str, Any]:
    """Recompute a published edition from the log up to its last position (a query: it records nothing)."""
    published = ranking.editions[(edition or len(ranking.editions)) - 1]
    with store.read_transaction() as connection:
        names = {r.id: SubjectRecord.from_json(r.state).name
                 for r in connection.execute(sa.select(SUBJECTS.table.c.id, SUBJECTS.table.c.state).where(
                     SUBJECTS.table.c.community_id == ranking.community_id))}
    events = store.iterate_all(up_to_position=published["last_position"])
    stats = fold_stats(events, ranking.community_id, ranking.kind, ranking.period, names)
    policy = {"prior_mean": published["formula"]["prior_mean"],
              "prior_weight": published["formula"]["prior_weight"],
              "min_ratings": published["formula"]["min_ratings"]}
    table = rank(stats, policy)
    digest = ranking_digest(table)
    return {"ranking": ranking_key(ranking.community_id, ranking.kind, ranking.period),
            "edition": published["edition"], "last_position": published["last_position"],
            "published_digest": published["digest"], "recomputed_digest": digest,
            "identical": digest == published["digest"] and table["ranked"] == published["ranked"],
            "recomputed": table}


def latest_ranking(connection: Connection, community_id: str, kind: str) -> RankingRecord | None:
    """The community's ranking of ``kind`` subjects whose latest edition was published last."""
    found = RANKINGS.find(connection, order_by=[RANKINGS.table.c.updated_at_us.desc()], limit=1,
                          community_id=community_id, kind=kind)
    return found[0] if found else None


def public_ranking(connection: Connection, community_id: str, kind: str, period: str, limit: int, offset: int,
                   min_count: int) -> dict[str, Any] | None:
    """The latest published edition of a ranking as anyone may read it (None: never published):
    the subjects' names and units, their ranks and, for those rated by at least ``min_count``
    residents, the number of ratings and the figures — never who rated, nor the ratings per level."""
    ranking_id = ranking_key(community_id, kind, period)
    page = RANKING_PAGES.page(connection, ranking_id, limit, offset)
    if page is None:
        return None
    ids = [entry["subject_id"] for name in RankingPages.SECTIONS for entry in page[name]]
    subjects = {s.id: s for s in SUBJECTS.find(connection, where=[SUBJECTS.table.c.id.in_(ids)])} if ids else {}
    entries = {name: [_public_entry(entry, subjects.get(entry["subject_id"]), kind, min_count) for entry in page[name]]
               for name in RankingPages.SECTIONS}
    return privacy.public_view("ranking", {
        **page, **entries, "community_id": community_id, "kind": kind, "period": period,
        "published_on": privacy.public_day(page.get("published_at")), "min_count": min_count})


def _public_entry(entry: dict[str, Any], subject: SubjectRecord | None, kind: str, min_count: int) -> dict[str, Any]:
    counts, hidden = privacy.suppress({"ratings": entry["ratings"]}, min_count)
    figures = ("score", "average", "satisfaction_rate")
    return {**entry, **counts, **{f: None if hidden else entry[f] for f in figures},
            "unit_id": subject.unit_id if subject else None,
            "project_id": entry["subject_id"].removeprefix("project-") if kind == "project" else None,
            "suppressed": hidden + (list(figures) if hidden else [])}


STATS = SubjectStats()
RANKING_PAGES = RankingPages()


def projections():
    return [POLICIES, SUBJECTS, RATINGS, CASES, RANKINGS, PLANS, STATS, RANKING_PAGES]
