"""HTTP API of the projects service (flask-smorest; documented at /openapi.json and /docs).

Every write route loads its command (:mod:`services.projects.commands`) with its schema and sends
it to the service's message bus. Every project command answers with
``{"project": <detail>, "recorded": [<events>], "created_id": ...}`` and an ``ETag`` holding the
project's version; send it back as ``If-Match`` to make a command conditional (412 when someone
else changed the project first). Reads need any valid token and go through the named queries of
:mod:`services.projects.views` — but the public reads under ``/public`` (共享 transparency), which
need none and show what the privacy policy's allow-lists let anyone see.
"""

from __future__ import annotations

import marshmallow as ma
from flask.views import MethodView

from services.kernel.bus import Outcome
from services.kernel.web import (
    Blueprint,
    IDENTIFIER, PUBLIC_QUERY, CommandSchema, NoQuery, Schema, command_answer, command_answer_parts, current_principal,
    etagged, etagged_encoded, public, roles, send, service_container, text_field,
)
from services.projects import commands as c
from services.projects import open_data
from services.projects import views
from services.projects.budgeting import RULES
from services.projects.community import FUND_SOURCES
from services.projects.rounds import ELECTORATES, MAX_PROPOSALS
from services.projects.domain import (
    CATEGORIES, CHOICES, CONTRIBUTION_KINDS, CONTRIBUTOR_TYPES, FIELD_STAFF, RESIDENTS, STAFF, STAGES, STANCES,
)
from services.projects.views import COMMUNITIES, history_entry

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


class AddGridSchema(CommandSchema, GridSchema):
    command = c.AddGrid


class SettingsSchema(Schema):
    round_winners_to_council = f.Integer(strict=True, validate=v.OneOf([0, 1]), metadata={
        "description": "1: a budgeting round's winners go to a council vote that confirms them (their money "
                       "stays reserved meanwhile); 0 (default): they are funded at once"})
    cosigners_required = f.Integer(strict=True, validate=v.Range(min=0, max=1000))
    quorum_numerator = f.Integer(strict=True, validate=v.Range(min=0, max=1000))
    quorum_denominator = f.Integer(strict=True, validate=v.Range(min=1, max=1000))
    pass_numerator = f.Integer(strict=True, validate=v.Range(min=0, max=1000))
    pass_denominator = f.Integer(strict=True, validate=v.Range(min=1, max=1000))


class SettingsChangeSchema(CommandSchema, SettingsSchema):
    command = c.ChangeSettings


class CommunityCreateSchema(CommandSchema):
    command = c.RegisterCommunity

    community_id = f.String(required=True, **ID)
    name = text(100, required=True)
    district = f.String(validate=v.Length(max=100), load_default="")
    grids = f.List(f.Nested(GridSchema), load_default=list, validate=v.Length(max=500))
    settings = f.Nested(SettingsSchema)


class RepresentativeSchema(Schema):
    person_id = f.String(required=True, **ID)
    name = text(100, required=True)


class RepresentativesSchema(CommandSchema):
    command = c.SetRepresentatives

    representatives = f.List(f.Nested(RepresentativeSchema), required=True, validate=v.Length(max=2000))


class FundCreditSchema(CommandSchema):
    command = c.CreditFund

    amount_fen = f.Integer(required=True, **POSITIVE_FEN)
    source = f.String(required=True, validate=v.OneOf(list(FUND_SOURCES)))
    reference = f.String(validate=v.Length(max=200), load_default="")
    note = f.String(validate=v.Length(max=500), load_default="")


class LedgerQuery(Schema):
    after = f.Integer(load_default=0, validate=v.Range(min=0))
    limit = f.Integer(load_default=100, validate=v.Range(min=1, max=1000))


class ProposalSchema(CommandSchema):
    command = c.ProposeProject

    community_id = f.String(required=True, **ID)
    grid_id = f.String(required=True, **ID)
    title = text(100, required=True)
    description = text(5000, required=True)
    category = f.String(required=True, validate=v.OneOf(list(CATEGORIES)))
    location = f.String(validate=v.Length(max=200), load_default="")
    estimated_cost_fen = f.Integer(required=True, **FEN)
    requested_fen = f.Integer(required=True, **FEN)


