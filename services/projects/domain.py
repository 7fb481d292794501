"""A co-creation project through the five stages 共谋 共建 共管 共评 共享 (pure domain, no I/O).

Stages and, within 共谋, phases::

    co_plan   collecting_cosigners -> deliberation -> voting --(approved)--> co_build
                       |                   |             \\--(rejected)--> rejected (ends)
                       \\-------------------+--(withdrawn by the proposer)--> withdrawn (ends)
    co_build  pledges, deliveries, spending, milestones; completion at progress 100 -> co_manage
    co_manage maintainers, maintenance logs, problems (these continue in the later stages)
    co_evaluate  residents rate the result 1-5 once each; closing -> co_share
    co_share  results published once; rewards (以奖代补) paid from the fund

Every decision checks who the actor is (roles and community from the token) and the stage; a
command in the wrong stage or a repeat is a :class:`Conflict` whose message lists what is allowed
now. The fund side of a decision (reserve, release, spend, reward) is decided by
:class:`~services.projects.community.CommunityFund` in the same unit of work.

The aggregate keeps what decisions need: the project's current attributes, and of its records
(co-signers, the vote, pledges, maintainers, problems, the evaluation) only what a rule looks up.
What only pages show (every revision, opinions, spending, milestones, maintenance logs, rewards,
names and times) is in the events, and in the read model :class:`services.projects.views.ProjectDetails`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from services.kernel.model import (
    Aggregate, Conflict, DomainError, Forbidden, NewEvent, Principal, format_time, parse_time, require_member,
    role_names,
)

STAGES = {
    "co_plan": "共谋 co-planning",
    "co_build": "共建 co-building",
    "co_manage": "共管 co-managing",
    "co_evaluate": "共评 co-evaluating",
    "co_share": "共享 co-sharing",
    "rejected": "否决 rejected by the council",
    "withdrawn": "撤回 withdrawn by the proposer",
}
PHASES = {
    "collecting_cosigners": "征集联署 collecting co-signers",
    "deliberation": "协商议事 deliberation",
    "voting": "居民代表表决 council vote",
    "building": "建设中 building",
    "maintaining": "管护中 maintaining",
    "evaluating": "评议中 evaluating",
    "results_pending": "待公示 results pending",
    "published": "已公示 results published",
    "ended": "已结束 ended",
}
CATEGORIES = {
    "environment": "环境整治 environment",
    "facilities": "公共设施 public facilities",
    "greening": "绿化美化 greening",
    "elderly_care": "养老助老 elderly care",
    "children": "儿童友好 children",
    "culture": "文化活动 culture",
    "safety": "平安建设 safety",
    "parking": "停车交通 parking and traffic",
    "other": "其他 other",
}
STANCES = ("support", "oppose", "neutral")
CHOICES = ("yes", "no", "abstain")
# Why a council vote ended as it did: the tally's ``reason`` (in English, from these templates) and
# its label in Chinese (the project detail shows both: ``reason_label``).
TALLY_REASONS: dict[str, tuple[str, str]] = {
    "quorum_not_met": ("未达到法定人数：{electorate_size}名居民代表中{ballots}人投票，需要{quorum_required}人",
                       "quorum not met: {ballots} of {electorate_size} representatives voted, "
                       "{quorum_required} needed"),
    "not_passed": ("未通过：{ballots}张选票中{yes}张赞成，赞成票需超过{pass_numerator}/{pass_denominator}",
                   "not passed: {yes} of {ballots} ballots were yes, more than {pass_numerator}/{pass_denominator} "
                   "needed"),
    "passed": ("通过：{ballots}张选票中{yes}张赞成", "passed: {yes} of {ballots} ballots were yes"),
}
CONTRIBUTOR_TYPES = ("resident", "enterprise", "social_organisation")
CONTRIBUTION_KINDS = ("labour", "money", "materials", "skills")
STAFF = role_names("cadre", "admin")
FIELD_STAFF = role_names("cadre", "grid_worker", "admin")
RESIDENTS = role_names("resident", "representative")
AMENDABLE = ("title", "description", "category", "location", "estimated_cost_fen", "requested_fen")


@dataclasses.dataclass
class Project(Aggregate):
    stream_prefix: ClassVar[str] = "project"
    label: ClassVar[str] = "project"

    community_id: str = ""
    grid_id: str = ""
    title: str = ""
    description: str = ""
    category: str = ""
    location: str = ""
    estimated_cost_fen: int = 0
    requested_fen: int = 0
    proposer_id: str = ""
    proposer_name: str = ""
    stage: str = ""
    phase: str = ""
    last_revision: int = 0  # 0: the original text; each amendment is the next revision
    cosigners_required: int = 0
    cosigner_ids: list[str] = dataclasses.field(default_factory=list)
    # electorate, its size, the quorum and pass fractions, reserved_fen, ballots {person_id: choice}
    vote: dict[str, Any] | None = None
    responsible_unit: dict[str, str] | None = None
    # pledge_id -> contributor_id, contributor_name, contributor_type, kind, delivered {amount: n},
    # delivery_count
    pledges: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    spent_fen: int = 0
    progress: int = 0
    maintainers: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # maintainer_id -> members
    problems: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # reported_at, resolved
    # responsible_unit, ratings {person_id: score}; count and average once closed (None before)
    evaluation: dict[str, Any] | None = None
    # a participatory budgeting round (services/projects/rounds.py) the proposal is in; and the amount
    # a round funded it with while it awaits the council's confirmation (reserved already)
    round_id: str | None = None
    round_reserved_fen: int = 0
    funded_by_round: str | None = None  # the round whose outcome funded the project (its requested_fen)

    # -- what is allowed now ----------------------------------------------------------------

    def allowed_actions(self) -> list[str]:
        if not self.exists:
            return ["propose"]
        if self.stage == "co_plan":
            if self.phase == "collecting_cosigners":
                return ["cosign", "amend", "withdraw"]
            if self.phase == "deliberation" and self.round_id:
                return ["cosign", "post_opinion"]  # costs are fixed while a round counts them
            if self.phase == "deliberation" and self.round_reserved_fen:
                return ["post_opinion", "open_vote"]  # a round funded it; the council confirms it
            if self.phase == "deliberation":
                return ["cosign", "post_opinion", "amend", "withdraw", "open_vote"]
            return ["cast_ballot", "close_vote"]
        if self.stage == "co_build":
            return ["pledge", "confirm_delivery", "record_spending", "record_milestone", "complete"]
        upkeep = ["assign_maintainer", "log_maintenance", "report_problem", "resolve_problem"]
        if self.stage == "co_manage":
            return upkeep + ["open_evaluation"]
        if self.stage == "co_evaluate":
            return upkeep + ["rate", "close_evaluation"]
        if self.stage == "co_share":
            return upkeep + (["pay_reward"] if self.phase == "published" else ["publish_results", "pay_reward"])
        return []

    def actions_for(self, actor: Principal) -> list[str]:
        """What ``actor`` may do now: each of :meth:`allowed_actions` whose decision would accept
        them, tried as a dry run with neutral arguments (decisions only return events: nothing is
        recorded; :data:`CALLER_PROBES`)."""
        mine = []
        for action in self.allowed_actions():
            try:
                CALLER_PROBES[action](self, actor)
            except DomainError:
                continue
            mine.append(action)
        return mine

    def _expect(self, action: str, what: str) -> None:
        allowed = self.allowed_actions()
        if action not in allowed:
            now = ", ".join(allowed) if allowed else "nothing (the project has ended)"
            raise Conflict(
                f"cannot {what}: the project is in stage {self.stage} ({self.phase}); allowed now: {now}",
                reason="wrong_stage",
                details={"stage": self.stage, "phase": self.phase, "allowed_actions": allowed})

    def _repeated(self, message: str, reason: str) -> Conflict:
        """A repeated (or otherwise impossible) command: a 409 that says what is allowed now."""
        allowed = self.allowed_actions()
        return Conflict(f"{message}; allowed now: {', '.join(allowed) if allowed else 'nothing'}", reason=reason,
                        details={"stage": self.stage, "phase": self.phase, "allowed_actions": allowed})

    # -- 共谋 co_plan -----------------------------------------------------------------------

    def propose(self, actor: Principal, proposal: dict[str, Any], community) -> list[NewEvent]:
        if self.exists:
            raise Conflict(f"project {self.id} already exists", reason="already_exists")
        if not community.exists:
            raise DomainError(f"no community {proposal['community_id']}", reason="unknown_community",
                              details={"community_id": "unknown community"})
        require_member(actor, community.id, RESIDENTS)
        if proposal["grid_id"] not in community.grids:
            raise DomainError(f"community {community.id} has no grid {proposal['grid_id']}",
                              reason="unknown_grid", details={"grid_id": "unknown grid in this community"})
        _check_text_fields(proposal)
        return [NewEvent("ProjectProposed", {
            "project_id": self.id, "community_id": community.id, "grid_id": proposal["grid_id"],
            "title": proposal["title"], "description": proposal["description"],
            "category": proposal["category"], "location": proposal.get("location", ""),
            "estimated_cost_fen": proposal["estimated_cost_fen"], "requested_fen": proposal["requested_fen"],
            "proposer_id": actor.person_id, "proposer_name": actor.name,
            "cosigners_required": community.settings["cosigners_required"],
        })]

    def cosign(self, actor: Principal) -> list[NewEvent]:
        self._expect("cosign", "co-sign")
        require_member(actor, self.community_id, RESIDENTS)
        if actor.person_id == self.proposer_id:
            raise self._repeated("the proposer cannot co-sign their own proposal", "self_cosign")
        if actor.person_id in self.cosigner_ids:
            raise self._repeated("you have already co-signed this proposal", "already_cosigned")
        count = len(self.cosigner_ids) + 1
        events = [NewEvent("ProjectCosigned", {"project_id": self.id, "person_id": actor.person_id,
                                                "name": actor.name, "count": count})]
        if self.phase == "collecting_cosigners" and count >= self.cosigners_required:
            events.append(NewEvent("ProjectQualified", {"project_id": self.id, "cosigners": count}))
        return events

    def post_opinion(self, actor: Principal, opinion_id: str, stance: str, text: str) -> list[NewEvent]:
        self._expect("post_opinion", "post an opinion")
        require_member(actor, self.community_id, RESIDENTS + FIELD_STAFF)
        if stance not in STANCES:
            raise DomainError("stance must be support, oppose or neutral", reason="invalid_stance",
                              details={"stance": f"one of {', '.join(STANCES)}"})
        return [NewEvent("OpinionPosted", {"project_id": self.id, "opinion_id": opinion_id,
                                           "person_id": actor.person_id, "name": actor.name,
                                           "stance": stance, "text": text})]

    def amend(self, actor: Principal, changes: dict[str, Any], reason: str) -> list[NewEvent]:
        self._expect("amend", "amend the proposal")
        if actor.person_id != self.proposer_id:
            raise Forbidden("only the proposer may amend the proposal", reason="not_proposer")
        changed = {k: v for k, v in changes.items() if k in AMENDABLE and getattr(self, k) != v}
        if not changed:
            raise DomainError("the amendment changes nothing", reason="empty_amendment",
                              details={"_schema": f"change at least one of {', '.join(AMENDABLE)}"})
        _check_text_fields({**self._current_text(), **changed})
        return [NewEvent("ProposalAmended", {"project_id": self.id, "revision": self.last_revision + 1,
                                             "changes": changed, "reason": reason})]

    def withdraw(self, actor: Principal, reason: str) -> list[NewEvent]:
        self._expect("withdraw", "withdraw the proposal")
        if actor.person_id != self.proposer_id:
            raise Forbidden("only the proposer may withdraw the proposal", reason="not_proposer")
        return [NewEvent("ProjectWithdrawn", {"project_id": self.id, "reason": reason})]

    def open_vote(self, actor: Principal, community, responsible_unit: dict[str, str] | None) -> list[NewEvent]:
        self._expect("open_vote", "open the council vote")
        require_member(actor, self.community_id, STAFF)
        if not community.representatives:
            raise Conflict(f"community {self.community_id} has no residents' representatives to vote",
                           reason="no_electorate")
        settings = community.settings
        data = {
            "project_id": self.id, "electorate": sorted(community.representatives),
            "electorate_size": len(community.representatives),
            "quorum_numerator": settings["quorum_numerator"], "quorum_denominator": settings["quorum_denominator"],
            "pass_numerator": settings["pass_numerator"], "pass_denominator": settings["pass_denominator"],
            "reserved_fen": self.round_reserved_fen or self.requested_fen, "opened_by": actor.person_id,
        }
        if self.round_reserved_fen:
            data["reserved_by_round"] = True  # the money is reserved already: the vote reserves nothing more
        if responsible_unit:
            data["responsible_unit"] = responsible_unit
        return [NewEvent("CouncilVoteOpened", data)]

    def cast_ballot(self, actor: Principal, choice: str) -> list[NewEvent]:
        self._expect("cast_ballot", "cast a ballot")
        # A ballot counts for the community of the token it comes with: a representative of this
        # community holding a token of another one is refused, like any member of another one.
        require_member(actor, self.community_id, ("representative",))
        if choice not in CHOICES:
            raise DomainError("choice must be yes, no or abstain", reason="invalid_choice",
                              details={"choice": f"one of {', '.join(CHOICES)}"})
        if actor.person_id not in self.vote["electorate"]:
            raise Forbidden("only the residents' representatives of the community when the vote opened "
                            "may vote", reason="not_in_electorate")
        if actor.person_id in self.vote["ballots"]:
            raise self._repeated("you have already cast your ballot in this vote", "already_voted")
        return [NewEvent("BallotCast", {"project_id": self.id, "person_id": actor.person_id, "choice": choice})]

    def close_vote(self, actor: Principal) -> list[NewEvent]:
        self._expect("close_vote", "close the council vote")
        require_member(actor, self.community_id, STAFF)
        tally = self.tally()
        events = [NewEvent("CouncilVoteClosed", {"project_id": self.id, "closed_by": actor.person_id, **tally})]
        if tally["result"] == "approved":
            events.append(NewEvent("ProjectApproved", {"project_id": self.id, "reserved_fen": self.vote["reserved_fen"]}))
        else:
            events.append(NewEvent("ProjectRejected", {"project_id": self.id, "reason": tally["reason"]}))
        return events

    def tally(self) -> dict[str, Any]:
        vote = self.vote
        ballots = list(vote["ballots"].values())
        yes, no, abstain = (ballots.count(c) for c in CHOICES)
        size = vote["electorate_size"]
        quorum_required = math.ceil(size * vote["quorum_numerator"] / vote["quorum_denominator"])
        quorum_met = len(ballots) >= quorum_required
        passed = yes * vote["pass_denominator"] > vote["pass_numerator"] * len(ballots)
        result, why = ("rejected", "quorum_not_met") if not quorum_met else \
            ("rejected", "not_passed") if not passed else ("approved", "passed")
        reason = TALLY_REASONS[why][1].format(
            ballots=len(ballots), electorate_size=size, quorum_required=quorum_required, yes=yes,
            pass_numerator=vote["pass_numerator"], pass_denominator=vote["pass_denominator"])
        return {"electorate_size": size, "ballots": len(ballots), "yes": yes, "no": no, "abstain": abstain,
                "quorum_required": quorum_required, "quorum_met": quorum_met, "result": result, "reason": reason}

    # -- participatory budgeting rounds (services/projects/rounds.py) ------------------------

    def enter_round(self, round_id: str) -> list[NewEvent]:
        """The proposal enters a round (the round's decision has checked that it qualifies)."""
        return [NewEvent("ProjectEnteredRound", {"project_id": self.id, "round_id": round_id,
                                                 "cost_fen": self.requested_fen})]

    def leave_round(self, round_id: str, winner: dict[str, Any] | None, confirmation: str) -> list[NewEvent]:
        """The round closed: a winner is funded with its cost (to 共建, or to the council's
        confirmation); any other proposal is in deliberation again."""
        if winner is None:
            return [NewEvent("ProjectLeftRound", {"project_id": self.id, "round_id": round_id})]
        return [NewEvent("ProjectFundedByRound", {
            "project_id": self.id, "round_id": round_id, "reserved_fen": winner["cost_fen"],
            "approvals": winner["approvals"], "confirmation": confirmation})]

    # -- 共建 co_build ----------------------------------------------------------------------

    def pledge(self, actor: Principal, pledge_id: str, pledge: dict[str, Any]) -> list[NewEvent]:
        self._expect("pledge", "pledge a contribution")
        require_member(actor, self.community_id, RESIDENTS + FIELD_STAFF)
        contributor = pledge.get("contributor")
        if contributor is None:
            contributor = {"contributor_id": actor.person_id, "name": actor.name, "type": "resident"}
        elif not actor.has_any(FIELD_STAFF) and contributor["contributor_id"] != actor.person_id:
            raise Forbidden("residents pledge for themselves; staff record pledges of enterprises and "
                            "social organisations", reason="pledge_for_other")
        kind = pledge["kind"]
        amounts = _contribution_amounts(kind, pledge, "pledge")
        return [NewEvent("ContributionPledged", {
            "project_id": self.id, "community_id": self.community_id, "pledge_id": pledge_id,
            "contributor_id": contributor["contributor_id"], "contributor_name": contributor["name"],
            "contributor_type": contributor["type"], "kind": kind, **amounts,
            "description": pledge.get("description", ""),
        })]

    def confirm_delivery(self, actor: Principal, pledge_id: str, delivery: dict[str, Any],
                         delivered_at: str) -> list[NewEvent]:
        self._expect("confirm_delivery", "confirm a delivery")
        require_member(actor, self.community_id, FIELD_STAFF)
        pledge = self.pledges.get(pledge_id)
        if pledge is None:
            raise DomainError(f"project {self.id} has no pledge {pledge_id}", reason="unknown_pledge",
                              details={"pledge_id": "unknown pledge"})
        amounts = _contribution_amounts(pledge["kind"], delivery, "delivery")
        return [NewEvent("ContributionDelivered", {
            "project_id": self.id, "project_title": self.title, "community_id": self.community_id,
            "pledge_id": pledge_id, "delivery_no": pledge["delivery_count"] + 1,
            "contributor_id": pledge["contributor_id"], "contributor_name": pledge["contributor_name"],
            "contributor_type": pledge["contributor_type"], "kind": pledge["kind"], **amounts,
            "delivered_at": delivered_at, "note": delivery.get("note", ""), "confirmed_by": actor.person_id,
        })]

    def record_spending(self, actor: Principal, spending_id: str, amount_fen: int, receipt_ref: str,
                        description: str) -> list[NewEvent]:
        self._expect("record_spending", "record spending")
        require_member(actor, self.community_id, STAFF)
        return [NewEvent("ProjectSpendingRecorded", {
            "project_id": self.id, "spending_id": spending_id, "amount_fen": amount_fen,
            "receipt_ref": receipt_ref, "description": description})]

    def record_milestone(self, actor: Principal, progress: int, note: str) -> list[NewEvent]:
        self._expect("record_milestone", "record a milestone")
        require_member(actor, self.community_id, FIELD_STAFF)
        if not 0 <= progress <= 100:
            raise DomainError("progress must be between 0 and 100", reason="invalid_progress",
                              details={"progress": "between 0 and 100"})
        if progress < self.progress:
            raise Conflict(f"progress cannot go back: it is {self.progress}, the milestone says {progress}",
                           reason="progress_backwards", details={"progress": self.progress})
        return [NewEvent("MilestoneRecorded", {"project_id": self.id, "progress": progress, "note": note})]

    def complete(self, actor: Principal) -> list[NewEvent]:
        self._expect("complete", "complete the project")
        require_member(actor, self.community_id, STAFF)
        if self.progress < 100:
            raise Conflict(f"the project can be completed only at progress 100 (it is {self.progress})",
                           reason="not_finished", details={"progress": self.progress})
        return [NewEvent("ProjectCompleted", {"project_id": self.id, "spent_fen": self.spent_fen})]

    # -- 共管 co_manage ---------------------------------------------------------------------

    def assign_maintainer(self, actor: Principal, maintainer: dict[str, Any]) -> list[NewEvent]:
        self._expect("assign_maintainer", "assign a maintainer")
        require_member(actor, self.community_id, FIELD_STAFF)
        if maintainer["maintainer_id"] in self.maintainers:
            raise self._repeated(f"{maintainer['maintainer_id']} already maintains this project",
                                 "already_maintainer")
        return [NewEvent("MaintainerAssigned", {
            "project_id": self.id, **{k: maintainer[k] for k in ("maintainer_id", "name", "kind", "duty", "rota")},
            "members": list(maintainer["members"])})]

    def log_maintenance(self, actor: Principal, log_id: str, note: str, performed_at: datetime) -> list[NewEvent]:
        self._expect("log_maintenance", "log maintenance")
        maintainer = self._maintainer_of(actor)
        if maintainer is None:
            require_member(actor, self.community_id, FIELD_STAFF)
        return [NewEvent("MaintenanceLogged", {
            "project_id": self.id, "log_id": log_id, "maintainer_id": maintainer, "logged_by": actor.person_id,
            "note": note, "performed_at": format_time(performed_at)})]

    def report_problem(self, actor: Principal, problem_id: str, description: str) -> list[NewEvent]:
        self._expect("report_problem", "report a problem")
        require_member(actor, self.community_id, RESIDENTS + FIELD_STAFF)
        return [NewEvent("ProblemReported", {"project_id": self.id, "problem_id": problem_id,
                                             "reported_by": actor.person_id, "description": description})]

    def resolve_problem(self, actor: Principal, problem_id: str, resolution: str, now: datetime) -> list[NewEvent]:
        self._expect("resolve_problem", "resolve a problem")
        if self._maintainer_of(actor) is None:
            require_member(actor, self.community_id, FIELD_STAFF)
        problem = self.problems.get(problem_id)
        if problem is None:
            raise DomainError(f"project {self.id} has no problem {problem_id}", reason="unknown_problem",
                              details={"problem_id": "unknown problem"})
        if problem["resolved"]:
            raise self._repeated(f"problem {problem_id} is already resolved", "already_resolved")
        seconds = max(0, int((now - parse_time(problem["reported_at"])).total_seconds()))
        return [NewEvent("ProblemResolved", {"project_id": self.id, "problem_id": problem_id,
                                             "resolved_by": actor.person_id, "resolution": resolution,
                                             "resolution_seconds": seconds})]

    def _maintainer_of(self, actor: Principal) -> str | None:
        for maintainer_id, members in self.maintainers.items():
            if maintainer_id == actor.person_id or actor.person_id in members:
                return maintainer_id
        return None

    # -- 共评 co_evaluate -------------------------------------------------------------------

    def open_evaluation(self, actor: Principal, responsible_unit: dict[str, str] | None) -> list[NewEvent]:
        self._expect("open_evaluation", "open the evaluation")
        require_member(actor, self.community_id, STAFF)
        unit = responsible_unit or self.responsible_unit
        if unit is None:
            raise DomainError("name the unit responsible for the project: its rating goes to that unit",
                              reason="responsible_unit_required",
                              details={"responsible_unit": "required (no unit was named when the vote opened)"})
        return [NewEvent("EvaluationOpened", {"project_id": self.id, "responsible_unit": unit,
                                              "opened_by": actor.person_id})]

    def rate(self, actor: Principal, score: int, comment: str) -> list[NewEvent]:
        self._expect("rate", "rate the project")
        require_member(actor, self.community_id, RESIDENTS)
        if not 1 <= score <= 5:
            raise DomainError("score must be 1 to 5", reason="invalid_score", details={"score": "1 to 5"})
        if actor.person_id in self.evaluation["ratings"]:
            raise self._repeated("you have already rated this project", "already_rated")
        return [NewEvent("ProjectRated", {
            "project_id": self.id, "project_title": self.title, "community_id": self.community_id,
            "responsible_unit": self.evaluation["responsible_unit"], "person_id": actor.person_id,
            "score": score, "comment": comment})]

    def close_evaluation(self, actor: Principal) -> list[NewEvent]:
        self._expect("close_evaluation", "close the evaluation")
        require_member(actor, self.community_id, STAFF)
        scores = list(self.evaluation["ratings"].values())
        average = round(sum(scores) / len(scores), 2) if scores else None
        return [NewEvent("EvaluationClosed", {"project_id": self.id, "count": len(scores), "average": average,
                                              "closed_by": actor.person_id})]

    # -- 共享 co_share ----------------------------------------------------------------------

    def publish_results(self, actor: Principal, benefits: str, volunteer_minutes: int | None) -> list[NewEvent]:
        self._expect("publish_results", "publish the results")
        require_member(actor, self.community_id, STAFF)
        totals = self.totals()
        return [NewEvent("ResultsPublished", {
            "project_id": self.id, "community_id": self.community_id, "benefits": benefits,
            "contributions": totals["delivered"], "by_contributor_type": totals["by_contributor_type"],
            "contributors": totals["contributors"], "spent_fen": self.spent_fen,
            "volunteer_minutes": totals["delivered"]["labour_minutes"] if volunteer_minutes is None else volunteer_minutes,
            "evaluation": {"count": self.evaluation["count"], "average": self.evaluation["average"]},
        })]

    def pay_reward(self, actor: Principal, recipient_id: str, amount_fen: int, reason: str) -> list[NewEvent]:
        self._expect("pay_reward", "pay a reward")
        require_member(actor, self.community_id, STAFF)
        names = {p["contributor_id"]: p["contributor_name"] for p in self.pledges.values()}
        if recipient_id not in names:
            raise DomainError(f"{recipient_id} did not contribute to this project", reason="not_a_contributor",
                              details={"recipient_id": "must be one of the project's contributors"})
        return [NewEvent("RewardGranted", {"project_id": self.id, "recipient_id": recipient_id,
                                           "recipient_name": names[recipient_id], "amount_fen": amount_fen,
                                           "reason": reason})]

    # -- derived figures --------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        """What was delivered (in all and per type of contributor), by how many contributors, and
        what was spent: the figures the results publish."""
        delivered, by_type = zero_amounts(), {t: zero_amounts() for t in CONTRIBUTOR_TYPES}
        for p in self.pledges.values():
            for target in (delivered, by_type[p["contributor_type"]]):
                for key, value in p["delivered"].items():
                    target[key] += value
        return {"delivered": delivered, "by_contributor_type": by_type,
                "contributors": len({p["contributor_id"] for p in self.pledges.values()}),
                "spent_fen": self.spent_fen}

    def _current_text(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in AMENDABLE}

    # -- evolution --------------------------------------------------------------------------

    def on_ProjectProposed(self, d, _event) -> None:
        for key in ("community_id", "grid_id", "title", "description", "category", "location",
                    "estimated_cost_fen", "requested_fen", "proposer_id", "proposer_name", "cosigners_required"):
            setattr(self, key, d[key])
        self.stage, self.phase = "co_plan", "collecting_cosigners"
        if self.cosigners_required == 0:
            self.phase = "deliberation"

    def on_ProjectCosigned(self, d, _event) -> None:
        self.cosigner_ids.append(d["person_id"])

    def on_ProjectQualified(self, d, _event) -> None:
        self.phase = "deliberation"

    def on_ProposalAmended(self, d, _event) -> None:
        for key, value in d["changes"].items():
            setattr(self, key, value)
        self.last_revision = d["revision"]

    def on_ProjectWithdrawn(self, d, _event) -> None:
        self.stage, self.phase = "withdrawn", "ended"

    def on_CouncilVoteOpened(self, d, _event) -> None:
        self.phase = "voting"
        self.vote = {k: d[k] for k in ("electorate", "electorate_size", "quorum_numerator", "quorum_denominator",
                                       "pass_numerator", "pass_denominator", "reserved_fen")}
        self.vote["ballots"] = {}
        if d.get("responsible_unit"):
            self.responsible_unit = d["responsible_unit"]

    def on_BallotCast(self, d, _event) -> None:
        self.vote["ballots"][d["person_id"]] = d["choice"]

    def on_ProjectApproved(self, d, _event) -> None:
        self.stage, self.phase = "co_build", "building"
        self.round_reserved_fen = 0

    def on_ProjectEnteredRound(self, d, _event) -> None:
        self.round_id = d["round_id"]

    def on_ProjectLeftRound(self, d, _event) -> None:
        self.round_id = None

    def on_ProjectFundedByRound(self, d, _event) -> None:
        self.round_id = None
        self.funded_by_round = d["round_id"]
        if d["confirmation"] == "council":
            self.round_reserved_fen = d["reserved_fen"]
        else:
            self.stage, self.phase = "co_build", "building"

    def on_ProjectRejected(self, d, _event) -> None:
        self.stage, self.phase = "rejected", "ended"
        self.round_reserved_fen = 0

    def on_ContributionPledged(self, d, _event) -> None:
        self.pledges[d["pledge_id"]] = {
            "contributor_id": d["contributor_id"], "contributor_name": d["contributor_name"],
            "contributor_type": d["contributor_type"], "kind": d["kind"], "delivered": zero_amounts(),
            "delivery_count": 0}

    def on_ContributionDelivered(self, d, _event) -> None:
        # Totals and a count, not the list of deliveries: the state is rewritten with every command,
        # and a busy project has hundreds of deliveries (each one is in the project's history).
        pledge = self.pledges[d["pledge_id"]]
        for key, value in amount_fields(d).items():
            pledge["delivered"][key] += value
        pledge["delivery_count"] = d["delivery_no"]

    def on_ProjectSpendingRecorded(self, d, _event) -> None:
        self.spent_fen += d["amount_fen"]

    def on_MilestoneRecorded(self, d, _event) -> None:
        self.progress = d["progress"]

    def on_ProjectCompleted(self, d, _event) -> None:
        self.stage, self.phase = "co_manage", "maintaining"

    def on_MaintainerAssigned(self, d, _event) -> None:
        self.maintainers[d["maintainer_id"]] = list(d["members"])

    def on_ProblemReported(self, d, event) -> None:
        self.problems[d["problem_id"]] = {"reported_at": _at(event), "resolved": False}

    def on_ProblemResolved(self, d, _event) -> None:
        self.problems[d["problem_id"]]["resolved"] = True

    def on_EvaluationOpened(self, d, _event) -> None:
        self.stage, self.phase = "co_evaluate", "evaluating"
        self.responsible_unit = d["responsible_unit"]
        self.evaluation = {"responsible_unit": d["responsible_unit"], "ratings": {}, "count": None, "average": None}

    def on_ProjectRated(self, d, _event) -> None:
        # Only the score: the state is rewritten with every command, the comment stays in the event.
        self.evaluation["ratings"][d["person_id"]] = d["score"]

    def on_EvaluationClosed(self, d, _event) -> None:
        self.stage, self.phase = "co_share", "results_pending"
        self.evaluation.update(count=d["count"], average=d["average"])

    def on_ResultsPublished(self, d, _event) -> None:
        self.phase = "published"


def _at(event) -> str:
    return format_time(event.occurred_at)


_AMOUNT_KEYS = {"labour": ("labour_minutes",), "skills": ("skills_minutes",), "money": ("money_fen",),
                "materials": ("materials_fen",)}


def zero_amounts() -> dict[str, int]:
    return {"labour_minutes": 0, "skills_minutes": 0, "money_fen": 0, "materials_fen": 0}


def amount_fields(data: Mapping[str, Any]) -> dict[str, int]:
    """The amounts (minutes, fen) an event of a pledge or a delivery carries."""
    return {k: data[k] for keys in _AMOUNT_KEYS.values() for k in keys if k in data}


def _member_of(*roles: str):
    """A probe of a decision whose only condition on the caller is their role (its other checks are
    about the arguments, which a page asks for): the same ``require_member`` it starts with."""
    return lambda p, a: require_member(a, p.community_id, roles)


def _maintainer_or(*roles: str):
    return lambda p, a: p._maintainer_of(a) is not None or require_member(a, p.community_id, roles)


# action -> a dry run of its decision for a caller, with arguments that are always valid: a refusal
# can only come from who the caller is or what they did already (Project.actions_for). Every action
# of allowed_actions has one (a unit test checks).
CALLER_PROBES: Mapping[str, Any] = {
    "cosign": lambda p, a: p.cosign(a),
    "post_opinion": lambda p, a: p.post_opinion(a, "probe", "neutral", "probe"),
    "amend": lambda p, a: p.withdraw(a, "probe"),  # the same rule: the proposer only
    "withdraw": lambda p, a: p.withdraw(a, "probe"),
    "open_vote": lambda p, a: require_member(a, p.community_id, STAFF),
    "cast_ballot": lambda p, a: p.cast_ballot(a, "abstain"),
    "close_vote": lambda p, a: p.close_vote(a),
    "pledge": lambda p, a: p.pledge(a, "probe", {"kind": "labour", "labour_minutes": 60}),
    "report_problem": lambda p, a: p.report_problem(a, "probe", "probe"),
    "rate": lambda p, a: p.rate(a, 3, ""),
    "confirm_delivery": _member_of(*FIELD_STAFF),
    "record_spending": _member_of(*STAFF),
    "record_milestone": _member_of(*FIELD_STAFF),
    "complete": _member_of(*STAFF),
    "assign_maintainer": _member_of(*FIELD_STAFF),
    "log_maintenance": _maintainer_or(*FIELD_STAFF),
    "resolve_problem": _maintainer_or(*FIELD_STAFF),
    "open_evaluation": _member_of(*STAFF),
    "close_evaluation": _member_of(*STAFF),
    "publish_results": _member_of(*STAFF),
    "pay_reward": _member_of(*STAFF),
}


def _contribution_amounts(kind: str, body: Mapping[str, Any], what: str) -> dict[str, int]:
    """The one amount that fits the kind (minutes for labour/skills, fen for money/materials)."""
    if kind not in CONTRIBUTION_KINDS:
        raise DomainError(f"unknown contribution kind {kind!r}", reason="invalid_kind",
                          details={"kind": f"one of {', '.join(CONTRIBUTION_KINDS)}"})
    (key,) = _AMOUNT_KEYS[kind]
    others = [k for keys in _AMOUNT_KEYS.values() for k in keys if k != key and body.get(k) is not None]
    errors = {k: f"does not apply to a {kind} {what}" for k in others}
    value = body.get(key)
    if value is None or value <= 0:
        errors[key] = f"a {kind} {what} needs a positive {key}"
    if kind == "materials" and what == "pledge" and not body.get("description"):
        errors["description"] = "describe the materials"
    if errors:
        raise DomainError(f"the {what} amounts do not fit its kind {kind}", reason="invalid_amounts",
                          details=errors)
    return {key: value}


def _check_text_fields(fields: Mapping[str, Any]) -> None:
    errors = {}
    if fields["category"] not in CATEGORIES:
        errors["category"] = f"one of {', '.join(CATEGORIES)}"
    if fields["requested_fen"] > fields["estimated_cost_fen"]:
        errors["requested_fen"] = "cannot exceed the estimated cost"
    if errors:
        raise DomainError("the proposal is not valid", reason="invalid_proposal", details=errors)
