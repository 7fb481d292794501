"""HTTP API of the feedback service (flask-smorest; /openapi.json and /docs).

Every write route loads its command (:mod:`services.feedback.commands`) with its schema and sends
it to the service's message bus. Commands answer with ``{"resource": ..., "recorded": [...],
"created_id": ...}`` and an ``ETag`` holding the resource's version. Who sees what is decided by
the platform's one privacy policy (:mod:`services.kernel.privacy`):

- a rating's rater (and the actor of its events) is shown to the rater and to the community's
  staff (cadre, grid worker, admin) who are not the rated person — never to the rated subject, so
  residents can rate without fear of retaliation; the subject and everyone else see the level,
  the dimensions and the comment; a follow-up case names its resident by the same rule;
- rating ids are public ids (:class:`services.feedback.ids.RatingIds`): nobody can compute a
  resident's rating id from their person id;
- every read is scoped to the token's community (admins: any community);
- reads record nothing: an open case past its deadline shows as overdue, and ``python -m
  services.feedback sweep-overdue`` (a periodic job) records it so;
- published rankings are also public reads (``/public/rankings/...``, no token): names, units,
  ranks, and figures only where enough residents rated (``FEEDBACK_PUBLIC_MIN_COUNT``).
"""

from __future__ import annotations

from datetime import datetime
from operator import itemgetter

import marshmallow as ma
from flask.views import MethodView

from services.feedback import commands as c
from services.feedback import open_data
from services.feedback import views
from services.feedback.domain import (
    CASE_HANDLERS, RATERS, STAFF, SUBJECT_KINDS, Ranking, rank, ranking_key, valid_period,
)
from services.feedback.ids import RatingIds
from services.feedback.views import CASES, PLANS, RANKING_PAGES, RANKINGS, RATINGS, STATS, SUBJECTS, policy_for
from services.kernel import privacy
from services.kernel.bus import Outcome
from services.kernel.errors import DomainError, Forbidden, NotFound
from services.kernel.web import (
    Blueprint,
    ANY_ROLE, IDENTIFIER, PUBLIC_QUERY, CommandSchema, JsonBoolean, Schema, command_answer, current_principal,
    encoded_answer, etagged, public, roles, send, service_container, text_field,
)

f = ma.fields
v = ma.validate
ID = IDENTIFIER
LEVEL = {"strict": True, "validate": v.Range(min=1, max=5)}
PERIOD = {"validate": v.Regexp(r"^20\d\d-(0[1-9]|1[0-2]|Q[1-4])$", error="YYYY-MM or YYYY-Qn")}


class PolicySchema(CommandSchema):
    command = c.ChangePolicy

    period = f.String(validate=v.OneOf(["month", "quarter"]))
    min_ratings = f.Integer(strict=True, validate=v.Range(min=1, max=10_000))
    # The bounds as numbers in the document (apispec would render the Decimal bounds as strings).
    prior_mean = f.Decimal(places=2, validate=v.Range(min=1, max=5),
                           metadata={"description": "1.00 to 5.00", "minimum": 1, "maximum": 5})
    prior_weight = f.Integer(strict=True, validate=v.Range(min=0, max=10_000))
    satisfaction_threshold_pct = f.Integer(strict=True, validate=v.Range(min=1, max=100))
    followup_working_days = f.Integer(strict=True, validate=v.Range(min=1, max=30))
    burst_window_minutes = f.Integer(strict=True, validate=v.Range(min=1, max=7 * 24 * 60))
    burst_min_ratings = f.Integer(strict=True, validate=v.Range(min=2, max=10_000))


class SubjectSchema(CommandSchema):
    command = c.RegisterSubject

    subject_id = f.String(required=True, **ID)
    kind = f.String(required=True, validate=v.OneOf(SUBJECT_KINDS))
    name = text_field(100, required=True)
    community_id = f.String(required=True, **ID)
    unit_id = f.String(**ID, metadata={"description": "the unit a cadre or grid worker belongs to"})
    person_id = f.String(**ID, metadata={"description": "for cadres and grid workers"})
    description = f.String(validate=v.Length(max=500), load_default="")