class CosignatureSchema(CommandSchema):
    command = c.CoSign


class AmendmentSchema(CommandSchema):
    command = c.AmendProposal

    title = text(100)
    description = text(5000)
    category = f.String(validate=v.OneOf(list(CATEGORIES)))
    location = f.String(validate=v.Length(max=200))
    estimated_cost_fen = f.Integer(**FEN)
    requested_fen = f.Integer(**FEN)
    reason = text(500, required=True)


class ReasonSchema(CommandSchema):
    command = c.WithdrawProposal

    reason = text(500, required=True)


class OpinionSchema(CommandSchema):
    command = c.PostOpinion

    stance = f.String(required=True, validate=v.OneOf(STANCES))
    text = text(2000, required=True)


class ResponsibleUnitSchema(Schema):
    unit_id = f.String(required=True, **ID)
    name = text(100, required=True)


class OpenVoteSchema(CommandSchema):
    command = c.OpenVote

    responsible_unit = f.Nested(ResponsibleUnitSchema)


class BallotSchema(CommandSchema):
    command = c.CastBallot

    choice = f.String(required=True, validate=v.OneOf(CHOICES))


class CloseVoteSchema(CommandSchema):
    command = c.CloseVote


class OpenRoundSchema(CommandSchema):
    command = c.OpenRound

    title = text(100, required=True)
    budget_fen = f.Integer(required=True, **POSITIVE_FEN)
    rule = f.String(required=True, validate=v.OneOf(RULES), metadata={
        "description": "greedy: most approvals first; mes: the Method of Equal Shares (cost utilities), "
                       "completed by greedy"})
    project_ids = f.List(f.String(**ID), required=True, validate=v.Length(min=1, max=MAX_PROPOSALS))
    closes_at = f.AwareDateTime(required=True, metadata={"description": "when the round closes (ISO 8601 with a "
                                                                        "time zone); the periodic job closes it then"})
    electorate = f.String(load_default="residents", validate=v.OneOf(ELECTORATES))
    electorate_size = f.Integer(strict=True, validate=v.Range(min=1, max=10**7), metadata={
        "description": "the electorate the community states (turnout's denominator; representatives: their number)"})
    max_approvals = f.Integer(strict=True, validate=v.Range(min=1, max=MAX_PROPOSALS), metadata={
        "description": "the most proposals one ballot may approve (default: all of them)"})


class RoundBallotSchema(CommandSchema):
    command = c.CastRoundBallot

    approvals = f.List(f.String(**ID), required=True, validate=v.Length(max=MAX_PROPOSALS), metadata={
        "description": "the project ids you approve (an empty list: none); send it again to revise"})


class CloseRoundSchema(CommandSchema):
    command = c.CloseRound


class RoundListQuery(Schema):
    status = f.String(validate=v.OneOf(["open", "closed"]))


class ContributorSchema(Schema):
    contributor_id = f.String(required=True, **ID)
    name = text(100, required=True)
    type = f.String(required=True, validate=v.OneOf(CONTRIBUTOR_TYPES))


class PledgeSchema(CommandSchema):
    command = c.PledgeContribution

    kind = f.String(required=True, validate=v.OneOf(CONTRIBUTION_KINDS))
    labour_minutes = f.Integer(**MINUTES)
    skills_minutes = f.Integer(**MINUTES)
    money_fen = f.Integer(**POSITIVE_FEN)
    materials_fen = f.Integer(**POSITIVE_FEN)
    description = f.String(validate=v.Length(max=500), load_default="")
    contributor = f.Nested(ContributorSchema, metadata={"description": "staff only: the enterprise, "
                                                                       "organisation or resident pledging"})


