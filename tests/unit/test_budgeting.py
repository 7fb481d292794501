"""The voting rules of participatory budgeting rounds (issue 24), without a database or HTTP:
greedy by approvals and the Method of Equal Shares with cost utilities completed by greedy
(:mod:`services.projects.budgeting`).

The literature's small examples where the two differ (a majority bloc takes the whole budget under
greedy, equal shares splits it in proportion), the tie-break (lower cost, then earlier), the
explanations and their words, and properties over generated elections: the budget is never
exceeded, winners are unique and approved, greedy leaves nothing that fits, and the outcomes equal
a plain per-voter reference (tests/support/elections.py). The comparison with pabutools is in
test_budgeting_oracle.py.
"""

from __future__ import annotations

import ast
import json
import random
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from services.kernel.model import DomainError
from services.projects.budgeting import (
    GREEDY,
    LOST_DID_NOT_FIT,
    LOST_NO_APPROVALS,
    LOST_UNAFFORDABLE,
    REASONS,
    RULES,
    WON_COMPLETION,
    WON_GREEDY,
    WON_MES,
    Outcome,
    Proposal,
    explain,
    explanation_label,
    greedy,
    mes,
    tally,
    yuan,
)
from tests.support.elections import random_elections, reference_greedy, reference_mes

ROOT = Path(__file__).resolve().parents[2]
WAN = 100_000  # 1,000.00 yuan in fen


def bloc_election(per_side: int, budget_fen: int):
    """10 voters: 6 approve A1..An, 4 approve B1..Bn; every proposal costs the same."""
    proposals = ([Proposal(f"A{i}", WAN, order=i) for i in range(1, per_side + 1)]
                 + [Proposal(f"B{i}", WAN, order=per_side + i) for i in range(1, per_side + 1)])
    a = [f"A{i}" for i in range(1, per_side + 1)]
    b = [f"B{i}" for i in range(1, per_side + 1)]
    return budget_fen, proposals, [a] * 6 + [b] * 4


# -- the literature's examples: a majority bloc under greedy, a proportional split under MES --------

def test_greedy_lets_a_majority_bloc_take_the_whole_budget():
    outcome = greedy(*bloc_election(3, 3 * WAN))
    assert outcome.winner_ids == ("A1", "A2", "A3")
    assert [(w.cost_fen, w.approvals, w.stage) for w in outcome.winners] == [(WAN, 6, "greedy")] * 3
    assert outcome.spent_fen == 3 * WAN and outcome.leftover_fen == 0
    b1 = outcome.explanation("B1")
    assert (b1.reason, b1.budget_left_fen, b1.rank) == (LOST_DID_NOT_FIT, 0, None)


def test_equal_shares_gives_the_minority_its_share_and_greedy_completes():
    """Shares of 300 yuan: the six A voters fund A1 (166.67 each) and can no longer fund a second
    A alone; the four B voters fund B1 (250 each); the completion gives the 1,000 yuan left to A2."""
    outcome = mes(*bloc_election(3, 3 * WAN))
    assert outcome.winner_ids == ("A1", "B1", "A2")
    assert [w.stage for w in outcome.winners] == ["mes", "mes", "completion"]
    assert outcome.share_fen == 30_000 and outcome.completion == GREEDY and outcome.voters == 10
    a1, b1, a2, a3, b2 = (outcome.explanation(p) for p in ("A1", "B1", "A2", "A3", "B2"))
    assert (a1.reason, a1.mes_round, a1.rho, a1.max_payment_fen, a1.supporters_money_fen, a1.rank) == (
        WON_MES, 1, Fraction(1, 6), Fraction(WAN, 6), 180_000, 1)
    assert (b1.reason, b1.mes_round, b1.rho, b1.max_payment_fen, b1.supporters_money_fen, b1.rank) == (
        WON_MES, 2, Fraction(1, 4), 25_000, 120_000, 2)
    assert (a2.reason, a2.mes_round, a2.supporters_money_fen, a2.budget_left_fen, a2.rank) == (
        WON_COMPLETION, 2, 80_000, WAN, 3)
    assert (a3.reason, a3.supporters_money_fen, a3.budget_left_fen) == (LOST_UNAFFORDABLE, 80_000, 0)
    assert (b2.reason, b2.supporters_money_fen, b2.budget_left_fen) == (LOST_UNAFFORDABLE, 20_000, 0)


