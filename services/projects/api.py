"""HTTP API of the projects service (flask-smorest; documented at /openapi.json and /docs).

Every command answers with ``{"project": <detail>, "recorded": [<events>], "created_id": ...}``
and an ``ETag`` holding the project's version; send it back as ``If-Match`` to make a command
conditional (412 when someone else changed the project first). Reads need any valid token.
"""

from __future__ import annotations


import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from services.kernel.db import read_transaction
from services.kernel.errors import NotFound
from services.kernel.web import (
    IDENTIFIER, EmptySchema, Schema, command_answer, current_principal, etagged, event_metadata,
    expected_version_from_if_match, roles, text_field,
)
from services.projects.community import FUND_SOURCES
from services.projects.domain import (
    CATEGORIES, CHOICES, CONTRIBUTION_KINDS, CONTRIBUTOR_TYPES, FIELD_STAFF, RESIDENTS, STAFF, STAGES, STANCES,
    Project,
)
from services.projects.handlers import ProjectsService, new_id
from services.projects.views import (
    COMMUNITIES, FUNDS, LEDGER, PLEDGES, PROJECTS, community_stats, history_entry, list_projects,
    project_detail,
)

f = ma.fields
v = ma.validate
ID = IDENTIFIER
FEN = {"strict": True, "validate": v.Range(min=0, max=10**13)}
POSITIVE_FEN = {"strict": True, "validate": v.Range(min=1, max=10**13)}
MINUTES = {"strict": True, "validate": v.Range(min=1, max=10**7)}


text = text_field


# -- request schemas ------------------------------------------------------------------------------

class GridSchema(Schema):
    grid_id = f.String(required=True, **ID)
    name = text(100, required=True)


class SettingsSchema(Schema):
    cosigners_required = f.Integer(strict=True, validate=v.Range(min=0, max=1000))
    quorum_numerator = f.Integer(strict=True, validate=v.Range(min=0, max=1000))
    quorum_denominator = f.Integer(strict=True, validate=v.Range(min=1, max=1000))
    pass_numerator = f.Integer(strict=True, validate=v.Range(min=0, max=1000))
    pass_denominator = f.Integer(strict=True, validate=v.Range(min=1, max=1000))


class CommunityCreateSchema(Schema):
    community_id = f.String(required=True, **ID)
    name = text(100, required=True)
    district = f.String(validate=v.Length(max=100), load_default="")
    grids = f.List(f.Nested(GridSchema), load_default=list, validate=v.Length(max=500))
    settings = f.Nested(SettingsSchema)


class RepresentativeSchema(Schema):
    person_id = f.String(required=True, **ID)
    name = text(100, required=True)


class RepresentativesSchema(Schema):
    representatives = f.List(f.Nested(RepresentativeSchema), required=True, validate=v.Length(max=2000))


class FundCreditSchema(Schema):
    amount_fen = f.Integer(required=True, **POSITIVE_FEN)
    source = f.String(required=True, validate=v.OneOf(list(FUND_SOURCES)))
    reference = f.String(validate=v.Length(max=200), load_default="")
    note = f.String(validate=v.Length(max=500), load_default="")


class LedgerQuery(Schema):
    after = f.Integer(load_default=0, validate=v.Range(min=0))
    limit = f.Integer(load_default=100, validate=v.Range(min=1, max=1000))


class ProposalSchema(Schema):
    community_id = f.String(required=True, **ID)
    grid_id = f.String(required=True, **ID)
    title = text(100, required=True)
    description = text(5000, required=True)
    category = f.String(required=True, validate=v.OneOf(list(CATEGORIES)))
    location = f.String(validate=v.Length(max=200), load_default="")
    estimated_cost_fen = f.Integer(required=True, **FEN)
    requested_fen = f.Integer(required=True, **FEN)


class AmendmentSchema(Schema):
    title = text(100)
    description = text(5000)
    category = f.String(validate=v.OneOf(list(CATEGORIES)))
    location = f.String(validate=v.Length(max=200))
    estimated_cost_fen = f.Integer(**FEN)
    requested_fen = f.Integer(**FEN)
    reason = text(500, required=True)


