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
from services.projects.rounds import BudgetRound, RoundBallot
from services.projects.views import ROUND_BALLOTS, due_rounds

SETTINGS = ("cosigners_required", "quorum_numerator", "quorum_denominator", "pass_numerator", "pass_denominator",
            "round_winners_to_council")


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
    if not project.round_reserved_fen:  # a round's winner: its money is reserved already
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


# -- participatory budgeting rounds -------------------------------------------------------------------

def open_round(cmd: c.OpenRound, uow: UnitOfWork) -> BudgetRound:
    """The round opens, its budget is reserved from the fund and its proposals enter it — or nothing."""
    community = uow.load(Community, cmd.community_id)
    projects = [uow.get(Project, project_id) for project_id in cmd.project_ids]  # a repeat: refused below
    budget_round = uow.load(BudgetRound, uow.new_id())
    spec = {key: getattr(cmd, key) for key in ("community_id", "title", "budget_fen", "rule", "closes_at",
                                               "electorate", "electorate_size", "max_approvals")}
    events = budget_round.open(uow.actor, community, projects, spec, uow.now())
    fund = uow.load(CommunityFund, community.id)
    uow.record(fund, fund.reserve_for_round(budget_round.id, cmd.budget_fen))
    uow.record(budget_round, events)
    for project in projects:
        uow.record(project, project.enter_round(budget_round.id))
    return budget_round


def cast_round_ballot(cmd: c.CastRoundBallot, uow: UnitOfWork) -> RoundBallot:
    budget_round = uow.get(BudgetRound, cmd.round_id)
    ballot = uow.load(RoundBallot, RoundBallot.id_for(budget_round.id, uow.actor.person_id))
    uow.record(ballot, ballot.cast(uow.actor, budget_round, list(cmd.approvals)))
    return ballot


def close_round(cmd: c.CloseRound, uow: UnitOfWork) -> BudgetRound:
    budget_round = uow.get(BudgetRound, cmd.round_id, expected_version=cmd.expected_version)
    _close(uow, budget_round, uow.actor)
    return budget_round


def close_due_rounds(cmd: c.CloseDueRounds, uow: UnitOfWork) -> int:
    """The periodic job: every open round past its closing time is closed (by ``system``)."""
    due = due_rounds(uow.connection, uow.now())
    for round_id in due:
        _close(uow, uow.get(BudgetRound, round_id), None)
    return len(due)


def _close(uow: UnitOfWork, budget_round: BudgetRound, actor) -> None:
    """Tally the round from its ballots, move each winner's amount to the project, return the rest to
    the fund, and send every proposal on (winners to 共建 or the council, the others back to
    deliberation) — all in this one unit of work."""
    ballots, last_ballot = ROUND_BALLOTS.ballots(uow.connection, budget_round.id)
    inputs_position = max(last_ballot, uow.events_of(budget_round)[-1].position)  # no ballot: the opening
    uow.record(budget_round, budget_round.close(actor, ballots, inputs_position, uow.now()))
    fund = uow.load(CommunityFund, budget_round.community_id)
    winners = {w["proposal_id"]: w for w in budget_round.winners()}
    for proposal in budget_round.proposals:
        winner = winners.get(proposal["project_id"])
        if winner is not None:
            uow.record(fund, fund.transfer_from_round(budget_round.id, winner["proposal_id"], winner["cost_fen"]))
    uow.record(fund, fund.release_round(budget_round.id))
    for proposal in budget_round.proposals:
        project = uow.load(Project, proposal["project_id"])
        uow.record(project, project.leave_round(budget_round.id, winners.get(project.id), budget_round.confirmation))


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
    c.OpenRound: open_round,
    c.CastRoundBallot: cast_round_ballot,
    c.CloseRound: close_round,
    c.CloseDueRounds: close_due_rounds,
}
