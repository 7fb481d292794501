"""The projects service's commands: what a caller asks, as frozen data (one handler each).

HTTP routes load them with their schemas (:mod:`services.projects.api`). Fields a route's path
names (``community_id``, ``project_id``, ``pledge_id``, ``problem_id``) come from the path,
``expected_version`` from ``If-Match``; optional fields left out of a body are None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from services.kernel.model import command

# -- communities and the fund ------------------------------------------------------------------------


@command
class RegisterCommunity:
    community_id: str
    name: str
    district: str = ""
    grids: Sequence[Mapping[str, str]] = ()
    settings: Mapping[str, int] | None = None


@command
class AddGrid:
    community_id: str
    grid_id: str
    name: str
    expected_version: int | None = None


@command
class SetRepresentatives:
    """Replace the list of residents' representatives (the council electorate)."""

    community_id: str
    representatives: Sequence[Mapping[str, str]]
    expected_version: int | None = None


@command
class ChangeSettings:
    community_id: str
    cosigners_required: int | None = None
    quorum_numerator: int | None = None
    quorum_denominator: int | None = None
    pass_numerator: int | None = None
    pass_denominator: int | None = None
    round_winners_to_council: int | None = None
    expected_version: int | None = None


@command
class CreditFund:
    community_id: str
    amount_fen: int
    source: str
    reference: str = ""
    note: str = ""


# -- 共谋 co_plan -------------------------------------------------------------------------------------

@command
class ProposeProject:
    community_id: str
    grid_id: str
    title: str
    description: str
    category: str
    estimated_cost_fen: int
    requested_fen: int
    location: str = ""


@command
class CoSign:
    project_id: str
    expected_version: int | None = None


@command
class PostOpinion:
    project_id: str
    stance: str
    text: str
    expected_version: int | None = None


@command
class AmendProposal:
    """Change some of the proposal's text and amounts (the fields left None stay as they are)."""

    project_id: str
    reason: str
    title: str | None = None
    description: str | None = None
    category: str | None = None
    location: str | None = None
    estimated_cost_fen: int | None = None
    requested_fen: int | None = None
    expected_version: int | None = None


@command
class WithdrawProposal:
    project_id: str
    reason: str
    expected_version: int | None = None


@command
class OpenVote:
    project_id: str
    responsible_unit: Mapping[str, str] | None = None
    expected_version: int | None = None


@command
class CastBallot:
    project_id: str
    choice: str
    expected_version: int | None = None


@command
class CloseVote:
    project_id: str
    expected_version: int | None = None


# -- 共建 co_build ------------------------------------------------------------------------------------

@command
class PledgeContribution:
    project_id: str
    kind: str
    labour_minutes: int | None = None
    skills_minutes: int | None = None
    money_fen: int | None = None
    materials_fen: int | None = None
    description: str = ""
    contributor: Mapping[str, Any] | None = None  # staff only: an enterprise, organisation or resident
    expected_version: int | None = None


@command
class ConfirmDelivery:
    project_id: str
    pledge_id: str
    labour_minutes: int | None = None
    skills_minutes: int | None = None
    money_fen: int | None = None
    materials_fen: int | None = None
    note: str = ""
    delivered_at: datetime | None = None  # default: now
    expected_version: int | None = None


@command
class RecordSpending:
    project_id: str
    amount_fen: int
    receipt_ref: str
    description: str = ""
    expected_version: int | None = None


@command
class RecordMilestone:
    project_id: str
    progress: int
    note: str
    expected_version: int | None = None


@command
class CompleteProject:
    project_id: str
    expected_version: int | None = None


# -- 共管 co_manage -----------------------------------------------------------------------------------

@command
class AssignMaintainer:
    project_id: str
    maintainer_id: str
    name: str
    kind: str  # resident | group
    duty: str
    rota: str = ""
    members: Sequence[str] = ()
    expected_version: int | None = None


@command
class LogMaintenance:
    project_id: str
    note: str
    performed_at: datetime
    expected_version: int | None = None


@command
class ReportProblem:
    project_id: str
    description: str
    expected_version: int | None = None


@command
class ResolveProblem:
    project_id: str
    problem_id: str
    resolution: str
    expected_version: int | None = None


# -- 共评 co_evaluate and 共享 co_share ---------------------------------------------------------------

@command
class OpenEvaluation:
    project_id: str
    responsible_unit: Mapping[str, str] | None = None  # default: the unit named when the vote opened
    expected_version: int | None = None


@command
class RateProject:
    project_id: str
    score: int
    comment: str = ""
    expected_version: int | None = None


@command
class CloseEvaluation:
    project_id: str
    expected_version: int | None = None


@command
class PublishResults:
    project_id: str
    benefits: str
    volunteer_minutes: int | None = None  # default: the labour minutes delivered
    expected_version: int | None = None


@command
class PayReward:
    project_id: str
    recipient_id: str
    amount_fen: int
    reason: str
    expected_version: int | None = None


# -- participatory budgeting rounds ------------------------------------------------------------------

@command
class OpenRound:
    community_id: str
    title: str
    budget_fen: int
    rule: str  # greedy | mes
    project_ids: Sequence[str]
    closes_at: datetime
    electorate: str = "residents"  # residents | representatives
    electorate_size: int | None = None  # the community's stated electorate (turnout's denominator)
    max_approvals: int | None = None  # default: as many as there are proposals


@command
class CastRoundBallot:
    """Cast or revise one's approval ballot (the last one counts)."""

    round_id: str
    approvals: Sequence[str]


@command
class CloseRound:
    round_id: str
    expected_version: int | None = None


@command
class CloseDueRounds:
    """Close every open round whose closing time has passed (a periodic job)."""