class SubjectListQuery(Schema):
    community_id = f.String(**ID)
    kind = f.String(validate=v.OneOf(SUBJECT_KINDS))
    flagged = f.Boolean(metadata={"description": "only subjects with open burst flags"})


class DimensionsSchema(Schema):
    efficiency = f.Integer(**LEVEL)
    attitude = f.Integer(**LEVEL)
    result = f.Integer(**LEVEL)


class RatingSchema(CommandSchema):
    command = c.SubmitRating

    level = f.Integer(required=True, **LEVEL, metadata={"description": "5 非常满意 … 1 非常不满意"})
    dimensions = f.Nested(DimensionsSchema, load_default=dict)
    comment = f.String(validate=v.Length(max=1000), load_default="")


class RevisionSchema(RatingSchema):
    """A rating's new level, dimensions and comment."""

    command = c.ReviseRating


class RankingPageQuery(Schema):
    limit = f.Integer(load_default=100, validate=v.Range(min=1, max=1000))
    offset = f.Integer(load_default=0, validate=v.Range(min=0))


class PeriodQuery(Schema):
    period = f.String(**PERIOD, metadata={"description": "default: the current period"})


class AppealSchema(CommandSchema):
    command = c.FileAppeal

    grounds = f.String(required=True, validate=v.OneOf(["mistaken", "malicious"]))
    statement = text_field(1000, required=True)


class AppealDecisionSchema(CommandSchema):
    command = c.DecideAppeal

    upheld = JsonBoolean(required=True)
    reason = text_field(500, required=True)


class FlagReviewSchema(CommandSchema):
    command = c.ReviewFlag

    decision = f.String(required=True, validate=v.OneOf(["keep", "exclude"]))
    reason = text_field(500, required=True)


class CaseListQuery(Schema):
    community_id = f.String(**ID)
    status = f.String(validate=v.OneOf(["open", "closed"]))
    overdue = f.Boolean()
    limit = f.Integer(load_default=100, validate=v.Range(min=1, max=500))


class SummaryQuery(Schema):
    community_id = f.String(required=True, **ID)


class ContactSchema(CommandSchema):
    command = c.ContactResident

    channel = f.String(required=True, validate=v.OneOf(["phone", "visit", "message"]))
    note = text_field(1000, required=True)


class RectificationSchema(CommandSchema):
    command = c.RecordRectification

    actions = text_field(2000, required=True)


class ConfirmationSchema(CommandSchema):
    command = c.ConfirmOutcome

    satisfied = JsonBoolean(required=True)
    comment = f.String(validate=v.Length(max=1000), load_default="")


class PublishSchema(CommandSchema):
    command = c.PublishRanking

    community_id = f.String(required=True, **ID)
    kind = f.String(required=True, validate=v.OneOf(SUBJECT_KINDS))
    period = f.String(required=True, **PERIOD)
    provisional = JsonBoolean(load_default=False, metadata={"description": "an interim edition of the open "
                                                                          "period (opens no support plans)"})


class MentorSchema(Schema):
    person_id = f.String(required=True, **ID)
    name = text_field(100, required=True)


class PlanSchema(CommandSchema):
    command = c.DrawUpPlan

    mentor = f.Nested(MentorSchema, required=True)
    actions = f.List(text_field(500), required=True, validate=v.Length(min=1, max=20))
    deadline = f.Date(required=True)


class NoteSchema(CommandSchema):
    command = c.NoteProgress

    note = text_field(2000, required=True)


class PlanListQuery(Schema):
    community_id = f.String(**ID)
    status = f.String(validate=v.OneOf(["open", "closed"]))


# -- what readers see -----------------------------------------------------------------------------

def store():
    return service_container().store


def now() -> datetime:
    """The service's clock (the bus's: tests inject theirs)."""
    return service_container().bus.clock()


def ids() -> RatingIds:
    """The deployment's rating ids (the same the command handlers use)."""
    return service_container().resources["rating_ids"]


def present(principal, rating: views.RatingRecord) -> dict:
    """A rating as the privacy policy lets ``principal`` see it, under its public id."""
    rel = privacy.relations(principal, rating.community_id, holder=rating.person_id,
                            rated=rating.subject_person_id)
    view = privacy.redact("rating", rating.view(), rel)
    return {**view, "rating_id": ids().public(rating.id)}


