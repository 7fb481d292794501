"""The projects service's command handlers: one function per command, ``(command, uow)``.

Each runs in one unit of work (:class:`services.kernel.bus.MessageBus` opens it): it loads the
aggregates it needs inside a serialised write transaction, lets them decide, and records what they
decided — a project and its community's fund together when a command moves money (open vote,
close vote, spending, completion, reward). A refused command raises before anything is recorded,
so it changes nothing. ``expected_version`` (from ``If-Match``) is checked when the aggregate is
loaded. The clock (``uow.now()``) and the ids (``uow.new_id()``) are the bus's, injected by
bootstrap. Community commands return the community (or its fund), project commands the project.
"""

from __future__ import annotations

from services.kernel.aggregate import UnitOfWork
from services.kernel.model import fields_of, format_time, require_member
from services.projects import commands as c
from services.projects.community import RELEASE_REASONS, Community, CommunityFund
from services.projects.domain import AMENDABLE, STAFF, Project

SETTINGS = ("cosigners_required", "quorum_numerator", "quorum_denominator", "pass_numerator", "pass_denominator")


# -- communities and the fund ------------------------------------------------------------------------

def register_community(cmd: c.RegisterCommunity, uow: UnitOfWork) -> Community:
    uow.actor.require("admin")
    community = uow.load(Community, cmd.community_id)
    uow.record(community, community.register(cmd.name, cmd.district, list(cmd.grids),
                                             dict(cmd.settings) if cmd.settings is not None else None))
    return community


def staff_community(uow: UnitOfWork, community_id: str, expected_version: int | None = None) -> Community:
    """The community (404, or 412 when stale), changed only by its own staff (cadres) or admins."""
    community = uow.get(Community, community_id, expected_version=expected_version)
    require_member(uow.actor, community_id, STAFF)
    return community


def add_grid(cmd: c.AddGrid, uow: UnitOfWork) -> Community:
    community = staff_community(uow, cmd.community_id, cmd.expected_version)
    uow.record(community, community.add_grid(cmd.grid_id, cmd.name))
    return community


def set_representatives(cmd: c.SetRepresentatives, uow: UnitOfWork) -> Community:
    community = staff_community(uow, cmd.community_id, cmd.expected_version)
    uow.record(community, community.set_representatives([dict(r) for r in cmd.representatives]))
    return community


def change_settings(cmd: c.ChangeSettings, uow: UnitOfWork) -> Community:
    community = staff_community(uow, cmd.community_id, cmd.expected_version)
    changes = {key: getattr(cmd, key) for key in SETTINGS if getattr(cmd, key) is not None}
    uow.record(community, community.change_settings(changes))
    return community


def credit_fund(cmd: c.CreditFund, uow: UnitOfWork) -> CommunityFund:
    staff_community(uow, cmd.community_id)
    fund = uow.load(CommunityFund, cmd.community_id)
    uow.record(fund, fund.credit(cmd.amount_fen, cmd.source, cmd.reference, cmd.note))
    return fund


# -- 共谋 co_plan -------------------------------------------------------------------------------------

def propose_project(cmd: c.ProposeProject, uow: UnitOfWork) -> Project:
    community = uow.load(Community, cmd.community_id)
    project = uow.load(Project, uow.new_id())
    uow.record(project, project.propose(uow.actor, fields_of(cmd), community))
    return project


def cosign(cmd: c.CoSign, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.cosign(uow.actor))
    return project


def post_opinion(cmd: c.PostOpinion, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.post_opinion(uow.actor, uow.new_id(), cmd.stance, cmd.text))
    return project


def amend_proposal(cmd: c.AmendProposal, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    changes = {key: getattr(cmd, key) for key in AMENDABLE if getattr(cmd, key) is not None}
    uow.record(project, project.amend(uow.actor, changes, cmd.reason))
    return project


def withdraw_proposal(cmd: c.WithdrawProposal, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.withdraw(uow.actor, cmd.reason))
    return project


def open_vote(cmd: c.OpenVote, uow: UnitOfWork) -> Project:
    """The vote opens and the requested amount is reserved from the fund, or neither."""
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    community = uow.load(Community, project.community_id)
    unit = dict(cmd.responsible_unit) if cmd.responsible_unit else None
    events = project.open_vote(uow.actor, community, unit)
    fund = uow.load(CommunityFund, project.community_id)
    uow.record(fund, fund.reserve(project.id, project.requested_fen))
    uow.record(project, events)
    return project


def cast_ballot(cmd: c.CastBallot, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.cast_ballot(uow.actor, cmd.choice))
    return project


def close_vote(cmd: c.CloseVote, uow: UnitOfWork) -> Project:
    """The tally is recorded; a rejected project's reservation returns to the fund."""
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.close_vote(uow.actor))
    if project.stage == "rejected":
        fund = uow.load(CommunityFund, project.community_id)
        uow.record(fund, fund.release(project.id, RELEASE_REASONS["rejected"][1].format(project_id=project.id)))
    return project


