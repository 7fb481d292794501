"""HTTP API of the volunteers service (flask-smorest; /openapi.json and /docs).

Every write route loads its command (:mod:`services.volunteers.commands`) with its schema and
sends it to the service's message bus. Commands answer with the changed resource, the events recorded (``recorded``) and an ``ETag``
holding the resource's version. Who sees what follows the platform's privacy policy
(:mod:`services.kernel.privacy`): phones are masked except for the holder, the staff (cadre, grid worker,
admin) of the holder's community and the organisers, in that community, of activities the holder signed
up for; check-in codes and the list of volunteers go to the activity's organiser and staff; every read
is scoped to the token's community (admins: any).
"""

from __future__ import annotations

import calendar
from datetime import date

import marshmallow as ma
from flask.views import MethodView

from services.kernel import privacy
from services.kernel.bus import Outcome
from services.kernel.errors import NotFound
from services.kernel.events import LOCAL_TZ
from services.kernel.web import (
    Blueprint,
    ANY_ROLE, IDENTIFIER, PUBLIC_QUERY, CommandSchema, Schema, command_answer, current_principal, etagged, public,
    opened, roles, send, service_container, text_field,
)
from services.volunteers import commands as c
from services.volunteers import open_data
from services.volunteers import views
from services.volunteers.domain import ERASURE_REASONS, ORGANISER_KINDS, ORGANISERS, STAFF, VOLUNTEERS, Person
from services.volunteers.views import ACTIVITIES, CARDS, CERTIFICATES, CREDITS

f = ma.fields
v = ma.validate
ID = IDENTIFIER


text = text_field


class CardSchema(CommandSchema):
    command = c.RegisterCard

    person_id = f.String(metadata={"description": "staff only: register someone else"}, **ID)
    name = text(100)
    community_id = f.String(**ID)
    skills = f.List(text(50), load_default=list, validate=v.Length(max=20))
    phone = f.String(validate=v.Regexp(r"^\+?[0-9 -]{5,20}$"), load_default="")


class CorrectionSchema(CommandSchema):
    command = c.CorrectCard

    name = text(100)
    phone = f.String(validate=v.Regexp(r"^\+?[0-9 -]{5,20}$"))


class ErasureRequestSchema(CommandSchema):
    command = c.RequestErasure

    reason = f.String(required=True, validate=v.OneOf(ERASURE_REASONS),
                      metadata={"description": "why (PIPL art. 47): " + ", ".join(ERASURE_REASONS)})


class ErasureConfirmationSchema(CommandSchema):
    command = c.ConfirmErasure  # the person from the path; no body


class ErasureListQuery(Schema):
    community_id = f.String(**ID, metadata={"description": "admins: one community's requests (default all)"})
    limit = f.Integer(load_default=100, validate=v.Range(min=1, max=500))


class OrganiserSchema(Schema):
    kind = f.String(required=True, validate=v.OneOf(ORGANISER_KINDS))
    id = f.String(required=True, **ID)
    name = text(100, required=True)


class ActivitySchema(CommandSchema):
    command = c.PublishActivity

    title = text(100, required=True)
    community_id = f.String(required=True, **ID)
    place = text(200, required=True)
    organiser = f.Nested(OrganiserSchema, required=True)
    starts_at = f.AwareDateTime(required=True)
    ends_at = f.AwareDateTime(required=True)
    capacity = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=10000))
    planned_minutes = f.Integer(required=True, strict=True, validate=v.Range(min=30, max=24 * 60))
    points_per_hour = f.Integer(required=True, strict=True, validate=v.Range(min=0, max=1000))


class ActivityListQuery(Schema):
    community_id = f.String(**ID)
    status = f.String(validate=v.OneOf(["published", "cancelled"]))
    limit = f.Integer(load_default=50, validate=v.Range(min=1, max=200))


class CancellationSchema(CommandSchema):
    command = c.CancelActivity
    reason = text(500, required=True)