class DeliverySchema(CommandSchema):
    command = c.ConfirmDelivery

    labour_minutes = f.Integer(**MINUTES)
    skills_minutes = f.Integer(**MINUTES)
    money_fen = f.Integer(**POSITIVE_FEN)
    materials_fen = f.Integer(**POSITIVE_FEN)
    note = f.String(validate=v.Length(max=500), load_default="")
    delivered_at = f.AwareDateTime(metadata={"description": "when it was delivered (default: now)"})


class SpendingSchema(CommandSchema):
    command = c.RecordSpending

    amount_fen = f.Integer(required=True, **POSITIVE_FEN)
    receipt_ref = text(100, required=True)
    description = f.String(validate=v.Length(max=500), load_default="")


class MilestoneSchema(CommandSchema):
    command = c.RecordMilestone

    progress = f.Integer(required=True, strict=True, validate=v.Range(min=0, max=100))
    note = text(1000, required=True)


class CompletionSchema(CommandSchema):
    command = c.CompleteProject


class MaintainerSchema(CommandSchema):
    command = c.AssignMaintainer

    maintainer_id = f.String(required=True, **ID)
    name = text(100, required=True)
    kind = f.String(required=True, validate=v.OneOf(["resident", "group"]))
    duty = text(500, required=True)
    rota = f.String(validate=v.Length(max=200), load_default="", metadata={"description": "e.g. 每周六上午"})
    members = f.List(f.String(**ID), load_default=list, validate=v.Length(max=200))


class MaintenanceLogSchema(CommandSchema):
    command = c.LogMaintenance

    note = text(1000, required=True)
    performed_at = f.AwareDateTime(required=True)


class ProblemSchema(CommandSchema):
    command = c.ReportProblem

    description = text(2000, required=True)


class ResolutionSchema(CommandSchema):
    command = c.ResolveProblem

    resolution = text(2000, required=True)


class OpenEvaluationSchema(CommandSchema):
    command = c.OpenEvaluation

    responsible_unit = f.Nested(ResponsibleUnitSchema)


class RatingSchema(CommandSchema):
    command = c.RateProject

    score = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=5))
    comment = f.String(validate=v.Length(max=2000), load_default="")


class CloseEvaluationSchema(CommandSchema):
    command = c.CloseEvaluation


class ResultsSchema(CommandSchema):
    command = c.PublishResults

    benefits = text(5000, required=True, metadata={"description": "the benefits in words"})
    volunteer_minutes = f.Integer(strict=True, validate=v.Range(min=0),
                                  metadata={"description": "default: labour minutes delivered"})


class RewardSchema(CommandSchema):
    command = c.PayReward

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


class PublicProjectQuery(Schema):
    grid_id = f.String(**ID)
    stage = f.String(validate=v.OneOf(list(STAGES)))
    category = f.String(validate=v.OneOf(list(CATEGORIES)))
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


# -- answers --------------------------------------------------------------------------------------

def store():
    return service_container().store


def send_project(command):
    """Send a project command (its answer: :func:`project_answer`)."""
    return send(command)


def project_answer(outcome: Outcome, status: int = 200, created_id: str | None = None):
    """A project command's answer: the project's detail after it, the events recorded, its version as ETag."""
    project = outcome.result
    # read once the command has committed, outside its write transaction (MessageBus.handle): the
    # page of the command's version, whatever came after it, kept for the readers after
    with store().read_transaction() as connection:
        parts = views.project_detail_parts(connection, project)
    mine = {"my_actions": project.actions_for(current_principal())}  # as GET /projects/<id> shows it
    return command_answer_parts("project", parts, mine, project.version, outcome.recorded, status, created_id)


def min_count() -> int:
    """Below this, a count of people is not shown on a public read (``PROJECTS_PUBLIC_MIN_COUNT``)."""
    return service_container().settings.public_min_count


def community_answer(outcome: Outcome, status: int = 200, location: str | None = None):
    """A community (or fund) command's answer: the changed resource with its version as ETag."""
    return etagged(outcome.result.view(), outcome.result.version, status, location)


communities = Blueprint("communities", __name__, url_prefix="/communities",
                        description="社区 communities, grids, representatives and the community fund")
