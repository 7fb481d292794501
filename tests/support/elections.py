"""Generated participatory-budgeting elections for the budgeting rules' tests (issue 24), and a plain
reference of the Method of Equal Shares to check :mod:`services.projects.budgeting` against.

:func:`random_elections` is seeded (a ``random.Random``): small elections full of ties — few
proposals, small and repeated costs, proposals nobody approves, empty ballots, budgets from 0 to
more than the total — given in a shuffled order, so that the tie-break (lower cost, then the
earlier ``order``, not the position in the list) decides many of them.

:func:`reference_mes` is the rule as its definition reads: one money balance per voter, every
affordable proposal priced afresh each round with :class:`~fractions.Fraction`, no grouping and
no laziness — slow, and independent of the module's integer bookkeeping.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction

from services.projects.budgeting import Proposal

Election = tuple[int, list[Proposal], list[list[str]]]


def random_election(rng: random.Random, *, max_proposals: int = 8, max_voters: int = 25) -> Election:
    count = rng.randint(1, max_proposals)
    if rng.random() < 0.5:
        costs = [rng.randint(1, 6) for _ in range(count)]
    else:
        costs = [rng.choice((rng.randint(1, 5), rng.randint(1, 50) * 100)) for _ in range(count)]
    proposals = [Proposal(f"p{j}", cost, order=j) for j, cost in enumerate(costs)]
    rng.shuffle(proposals)
    budget = rng.randint(0, sum(costs) + 1) if rng.random() < 0.2 else rng.randint(min(costs), sum(costs))
    density = rng.random() if rng.random() < 0.2 else rng.uniform(0.2, 0.8)
    voters = 0 if rng.random() < 0.03 else rng.randint(1, max_voters)
    ballots = [[p.proposal_id for p in proposals if rng.random() < density] for _ in range(voters)]
    return budget, proposals, ballots


def random_elections(seed: int, count: int, **sizes) -> Iterator[Election]:
    rng = random.Random(seed)
    for _ in range(count):
        yield random_election(rng, **sizes)


def reference_mes(budget_fen: int, proposals: list[Proposal], ballots: list[list[str]]) -> list[str]:
    """The equal-shares winners (cost utilities; ties: lower cost, then earlier), completion excluded."""
    if not ballots:
        return []
    money = [Fraction(budget_fen, len(ballots))] * len(ballots)
    supporters = {p.proposal_id: [v for v, ballot in enumerate(ballots) if p.proposal_id in ballot] for p in proposals}
    left = [p for p in proposals if supporters[p.proposal_id]]
    winners = []
    while True:
        priced = []
        for p in left:
            paying = sorted(supporters[p.proposal_id], key=lambda v: money[v])
            if sum(money[v] for v in paying) < p.cost_fen:
                continue
            remaining, payers = Fraction(p.cost_fen), len(paying)
            for v in paying:  # the poorest pay all they hold while that is less than an equal split
                if money[v] * payers >= remaining:
                    break
                remaining -= money[v]
                payers -= 1
            payment = remaining / payers
            priced.append((payment / p.cost_fen, p.cost_fen, p.order, p, payment))
        if not priced:
            return winners
        _rho, _cost, _order, chosen, payment = min(priced, key=lambda item: item[:3])
        winners.append(chosen.proposal_id)
        left.remove(chosen)
        for v in supporters[chosen.proposal_id]:
            money[v] -= min(money[v], payment)


def reference_greedy(budget_fen: int, proposals: list[Proposal], ballots: list[list[str]],
                     funded: list[str] | None = None) -> list[str]:
    """Most approvals first (ties: lower cost, then earlier), each funded if it fits; after ``funded``."""
    approvals = {p.proposal_id: sum(p.proposal_id in ballot for ballot in ballots) for p in proposals}
    winners = list(funded or [])
    left = budget_fen - sum(p.cost_fen for p in proposals if p.proposal_id in winners)
    for p in sorted(proposals, key=lambda p: (-approvals[p.proposal_id], p.cost_fen, p.order)):
        if p.proposal_id not in winners and approvals[p.proposal_id] and p.cost_fen <= left:
            winners.append(p.proposal_id)
            left -= p.cost_fen
    return winners
