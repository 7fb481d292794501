"""The budgeting rules against pabutools, the reference implementation of participatory-budgeting
rules (issue 24): our outcomes — the winners *in the order funded* — equal pabutools' on many
generated elections.

The mapping: greedy is ``greedy_utilitarian_welfare`` with ``Cost_Sat`` (the gain per fen of a
proposal is its number of approvals); ``mes`` is ``completion_by_rule_combination`` of
``method_of_equal_shares`` with ``Cost_Sat`` and that greedy; our tie-break is pabutools'
``TieBreakingRule`` on ``(cost, order)``. pabutools would let greedy fund a proposal nobody
approved (last, when it fits); we never do, so those are left out of its outcome before comparing
— they come after every approved proposal and change nothing else.

pabutools is a test oracle only (the ``dev`` extra): it pulls numpy, PuLP, gurobipy and gmpy2.
Importing it and running these rules does no I/O, so the comparison lives in the unit tier. When it
is not installed the tests skip, saying so — except under CI (``COCREATE_REQUIRE_ALL_TOOLS=1``),
where they fail.
"""

from __future__ import annotations

import os
import random

import pytest

from services.projects.budgeting import Proposal, greedy, mes
from tests.support.elections import random_elections

try:
    from pabutools.election import ApprovalBallot, ApprovalProfile, Cost_Sat, Instance, Project
    from pabutools.rules import completion_by_rule_combination, greedy_utilitarian_welfare, method_of_equal_shares
    from pabutools.tiebreaking import TieBreakingRule
except ImportError as error:  # pragma: no cover - the dev extra installs it
    MISSING = f"pabutools is not installed ({error}): pip install -e '.[dev]'"
else:
    MISSING = None


@pytest.fixture(autouse=True)
def oracle_installed():
    if MISSING:
        if os.environ.get("COCREATE_REQUIRE_ALL_TOOLS"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)


def oracle(rule: str, budget_fen: int, proposals: list[Proposal], ballots: list[list[str]],
           tie_key=lambda project, order: (project.cost, order)) -> list[str]:
    """pabutools' winners, in the order it funds them, of the same election."""
    instance = Instance(budget_limit=budget_fen)
    projects = {p.proposal_id: Project(p.proposal_id, p.cost_fen) for p in proposals}
    instance.update(projects.values())
    profile = ApprovalProfile([ApprovalBallot([projects[pid] for pid in ballot]) for ballot in ballots],
                              instance=instance)
    order = {p.proposal_id: p.order for p in proposals}
    ties = TieBreakingRule(lambda _instance, _profile, project: tie_key(project, order[project.name]))
    greedy_params = {"sat_class": Cost_Sat, "tie_breaking": ties}
    if rule == "greedy":
        outcome = greedy_utilitarian_welfare(instance, profile, **greedy_params)
    else:
        outcome = completion_by_rule_combination(
            instance, profile, [method_of_equal_shares, greedy_utilitarian_welfare],
            [{"sat_class": Cost_Sat, "tie_breaking": ties}, greedy_params])
    approved = {pid for ballot in ballots for pid in ballot}
    return [project.name for project in outcome if project.name in approved]


RULES = {"greedy": greedy, "mes": mes}


def disagreements(rule: str, elections) -> tuple[int, list]:
    count, differ = 0, []
    for election in elections:
        count += 1
        ours, theirs = list(RULES[rule](*election).winner_ids), oracle(rule, *election)
        if ours != theirs:
            differ.append((election, ours, theirs))
    return count, differ


@pytest.mark.parametrize("rule", ["greedy", "mes"])
def test_small_generated_elections_agree_with_pabutools(rule):
    count, differ = disagreements(rule, random_elections(seed=2410, count=400))
    assert count == 400
    assert differ == [], f"{len(differ)} of {count} differ; the first: {differ[0]}"


@pytest.mark.parametrize("rule", ["greedy", "mes"])
def test_larger_electorates_agree_with_pabutools(rule):
    rng = random.Random(2411)
    elections = []
    for _ in range(20):
        proposals = [Proposal(f"p{j}", rng.randint(1, 40) * 1_000, order=j) for j in range(rng.randint(4, 15))]
        rng.shuffle(proposals)
        shapes = [[p.proposal_id for p in proposals if rng.random() < rng.uniform(0.1, 0.6)]
                  for _ in range(rng.randint(2, 30))]
        ballots = [rng.choice(shapes) for _ in range(rng.randint(50, 300))]
        elections.append((rng.randint(1, sum(p.cost_fen for p in proposals)), proposals, ballots))
    count, differ = disagreements(rule, elections)
    assert differ == [], f"{len(differ)} of {count} differ; the first: {differ[0]}"


def test_the_bloc_example_agrees_with_pabutools():
    proposals = [Proposal(f"{side}{i}", 100_000, order=n) for n, (side, i) in
                 enumerate((s, i) for s in "AB" for i in (1, 2, 3))]
    ballots = [["A1", "A2", "A3"]] * 6 + [["B1", "B2", "B3"]] * 4
    assert oracle("greedy", 300_000, proposals, ballots) == ["A1", "A2", "A3"]
    assert oracle("mes", 300_000, proposals, ballots) == ["A1", "B1", "A2"]
    assert list(mes(300_000, proposals, ballots).winner_ids) == ["A1", "B1", "A2"]


def test_the_generated_elections_are_decided_by_the_tie_break_often_enough_to_test_it():
    """Had we broken ties another way (dearer first), pabutools would differ on many of them: the
    agreement above is not blind to the tie-break."""
    dearer_first = 0
    for election in random_elections(seed=2410, count=200):
        for rule in ("greedy", "mes"):
            dearer = oracle(rule, *election, tie_key=lambda project, order: (-project.cost, order))
            dearer_first += dearer != oracle(rule, *election)
    assert dearer_first >= 40


@pytest.mark.parametrize("shape", ["popular", "blocs", "dense"])
def test_the_benchmark_elections_agree_with_pabutools_at_2000_voters(shape):
    """The bench's elections (60 proposals; bench/budgeting.py) at a fifth of their electorate."""
    from bench.budgeting import election

    budget, proposals, ballots = election(shape, voters=2_000)
    assert list(mes(budget, proposals, ballots).winner_ids) == oracle("mes", budget, proposals, ballots)
    assert list(greedy(budget, proposals, ballots).winner_ids) == oracle("greedy", budget, proposals, ballots)
