"""HTTP API of the volunteers service (flask-smorest; /openapi.json and /docs).

Commands answer with the changed resource, the events recorded (``recorded``) and an ``ETag``
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
from flask_smorest import Blueprint

from services.kernel import privacy
from services.kernel.db import read_transaction
from services.kernel.errors import NotFound
from services.kernel.web import (
    ANY_ROLE, IDENTIFIER, EmptySchema, Schema, command_answer, current_principal, etagged, event_metadata,
    expected_version_from_if_match, roles, text_field,
)
from services.volunteers import handlers, views
from services.volunteers.domain import ORGANISER_KINDS, ORGANISERS, STAFF, VOLUNTEERS
from services.volunteers.handlers import VolunteersService
from services.volunteers.views import ACTIVITIES, CARDS, CERTIFICATES, CREDITS

f = ma.fields
v = ma.validate
ID = IDENTIFIER


text = text_field


class CardSchema(Schema):
    person_id = f.String(metadata={"description": "staff only: register someone else"}, **ID)
    name = text(100)
    community_id = f.String(**ID)
    skills = f.List(text(50), load_default=list, validate=v.Length(max=20))
    phone = f.String(validate=v.Regexp(r"^\+?[0-9 -]{5,20}$"), load_default="")


class OrganiserSchema(Schema):
    kind = f.String(required=True, validate=v.OneOf(ORGANISER_KINDS))
    id = f.String(required=True, **ID)
    name = text(100, required=True)


class ActivitySchema(Schema):
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


class ReasonSchema(Schema):
    reason = text(500, required=True)


class CodeSchema(Schema):
    code = f.String(required=True, validate=v.Regexp(r"^[0-9]{6}$", error="six digits"))


class AttendanceSchema(Schema):
    person_id = f.String(required=True, **ID)
    start = f.AwareDateTime(metadata={"description": "default: the activity's start"})
    end = f.AwareDateTime(metadata={"description": "default: the activity's end"})


class RetroactiveSchema(AttendanceSchema):
    reason = text(500, required=True)


class DecisionSchema(Schema):
    decision = f.String(required=True, validate=v.OneOf(["approve", "reject"]))
    minutes = f.Integer(strict=True, validate=v.Range(min=30, max=24 * 60),
                        metadata={"description": "approve fewer minutes than claimed (with a reason)"})
    reason = f.String(validate=v.Length(max=500), load_default="")


class RewardSchema(Schema):
    name = text(100, required=True)
    description = f.String(validate=v.Length(max=500), load_default="")
    community_id = f.String(required=True, **ID)
    cost_points = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=10**7))
    stock = f.Integer(required=True, strict=True, validate=v.Range(min=0, max=10**6))


class RestockSchema(Schema):
    quantity = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=10**6))


class RewardListQuery(Schema):
    community_id = f.String(**ID)


class CertificateSchema(Schema):
    person_id = f.String(required=True, **ID)
    period_from = f.Date(required=True)
    period_to = f.Date(required=True)
    issuing_organisation = text(200, required=True)


class VerificationSchema(Schema):
    verification = f.String(validate=v.Length(equal=64), metadata={"description": "the value printed on "
                                                                                   "the certificate"})


class LeaderboardQuery(Schema):
    period = f.String(load_default="month", validate=v.OneOf(["month", "year", "all"]))
    month = f.String(validate=v.Regexp(r"^(?!0000)\d{4}-(0[1-9]|1[0-2])$"), metadata={"description": "YYYY-MM, year 0001 to 9999"})
    year = f.Integer(validate=v.Range(min=2000, max=2100))
    limit = f.Integer(load_default=20, validate=v.Range(min=1, max=200))


class CommandResultSchema(Schema):
    resource = f.Raw()
    recorded = f.List(f.Raw())
    created_id = f.String(allow_none=True)


def _answer(resource: dict, version: int, recorded, status: int = 200, created_id: str | None = None):
    return command_answer("resource", resource, version, recorded, status, created_id)


def period_bounds(query) -> tuple[str | None, str | None, str]:
    today = handlers.now().date()
    if query["period"] == "all":
        return None, None, "all"
    if query["period"] == "year":
        year = query.get("year") or today.year
        return f"{year}-01-01", f"{year}-12-31", str(year)
    year, month = (map(int, query["month"].split("-")) if query.get("month") else (today.year, today.month))
    last = calendar.monthrange(year, month)[1]
    return date(year, month, 1).isoformat(), date(year, month, last).isoformat(), f"{year}-{month:02d}"


def blueprints(container) -> list[Blueprint]:
    store = container.store
    service = VolunteersService(store)
    cards = Blueprint("cards", __name__, url_prefix="/cards", description="义工卡 volunteer cards")
    activities = Blueprint("activities", __name__, url_prefix="/activities",
                           description="活动 activities: sign-up, attendance, approval")
    rewards = Blueprint("rewards", __name__, url_prefix="/rewards", description="积分兑换 rewards catalogue")
    certificates = Blueprint("certificates", __name__, url_prefix="/certificates",
                             description="志愿服务记录证明 certificates and their verification")
    reports = Blueprint("reports", __name__, description="Leaderboards, my card, minutes per project")

    def who():
        principal = current_principal()
        return principal, event_metadata(principal)

    # -- cards ----------------------------------------------------------------------------------

    @cards.route("")
    class Cards(MethodView):
        @roles(cards, *VOLUNTEERS, *STAFF)
        @cards.arguments(CardSchema)
        @cards.response(201, CommandResultSchema)
        def post(self, body):
            """Register a volunteer card (one per person)"""
            principal, meta = who()
            card, recorded = service.register(principal, meta, body)
            response = _answer(card.view(full=True), card.version, recorded, 201, card.id)
            response.headers["Location"] = f"/cards/{card.id}"
            return response

    def card_for(principal, person_id):
        """The card as the privacy policy lets ``principal`` see it (the phone unmasked for the
        holder, the staff of the holder's community and the organisers, in that community, of an
        activity the holder signed up for), whether the phone is unmasked, and the card itself."""
        card = CARDS.fetch(store.engine, person_id)
        if principal.person_id != card.id:
            principal.require_reader(card.community_id)
        rel = privacy.relations(principal, card.community_id, holder=card.id,
                                organisers=[principal.person_id] if organises_for(principal, card) else [])
        return privacy.redact("card", card.view(full=True), rel), privacy.shown("card", "phone", rel), card

    def organises_for(principal, card) -> bool:
        """``principal`` organises, in the holder's community, an activity the holder signed up for."""
        if principal.community != card.community_id or not principal.has_any(("organizer",)):
            return False
        with read_transaction(store.engine) as connection:
            return views.organises_for(connection, principal.person_id, card)

    def activity_view(principal, activity) -> dict:
        rel = privacy.relations(principal, activity.community_id, organisers=[activity.organiser_person_id])
        return privacy.redact("activity", activity.view(show_code=True), rel)

    @cards.route("/<person_id>")
    class CardResource(MethodView):
        @cards.response(200)
        def get(self, person_id):
            """A volunteer's card (contact details masked but for you, cadres of your community and your organisers)"""
            seen, _unmasked, card = card_for(current_principal(), person_id)
            return etagged(seen, card.version)

    @cards.route("/<person_id>/history")
    class CardHistory(MethodView):
        @cards.response(200)
        def get(self, person_id):
            """The card's credits and claims (those who see the phone unmasked)"""
            principal = current_principal()
            seen, unmasked, card = card_for(principal, person_id)
            if not unmasked:  # the history goes to those who may see the phone
                raise NotFound(f"no card history of {person_id} for you")
            with read_transaction(store.engine) as connection:
                credits = CREDITS.for_person(connection, person_id)
            claims = [{"claim_id": k, **c} for k, c in card.claims.items()]
            return {"card": seen, "credits": credits, "claims": claims}

    # -- activities -----------------------------------------------------------------------------

    @activities.route("")
    class Activities(MethodView):
        @roles(activities, *ORGANISERS)
        @activities.arguments(ActivitySchema)
        @activities.response(201, CommandResultSchema)
        def post(self, body):
            """Publish an activity (organiser: community cadre, social organisation, or a project)"""
            principal, meta = who()
            activity, recorded = service.publish(principal, meta, body)
            return _answer(activity.view(show_code=True), activity.version, recorded, 201, activity.id)

        @activities.arguments(ActivityListQuery, location="query")
        @activities.response(200)
        def get(self, query):
            """Activities of a community (default and, but for admins, only: yours), newest start first"""
            principal = current_principal()
            community_id = principal.reading_community(query.get("community_id"))
            with read_transaction(store.engine) as connection:
                found = views.list_activities(connection, community_id, query.get("status"), query["limit"])
            return {"items": [activity_view(principal, activity) for activity in found]}

    @activities.route("/<activity_id>")
    class ActivityResource(MethodView):
        @activities.response(200)
        def get(self, activity_id):
            """An activity (the organiser also sees the check-in code and the volunteers)"""
            principal = current_principal()
            activity = ACTIVITIES.fetch(store.engine, activity_id)
            principal.require_reader(activity.community_id)
            return etagged(activity_view(principal, activity), activity.version)

    def activity_command(path, name, schema_cls, run, doc, status=201, allowed=ORGANISERS):
        def handler(*args, activity_id, **kwargs):
            body = args[0] if args else {}
            principal, meta = who()
            resource, recorded, version, created = run(principal, meta, activity_id, body, **kwargs)
            return _answer(resource, version, recorded, status, created)
        handler.__doc__, handler.__name__ = doc, name
        view = activities.arguments(schema_cls or EmptySchema)(activities.response(status, CommandResultSchema)(handler))
        activities.route(f"/<activity_id>/{path}", methods=["POST"], endpoint=name)(roles(activities, *allowed)(view))

    def on_activity(decide):
        def run(principal, meta, activity_id, body):
            activity, recorded = service.on_activity(principal, meta, activity_id,
                                                     lambda a, uow: decide(a, principal, body, uow),
                                                     expected_version_from_if_match())
            return activity.view(show_code=False), recorded, activity.version, None
        return run

    def on_card(command):
        """A command that records a claim on a card: answer with the card and the new claim id."""
        def run(principal, meta, activity_id, body):
            card, recorded = command(principal, meta, activity_id, body)
            claim = next((e.data["claim_id"] for e in recorded if e.event_type == "ClaimRecorded"), None)
            return card.view(full=True), recorded, card.version, claim
        return run

    def sign_up(activity, principal, body, uow):
        service._card(uow, principal.person_id)
        return activity.sign_up(principal, uow.now())

    activity_command("cancellation", "cancel_activity", ReasonSchema,
                     on_activity(lambda a, p, b, uow: a.cancel(p, b["reason"])),
                     "Cancel the activity (organiser)", status=200)
    activity_command("signups", "sign_up", None, on_activity(sign_up),
                     "Sign up (volunteer with a card; capacity enforced, once)", allowed=VOLUNTEERS)
    activity_command("signups/withdrawal", "withdraw_signup", None,
                     on_activity(lambda a, p, b, uow: a.withdraw(p)), "Withdraw a sign-up", status=200,
                     allowed=VOLUNTEERS)
    activity_command("check-in", "check_in", CodeSchema,
                     on_activity(lambda a, p, b, uow: a.check_in(p, b["code"], uow.now())),
                     "Check in with the activity's code (from an hour before the start to the end)",
                     allowed=VOLUNTEERS)
    activity_command("check-out", "check_out", CodeSchema, on_card(lambda p, m, a, b: service.check_out(p, m, a, b["code"])),
                     "Check out with the code: the claim is computed from the times", allowed=VOLUNTEERS)
    activity_command("attendance", "record_attendance", AttendanceSchema,
                     on_card(lambda p, m, a, b: service.record_attendance(p, m, a, b, retroactive=False)),
                     "Record a volunteer's attendance (organiser)")
    activity_command("retroactive-entries", "retroactive_entry", RetroactiveSchema,
                     on_card(lambda p, m, a, b: service.record_attendance(p, m, a, b, retroactive=True)),
                     "补录: a retroactive entry after the activity, with a reason (organiser)")
    activity_command("claims/<person_id>/decision", "decide_claim", DecisionSchema,
                     lambda principal, meta, activity_id, body, person_id: _card_result(
                         service.decide_claim(principal, meta, activity_id, person_id, body,
                                              expected_version_from_if_match())),
                     "Approve, adjust (with a reason) or reject a claim (organiser, never the volunteer)",
                     status=200)

    # -- rewards --------------------------------------------------------------------------------

    @rewards.route("")
    class Rewards(MethodView):
        @roles(rewards, *STAFF)
        @rewards.arguments(RewardSchema)
        @rewards.response(201, CommandResultSchema)
        def post(self, body):
            """Add a reward to the catalogue (staff)"""
            principal, meta = who()
            reward, recorded = service.list_reward(principal, meta, body)
            return _answer(reward.view(), reward.version, recorded, 201, reward.id)

        @rewards.arguments(RewardListQuery, location="query")
        @rewards.response(200)
        def get(self, query):
            """The rewards catalogue of a community (default and, but for admins, only: yours)"""
            community_id = current_principal().reading_community(query.get("community_id"))
            with read_transaction(store.engine) as connection:
                found = views.list_rewards(connection, community_id)
            return {"items": [reward.view() for reward in found]}

    @rewards.route("/<reward_id>/restock")
    class Restock(MethodView):
        @roles(rewards, *STAFF)
        @rewards.arguments(RestockSchema)
        @rewards.response(200, CommandResultSchema)
        def post(self, body, reward_id):
            """Add stock (staff)"""
            principal, meta = who()
            reward, recorded = service.restock(principal, meta, reward_id, body["quantity"],
                                               expected_version_from_if_match())
            return _answer(reward.view(), reward.version, recorded)

    @rewards.route("/<reward_id>/redemptions")
    class Redemptions(MethodView):
        @roles(rewards, *VOLUNTEERS)
        @rewards.arguments(EmptySchema)
        @rewards.response(201, CommandResultSchema)
        def post(self, _body, reward_id):
            """Redeem one item with points: stock and points change together, never below zero"""
            principal, meta = who()
            reward, recorded = service.redeem(principal, meta, reward_id, expected_version_from_if_match())
            redemption = next(e.data["redemption_id"] for e in recorded if e.event_type == "RewardRedeemed")
            return _answer(reward.view(), reward.version, recorded, 201, redemption)

    @rewards.route("/<reward_id>/redemptions/<redemption_id>/fulfilment")
    class Fulfilment(MethodView):
        @roles(rewards, *STAFF, "organizer")
        @rewards.arguments(EmptySchema)
        @rewards.response(200, CommandResultSchema)
        def post(self, _body, reward_id, redemption_id):
            """Record that the item was handed over (staff)"""
            principal, meta = who()
            reward, recorded = service.fulfil(principal, meta, reward_id, redemption_id, expected_version_from_if_match())
            return _answer(reward.view(), reward.version, recorded)

    # -- certificates ---------------------------------------------------------------------------

    @certificates.route("")
    class Certificates(MethodView):
        @roles(certificates, *ORGANISERS)
        @certificates.arguments(CertificateSchema)
        @certificates.response(201, CommandResultSchema)
        def post(self, body):
            """Issue a certificate of volunteer service for a volunteer and a period (organiser, cadre)"""
            principal, meta = who()
            certificate, recorded = service.issue_certificate(principal, meta, body)
            return _answer(certificate.view(), certificate.version, recorded, 201, certificate.id)

    @certificates.route("/<number>")
    class CertificateResource(MethodView):
        @certificates.response(200)
        def get(self, number):
            """A certificate (its holder, and staff and organisers of the holder's community)"""
            principal = current_principal()
            principal.require_reader(None)
            certificate = CERTIFICATES.fetch(store.engine, number)
            if principal.person_id != certificate.person_id:
                if not principal.has_any(STAFF + ("organizer",)):
                    raise NotFound(f"no certificate {number} for you")
                principal.require_reader(CARDS.fetch(store.engine, certificate.person_id).community_id)
            return certificate.view()

    @certificates.route("/<number>/verification")
    class Verification(MethodView):
        @roles(certificates, ANY_ROLE)
        @certificates.arguments(VerificationSchema)
        @certificates.response(200)
        def post(self, body, number):
            """Verify a presented certificate against the event store"""
            current_principal()
            certificate = CERTIFICATES.fetch(store.engine, number)
            return service.verify_certificate(certificate, body.get("verification"))

    # -- reports --------------------------------------------------------------------------------

    @reports.route("/leaderboards/<community_id>")
    class Leaderboard(MethodView):
        @reports.arguments(LeaderboardQuery, location="query")
        @reports.response(200)
        def get(self, query, community_id):
            """Volunteers ranked by approved hours in a month, a year or all time"""
            current_principal().require_reader(community_id)
            first, last, label = period_bounds(query)
            with read_transaction(store.engine) as connection:
                items = CREDITS.leaderboard(connection, community_id, first, last, query["limit"])
            return {"community_id": community_id, "period": query["period"], "label": label, "items": items}

    @reports.route("/me/card")
    class MyCard(MethodView):
        @reports.response(200)
        def get(self):
            """My card: hours, points, star level, and its history"""
            principal = current_principal()
            card = CARDS.fetch(store.engine, principal.person_id)
            with read_transaction(store.engine) as connection:
                credits = CREDITS.for_person(connection, principal.person_id)
            return {"card": card.view(full=True), "credits": credits,
                    "claims": [{"claim_id": k, **c} for k, c in card.claims.items()]}

    @reports.route("/projects/<project_id>/minutes")
    class ProjectMinutes(MethodView):
        @reports.response(200)
        def get(self, project_id):
            """Approved volunteer minutes credited to a co-creation project (by volunteers of your community)"""
            principal = current_principal()
            community_id = principal.reading_community(None)
            with read_transaction(store.engine) as connection:
                minutes = CREDITS.minutes_for_source(connection, "project", project_id, community_id)
            return {"project_id": project_id, "minutes": minutes, "hours": round(minutes / 60, 1)}

    return [cards, activities, rewards, certificates, reports]


def _card_result(outcome):
    card, recorded = outcome
    return card.view(full=True), recorded, card.version, None