class ReasonSchema(Schema):
    reason = text(500, required=True)


class OpinionSchema(Schema):
    stance = f.String(required=True, validate=v.OneOf(STANCES))
    text = text(2000, required=True)


class ResponsibleUnitSchema(Schema):
    unit_id = f.String(required=True, **ID)
    name = text(100, required=True)


class OpenVoteSchema(Schema):
    responsible_unit = f.Nested(ResponsibleUnitSchema)


class BallotSchema(Schema):
    choice = f.String(required=True, validate=v.OneOf(CHOICES))


class ContributorSchema(Schema):
    contributor_id = f.String(required=True, **ID)
    name = text(100, required=True)
    type = f.String(required=True, validate=v.OneOf(CONTRIBUTOR_TYPES))


class PledgeSchema(Schema):
    kind = f.String(required=True, validate=v.OneOf(CONTRIBUTION_KINDS))
    labour_minutes = f.Integer(**MINUTES)
    skills_minutes = f.Integer(**MINUTES)
    money_fen = f.Integer(**POSITIVE_FEN)
    materials_fen = f.Integer(**POSITIVE_FEN)
    description = f.String(validate=v.Length(max=500), load_default="")
    contributor = f.Nested(ContributorSchema, metadata={"description": "staff only: the enterprise, "
                                                                       "organisation or resident pledging"})


class DeliverySchema(Schema):
    labour_minutes = f.Integer(**MINUTES)
    skills_minutes = f.Integer(**MINUTES)
    money_fen = f.Integer(**POSITIVE_FEN)
    materials_fen = f.Integer(**POSITIVE_FEN)
    note = f.String(validate=v.Length(max=500), load_default="")
    delivered_at = f.AwareDateTime(metadata={"description": "when it was delivered (default: now)"})


class SpendingSchema(Schema):
    amount_fen = f.Integer(required=True, **POSITIVE_FEN)
    receipt_ref = text(100, required=True)
    description = f.String(validate=v.Length(max=500), load_default="")


class MilestoneSchema(Schema):
    progress = f.Integer(required=True, strict=True, validate=v.Range(min=0, max=100))
    note = text(1000, required=True)


class MaintainerSchema(Schema):
    maintainer_id = f.String(required=True, **ID)
    name = text(100, required=True)
    kind = f.String(required=True, validate=v.OneOf(["resident", "group"]))
    duty = text(500, required=True)
    rota = f.String(validate=v.Length(max=200), load_default="", metadata={"description": "e.g. 每周六上午"})
    members = f.List(f.String(**ID), load_default=list, validate=v.Length(max=200))


class MaintenanceLogSchema(Schema):
    note = text(1000, required=True)
    performed_at = f.AwareDateTime(required=True)


class ProblemSchema(Schema):
    description = text(2000, required=True)


class ResolutionSchema(Schema):
    resolution = text(2000, required=True)


class OpenEvaluationSchema(Schema):
    responsible_unit = f.Nested(ResponsibleUnitSchema)


class RatingSchema(Schema):
    score = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=5))
    comment = f.String(validate=v.Length(max=2000), load_default="")


class ResultsSchema(Schema):
    benefits = text(5000, required=True, metadata={"description": "the benefits in words"})
    volunteer_minutes = f.Integer(strict=True, validate=v.Range(min=0),
                                  metadata={"description": "default: labour minutes delivered"})


class RewardSchema(Schema):
    recipient_id = f.String(required=True, **ID)
    amount_fen = f.Integer(required=True, **POSITIVE_FEN)
    reason = text(500, required=True)