def present_case(principal, case: views.CaseRecord, at: datetime) -> dict:
    """A case as the privacy policy lets ``principal`` see it (overdue as it stands ``at``)."""
    rel = privacy.relations(principal, case.community_id, holder=case.person_id, rated=case.subject_person_id)
    view = privacy.redact("case", case.view(at), rel)
    return {**view, "rating_id": ids().public(case.rating_id)}


def public_flags(subject: views.SubjectRecord, at: datetime) -> list[dict]:
    """The subject's burst incidents (flags) as they stand ``at``, under public rating ids."""
    public = ids().public
    return [{**flag, "rating_ids": [public(r) for r in flag["rating_ids"]]} for flag in subject.flags(at)]


def rating_for(principal, rating_id: str) -> views.RatingRecord:
    """The rating behind a public id, for a reader of its community."""
    stored = ids().resolve(rating_id)
    if stored is None:
        raise NotFound(f"no rating {rating_id}")
    rating = RATINGS.fetch(store().engine, stored)
    principal.require_reader(rating.community_id)
    return rating


def current_period(community_id: str) -> str:
    with store().read_transaction() as connection:
        return views.current_period(connection, community_id, now())


def check_kind(kind: str) -> None:
    if kind not in SUBJECT_KINDS:
        raise NotFound(f"no subject kind {kind}; kinds are {', '.join(SUBJECT_KINDS)}")


def check_period(period: str) -> None:
    if not valid_period(period):
        raise DomainError("the period is YYYY-MM or YYYY-Qn", reason="invalid_period",
                          details={"period": "YYYY-MM or YYYY-Qn"})


def min_count() -> int:
    """Below this, a count of people is not shown on a public read (``FEEDBACK_PUBLIC_MIN_COUNT``)."""
    return service_container().settings.public_min_count


def public_ranking(community_id: str, kind: str, period: str | None, query: dict) -> dict:
    """The latest published edition of the community's ranking of ``kind`` in ``period`` (None: the
    ranking published last), as anyone may read it; 404 when there is none."""
    check_kind(kind)
    if period is not None:
        check_period(period)
    with store().read_transaction() as connection:
        if period is None:
            latest = views.latest_ranking(connection, community_id, kind)
            period = latest.period if latest else None
        found = None if period is None else views.public_ranking(
            connection, community_id, kind, period, query["limit"], query["offset"], min_count())
    if found is None:
        raise NotFound(f"no published {kind} ranking of community {community_id}" + (f" for {period}" if period else ""))
    return found


def published(community_id: str, kind: str, period: str) -> views.RankingRecord:
    check_kind(kind)
    check_period(period)
    return RANKINGS.fetch(store().engine, ranking_key(community_id, kind, period))


# -- what commands answer ----------------------------------------------------------------------

def answer(outcome: Outcome, resource: dict, status: int = 200, created_id: str | None = None):
    """The command's answer: the changed resource, the events recorded, its version as ETag."""
    return command_answer("resource", resource, outcome.result.version, outcome.recorded, status, created_id)


def rating_answer(outcome: Outcome, status: int = 200, created_id: str | None = None):
    return answer(outcome, present(current_principal(), outcome.result), status, created_id)


def case_answer(outcome: Outcome):
    return answer(outcome, present_case(current_principal(), outcome.result, now()))


policies = Blueprint("policies", __name__, url_prefix="/policies", description="评价规则 rating policy per community")
subjects = Blueprint("subjects", __name__, url_prefix="/subjects", description="被评价对象 subjects and their ratings")
ratings = Blueprint("ratings", __name__, url_prefix="/ratings", description="评价 ratings, revisions, appeals")
cases = Blueprint("cases", __name__, url_prefix="/cases", description="差评回访 follow-up of bad ratings")
rankings = Blueprint("rankings", __name__, url_prefix="/rankings", description="评价排队 rankings")
plans = Blueprint("plans", __name__, url_prefix="/plans", description="不满意干部帮扶 support plans")
me = Blueprint("me", __name__, url_prefix="/me", description="My ratings and their follow-ups")
public_reads = Blueprint("public", __name__, url_prefix="/public",
                         description="公开 published rankings, for anyone without a token (共享)")