class SignUpSchema(CommandSchema):
    command = c.SignUp


class WithdrawalSchema(CommandSchema):
    command = c.WithdrawSignUp


def code_field() -> ma.fields.String:
    return f.String(required=True, validate=v.Regexp(r"^[0-9]{6}$", error="six digits"))


class CheckInSchema(CommandSchema):
    command = c.CheckIn
    code = code_field()


class CheckOutSchema(CommandSchema):
    command = c.CheckOut
    code = code_field()


class AttendanceSchema(CommandSchema):
    command = c.RecordAttendance

    person_id = f.String(required=True, **ID)
    start = f.AwareDateTime(metadata={"description": "default: the activity's start"})
    end = f.AwareDateTime(metadata={"description": "default: the activity's end"})


class RetroactiveSchema(AttendanceSchema):
    command = c.RecordRetroactiveEntry
    reason = text(500, required=True)


class DecisionSchema(CommandSchema):
    command = c.DecideClaim

    decision = f.String(required=True, validate=v.OneOf(["approve", "reject"]))
    minutes = f.Integer(strict=True, validate=v.Range(min=30, max=24 * 60),
                        metadata={"description": "approve fewer minutes than claimed (with a reason)"})
    reason = f.String(validate=v.Length(max=500), load_default="")


class RewardSchema(CommandSchema):
    command = c.ListReward

    name = text(100, required=True)
    description = f.String(validate=v.Length(max=500), load_default="")
    community_id = f.String(required=True, **ID)
    cost_points = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=10**7))
    stock = f.Integer(required=True, strict=True, validate=v.Range(min=0, max=10**6))


class RestockSchema(CommandSchema):
    command = c.RestockReward

    quantity = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=10**6))


class RedemptionSchema(CommandSchema):
    command = c.RedeemReward


class FulfilmentSchema(CommandSchema):
    command = c.FulfilRedemption


class RewardListQuery(Schema):
    community_id = f.String(**ID)


class CertificateSchema(CommandSchema):
    command = c.IssueCertificate

    person_id = f.String(required=True, **ID)
    period_from = f.Date(required=True)
    period_to = f.Date(required=True)
    issuing_organisation = text(200, required=True)


DIGEST = r"^[0-9a-fA-F]{64}$"
ENTRY = r"\d{4}-\d{2}-\d{2}:\d{1,5}(\.\d)?"


class PresentedCertificate(Schema):
    """What a certificate (a paper) says, to check against the store: each part is optional and
    answered by itself (``match``); nothing stored is ever answered."""

    holder = text(100, metadata={"description": "the holder's name as printed"})
    card_number = f.String(validate=v.Length(min=1, max=40), metadata={"description": "the volunteer card number"})
    period_from = f.Date(metadata={"description": "the first day of the period"})
    period_to = f.Date(metadata={"description": "the last day of the period"})
    issued_on = f.Date(metadata={"description": "the date of issue"})
    issuing_organisation = text(200, metadata={"description": "the issuing organisation as printed"})
    total_minutes = f.Integer(validate=v.Range(min=0, max=10**7), metadata={"description": "the total in minutes"})
    total_hours = f.String(validate=v.Regexp(r"^\d{1,6}(\.\d)?$", error="hours with at most one decimal"),
                           metadata={"description": "the total hours as printed (one decimal)"})
    entries = f.String(validate=[v.Length(max=4000), v.Regexp(f"^{ENTRY}(,{ENTRY})*$",
                                                             error="day:hours pairs separated by commas")],
                       metadata={"description": "every entry as printed, day:hours separated by commas "
                                                "(2025-03-08:3.0,2025-03-20:2.0), in any order"})


class VerificationSchema(PresentedCertificate):
    verification = f.String(validate=v.Regexp(DIGEST), metadata={"description": "the value printed on "
                                                                                   "the certificate"})


