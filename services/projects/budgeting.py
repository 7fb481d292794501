"""Participatory budgeting rounds (issue 24): which proposals a round funds, and why — pure and exact.

A round has a budget in fen, proposals (each an integer cost in fen and its place in the order of
submission) and approval ballots (each voter approves a set of proposals; an empty ballot is a
voter who approved nothing). Two rules decide the winners:

``greedy`` (:func:`greedy`)
    Proposals are considered by number of approvals, most first; each is funded if its cost fits
    what is left of the budget, and skipped otherwise. This is the utilitarian greedy rule with
    *cost satisfaction* (a voter's satisfaction is the cost of the funded proposals they approve):
    a proposal's gain per fen is then its number of approvals — pabutools'
    ``greedy_utilitarian_welfare(..., sat_class=Cost_Sat)``. (With cardinality satisfaction the
    order would be approvals per fen instead; that is not this rule.)

``mes`` (:func:`mes`)
    The Method of Equal Shares with cost utilities (Peters & Skowron), completed by greedy on the
    leftover budget. Each voter gets an equal share of the budget (budget / number of voters,
    counting empty ballots). A proposal is affordable while its supporters' remaining money covers
    its cost; for an affordable proposal, ρ is the smallest price per fen of utility such that the
    supporters, each paying ``min(their money, ρ × cost)``, pay its cost exactly — with cost
    utilities a supporter's utility for a proposal is its cost, so ``ρ × cost`` is the most any
    supporter pays. Each round funds the affordable proposal of smallest ρ, its supporters pay,
    and the rounds stop when no proposal is affordable. Then **completion**: the proposals not yet
    funded are considered as :func:`greedy` considers them (most approvals first), each funded if it
    fits the budget left after the equal-shares rounds. This is pabutools'
    ``completion_by_rule_combination`` of ``method_of_equal_shares(sat_class=Cost_Sat)`` and
    ``greedy_utilitarian_welfare(sat_class=Cost_Sat)`` — not ``exhaustion_by_budget_increase``
    (the "add one" variant that raises the shares and reruns the rule), which this module does not
    implement.

Both rules break ties the same stated, reproducible way: **lower cost first, then the earlier
proposal** (smaller ``order``). A proposal nobody approved is never funded (pabutools would let
greedy fund it last if it fit; such a proposal changes nothing else in either rule).

Arithmetic is exact: costs and budgets are integers of fen; shares, payments, ρ and the money
supporters hold are exact rationals. Voters with the same ballot always hold the same money, so
the rule keeps one amount per distinct ballot (a group with a count), as an integer in units of a
common fraction of a fen that is refined whenever a payment needs it; ρ is computed lazily (it
never falls as money is spent, so the last value computed is a lower bound, and only proposals
whose bound could beat the best are priced again). 10,000 voters and 60 proposals take well under
a second (``python -m bench.budgeting``).

Every proposal gets an :class:`Explanation` (why it won or lost: the equal-shares round it won in
and what its supporters held and paid; for a proposal equal shares could not fund, what its
supporters held when the rounds ended — the last time the rule considered it — against its cost;
for greedy and the completion, the budget left when it was considered), rendered in Chinese and
English by :func:`explain`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from math import gcd
from operator import mul
from typing import Any

from services.kernel.model import DomainError

GREEDY = "greedy"
MES = "mes"
RULES = (GREEDY, MES)
TIE_BREAK = "lower_cost_then_earlier"
SATISFACTION = "cost"  # both rules: a voter's satisfaction is the cost of the funded proposals they approve
LANGUAGES = ("zh-CN", "en")

# stages a winner is funded in
STAGE_GREEDY = "greedy"
STAGE_MES = "mes"
STAGE_COMPLETION = "completion"

# why a proposal won or lost
WON_GREEDY = "won_greedy"            # greedy: it fit the budget left when it was considered
WON_MES = "won_mes"                  # equal shares: funded in round ``mes_round`` by its supporters
WON_COMPLETION = "won_completion"    # equal shares could not fund it; the greedy completion did
LOST_DID_NOT_FIT = "lost_did_not_fit"      # greedy: its cost exceeded the budget left
LOST_UNAFFORDABLE = "lost_unaffordable"    # equal shares could not fund it, nor did it fit the completion
LOST_NO_APPROVALS = "lost_no_approvals"    # nobody approved it
WINNING = (WON_GREEDY, WON_MES, WON_COMPLETION)
REASONS = WINNING + (LOST_DID_NOT_FIT, LOST_UNAFFORDABLE, LOST_NO_APPROVALS)


@dataclasses.dataclass(frozen=True)
class Proposal:
    """A proposal of a round: ``order`` is its place in the order of submission (lower = earlier)."""

    proposal_id: str
    cost_fen: int
    order: int


@dataclasses.dataclass(frozen=True)
class Winner:
    proposal_id: str
    cost_fen: int
    approvals: int
    stage: str  # STAGE_GREEDY, STAGE_MES or STAGE_COMPLETION


@dataclasses.dataclass(frozen=True)
class Explanation:
    """Why one proposal won or lost.

    ``rank`` is its place among the winners (1-based; None when it lost). Equal shares
    (``mes`` only): for a ``won_mes`` proposal, ``mes_round`` is the round it was funded in,
    ``supporters_money_fen`` what its supporters held then, ``max_payment_fen`` the most one of them
    paid and ``rho`` that price per fen of utility; for ``won_completion`` and ``lost_unaffordable``,
    ``mes_round`` is the number of equal-shares rounds (0: none) and ``supporters_money_fen`` what
    its supporters held when they ended (less than its cost). Greedy and the completion:
    ``budget_left_fen`` is the budget left when it was considered.
    """

    proposal_id: str
    cost_fen: int
    approvals: int
    reason: str
    rank: int | None = None
    mes_round: int | None = None
    supporters_money_fen: Fraction | None = None
    max_payment_fen: Fraction | None = None
    rho: Fraction | None = None
    budget_left_fen: int | None = None

    @property
    def won(self) -> bool:
        return self.reason in WINNING


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A round's result: the rule and its parameters, the winners in the order they were funded,
    and one explanation per proposal (in proposal order)."""

    rule: str
    budget_fen: int
    voters: int
    share_fen: Fraction | None  # mes: each voter's equal share of the budget
    completion: str | None      # mes: "greedy"
    winners: tuple[Winner, ...]
    explanations: tuple[Explanation, ...]
    satisfaction: str = SATISFACTION
    tie_break: str = TIE_BREAK

    @property
    def winner_ids(self) -> tuple[str, ...]:
        return tuple(w.proposal_id for w in self.winners)

    @property
    def spent_fen(self) -> int:
        return sum(w.cost_fen for w in self.winners)

    @property
    def leftover_fen(self) -> int:
        return self.budget_fen - self.spent_fen

    def explanation(self, proposal_id: str) -> Explanation:
        for item in self.explanations:
            if item.proposal_id == proposal_id:
                return item
        raise KeyError(proposal_id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (an event payload): fractions as exact strings such as ``"10/3"``."""
        return {
            "rule": self.rule,
            "parameters": {"budget_fen": self.budget_fen, "voters": self.voters,
                           "share_fen": _text(self.share_fen), "completion": self.completion,
                           "satisfaction": self.satisfaction, "tie_break": self.tie_break},
            "winners": [dataclasses.asdict(w) for w in self.winners],
            "spent_fen": self.spent_fen,
            "leftover_fen": self.leftover_fen,
            "explanations": [{key: _text(value) if isinstance(value, Fraction) else value
                              for key, value in dataclasses.asdict(e).items()} for e in self.explanations],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        parameters = data["parameters"]
        fractions = ("supporters_money_fen", "max_payment_fen", "rho")
        return cls(
            rule=data["rule"], budget_fen=parameters["budget_fen"], voters=parameters["voters"],
            share_fen=_fraction(parameters["share_fen"]), completion=parameters["completion"],
            satisfaction=parameters["satisfaction"], tie_break=parameters["tie_break"],
            winners=tuple(Winner(**w) for w in data["winners"]),
            explanations=tuple(Explanation(**{k: _fraction(v) if k in fractions else v for k, v in e.items()})
                               for e in data["explanations"]))


def _text(value: Fraction | None) -> str | None:
    return None if value is None else str(value)


def _fraction(value: str | None) -> Fraction | None:
    return None if value is None else Fraction(value)


# -- the rules ---------------------------------------------------------------------------------------

def tally(rule: str, budget_fen: int, proposals: Sequence[Proposal], ballots: Iterable[Iterable[str]]) -> Outcome:
    """The outcome of ``rule`` (``"greedy"`` or ``"mes"``)."""
    if rule == GREEDY:
        return greedy(budget_fen, proposals, ballots)
    if rule == MES:
        return mes(budget_fen, proposals, ballots)
    raise DomainError(f"unknown rule {rule!r}; the rules are {', '.join(RULES)}", reason="invalid_rule",
                      details={"rule": rule, "allowed": list(RULES)})


def greedy(budget_fen: int, proposals: Sequence[Proposal], ballots: Iterable[Iterable[str]]) -> Outcome:
    """Most approvals first, each funded if it fits what is left; ties: lower cost, then earlier."""
    election = _Election(budget_fen, proposals, ballots)
    reasons: dict[int, Explanation] = {}
    funded = _greedy_fill(election, range(len(election.proposals)), budget_fen, reasons,
                          won=WON_GREEDY, lost=LOST_DID_NOT_FIT)
    return election.outcome(GREEDY, None, None, [(i, STAGE_GREEDY) for i in funded], reasons)


def mes(budget_fen: int, proposals: Sequence[Proposal], ballots: Iterable[Iterable[str]]) -> Outcome:
    """The Method of Equal Shares with cost utilities, completed by greedy on the leftover budget."""
    election = _Election(budget_fen, proposals, ballots)
    reasons: dict[int, Explanation] = {}
    share = Fraction(budget_fen, election.voters) if election.voters else None
    rounds, unaffordable = _equal_shares(election) if election.voters else ([], {})
    left = budget_fen
    for i, k, money, payment, rho in rounds:
        reasons[i] = election.explain(i, WON_MES, mes_round=k, supporters_money_fen=money,
                                      max_payment_fen=payment, rho=rho)
        left -= election.proposals[i].cost_fen
    rest = [i for i in range(len(election.proposals)) if i not in reasons]
    completed = _greedy_fill(election, rest, left, reasons, won=WON_COMPLETION, lost=LOST_UNAFFORDABLE,
                             rounds=len(rounds), unaffordable=unaffordable)
    funded = [(i, STAGE_MES) for i, *_ in rounds] + [(i, STAGE_COMPLETION) for i in completed]
    return election.outcome(MES, share, GREEDY, funded, reasons)


def _greedy_fill(election: _Election, candidates: Iterable[int], left: int, reasons: dict[int, Explanation], *,
                 won: str, lost: str, rounds: int = 0, unaffordable: Mapping[int, Fraction] | None = None,
                 ) -> list[int]:
    """Greedy over ``candidates`` with ``left`` fen: the indices funded, in order; each candidate's
    explanation into ``reasons`` (with, after equal shares, what its supporters held when the
    ``rounds`` ended: ``unaffordable``)."""
    proposals, approvals = election.proposals, election.approvals
    funded = []
    for i in sorted(candidates, key=lambda i: (-approvals[i], proposals[i].cost_fen, i)):
        if approvals[i] == 0:
            reasons[i] = election.explain(i, LOST_NO_APPROVALS)
            continue
        fits = proposals[i].cost_fen <= left
        details = {} if unaffordable is None else {"mes_round": rounds, "supporters_money_fen": unaffordable[i]}
        reasons[i] = election.explain(i, won if fits else lost, budget_left_fen=left, **details)
        if fits:
            funded.append(i)
            left -= proposals[i].cost_fen
    return funded


Round = tuple[int, int, Fraction, Fraction, Fraction]  # index, round, supporters' money, max payment, ρ


def _equal_shares(election: _Election) -> tuple[list[Round], dict[int, Fraction]]:
    """The equal-shares rounds: ``[(index, round, supporters' money, max payment, ρ)]`` in the order
    funded, and ``{index: supporters' money}`` when the rounds ended, for every other approved proposal.

    Money is kept as integers in units of ``1 / scale`` fen, one amount per ballot group (each of
    its voters holds it); ``scale`` starts at the number of voters (a share is then ``budget_fen``
    units) and grows whenever a payment is not a whole number of units, every amount multiplied
    alike — exact, and cheaper than a fraction per voter.
    """
    costs = [p.cost_fen for p in election.proposals]
    counts = [count for _ballot, count in election.groups]
    money = [election.budget_fen] * len(counts)
    scale = election.voters
    groups_of: list[list[int]] = [[] for _ in costs]
    for g, (ballot, _count) in enumerate(election.groups):
        for i in ballot:
            groups_of[i].append(g)
    live = {i for i, count in enumerate(election.approvals) if count > 0}
    bound = {i: Fraction(1, election.approvals[i]) for i in live}  # ρ while every supporter can pay alike
    rounds: list[Round] = []
    while True:
        best: tuple[Fraction, int, int, int, int, int] | None = None
        for i in sorted(live, key=lambda i: (bound[i], costs[i], i)):
            if best is not None and bound[i] > best[0]:
                break  # ρ never falls as money is spent: no proposal from here on beats the best
            held = groups_of[i] = [g for g in groups_of[i] if money[g]]
            total = sum(map(mul, map(money.__getitem__, held), map(counts.__getitem__, held)))
            if total < costs[i] * scale:
                live.discard(i)  # unaffordable now, so for good
                continue
            remaining, payers = _price(held, money, counts, costs[i] * scale)
            bound[i] = rho = Fraction(remaining, payers * costs[i] * scale)
            if best is None or (rho, costs[i], i) < best[:3]:
                best = (rho, costs[i], i, remaining, payers, total)
        if best is None:
            break
        rho, _cost, chosen, remaining, payers, total = best
        live.discard(chosen)
        rounds.append((chosen, len(rounds) + 1, Fraction(total, scale), Fraction(remaining, payers * scale), rho))
        factor = payers // gcd(remaining, payers)
        if factor > 1:  # the payment in whole units of a finer scale
            scale *= factor
            money[:] = [m * factor for m in money]
        price = remaining * factor // payers
        for g in groups_of[chosen]:
            m = money[g]
            money[g] = m - price if m > price else 0
    won = {i for i, *_ in rounds}
    left = {i: Fraction(sum(money[g] * counts[g] for g in groups_of[i]), scale)
            for i, count in enumerate(election.approvals) if count > 0 and i not in won}
    return rounds, left


def _price(held: list[int], money: list[int], counts: list[int], cost: int) -> tuple[int, int]:
    """The most one supporter pays, as ``remaining / payers``, when the supporter groups ``held``
    pay ``cost``, each voter paying what they hold or that amount, whichever is less: the poorest
    pay all they hold and the rest share what remains equally."""
    payers = sum(map(counts.__getitem__, held))
    if min(map(money.__getitem__, held)) * payers >= cost:
        return cost, payers
    remaining = cost
    for g in sorted(held, key=money.__getitem__):
        if money[g] * payers >= remaining:
            return remaining, payers
        remaining -= money[g] * counts[g]
        payers -= counts[g]
    raise AssertionError("an affordable proposal's supporters hold its cost")  # pragma: no cover


# -- the election ------------------------------------------------------------------------------------

class _Election:
    """A round's inputs checked and indexed: proposals in order, approvals, ballots grouped."""

    def __init__(self, budget_fen: int, proposals: Sequence[Proposal], ballots: Iterable[Iterable[str]]):
        if not _whole(budget_fen) or budget_fen < 0:
            raise DomainError("the budget must be a whole number of fen, 0 or more", reason="invalid_budget",
                              details={"budget_fen": budget_fen})
        self.budget_fen = budget_fen
        self.proposals = sorted(proposals, key=_checked_order)
        ids = [p.proposal_id for p in self.proposals]
        orders = [p.order for p in self.proposals]
        if len(set(ids)) != len(ids) or len(set(orders)) != len(orders):
            raise DomainError("proposal ids and places in the order must be unique", reason="invalid_proposals")
        for p in self.proposals:
            if not isinstance(p.proposal_id, str) or not p.proposal_id or not _whole(p.cost_fen) or p.cost_fen <= 0:
                raise DomainError("each proposal needs an id and a cost of at least 1 fen",
                                  reason="invalid_proposals", details={"proposal_id": p.proposal_id})
        index = {pid: i for i, pid in enumerate(ids)}
        counted: Counter[frozenset[int]] = Counter()
        voters = 0
        for ballot in ballots:
            if isinstance(ballot, (str, bytes)):
                raise DomainError("a ballot is a set of proposal ids", reason="invalid_ballot")
            approved = set()
            for pid in ballot:
                if pid not in index:
                    raise DomainError(f"a ballot approves an unknown proposal {pid!r}", reason="unknown_proposal",
                                      details={"proposal_id": pid})
                approved.add(index[pid])
            voters += 1
            if approved:
                counted[frozenset(approved)] += 1
        self.voters = voters
        self.groups = [(tuple(sorted(ballot)), count) for ballot, count in counted.items()]
        self.approvals = [0] * len(self.proposals)
        for ballot, count in self.groups:
            for i in ballot:
                self.approvals[i] += count

    def explain(self, i: int, reason: str, **details: Any) -> Explanation:
        p = self.proposals[i]
        return Explanation(p.proposal_id, p.cost_fen, self.approvals[i], reason, **details)

    def outcome(self, rule: str, share: Fraction | None, completion: str | None, funded: list[tuple[int, str]],
                reasons: dict[int, Explanation]) -> Outcome:
        rank = {i: n for n, (i, _stage) in enumerate(funded, 1)}
        winners = tuple(Winner(self.proposals[i].proposal_id, self.proposals[i].cost_fen, self.approvals[i], stage)
                        for i, stage in funded)
        explanations = tuple(dataclasses.replace(reasons[i], rank=rank.get(i)) for i in range(len(self.proposals)))
        return Outcome(rule, self.budget_fen, self.voters, share, completion, winners, explanations)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_order(proposal: Proposal) -> int:
    if not isinstance(proposal, Proposal) or not _whole(proposal.order):
        raise DomainError("each proposal needs a whole-number place in the order", reason="invalid_proposals")
    return proposal.order


# -- explanations in words ---------------------------------------------------------------------------

def yuan(fen: int | Fraction, *, rounding: str = "down") -> str:
    """An amount in fen as yuan with two decimals (``123456`` -> ``"1,234.56"``); a fraction of a fen
    is rounded ``"down"`` (what a supporter holds: never shown as more than it is) or ``"up"`` (the
    most a supporter paid: never shown as less)."""
    whole = int(fen) if isinstance(fen, int) else (fen.numerator // fen.denominator if rounding == "down"
                                                   else -(-fen.numerator // fen.denominator))
    return f"{whole // 100:,}.{whole % 100:02d}"


def explain(explanation: Explanation, language: str = "zh-CN") -> str:
    """Why a proposal won or lost, in short sentences: ``language`` is ``"zh-CN"`` or ``"en"``."""
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, not {language!r}")
    e = explanation
    n, cost = e.approvals, yuan(e.cost_fen)
    held = None if e.supporters_money_fen is None else yuan(e.supporters_money_fen)
    left = None if e.budget_left_fen is None else yuan(e.budget_left_fen)
    zh = language == "zh-CN"
    if e.reason == LOST_NO_APPROVALS:
        return "未入选：没有人投赞成票。" if zh else "Not funded: no voter approved it."
    if e.reason == WON_GREEDY:
        return (f"入选：获 {n} 票赞成。轮到它时预算尚余 {left} 元，足以支付 {cost} 元的费用。" if zh else
                f"Funded: {n} approvals. When its turn came, {left} yuan of the budget was left, "
                f"enough for its cost of {cost} yuan.")
    if e.reason == LOST_DID_NOT_FIT:
        return (f"未入选：获 {n} 票赞成。轮到它时预算仅剩 {left} 元，不足以支付 {cost} 元的费用。" if zh else
                f"Not funded: {n} approvals. When its turn came, only {left} yuan of the budget was left, "
                f"less than its cost of {cost} yuan.")
    if e.reason == WON_MES:
        paid = yuan(e.max_payment_fen, rounding="up")
        return (f"在均等份额法第 {e.mes_round} 轮入选：{n} 位支持者尚余份额 {held} 元，足以支付 {cost} 元的费用。"
                f"每位支持者最多支付 {paid} 元。" if zh else
                f"Funded in round {e.mes_round} of the Method of Equal Shares: its {n} supporters had {held} yuan "
                f"of their shares left, enough for its cost of {cost} yuan. No supporter paid more than {paid} yuan.")
    rounds = e.mes_round
    when_zh = "一开始" if rounds == 0 else f"均等份额法 {rounds} 轮结束时"
    when_en = ("From the start" if rounds == 0 else
               f"When the Method of Equal Shares ended after {rounds} round{'s' if rounds > 1 else ''}")
    short_zh = f"{when_zh}，{n} 位支持者的份额仅余 {held} 元，不足以支付 {cost} 元的费用。"
    short_en = (f"{when_en}, its {n} supporters had only {held} yuan of their shares left, "
                f"less than its cost of {cost} yuan.")
    if e.reason == WON_COMPLETION:
        return (f"由贪心补足入选。{short_zh}补足时预算尚余 {left} 元，足以支付。" if zh else
                f"Funded by the greedy completion. {short_en} The completion had {left} yuan of the budget left, "
                f"enough to fund it.")
    if e.reason == LOST_UNAFFORDABLE:
        return (f"未入选。{short_zh}补足时预算仅剩 {left} 元，也不够。" if zh else
                f"Not funded. {short_en} The greedy completion then had only {left} yuan of the budget left, "
                f"not enough either.")
    raise ValueError(f"unknown reason {e.reason!r}")


def explanation_label(explanation: Explanation) -> dict[str, str]:
    """The explanation as a label ``{"zh": ..., "en": ...}``, as the read models carry labels."""
    return {"zh": explain(explanation, "zh-CN"), "en": explain(explanation, "en")}