# -- policy -------------------------------------------------------------------------------------

@policies.route("/<community_id>")
class PolicyResource(MethodView):
    @policies.response(200)
    def get(self, community_id):
        """The community's rating policy (defaults until a cadre changes it)"""
        current_principal().require_reader(community_id)
        with store().read_transaction() as connection:
            settings, version = policy_for(connection, community_id)
        return etagged({"community_id": community_id, "settings": settings, "version": version}, version)

    @roles(policies, *STAFF)
    @policies.arguments(PolicySchema)
    @policies.response(200)
    def patch(self, command: c.ChangePolicy, community_id):
        """Change the policy (cadre of the community); applies to ratings and rankings from now on"""
        outcome = send(command)
        policy = outcome.result
        return answer(outcome, {"community_id": community_id, "settings": policy.settings, "version": policy.version})


# -- subjects -----------------------------------------------------------------------------------

@subjects.route("")
class Subjects(MethodView):
    @roles(subjects, *STAFF)
    @subjects.arguments(SubjectSchema)
    @subjects.response(201)
    def post(self, command: c.RegisterSubject):
        """Register a subject to be rated: cadre, grid worker, unit, service or project (staff)"""
        outcome = send(command)
        subject = outcome.result
        response = answer(outcome, subject.view(), 201, subject.id)
        response.headers["Location"] = f"/subjects/{subject.id}"
        return response

    @subjects.arguments(SubjectListQuery, location="query")
    @subjects.response(200)
    def get(self, query):
        """Subjects, by community (default and, but for admins, only: yours) and kind"""
        community_id = current_principal().reading_community(query.get("community_id"))
        with store().read_transaction() as connection:
            found = views.list_subjects(connection, community_id, query.get("kind"), query.get("flagged", False))
        return {"items": [subject.view() for subject in found]}


@subjects.route("/<subject_id>")
class SubjectResource(MethodView):
    @subjects.arguments(PeriodQuery, location="query")
    @subjects.response(200)
    def get(self, query, subject_id):
        """A subject with its figures for a period (default: the current one)"""
        principal = current_principal()
        subject = SUBJECTS.fetch(store().engine, subject_id)
        principal.require_reader(subject.community_id)
        period = query.get("period") or current_period(subject.community_id)
        with store().read_transaction() as connection:
            stats = STATS.for_subject(connection, subject_id, period)
            policy, _ = policy_for(connection, subject.community_id)
        entry, formula = subject_figures(subject, stats, policy)
        return etagged({**subject.view(), "period": period, "figures": entry, "formula": formula}, subject.version)


def subject_figures(subject, stats, policy) -> tuple[dict | None, dict]:
    """A subject's figures for a period, as the ranking computes them (without a rank: that needs
    the others), and the formula."""
    table = rank({subject.id: {"name": subject.name, **stats}}, policy)
    entry = (table["ranked"] + table["not_enough_ratings"] or [None])[0]
    if entry is not None:
        entry = {k: value for k, value in entry.items() if k != "rank"}
    return entry, table["formula"]


@subjects.route("/<subject_id>/ratings")
class SubjectRatings(MethodView):
    @roles(subjects, *RATERS)
    @subjects.arguments(RatingSchema)
    @subjects.response(201)
    @subjects.alt_response(200, description="the resident's rating of this period, revised")
    def post(self, command: c.SubmitRating, **_path):
        """Rate a subject of your community (resident): once per period, again to revise it"""
        outcome = send(command)
        if outcome.first("RatingSubmitted", "rating_id") is None:
            return rating_answer(outcome)
        return rating_answer(outcome, 201, ids().public(outcome.result.id))

    @subjects.arguments(PeriodQuery, location="query")
    @subjects.response(200)
    def get(self, query, subject_id):
        """The subject's ratings in a period (raters named to the community's staff who are not rated)"""
        principal = current_principal()
        subject = SUBJECTS.fetch(store().engine, subject_id)
        principal.require_reader(subject.community_id)
        period = query.get("period") or current_period(subject.community_id)
        with store().read_transaction() as connection:
            found = views.ratings_of_subject(connection, subject_id, period)
        flagged = subject.flagged_ratings
        items = [{**present(principal, rating), "flagged": rating.id in flagged} for rating in found]
        if not privacy.shown("rating", "rated_at",
                             privacy.relations(principal, subject.community_id, rated=subject.person_id)):
            items.sort(key=itemgetter("rating_id"))  # not in the order they came: that is timing too
        return {"subject_id": subject_id, "period": period, "items": items}