class ProjectListQuery(Schema):
    community_id = f.String(**ID)
    grid_id = f.String(**ID)
    stage = f.String(validate=v.OneOf(list(STAGES)))
    category = f.String(validate=v.OneOf(list(CATEGORIES)))
    proposer_id = f.String(**ID)
    q = f.String(validate=v.Length(min=1, max=100), metadata={"description": "free text in title, "
                                                                            "description and location"})
    page = f.Integer(load_default=1, validate=v.Range(min=1, max=100000))
    per_page = f.Integer(load_default=20, validate=v.Range(min=1, max=100))


class AsOfQuery(Schema):
    version = f.Integer(validate=v.Range(min=1))
    at = f.AwareDateTime(metadata={"description": "ISO 8601 with a time zone"})

    @ma.validates_schema
    def one_of(self, data, **_kwargs):
        if ("version" in data) == ("at" in data):
            raise ma.ValidationError("give exactly one of version or at", "_schema")


# -- response schemas (documenting the shape; nested parts are JSON objects) ----------------------

class CommandResultSchema(Schema):
    project = f.Raw(metadata={"description": "the project detail after the command"})
    recorded = f.List(f.Raw(), metadata={"description": "the events the command recorded"})
    created_id = f.String(allow_none=True)


class ProjectPageSchema(Schema):
    items = f.List(f.Raw())
    total = f.Integer()
    page = f.Integer()
    per_page = f.Integer()


# -- helpers --------------------------------------------------------------------------------------

def _result(project: Project, recorded, status: int = 200, created_id: str | None = None):
    return command_answer("project", project_detail(project), project.version, recorded, status, created_id)


