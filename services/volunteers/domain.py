"""The volunteer card (义工卡): cards, activities, rewards and certificates (pure domain, no I/O).

Rules, all in minutes and points (integers) with UTC times:

- one card per person (stream ``card-<person_id>``); contact details are masked in every view but
  the holder's own and staff's;
- an activity's attendance becomes a *claim* on the volunteer's card: minutes from the times,
  rounded down to 30, capped by the activity's planned minutes and by 8 hours per volunteer per
  day (pending and approved claims count); a claim overlapping another one is refused;
- attendance happens within the activity's time and in the past: check-in opens
  ``checkin_opens`` (the setting ``VOLUNTEERS_CHECKIN_OPENS_MINUTES``, 30 minutes) before the
  start and closes at the end; a check-out's claim counts from the later of check-in and start to
  the earlier of now and the end; attendance recorded by the organiser and retroactive entries
  lie within the start and end and not after now, and a claim is approved only once its time has
  passed (claims stored before these rules load as they were: the rules judge new commands);
- only the organiser (never the volunteer) approves, adjusts with a reason, or rejects a claim;
  retroactive entries (补录) by the organiser carry a reason and are marked as such;
- only approved minutes count: points = approved minutes × the activity's points per hour ÷ 60
  (rounded down); star levels at 100, 300, 600, 1000 and 1500 approved hours are events;
- labour delivered to a co-creation project is credited once per delivery event as approved
  minutes with the project as source;
- a reward redemption lowers stock and points together (one unit of work); the balance never
  goes negative and stock never below zero.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from services.kernel.model import (
    Aggregate, Conflict, DomainError, Forbidden, NewEvent, Principal, format_time, local_date, mask_phone,
    parse_time, role_names,
)

SLOT_MINUTES = 30
CHECKIN_OPENS_MINUTES = 30  # the default of VOLUNTEERS_CHECKIN_OPENS_MINUTES
DAILY_CAP_MINUTES = 8 * 60
STAR_HOURS = (100, 300, 600, 1000, 1500)
STAR_LABELS = {0: "未定级 no star yet", 1: "一星 one star", 2: "二星 two stars", 3: "三星 three stars",
               4: "四星 four stars", 5: "五星 five stars"}
STAFF = role_names("cadre", "admin")
ORGANISERS = role_names("organiser", "cadre", "admin")
VOLUNTEERS = role_names("volunteer", "resident", "representative")
ORGANISER_KINDS = ("community", "social_organisation", "project")


def star_level(minutes: int) -> int:
    return sum(1 for hours in STAR_HOURS if minutes >= hours * 60)


def points_for(minutes: int, points_per_hour: int) -> int:
    return minutes * points_per_hour // 60


def day_of(moment: str) -> str:
    """The local (China Standard Time) calendar day of a UTC timestamp: the 8-hour cap is per
    day as volunteers live it, not per UTC day."""
    return local_date(parse_time(moment))


@dataclasses.dataclass
class Card(Aggregate):
    stream_prefix: ClassVar[str] = "card"
    label: ClassVar[str] = "volunteer card"

    card_number: str = ""
    name: str = ""
    community_id: str = ""
    skills: list[str] = dataclasses.field(default_factory=list)
    phone: str = ""
    registered_via: str = ""
    approved_minutes: int = 0
    points_earned: int = 0
    points_spent: int = 0
    star_level: int = 0
    # claim_id -> {activity_id, start, end, minutes, day, status, retroactive, approved_minutes, reason}
    claims: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    credited_deliveries: list[str] = dataclasses.field(default_factory=list)

    @property
    def points_balance(self) -> int:
        return self.points_earned - self.points_spent

    # -- decisions ------------------------------------------------------------------------

    def register(self, card_number: str, name: str, community_id: str, skills: list[str], phone: str,
                 via: str) -> list[NewEvent]:
        if self.exists:
            raise Conflict(f"{self.id} already has a volunteer card ({self.card_number})", reason="already_registered",
                           details={"card_number": self.card_number})
        return [NewEvent("CardRegistered", {"person_id": self.id, "card_number": card_number, "name": name,
                                            "community_id": community_id, "skills": skills, "phone": phone,
                                            "via": via})]

    def correct(self, actor: Principal, changes: Mapping[str, str], stored: Mapping[str, str]) -> list[NewEvent]:
        """Correct the holder's ``name`` and/or ``phone`` (the holder, or staff of the card's
        community). ``stored``: the card's current values as written (they are stored sealed; the
        handler opens them) — a correction that changes nothing is refused."""
        if actor.person_id != self.id:
            actor.require(*STAFF)
            if self.community_id != actor.community and "admin" not in actor.roles:
                raise Forbidden(f"the card belongs to community {self.community_id}", reason="other_community")
        changed = {field: value for field, value in changes.items() if value != stored.get(field)}
        if not changed:
            raise Conflict("the card already says this", reason="no_change")
        return [NewEvent("CardCorrected", {"person_id": self.id, "community_id": self.community_id, **changed,
                                           "corrected": sorted(changed),
                                           "via": "self" if actor.person_id == self.id else "staff"})]

    def _minutes_on(self, day: str, excluding: str | None = None) -> int:
        return sum(c["minutes"] for cid, c in self.claims.items()
                   if c["day"] == day and c["status"] != "rejected" and cid != excluding)

    def claim(self, claim_id: str, activity: "Activity", start: datetime, end: datetime, *,
              recorded_by: str, retroactive: bool = False, reason: str = "") -> list[NewEvent]:
        """A claim for ``activity`` from ``start`` to ``end`` (pending until the organiser decides)."""
        if end <= start:
            raise DomainError("the end must be after the start", reason="invalid_times",
                              details={"end": "must be after the start"})
        for other_id, other in self.claims.items():
            if other["status"] != "rejected" and parse_time(other["start"]) < end and start < parse_time(other["end"]):
                raise Conflict(f"this claim overlaps claim {other_id} ({other['start']} to {other['end']})",
                               reason="overlapping_claim", details={"claim_id": other_id})
        if any(c["activity_id"] == activity.id and c["status"] != "rejected" for c in self.claims.values()):
            raise Conflict("this volunteer already has a claim for this activity", reason="already_claimed")
        raw = int((end - start).total_seconds() // 60)
        minutes = min(raw // SLOT_MINUTES * SLOT_MINUTES, activity.planned_minutes)
        day = day_of(format_time(start))
        room = max(0, DAILY_CAP_MINUTES - self._minutes_on(day))
        minutes = min(minutes, room // SLOT_MINUTES * SLOT_MINUTES)
        if minutes <= 0:
            why = ("the 8-hour daily limit is already reached" if room < SLOT_MINUTES
                   else "less than 30 minutes were attended")
            raise Conflict(f"nothing to claim: {why}", reason="nothing_to_claim",
                           details={"attended_minutes": raw, "minutes_left_today": room})
        return [NewEvent("ClaimRecorded", {
            "person_id": self.id, "claim_id": claim_id, "activity_id": activity.id,
            "activity_title": activity.title, "community_id": activity.community_id,
            "start": format_time(start), "end": format_time(end), "attended_minutes": raw, "minutes": minutes,
            "day": day, "points_per_hour": activity.points_per_hour, "retroactive": retroactive,
            "reason": reason, "recorded_by": recorded_by})]

    def decide_claim(self, claim_id: str, decision: str, minutes: int | None, reason: str,
                     decided_by: str, *, now: datetime) -> list[NewEvent]:
        """Approve (fully or adjusted) or reject a pending claim. Approval credits only time that
        has passed: a claim ending after ``now`` (one stored before attendance in the future was
        refused) is refused approval, 409 ``attendance_in_future``; it may be rejected."""
        claim = self.claims.get(claim_id)
        if claim is None:
            raise DomainError(f"card {self.card_number} has no claim {claim_id}", reason="unknown_claim",
                              details={"claim_id": "unknown claim"})
        if claim["status"] != "pending":
            raise Conflict(f"claim {claim_id} is already {claim['status']}", reason="already_decided")
        if decision != "reject" and parse_time(claim["end"]) > now:
            raise Conflict(f"the attendance of claim {claim_id} ends at {claim['end']}, after now: hours are "
                           "approved once they are served", reason="attendance_in_future",
                           details={"end": claim["end"]})
        if decision == "reject":
            if not reason:
                raise DomainError("say why the claim is rejected", reason="reason_required",
                                  details={"reason": "required when rejecting"})
            return [NewEvent("ClaimRejected", {"person_id": self.id, "claim_id": claim_id,
                                               "activity_id": claim["activity_id"], "reason": reason,
                                               "decided_by": decided_by})]
        approved = claim["minutes"] if minutes is None else minutes
        if approved != claim["minutes"]:
            if not reason:
                raise DomainError("say why the minutes are adjusted", reason="reason_required",
                                  details={"reason": "required when adjusting"})
            if not 0 < approved <= claim["minutes"] or approved % SLOT_MINUTES:
                raise DomainError(f"adjusted minutes must be a multiple of 30 between 30 and {claim['minutes']}",
                                  reason="invalid_minutes", details={"minutes": f"30..{claim['minutes']}"})
        points = points_for(approved, claim["points_per_hour"])
        events = [NewEvent("ClaimApproved", {
            "person_id": self.id, "claim_id": claim_id, "activity_id": claim["activity_id"],
            "community_id": claim["community_id"], "day": claim["day"], "minutes": approved,
            "claimed_minutes": claim["minutes"], "adjusted": approved != claim["minutes"], "reason": reason,
            "points": points, "decided_by": decided_by, "retroactive": claim["retroactive"]})]
        return events + self._stars_after(approved)

    def credit_project_labour(self, delivery: dict[str, Any], points_per_hour: int) -> list[NewEvent]:
        """Approved minutes from labour delivered to a co-creation project (once per delivery)."""
        key = f"{delivery['pledge_id']}#{delivery['delivery_no']}"
        if key in self.credited_deliveries:
            return []
        minutes = delivery["labour_minutes"]
        events = [NewEvent("ProjectLabourCredited", {
            "person_id": self.id, "delivery_key": key, "project_id": delivery["project_id"],
            "project_title": delivery.get("project_title", ""), "community_id": delivery["community_id"],
            "day": day_of(delivery["delivered_at"]), "minutes": minutes,
            "points": points_for(minutes, points_per_hour)})]
        return events + self._stars_after(minutes)

    def _stars_after(self, added_minutes: int) -> list[NewEvent]:
        total = self.approved_minutes + added_minutes
        return [NewEvent("StarLevelReached", {"person_id": self.id, "level": level,
                                              "label": STAR_LABELS[level], "approved_minutes": total})
                for level in range(self.star_level + 1, star_level(total) + 1)]

    def spend_points(self, redemption_id: str, reward: "Reward") -> list[NewEvent]:
        if reward.cost_points > self.points_balance:
            raise Conflict(f"not enough points: the balance is {self.points_balance}, the reward costs "
                           f"{reward.cost_points}", reason="insufficient_points",
                           details={"points_balance": self.points_balance, "cost_points": reward.cost_points})
        return [NewEvent("PointsSpent", {"person_id": self.id, "redemption_id": redemption_id,
                                         "reward_id": reward.id, "points": reward.cost_points,
                                         "balance_after": self.points_balance - reward.cost_points})]

    # -- evolution ------------------------------------------------------------------------

    def on_CardRegistered(self, d, _event) -> None:
        self.card_number, self.name, self.community_id = d["card_number"], d["name"], d["community_id"]
        self.skills, self.phone, self.registered_via = list(d["skills"]), d["phone"], d["via"]

    def on_CardCorrected(self, d, _event) -> None:
        self.name, self.phone = d.get("name", self.name), d.get("phone", self.phone)

    def on_ClaimRecorded(self, d, _event) -> None:
        self.claims[d["claim_id"]] = {
            k: d[k] for k in ("activity_id", "activity_title", "community_id", "start", "end", "minutes", "day",
                              "points_per_hour", "retroactive", "reason")} | {
            "status": "pending", "approved_minutes": None, "decision_reason": None}

    def on_ClaimApproved(self, d, _event) -> None:
        self.claims[d["claim_id"]].update(status="approved", approved_minutes=d["minutes"],
                                          decision_reason=d["reason"] or None)
        self.approved_minutes += d["minutes"]
        self.points_earned += d["points"]

    def on_ClaimRejected(self, d, _event) -> None:
        self.claims[d["claim_id"]].update(status="rejected", decision_reason=d["reason"])

    def on_ProjectLabourCredited(self, d, _event) -> None:
        self.credited_deliveries.append(d["delivery_key"])
        self.approved_minutes += d["minutes"]
        self.points_earned += d["points"]

    def on_StarLevelReached(self, d, _event) -> None:
        self.star_level = d["level"]

    def on_PointsSpent(self, d, _event) -> None:
        self.points_spent += d["points"]

    def view(self, full: bool) -> dict[str, Any]:
        return {
            "person_id": self.id, "card_number": self.card_number, "name": self.name,
            "community_id": self.community_id, "skills": self.skills,
            "phone": self.phone if full else mask_phone(self.phone), "registered_via": self.registered_via,
            "approved_minutes": self.approved_minutes, "approved_hours": round(self.approved_minutes / 60, 1),
            "points_balance": self.points_balance, "points_earned": self.points_earned,
            "points_spent": self.points_spent, "star_level": self.star_level,
            "star_label": STAR_LABELS[self.star_level],
            "next_star_hours": next((h for h in STAR_HOURS if self.approved_minutes < h * 60), None),
            "pending_claims": sum(1 for c in self.claims.values() if c["status"] == "pending"),
            "version": self.version, "created_at": self.created_at,
        }


@dataclasses.dataclass
class Activity(Aggregate):
    stream_prefix: ClassVar[str] = "activity"
    label: ClassVar[str] = "activity"

    title: str = ""
    community_id: str = ""
    place: str = ""
    organiser: dict[str, str] = dataclasses.field(default_factory=dict)
    organiser_person_id: str = ""
    starts_at: str = ""
    ends_at: str = ""
    capacity: int = 0
    planned_minutes: int = 0
    points_per_hour: int = 0
    checkin_code: str = ""
    status: str = ""
    cancel_reason: str | None = None
    signups: dict[str, str] = dataclasses.field(default_factory=dict)
    checkins: dict[str, str] = dataclasses.field(default_factory=dict)
    claims: dict[str, str] = dataclasses.field(default_factory=dict)  # person_id -> claim_id

    def publish(self, actor: Principal, body: dict[str, Any], checkin_code: str) -> list[NewEvent]:
        if self.exists:
            raise Conflict(f"activity {self.id} already exists", reason="already_exists")
        actor.require(*ORGANISERS)
        if "admin" not in actor.roles and actor.community != body["community_id"]:
            raise Forbidden(f"you organise for community {actor.community}, not {body['community_id']}",
                            reason="other_community")
        starts, ends = body["starts_at"], body["ends_at"]
        errors = {}
        if ends <= starts:
            errors["ends_at"] = "must be after starts_at"
        elif body["planned_minutes"] > (ends - starts).total_seconds() // 60:
            errors["planned_minutes"] = "cannot exceed the time between start and end"
        if body["organiser"]["kind"] == "community" and not actor.has_any(STAFF):
            errors["organiser"] = "only cadres publish activities in the community's name"
        if errors:
            raise DomainError("the activity is not valid", reason="invalid_activity", details=errors)
        return [NewEvent("ActivityPublished", {
            "activity_id": self.id, "title": body["title"], "community_id": body["community_id"],
            "place": body["place"], "organiser": body["organiser"], "organiser_person_id": actor.person_id,
            "starts_at": format_time(starts), "ends_at": format_time(ends), "capacity": body["capacity"],
            "planned_minutes": body["planned_minutes"], "points_per_hour": body["points_per_hour"],
            "checkin_code": checkin_code})]

    def require_organiser(self, actor: Principal) -> None:
        if actor.person_id == self.organiser_person_id:
            return
        if "admin" in actor.roles or ("cadre" in actor.roles and actor.community == self.community_id):
            return
        raise Forbidden("only the activity's organiser (or a cadre of its community) may do this",
                        reason="not_organiser")

    def _open(self, what: str) -> None:
        if self.status != "published":
            raise Conflict(f"cannot {what}: the activity is {self.status}", reason="activity_cancelled")

    def cancel(self, actor: Principal, reason: str) -> list[NewEvent]:
        self.require_organiser(actor)
        self._open("cancel it")
        return [NewEvent("ActivityCancelled", {"activity_id": self.id, "reason": reason,
                                               "signed_up": sorted(self.signups)})]

    def sign_up(self, actor: Principal, now: datetime) -> list[NewEvent]:
        actor.require(*VOLUNTEERS)
        self._open("sign up")
        if actor.person_id in self.signups:
            raise Conflict("you have already signed up for this activity", reason="already_signed_up")
        if now >= parse_time(self.ends_at):
            raise Conflict("the activity is over", reason="activity_over")
        if len(self.signups) >= self.capacity:
            raise Conflict(f"the activity is full ({self.capacity} places)", reason="full",
                           details={"capacity": self.capacity})
        return [NewEvent("VolunteerSignedUp", {"activity_id": self.id, "person_id": actor.person_id,
                                               "name": actor.name})]

    def withdraw(self, actor: Principal) -> list[NewEvent]:
        self._open("withdraw")
        if actor.person_id not in self.signups:
            raise Conflict("you are not signed up for this activity", reason="not_signed_up")
        if actor.person_id in self.checkins or actor.person_id in self.claims:
            raise Conflict("you have already checked in; ask the organiser", reason="already_attended")
        return [NewEvent("SignUpWithdrawn", {"activity_id": self.id, "person_id": actor.person_id})]

    def check_in(self, actor: Principal, code: str, now: datetime,
                 opens_before: timedelta = timedelta(minutes=CHECKIN_OPENS_MINUTES)) -> list[NewEvent]:
        """Check in with the code from ``opens_before`` the start (409 ``checkin_not_open``
        earlier) to the end (409 ``activity_over`` later)."""
        self._open("check in")
        if code != self.checkin_code:
            raise Forbidden("the check-in code is not this activity's", reason="wrong_code")
        if actor.person_id not in self.signups:
            raise Conflict("sign up for the activity before checking in", reason="not_signed_up")
        if actor.person_id in self.checkins or actor.person_id in self.claims:
            raise Conflict("you have already checked in", reason="already_checked_in")
        opens_at = parse_time(self.starts_at) - opens_before
        if now < opens_at:
            minutes = int(opens_before.total_seconds() // 60)
            raise Conflict(f"check-in opens {minutes} minutes before the start, at {format_time(opens_at)}",
                           reason="checkin_not_open", details={"opens_at": format_time(opens_at),
                                                               "opens_minutes_before": minutes})
        if now > parse_time(self.ends_at):
            raise Conflict("the activity is over: check-in closed at its end", reason="activity_over",
                           details={"ends_at": self.ends_at})
        return [NewEvent("CheckedIn", {"activity_id": self.id, "person_id": actor.person_id,
                                       "at": format_time(now)})]

    def check_out(self, actor: Principal, code: str, claim_id: str) -> list[NewEvent]:
        if code != self.checkin_code:
            raise Forbidden("the check-in code is not this activity's", reason="wrong_code")
        if actor.person_id not in self.checkins:
            raise Conflict("you have not checked in", reason="not_checked_in")
        return [NewEvent("CheckedOut", {"activity_id": self.id, "person_id": actor.person_id,
                                        "claim_id": claim_id})]

    def checked_out_span(self, person_id: str, now: datetime) -> tuple[datetime, datetime]:
        """What a check-out at ``now`` claims: from the later of the check-in and the start to the
        earlier of now and the end (the time before the start, or after the end, is no service)."""
        start = max(parse_time(self.checkins[person_id]), parse_time(self.starts_at))
        return start, min(now, parse_time(self.ends_at))

    def attendance_span(self, start: datetime | None, end: datetime | None, now: datetime, *,
                        retroactive: bool) -> tuple[datetime, datetime]:
        """The times of attendance the organiser records (``retroactive``: a 补录 after the end).

        Default: from the start to the end — or to now while the activity is going on. The times
        lie within the activity (422 ``outside_activity_time``) and not after ``now`` (422
        ``attendance_in_future``: nobody is credited for time not yet served); a retroactive
        entry is for an activity that is over (409 ``activity_not_over``)."""
        starts, ends = parse_time(self.starts_at), parse_time(self.ends_at)
        if retroactive and now < ends:
            raise Conflict("retroactive entries are for activities that are over", reason="activity_not_over")
        start, end = start or starts, end or min(ends, now)
        if start < starts or end > ends:
            raise DomainError("attendance must lie within the activity's start and end",
                              reason="outside_activity_time", details={"start": "within the activity",
                                                                       "end": "within the activity"})
        if start >= now or end > now:
            raise DomainError(f"attendance cannot be recorded ahead of time: it is {format_time(now)} now",
                              reason="attendance_in_future",
                              details={"start" if start >= now else "end": "must not be after now",
                                       "now": format_time(now)})
        return start, end

    def attendance_recorded(self, person_id: str, claim_id: str, retroactive: bool) -> list[NewEvent]:
        if person_id in self.claims:
            raise Conflict(f"attendance of {person_id} is already recorded", reason="already_recorded")
        return [NewEvent("AttendanceRecorded", {"activity_id": self.id, "person_id": person_id,
                                                "claim_id": claim_id, "retroactive": retroactive})]

    def on_ActivityPublished(self, d, _event) -> None:
        for key in ("title", "community_id", "place", "organiser", "organiser_person_id", "starts_at", "ends_at",
                    "capacity", "planned_minutes", "points_per_hour", "checkin_code"):
            setattr(self, key, d[key])
        self.status = "published"

    def on_ActivityCancelled(self, d, _event) -> None:
        self.status, self.cancel_reason = "cancelled", d["reason"]

    def on_VolunteerSignedUp(self, d, event) -> None:
        self.signups[d["person_id"]] = format_time(event.occurred_at)

    def on_SignUpWithdrawn(self, d, _event) -> None:
        self.signups.pop(d["person_id"], None)

    def on_CheckedIn(self, d, _event) -> None:
        self.checkins[d["person_id"]] = d["at"]

    def on_CheckedOut(self, d, _event) -> None:
        self.checkins.pop(d["person_id"], None)
        self.claims[d["person_id"]] = d["claim_id"]

    def on_AttendanceRecorded(self, d, _event) -> None:
        self.claims[d["person_id"]] = d["claim_id"]

    def view(self, show_code: bool) -> dict[str, Any]:
        return {
            "activity_id": self.id, "title": self.title, "community_id": self.community_id, "place": self.place,
            "organiser": self.organiser, "organiser_person_id": self.organiser_person_id,
            "starts_at": self.starts_at, "ends_at": self.ends_at, "capacity": self.capacity,
            "signed_up": len(self.signups), "places_left": max(0, self.capacity - len(self.signups)),
            "planned_minutes": self.planned_minutes, "points_per_hour": self.points_per_hour,
            "status": self.status, "cancel_reason": self.cancel_reason,
            "checkin_code": self.checkin_code if show_code else None,
            "volunteers": sorted(self.signups) if show_code else None,
            "version": self.version,
        }


@dataclasses.dataclass
class Reward(Aggregate):
    stream_prefix: ClassVar[str] = "reward"
    label: ClassVar[str] = "reward"

    name: str = ""
    description: str = ""
    community_id: str = ""
    cost_points: int = 0
    stock: int = 0
    redemptions: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def list_item(self, actor: Principal, body: dict[str, Any]) -> list[NewEvent]:
        if self.exists:
            raise Conflict(f"reward {self.id} already exists", reason="already_exists")
        _require_staff_of(actor, body["community_id"])
        return [NewEvent("RewardListed", {"reward_id": self.id, **{k: body[k] for k in (
            "name", "description", "community_id", "cost_points", "stock")}})]

    def restock(self, actor: Principal, quantity: int) -> list[NewEvent]:
        _require_staff_of(actor, self.community_id)
        return [NewEvent("RewardRestocked", {"reward_id": self.id, "quantity": quantity,
                                             "stock_after": self.stock + quantity})]

    def redeem(self, actor: Principal, redemption_id: str, card: Card) -> list[NewEvent]:
        actor.require(*VOLUNTEERS)
        if not card.exists:
            raise Conflict("register a volunteer card first", reason="no_card")
        if card.community_id != self.community_id:
            raise Forbidden(f"this reward is for volunteers of community {self.community_id}",
                            reason="other_community")
        if self.stock <= 0:
            raise Conflict(f"{self.name} is out of stock", reason="out_of_stock")
        return [NewEvent("RewardRedeemed", {"reward_id": self.id, "redemption_id": redemption_id,
                                            "person_id": card.id, "points": self.cost_points,
                                            "stock_after": self.stock - 1})]

    def fulfil(self, actor: Principal, redemption_id: str) -> list[NewEvent]:
        _require_staff_of(actor, self.community_id, also=("organiser",))
        redemption = self.redemptions.get(redemption_id)
        if redemption is None:
            raise DomainError(f"no redemption {redemption_id} of this reward", reason="unknown_redemption",
                              details={"redemption_id": "unknown"})
        if redemption["fulfilled_at"]:
            raise Conflict(f"redemption {redemption_id} is already fulfilled", reason="already_fulfilled")
        return [NewEvent("RedemptionFulfilled", {"reward_id": self.id, "redemption_id": redemption_id,
                                                 "person_id": redemption["person_id"],
                                                 "fulfilled_by": actor.person_id})]

    def on_RewardListed(self, d, _event) -> None:
        for key in ("name", "description", "community_id", "cost_points", "stock"):
            setattr(self, key, d[key])

    def on_RewardRestocked(self, d, _event) -> None:
        self.stock += d["quantity"]

    def on_RewardRedeemed(self, d, event) -> None:
        self.stock -= 1
        self.redemptions[d["redemption_id"]] = {"person_id": d["person_id"], "points": d["points"],
                                                "at": format_time(event.occurred_at), "fulfilled_at": None}

    def on_RedemptionFulfilled(self, d, event) -> None:
        self.redemptions[d["redemption_id"]]["fulfilled_at"] = format_time(event.occurred_at)

    def view(self) -> dict[str, Any]:
        return {"reward_id": self.id, "name": self.name, "description": self.description,
                "community_id": self.community_id, "cost_points": self.cost_points, "stock": self.stock,
                "redemptions": len(self.redemptions), "version": self.version}


def _require_staff_of(actor: Principal, community_id: str, also: tuple[str, ...] = ()) -> None:
    actor.require(*STAFF, *also)
    if "admin" not in actor.roles and actor.community != community_id:
        raise Forbidden(f"you are staff of community {actor.community}, not {community_id}",
                        reason="other_community")


# -- people's requests about their personal information ---------------------------------------------

# Why a person asks to be erased (PIPL art. 47): a code, never free text, since the erasure log keeps it.
ERASURE_REASONS = ("consent_withdrawn", "no_longer_needed", "moved_away", "unlawful_processing", "other")
OBLIGATION_KINDS = ("follow_up_case",)


@dataclasses.dataclass
class Person(Aggregate):
    """A person's requests about their personal information, and what keeps it (obligations).

    The volunteers service keeps each person's card, so it records their requests: an erasure is
    asked for by the person, confirmed by staff of their community, and refused while an obligation
    keeps the data — a follow-up case of the person's rating still open in the feedback service
    (learnt from ``feedback.events`` by the ``volunteers.feedback-cases`` consumer). Confirming
    deletes the person's keys (:mod:`services.kernel.personal`) and records ``PersonErased``, which
    every process that keeps something of the person in clear acts on, once."""

    stream_prefix: ClassVar[str] = "person"
    label: ClassVar[str] = "person"

    community_id: str = ""
    obligations: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # ref -> kind, since
    erasure: str = ""  # "" | requested | erased
    reason: str = ""
    requested_at: str = ""
    erased_at: str = ""
    confirmed_by: str = ""

    def open_obligation(self, kind: str, ref: str, community_id: str, since: str) -> list[NewEvent]:
        if ref in self.obligations or self.erasure == "erased":
            return []
        return [NewEvent("ObligationOpened", {"person_id": self.id, "kind": kind, "ref": ref,
                                              "community_id": community_id, "since": since})]

    def end_obligation(self, ref: str) -> list[NewEvent]:
        if ref not in self.obligations:
            return []
        return [NewEvent("ObligationEnded", {"person_id": self.id, "kind": self.obligations[ref]["kind"],
                                             "ref": ref})]

    def request_erasure(self, actor: Principal, reason: str, now: datetime) -> list[NewEvent]:
        if actor.person_id != self.id:
            raise Forbidden("only the person may ask for their own erasure", reason="not_the_person")
        if self.erasure == "erased":
            raise Conflict("your personal information was erased already", reason="already_erased")
        if self.erasure == "requested":
            raise Conflict("your erasure was asked for already and waits for staff", reason="erasure_requested",
                           details={"requested_at": self.requested_at})
        if not actor.community:
            raise DomainError("your token names no community whose staff could confirm the erasure",
                              reason="community_required")
        return [NewEvent("ErasureRequested", {"person_id": self.id, "community_id": actor.community,
                                              "reason": reason, "requested_at": format_time(now)})]

    def confirm_erasure(self, actor: Principal, now: datetime) -> list[NewEvent]:
        actor.require(*STAFF)
        if self.erasure != "requested":
            raise Conflict(f"{self.id} has no erasure request waiting" if self.erasure != "erased"
                           else f"{self.id} was erased already",
                           reason="already_erased" if self.erasure == "erased" else "no_erasure_request")
        _require_staff_of(actor, self.community_id)
        if self.obligations:  # how many of each kind, not which: a case's id would tell a rated cadre who rated
            raise Conflict("an obligation keeps this person's information until it ends", reason="obligation_open",
                           details={"obligations": self._obligation_counts()})
        return [NewEvent("PersonErased", {"person_id": self.id, "community_id": self.community_id,
                                          "reason": self.reason, "requested_at": self.requested_at,
                                          "erased_at": format_time(now), "confirmed_by": actor.person_id})]

    def erased_per_log(self, entry: Mapping[str, Any]) -> list[NewEvent]:
        """``PersonErased`` from the key store's erasure log (``entry``), for a person this log does
        not show erased: this database was restored to a point before their erasure."""
        if self.erasure == "erased":
            return []
        return [NewEvent("PersonErased", {"person_id": self.id, "community_id": self.community_id,
                                          "reason": entry["reason"], "requested_at": entry["requested_at"],
                                          "erased_at": entry["erased_at"], "confirmed_by": entry["confirmed_by"],
                                          "reapplied": True})]

    def on_ObligationOpened(self, d, _event) -> None:
        self.obligations[d["ref"]] = {"kind": d["kind"], "since": d["since"]}
        self.community_id = self.community_id or d["community_id"]

    def on_ObligationEnded(self, d, _event) -> None:
        self.obligations.pop(d["ref"], None)

    def on_ErasureRequested(self, d, _event) -> None:
        self.erasure, self.reason, self.requested_at = "requested", d["reason"], d["requested_at"]
        self.community_id = d["community_id"]

    def on_PersonErased(self, d, _event) -> None:
        self.erasure, self.erased_at, self.confirmed_by = "erased", d["erased_at"], d["confirmed_by"]

    def _obligation_counts(self) -> list[dict[str, Any]]:
        kinds = sorted({o["kind"] for o in self.obligations.values()})
        return [{"kind": kind, "count": sum(o["kind"] == kind for o in self.obligations.values())} for kind in kinds]

    def view(self, own: bool = False) -> dict[str, Any]:
        """The request and what keeps the information: the person (``own``) sees each obligation
        (a follow-up case's id), staff only how many of each kind."""
        obligations = ([{"kind": o["kind"], "ref": ref, "since": o["since"]} for ref, o in sorted(self.obligations.items())]
                       if own else self._obligation_counts())
        return {"person_id": self.id, "community_id": self.community_id or None, "erasure": self.erasure or None,
                "reason": self.reason or None, "requested_at": self.requested_at or None,
                "erased_at": self.erased_at or None, "confirmed_by": self.confirmed_by or None,
                "obligations": obligations, "version": self.version}


# -- certificates -----------------------------------------------------------------------------------

CREDIT_EVENTS = ("ClaimApproved", "ProjectLabourCredited")


def certificate_entries(card_events, period_from: str, period_to: str) -> list[dict[str, Any]]:
    """The approved credits of a card whose day falls in ``[period_from, period_to]`` (dates)."""
    titles: dict[str, str] = {}
    entries = []
    for event in card_events:
        d = event.data
        if event.event_type == "ClaimRecorded":
            titles[d["claim_id"]] = d["activity_title"]
        if event.event_type in CREDIT_EVENTS and period_from <= d["day"] <= period_to:
            source = ({"kind": "activity", "id": d["activity_id"], "title": titles.get(d["claim_id"], "")}
                      if event.event_type == "ClaimApproved" else
                      {"kind": "project", "id": d["project_id"], "title": d.get("project_title", "")})
            entries.append({"event_id": event.event_id, "position": event.position, "day": d["day"],
                            "minutes": d["minutes"], "source": source})
    return entries


def certificate_digest(person_id: str, period_from: str, period_to: str, entries: list[dict[str, Any]],
                       last_position: int) -> str:
    """sha256 over the identity, period, every credit event (id and minutes) and the last position."""
    canonical = json.dumps({"person_id": person_id, "from": period_from, "to": period_to,
                            "last_position": last_position,
                            "credits": [[e["event_id"], e["minutes"]] for e in entries]},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass
class Certificate(Aggregate):
    """志愿服务记录证明: issued once, never changed; verified against the store by its digest."""

    stream_prefix: ClassVar[str] = "certificate"
    label: ClassVar[str] = "certificate"

    person_id: str = ""
    card_number: str = ""
    name: str = ""
    period_from: str = ""
    period_to: str = ""
    entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    total_minutes: int = 0
    issuing_organisation: str = ""
    issued_on: str = ""
    issued_by: str = ""
    last_position: int = 0
    digest: str = ""

    def issue(self, actor: Principal, card: Card, card_events, period_from: str, period_to: str,
              organisation: str, today: str) -> list[NewEvent]:
        actor.require(*ORGANISERS)
        if not card.exists:
            raise DomainError(f"{card.id} has no volunteer card", reason="no_card",
                              details={"person_id": "no card"})
        if period_to < period_from:
            raise DomainError("the period ends before it starts", reason="invalid_period",
                              details={"period_to": "must not be before period_from"})
        entries = certificate_entries(card_events, period_from, period_to)
        last_position = card_events[-1].position
        return [NewEvent("CertificateIssued", {
            "certificate_number": self.id, "person_id": card.id, "card_number": card.card_number,
            "name": card.name, "period_from": period_from, "period_to": period_to, "entries": entries,
            "total_minutes": sum(e["minutes"] for e in entries), "issuing_organisation": organisation,
            "issued_on": today, "issued_by": actor.person_id, "last_position": last_position,
            "digest": certificate_digest(card.id, period_from, period_to, entries, last_position)})]

    def on_CertificateIssued(self, d, _event) -> None:
        for key in ("person_id", "card_number", "name", "period_from", "period_to", "entries", "total_minutes",
                    "issuing_organisation", "issued_on", "issued_by", "last_position", "digest"):
            setattr(self, key, d[key])

    def view(self) -> dict[str, Any]:
        return {"certificate_number": self.id, "person_id": self.person_id, "card_number": self.card_number,
                "name": self.name, "period_from": self.period_from, "period_to": self.period_to,
                "activities": self.entries, "total_minutes": self.total_minutes,
                "total_hours": round(self.total_minutes / 60, 1), "issuing_organisation": self.issuing_organisation,
                "issued_on": self.issued_on, "last_position": self.last_position, "verification": self.digest}


# -- checking a presented certificate ---------------------------------------------------------------

# What a presenter may say a certificate says (a paper's printed parts), besides its verification value.
PRESENTED_PARTS = ("holder", "card_number", "period_from", "period_to", "issued_on", "issuing_organisation",
                   "total_minutes", "total_hours", "entries")


def printed_hours(minutes: int) -> Decimal:
    """Hours as the certificate prints them (one decimal)."""
    return Decimal(str(round(minutes / 60, 1)))


def printed_entries(text: str) -> list[tuple[str, Decimal]]:
    """``2025-03-08:3.0,2025-03-20:2`` (day and hours, as printed) as sorted ``(day, hours)`` pairs."""
    pairs = []
    for item in text.split(","):
        day, _sep, hours = item.strip().partition(":")
        pairs.append((day, Decimal(hours)))
    return sorted(pairs)


def check_presented(certificate: "Certificate | None", store_entries: list[dict[str, Any]] | None,
                    store_digest: str | None, presented: Mapping[str, Any]) -> dict[str, bool]:
    """Which presented parts of a certificate match the store: ``{part: True | False}`` for the
    verification ``value`` (when presented) and each part of :data:`PRESENTED_PARTS` presented —
    nothing else, and no stored value.

    The verification value is the key: unless it is the one issued for this number, and the
    card's events up to the certificate's last position still give it (``store_digest``), every
    presented part answers False — so an unknown number, a wrong value and a forged paper read
    alike, and nobody learns a holder's name, period or hours by guessing them without the value.
    With the value, the holder, card, period, issue date and organisation are compared with what
    was issued, the totals and entries with the credits recomputed from the card's events
    (``store_entries``). ``certificate`` is None for a number that does not exist."""
    parts = [key for key in ("value", *PRESENTED_PARTS) if presented.get(key) is not None]
    value = str(presented.get("value") or "").lower()
    genuine = (certificate is not None and store_entries is not None and store_digest is not None
               and hmac.compare_digest(value.encode(), certificate.digest.encode())
               and hmac.compare_digest(store_digest.encode(), certificate.digest.encode()))
    if not genuine:
        return {key: False for key in parts}
    total = sum(e["minutes"] for e in store_entries)
    issued = {"holder": certificate.name, "card_number": certificate.card_number.upper(),
              "period_from": certificate.period_from, "period_to": certificate.period_to,
              "issued_on": certificate.issued_on, "issuing_organisation": certificate.issuing_organisation}
    match = {"value": True}
    for key in parts:
        given = presented[key]
        if key in issued:
            text = given.isoformat() if isinstance(given, date) else " ".join(str(given).split())
            match[key] = (text.upper() if key == "card_number" else text) == issued[key]
        elif key == "total_minutes":
            match[key] = given == total == certificate.total_minutes
        elif key == "total_hours":
            match[key] = Decimal(str(given)) == printed_hours(total) and total == certificate.total_minutes
        elif key == "entries":
            match[key] = printed_entries(given) == sorted((e["day"], printed_hours(e["minutes"]))
                                                          for e in store_entries)
    return {key: match[key] for key in parts}
