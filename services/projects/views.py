"""Read models of the projects service (kept in the append transaction, rebuildable) and queries.

- ``communities_view``, ``funds_view``, ``projects_view``: the current state of every community,
  fund and project as JSON, with indexed columns for filters and statistics;
- ``fund_ledger``: one row per movement of a community fund, with the balance after it;
- ``pledges_view``: one row per pledge, for "my pledges" and contribution totals.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.kernel.aggregate import AggregateView
from services.kernel import privacy
from services.kernel.events import StoredEvent, format_time, from_micros, to_micros
from services.projects.community import Community, CommunityFund
from services.projects.domain import CATEGORIES, PHASES, STAGES, Project

EVENT_LABELS: dict[str, tuple[str, str]] = {
    "CommunityRegistered": ("社区登记", "community registered"),
    "GridAdded": ("新增网格", "grid added"),
    "RepresentativesChanged": ("居民代表名单变更", "representatives changed"),
    "CommunitySettingsChanged": ("议事规则变更", "community settings changed"),
    "FundCredited": ("基金入账", "fund credited"),
    "FundReserved": ("资金预留", "fund reserved for a project"),
    "FundReservationReleased": ("预留资金释放", "reservation released"),
    "FundSpent": ("项目支出", "spent from a reservation"),
    "FundRewardPaid": ("以奖代补支付", "reward paid"),
    "ProjectProposed": ("提出项目", "project proposed"),
    "ProjectCosigned": ("居民联署", "proposal co-signed"),
    "ProjectQualified": ("联署达标,进入协商", "qualified for deliberation"),
    "OpinionPosted": ("发表意见", "opinion posted"),
    "ProposalAmended": ("修改方案", "proposal amended"),
    "ProjectWithdrawn": ("撤回项目", "project withdrawn"),
    "CouncilVoteOpened": ("启动居民代表表决", "council vote opened"),
    "BallotCast": ("代表投票", "ballot cast"),
    "CouncilVoteClosed": ("表决结束", "council vote closed"),
    "ProjectApproved": ("项目通过,进入共建", "project approved"),
    "ProjectRejected": ("项目被否决", "project rejected"),
    "ContributionPledged": ("认捐认领", "contribution pledged"),
    "ContributionDelivered": ("投入确认", "contribution delivered"),
    "ProjectSpendingRecorded": ("资金支出", "spending recorded"),
    "MilestoneRecorded": ("进度节点", "milestone recorded"),
    "ProjectCompleted": ("项目竣工,进入共管", "project completed"),
    "MaintainerAssigned": ("认领管护", "maintainer assigned"),
    "MaintenanceLogged": ("管护记录", "maintenance logged"),
    "ProblemReported": ("问题反映", "problem reported"),
    "ProblemResolved": ("问题解决", "problem resolved"),
    "EvaluationOpened": ("启动评议", "evaluation opened"),
    "ProjectRated": ("居民评议", "project rated"),
    "EvaluationClosed": ("评议结束,进入共享", "evaluation closed"),
    "ResultsPublished": ("成果公示", "results published"),
    "RewardGranted": ("以奖代补", "reward granted"),
}


def labels(event_type: str) -> dict[str, str]:
    zh, en = EVENT_LABELS.get(event_type, (event_type, event_type))
    return {"zh": zh, "en": en}


def _project_columns(project: Project) -> dict[str, Any]:
    totals = project.totals()["delivered"]
    tally = (project.vote or {}).get("tally") or {}
    return {
        "community_id": project.community_id, "grid_id": project.grid_id, "stage": project.stage,
        "category": project.category, "proposer_id": project.proposer_id,
        "search_text": " ".join((project.title, project.description, project.location)).lower(),
        "vote_result": tally.get("result"), "requested_fen": project.requested_fen,
        "spent_fen": project.spent_fen, "labour_minutes": totals["labour_minutes"],
        "skills_minutes": totals["skills_minutes"], "money_fen": totals["money_fen"],
        "materials_fen": totals["materials_fen"],
    }


COMMUNITIES = AggregateView(Community, "communities_view", [sa.Column("name", sa.String(200), nullable=False)],
                            lambda c: {"name": c.name})
FUNDS = AggregateView(CommunityFund, "funds_view")
PROJECTS = AggregateView(Project, "projects_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("grid_id", sa.String(100), nullable=False),
    sa.Column("stage", sa.String(30), nullable=False),
    sa.Column("category", sa.String(30), nullable=False),
    sa.Column("proposer_id", sa.String(100), nullable=False, index=True),
    sa.Column("search_text", sa.Text, nullable=False),
    sa.Column("vote_result", sa.String(20)),
    sa.Column("requested_fen", sa.BigInteger, nullable=False),
    sa.Column("spent_fen", sa.BigInteger, nullable=False),
    sa.Column("labour_minutes", sa.BigInteger, nullable=False),
    sa.Column("skills_minutes", sa.BigInteger, nullable=False),
    sa.Column("money_fen", sa.BigInteger, nullable=False),
    sa.Column("materials_fen", sa.BigInteger, nullable=False),
], _project_columns)


class FundLedger:
    """One row per fund movement, in log order, with the available balance after it."""

    name = "fund_ledger"
    KINDS = {"FundCredited": "credit", "FundReserved": "reservation", "FundReservationReleased": "release",
             "FundSpent": "spending", "FundRewardPaid": "reward"}

    def __init__(self) -> None:
        self.table = sa.Table(
            "fund_ledger", sa.MetaData(),
            sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("community_id", sa.String(100), nullable=False, index=True),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("amount_fen", sa.BigInteger, nullable=False),
            sa.Column("balance_after_fen", sa.BigInteger, nullable=False),
            sa.Column("project_id", sa.String(100)),
            sa.Column("detail", sa.Text, nullable=False),
            sa.Column("actor", sa.String(100)),
            sa.Column("at_us", sa.BigInteger, nullable=False),
        )
        self.tables = [self.table]

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        kind = self.KINDS.get(event.event_type)
        if kind is None:
            return
        d = event.data
        if kind == "spending":
            # Spending is paid from a reservation: the available balance does not move.
            previous = connection.execute(
                sa.select(self.table.c.balance_after_fen).where(self.table.c.community_id == d["community_id"])
                .order_by(self.table.c.position.desc()).limit(1)).scalar() or 0
            balance, detail = previous, f"{d['receipt_ref']} {d['description']}".strip()
        else:
            balance = d["balance_after_fen"]
            detail = {"credit": lambda: f"{d['source']} {d['reference']} {d['note']}".strip(),
                      "reservation": lambda: "reserved for the council vote",
                      "release": lambda: d["reason"],
                      "reward": lambda: f"{d['recipient_name']}: {d['reason']}"}[kind]()
        connection.execute(self.table.insert().values(
            position=event.position, community_id=d["community_id"], kind=kind, amount_fen=d["amount_fen"],
            balance_after_fen=balance, project_id=d.get("project_id"), detail=detail,
            actor=event.metadata.get("actor"), at_us=to_micros(event.occurred_at)))

    def page(self, connection: Connection, community_id: str, limit: int, after: int) -> list[dict[str, Any]]:
        t = self.table
        rows = connection.execute(sa.select(t).where(t.c.community_id == community_id, t.c.position > after)
                                  .order_by(t.c.position).limit(limit))
        return [{"position": r.position, "kind": r.kind, "amount_fen": r.amount_fen,
                 "balance_after_fen": r.balance_after_fen, "project_id": r.project_id, "detail": r.detail,
                 "actor": r.actor, "at": format_time(from_micros(r.at_us))} for r in rows]


class PledgesView:
    """One row per pledge with its delivered amounts: "my pledges", contributions by contributor."""

    name = "pledges_view"

    def __init__(self) -> None:
        self.table = sa.Table(
            "pledges_view", sa.MetaData(),
            sa.Column("pledge_id", sa.String(100), primary_key=True),
            sa.Column("project_id", sa.String(100), nullable=False, index=True),
            sa.Column("community_id", sa.String(100), nullable=False),
            sa.Column("contributor_id", sa.String(100), nullable=False, index=True),
            sa.Column("contributor_name", sa.String(200), nullable=False),
            sa.Column("contributor_type", sa.String(30), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("pledged", sa.BigInteger, nullable=False),
            sa.Column("delivered", sa.BigInteger, nullable=False),
            sa.Column("unit", sa.String(10), nullable=False),
            sa.Column("pledged_at_us", sa.BigInteger, nullable=False),
        )
        self.tables = [self.table]

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        d = event.data
        if event.event_type == "ContributionPledged":
            key, unit = _amount_key(d)
            connection.execute(self.table.insert().values(
                pledge_id=d["pledge_id"], project_id=d["project_id"], community_id=d["community_id"],
                contributor_id=d["contributor_id"], contributor_name=d["contributor_name"],
                contributor_type=d["contributor_type"], kind=d["kind"], pledged=d[key], delivered=0, unit=unit,
                pledged_at_us=to_micros(event.occurred_at)))
        elif event.event_type == "ContributionDelivered":
            key, _unit = _amount_key(d)
            connection.execute(self.table.update().where(self.table.c.pledge_id == d["pledge_id"])
                               .values(delivered=self.table.c.delivered + d[key]))

    def for_contributor(self, connection: Connection, contributor_id: str) -> list[dict[str, Any]]:
        t = self.table
        rows = connection.execute(sa.select(t).where(t.c.contributor_id == contributor_id)
                                  .order_by(t.c.pledged_at_us.desc()).limit(500))
        return [{"pledge_id": r.pledge_id, "project_id": r.project_id, "community_id": r.community_id,
                 "kind": r.kind, "pledged": r.pledged, "delivered": r.delivered, "unit": r.unit,
                 "contributor_type": r.contributor_type,
                 "pledged_at": format_time(from_micros(r.pledged_at_us))} for r in rows]


def _amount_key(d: dict[str, Any]) -> tuple[str, str]:
    for key, unit in (("labour_minutes", "minutes"), ("skills_minutes", "minutes"), ("money_fen", "fen"),
                      ("materials_fen", "fen")):
        if key in d:
            return key, unit
    raise ValueError(f"pledge event without an amount: {d}")


LEDGER = FundLedger()
PLEDGES = PledgesView()


def projections():
    return [COMMUNITIES, FUNDS, PROJECTS, LEDGER, PLEDGES]


# -- presenting -------------------------------------------------------------------------------

def project_summary(project: Project) -> dict[str, Any]:
    return {
        "project_id": project.id, "community_id": project.community_id, "grid_id": project.grid_id,
        "title": project.title, "category": project.category, "category_label": CATEGORIES.get(project.category),
        "stage": project.stage, "stage_label": STAGES.get(project.stage), "phase": project.phase,
        "phase_label": PHASES.get(project.phase), "proposer_id": project.proposer_id,
        "proposer_name": project.proposer_name, "requested_fen": project.requested_fen,
        "estimated_cost_fen": project.estimated_cost_fen, "progress": project.progress,
        "cosigner_count": len(project.cosigners), "version": project.version,
        "created_at": project.created_at, "updated_at": project.updated_at,
    }


def project_detail(project: Project) -> dict[str, Any]:
    vote = None
    if project.vote is not None:
        v = project.vote
        vote = {k: v.get(k) for k in ("electorate_size", "quorum_numerator", "quorum_denominator",
                                      "pass_numerator", "pass_denominator", "reserved_fen", "opened_by",
                                      "opened_at", "closed_at", "tally")}
        vote["ballots_cast"] = len(v["ballots"])
    evaluation = None
    if project.evaluation is not None:
        e = project.evaluation
        scores = list(e["ratings"].values())
        evaluation = {"responsible_unit": e["responsible_unit"], "opened_at": e["opened_at"],
                      "closed_at": e["closed_at"], "ratings": len(scores),
                      "average": e["average"] if e["closed_at"] else
                      (round(sum(scores) / len(scores), 2) if scores else None)}
    stances = {s: 0 for s in ("support", "oppose", "neutral")}
    for opinion in project.opinions:
        stances[opinion["stance"]] += 1
    return {
        **project_summary(project),
        "description": project.description, "location": project.location,
        "allowed_actions": project.allowed_actions(),
        "cosigners_required": project.cosigners_required, "cosigners": project.cosigners,
        "revisions": project.revisions, "opinions": project.opinions, "opinion_stances": stances,
        "withdrawal": project.withdrawal, "vote": vote, "responsible_unit": project.responsible_unit,
        "pledges": list(project.pledges.values()), "totals": project.totals(), "spending": project.spending,
        "milestones": project.milestones, "completed_at": project.completed_at,
        "maintainers": list(project.maintainers.values()), "maintenance_logs": project.maintenance_logs[-50:],
        "maintenance_log_count": len(project.maintenance_logs),
        "problems": list(project.problems.values()), "evaluation": evaluation, "results": project.results,
        "rewards": project.rewards,
    }


def history_entry(event: StoredEvent, principal, community_id: str | None) -> dict[str, Any]:
    """One event of a project's history as ``principal`` may see it: a project evaluation
    (``ProjectRated``) names its rater, in its data and as its actor, only as the privacy policy
    says (:mod:`services.kernel.privacy`, kind ``project_rating``)."""
    data, actor = dict(event.data), event.metadata.get("actor")
    kind = "project_rating" if event.event_type == "ProjectRated" else None
    if kind:
        rel = privacy.relations(principal, community_id, holder=event.data.get("person_id"))
        data = privacy.redact(kind, data, rel)
        if not privacy.shown(kind, "actor", rel):
            actor = None
    return {"version": event.version, "position": event.position, "event_type": event.event_type,
            "label": labels(event.event_type), "actor": actor,
            "occurred_at": format_time(event.occurred_at), "data": data}


def list_projects(connection: Connection, filters: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    t = PROJECTS.table
    where = []
    for key in ("community_id", "grid_id", "stage", "category", "proposer_id"):
        if filters.get(key):
            where.append(t.c[key] == filters[key])
    if filters.get("q"):
        needle = filters["q"].lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(t.c.search_text.like(f"%{needle}%", escape="\\"))
    total = connection.execute(sa.select(sa.func.count()).select_from(t).where(*where)).scalar()
    rows = connection.execute(sa.select(t.c.state).where(*where)
                              .order_by(t.c.created_at_us.desc(), t.c.id)
                              .limit(filters["per_page"]).offset((filters["page"] - 1) * filters["per_page"]))
    return [project_summary(Project.from_json(r.state)) for r in rows], total


def community_stats(connection: Connection, community_id: str) -> dict[str, Any]:
    t = PROJECTS.table
    per_stage = {stage: 0 for stage in STAGES}
    for stage, count in connection.execute(
            sa.select(t.c.stage, sa.func.count()).where(t.c.community_id == community_id).group_by(t.c.stage)):
        per_stage[stage] = count
    votes = dict(connection.execute(
        sa.select(t.c.vote_result, sa.func.count()).where(t.c.community_id == community_id,
                                                          t.c.vote_result.is_not(None))
        .group_by(t.c.vote_result)).all())
    decided = votes.get("approved", 0) + votes.get("rejected", 0)
    sums = connection.execute(sa.select(
        *(sa.func.coalesce(sa.func.sum(t.c[k]), 0).label(k)
          for k in ("labour_minutes", "skills_minutes", "money_fen", "materials_fen", "spent_fen"))
    ).where(t.c.community_id == community_id)).one()
    fund = FUNDS.get(connection, community_id) or CommunityFund(id=community_id)
    contributors = connection.execute(
        sa.select(sa.func.count(sa.distinct(PLEDGES.table.c.contributor_id)))
        .where(PLEDGES.table.c.community_id == community_id)).scalar()
    return {
        "community_id": community_id, "projects": sum(per_stage.values()),
        "projects_per_stage": per_stage,
        "votes": {"approved": votes.get("approved", 0), "rejected": votes.get("rejected", 0),
                  "approval_rate": round(votes.get("approved", 0) / decided, 4) if decided else None},
        "contributions": {"labour_minutes": sums.labour_minutes, "skills_minutes": sums.skills_minutes,
                          "money_fen": sums.money_fen, "materials_fen": sums.materials_fen,
                          "contributors": contributors},
        "project_spending_fen": sums.spent_fen,
        "fund": fund.view(),
    }
