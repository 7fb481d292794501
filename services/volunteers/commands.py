"""The volunteers service's commands: what a caller asks, as frozen data (one handler each).

HTTP routes load them with their schemas (:mod:`services.volunteers.api`); the project-labour
consumer builds :class:`CreditProjectLabour` from a ``ContributionDelivered`` event. Fields a route's
path names (``activity_id``) come from the path, ``expected_version`` from ``If-Match``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from services.kernel.model import command


@command
class RegisterCard:
    person_id: str | None = None  # staff only: someone else's card
    name: str | None = None
    community_id: str | None = None
    skills: tuple[str, ...] = ()
    phone: str = ""


@command
class CorrectCard:
    """A correction of the card's personal details (the holder, or staff of the card's community):
    the corrected field starts a new key and the old value is shredded with the old one."""
    person_id: str
    name: str | None = None
    phone: str | None = None
    expected_version: int | None = None


@command
class RequestErasure:
    """The caller asks for their personal information to be erased (a reason code)."""
    reason: str


@command
class ConfirmErasure:
    """Staff of the person's community confirm an erasure request: keys deleted, PersonErased."""
    person_id: str


@command
class ReapplyErasure:
    """After a restore: record an erasure the key store's log has and this log lacks."""
    entry: Mapping[str, Any]


@command
class NoteFeedbackCase:
    """The feedback-cases consumer: a follow-up case of a person's rating opened or closed."""
    event_type: str  # FollowUpOpened | FollowUpClosed | FollowUpClosedByExclusion
    case: Mapping[str, Any]
    occurred_at: str


@command
class PublishActivity:
    title: str
    community_id: str
    place: str
    organiser: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime
    capacity: int
    planned_minutes: int
    points_per_hour: int


@command
class CancelActivity:
    activity_id: str
    reason: str
    expected_version: int | None = None


@command
class SignUp:
    activity_id: str
    expected_version: int | None = None


@command
class WithdrawSignUp:
    activity_id: str
    expected_version: int | None = None


@command
class CheckIn:
    activity_id: str
    code: str
    expected_version: int | None = None


@command
class CheckOut:
    activity_id: str
    code: str


@command
class RecordAttendance:
    activity_id: str
    person_id: str
    start: datetime | None = None  # default: the activity's start
    end: datetime | None = None  # default: the activity's end


@command
class RecordRetroactiveEntry:
    """补录: attendance recorded after the activity is over, with a reason."""

    activity_id: str
    person_id: str
    reason: str
    start: datetime | None = None
    end: datetime | None = None


@command
class DecideClaim:
    activity_id: str
    person_id: str
    decision: str  # approve | reject
    minutes: int | None = None  # approve fewer minutes than claimed (with a reason)
    reason: str = ""
    expected_version: int | None = None  # of the volunteer's card


@command
class ListReward:
    name: str
    community_id: str
    cost_points: int
    stock: int
    description: str = ""


@command
class RestockReward:
    reward_id: str
    quantity: int
    expected_version: int | None = None


@command
class RedeemReward:
    reward_id: str
    expected_version: int | None = None


@command
class FulfilRedemption:
    reward_id: str
    redemption_id: str
    expected_version: int | None = None


@command
class IssueCertificate:
    person_id: str
    period_from: date
    period_to: date
    issuing_organisation: str


@command
class CreditProjectLabour:
    """Labour delivered to a co-creation project (``ContributionDelivered`` of kind labour)."""

    delivery: Mapping[str, Any]

