"""Read models of the volunteers service and the queries over them.

- ``cards_view``, ``activities_view``, ``rewards_view``, ``certificates_view``: current state as
  JSON with indexed columns;
- ``credits_view``: one row per approved credit (activity claim or project labour) with its day —
  the leaderboards per community and period and a card's history come from it.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.kernel.aggregate import AggregateView
from services.kernel.db import Prepared
from services.kernel.events import StoredEvent, format_time, from_micros, to_micros
from services.kernel.eventstore import EventStore
from services.volunteers.domain import (
    Activity, Card, Certificate, Person, Reward, certificate_digest, certificate_entries, check_presented,
)

CARDS = AggregateView(Card, "cards_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("card_number", sa.String(40), nullable=True, unique=True),  # NULL until registered
    sa.Column("name", sa.Text, nullable=False),  # sealed (services.kernel.personal): longer than the name
], lambda c: {"community_id": c.community_id, "card_number": c.card_number or None, "name": c.name})
ACTIVITIES = AggregateView(Activity, "activities_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("starts_at", sa.String(40), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
], lambda a: {"community_id": a.community_id, "starts_at": a.starts_at, "status": a.status})
REWARDS = AggregateView(Reward, "rewards_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
], lambda r: {"community_id": r.community_id})
CERTIFICATES = AggregateView(Certificate, "certificates_view", [
    sa.Column("person_id", sa.String(100), nullable=False, index=True),
], lambda c: {"person_id": c.person_id})


PEOPLE = AggregateView(Person, "people_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("erasure", sa.String(20), nullable=False),
], lambda p: {"community_id": p.community_id, "erasure": p.erasure})


class ObligationsView:
    """Whose obligation each open one is (a follow-up case's id -> its rater): the feedback-cases
    consumer learns a case's closing by its id alone. Its statements are prepared once (``Prepared``):
    the consumer runs them for every case opened or closed, and through SQLAlchemy's statement
    building they were a fifth of that consumer's CPU while ratings came in (issue 23)."""

    name = "obligations_view"

    def __init__(self) -> None:
        self.table = t = sa.Table(
            "obligations_view", sa.MetaData(),
            sa.Column("ref", sa.String(100), primary_key=True),
            sa.Column("person_id", sa.String(100), nullable=False, index=True),
            sa.Column("kind", sa.String(40), nullable=False),
        )
        self.tables = [self.table]
        self._open = Prepared(t.insert().values(ref=sa.bindparam("ref"), person_id=sa.bindparam("person_id"),
                                                kind=sa.bindparam("kind")))
        self._end = Prepared(t.delete().where(t.c.ref == sa.bindparam("ref")))
        self._person = Prepared(sa.select(t.c.person_id).where(t.c.ref == sa.bindparam("ref")))

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        if event.event_type == "ObligationOpened":
            self._open.execute(connection, {"ref": event.data["ref"], "person_id": event.data["person_id"],
                                            "kind": event.data["kind"]})
        elif event.event_type == "ObligationEnded":
            self._end.execute(connection, {"ref": event.data["ref"]})

    def person_of(self, connection: Connection, ref: str) -> str | None:
        row = self._person.first(connection, {"ref": ref})
        return row[0] if row else None


OBLIGATIONS = ObligationsView()


def erasure_requests(connection: Connection, community_id: str | None, limit: int = 200) -> list[Person]:
    """Erasure requests waiting for staff, oldest first (a community's; every one for ``None``)."""
    return PEOPLE.find(connection, order_by=[PEOPLE.table.c.updated_at_us], limit=limit, erasure="requested",
                       community_id=community_id)


class CreditsView:
    name = "credits_view"
    SOURCES = {"ClaimApproved": "activity", "ProjectLabourCredited": "project"}

    def __init__(self) -> None:
        self.table = sa.Table(
            "credits_view", sa.MetaData(),
            sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("person_id", sa.String(100), nullable=False, index=True),
            sa.Column("community_id", sa.String(100), nullable=False),
            sa.Column("day", sa.String(10), nullable=False),
            sa.Column("minutes", sa.Integer, nullable=False),
            sa.Column("points", sa.Integer, nullable=False),
            sa.Column("source", sa.String(20), nullable=False),
            sa.Column("source_id", sa.String(100), nullable=False),
            sa.Column("retroactive", sa.Boolean, nullable=False),
            sa.Column("at_us", sa.BigInteger, nullable=False),
            sa.Index("ix_credits_community_day", "community_id", "day"),
        )
        self.tables = [self.table]
        self._minutes: tuple[Prepared, Prepared] | None = None

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        source = self.SOURCES.get(event.event_type)
        if source is None:
            return
        d = event.data
        connection.execute(self.table.insert().values(
            position=event.position, person_id=d["person_id"], community_id=d["community_id"], day=d["day"],
            minutes=d["minutes"], points=d["points"], source=source,
            source_id=d["activity_id"] if source == "activity" else d["project_id"],
            retroactive=bool(d.get("retroactive", False)), at_us=to_micros(event.occurred_at)))

    def for_person(self, connection: Connection, person_id: str, limit: int = 200) -> list[dict[str, Any]]:
        t = self.table
        rows = connection.execute(sa.select(t).where(t.c.person_id == person_id)
                                  .order_by(t.c.position.desc()).limit(limit))
        return [{"day": r.day, "minutes": r.minutes, "points": r.points, "source": r.source,
                 "source_id": r.source_id, "retroactive": r.retroactive,
                 "credited_at": format_time(from_micros(r.at_us))} for r in rows]

    def minutes_for_source(self, connection: Connection, source: str, source_id: str,
                           community_id: str | None = None) -> int:
        if self._minutes is None:  # the gateway's project overview asks for it: prepared once
            t = self.table
            total = sa.select(sa.func.coalesce(sa.func.sum(t.c.minutes), 0)).where(
                t.c.source == sa.bindparam("source"), t.c.source_id == sa.bindparam("source_id"))
            self._minutes = (Prepared(total), Prepared(total.where(t.c.community_id == sa.bindparam("community_id"))))
        params = {"source": source, "source_id": source_id}
        if community_id is None:
            return self._minutes[0].first(connection, params)[0]
        return self._minutes[1].first(connection, {**params, "community_id": community_id})[0]

    def per_month(self, connection: Connection, community_id: str, first_day: str) -> dict[str, dict[str, Any]]:
        """Approved minutes and volunteers per calendar month (the credits' days, China Standard
        Time) from ``first_day`` on: ``{"2026-11": {"minutes": ..., "volunteers": ...}}``."""
        t = self.table
        month = sa.func.substr(t.c.day, 1, 7).label("month")
        rows = connection.execute(
            sa.select(month, sa.func.sum(t.c.minutes).label("minutes"),
                      sa.func.count(sa.distinct(t.c.person_id)).label("volunteers"))
            .where(t.c.community_id == community_id, t.c.day >= first_day).group_by(month))
        return {r.month: {"minutes": int(r.minutes), "volunteers": int(r.volunteers)} for r in rows}

    def leaderboard(self, connection: Connection, community_id: str, first_day: str | None,
                    last_day: str | None, limit: int) -> list[dict[str, Any]]:
        t, cards = self.table, CARDS.table
        where = [t.c.community_id == community_id]
        if first_day:
            where += [t.c.day >= first_day, t.c.day <= last_day]
        total = sa.func.sum(t.c.minutes).label("minutes")
        rows = connection.execute(
            sa.select(t.c.person_id, total, cards.c.name, cards.c.card_number)
            .join(cards, cards.c.id == t.c.person_id).where(*where)
            .group_by(t.c.person_id, cards.c.name, cards.c.card_number)
            .order_by(total.desc(), t.c.person_id).limit(limit))
        return [{"rank": i, "person_id": r.person_id, "name": r.name, "card_number": r.card_number,
                 "minutes": r.minutes, "hours": round(r.minutes / 60, 1)} for i, r in enumerate(rows, start=1)]


CREDITS = CreditsView()


def projections():
    return [CARDS, ACTIVITIES, REWARDS, CERTIFICATES, CREDITS, PEOPLE, OBLIGATIONS]


# -- named queries (the API's reads) -------------------------------------------------------------

def list_activities(connection: Connection, community_id: str | None, status: str | None,
                    limit: int) -> list[Activity]:
    """Activities, newest start first."""
    return ACTIVITIES.find(connection, order_by=[ACTIVITIES.table.c.starts_at.desc()], limit=limit,
                           community_id=community_id, status=status)


def list_rewards(connection: Connection, community_id: str | None) -> list[Reward]:
    return REWARDS.find(connection, community_id=community_id)


def organises_for(connection: Connection, organiser_id: str, card: Card) -> bool:
    """``organiser_id`` organises, in the holder's community, an activity the holder signed up for."""
    return any(activity.organiser_person_id == organiser_id and card.id in activity.signups
               for activity in ACTIVITIES.find(connection, community_id=card.community_id))


def recompute_certificate(store: EventStore, certificate: Certificate) -> tuple[list[dict[str, Any]], str]:
    """The certificate's credits and verification value recomputed from the card's events up to
    its last position (a query: it records nothing)."""
    events = [e for e in store.load(Card.stream_id_for(certificate.person_id))
              if e.position <= certificate.last_position]
    entries = certificate_entries(events, certificate.period_from, certificate.period_to)
    return entries, certificate_digest(certificate.person_id, certificate.period_from, certificate.period_to,
                                       entries, certificate.last_position)


def verify_certificate(store: EventStore, certificate: Certificate | None,
                       presented: Mapping[str, Any], holder: str | None = None) -> dict[str, Any]:
    """A presented certificate checked against the store: ``valid`` (the store still gives the
    issued value and totals, and every presented part matches), the ``problems`` found and
    ``match`` (:func:`services.volunteers.domain.check_presented`). ``certificate`` None: an
    unknown number, answered as a wrong value is. No stored value is part of the answer.
    ``holder``: the certificate's name opened (it is stored sealed; ``已注销`` once the holder was
    erased — the certificate still verifies, and a presented name no longer matches)."""
    entries = digest = None
    problems = []
    if certificate is not None:
        entries, digest = recompute_certificate(store, certificate)
        if digest != certificate.digest:
            problems.append("the card's events no longer give the recorded verification value")
        if sum(e["minutes"] for e in entries) != certificate.total_minutes:
            problems.append("the total minutes differ from the card's events")
    if certificate is not None and holder is not None:
        certificate = dataclasses.replace(certificate, name=holder)
    match = check_presented(certificate, entries, digest, presented)
    if presented.get("value") is not None and not match["value"]:
        problems.append("the presented verification value is not the one issued")
    problems += [f"the presented {part.replace('_', ' ')} differs from the certificate"
                 for part, same in match.items() if part != "value" and not same and match.get("value")]
    if any(part != "value" and not same for part, same in match.items()) and not match.get("value"):
        problems.append("the presented parts cannot be checked without the certificate's verification value")
    return {"valid": certificate is not None and not problems, "problems": problems, "match": match}