def blueprints(container) -> list[Blueprint]:
    store = container.store
    service = ProjectsService(store)
    communities = Blueprint("communities", __name__, url_prefix="/communities",
                            description="社区 communities, grids, representatives and the community fund")
    projects = Blueprint("projects", __name__, url_prefix="/projects",
                         description="项目 co-creation projects: 共谋 共建 共管 共评 共享")

    def who():
        principal = current_principal()
        return principal, event_metadata(principal)

    def run(command, *args, status=200, created_id=None):
        """Run a project command and answer with the detail and what it recorded."""
        principal, meta = who()
        project, recorded = command(principal, meta, *args)
        return _result(project, recorded, status, created_id)

    # -- communities ----------------------------------------------------------------------------

    @communities.route("")
    class Communities(MethodView):
        @roles(communities, "admin")
        @communities.arguments(CommunityCreateSchema)
        @communities.response(201)
        def post(self, body):
            """Register a community with its grids (admin)"""
            principal, meta = who()
            community, _ = service.register_community(principal, meta, body)
            return etagged(community.view(), community.version, 201, f"/communities/{community.id}")

        @communities.response(200)
        def get(self):
            """List the communities (admins: every one; anyone else: their own)"""
            community_id = current_principal().reading_community(None)
            with read_transaction(store.engine) as connection:
                found = COMMUNITIES.find(connection, id=community_id)
            return {"items": [community.view() for community in found]}

    @communities.route("/<community_id>")
    class CommunityResource(MethodView):
        @communities.response(200)
        def get(self, community_id):
            """A community: grids, representatives, settings"""
            current_principal().require_reader(community_id)
            community = COMMUNITIES.fetch(store.engine, community_id)
            return etagged(community.view(), community.version)

    def community_command(method, schema_cls, doc):
        def handler(body, community_id):
            principal, meta = who()
            community, _ = method(principal, meta, community_id, body, expected_version_from_if_match())
            return etagged(community.view(), community.version)
        handler.__doc__ = doc
        return roles(communities, *STAFF)(communities.response(200)(communities.arguments(schema_cls)(handler)))

    communities.route("/<community_id>/grids", methods=["POST"], endpoint="grids")(
        community_command(service.add_grid, GridSchema, "Add a grid (cadre, admin)"))
    communities.route("/<community_id>/representatives", methods=["PUT"], endpoint="representatives")(
        community_command(service.set_representatives, RepresentativesSchema,
                          "Replace the list of residents' representatives, the council electorate (cadre, admin)"))
    communities.route("/<community_id>/settings", methods=["PATCH"], endpoint="settings")(
        community_command(service.change_settings, SettingsSchema,
                          "Change co-signers needed, quorum and pass rule (cadre, admin)"))

    @communities.route("/<community_id>/fund")
    class Fund(MethodView):
        @communities.arguments(LedgerQuery, location="query")
        @communities.response(200)
        def get(self, query, community_id):
            """The community fund: balance, totals and the ledger (paged by position)"""
            current_principal().require_reader(community_id)
            with read_transaction(store.engine) as connection:
                if COMMUNITIES.get(connection, community_id) is None:
                    raise NotFound(f"no community {community_id}")
                fund = FUNDS.get(connection, community_id) or FUNDS.cls(id=community_id)
                ledger = LEDGER.page(connection, community_id, query["limit"], query["after"])
            return {**fund.view(), "ledger": ledger,
                    "next_after": ledger[-1]["position"] if ledger else query["after"]}

    @communities.route("/<community_id>/fund/credits")
    class FundCredits(MethodView):
        @roles(communities, *STAFF)
        @communities.arguments(FundCreditSchema)
        @communities.response(201)
        def post(self, body, community_id):
            """Credit the fund: government allocation, reward pool (以奖代补) or donation (cadre, admin)"""
            principal, meta = who()
            fund, _ = service.credit_fund(principal, meta, community_id, body)
            return etagged(fund.view(), fund.version, 201)

    @communities.route("/<community_id>/stats")
    class Stats(MethodView):
        @communities.response(200)
        def get(self, community_id):
            """Projects per stage, approval rate, contributions and the fund"""
            current_principal().require_reader(community_id)
            with read_transaction(store.engine) as connection:
                if COMMUNITIES.get(connection, community_id) is None:
                    raise NotFound(f"no community {community_id}")
                return community_stats(connection, community_id)

    # -- projects -------------------------------------------------------------------------------

    @projects.route("")
    class Projects(MethodView):
        @roles(projects, *RESIDENTS)
        @projects.arguments(ProposalSchema)
        @projects.response(201, CommandResultSchema)
        def post(self, body):
            """Propose a project (resident of the community) — 共谋"""
            response = run(service.propose, body, status=201)
            project_id = response.get_json()["project"]["project_id"]
            response.headers["Location"] = f"/projects/{project_id}"
            return response

        @projects.arguments(ProjectListQuery, location="query")
        @projects.response(200, ProjectPageSchema)
        def get(self, query):
            """List projects of a community (default and, but for admins, only: yours), filtered by
            grid, stage, category, proposer or free text"""
            community_id = current_principal().reading_community(query.get("community_id"))
            with read_transaction(store.engine) as connection:
                items, total = list_projects(connection, {**query, "community_id": community_id})
            return {"items": items, "total": total, "page": query["page"], "per_page": query["per_page"]}

    @projects.route("/<project_id>")
    class ProjectResource(MethodView):
        @projects.response(200)
        def get(self, project_id):
            """Project detail: current stage, what is allowed now, totals"""
            principal = current_principal()
            project = PROJECTS.fetch(store.engine, project_id)
            principal.require_reader(project.community_id)
            return etagged(project_detail(project), project.version)

    @projects.route("/<project_id>/history")
    class History(MethodView):
        @projects.response(200)
        def get(self, project_id):
            """Every event of the project with actor, time and labels (中文 / English); who rated
            the project is shown to the rater and the community's staff only (the privacy policy)"""
            principal = current_principal()
            events = store.load(Project.stream_id_for(project_id))
            if not events:
                raise NotFound(f"no project {project_id}")
            community = events[0].data.get("community_id")
            principal.require_reader(community)
            return {"project_id": project_id,
                    "events": [history_entry(e, principal, community) for e in events]}

    @projects.route("/<project_id>/as-of")
    class AsOf(MethodView):
        @projects.arguments(AsOfQuery, location="query")
        @projects.response(200)
        def get(self, query, project_id):
            """The project as it was at a version or an instant (replayed from its events)"""
            principal = current_principal()
            events = store.load(Project.stream_id_for(project_id), up_to_version=query.get("version"),
                                as_of=query.get("at"))
            if not events:
                if store.current_version(Project.stream_id_for(project_id)) == 0:
                    raise NotFound(f"no project {project_id}")
                raise NotFound(f"project {project_id} did not exist yet at that time")
            principal.require_reader(events[0].data.get("community_id"))
            return project_detail(Project.replay(project_id, events))

    def project_command(path, name, schema_cls, decide, doc, status=201, created=None, endpoint_method=None,
                        allowed=RESIDENTS):
        """Register ``POST /projects/<id>/<path>`` running ``decide(project, actor, body, uow)``."""

        def handler(*args, project_id, **kwargs):
            body = args[0] if args else {}
            created_id = created() if created else None

            def command(principal, meta):
                if endpoint_method is not None:
                    return endpoint_method(principal, meta, project_id, body, expected_version_from_if_match(),
                                           **kwargs)
                return service.act(project_id, expected_version_from_if_match(), meta,
                                   lambda project, uow: decide(project, principal, body, uow, created_id, **kwargs))
            return run(command, status=status, created_id=created_id)

        handler.__doc__ = doc
        handler.__name__ = name
        view = projects.arguments(schema_cls or EmptySchema)(projects.response(status, CommandResultSchema)(handler))
        projects.route(f"/<project_id>/{path}", methods=["POST"], endpoint=name)(roles(projects, *allowed)(view))

    project_command("cosignatures", "cosign", None, lambda p, a, b, u, i: p.cosign(a),
                    "Co-sign a proposal (another resident of the community) — 联署")
    project_command("opinions", "post_opinion", OpinionSchema,
                    lambda p, a, b, u, i: p.post_opinion(a, i, b["stance"], b["text"]),
                    "Post an opinion during deliberation — 协商议事", created=new_id,
                    allowed=RESIDENTS + FIELD_STAFF)
    project_command("amendments", "amend", AmendmentSchema,
                    lambda p, a, b, u, i: p.amend(a, {k: x for k, x in b.items() if k != "reason"}, b["reason"]),
                    "Amend the proposal (proposer; every version is kept)")
    project_command("withdrawal", "withdraw", ReasonSchema, lambda p, a, b, u, i: p.withdraw(a, b["reason"]),
                    "Withdraw the proposal before the vote (proposer)", status=200)
    project_command("vote/open", "open_vote", OpenVoteSchema, None,
                    "Open the council vote and reserve the requested amount from the fund (cadre)",
                    status=200, endpoint_method=lambda a, m, pid, b, ev: service.open_vote(a, m, pid, b, ev),
                    allowed=STAFF)
    project_command("vote/ballots", "cast_ballot", BallotSchema, lambda p, a, b, u, i: p.cast_ballot(a, b["choice"]),
                    "Cast a ballot yes / no / abstain (residents' representative, once)",
                    allowed=("representative",))
    project_command("vote/close", "close_vote", None, None,
                    "Close the vote and record the tally; rejected releases the reservation (cadre)",
                    status=200, endpoint_method=lambda a, m, pid, b, ev: service.close_vote(a, m, pid, ev),
                    allowed=STAFF)
    project_command("pledges", "pledge", PledgeSchema, lambda p, a, b, u, i: p.pledge(a, i, b),
                    "Pledge labour, money, materials or skills — 共建", created=new_id,
                    allowed=RESIDENTS + FIELD_STAFF)
    project_command("pledges/<pledge_id>/deliveries", "confirm_delivery", DeliverySchema, None,
                    "Confirm a delivery against a pledge (cadre, grid worker)",
                    endpoint_method=lambda a, m, pid, b, ev, pledge_id: service.confirm_delivery(a, m, pid, pledge_id, b, ev),
                    allowed=FIELD_STAFF)
    project_command("spending", "record_spending", SpendingSchema, None,
                    "Record spending from the project's reservation with a receipt (cadre)",
                    endpoint_method=lambda a, m, pid, b, ev: service.record_spending(a, m, pid, b, ev),
                    allowed=STAFF)
    project_command("milestones", "record_milestone", MilestoneSchema,
                    lambda p, a, b, u, i: p.record_milestone(a, b["progress"], b["note"]),
                    "Record a milestone: progress 0-100, never backwards (cadre, grid worker)",
                    allowed=FIELD_STAFF)
    project_command("completion", "complete", None, None,
                    "Complete the project at progress 100; the unspent reservation returns to the fund — 共管",
                    status=200, endpoint_method=lambda a, m, pid, b, ev: service.complete(a, m, pid, ev),
                    allowed=STAFF)
    project_command("maintainers", "assign_maintainer", MaintainerSchema,
                    lambda p, a, b, u, i: p.assign_maintainer(a, b), "Assign a maintainer with a duty and a rota",
                    allowed=FIELD_STAFF)
    project_command("maintenance-logs", "log_maintenance", MaintenanceLogSchema,
                    lambda p, a, b, u, i: p.log_maintenance(a, i, b["note"], b["performed_at"]),
                    "Log maintenance (the maintainer, or staff)", created=new_id,
                    allowed=RESIDENTS + FIELD_STAFF)
    project_command("problems", "report_problem", ProblemSchema,
                    lambda p, a, b, u, i: p.report_problem(a, i, b["description"]),
                    "Report a problem with the result (resident)", created=new_id,
                    allowed=RESIDENTS + FIELD_STAFF)
    project_command("problems/<problem_id>/resolution", "resolve_problem", ResolutionSchema, None,
                    "Resolve a reported problem; the time it took is recorded",
                    endpoint_method=lambda a, m, pid, b, ev, problem_id: service.resolve_problem(a, m, pid, problem_id, b, ev),
                    allowed=RESIDENTS + FIELD_STAFF)
    project_command("evaluation/open", "open_evaluation", OpenEvaluationSchema,
                    lambda p, a, b, u, i: p.open_evaluation(a, b.get("responsible_unit")),
                    "Open the residents' evaluation — 共评 (cadre)", status=200,
                    allowed=STAFF)
    project_command("evaluation/ratings", "rate", RatingSchema,
                    lambda p, a, b, u, i: p.rate(a, b["score"], b["comment"]),
                    "Rate the result 1-5 with an optional comment (resident, once)")
    project_command("evaluation/close", "close_evaluation", None, lambda p, a, b, u, i: p.close_evaluation(a),
                    "Close the evaluation: count and average recorded — 共享 (cadre)", status=200,
                    allowed=STAFF)
    project_command("results", "publish_results", ResultsSchema,
                    lambda p, a, b, u, i: p.publish_results(a, b["benefits"], b.get("volunteer_minutes")),
                    "Publish the results: contributions, fund spent, evaluation, benefits (cadre)",
                    allowed=STAFF)
    project_command("rewards", "pay_reward", RewardSchema, None,
                    "Pay a reward (以奖代补) from the fund to a contributor, with a reason (cadre)",
                    endpoint_method=lambda a, m, pid, b, ev: service.pay_reward(a, m, pid, b, ev),
                    allowed=STAFF)

    me = Blueprint("me", __name__, url_prefix="/me", description="The caller's own proposals and pledges")

    @me.route("/proposals")
    class MyProposals(MethodView):
        @me.response(200)
        def get(self):
            """Projects the caller proposed"""
            principal = current_principal()
            with read_transaction(store.engine) as connection:
                items, total = list_projects(connection, {"proposer_id": principal.person_id, "page": 1,
                                                          "per_page": 100})
            return {"items": items, "total": total}

    @me.route("/pledges")
    class MyPledges(MethodView):
        @me.response(200)
        def get(self):
            """The caller's own pledges with what was delivered"""
            principal = current_principal()
            with read_transaction(store.engine) as connection:
                return {"items": PLEDGES.for_contributor(connection, principal.person_id)}

    return [communities, projects, me]
