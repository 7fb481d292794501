"""HTTP API of the feedback service (flask-smorest; /openapi.json and /docs).

Commands answer with ``{"resource": ..., "recorded": [...], "created_id": ...}`` and an ``ETag``
holding the resource's version. Who sees what is decided by the platform's one privacy policy
(:mod:`services.kernel.privacy`):

- a rating's rater (and the actor of its events) is shown to the rater and to the community's
  staff (cadre, grid worker, admin) who are not the rated person — never to the rated subject, so
  residents can rate without fear of retaliation; the subject and everyone else see the level,
  the dimensions and the comment; a follow-up case names its resident by the same rule;
- rating ids are public ids (:class:`services.feedback.domain.RatingIds`): nobody can compute a
  resident's rating id from their person id;
- every read is scoped to the token's community (admins: any community);
- overdue cases are recorded when cases are read (and by ``python -m services.feedback
  sweep-overdue``, for a periodic job).
"""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from services.feedback import handlers, views
from services.feedback.domain import (
    CASE_HANDLERS, RATERS, STAFF, SUBJECT_KINDS, Ranking, period_of, rank, ranking_key, valid_period,
)
from services.feedback.handlers import feedback_service
from services.feedback.views import (
    CASES, PLANS, RANKING_PAGES, RANKINGS, RATINGS, STATS, SUBJECTS, policy_for,
)
from services.kernel import privacy
from services.kernel.db import read_transaction
from services.kernel.errors import DomainError, Forbidden, NotFound
from services.kernel.web import (
    ANY_ROLE, IDENTIFIER, JsonBoolean, Schema, command_answer, current_principal, etagged, event_metadata,
    expected_version_from_if_match, roles, text_field,
)

f = ma.fields
v = ma.validate
ID = IDENTIFIER
LEVEL = {"strict": True, "validate": v.Range(min=1, max=5)}
PERIOD = {"validate": v.Regexp(r"^20\d\d-(0[1-9]|1[0-2]|Q[1-4])$", error="YYYY-MM or YYYY-Qn")}


class PolicySchema(Schema):
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


class SubjectSchema(Schema):
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


class RatingSchema(Schema):
    level = f.Integer(required=True, **LEVEL, metadata={"description": "5 非常满意 … 1 非常不满意"})
    dimensions = f.Nested(DimensionsSchema, load_default=dict)
    comment = f.String(validate=v.Length(max=1000), load_default="")


class RankingPageQuery(Schema):
    limit = f.Integer(load_default=100, validate=v.Range(min=1, max=1000))
    offset = f.Integer(load_default=0, validate=v.Range(min=0))


class PeriodQuery(Schema):
    period = f.String(**PERIOD, metadata={"description": "default: the current period"})


class AppealSchema(Schema):
    grounds = f.String(required=True, validate=v.OneOf(["mistaken", "malicious"]))
    statement = text_field(1000, required=True)


class AppealDecisionSchema(Schema):
    upheld = JsonBoolean(required=True)
    reason = text_field(500, required=True)


class FlagReviewSchema(Schema):
    decision = f.String(required=True, validate=v.OneOf(["keep", "exclude"]))
    reason = text_field(500, required=True)


class CaseListQuery(Schema):
    community_id = f.String(**ID)
    status = f.String(validate=v.OneOf(["open", "closed"]))
    overdue = f.Boolean()
    limit = f.Integer(load_default=100, validate=v.Range(min=1, max=500))


class SummaryQuery(Schema):
    community_id = f.String(required=True, **ID)


class ContactSchema(Schema):
    channel = f.String(required=True, validate=v.OneOf(["phone", "visit", "message"]))
    note = text_field(1000, required=True)


class RectificationSchema(Schema):
    actions = text_field(2000, required=True)


class ConfirmationSchema(Schema):
    satisfied = JsonBoolean(required=True)
    comment = f.String(validate=v.Length(max=1000), load_default="")