projects = Blueprint("projects", __name__, url_prefix="/projects",
                     description="项目 co-creation projects: 共谋 共建 共管 共评 共享")
rounds = Blueprint("rounds", __name__, url_prefix="/rounds",
                   description="参与式预算 participatory budgeting rounds: a budget split across proposals by a rule")
me = Blueprint("me", __name__, url_prefix="/me", description="The caller's own proposals and pledges")
public_reads = Blueprint("public", __name__, url_prefix="/public",
                         description="公开 what anyone may read without a token: projects, results, the fund (共享)")


# -- communities ------------------------------------------------------------------------------------

@communities.route("")
class Communities(MethodView):
    @roles(communities, "admin")
    @communities.arguments(CommunityCreateSchema)
    @communities.response(201)
    def post(self, command: c.RegisterCommunity):
        """Register a community with its grids (admin)"""
        outcome = send(command)
        return community_answer(outcome, 201, f"/communities/{outcome.result.id}")

    @communities.response(200)
    def get(self):
        """List the communities (admins: every one; anyone else: their own)"""
        community_id = current_principal().reading_community(None)
        with store().read_transaction() as connection:
            found = views.list_communities(connection, community_id)
        return {"items": [community.view() for community in found]}


@communities.route("/<community_id>")
class CommunityResource(MethodView):
    @communities.response(200)
    def get(self, community_id):
        """A community: grids, representatives, settings"""
        current_principal().require_reader(community_id)
        community = COMMUNITIES.fetch(store().engine, community_id)
        return etagged(community.view(), community.version)


@communities.route("/<community_id>/grids", endpoint="grids")
class Grids(MethodView):
    @roles(communities, *STAFF)
    @communities.arguments(AddGridSchema)
    @communities.response(200)
    def post(self, command: c.AddGrid, **_path):
        """Add a grid (cadre, admin)"""
        return community_answer(send(command))


@communities.route("/<community_id>/representatives", endpoint="representatives")
class Representatives(MethodView):
    @roles(communities, *STAFF)
    @communities.arguments(RepresentativesSchema)
    @communities.response(200)
    def put(self, command: c.SetRepresentatives, **_path):
        """Replace the list of residents' representatives, the council electorate (cadre, admin)"""
        return community_answer(send(command))


@communities.route("/<community_id>/settings", endpoint="settings")
class Settings(MethodView):
    @roles(communities, *STAFF)
    @communities.arguments(SettingsChangeSchema)
    @communities.response(200)
    def patch(self, command: c.ChangeSettings, **_path):
        """Change co-signers needed, quorum and pass rule (cadre, admin)"""
        return community_answer(send(command))


@communities.route("/<community_id>/fund")
class Fund(MethodView):
    @communities.arguments(LedgerQuery, location="query")
    @communities.response(200)
    def get(self, query, community_id):
        """The community fund: balance, totals and the ledger (paged by position)"""
        current_principal().require_reader(community_id)
        with store().read_transaction() as connection:
            return views.fund_page(connection, community_id, query["limit"], query["after"])


@communities.route("/<community_id>/fund/credits")
class FundCredits(MethodView):
    @roles(communities, *STAFF)
    @communities.arguments(FundCreditSchema)
    @communities.response(201)
    def post(self, command: c.CreditFund, **_path):
        """Credit the fund: government allocation, reward pool (以奖代补) or donation (cadre, admin)"""
        return community_answer(send(command), 201)


@communities.route("/<community_id>/stats")
class Stats(MethodView):
    @communities.response(200)
    def get(self, community_id):
        """Projects per stage, approval rate, contributions and the fund"""
        current_principal().require_reader(community_id)
        with store().read_transaction() as connection:
            return views.statistics(connection, community_id)


# -- projects: reads --------------------------------------------------------------------------------

