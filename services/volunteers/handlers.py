"""The volunteers service layer: each command is one unit of work over one or more streams.

Check-out, attendance and retroactive entries touch the activity and the volunteer's card
together; a redemption touches the reward (stock) and the card (points) together, under the
append lock, so two volunteers racing for the last item cannot both get it.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from services.kernel.aggregate import unit_of_work
from services.kernel.auth import Principal
from services.kernel.errors import ConcurrencyError, Conflict, DomainError, Forbidden
from services.kernel.events import Metadata, StoredEvent, parse_time, utc_now
from services.kernel.eventstore import EventStore
from services.volunteers.domain import (
    STAFF, VOLUNTEERS, Activity, Card, Certificate, Reward, certificate_digest, certificate_entries,
)

# Points per hour for labour delivered to a co-creation project (activities carry their own rate).
PROJECT_POINTS_PER_HOUR = 10


def now() -> datetime:
    """The service's clock (tests replace it to walk through an activity's hours)."""
    return utc_now()


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def new_card_number() -> str:
    return "YGK-" + uuid.uuid4().hex[:10].upper()


class VolunteersService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    def _uow(self, meta: Metadata, connection=None):
        return unit_of_work(self.store, meta, connection=connection, clock=lambda: now())

    # -- cards --------------------------------------------------------------------------------

    def register(self, actor: Principal, meta: Metadata, body: dict[str, Any]):
        person_id = body.get("person_id") or actor.person_id
        if person_id != actor.person_id:
            actor.require(*STAFF)
        else:
            actor.require(*VOLUNTEERS, *STAFF)
        community_id = body.get("community_id") or actor.community
        if not community_id:
            raise DomainError("say which community the card belongs to", reason="community_required",
                              details={"community_id": "required (the token names none)"})
        if community_id != actor.community and "admin" not in actor.roles:
            raise Forbidden(f"you belong to community {actor.community}, not {community_id}",
                            reason="other_community")
        with self._uow(meta) as uow:
            card = uow.load(Card, person_id)
            uow.record(card, card.register(new_card_number(), body.get("name") or actor.name, community_id,
                                           body.get("skills", []), body.get("phone", ""),
                                           "self" if person_id == actor.person_id else "staff"))
        return card, uow.recorded

    # -- activities ---------------------------------------------------------------------------

    def publish(self, actor, meta, body):
        with self._uow(meta) as uow:
            activity = uow.load(Activity, new_id())
            uow.record(activity, activity.publish(actor, body, f"{secrets.randbelow(10**6):06d}"))
        return activity, uow.recorded

    def on_activity(self, actor, meta, activity_id, decide, expected_version=None):
        with self._uow(meta) as uow:
            activity = uow.get(Activity, activity_id, expected_version=expected_version)
            uow.record(activity, decide(activity, uow))
        return activity, uow.recorded

    def check_out(self, actor, meta, activity_id, code: str):
        with self._uow(meta) as uow:
            activity = uow.get(Activity, activity_id)
            card = self._card(uow, actor.person_id)
            claim_id = new_id()
            events = activity.check_out(actor, code, claim_id)
            started = parse_time(activity.checkins[actor.person_id])
            uow.record(card, card.claim(claim_id, activity, started, uow.now(),
                                        recorded_by=actor.person_id))
            uow.record(activity, events)
        return card, uow.recorded

    def record_attendance(self, actor, meta, activity_id, body, retroactive: bool):
        """The organiser records a volunteer's attendance (or, retroactively, 补录 with a reason)."""
        with self._uow(meta) as uow:
            activity = uow.get(Activity, activity_id)
            activity.require_organiser(actor)
            if activity.status != "published":
                raise Conflict(f"the activity is {activity.status}", reason="activity_cancelled")
            card = self._card(uow, body["person_id"])
            start, end = body.get("start") or parse_time(activity.starts_at), body.get("end") or parse_time(activity.ends_at)
            if retroactive:
                if uow.now() < parse_time(activity.ends_at):
                    raise Conflict("retroactive entries are for activities that are over",
                                   reason="activity_not_over")
                if not body.get("reason"):
                    raise DomainError("a retroactive entry needs a reason", reason="reason_required",
                                      details={"reason": "required"})
            if start < parse_time(activity.starts_at) or end > parse_time(activity.ends_at):
                raise DomainError("attendance must lie within the activity's start and end",
                                  reason="outside_activity_time", details={"start": "within the activity",
                                                                           "end": "within the activity"})
            claim_id = new_id()
            events = activity.attendance_recorded(card.id, claim_id, retroactive)
            uow.record(card, card.claim(claim_id, activity, start, end, recorded_by=actor.person_id,
                                        retroactive=retroactive, reason=body.get("reason", "")))
            uow.record(activity, events)
        return card, uow.recorded

    def decide_claim(self, actor, meta, activity_id, person_id, body, expected_version=None):
        with self._uow(meta) as uow:
            activity = uow.get(Activity, activity_id)
            activity.require_organiser(actor)
            if actor.person_id == person_id:
                raise Forbidden("nobody decides their own claim, organisers and cadres included",
                                reason="own_claim")
            card = self._card(uow, person_id)
            if expected_version is not None and expected_version != card.version:
                raise ConcurrencyError(card.stream_id, expected_version, card.version)
            claim_id = activity.claims.get(person_id)
            if claim_id is None:
                raise DomainError(f"{person_id} has no claim for this activity", reason="unknown_claim",
                                  details={"person_id": "no claim for this activity"})
            uow.record(card, card.decide_claim(claim_id, body["decision"], body.get("minutes"),
                                               body.get("reason", ""), actor.person_id))
        return card, uow.recorded

    @staticmethod
    def _card(uow, person_id: str) -> Card:
        card = uow.load(Card, person_id)
        if not card.exists:
            raise Conflict(f"{person_id} has no volunteer card; register one first", reason="no_card")
        return card

    # -- rewards ------------------------------------------------------------------------------

    def list_reward(self, actor, meta, body):
        with self._uow(meta) as uow:
            reward = uow.load(Reward, new_id())
            uow.record(reward, reward.list_item(actor, body))
        return reward, uow.recorded

    def restock(self, actor, meta, reward_id, quantity, expected_version=None):
        with self._uow(meta) as uow:
            reward = uow.get(Reward, reward_id, expected_version=expected_version)
            uow.record(reward, reward.restock(actor, quantity))
        return reward, uow.recorded

    def redeem(self, actor, meta, reward_id, expected_version=None):
        with self._uow(meta) as uow:
            reward = uow.get(Reward, reward_id, expected_version=expected_version)
            card = uow.load(Card, actor.person_id)
            redemption_id = new_id()
            events = reward.redeem(actor, redemption_id, card)
            uow.record(card, card.spend_points(redemption_id, reward))
            uow.record(reward, events)
        return reward, uow.recorded

    def fulfil(self, actor, meta, reward_id, redemption_id, expected_version=None):
        with self._uow(meta) as uow:
            reward = uow.get(Reward, reward_id, expected_version=expected_version)
            uow.record(reward, reward.fulfil(actor, redemption_id))
        return reward, uow.recorded

    # -- certificates -------------------------------------------------------------------------

    def issue_certificate(self, actor, meta, body):
        with self._uow(meta) as uow:
            card = uow.load(Card, body["person_id"])
            if card.exists and "admin" not in actor.roles and actor.community != card.community_id:
                raise Forbidden(f"the card belongs to community {card.community_id}", reason="other_community")
            events = self.store.load(card.stream_id, connection=uow.connection)
            number = f"ZYFW-{uow.now():%Y%m%d}-{uuid.uuid4().hex[:8].upper()}"
            certificate = uow.load(Certificate, number)
            uow.record(certificate, certificate.issue(
                actor, card, events, body["period_from"].isoformat(), body["period_to"].isoformat(),
                body["issuing_organisation"], uow.now().date().isoformat()))
        return certificate, uow.recorded

    def verify_certificate(self, certificate: Certificate, presented: str | None) -> dict[str, Any]:
        """Recompute the certificate from the card's events up to its last position."""
        events = [e for e in self.store.load(Card.stream_id_for(certificate.person_id))
                  if e.position <= certificate.last_position]
        entries = certificate_entries(events, certificate.period_from, certificate.period_to)
        digest = certificate_digest(certificate.person_id, certificate.period_from, certificate.period_to,
                                    entries, certificate.last_position)
        problems = []
        if digest != certificate.digest:
            problems.append("the card's events no longer give the recorded verification value")
        if presented is not None and presented != certificate.digest:
            problems.append("the presented verification value is not the one issued")
        if sum(e["minutes"] for e in entries) != certificate.total_minutes:
            problems.append("the total minutes differ from the card's events")
        return {"certificate_number": certificate.id, "valid": not problems, "problems": problems,
                "recomputed": digest, "total_minutes": certificate.total_minutes,
                "last_position": certificate.last_position}

    # -- project labour (consumer) ------------------------------------------------------------

    def credit_project_labour(self, connection, event: StoredEvent) -> None:
        """``ContributionDelivered`` of kind labour on projects.events -> approved minutes, once."""
        d = event.data
        if d.get("kind") != "labour":
            return
        meta = Metadata.caused_by(event)
        with self._uow(meta, connection=connection) as uow:
            card = uow.load(Card, d["contributor_id"])
            if not card.exists:
                uow.record(card, card.register(new_card_number(), d["contributor_name"], d["community_id"],
                                               [], "", "project"))
            uow.record(card, card.credit_project_labour(d, PROJECT_POINTS_PER_HOUR))

