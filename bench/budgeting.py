"""Participatory budgeting at scale (issue 24): a round of 10,000 voters and 60 proposals tallied by
the Method of Equal Shares with greedy completion (:func:`services.projects.budgeting.mes`), and by
greedy for reference — the domain function alone, in process, exact fractions.

The elections are generated (seeded): proposal costs 5,000–200,000 yuan, a budget of a third of
their total, and ballots of three shapes — ``popular`` (each proposal has its own popularity,
2–40 %, and each voter approves independently: ballots of about 12), ``blocs`` (four groups of
voters with different favourites, plus noise) and ``dense`` (every voter approves each proposal
with probability ½: about 30 approvals each, almost every ballot distinct — the worst case for
grouping voters). The target is the slowest shape.

The last row is the whole close of a round in the projects service (SQLite, its message bus in
process): a round of 60 proposals whose 10,000 voters cast their ballots (``popular`` shape) as
commands, then ``CloseRound`` timed — reading the ballots, the tally, recording the outcome, the
fund's transfers and release and every proposal's next step in one transaction.

    python -m bench.budgeting [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from services.projects.budgeting import Proposal, greedy, mes

SECRET = "bench-secret-0123456789abcdef0123456789"

VOTERS, PROPOSALS = 10_000, 60
TARGET_S = 5.0


def election(shape: str, voters: int = VOTERS, proposals: int = PROPOSALS, seed: int = 24):
    rng = random.Random(f"{shape}-{seed}")
    props = [Proposal(f"p{j:02d}", rng.randint(500_000, 20_000_000), j) for j in range(proposals)]
    ids = [p.proposal_id for p in props]
    budget = sum(p.cost_fen for p in props) // 3
    if shape == "popular":
        popularity = [rng.uniform(0.02, 0.40) for _ in ids]
        ballots = [[pid for pid, q in zip(ids, popularity) if rng.random() < q] for _ in range(voters)]
    elif shape == "blocs":
        favourites = [set(rng.sample(ids, 12)) for _ in range(4)]
        sizes = [0.4, 0.3, 0.2, 0.1]
        ballots = []
        for _ in range(voters):
            liked = rng.choices(favourites, sizes)[0]
            ballots.append([pid for pid in ids if rng.random() < (0.7 if pid in liked else 0.05)])
    elif shape == "dense":
        ballots = [[pid for pid in ids if rng.random() < 0.5] for _ in range(voters)]
    else:
        raise ValueError(shape)
    return budget, props, ballots


def timed(rule, budget, props, ballots) -> tuple[float, object]:
    started = time.perf_counter()
    outcome = rule(budget, props, ballots)
    return time.perf_counter() - started, outcome


def run(_workdir: Path | None = None, quick: bool = False) -> list[dict]:
    voters = 2_000 if quick else VOTERS
    rows = []
    for shape in ("popular", "blocs", "dense"):
        budget, props, ballots = election(shape, voters)
        mes_s, outcome = timed(mes, budget, props, ballots)
        greedy_s, _ = timed(greedy, budget, props, ballots)
        rounds = sum(1 for w in outcome.winners if w.stage == "mes")
        rows.append({
            "measure": f"budgeting: MES + greedy completion, {voters:,} voters × {PROPOSALS} proposals ({shape})",
            "unit": "s", "ours": mes_s, "anchors": {},
            "extra": {"greedy (s)": round(greedy_s, 3), "MES rounds": rounds, "winners": len(outcome.winners),
                      "distinct ballots": len({frozenset(b) for b in ballots})},
            "targets": [{"what": f"< {TARGET_S:g} s", "met": mes_s < TARGET_S}]})
    if _workdir is not None:
        rows.append(close_in_service(_workdir, voters))
    return rows


def close_in_service(workdir: Path, voters: int) -> dict:
    """Time ``CloseRound`` of a round of ``PROPOSALS`` proposals and ``voters`` ballots (SQLite)."""
    from datetime import datetime, timedelta, timezone

    from services.kernel.events import Metadata
    from services.kernel.model import Principal
    from services.kernel.service import bootstrap, load_settings
    from services.projects import commands as c
    from services.projects.service import DEFINITION

    settings = load_settings(DEFINITION, environ={"COCREATE_JWT_SECRET": SECRET},
                             database_url=f"sqlite:///{workdir}/budgeting-round.db")
    bus = bootstrap(DEFINITION, settings).bus
    admin = Principal("admin", "admin", frozenset({"admin"}), None)
    cadre = Principal("cadre", "cadre", frozenset({"cadre"}), "bench")
    meta = Metadata(actor="bench")

    def send(command, actor):
        return bus.handle(command, actor=actor, metadata=meta).result

    send(c.RegisterCommunity(community_id="bench", name="bench", grids=({"grid_id": "g1", "name": "g1"},),
                             settings={"cosigners_required": 0}), admin)
    budget, props, ballots = election("popular", voters)
    send(c.CreditFund(community_id="bench", amount_fen=budget, source="government_allocation"), cadre)
    proposer = Principal("p0", "p0", frozenset({"resident"}), "bench")
    ids = {}
    for p in props:
        ids[p.proposal_id] = send(c.ProposeProject(community_id="bench", grid_id="g1", title=p.proposal_id,
                                                   description="bench", category="other",
                                                   estimated_cost_fen=p.cost_fen, requested_fen=p.cost_fen),
                                  proposer).id
    closes = datetime.now(timezone.utc) + timedelta(days=1)
    round_id = send(c.OpenRound(community_id="bench", title="bench", budget_fen=budget, rule="mes",
                                project_ids=list(ids.values()), closes_at=closes), cadre).id
    started = time.perf_counter()
    for i, ballot in enumerate(ballots):
        voter = Principal(f"v{i}", f"v{i}", frozenset({"resident"}), "bench")
        send(c.CastRoundBallot(round_id=round_id, approvals=[ids[pid] for pid in ballot]), voter)
    casting = time.perf_counter() - started
    started = time.perf_counter()
    closed = send(c.CloseRound(round_id=round_id), cadre)
    seconds = time.perf_counter() - started
    return {"measure": f"budgeting: a round closed in the projects service, {voters:,} ballots × {PROPOSALS} "
                       "proposals (MES, SQLite)", "unit": "s", "ours": seconds, "anchors": {},
            "extra": {"ballots cast (per s)": round(voters / casting), "winners": len(closed.winners())},
            "targets": [{"what": f"< {TARGET_S:g} s", "met": seconds < TARGET_S}]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cocreate-bench-budgeting-") as workdir:
        rows = run(Path(workdir), args.quick)
    print(json.dumps(rows, ensure_ascii=False, indent=2))
    return 0 if all(t["met"] for row in rows for t in row["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