@subjects.route("/<subject_id>/flags/<flag_id>/review")
class FlagReview(MethodView):
    @roles(subjects, *STAFF)
    @subjects.arguments(FlagReviewSchema)
    @subjects.response(200)
    def post(self, command: c.ReviewFlag, **_path):
        """Review a burst incident of top ratings once it has ended: keep its ratings, or exclude
        them (cadre); 409 ``burst_ongoing`` while top ratings keep coming within its window"""
        outcome = send(command)
        subject = outcome.result
        flags = {flag.pop("flag_id"): flag for flag in public_flags(subject, now())}
        return answer(outcome, {**subject.view(), "flags": flags})


@subjects.route("/<subject_id>/flags")
class Flags(MethodView):
    @subjects.response(200)
    def get(self, subject_id):
        """Bursts of top ratings flagged for review (staff): one incident each, growing while
        top ratings keep coming within the window (``ongoing``), ended a window after the last"""
        principal = current_principal()
        principal.require(*privacy.STAFF_ROLES)
        subject = SUBJECTS.fetch(store().engine, subject_id)
        principal.require_reader(subject.community_id)
        return {"subject_id": subject_id, "flags": public_flags(subject, now())}


# -- ratings ------------------------------------------------------------------------------------

@ratings.route("/<rating_id>")
class RatingResource(MethodView):
    @ratings.response(200)
    def get(self, rating_id):
        """A rating (its rater is named to the rater and to the community's staff who are not rated)"""
        principal = current_principal()
        rating = rating_for(principal, rating_id)
        return etagged(present(principal, rating), rating.version)

    @roles(ratings, *RATERS)
    @ratings.arguments(RevisionSchema)
    @ratings.response(200)
    def patch(self, command: c.ReviseRating, **_path):
        """Revise your rating while its period is open"""
        return rating_answer(send(command))


@ratings.route("/<rating_id>/appeal")
class Appeal(MethodView):
    @roles(ratings, *CASE_HANDLERS)
    @ratings.arguments(AppealSchema)
    @ratings.response(201)
    def post(self, command: c.FileAppeal, **_path):
        """Appeal a rating as mistaken or malicious (the rated person, or staff for the unit)"""
        return rating_answer(send(command), 201)


@ratings.route("/<rating_id>/appeal/decision")
class AppealDecision(MethodView):
    @roles(ratings, *STAFF)
    @ratings.arguments(AppealDecisionSchema)
    @ratings.response(200)
    def post(self, command: c.DecideAppeal, **_path):
        """Decide an appeal (cadre): upheld excludes the rating from rankings, by an event"""
        return rating_answer(send(command))


# -- follow-up cases ----------------------------------------------------------------------------

def handled_community(principal, asked: str | None) -> str | None:
    """The community whose cases a case handler lists: their own (admins: the one asked, or all)."""
    principal.require(*CASE_HANDLERS)
    community_id = asked or (None if "admin" in principal.roles else principal.community)
    if "admin" not in principal.roles and community_id != principal.community:
        raise Forbidden(f"you handle the cases of community {principal.community}", reason="other_community")
    return community_id


@cases.route("")
class Cases(MethodView):
    @cases.arguments(CaseListQuery, location="query")
    @cases.response(200)
    def get(self, query):
        """Follow-up cases, by deadline (case handlers); those past their deadline show as overdue"""
        principal = current_principal()
        community_id = handled_community(principal, query.get("community_id"))
        at = now()
        with store().read_transaction() as connection:
            found = views.list_cases(connection, community_id, query.get("status"), query.get("overdue"),
                                     query["limit"], at)
            counts = views.case_counts(connection, community_id, at)
        return {"items": [present_case(principal, case, at) for case in found],
                "open": counts["open"], "overdue": counts["overdue"]}


