"""The volunteers service's command handlers: one function per command, ``(command, uow)``.

Each runs in one unit of work (:class:`services.kernel.bus.MessageBus` opens it). Check-out,
attendance and retroactive entries touch the activity and the volunteer's card together; a
redemption touches the reward (stock) and the card (points) together, under the append lock, so two
volunteers racing for the last item cannot both get it. The clock (``uow.now()``) and the ids
(``uow.new_id()``) are the bus's, injected by bootstrap.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from services.kernel.aggregate import UnitOfWork
from services.kernel.errors import ConcurrencyError, Conflict, DomainError, Forbidden
from services.kernel.events import format_time, from_micros, parse_time, to_micros
from services.kernel.model import fields_of
from services.volunteers import commands as c
from services.volunteers import views
from services.volunteers.domain import (
    CHECKIN_OPENS_MINUTES, STAFF, VOLUNTEERS, Activity, Card, Certificate, Person, Reward,
)

# Points per hour for labour delivered to a co-creation project (activities carry their own rate).
PROJECT_POINTS_PER_HOUR = 10


def card_number(uow: UnitOfWork) -> str:
    return "YGK-" + uow.new_id()[:10].upper()


def existing_card(uow: UnitOfWork, person_id: str) -> Card:
    card = uow.load(Card, person_id)
    if not card.exists:
        raise Conflict(f"{person_id} has no volunteer card; register one first", reason="no_card")
    return card


# -- cards ------------------------------------------------------------------------------------------

def register_card(cmd: c.RegisterCard, uow: UnitOfWork) -> Card:
    actor = uow.actor
    person_id = cmd.person_id or actor.person_id
    if person_id != actor.person_id:
        actor.require(*STAFF)
    else:
        actor.require(*VOLUNTEERS, *STAFF)
    community_id = cmd.community_id or actor.community
    if not community_id:
        raise DomainError("say which community the card belongs to", reason="community_required",
                          details={"community_id": "required (the token names none)"})
    if community_id != actor.community and "admin" not in actor.roles:
        raise Forbidden(f"you belong to community {actor.community}, not {community_id}",
                        reason="other_community")
    card = uow.load(Card, person_id)
    uow.record(card, card.register(card_number(uow), cmd.name or actor.name, community_id, list(cmd.skills),
                                   cmd.phone, "self" if person_id == actor.person_id else "staff"))
    return card


# a card's field -> the purpose of the key that seals it (services.kernel.personal)
CORRECTED_PURPOSES = {"name": "name", "phone": "contact"}


def correct_card(cmd: c.CorrectCard, uow: UnitOfWork) -> Card:
    """A correction starts a new key for each corrected purpose: the new value is sealed with it,
    and the old key is retired now and shredded once the correction has committed
    (``UnitOfWork.committed``) — the old value is then unreadable everywhere it was stored or copied
    (a corrected name reads ``已注销`` on the proposals, co-signatures and certificates it was on)."""
    card = uow.get(Card, cmd.person_id, expected_version=cmd.expected_version)
    changes = {field: value for field, value in (("name", cmd.name), ("phone", cmd.phone)) if value is not None}
    if not changes:
        raise DomainError("say what to correct: name, phone or both", reason="nothing_to_correct",
                          details={"name": "or phone: required"})
    events = card.correct(uow.actor, changes, uow.opened({"name": card.name, "phone": card.phone}))
    sealer = getattr(uow.store, "sealer", None)
    if sealer is not None:
        retired = [kid for field in events[0].data["corrected"]
                   for kid in sealer.keys.rotate(card.id, CORRECTED_PURPOSES[field])]
        uow.committed.append(lambda: sealer.keys.shred(retired, "corrected"))
    uow.record(card, events)
    return card


# -- people's requests ------------------------------------------------------------------------------

def request_erasure(cmd: c.RequestErasure, uow: UnitOfWork) -> Person:
    person = uow.load(Person, uow.actor.person_id)
    uow.record(person, person.request_erasure(uow.actor, cmd.reason, uow.now()))
    return person


def confirm_erasure(cmd: c.ConfirmErasure, uow: UnitOfWork) -> Person:
    """The person's keys are deleted first, then ``PersonErased`` is recorded: if recording fails
    the keys stay gone (the key store's erasure log has it) and confirming again records the event."""
    person = uow.load(Person, cmd.person_id)
    events = person.confirm_erasure(uow.actor, uow.now())
    sealer = getattr(uow.store, "sealer", None)
    if sealer is not None:
        sealer.keys.erase(person.id, reason=person.reason, requested_at_us=to_micros(parse_time(person.requested_at)),
                          confirmed_by=uow.actor.person_id)
    uow.record(person, events)
    return person


def reapply_erasure(cmd: c.ReapplyErasure, uow: UnitOfWork) -> Person:
    person = uow.load(Person, cmd.entry["person_id"])
    uow.record(person, person.erased_per_log(cmd.entry))
    return person


def reapply_erasures(container) -> str:
    """``python -m services.volunteers reapply-erasures``, after a restore, both ways: every erasure
    in the key store's log that this service's log lacks (this database was restored) is recorded
    (``PersonErased``, which the gateway acts on again), and every person this log shows erased
    whose keys are back (the key store was restored from a backup older than the erasure) loses
    them again."""
    keys = container.sealer.keys
    recorded = 0
    logged = {row["person_id"]: row for row in keys.erased()}
    for row in logged.values():
        entry = {"person_id": row["person_id"], "reason": row["reason"], "confirmed_by": row["confirmed_by"],
                 "requested_at": format_time(from_micros(row["requested_at_us"])),
                 "erased_at": format_time(from_micros(row["erased_at_us"]))}
        recorded += bool(container.bus.handle(c.ReapplyErasure(entry=entry)).recorded)
    with container.store.read_transaction() as connection:
        erased_here = views.PEOPLE.find(connection, erasure="erased")
    erased_again = sum(keys.erase(person.id, reason=person.reason, confirmed_by=person.confirmed_by,
                                  requested_at_us=to_micros(parse_time(person.requested_at)))
                       for person in erased_here if person.id not in logged)
    return (f"volunteers: {recorded} erasures recorded again from the key store's log, "
            f"{erased_again} people's keys erased again from this log")


def note_feedback_case(cmd: c.NoteFeedbackCase, uow: UnitOfWork) -> Person | None:
    """A follow-up case of a person's rating keeps their information until it closes."""
    case = cmd.case
    if cmd.event_type == "FollowUpOpened":
        person = uow.load(Person, case["person_id"])
        uow.record(person, person.open_obligation("follow_up_case", case["case_id"], case["community_id"],
                                                  cmd.occurred_at))
        return person
    person_id = views.OBLIGATIONS.person_of(uow.connection, case["case_id"])
    if person_id is None:  # a case opened before the person was erased, or never noted: nothing to end
        return None
    person = uow.load(Person, person_id)
    uow.record(person, person.end_obligation(case["case_id"]))
    return person


def credit_project_labour(cmd: c.CreditProjectLabour, uow: UnitOfWork) -> Card:
    """Labour delivered to a co-creation project: approved minutes on the contributor's card, once
    (a card is registered for a contributor who has none)."""
    d = cmd.delivery
    card = uow.load(Card, d["contributor_id"])
    if not card.exists:
        uow.record(card, card.register(card_number(uow), d["contributor_name"], d["community_id"], [], "",
                                       "project"))
    uow.record(card, card.credit_project_labour(dict(d), PROJECT_POINTS_PER_HOUR))
    return card


# -- activities -------------------------------------------------------------------------------------

def publish_activity(cmd: c.PublishActivity, uow: UnitOfWork) -> Activity:
    activity = uow.load(Activity, uow.new_id())
    uow.record(activity, activity.publish(uow.actor, fields_of(cmd), f"{secrets.randbelow(10**6):06d}"))
    return activity


def cancel_activity(cmd: c.CancelActivity, uow: UnitOfWork) -> Activity:
    activity = uow.get(Activity, cmd.activity_id, expected_version=cmd.expected_version)
    uow.record(activity, activity.cancel(uow.actor, cmd.reason))
    return activity


def sign_up(cmd: c.SignUp, uow: UnitOfWork) -> Activity:
    activity = uow.get(Activity, cmd.activity_id, expected_version=cmd.expected_version)
    existing_card(uow, uow.actor.person_id)
    uow.record(activity, activity.sign_up(uow.actor, uow.now()))
    return activity


def withdraw_sign_up(cmd: c.WithdrawSignUp, uow: UnitOfWork) -> Activity:
    activity = uow.get(Activity, cmd.activity_id, expected_version=cmd.expected_version)
    uow.record(activity, activity.withdraw(uow.actor))
    return activity


def check_in(cmd: c.CheckIn, uow: UnitOfWork, *, opens_before: timedelta) -> Activity:
    """Check-in opens ``opens_before`` the start (the process's VOLUNTEERS_CHECKIN_OPENS_MINUTES)."""
    activity = uow.get(Activity, cmd.activity_id, expected_version=cmd.expected_version)
    uow.record(activity, activity.check_in(uow.actor, cmd.code, uow.now(), opens_before))
    return activity


def check_out(cmd: c.CheckOut, uow: UnitOfWork) -> Card:
    actor = uow.actor
    activity = uow.get(Activity, cmd.activity_id)
    card = existing_card(uow, actor.person_id)
    claim_id = uow.new_id()
    events = activity.check_out(actor, cmd.code, claim_id)
    start, end = activity.checked_out_span(actor.person_id, uow.now())
    uow.record(card, card.claim(claim_id, activity, start, end, recorded_by=actor.person_id))
    uow.record(activity, events)
    return card


def record_attendance(cmd: c.RecordAttendance, uow: UnitOfWork) -> Card:
    """The organiser records a volunteer's attendance."""
    return _attendance(uow, cmd.activity_id, cmd.person_id, cmd.start, cmd.end, retroactive=False, reason="")


def record_retroactive_entry(cmd: c.RecordRetroactiveEntry, uow: UnitOfWork) -> Card:
    """补录: the organiser records attendance after the activity is over, with a reason."""
    return _attendance(uow, cmd.activity_id, cmd.person_id, cmd.start, cmd.end, retroactive=True,
                       reason=cmd.reason)


def _attendance(uow: UnitOfWork, activity_id: str, person_id: str, start, end, *, retroactive: bool,
                reason: str) -> Card:
    actor = uow.actor
    activity = uow.get(Activity, activity_id)
    activity.require_organiser(actor)
    if activity.status != "published":
        raise Conflict(f"the activity is {activity.status}", reason="activity_cancelled")
    card = existing_card(uow, person_id)
    start, end = activity.attendance_span(start, end, uow.now(), retroactive=retroactive)
    if retroactive and not reason:
        raise DomainError("a retroactive entry needs a reason", reason="reason_required",
                          details={"reason": "required"})
    claim_id = uow.new_id()
    events = activity.attendance_recorded(card.id, claim_id, retroactive)
    uow.record(card, card.claim(claim_id, activity, start, end, recorded_by=actor.person_id,
                                retroactive=retroactive, reason=reason))
    uow.record(activity, events)
    return card


def decide_claim(cmd: c.DecideClaim, uow: UnitOfWork) -> Card:
    actor = uow.actor
    activity = uow.get(Activity, cmd.activity_id)
    activity.require_organiser(actor)
    if actor.person_id == cmd.person_id:
        raise Forbidden("nobody decides their own claim, organisers and cadres included", reason="own_claim")
    card = existing_card(uow, cmd.person_id)
    if cmd.expected_version is not None and cmd.expected_version != card.version:
        raise ConcurrencyError(card.stream_id, cmd.expected_version, card.version)
    claim_id = activity.claims.get(cmd.person_id)
    if claim_id is None:
        raise DomainError(f"{cmd.person_id} has no claim for this activity", reason="unknown_claim",
                          details={"person_id": "no claim for this activity"})
    uow.record(card, card.decide_claim(claim_id, cmd.decision, cmd.minutes, cmd.reason, actor.person_id,
                                                now=uow.now()))
    return card


# -- rewards ----------------------------------------------------------------------------------------

def list_reward(cmd: c.ListReward, uow: UnitOfWork) -> Reward:
    reward = uow.load(Reward, uow.new_id())
    uow.record(reward, reward.list_item(uow.actor, fields_of(cmd)))
    return reward


def restock_reward(cmd: c.RestockReward, uow: UnitOfWork) -> Reward:
    reward = uow.get(Reward, cmd.reward_id, expected_version=cmd.expected_version)
    uow.record(reward, reward.restock(uow.actor, cmd.quantity))
    return reward


def redeem_reward(cmd: c.RedeemReward, uow: UnitOfWork) -> Reward:
    reward = uow.get(Reward, cmd.reward_id, expected_version=cmd.expected_version)
    card = uow.load(Card, uow.actor.person_id)
    redemption_id = uow.new_id()
    events = reward.redeem(uow.actor, redemption_id, card)
    uow.record(card, card.spend_points(redemption_id, reward))
    uow.record(reward, events)
    return reward


def fulfil_redemption(cmd: c.FulfilRedemption, uow: UnitOfWork) -> Reward:
    reward = uow.get(Reward, cmd.reward_id, expected_version=cmd.expected_version)
    uow.record(reward, reward.fulfil(uow.actor, cmd.redemption_id))
    return reward


# -- certificates -----------------------------------------------------------------------------------

def issue_certificate(cmd: c.IssueCertificate, uow: UnitOfWork) -> Certificate:
    actor = uow.actor
    card = uow.load(Card, cmd.person_id)
    if card.exists and "admin" not in actor.roles and actor.community != card.community_id:
        raise Forbidden(f"the card belongs to community {card.community_id}", reason="other_community")
    number = f"ZYFW-{uow.now():%Y%m%d}-{uow.new_id()[:8].upper()}"
    certificate = uow.load(Certificate, number)
    uow.record(certificate, certificate.issue(
        actor, card, uow.events_of(card), cmd.period_from.isoformat(), cmd.period_to.isoformat(),
        cmd.issuing_organisation, uow.now().date().isoformat()))
    return certificate


def handlers_for(checkin_opens: timedelta) -> dict[type, Any]:
    """The handlers, with check-in opening ``checkin_opens`` before an activity's start."""
    return {
        **HANDLERS, c.CheckIn: functools.update_wrapper(functools.partial(check_in, opens_before=checkin_opens),
                                                        check_in)}


def command_handlers(resources: Mapping[str, Any]) -> dict[type, Any]:
    """The handlers of a process: bound to its settings (:func:`resources`)."""
    return handlers_for(resources["checkin_opens"])


def resources(_store, settings) -> dict[str, Any]:
    """What the handlers take from the process's settings: when check-in opens."""
    return {"checkin_opens": timedelta(minutes=settings.checkin_opens_minutes)}


HANDLERS = {
    c.RegisterCard: register_card,
    c.CorrectCard: correct_card,
    c.RequestErasure: request_erasure,
    c.ConfirmErasure: confirm_erasure,
    c.NoteFeedbackCase: note_feedback_case,
    c.ReapplyErasure: reapply_erasure,
    c.CreditProjectLabour: credit_project_labour,
    c.PublishActivity: publish_activity,
    c.CancelActivity: cancel_activity,
    c.SignUp: sign_up,
    c.WithdrawSignUp: withdraw_sign_up,
    c.CheckIn: functools.update_wrapper(
        functools.partial(check_in, opens_before=timedelta(minutes=CHECKIN_OPENS_MINUTES)), check_in),
    c.CheckOut: check_out,
    c.RecordAttendance: record_attendance,
    c.RecordRetroactiveEntry: record_retroactive_entry,
    c.DecideClaim: decide_claim,
    c.ListReward: list_reward,
    c.RestockReward: restock_reward,
    c.RedeemReward: redeem_reward,
    c.FulfilRedemption: fulfil_redemption,
    c.IssueCertificate: issue_certificate,
}