def test_equal_shares_splits_the_budget_in_proportion_when_each_side_can_pay():
    """Ten projects a side and a budget for ten: greedy funds ten A, equal shares six A and four B."""
    election = bloc_election(10, 10 * WAN)
    assert greedy(*election).winner_ids == tuple(f"A{i}" for i in range(1, 11))
    outcome = mes(*election)
    assert outcome.winner_ids == ("A1", "A2", "A3", "A4", "A5", "A6", "B1", "B2", "B3", "B4")
    assert {w.stage for w in outcome.winners} == {"mes"}
    assert outcome.leftover_fen == 0
    assert [e.rho for e in outcome.explanations if e.won] == [Fraction(1, 6)] * 6 + [Fraction(1, 4)] * 4


def test_cost_utilities_prefer_the_wider_support_whatever_the_cost():
    """ρ is a price per fen of utility: the proposal all four approve goes first though it costs more."""
    proposals = [Proposal("small", 100, order=0), Proposal("big", 300, order=1)]
    outcome = mes(400, proposals, [["small", "big"], ["big"], ["big"], ["small", "big"]])
    assert outcome.winner_ids == ("big", "small")
    assert outcome.explanation("big").rho == Fraction(1, 4)


# -- the tie-break: lower cost first, then the earlier proposal ----------------------------------

def test_greedy_breaks_equal_approvals_by_lower_cost():
    proposals = [Proposal("X", 500, order=0), Proposal("Y", 400, order=1)]
    outcome = greedy(500, proposals, [["X", "Y"]] * 3)
    assert outcome.winner_ids == ("Y",)
    assert (outcome.explanation("X").reason, outcome.explanation("X").budget_left_fen) == (LOST_DID_NOT_FIT, 100)


def test_greedy_breaks_equal_approvals_and_cost_by_the_earlier_proposal_not_the_list_position():
    proposals = [Proposal("X", 400, order=1), Proposal("Y", 400, order=0)]
    assert greedy(400, proposals, [["X", "Y"]] * 3).winner_ids == ("Y",)
    assert [e.proposal_id for e in greedy(400, proposals, []).explanations] == ["Y", "X"]  # in proposal order


def test_equal_shares_breaks_an_equal_price_by_lower_cost():
    """Everyone approves both, so both cost everyone ¼ of their utility: the cheaper goes first, and
    what is left (50 each) can no longer pay for the other."""
    proposals = [Proposal("X", 600, order=0), Proposal("Y", 400, order=1)]
    outcome = mes(600, proposals, [["X", "Y"]] * 4)
    assert outcome.winner_ids == ("Y",)
    x = outcome.explanation("X")
    assert (x.reason, x.supporters_money_fen, x.budget_left_fen) == (LOST_UNAFFORDABLE, 200, 200)


def test_equal_shares_prices_a_tie_again_though_an_earlier_price_was_lower():
    """ρ is priced lazily from the last price known; a proposal whose stale price ties the best must
    still be priced. 14 voters, shares of 100: Z (6 supporters, 600) goes first and takes v5's
    share, so P1's price rises from 1/5 to 1/4 — P2's price all along, and P2 is cheaper."""
    proposals = [Proposal("P1", 400, order=0), Proposal("P2", 300, order=1), Proposal("Z", 600, order=2)]
    ballots = [["P1"]] * 4 + [["P1", "Z"]] + [["P2"]] * 4 + [["Z"]] * 5
    outcome = mes(1_400, proposals, ballots)
    assert outcome.winner_ids == ("Z", "P2", "P1")
    assert [outcome.explanation(p).rho for p in outcome.winner_ids] == [Fraction(1, 6), Fraction(1, 4), Fraction(1, 4)]
    assert reference_mes(1_400, proposals, ballots) == ["Z", "P2", "P1"]