@projects.route("")
class Projects(MethodView):
    @roles(projects, *RESIDENTS)
    @projects.arguments(ProposalSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.ProposeProject):
        """Propose a project (resident of the community) — 共谋"""
        outcome = send_project(command)
        response = project_answer(outcome, 201)
        response.headers["Location"] = f"/projects/{outcome.result.id}"
        return response

    @projects.arguments(ProjectListQuery, location="query")
    @projects.response(200, ProjectPageSchema)
    def get(self, query):
        """List projects of a community (default and, but for admins, only: yours), filtered by
        grid, stage, category, proposer or free text"""
        community_id = current_principal().reading_community(query.get("community_id"))
        with store().read_transaction() as connection:
            items, total = views.list_projects(connection, {**query, "community_id": community_id})
        return {"items": items, "total": total, "page": query["page"], "per_page": query["per_page"]}


@projects.route("/<project_id>")
class ProjectResource(MethodView):
    @projects.response(200)
    def get(self, project_id):
        """Project detail: current stage, what the stage allows (``allowed_actions``) and what the
        caller may do now (``my_actions``), totals"""
        principal = current_principal()
        # The page kept for the project's version needs no transaction: the version is one
        # statement, and a kept page is that version's page (docs/architecture.md).
        engine = store().engine
        project = views.find_project_alone(engine, project_id)
        if project is not None:
            principal.require_reader(project.community_id)
        page = None if project is None else views.kept_project_detail_json(engine, project)
        if page is None:
            with store().read_transaction() as connection:
                project = views.find_project(connection, project_id)
                principal.require_reader(project.community_id)
                page = views.project_detail_json(connection, project)
        # what this caller may do now (allowed_actions is what the stage allows anyone)
        return etagged_encoded(page, {"my_actions": views.actions_for(engine, project, principal)}, project.version)


@projects.route("/<project_id>/history")
class History(MethodView):
    @projects.response(200)
    def get(self, project_id):
        """Every event of the project with actor, time and labels (中文 / English); who rated
        the project is shown to the rater and the community's staff only (the privacy policy)"""
        principal = current_principal()
        events = views.project_events(store(), project_id)
        community = events[0].data.get("community_id")
        principal.require_reader(community)
        return {"project_id": project_id, "events": [history_entry(e, principal, community) for e in events]}


@projects.route("/<project_id>/as-of")
class AsOf(MethodView):
    @projects.arguments(AsOfQuery, location="query")
    @projects.response(200)
    def get(self, query, project_id):
        """The project as it was at a version or an instant (replayed from its events)"""
        principal = current_principal()
        events = views.project_events(store(), project_id, query.get("version"), query.get("at"))
        principal.require_reader(events[0].data.get("community_id"))
        with store().read_transaction() as connection:
            return views.project_as_of(connection, project_id, events)


# -- projects: 共谋 co_plan -------------------------------------------------------------------------

@projects.route("/<project_id>/cosignatures", endpoint="cosign")
class Cosignatures(MethodView):
    @roles(projects, *RESIDENTS)
    @projects.arguments(CosignatureSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.CoSign, **_path):
        """Co-sign a proposal (another resident of the community) — 联署"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/opinions", endpoint="post_opinion")
class Opinions(MethodView):
    @roles(projects, *RESIDENTS, *FIELD_STAFF)
    @projects.arguments(OpinionSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.PostOpinion, **_path):
        """Post an opinion during deliberation — 协商议事"""
        outcome = send_project(command)
        return project_answer(outcome, 201, outcome.first("OpinionPosted", "opinion_id"))


@projects.route("/<project_id>/amendments", endpoint="amend")
class Amendments(MethodView):
    @roles(projects, *RESIDENTS)
    @projects.arguments(AmendmentSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.AmendProposal, **_path):
        """Amend the proposal (proposer; every version is kept)"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/withdrawal", endpoint="withdraw")
class Withdrawal(MethodView):
    @roles(projects, *RESIDENTS)
    @projects.arguments(ReasonSchema)
    @projects.response(200, CommandResultSchema)
    def post(self, command: c.WithdrawProposal, **_path):
        """Withdraw the proposal before the vote (proposer)"""
        return project_answer(send_project(command))