@cases.route("/summary")
class CaseSummary(MethodView):
    @cases.arguments(SummaryQuery, location="query")
    @cases.response(200)
    def get(self, query):
        """Open and overdue follow-up counts of a community (any member; for dashboards)"""
        community_id = query["community_id"]
        current_principal().require_reader(community_id)
        with store().read_transaction() as connection:
            counts = views.case_counts(connection, community_id, now())
        return {"community_id": community_id, **counts}


@cases.route("/<case_id>")
class CaseResource(MethodView):
    @cases.response(200)
    def get(self, case_id):
        """A follow-up case (the resident and case handlers)"""
        principal = current_principal()
        principal.require_reader(None)  # a token without a community reads no case
        case = CASES.fetch(store().engine, case_id)
        if not (principal.person_id == case.person_id or (
                principal.has_any(CASE_HANDLERS)
                and ("admin" in principal.roles or principal.community == case.community_id))):
            raise NotFound(f"no follow-up case {case_id} for you")
        return etagged(present_case(principal, case, now()), case.version)


@cases.route("/<case_id>/contacts", endpoint="contact_resident")
class CaseContacts(MethodView):
    @roles(cases, *CASE_HANDLERS)
    @cases.arguments(ContactSchema)
    @cases.response(200)
    def post(self, command: c.ContactResident, **_path):
        """回访: record contact with the resident (case handler)"""
        return case_answer(send(command))


@cases.route("/<case_id>/rectifications", endpoint="record_rectification")
class CaseRectifications(MethodView):
    @roles(cases, *CASE_HANDLERS)
    @cases.arguments(RectificationSchema)
    @cases.response(200)
    def post(self, command: c.RecordRectification, **_path):
        """Record the rectification (case handler)"""
        return case_answer(send(command))


@cases.route("/<case_id>/confirmation", endpoint="confirm_outcome")
class CaseConfirmation(MethodView):
    @roles(cases, *RATERS, *CASE_HANDLERS)
    @cases.arguments(ConfirmationSchema)
    @cases.response(200)
    def post(self, command: c.ConfirmOutcome, **_path):
        """Close the case with the resident's confirmation, satisfied or not (the resident, or a handler recording what the resident said)"""
        return case_answer(send(command))


# -- rankings -----------------------------------------------------------------------------------

@rankings.route("")
class Rankings(MethodView):
    @roles(rankings, *STAFF)
    @rankings.arguments(PublishSchema)
    @rankings.response(201)
    def post(self, command: c.PublishRanking):
        """Publish the ranking of a closed period (cadre), opening and closing support plans; or a
        provisional edition of the open period"""
        outcome = send(command)
        return answer(outcome, outcome.result.latest, 201, outcome.result.id)


@rankings.route("/<community_id>/<kind>")
class LiveRanking(MethodView):
    @rankings.arguments(PeriodQuery, location="query")
    @rankings.response(200)
    def get(self, query, community_id, kind):
        """The ranking as it stands now (not published), for a period (default: the current one)"""
        current_principal().require_reader(community_id)
        check_kind(kind)
        period = query.get("period") or current_period(community_id)
        return encoded_answer(views.live_ranking(store(), community_id, kind, period))  # kept encoded


@rankings.route("/<community_id>/<kind>/<period>")
class PublishedRanking(MethodView):
    @rankings.arguments(RankingPageQuery, location="query")
    @rankings.response(200)
    def get(self, query, community_id, kind, period):
        """The published ranking (latest edition, with the number of editions), a page at a time:
        ``limit`` entries of each list from ``offset``; ``total_ranked`` and
        ``total_not_enough_ratings`` give the full sizes"""
        current_principal().require_reader(community_id)
        check_kind(kind)
        check_period(period)
        key = ranking_key(community_id, kind, period)
        with store().read_transaction() as connection:
            page = RANKING_PAGES.page(connection, key, query["limit"], query["offset"])
        if page is None:
            raise NotFound(f"no {Ranking.label} {key}")
        return {"community_id": community_id, "kind": kind, "period": period, "published": True, **page}