def test_equal_shares_breaks_an_equal_price_and_cost_by_the_earlier_proposal():
    proposals = [Proposal("X", 300, order=1), Proposal("Y", 300, order=0)]
    assert mes(300, proposals, [["X", "Y"]] * 3).winner_ids == ("Y",)


# -- edges -------------------------------------------------------------------------------------------

def test_empty_ballots_count_in_the_shares():
    """Two of four voters approve A: their shares (2 × 2.5 fen) cannot pay 10 fen; the completion does."""
    proposals = [Proposal("A", 10, order=0)]
    outcome = mes(10, proposals, [["A"], ["A"], [], []])
    assert outcome.share_fen == Fraction(5, 2) and outcome.winner_ids == ("A",)
    a = outcome.explanation("A")
    assert (a.reason, a.mes_round, a.supporters_money_fen, a.budget_left_fen) == (WON_COMPLETION, 0, 5, 10)
    assert explain(a, "en").startswith("Funded by the greedy completion. From the start, its 2 supporters")
    assert "一开始" in explain(a, "zh-CN")


@pytest.mark.parametrize("rule", RULES)
def test_no_voters_or_no_budget_funds_nothing(rule):
    proposals = [Proposal("A", 10, order=0), Proposal("B", 20, order=1)]
    nobody = tally(rule, 100, proposals, [])
    assert nobody.winners == () and {e.reason for e in nobody.explanations} == {LOST_NO_APPROVALS}
    assert nobody.voters == 0
    broke = tally(rule, 0, proposals, [["A", "B"]] * 3)
    assert broke.winners == () and broke.leftover_fen == 0


@pytest.mark.parametrize("rule", RULES)
def test_a_proposal_nobody_approved_is_never_funded(rule):
    proposals = [Proposal("liked", 10, order=0), Proposal("ignored", 1, order=1)]
    outcome = tally(rule, 1_000, proposals, [["liked"]] * 2)
    assert outcome.winner_ids == ("liked",)
    assert outcome.explanation("ignored").reason == LOST_NO_APPROVALS


@pytest.mark.parametrize(("budget", "proposals", "ballots", "reason"), [
    (-1, [Proposal("A", 1, 0)], [], "invalid_budget"),
    (1.5, [Proposal("A", 1, 0)], [], "invalid_budget"),
    (10, [Proposal("A", 1, 0), Proposal("A", 2, 1)], [], "invalid_proposals"),
    (10, [Proposal("A", 1, 0), Proposal("B", 2, 0)], [], "invalid_proposals"),
    (10, [Proposal("A", 0, 0)], [], "invalid_proposals"),
    (10, [Proposal("", 1, 0)], [], "invalid_proposals"),
    (10, [Proposal("A", 1, "first")], [], "invalid_proposals"),
    (10, [Proposal("A", 1, 0)], [["B"]], "unknown_proposal"),
    (10, [Proposal("A", 1, 0)], ["A"], "invalid_ballot"),
])
def test_invalid_rounds_are_refused_with_a_reason(budget, proposals, ballots, reason):
    for rule in RULES:
        with pytest.raises(DomainError) as refused:
            tally(rule, budget, proposals, ballots)
        assert refused.value.reason == reason


def test_an_unknown_rule_is_refused():
    with pytest.raises(DomainError) as refused:
        tally("borda", 10, [Proposal("A", 1, 0)], [])
    assert refused.value.reason == "invalid_rule" and refused.value.details["allowed"] == ["greedy", "mes"]


# -- explanations ------------------------------------------------------------------------------------

def test_amounts_are_yuan_with_two_decimals_rounded_the_safe_way():
    assert yuan(0) == "0.00" and yuan(5) == "0.05" and yuan(123_456_789) == "1,234,567.89"
    assert yuan(Fraction(WAN, 6)) == "166.66"  # what someone holds: never more than it is
    assert yuan(Fraction(WAN, 6), rounding="up") == "166.67"  # the most someone paid: never less