# -- 共建 co_build ------------------------------------------------------------------------------------

def pledge_contribution(cmd: c.PledgeContribution, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.pledge(uow.actor, uow.new_id(), fields_of(cmd)))
    return project


def confirm_delivery(cmd: c.ConfirmDelivery, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    delivered_at = format_time(cmd.delivered_at or uow.now())
    uow.record(project, project.confirm_delivery(uow.actor, cmd.pledge_id, fields_of(cmd), delivered_at))
    return project


def record_spending(cmd: c.RecordSpending, uow: UnitOfWork) -> Project:
    """Spending is paid out of the project's reservation, with a receipt."""
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    events = project.record_spending(uow.actor, uow.new_id(), cmd.amount_fen, cmd.receipt_ref, cmd.description)
    fund = uow.load(CommunityFund, project.community_id)
    uow.record(fund, fund.spend(project.id, cmd.amount_fen, cmd.receipt_ref, cmd.description))
    uow.record(project, events)
    return project


def record_milestone(cmd: c.RecordMilestone, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.record_milestone(uow.actor, cmd.progress, cmd.note))
    return project


def complete_project(cmd: c.CompleteProject, uow: UnitOfWork) -> Project:
    """Completion returns the unspent reservation to the fund."""
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.complete(uow.actor))
    fund = uow.load(CommunityFund, project.community_id)
    uow.record(fund, fund.release(project.id, RELEASE_REASONS["remainder"][1].format(project_id=project.id)))
    return project


# -- 共管 co_manage -----------------------------------------------------------------------------------

def assign_maintainer(cmd: c.AssignMaintainer, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.assign_maintainer(uow.actor, fields_of(cmd)))
    return project


def log_maintenance(cmd: c.LogMaintenance, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.log_maintenance(uow.actor, uow.new_id(), cmd.note, cmd.performed_at))
    return project


def report_problem(cmd: c.ReportProblem, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.report_problem(uow.actor, uow.new_id(), cmd.description))
    return project


def resolve_problem(cmd: c.ResolveProblem, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.resolve_problem(uow.actor, cmd.problem_id, cmd.resolution, uow.now()))
    return project


# -- 共评 co_evaluate and 共享 co_share ---------------------------------------------------------------

def open_evaluation(cmd: c.OpenEvaluation, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    unit = dict(cmd.responsible_unit) if cmd.responsible_unit else None
    uow.record(project, project.open_evaluation(uow.actor, unit))
    return project


def rate_project(cmd: c.RateProject, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.rate(uow.actor, cmd.score, cmd.comment))
    return project


def close_evaluation(cmd: c.CloseEvaluation, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.close_evaluation(uow.actor))
    return project


def publish_results(cmd: c.PublishResults, uow: UnitOfWork) -> Project:
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    uow.record(project, project.publish_results(uow.actor, cmd.benefits, cmd.volunteer_minutes))
    return project


def pay_reward(cmd: c.PayReward, uow: UnitOfWork) -> Project:
    """A reward (以奖代补) to a contributor, paid from the fund's balance."""
    project = uow.get(Project, cmd.project_id, expected_version=cmd.expected_version)
    events = project.pay_reward(uow.actor, cmd.recipient_id, cmd.amount_fen, cmd.reason)
    reward = events[0].data
    fund = uow.load(CommunityFund, project.community_id)
    uow.record(fund, fund.pay_reward(project.id, reward["recipient_id"], reward["recipient_name"],
                                     reward["amount_fen"], reward["reason"]))
    uow.record(project, events)
    return project


HANDLERS = {
    c.RegisterCommunity: register_community,
    c.AddGrid: add_grid,
    c.SetRepresentatives: set_representatives,
    c.ChangeSettings: change_settings,
    c.CreditFund: credit_fund,
    c.ProposeProject: propose_project,
    c.CoSign: cosign,
    c.PostOpinion: post_opinion,
    c.AmendProposal: amend_proposal,
    c.WithdrawProposal: withdraw_proposal,
    c.OpenVote: open_vote,
    c.CastBallot: cast_ballot,
    c.CloseVote: close_vote,
    c.PledgeContribution: pledge_contribution,
    c.ConfirmDelivery: confirm_delivery,
    c.RecordSpending: record_spending,
    c.RecordMilestone: record_milestone,
    c.CompleteProject: complete_project,
    c.AssignMaintainer: assign_maintainer,
    c.LogMaintenance: log_maintenance,
    c.ReportProblem: report_problem,
    c.ResolveProblem: resolve_problem,
    c.OpenEvaluation: open_evaluation,
    c.RateProject: rate_project,
    c.CloseEvaluation: close_evaluation,
    c.PublishResults: publish_results,
    c.PayReward: pay_reward,
}