class PublicVerificationQuery(PresentedCertificate):
    value = f.String(required=True, validate=v.Regexp(DIGEST), metadata={
        "description": "the verification value printed on the certificate (64 hexadecimal digits)"})


class LeaderboardQuery(Schema):
    period = f.String(load_default="month", validate=v.OneOf(["month", "year", "all"]))
    month = f.String(validate=v.Regexp(r"^(?!0000)\d{4}-(0[1-9]|1[0-2])$"), metadata={"description": "YYYY-MM, year 0001 to 9999"})
    year = f.Integer(validate=v.Range(min=2000, max=2100))
    limit = f.Integer(load_default=20, validate=v.Range(min=1, max=200))


class HoursQuery(Schema):
    months = f.Integer(load_default=12, validate=v.Range(min=1, max=60), metadata={"description": "how many "
                                                                                   "months, this one included"})


class CommandResultSchema(Schema):
    resource = f.Raw()
    recorded = f.List(f.Raw())
    created_id = f.String(allow_none=True)


def answer(outcome: Outcome, resource: dict, status: int = 200, created_id: str | None = None):
    """The command's answer: the changed resource, the events recorded, its version as ETag."""
    return command_answer("resource", resource, outcome.result.version, outcome.recorded, status, created_id)


def card_answer(outcome: Outcome, status: int = 200):
    """A command that records on a card answers with the card and the new claim's id."""
    return answer(outcome, outcome.result.view(full=True), status, outcome.first("ClaimRecorded", "claim_id"))


def activity_answer(outcome: Outcome, status: int = 200):
    return answer(outcome, outcome.result.view(show_code=False), status)


def period_bounds(query) -> tuple[str | None, str | None, str]:
    today = service_container().bus.clock().date()
    if query["period"] == "all":
        return None, None, "all"
    if query["period"] == "year":
        year = query.get("year") or today.year
        return f"{year}-01-01", f"{year}-12-31", str(year)
    year, month = (map(int, query["month"].split("-")) if query.get("month") else (today.year, today.month))
    last = calendar.monthrange(year, month)[1]
    return date(year, month, 1).isoformat(), date(year, month, last).isoformat(), f"{year}-{month:02d}"


def store():
    return service_container().store


def card_for(principal, person_id):
    """The card as the privacy policy lets ``principal`` see it (the phone unmasked for the
    holder, the staff of the holder's community and the organisers, in that community, of an
    activity the holder signed up for), whether the phone is unmasked, and the card itself."""
    card = CARDS.fetch(store().engine, person_id)
    if principal.person_id != card.id:
        principal.require_reader(card.community_id)
    rel = privacy.relations(principal, card.community_id, holder=card.id,
                            organisers=[principal.person_id] if organises_for(principal, card) else [])
    return privacy.redact("card", card.view(full=True), rel), privacy.shown("card", "phone", rel), card


def organises_for(principal, card) -> bool:
    """``principal`` organises, in the holder's community, an activity the holder signed up for."""
    if principal.community != card.community_id or not principal.has_any(("organiser",)):
        return False
    with store().read_transaction() as connection:
        return views.organises_for(connection, principal.person_id, card)


def activity_view(principal, activity) -> dict:
    rel = privacy.relations(principal, activity.community_id, organisers=[activity.organiser_person_id])
    return privacy.redact("activity", activity.view(show_code=True), rel)


cards = Blueprint("cards", __name__, url_prefix="/cards", description="义工卡 volunteer cards")
activities = Blueprint("activities", __name__, url_prefix="/activities",
                       description="活动 activities: sign-up, attendance, approval")
rewards = Blueprint("rewards", __name__, url_prefix="/rewards", description="积分兑换 rewards catalogue")
certificates = Blueprint("certificates", __name__, url_prefix="/certificates",
                         description="志愿服务记录证明 certificates and their verification")