def test_the_explanations_of_the_bloc_example_in_both_languages():
    outcome = mes(*bloc_election(3, 3 * WAN))
    words = {e.proposal_id: explanation_label(e) for e in outcome.explanations}
    assert words["A1"] == {
        "zh": "在均等份额法第 1 轮入选：6 位支持者尚余份额 1,800.00 元，足以支付 1,000.00 元的费用。每位支持者最多支付 166.67 元。",
        "en": "Funded in round 1 of the Method of Equal Shares: its 6 supporters had 1,800.00 yuan of their shares "
              "left, enough for its cost of 1,000.00 yuan. No supporter paid more than 166.67 yuan."}
    assert words["A2"]["en"] == (
        "Funded by the greedy completion. When the Method of Equal Shares ended after 2 rounds, its 6 supporters "
        "had only 800.00 yuan of their shares left, less than its cost of 1,000.00 yuan. The completion had "
        "1,000.00 yuan of the budget left, enough to fund it.")
    assert words["A2"]["zh"] == ("由贪心补足入选。均等份额法 2 轮结束时，6 位支持者的份额仅余 800.00 元，不足以支付 "
                                 "1,000.00 元的费用。补足时预算尚余 1,000.00 元，足以支付。")
    assert words["B2"]["zh"] == ("未入选。均等份额法 2 轮结束时，4 位支持者的份额仅余 200.00 元，不足以支付 "
                                 "1,000.00 元的费用。补足时预算仅剩 0.00 元，也不够。")
    greedy_words = explanation_label(greedy(*bloc_election(3, 3 * WAN)).explanation("B1"))
    assert greedy_words == {
        "zh": "未入选：获 4 票赞成。轮到它时预算仅剩 0.00 元，不足以支付 1,000.00 元的费用。",
        "en": "Not funded: 4 approvals. When its turn came, only 0.00 yuan of the budget was left, less than its "
              "cost of 1,000.00 yuan."}


@pytest.mark.parametrize("rule", RULES)
def test_every_proposal_has_one_explanation_of_the_right_shape(rule):
    for election in random_elections(seed=2401, count=150):
        outcome = tally(rule, *election)
        budget, proposals, _ballots = election
        assert [e.proposal_id for e in outcome.explanations] == [p.proposal_id for p in
                                                                  sorted(proposals, key=lambda p: p.order)]
        assert [e.proposal_id for e in outcome.explanations if e.won] == sorted(
            outcome.winner_ids, key=lambda pid: next(p.order for p in proposals if p.proposal_id == pid))
        assert sorted(e.rank for e in outcome.explanations if e.won) == list(range(1, len(outcome.winners) + 1))
        for e in outcome.explanations:
            assert e.reason in REASONS
            assert (e.rank is not None) == e.won
            if e.won:
                assert outcome.winner_ids[e.rank - 1] == e.proposal_id
            if e.reason == WON_MES:
                assert e.supporters_money_fen >= e.cost_fen and e.max_payment_fen == e.rho * e.cost_fen
                assert e.max_payment_fen * e.approvals >= e.cost_fen
            if e.reason in (WON_COMPLETION, LOST_UNAFFORDABLE):
                assert e.supporters_money_fen < e.cost_fen and e.mes_round == sum(
                    w.stage == "mes" for w in outcome.winners)
            if e.reason in (WON_GREEDY, WON_COMPLETION):
                assert e.budget_left_fen >= e.cost_fen
            if e.reason in (LOST_DID_NOT_FIT, LOST_UNAFFORDABLE):
                assert e.budget_left_fen < e.cost_fen
            if e.reason == LOST_NO_APPROVALS:
                assert e.approvals == 0
            zh, en = explain(e, "zh-CN"), explain(e, "en")
            assert "元" in zh or e.reason == LOST_NO_APPROVALS
            assert "yuan" in en or e.reason == LOST_NO_APPROVALS
            assert en.isascii() and not zh.isascii()


