"""Read models of the feedback service and the queries over them.

- ``policies_view``, ``subjects_view``, ``ratings_view``, ``cases_view``, ``rankings_view``,
  ``plans_view``: current state as JSON with indexed columns;
- ``subject_stats``: per subject and period the counted ratings (n, Σ levels, #4–5, per level),
  kept incrementally so that a live ranking is one indexed read; a published ranking is checked
  by folding the same events from the log instead (:func:`fold_stats`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from services.feedback.domain import (
    DEFAULT_POLICY, STATS_EVENTS, FollowUpCase, Policy, Ranking, Rating, Subject, SupportPlan, count_level,
    empty_stats, ranking_key, stats_changes,
)
from services.kernel.aggregate import AggregateView
from services.kernel.events import StoredEvent, parse_time, to_micros

POLICIES = AggregateView(Policy, "policies_view")
SUBJECTS = AggregateView(Subject, "subjects_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("open_flags", sa.Integer, nullable=False),
], lambda s: {"community_id": s.community_id, "kind": s.kind,
              "open_flags": sum(1 for f in s.flags.values() if f["status"] == "open")})
RATINGS = AggregateView(Rating, "ratings_view", [
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
              "rated_at_us": to_micros(parse_time(r.rated_at)) if r.rated_at else 0})
CASES = AggregateView(FollowUpCase, "cases_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("subject_id", sa.String(100), nullable=False),
    sa.Column("person_id", sa.String(100), nullable=False, index=True),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("overdue", sa.Boolean, nullable=False),
    sa.Column("deadline_us", sa.BigInteger, nullable=False, index=True),
], lambda c: {"community_id": c.community_id, "subject_id": c.subject_id, "person_id": c.person_id,
              "status": c.status, "overdue": c.overdue, "deadline_us": to_micros(parse_time(c.deadline))})
RANKINGS = AggregateView(Ranking, "rankings_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("period", sa.String(10), nullable=False),
], lambda r: {"community_id": r.community_id, "kind": r.kind, "period": r.period})
PLANS = AggregateView(SupportPlan, "plans_view", [
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
        if event.event_type not in STATS_EVENTS:
            return
        changes = stats_changes(event.event_type, event.data)
        if not changes:
            return
        d, t = event.data, self.table
        key = (t.c.subject_id == d["subject_id"]) & (t.c.period == d["period"])
        row = connection.execute(sa.select(t).where(key)).first()
        stats = {c: getattr(row, c) for c in self.COUNTS} if row is not None else empty_stats()
        for level, sign in changes:
            count_level(stats, level, sign)
        if row is None:
            connection.execute(t.insert().values(subject_id=d["subject_id"], period=d["period"],
                                                 community_id=d["community_id"], kind=d["subject_kind"], **stats))
        else:
            connection.execute(t.update().where(key).values(**stats))

    def apply_many(self, connection: Connection, events: Sequence[StoredEvent]) -> None:
        """The same as :meth:`apply` for each event: the page's changes are summed per subject and
        period in memory and added to the rows by one upsert (``n = n + excluded.n`` …)."""
        deltas: dict[tuple[str, str], dict[str, Any]] = {}
        for event in events:
            if event.event_type not in STATS_EVENTS:
                continue
            changes = stats_changes(event.event_type, event.data)
            if not changes:
                continue
            d = event.data
            row = deltas.get((d["subject_id"], d["period"]))
            if row is None:
                row = deltas[(d["subject_id"], d["period"])] = {
                    "subject_id": d["subject_id"], "period": d["period"], "community_id": d["community_id"],
                    "kind": d["subject_kind"], **empty_stats()}
            for level, sign in changes:
                count_level(row, level, sign)
        if not deltas:
            return
        t = self.table
        insert = (sqlite_insert if connection.dialect.name == "sqlite" else postgresql_insert)(t)
        statement = insert.on_conflict_do_update(
            index_elements=[t.c.subject_id, t.c.period],
            set_={c: t.c[c] + insert.excluded[c] for c in self.COUNTS})
        connection.execute(statement, list(deltas.values()))

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
        edition = Ranking(id=ranking_id)
        edition.apply(event)  # the edition exactly as the Ranking aggregate keeps it
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


def _name(state: str | None) -> str:
    return Subject.from_json(state).name if state else ""


def fold_stats(events: Iterable[StoredEvent], community_id: str, kind: str, period: str,
               names: dict[str, str]) -> dict[str, dict]:
    """The same counts as ``subject_stats``, folded from the log (for verifying a ranking)."""
    stats: dict[str, dict] = {}
    for event in events:
        if event.event_type not in STATS_EVENTS:
            continue
        d = event.data
        if (d["community_id"], d["subject_kind"], d["period"]) != (community_id, kind, period):
            continue
        entry = stats.setdefault(d["subject_id"], {"name": names.get(d["subject_id"], ""), **empty_stats()})
        for level, sign in stats_changes(event.event_type, d):
            count_level(entry, level, sign)
    return stats


def policy_for(connection: Connection, community_id: str) -> tuple[dict[str, Any], int]:
    policy = POLICIES.get(connection, community_id)
    return (dict(policy.settings), policy.version) if policy is not None else (dict(DEFAULT_POLICY), 0)


# -- named queries (the API's reads) -------------------------------------------------------------

def list_subjects(connection: Connection, community_id: str | None, kind: str | None,
                  flagged: bool = False) -> list[Subject]:
    where = [SUBJECTS.table.c.open_flags > 0] if flagged else []
    return SUBJECTS.find(connection, where=where, community_id=community_id, kind=kind)


def ratings_of_subject(connection: Connection, subject_id: str, period: str) -> list[Rating]:
    return RATINGS.find(connection, order_by=[RATINGS.table.c.created_at_us], subject_id=subject_id, period=period)


def ratings_of_person(connection: Connection, person_id: str, limit: int = 200) -> list[Rating]:
    """A resident's ratings, newest first."""
    return RATINGS.find(connection, order_by=[RATINGS.table.c.created_at_us.desc()], limit=limit, person_id=person_id)


def cases_of_person(connection: Connection, person_id: str) -> list[FollowUpCase]:
    return CASES.find(connection, person_id=person_id)


def list_cases(connection: Connection, community_id: str | None, status: str | None, overdue: bool | None,
               limit: int) -> list[FollowUpCase]:
    """Cases by deadline."""
    return CASES.find(connection, order_by=[CASES.table.c.deadline_us], limit=limit, community_id=community_id,
                      status=status, overdue=overdue)


def case_counts(connection: Connection, community_id: str | None) -> dict[str, int]:
    """Open cases, of them overdue, and closed cases (of a community, or of all)."""
    t = CASES.table
    of_community = [t.c.community_id == community_id] if community_id else []
    counts = dict(connection.execute(sa.select(t.c.overdue, sa.func.count()).where(
        t.c.status == "open", *of_community).group_by(t.c.overdue)).all())
    closed = connection.execute(sa.select(sa.func.count()).where(t.c.status == "closed", *of_community)).scalar()
    return {"open": sum(counts.values()), "overdue": counts.get(True, 0), "closed": closed}


def list_plans(connection: Connection, community_id: str | None, status: str | None) -> list[SupportPlan]:
    return PLANS.find(connection, order_by=[PLANS.table.c.created_at_us], community_id=community_id, status=status)


STATS = SubjectStats()
RANKING_PAGES = RankingPages()


def projections():
    return [POLICIES, SUBJECTS, RATINGS, CASES, RANKINGS, PLANS, STATS, RANKING_PAGES]