reports = Blueprint("reports", __name__, description="Leaderboards, my card, minutes per project")
people = Blueprint("people", __name__, description="个人信息 a person's requests about their personal information: "
                                                   "erasure (asked by the person, confirmed by staff)")
public_reads = Blueprint("public", __name__, url_prefix="/public",
                         description="公开核验 checking a certificate without a token")


# -- cards ------------------------------------------------------------------------------------------

@cards.route("")
class Cards(MethodView):
    @roles(cards, *VOLUNTEERS, *STAFF)
    @cards.arguments(CardSchema)
    @cards.response(201, CommandResultSchema)
    def post(self, command: c.RegisterCard):
        """Register a volunteer card (one per person)"""
        outcome = send(command)
        response = answer(outcome, outcome.result.view(full=True), 201, outcome.result.id)
        response.headers["Location"] = f"/cards/{outcome.result.id}"
        return response


@cards.route("/<person_id>")
class CardResource(MethodView):
    @cards.response(200)
    def get(self, person_id):
        """A volunteer's card (contact details masked but for you, cadres of your community and your organisers)"""
        seen, _unmasked, card = card_for(current_principal(), person_id)
        return etagged(seen, card.version)

    @roles(cards, ANY_ROLE)
    @cards.arguments(CorrectionSchema)
    @cards.response(200, CommandResultSchema)
    def patch(self, command: c.CorrectCard, **_path):
        """Correct the holder's name or phone (the holder, or staff of the card's community; If-Match:
        the card's ETag). The old value is shredded: it reads 已注销 wherever it was kept"""
        outcome = send(command)
        return answer(outcome, outcome.result.view(full=True))


@cards.route("/<person_id>/history")
class CardHistory(MethodView):
    @cards.response(200)
    def get(self, person_id):
        """The card's credits and claims (those who see the phone unmasked)"""
        seen, unmasked, card = card_for(current_principal(), person_id)
        if not unmasked:  # the history goes to those who may see the phone
            raise NotFound(f"no card history of {person_id} for you")
        with store().read_transaction() as connection:
            credits = CREDITS.for_person(connection, person_id)
        claims = [{"claim_id": k, **claim} for k, claim in card.claims.items()]
        return {"card": seen, "credits": credits, "claims": claims}


# -- activities -------------------------------------------------------------------------------------

@activities.route("")
class Activities(MethodView):
    @roles(activities, *ORGANISERS)
    @activities.arguments(ActivitySchema)
    @activities.response(201, CommandResultSchema)
    def post(self, command: c.PublishActivity):
        """Publish an activity (organiser: community cadre, social organisation, or a project)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view(show_code=True), 201, outcome.result.id)

    @activities.arguments(ActivityListQuery, location="query")
    @activities.response(200)
    def get(self, query):
        """Activities of a community (default and, but for admins, only: yours), newest start first"""
        principal = current_principal()
        community_id = principal.reading_community(query.get("community_id"))
        with store().read_transaction() as connection:
            found = views.list_activities(connection, community_id, query.get("status"), query["limit"])
        return {"items": [activity_view(principal, activity) for activity in found]}


@activities.route("/<activity_id>")
class ActivityResource(MethodView):
    @activities.response(200)
    def get(self, activity_id):
        """An activity (the organiser also sees the check-in code and the volunteers)"""
        principal = current_principal()
        activity = ACTIVITIES.fetch(store().engine, activity_id)
        principal.require_reader(activity.community_id)
        return etagged(activity_view(principal, activity), activity.version)


@activities.route("/<activity_id>/cancellation")
class Cancellation(MethodView):
    @roles(activities, *ORGANISERS)
    @activities.arguments(CancellationSchema)
    @activities.response(200, CommandResultSchema)
    def post(self, command: c.CancelActivity, **_path):
        """Cancel the activity (organiser)"""
        return activity_answer(send(command))


@activities.route("/<activity_id>/signups")
class SignUps(MethodView):
    @roles(activities, *VOLUNTEERS)
    @activities.arguments(SignUpSchema)
    @activities.response(201, CommandResultSchema)
    def post(self, command: c.SignUp, **_path):
        """Sign up (volunteer with a card; capacity enforced, once)"""
        return activity_answer(send(command), 201)


@activities.route("/<activity_id>/signups/withdrawal")
class Withdrawal(MethodView):
    @roles(activities, *VOLUNTEERS)
    @activities.arguments(WithdrawalSchema)
    @activities.response(200, CommandResultSchema)
    def post(self, command: c.WithdrawSignUp, **_path):
        """Withdraw a sign-up"""
        return activity_answer(send(command))


@activities.route("/<activity_id>/check-in")
class CheckIn(MethodView):
    @roles(activities, *VOLUNTEERS)
    @activities.arguments(CheckInSchema)
    @activities.response(201, CommandResultSchema)
    def post(self, command: c.CheckIn, **_path):
        """Check in with the activity's code (from VOLUNTEERS_CHECKIN_OPENS_MINUTES, 30, before the start to the end)"""
        return activity_answer(send(command), 201)