def test_explain_refuses_an_unknown_language():
    with pytest.raises(ValueError):
        explain(greedy(*bloc_election(1, WAN)).explanations[0], "fr")


@pytest.mark.parametrize("rule", RULES)
def test_an_outcome_survives_a_json_round_trip(rule):
    for election in random_elections(seed=2402, count=40):
        outcome = tally(rule, *election)
        record = json.loads(json.dumps(outcome.to_dict()))
        assert Outcome.from_dict(record) == outcome
        assert record["parameters"]["tie_break"] == "lower_cost_then_earlier"
        assert record["parameters"]["satisfaction"] == "cost"
        assert record["spent_fen"] + record["leftover_fen"] == outcome.budget_fen


# -- properties over generated elections -------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_the_budget_is_never_exceeded_and_winners_are_unique_and_approved(rule):
    for budget, proposals, ballots in random_elections(seed=2403, count=400):
        outcome = tally(rule, budget, proposals, ballots)
        approved = {pid for ballot in ballots for pid in ballot}
        assert len(set(outcome.winner_ids)) == len(outcome.winner_ids)
        assert set(outcome.winner_ids) <= approved
        assert outcome.spent_fen <= budget
        cost = {p.proposal_id: p.cost_fen for p in proposals}
        # both end greedily: no approved proposal left out would still fit what is left
        assert all(cost[pid] > outcome.leftover_fen for pid in approved - set(outcome.winner_ids))


def test_greedy_equals_the_plain_reference():
    for election in random_elections(seed=2404, count=400):
        assert list(greedy(*election).winner_ids) == reference_greedy(*election)


def test_equal_shares_equals_the_plain_per_voter_reference_then_greedy():
    for election in random_elections(seed=2405, count=400):
        outcome = mes(*election)
        in_rounds = [w.proposal_id for w in outcome.winners if w.stage == "mes"]
        assert in_rounds == reference_mes(*election)
        assert list(outcome.winner_ids) == reference_greedy(*election, funded=in_rounds)


def test_equal_shares_on_larger_electorates_with_repeated_ballots_equals_the_reference():
    """Hundreds of voters on a few ballot shapes: the grouped, integer bookkeeping at work."""
    rng = random.Random(2406)
    for _ in range(25):
        proposals = [Proposal(f"p{j}", rng.randint(1, 40) * 1_000, order=j) for j in range(rng.randint(3, 12))]
        shapes = [[p.proposal_id for p in proposals if rng.random() < 0.4] for _ in range(rng.randint(1, 8))]
        ballots = [rng.choice(shapes) for _ in range(rng.randint(50, 400))]
        budget = rng.randint(1, sum(p.cost_fen for p in proposals))
        outcome = mes(budget, proposals, ballots)
        assert [w.proposal_id for w in outcome.winners if w.stage == "mes"] == reference_mes(budget, proposals, ballots)


@pytest.mark.parametrize("rule", RULES)
def test_outcomes_ignore_the_order_of_ballots_and_of_the_proposal_list_and_scale_with_the_electorate(rule):
    rng = random.Random(2407)
    for budget, proposals, ballots in random_elections(seed=2407, count=150):
        outcome = tally(rule, budget, proposals, ballots)
        shuffled_ballots = [list(reversed(b)) for b in rng.sample(ballots, len(ballots))]
        shuffled_proposals = rng.sample(proposals, len(proposals))
        assert tally(rule, budget, shuffled_proposals, shuffled_ballots).winner_ids == outcome.winner_ids
        assert tally(rule, budget, proposals, ballots * 3).winner_ids == outcome.winner_ids


# -- a pure domain -----------------------------------------------------------------------------------

def test_the_module_imports_only_the_standard_library_and_the_domain_kernel():
    path = ROOT / "services" / "projects" / "budgeting.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            imported.add(node.module)
    assert {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names} == {"services.kernel.model"}
