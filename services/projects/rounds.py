"""Participatory budgeting rounds (参与式预算轮次): a community splits a budget across many proposals.

Pure domain, no I/O. The rules that pick the winners are :mod:`services.projects.budgeting`.

A **round** (:class:`BudgetRound`, stream ``round-<id>``) is opened by a cadre of the community with
a budget in fen — reserved from the community fund in the same unit of work (409
``insufficient_fund`` otherwise) — the proposals that qualify (co-signed, in deliberation, not in
another round: each enters the round with its requested amount as its cost, and while it is in the
round it cannot be put to a council vote on its own), who may vote (``residents``: any resident or
representative holding a token of the community; ``representatives``: the community's list when the
round opens), optionally the size of the electorate the community states (turnout's denominator),
the most proposals one ballot may approve, the rule (``greedy`` or ``mes``) and when it closes.

**Ballots** are approval ballots, one per voter (:class:`RoundBallot`, stream
``roundballot-<round id>:<person id>``, so that a round of ten thousand voters does not rewrite one
ever-growing record): a voter may revise theirs until the round closes; the last one counts. They
are secret: the approvals are shown to the voter alone (the privacy policy's ``round_ballot`` kind);
the round and its results show counts only.

**Closing** (a cadre, or the periodic job ``python -m services.projects close-due-rounds`` once the
closing time has passed) tallies the last ballot of each voter by the round's rule and records one
``RoundClosed`` event: the rule, its parameters, the winners in order with their cost and support,
every proposal's explanation, the turnout, and the last log position of the ballots it counted
(``inputs_position``: ``GET /rounds/<id>/verification`` recounts the ballots in the log up to it and
says whether the outcome is identical). Each winner's amount moves from the round's reservation to
the project (``FundReservationTransferred``: reserved once, never twice), and the project goes to
共建 — or, when the community's settings say winners are confirmed by the council
(``round_winners_to_council`` = 1), stays in deliberation with its money already reserved until a
council vote confirms it (the vote then reserves nothing more; a rejection releases it). The rest of
the round's budget returns to the fund. Losing proposals leave the round and are in deliberation
again.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, ClassVar

from services.kernel.model import (
    Aggregate, Conflict, DomainError, Forbidden, NewEvent, Principal, format_time, parse_time, require_member,
    role_names,
)
from services.projects.budgeting import RULES, Outcome, Proposal, tally
from services.projects.community import ROUND_CONFIRMATION

STAFF = role_names("cadre", "admin")
RESIDENTS = role_names("resident", "representative")
ELECTORATES = ("residents", "representatives")
STATUSES = {"open": "投票中 open", "closed": "已结束 closed"}
MAX_PROPOSALS = 200
# who closed a round when the periodic job did
SYSTEM = "system"


@dataclasses.dataclass
class BudgetRound(Aggregate):
    stream_prefix: ClassVar[str] = "round"
    label: ClassVar[str] = "budgeting round"

    community_id: str = ""
    title: str = ""
    budget_fen: int = 0
    rule: str = ""
    # [{project_id, title, cost_fen, order}] in the order the proposals were submitted
    proposals: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    electorate: str = ""
    representatives: list[str] = dataclasses.field(default_factory=list)  # "representatives" rounds only
    electorate_size: int | None = None
    max_approvals: int = 0
    confirmation: str = "none"  # "none" or "council"
    opens_at: str = ""
    closes_at: str = ""
    status: str = ""
    outcome: dict[str, Any] | None = None  # the RoundClosed event's data

    def proposal_ids(self) -> list[str]:
        return [p["project_id"] for p in self.proposals]

    # -- decisions ------------------------------------------------------------------------

    def open(self, actor: Principal, community, projects: list, spec: dict[str, Any], now: datetime) -> list[NewEvent]:
        """``projects``: the proposals' :class:`~services.projects.domain.Project` states, in the order
        the cadre listed them; they enter the round in the order they were proposed."""
        if self.exists:
            raise Conflict(f"round {self.id} already exists", reason="already_exists")
        if not community.exists:
            raise DomainError(f"no community {spec['community_id']}", reason="unknown_community",
                              details={"community_id": "unknown community"})
        require_member(actor, community.id, STAFF)
        if spec["rule"] not in RULES:
            raise DomainError(f"unknown rule {spec['rule']!r}", reason="invalid_rule",
                              details={"rule": f"one of {', '.join(RULES)}"})
        if spec["electorate"] not in ELECTORATES:
            raise DomainError("the electorate is residents or representatives", reason="invalid_electorate",
                              details={"electorate": f"one of {', '.join(ELECTORATES)}"})
        closes_at = spec["closes_at"]
        if closes_at <= now:
            raise DomainError("the round must close in the future", reason="invalid_dates",
                              details={"closes_at": "must be later than now"})
        ids = [p.id for p in projects]
        if not ids or len(set(ids)) != len(ids):
            raise DomainError("list each proposal once, at least one", reason="invalid_proposals",
                              details={"project_ids": "one or more distinct project ids"})
        not_qualified = {}
        for project in projects:
            if project.community_id != community.id:
                not_qualified[project.id] = "belongs to another community"
            elif project.stage != "co_plan" or project.phase != "deliberation":
                not_qualified[project.id] = f"is not in deliberation (it is {project.stage}, {project.phase})"
            elif project.round_id:
                not_qualified[project.id] = f"is already in round {project.round_id}"
            elif project.round_reserved_fen:
                not_qualified[project.id] = "was funded by an earlier round and awaits its council vote"
        if not_qualified:
            raise Conflict("some proposals cannot enter the round: co-signed proposals in deliberation only",
                           reason="not_qualified", details={"project_ids": not_qualified})
        max_approvals = spec.get("max_approvals") or len(projects)
        if not 1 <= max_approvals <= len(projects):
            raise DomainError("a ballot may approve between 1 and the number of proposals",
                              reason="invalid_max_approvals",
                              details={"max_approvals": f"between 1 and {len(projects)}"})
        representatives = sorted(community.representatives) if spec["electorate"] == "representatives" else []
        if spec["electorate"] == "representatives" and not representatives:
            raise Conflict(f"community {community.id} has no residents' representatives to vote",
                           reason="no_electorate")
        size = len(representatives) if representatives else spec.get("electorate_size")
        ordered = sorted(projects, key=lambda p: (p.created_at or "", p.id))
        proposals = [{"project_id": p.id, "title": p.title, "cost_fen": p.requested_fen, "order": i}
                     for i, p in enumerate(ordered, start=1)]
        if any(p["cost_fen"] <= 0 for p in proposals):
            raise DomainError("every proposal in a round requests money from the fund", reason="invalid_proposals",
                              details={"project_ids": [p["project_id"] for p in proposals if p["cost_fen"] <= 0]})
        budget = spec["budget_fen"]
        if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
            raise DomainError("the budget must be a positive whole number of fen", reason="invalid_budget",
                              details={"budget_fen": "a positive integer (fen)"})
        confirmation = "council" if community.settings.get(ROUND_CONFIRMATION) else "none"
        return [NewEvent("RoundOpened", {
            "round_id": self.id, "community_id": community.id, "title": spec["title"], "budget_fen": budget,
            "rule": spec["rule"], "proposals": proposals, "electorate": spec["electorate"],
            "representatives": representatives, "electorate_size": size, "max_approvals": max_approvals,
            "confirmation": confirmation, "opens_at": format_time(now), "closes_at": format_time(closes_at),
            "opened_by": actor.person_id,
        })]

    def may_vote(self, actor: Principal) -> None:
        """The actor may cast (or revise) a ballot in this open round; raises otherwise."""
        if self.status != "open":
            raise Conflict(f"round {self.id} is closed", reason="round_closed")
        require_member(actor, self.community_id, RESIDENTS)
        if self.electorate == "representatives" and actor.person_id not in self.representatives:
            raise Forbidden("only the residents' representatives of the community when the round opened may vote",
                            reason="not_in_electorate")

    def close(self, actor: Principal | None, ballots: list[list[str]], inputs_position: int,
              now: datetime) -> list[NewEvent]:
        """Tally ``ballots`` (each voter's last one) by the round's rule. ``actor`` None: the periodic
        job, which closes a round only once its closing time has passed."""
        if self.status != "open":
            raise Conflict(f"round {self.id} is already closed", reason="round_closed")
        if actor is not None:
            require_member(actor, self.community_id, STAFF)
        elif now < parse_time(self.closes_at):
            raise Conflict(f"round {self.id} closes at {self.closes_at}", reason="round_not_due")
        outcome = self.tally(ballots)
        return [NewEvent("RoundClosed", {
            "round_id": self.id, "community_id": self.community_id,
            "closed_by": actor.person_id if actor is not None else SYSTEM,
            "ballots": len(ballots), "electorate_size": self.electorate_size,
            "inputs_position": inputs_position, **outcome.to_dict(),
        })]

    def tally(self, ballots: list[list[str]]) -> Outcome:
        proposals = [Proposal(p["project_id"], p["cost_fen"], p["order"]) for p in self.proposals]
        return tally(self.rule, self.budget_fen, proposals, ballots)

    def winners(self) -> list[dict[str, Any]]:
        return list(self.outcome["winners"]) if self.outcome else []

    # -- evolution ------------------------------------------------------------------------

    def on_RoundOpened(self, d, _event) -> None:
        for key in ("community_id", "title", "budget_fen", "rule", "electorate", "representatives",
                    "electorate_size", "max_approvals", "confirmation", "opens_at", "closes_at"):
            setattr(self, key, d[key])
        self.proposals = [dict(p) for p in d["proposals"]]
        self.status = "open"

    def on_RoundClosed(self, d, _event) -> None:
        self.status = "closed"
        self.outcome = dict(d)


@dataclasses.dataclass
class RoundBallot(Aggregate):
    """One voter's ballot in one round; the id is ``<round id>:<person id>``."""

    stream_prefix: ClassVar[str] = "roundballot"
    label: ClassVar[str] = "ballot"

    round_id: str = ""
    voter_id: str = ""
    approvals: list[str] = dataclasses.field(default_factory=list)

    @staticmethod
    def id_for(round_id: str, person_id: str) -> str:
        return f"{round_id}:{person_id}"

    def cast(self, actor: Principal, budget_round: BudgetRound, approvals: list[str]) -> list[NewEvent]:
        budget_round.may_vote(actor)
        known = set(budget_round.proposal_ids())
        if len(set(approvals)) != len(approvals):
            raise DomainError("approve each proposal once", reason="invalid_ballot",
                              details={"approvals": "duplicate project id"})
        unknown = [pid for pid in approvals if pid not in known]
        if unknown:
            raise DomainError("the ballot approves proposals that are not in this round", reason="unknown_proposal",
                              details={"approvals": unknown})
        if len(approvals) > budget_round.max_approvals:
            most = budget_round.max_approvals
            raise DomainError(f"a ballot may approve at most {most} proposals", reason="too_many_approvals",
                              details={"approvals": f"at most {most}"})
        ordered = [pid for pid in budget_round.proposal_ids() if pid in set(approvals)]
        if self.exists and ordered == self.approvals:
            return []
        return [NewEvent("RoundBallotCast", {"round_id": budget_round.id, "voter_id": actor.person_id,
                                             "approvals": ordered, "revision": self.version + 1})]

    def on_RoundBallotCast(self, d, _event) -> None:
        self.round_id, self.voter_id, self.approvals = d["round_id"], d["voter_id"], list(d["approvals"])


def latest_ballots(events) -> dict[str, list[str]]:
    """Each voter's last ballot of the round, from ``RoundBallotCast`` events in log order."""
    last: dict[str, list[str]] = {}
    for event in events:
        last[event.data["voter_id"]] = list(event.data["approvals"])
    return last