@activities.route("/<activity_id>/check-out")
class CheckOut(MethodView):
    @roles(activities, *VOLUNTEERS)
    @activities.arguments(CheckOutSchema)
    @activities.response(201, CommandResultSchema)
    def post(self, command: c.CheckOut, **_path):
        """Check out with the code: the claim is computed from the times"""
        return card_answer(send(command), 201)


@activities.route("/<activity_id>/attendance")
class Attendance(MethodView):
    @roles(activities, *ORGANISERS)
    @activities.arguments(AttendanceSchema)
    @activities.response(201, CommandResultSchema)
    def post(self, command: c.RecordAttendance, **_path):
        """Record a volunteer's attendance (organiser): within the activity's time and not after now"""
        return card_answer(send(command), 201)


@activities.route("/<activity_id>/retroactive-entries")
class RetroactiveEntries(MethodView):
    @roles(activities, *ORGANISERS)
    @activities.arguments(RetroactiveSchema)
    @activities.response(201, CommandResultSchema)
    def post(self, command: c.RecordRetroactiveEntry, **_path):
        """补录: a retroactive entry after the activity, with a reason (organiser)"""
        return card_answer(send(command), 201)


@activities.route("/<activity_id>/claims/<person_id>/decision")
class ClaimDecision(MethodView):
    @roles(activities, *ORGANISERS)
    @activities.arguments(DecisionSchema)
    @activities.response(200, CommandResultSchema)
    def post(self, command: c.DecideClaim, **_path):
        """Approve, adjust (with a reason) or reject a claim (organiser, never the volunteer)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view(full=True))


# -- rewards ----------------------------------------------------------------------------------------

@rewards.route("")
class Rewards(MethodView):
    @roles(rewards, *STAFF)
    @rewards.arguments(RewardSchema)
    @rewards.response(201, CommandResultSchema)
    def post(self, command: c.ListReward):
        """Add a reward to the catalogue (staff)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view(), 201, outcome.result.id)

    @rewards.arguments(RewardListQuery, location="query")
    @rewards.response(200)
    def get(self, query):
        """The rewards catalogue of a community (default and, but for admins, only: yours)"""
        community_id = current_principal().reading_community(query.get("community_id"))
        with store().read_transaction() as connection:
            found = views.list_rewards(connection, community_id)
        return {"items": [reward.view() for reward in found]}