@projects.route("/<project_id>/vote/open", endpoint="open_vote")
class VoteOpening(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(OpenVoteSchema)
    @projects.response(200, CommandResultSchema)
    def post(self, command: c.OpenVote, **_path):
        """Open the council vote and reserve the requested amount from the fund (cadre)"""
        return project_answer(send_project(command))


@projects.route("/<project_id>/vote/ballots", endpoint="cast_ballot")
class Ballots(MethodView):
    @roles(projects, "representative")
    @projects.arguments(BallotSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.CastBallot, **_path):
        """Cast a ballot yes / no / abstain (residents' representative, once)"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/vote/close", endpoint="close_vote")
class VoteClosing(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(CloseVoteSchema)
    @projects.response(200, CommandResultSchema)
    def post(self, command: c.CloseVote, **_path):
        """Close the vote and record the tally; rejected releases the reservation (cadre)"""
        return project_answer(send_project(command))


# -- projects: 共建 co_build ------------------------------------------------------------------------

@projects.route("/<project_id>/pledges", endpoint="pledge")
class Pledges(MethodView):
    @roles(projects, *RESIDENTS, *FIELD_STAFF)
    @projects.arguments(PledgeSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.PledgeContribution, **_path):
        """Pledge labour, money, materials or skills — 共建"""
        outcome = send_project(command)
        return project_answer(outcome, 201, outcome.first("ContributionPledged", "pledge_id"))


@projects.route("/<project_id>/pledges/<pledge_id>/deliveries", endpoint="confirm_delivery")
class Deliveries(MethodView):
    @roles(projects, *FIELD_STAFF)
    @projects.arguments(DeliverySchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.ConfirmDelivery, **_path):
        """Confirm a delivery against a pledge (cadre, grid worker)"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/spending", endpoint="record_spending")
class Spending(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(SpendingSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.RecordSpending, **_path):
        """Record spending from the project's reservation with a receipt (cadre)"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/milestones", endpoint="record_milestone")
class Milestones(MethodView):
    @roles(projects, *FIELD_STAFF)
    @projects.arguments(MilestoneSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.RecordMilestone, **_path):
        """Record a milestone: progress 0-100, never backwards (cadre, grid worker)"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/completion", endpoint="complete")