class PublishSchema(Schema):
    community_id = f.String(required=True, **ID)
    kind = f.String(required=True, validate=v.OneOf(SUBJECT_KINDS))
    period = f.String(required=True, **PERIOD)
    provisional = JsonBoolean(load_default=False, metadata={"description": "an interim edition of the open "
                                                                          "period (opens no support plans)"})


class MentorSchema(Schema):
    person_id = f.String(required=True, **ID)
    name = text_field(100, required=True)


class PlanSchema(Schema):
    mentor = f.Nested(MentorSchema, required=True)
    actions = f.List(text_field(500), required=True, validate=v.Length(min=1, max=20))
    deadline = f.Date(required=True)


class NoteSchema(Schema):
    note = text_field(2000, required=True)


class PlanListQuery(Schema):
    community_id = f.String(**ID)
    status = f.String(validate=v.OneOf(["open", "closed"]))


def blueprints(container) -> list[Blueprint]:
    store = container.store
    service = feedback_service(container)
    ids = service.ids

    def present(principal, rating) -> dict:
        """A rating as the privacy policy lets ``principal`` see it, under its public id."""
        rel = privacy.relations(principal, rating.community_id, holder=rating.person_id,
                                rated=rating.subject_person_id)
        view = privacy.redact("rating", rating.view(), rel)
        return {**view, "rating_id": ids.public(rating.id)}

    def present_case(principal, case) -> dict:
        rel = privacy.relations(principal, case.community_id, holder=case.person_id, rated=case.subject_person_id)
        view = privacy.redact("case", case.view(), rel)
        return {**view, "rating_id": ids.public(case.rating_id)}

    def public_flags(flags: dict) -> dict[str, dict]:
        return {k: {**flag, "rating_ids": [ids.public(r) for r in flag["rating_ids"]]} for k, flag in flags.items()}

    def stored_id(rating_id: str) -> str:
        stored = ids.resolve(rating_id)
        if stored is None:
            raise NotFound(f"no rating {rating_id}")
        return stored
    policies = Blueprint("policies", __name__, url_prefix="/policies", description="评价规则 rating policy per community")
    subjects = Blueprint("subjects", __name__, url_prefix="/subjects",
                         description="被评价对象 subjects and their ratings")
    ratings = Blueprint("ratings", __name__, url_prefix="/ratings", description="评价 ratings, revisions, appeals")
    cases = Blueprint("cases", __name__, url_prefix="/cases", description="差评回访 follow-up of bad ratings")
    rankings = Blueprint("rankings", __name__, url_prefix="/rankings", description="评价排队 rankings")
    plans = Blueprint("plans", __name__, url_prefix="/plans", description="不满意干部帮扶 support plans")
    me = Blueprint("me", __name__, url_prefix="/me", description="My ratings and their follow-ups")

    def who():
        principal = current_principal()
        return principal, event_metadata(principal)

    def answer(resource, version, recorded, status=200, created_id=None):
        return command_answer("resource", resource, version, recorded, status, created_id)

    def current_period(community_id: str) -> str:
        with read_transaction(store.engine) as connection:
            policy, _ = policy_for(connection, community_id)
        return period_of(handlers.now(), policy["period"])

    # -- policy ---------------------------------------------------------------------------------

    @policies.route("/<community_id>")
    class PolicyResource(MethodView):
        @policies.response(200)
        def get(self, community_id):
            """The community's rating policy (defaults until a cadre changes it)"""
            current_principal().require_reader(community_id)
            with read_transaction(store.engine) as connection:
                settings, version = policy_for(connection, community_id)
            return etagged({"community_id": community_id, "settings": settings, "version": version}, version)

        @roles(policies, *STAFF)
        @policies.arguments(PolicySchema)
        @policies.response(200)
        def patch(self, body, community_id):
            """Change the policy (cadre of the community); applies to ratings and rankings from now on"""
            principal, meta = who()
            policy, recorded = service.change_policy(principal, meta, community_id, body,
                                                     expected_version_from_if_match())
            return answer({"community_id": community_id, "settings": policy.settings, "version": policy.version},
                          policy.version, recorded)

    # -- subjects -------------------------------------------------------------------------------

    @subjects.route("")
    class Subjects(MethodView):
        @roles(subjects, *STAFF)
        @subjects.arguments(SubjectSchema)
        @subjects.response(201)
        def post(self, body):
            """Register a subject to be rated: cadre, grid worker, unit, service or project (staff)"""
            principal, meta = who()
            subject, recorded = service.register_subject(principal, meta, body)
            response = answer(subject.view(), subject.version, recorded, 201, subject.id)
            response.headers["Location"] = f"/subjects/{subject.id}"
            return response

        @subjects.arguments(SubjectListQuery, location="query")
        @subjects.response(200)
        def get(self, query):
            """Subjects, by community (default and, but for admins, only: yours) and kind"""
            community_id = current_principal().reading_community(query.get("community_id"))
            with read_transaction(store.engine) as connection:
                found = views.list_subjects(connection, community_id, query.get("kind"), query.get("flagged", False))
            return {"items": [subject.view() for subject in found]}

    @subjects.route("/<subject_id>")
    class SubjectResource(MethodView):
        @subjects.arguments(PeriodQuery, location="query")
        @subjects.response(200)
        def get(self, query, subject_id):
            """A subject with its figures for a period (default: the current one)"""
            principal = current_principal()
            subject = SUBJECTS.fetch(store.engine, subject_id)
            principal.require_reader(subject.community_id)
            period = query.get("period") or current_period(subject.community_id)
            with read_transaction(store.engine) as connection:
                stats = STATS.for_subject(connection, subject_id, period)
                policy, _ = policy_for(connection, subject.community_id)
            table = rank({subject_id: {"name": subject.name, **stats}}, policy)
            entry = (table["ranked"] + table["not_enough_ratings"] or [None])[0]
            if entry is not None:
                entry = {k: value for k, value in entry.items() if k != "rank"}  # a rank needs the others
            return etagged({**subject.view(), "period": period, "figures": entry,
                                            "formula": table["formula"]}, subject.version)

    @subjects.route("/<subject_id>/ratings")
    class SubjectRatings(MethodView):
        @roles(subjects, *RATERS)
        @subjects.arguments(RatingSchema)
        @subjects.response(201)
        @subjects.alt_response(200, description="the resident's rating of this period, revised")
        def post(self, body, subject_id):
            """Rate a subject of your community (resident): once per period, again to revise it"""
            principal, meta = who()
            rating, recorded, created = service.rate(principal, meta, subject_id, body)
            return answer(present(principal, rating), rating.version, recorded, 201 if created else 200,
                          ids.public(rating.id) if created else None)

        @subjects.arguments(PeriodQuery, location="query")
        @subjects.response(200)
        def get(self, query, subject_id):
            """The subject's ratings in a period (raters named to the community's staff who are not rated)"""
            principal = current_principal()
            subject = SUBJECTS.fetch(store.engine, subject_id)
            principal.require_reader(subject.community_id)
            period = query.get("period") or current_period(subject.community_id)
            with read_transaction(store.engine) as connection:
                found = views.ratings_of_subject(connection, subject_id, period)
            items = [{**present(principal, rating), "flagged": rating.id in subject.flagged_ratings}
                     for rating in found]
            if not privacy.shown("rating", "rated_at",
                                 privacy.relations(principal, subject.community_id, rated=subject.person_id)):
                items.sort(key=lambda item: item["rating_id"])  # not in the order they came: that is timing too
            return {"subject_id": subject_id, "period": period, "items": items}

    @subjects.route("/<subject_id>/flags/<flag_id>/review")
    class FlagReview(MethodView):
        @roles(subjects, *STAFF)
        @subjects.arguments(FlagReviewSchema)
        @subjects.response(200)
        def post(self, body, subject_id, flag_id):
            """Review a flagged burst of top ratings: keep them, or exclude them (cadre)"""
            principal, meta = who()
            subject, recorded = service.review_flag(principal, meta, subject_id, flag_id, body)
            return answer({**subject.view(), "flags": public_flags(subject.flags)}, subject.version, recorded)

    @subjects.route("/<subject_id>/flags")
    class Flags(MethodView):
        @subjects.response(200)
        def get(self, subject_id):
            """Bursts of top ratings flagged for review (staff)"""
            principal = current_principal()
            principal.require(*privacy.STAFF_ROLES)
            subject = SUBJECTS.fetch(store.engine, subject_id)
            principal.require_reader(subject.community_id)
            flags = sorted(({"flag_id": k, **flag} for k, flag in public_flags(subject.flags).items()),
                           key=lambda flag: (flag["flagged_at"], flag["flag_id"]))
            return {"subject_id": subject_id, "flags": flags}

    # -- ratings --------------------------------------------------------------------------------

    def rating_for(principal, rating_id):
        rating = RATINGS.fetch(store.engine, stored_id(rating_id))
        principal.require_reader(rating.community_id)
        return rating

    @ratings.route("/<rating_id>")
    class RatingResource(MethodView):
        @ratings.response(200)
        def get(self, rating_id):
            """A rating (its rater is named to the rater and to the community's staff who are not rated)"""
            principal = current_principal()
            rating = rating_for(principal, rating_id)
            return etagged(present(principal, rating), rating.version)

        @roles(ratings, *RATERS)
        @ratings.arguments(RatingSchema)
        @ratings.response(200)
        def patch(self, body, rating_id):
            """Revise your rating while its period is open"""
            principal, meta = who()
            rating, recorded = service.revise(principal, meta, stored_id(rating_id), body,
                                              expected_version_from_if_match())
            return answer(present(principal, rating), rating.version, recorded)

    @ratings.route("/<rating_id>/appeal")
    class Appeal(MethodView):
        @roles(ratings, *CASE_HANDLERS)
        @ratings.arguments(AppealSchema)
        @ratings.response(201)
        def post(self, body, rating_id):
            """Appeal a rating as mistaken or malicious (the rated person, or staff for the unit)"""
            principal, meta = who()
            rating, recorded = service.appeal(principal, meta, stored_id(rating_id), body)
            return answer(present(principal, rating), rating.version, recorded, 201)

    @ratings.route("/<rating_id>/appeal/decision")
    class AppealDecision(MethodView):
        @roles(ratings, *STAFF)
        @ratings.arguments(AppealDecisionSchema)
        @ratings.response(200)
        def post(self, body, rating_id):
            """Decide an appeal (cadre): upheld excludes the rating from rankings, by an event"""
            principal, meta = who()
            rating, recorded = service.decide_appeal(principal, meta, stored_id(rating_id), body)
            return answer(present(principal, rating), rating.version, recorded)

    # -- follow-up cases ------------------------------------------------------------------------

    @cases.route("")
    class Cases(MethodView):
        @cases.arguments(CaseListQuery, location="query")
        @cases.response(200)
        def get(self, query):
            """Follow-up cases, by deadline (case handlers); overdue ones are recorded first"""
            principal = current_principal()
            principal.require(*CASE_HANDLERS)
            community_id = query.get("community_id") or (None if "admin" in principal.roles else principal.community)
            if "admin" not in principal.roles and community_id != principal.community:
                raise Forbidden(f"you handle the cases of community {principal.community}", reason="other_community")
            service.sweep_overdue(event_metadata(principal), community_id)
            with read_transaction(store.engine) as connection:
                found = views.list_cases(connection, community_id, query.get("status"), query.get("overdue"),
                                         query["limit"])
                counts = views.case_counts(connection, community_id)
            return {"items": [present_case(principal, case) for case in found],
                    "open": counts["open"], "overdue": counts["overdue"]}

    @cases.route("/summary")
    class CaseSummary(MethodView):
        @cases.arguments(SummaryQuery, location="query")
        @cases.response(200)
        def get(self, query):
            """Open and overdue follow-up counts of a community (any member; for dashboards)"""
            principal = current_principal()
            community_id = query["community_id"]
            principal.require_reader(community_id)
            service.sweep_overdue(event_metadata(principal), community_id)
            with read_transaction(store.engine) as connection:
                counts = views.case_counts(connection, community_id)
            return {"community_id": community_id, **counts}

    @cases.route("/<case_id>")
    class CaseResource(MethodView):
        @cases.response(200)
        def get(self, case_id):
            """A follow-up case (the resident and case handlers)"""
            principal = current_principal()
            principal.require_reader(None)  # a token without a community reads no case
            case = CASES.fetch(store.engine, case_id)
            if not (principal.person_id == case.person_id or (
                    principal.has_any(CASE_HANDLERS)
                    and ("admin" in principal.roles or principal.community == case.community_id))):
                raise NotFound(f"no follow-up case {case_id} for you")
            if case.overdue_events(handlers.now()):
                case, _ = service.on_case(principal, event_metadata(principal), case_id, lambda c: [])
            return etagged(present_case(principal, case), case.version)

    def case_command(path, name, schema_cls, decide, doc, allowed=CASE_HANDLERS):
        def handler(body, case_id):
            principal, meta = who()
            case, recorded = service.on_case(principal, meta, case_id, lambda c: decide(c, principal, body),
                                             expected_version_from_if_match())
            return answer(present_case(principal, case), case.version, recorded)
        handler.__doc__, handler.__name__ = doc, name
        view = cases.response(200)(cases.arguments(schema_cls)(handler))
        cases.route(f"/<case_id>/{path}", methods=["POST"], endpoint=name)(roles(cases, *allowed)(view))

    case_command("contacts", "contact_resident", ContactSchema,
                 lambda c, p, b: c.contact(p, b["channel"], b["note"]),
                 "回访: record contact with the resident (case handler)")
    case_command("rectifications", "record_rectification", RectificationSchema,
                 lambda c, p, b: c.rectify(p, b["actions"]), "Record the rectification (case handler)")
    case_command("confirmation", "confirm_outcome", ConfirmationSchema,
                 lambda c, p, b: c.confirm(p, b["satisfied"], b["comment"]),
                 "Close the case with the resident's confirmation, satisfied or not (the resident, or a "
                 "handler recording what the resident said)", allowed=RATERS + CASE_HANDLERS)

    # -- rankings -------------------------------------------------------------------------------

    @rankings.route("")
    class Rankings(MethodView):
        @roles(rankings, *STAFF)
        @rankings.arguments(PublishSchema)
        @rankings.response(201)
        def post(self, body):
            """Publish the ranking of a closed period (cadre), opening and closing support plans; or a
            provisional edition of the open period"""
            principal, meta = who()
            ranking, recorded = service.publish_ranking(principal, meta, body["community_id"], body["kind"],
                                                        body["period"], body["provisional"])
            return answer(ranking.latest, ranking.version, recorded, 201, ranking.id)

    @rankings.route("/<community_id>/<kind>")
    class LiveRanking(MethodView):
        @rankings.arguments(PeriodQuery, location="query")
        @rankings.response(200)
        def get(self, query, community_id, kind):
            """The ranking as it stands now (not published), for a period (default: the current one)"""
            current_principal().require_reader(community_id)
            _check_kind(kind)
            period = query.get("period") or current_period(community_id)
            with read_transaction(store.engine) as connection:
                table = service.live_ranking(connection, community_id, kind, period)
            return {"community_id": community_id, "kind": kind, "period": period, "published": False, **table}

    def published(community_id, kind, period) -> Ranking:
        _check_kind(kind)
        if not valid_period(period):
            raise DomainError("the period is YYYY-MM or YYYY-Qn", reason="invalid_period",
                              details={"period": "YYYY-MM or YYYY-Qn"})
        return RANKINGS.fetch(store.engine, ranking_key(community_id, kind, period))

    @rankings.route("/<community_id>/<kind>/<period>")
    class PublishedRanking(MethodView):
        @rankings.arguments(RankingPageQuery, location="query")
        @rankings.response(200)
        def get(self, query, community_id, kind, period):
            """The published ranking (latest edition, with the number of editions), a page at a time:
            ``limit`` entries of each list from ``offset``; ``total_ranked`` and
            ``total_not_enough_ratings`` give the full sizes"""
            current_principal().require_reader(community_id)
            _check_kind(kind)
            if not valid_period(period):
                raise DomainError("the period is YYYY-MM or YYYY-Qn", reason="invalid_period",
                                  details={"period": "YYYY-MM or YYYY-Qn"})
            key = ranking_key(community_id, kind, period)
            with read_transaction(store.engine) as connection:
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
            return service.verify_ranking(published(community_id, kind, period))

    # -- support plans --------------------------------------------------------------------------

    @plans.route("")
    class Plans(MethodView):
        @plans.arguments(PlanListQuery, location="query")
        @plans.response(200)
        def get(self, query):
            """Support plans (帮扶) of a community (default and, but for admins, only: yours)"""
            community_id = current_principal().reading_community(query.get("community_id"))
            with read_transaction(store.engine) as connection:
                found = views.list_plans(connection, community_id, query.get("status"))
            return {"items": [plan.view() for plan in found]}

    @plans.route("/<plan_id>")
    class PlanResource(MethodView):
        @plans.response(200)
        def get(self, plan_id):
            """A support plan"""
            principal = current_principal()
            principal.require_reader(None)
            plan = PLANS.fetch(store.engine, plan_id)
            principal.require_reader(plan.community_id)
            return etagged(plan.view(), plan.version)

    @plans.route("/<plan_id>/details")
    class PlanDetails(MethodView):
        @roles(plans, *STAFF)
        @plans.arguments(PlanSchema)
        @plans.response(200)
        def post(self, body, plan_id):
            """Draw up the plan: mentor, actions, deadline (cadre)"""
            principal, meta = who()
            plan, recorded = service.on_plan(principal, meta, plan_id,
                                             lambda p: p.draw_up(principal, body["mentor"], body["actions"],
                                                                 body["deadline"]))
            return answer(plan.view(), plan.version, recorded)

    @plans.route("/<plan_id>/notes")
    class PlanNotes(MethodView):
        @roles(plans, ANY_ROLE)  # the mentor may hold any role; the plan checks who
        @plans.arguments(NoteSchema)
        @plans.response(201)
        def post(self, body, plan_id):
            """A progress note (the mentor or a cadre)"""
            principal, meta = who()
            plan, recorded = service.on_plan(principal, meta, plan_id, lambda p: p.note(principal, body["note"]))
            return answer(plan.view(), plan.version, recorded, 201)

    # -- me -------------------------------------------------------------------------------------

    @me.route("/ratings")
    class MyRatings(MethodView):
        @me.response(200)
        def get(self):
            """My ratings, newest first, with their follow-up cases"""
            principal = current_principal()
            with read_transaction(store.engine) as connection:
                mine = views.ratings_of_person(connection, principal.person_id)
                my_cases = {case.id: present_case(principal, case)
                            for case in views.cases_of_person(connection, principal.person_id)}
            return {"items": [{**present(principal, rating), "case": my_cases.get(rating.case_id)} for rating in mine]}

    return [policies, subjects, ratings, cases, rankings, plans, me]


def _check_kind(kind: str) -> None:
    if kind not in SUBJECT_KINDS:
        raise NotFound(f"no subject kind {kind}; kinds are {', '.join(SUBJECT_KINDS)}")