@rankings.route("/<community_id>/<kind>/<period>/verification")
class RankingVerification(MethodView):
    @rankings.response(200)
    def get(self, community_id, kind, period):
        """Recompute the published ranking from the event log up to its last position"""
        current_principal().require_reader(community_id)
        return views.verify_ranking(store(), published(community_id, kind, period))


# -- support plans ------------------------------------------------------------------------------

@plans.route("")
class Plans(MethodView):
    @plans.arguments(PlanListQuery, location="query")
    @plans.response(200)
    def get(self, query):
        """Support plans (帮扶) of a community (default and, but for admins, only: yours)"""
        community_id = current_principal().reading_community(query.get("community_id"))
        with store().read_transaction() as connection:
            found = views.list_plans(connection, community_id, query.get("status"))
        return {"items": [plan.view() for plan in found]}


@plans.route("/<plan_id>")
class PlanResource(MethodView):
    @plans.response(200)
    def get(self, plan_id):
        """A support plan"""
        principal = current_principal()
        principal.require_reader(None)
        plan = PLANS.fetch(store().engine, plan_id)
        principal.require_reader(plan.community_id)
        return etagged(plan.view(), plan.version)


@plans.route("/<plan_id>/details")
class PlanDetails(MethodView):
    @roles(plans, *STAFF)
    @plans.arguments(PlanSchema)
    @plans.response(200)
    def post(self, command: c.DrawUpPlan, **_path):
        """Draw up the plan: mentor, actions, deadline (cadre)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view())


@plans.route("/<plan_id>/notes")
class PlanNotes(MethodView):
    @roles(plans, ANY_ROLE)  # the mentor may hold any role; the plan checks who
    @plans.arguments(NoteSchema)
    @plans.response(201)
    def post(self, command: c.NoteProgress, **_path):
        """A progress note (the mentor or a cadre)"""
        outcome = send(command)
        return answer(outcome, outcome.result.view(), 201)


# -- me -----------------------------------------------------------------------------------------

@me.route("/ratings")
class MyRatings(MethodView):
    @me.response(200)
    def get(self):
        """My ratings, newest first, with their follow-up cases"""
        principal = current_principal()
        at = now()
        with store().read_transaction() as connection:
            mine = views.ratings_of_person(connection, principal.person_id)
            my_cases = {case.id: present_case(principal, case, at)
                        for case in views.cases_of_person(connection, principal.person_id)}
        return {"items": [{**present(principal, rating), "case": my_cases.get(rating.case_id)} for rating in mine]}


@me.route("/rated")
class MyFiguresAsRated(MethodView):
    @me.response(200)
    def get(self):
        """The ratings you received as a rated cadre or grid worker: your figures for the current
        period only (counts per level, satisfaction) — never a rating or who gave it"""
        principal = current_principal()
        items = []
        if principal.community:
            with store().read_transaction() as connection:
                mine = [s for s in views.list_subjects(connection, principal.community, None)
                        if s.person_id == principal.person_id]
                policy, _ = policy_for(connection, principal.community)
                for subject in mine:
                    period = views.current_period(connection, subject.community_id, now())
                    figures, _formula = subject_figures(subject, STATS.for_subject(connection, subject.id, period),
                                                        policy)
                    items.append({"subject_id": subject.id, "kind": subject.kind, "name": subject.name,
                                  "period": period, "figures": figures})
        return {"items": items}


# -- public reads: no token ---------------------------------------------------------------------

@public_reads.route("/rankings/<community_id>/<kind>")
class PublicLatestRanking(MethodView):
    @public(public_reads)
    @public_reads.arguments(RankingPageQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, query, community_id, kind):
        """The ranking of ``kind`` published last (its latest edition), a page at a time — names,
        units, ranks, and figures where enough residents rated (no token)"""
        return public_ranking(community_id, kind, None, query)


@public_reads.route("/rankings/<community_id>/<kind>/<period>")
class PublicRanking(MethodView):
    @public(public_reads)
    @public_reads.arguments(RankingPageQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, query, community_id, kind, period):
        """The published ranking of a period (its latest edition), a page at a time (no token)"""
        return public_ranking(community_id, kind, period, query)


BLUEPRINTS = (policies, subjects, ratings, cases, rankings, plans, me, public_reads, open_data.blueprint)