class Completion(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(CompletionSchema)
    @projects.response(200, CommandResultSchema)
    def post(self, command: c.CompleteProject, **_path):
        """Complete the project at progress 100; the unspent reservation returns to the fund — 共管"""
        return project_answer(send_project(command))


# -- projects: 共管 co_manage -----------------------------------------------------------------------

@projects.route("/<project_id>/maintainers", endpoint="assign_maintainer")
class Maintainers(MethodView):
    @roles(projects, *FIELD_STAFF)
    @projects.arguments(MaintainerSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.AssignMaintainer, **_path):
        """Assign a maintainer with a duty and a rota"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/maintenance-logs", endpoint="log_maintenance")
class MaintenanceLogs(MethodView):
    @roles(projects, *RESIDENTS, *FIELD_STAFF)
    @projects.arguments(MaintenanceLogSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.LogMaintenance, **_path):
        """Log maintenance (the maintainer, or staff)"""
        outcome = send_project(command)
        return project_answer(outcome, 201, outcome.first("MaintenanceLogged", "log_id"))


@projects.route("/<project_id>/problems", endpoint="report_problem")
class Problems(MethodView):
    @roles(projects, *RESIDENTS, *FIELD_STAFF)
    @projects.arguments(ProblemSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.ReportProblem, **_path):
        """Report a problem with the result (resident)"""
        outcome = send_project(command)
        return project_answer(outcome, 201, outcome.first("ProblemReported", "problem_id"))


@projects.route("/<project_id>/problems/<problem_id>/resolution", endpoint="resolve_problem")
class Resolution(MethodView):
    @roles(projects, *RESIDENTS, *FIELD_STAFF)
    @projects.arguments(ResolutionSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.ResolveProblem, **_path):
        """Resolve a reported problem; the time it took is recorded"""
        return project_answer(send_project(command), 201)


# -- projects: 共评 co_evaluate and 共享 co_share --------------------------------------------------

@projects.route("/<project_id>/evaluation/open", endpoint="open_evaluation")
class EvaluationOpening(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(OpenEvaluationSchema)
    @projects.response(200, CommandResultSchema)
    def post(self, command: c.OpenEvaluation, **_path):
        """Open the residents' evaluation — 共评 (cadre)"""
        return project_answer(send_project(command))


@projects.route("/<project_id>/evaluation/ratings", endpoint="rate")
class Ratings(MethodView):
    @roles(projects, *RESIDENTS)
    @projects.arguments(RatingSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.RateProject, **_path):
        """Rate the result 1-5 with an optional comment (resident, once)"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/evaluation/close", endpoint="close_evaluation")
class EvaluationClosing(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(CloseEvaluationSchema)
    @projects.response(200, CommandResultSchema)
    def post(self, command: c.CloseEvaluation, **_path):
        """Close the evaluation: count and average recorded — 共享 (cadre)"""
        return project_answer(send_project(command))


@projects.route("/<project_id>/results", endpoint="publish_results")
class Results(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(ResultsSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.PublishResults, **_path):
        """Publish the results: contributions, fund spent, evaluation, benefits (cadre)"""
        return project_answer(send_project(command), 201)


@projects.route("/<project_id>/rewards", endpoint="pay_reward")
class Rewards(MethodView):
    @roles(projects, *STAFF)
    @projects.arguments(RewardSchema)
    @projects.response(201, CommandResultSchema)
    def post(self, command: c.PayReward, **_path):
        """Pay a reward (以奖代补) from the fund to a contributor, with a reason (cadre)"""
        return project_answer(send_project(command), 201)


# -- the caller's own -------------------------------------------------------------------------------

@me.route("/proposals")
class MyProposals(MethodView):
    @me.response(200)
    def get(self):
        """Projects the caller proposed"""
        principal = current_principal()
        with store().read_transaction() as connection:
            items, total = views.my_proposals(connection, principal.person_id)
        return {"items": items, "total": total}


@me.route("/pledges")
class MyPledges(MethodView):
    @me.response(200)
    def get(self):
        """The caller's own pledges with what was delivered"""
        principal = current_principal()
        with store().read_transaction() as connection:
            return {"items": views.my_pledges(connection, principal.person_id)}


# -- public reads: no token (共享 transparency) --------------------------------------------------------

@public_reads.route("/communities/<community_id>")
class PublicCommunity(MethodView):
    @public(public_reads)
    @public_reads.arguments(NoQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, _query, community_id):
        """A community's name and grids, and the stages and categories to filter its projects by (no token)"""
        with store().read_transaction() as connection:
            return views.public_community(connection, community_id)


@public_reads.route("/communities/<community_id>/projects")
class PublicProjects(MethodView):
    @public(public_reads)
    @public_reads.arguments(PublicProjectQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, query, community_id):
        """A community's projects with their stages, newest first, by grid, stage or category (no token)"""
        with store().read_transaction() as connection:
            return views.public_projects(connection, community_id, query, min_count())


@public_reads.route("/communities/<community_id>/fund")
class PublicFund(MethodView):
    @public(public_reads)
    @public_reads.arguments(LedgerQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, query, community_id):
        """The community fund: balance, totals and the ledger, paged by position — no names (no token)"""
        with store().read_transaction() as connection:
            return views.public_fund(connection, community_id, query["limit"], query["after"])


@public_reads.route("/projects/<project_id>")
class PublicProject(MethodView):
    @public(public_reads)
    @public_reads.arguments(NoQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, _query, project_id):
        """A project's public page: stage and timeline, milestones, money, the council's verdict, the
        evaluation and the published results — no person named (no token)"""
        with store().read_transaction() as connection:
            return views.public_project(connection, project_id, min_count())


@public_reads.route("/communities/<community_id>/rounds")
class PublicRounds(MethodView):
    @public(public_reads)
    @public_reads.arguments(NoQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, _query, community_id):
        """A community's participatory budgeting rounds, newest first — counts only (no token)"""
        with store().read_transaction() as connection:
            return views.public_rounds(connection, community_id, min_count())


@public_reads.route("/rounds/<round_id>")
class PublicRound(MethodView):
    @public(public_reads)
    @public_reads.arguments(NoQuery, **PUBLIC_QUERY)
    @public_reads.response(200)
    def get(self, _query, round_id):
        """A budgeting round's proposals and, once closed, its winners and why each proposal won or
        lost — never a ballot; small counts suppressed (no token)"""
        with store().read_transaction() as connection:
            return views.public_round(connection, round_id, min_count())


# -- participatory budgeting rounds ------------------------------------------------------------------

def round_answer(outcome: Outcome, status: int = 200):
    """A round command's answer: the round as its reader sees it, the events recorded, its version."""
    budget_round = outcome.result
    with store().read_transaction() as connection:
        detail = views.round_detail(connection, budget_round, current_principal().person_id)
    return command_answer("round", detail, budget_round.version, outcome.recorded, status, budget_round.id)


@communities.route("/<community_id>/rounds")
class CommunityRounds(MethodView):
    @roles(communities, *STAFF)
    @communities.arguments(OpenRoundSchema)
    @communities.response(201)
    def post(self, command: c.OpenRound, **_path):
        """Open a participatory budgeting round: its budget is reserved from the fund, its proposals
        (co-signed, in deliberation) enter it (cadre)"""
        response = round_answer(send(command), 201)
        response.headers["Location"] = f"/rounds/{response.get_json()['created_id']}"
        return response

    @communities.arguments(RoundListQuery, location="query")
    @communities.response(200)
    def get(self, query, community_id):
        """The community's budgeting rounds, newest first"""
        current_principal().require_reader(community_id)
        with store().read_transaction() as connection:
            return {"community_id": community_id,
                    "items": views.list_rounds(connection, community_id, query.get("status"))}


@rounds.route("/<round_id>")
class RoundResource(MethodView):
    @rounds.response(200)
    def get(self, round_id):
        """A budgeting round: proposals, counts, your own ballot (``my_ballot``) and, once closed, the
        outcome with every proposal's explanation (中文 / English)"""
        principal = current_principal()
        with store().read_transaction() as connection:
            budget_round = views.find_round(connection, round_id)
            principal.require_reader(budget_round.community_id)
            detail = views.round_detail(connection, budget_round, principal.person_id)
        return etagged(detail, budget_round.version)


@rounds.route("/<round_id>/ballot", endpoint="round_ballot")
class RoundBallotResource(MethodView):
    @roles(rounds, *RESIDENTS)
    @rounds.arguments(RoundBallotSchema)
    @rounds.response(200)
    def put(self, command: c.CastRoundBallot, **_path):
        """Cast or revise your approval ballot until the round closes (a voter of the round); the
        answer is the round with your ballot. Nobody else sees your approvals"""
        outcome = send(command)
        with store().read_transaction() as connection:
            budget_round = views.find_round(connection, command.round_id)
            detail = views.round_detail(connection, budget_round, current_principal().person_id)
        return command_answer("round", detail, budget_round.version, outcome.recorded)


@rounds.route("/<round_id>/close", endpoint="close_round")
class RoundClosing(MethodView):
    @roles(rounds, *STAFF)
    @rounds.arguments(CloseRoundSchema)
    @rounds.response(200)
    def post(self, command: c.CloseRound, **_path):
        """Close the round and tally it by its rule: winners funded from the round's reservation, the
        rest back to the fund (cadre)"""
        return round_answer(send(command))


@rounds.route("/<round_id>/verification")
class RoundVerification(MethodView):
    @rounds.response(200)
    def get(self, round_id):
        """Recount the closed round from the log (its opening and every ballot up to the recorded
        position) and say whether the outcome is identical"""
        principal = current_principal()
        with store().read_transaction() as connection:
            principal.require_reader(views.find_round(connection, round_id).community_id)
        return views.round_verification(store(), round_id)


BLUEPRINTS = (communities, projects, rounds, me, public_reads, open_data.blueprint)