@rewards.route("/<reward_id>/restock")
class Restock(MethodView):
    @roles(rewards, *STAFF)
    @rewards.arguments(RestockSchema)
    @rewards.response(200, CommandResultSchema)
    def post(self, command: c.RestockReward, **_path):
        """Add stock (staff)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view())


@rewards.route("/<reward_id>/redemptions")
class Redemptions(MethodView):
    @roles(rewards, *VOLUNTEERS)
    @rewards.arguments(RedemptionSchema)
    @rewards.response(201, CommandResultSchema)
    def post(self, command: c.RedeemReward, **_path):
        """Redeem one item with points: stock and points change together, never below zero"""
        outcome = send(command)
        return answer(outcome, outcome.result.view(), 201, outcome.first("RewardRedeemed", "redemption_id"))


@rewards.route("/<reward_id>/redemptions/<redemption_id>/fulfilment")
class Fulfilment(MethodView):
    @roles(rewards, *STAFF, "organiser")
    @rewards.arguments(FulfilmentSchema)
    @rewards.response(200, CommandResultSchema)
    def post(self, command: c.FulfilRedemption, **_path):
        """Record that the item was handed over (staff)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view())


# -- certificates -----------------------------------------------------------------------------------

@certificates.route("")
class Certificates(MethodView):
    @roles(certificates, *ORGANISERS)
    @certificates.arguments(CertificateSchema)
    @certificates.response(201, CommandResultSchema)
    def post(self, command: c.IssueCertificate):
        """Issue a certificate of volunteer service for a volunteer and a period (organiser, cadre)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view(), 201, outcome.result.id)


@certificates.route("/<number>")
class CertificateResource(MethodView):
    @certificates.response(200)
    def get(self, number):
        """A certificate (its holder, and staff and organisers of the holder's community)"""
        principal = current_principal()
        principal.require_reader(None)
        certificate = CERTIFICATES.fetch(store().engine, number)
        if principal.person_id != certificate.person_id:
            if not principal.has_any(STAFF + ("organiser",)):
                raise NotFound(f"no certificate {number} for you")
            principal.require_reader(CARDS.fetch(store().engine, certificate.person_id).community_id)
        return certificate.view()


@certificates.route("/<number>/verification")
class Verification(MethodView):
    @roles(certificates, ANY_ROLE)
    @certificates.arguments(VerificationSchema)
    @certificates.response(200)
    def post(self, body, number):
        """Check a presented certificate against the event store (any token; a query: records nothing):
        ``valid``, the ``problems`` found, and which presented parts ``match``; the parts are
        compared only when the presented verification value is the one issued"""
        current_principal()
        certificate = CERTIFICATES.fetch(store().engine, number)
        presented = {k: v for k, v in body.items() if k != "verification"} | {"value": body.get("verification")}
        return {"certificate_number": number, **views.verify_certificate(
            store(), certificate, presented, opened(certificate.name) if certificate is not None else None)}


# -- public reads: no token (a third party checking a paper certificate) ----------------------------

@public_reads.route("/certificates/<number>/verification")
class PublicVerification(MethodView):
    @public(public_reads)
    @public_reads.arguments(PublicVerificationQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, query, number):
        """Check what a certificate says against the store, without a token: ``valid`` and, per
        presented part, whether it ``match``es — nothing stored is answered. Without the issued
        verification value every part answers false, and an unknown number answers as a wrong value"""
        with store().read_transaction() as connection:
            certificate = CERTIFICATES.get(connection, number)
        checked = views.verify_certificate(store(), certificate, query,
                                           opened(certificate.name) if certificate is not None else None)
        return privacy.public_view("certificate_check", checked)


# -- reports ----------------------------------------------------------------------------------------

@reports.route("/leaderboards/<community_id>")
class Leaderboard(MethodView):
    @reports.arguments(LeaderboardQuery, location="query")
    @reports.response(200)
    def get(self, query, community_id):
        """Volunteers ranked by approved hours in a month, a year or all time"""
        current_principal().require_reader(community_id)
        first, last, label = period_bounds(query)
        with store().read_transaction() as connection:
            items = CREDITS.leaderboard(connection, community_id, first, last, query["limit"])
        return {"community_id": community_id, "period": query["period"], "label": label, "items": items}


@reports.route("/hours/<community_id>")
class HoursPerMonth(MethodView):
    @reports.arguments(HoursQuery, location="query")
    @reports.response(200)
    def get(self, query, community_id):
        """Approved volunteer hours per month (China Standard Time) of the last months, with how many
        volunteers gave them; months without any are listed with zero"""
        current_principal().require_reader(community_id)
        today = service_container().bus.clock().astimezone(LOCAL_TZ).date()
        months = []
        year, month = today.year, today.month
        for _ in range(query["months"]):
            months.append(f"{year}-{month:02d}")
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        months.reverse()
        with store().read_transaction() as connection:
            found = CREDITS.per_month(connection, community_id, f"{months[0]}-01")
        items = [{"month": m, "minutes": found.get(m, {}).get("minutes", 0),
                  "hours": round(found.get(m, {}).get("minutes", 0) / 60, 1),
                  "volunteers": found.get(m, {}).get("volunteers", 0)} for m in months]
        return {"community_id": community_id, "items": items}


@reports.route("/me/card")
class MyCard(MethodView):
    @reports.response(200)
    def get(self):
        """My card: hours, points, star level, and its history"""
        principal = current_principal()
        card = CARDS.fetch(store().engine, principal.person_id)
        with store().read_transaction() as connection:
            credits = CREDITS.for_person(connection, principal.person_id)
        return {"card": card.view(full=True), "credits": credits,
                "claims": [{"claim_id": k, **claim} for k, claim in card.claims.items()]}


@reports.route("/projects/<project_id>/minutes")
class ProjectMinutes(MethodView):
    @reports.response(200)
    def get(self, project_id):
        """Approved volunteer minutes credited to a co-creation project (by volunteers of your community)"""
        community_id = current_principal().reading_community(None)
        with store().read_transaction() as connection:
            minutes = CREDITS.minutes_for_source(connection, "project", project_id, community_id)
        return {"project_id": project_id, "minutes": minutes, "hours": round(minutes / 60, 1)}


# -- people's requests about their personal information ----------------------------------------------

def person_answer(outcome: Outcome, status: int = 200, own: bool = False):
    return answer(outcome, outcome.result.view(own=own), status)


@people.route("/me/erasure")
class MyErasure(MethodView):
    @people.response(200)
    def get(self):
        """My erasure request, if any, and the obligations that keep my information until they end"""
        person_id = current_principal().person_id
        with store().read_transaction() as connection:
            person = views.PEOPLE.get(connection, person_id) or Person(id=person_id)
        return person.view(own=True)

    @roles(people, ANY_ROLE)
    @people.arguments(ErasureRequestSchema)
    @people.response(201, CommandResultSchema)
    def post(self, command: c.RequestErasure):
        """Ask for my personal information to be erased (staff of my community confirm it; refused while
        a follow-up case of my rating is open)"""
        return person_answer(send(command), 201, own=True)


@people.route("/erasures")
class ErasureRequests(MethodView):
    @roles(people, *STAFF)
    @people.arguments(ErasureListQuery, location="query")
    @people.response(200)
    def get(self, query):
        """Erasure requests waiting for staff (your community's; admins: every community's or one)"""
        community_id = current_principal().reading_community(query.get("community_id"))
        with store().read_transaction() as connection:
            found = views.erasure_requests(connection, community_id, query["limit"])
        return {"items": [person.view() for person in found]}


@people.route("/erasures/<person_id>/confirmation")
class ErasureConfirmation(MethodView):
    @roles(people, *STAFF)
    @people.arguments(ErasureConfirmationSchema)
    @people.response(200, CommandResultSchema)
    def post(self, command: c.ConfirmErasure, **_path):
        """Confirm a person's erasure request: their keys are deleted for every service (their name, phone
        and comments read 已注销 everywhere; hours, points and counts stay). 409 while an obligation is open"""
        return person_answer(send(command))


BLUEPRINTS = (cards, activities, rewards, certificates, reports, people, public_reads, open_data.blueprint)
