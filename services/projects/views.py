"""Read models of the projects service (kept in the append transaction, rebuildable) and queries.

- ``communities_view``, ``funds_view``, ``projects_view``: the current state of every community,
  fund and project as JSON, with indexed columns for filters and statistics;
- ``project_details``: what a project's page shows besides its state — one row per event of the
  project that the page lists or dates (co-signers, revisions, opinions, spending, milestones,
  maintenance logs, rewards, ...), keyed by the project and the event's version;
- ``fund_ledger``: one row per movement of a community fund, with the balance after it;
- ``pledges_view``: one row per pledge, for "my pledges" and contribution totals.

The named queries below are the API's reads (:mod:`services.projects.api` holds no SQL); the
``public_*`` ones answer visitors without a token, from the same read models, through the privacy
policy's allow-lists (:func:`services.kernel.privacy.public_view`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.kernel.aggregate import AggregateView
from services.kernel.cache import AtVersion, EncodedAnswer, Newest, joined_objects
from services.kernel.db import Prepared
from services.kernel import privacy
from services.kernel.errors import NotFound
from services.kernel.model import Conflict, parse_time
from services.kernel.events import StoredEvent, dumps, format_time, from_micros, loads, to_micros
from services.kernel.eventstore import EventStore
from services.projects.community import (
    FUND_SOURCES, RELEASE_REASONS, RESERVATION_REASONS, Community, CommunityFund,
)
from services.projects import budgeting
from services.projects.rounds import STATUSES as ROUND_STATUSES, BudgetRound, latest_ballots
from services.projects.domain import (
    AMENDABLE, CATEGORIES, CHOICES, CONTRIBUTOR_TYPES, PHASES, STAGES, STANCES, TALLY_REASONS, Project, amount_fields,
    zero_amounts,
)

APPROVED_STAGES = ("co_build", "co_manage", "co_evaluate", "co_share")

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
    "FundReservationTransferred": ("预算轮次资金转入项目", "moved from a budgeting round to a project"),
    "RoundOpened": ("参与式预算轮次开始", "budgeting round opened"),
    "RoundBallotCast": ("提交预算选票", "ballot cast in a budgeting round"),
    "RoundClosed": ("参与式预算轮次结束并计票", "budgeting round closed and counted"),
    "ProjectEnteredRound": ("进入参与式预算轮次", "entered a budgeting round"),
    "ProjectFundedByRound": ("预算轮次选中", "funded by a budgeting round"),
    "ProjectLeftRound": ("预算轮次未选中", "not funded by a budgeting round"),
}


def labels(event_type: str) -> dict[str, str]:
    zh, en = EVENT_LABELS.get(event_type, (event_type, event_type))
    return {"zh": zh, "en": en}


def _vote_result(project: Project) -> str | None:
    """The council's verdict, once given: a project is approved or rejected only by a vote."""
    if project.stage == "rejected":
        return "rejected"
    return "approved" if project.stage in APPROVED_STAGES else None


def _project_columns(project: Project) -> dict[str, Any]:
    totals = project.totals()["delivered"]
    return {
        "community_id": project.community_id, "grid_id": project.grid_id, "stage": project.stage,
        "category": project.category, "proposer_id": project.proposer_id,
        "search_text": " ".join((project.title, project.description, project.location)).lower(),
        "vote_result": _vote_result(project), "requested_fen": project.requested_fen,
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


_TEMPLATE_FIELD = re.compile(r"\{(\w+)\}")


def templated_label(text: str, templates: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """``text`` — made by the code from one of ``templates`` ((zh, en) pairs with ``{name}``
    fields) in English — as a label ``{"zh": ..., "en": text}``; a text of no template (written
    by a person) is the same in both."""
    for zh, en in templates.values():
        parts, at = [], 0
        for found in _TEMPLATE_FIELD.finditer(en):
            parts += [re.escape(en[at:found.start()]), f"(?P<{found.group(1)}>.+?)"]
            at = found.end()
        matched = re.fullmatch("".join([*parts, re.escape(en[at:])]), text, re.DOTALL)
        if matched is not None:
            return {"zh": zh.format(**matched.groupdict()), "en": text}
    return {"zh": text, "en": text}


def ledger_detail_label(kind: str, detail: str) -> dict[str, str]:
    """The ledger's ``detail`` in Chinese and English: the words the code wrote (a reservation, a
    release, a credit's source) translated, what people wrote (references, notes, receipts,
    names, reasons for a reward) as they wrote it."""
    if kind in ("reservation", "transfer"):
        return templated_label(detail, RESERVATION_REASONS)
    if kind == "release":
        return templated_label(detail, RELEASE_REASONS)
    if kind == "credit":
        source, _, rest = detail.partition(" ")
        label = bilingual(FUND_SOURCES.get(source))
        if label is not None:
            return {lang: f"{text} {rest}".strip() for lang, text in label.items()}
    return {"zh": detail, "en": detail}


class FundLedger:
    """One row per fund movement, in log order, with the available balance after it (``detail``:
    what the movement was, in English or as written; ``detail_label``: in Chinese and English)."""

    name = "fund_ledger"
    KINDS = {"FundCredited": "credit", "FundReserved": "reservation", "FundReservationReleased": "release",
             "FundSpent": "spending", "FundRewardPaid": "reward", "FundReservationTransferred": "transfer"}

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
                      "reservation": lambda: (RESERVATION_REASONS["round"][1].format(round_id=d["round_id"])
                                              if d.get("round_id") else RESERVATION_REASONS["vote"][1]),
                      "transfer": lambda: RESERVATION_REASONS["transfer"][1].format(round_id=d["round_id"]),
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
                 "detail_label": ledger_detail_label(r.kind, r.detail), "actor": r.actor,
                 "at": format_time(from_micros(r.at_us))} for r in rows]


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
            sa.Column("contributor_name", sa.Text, nullable=False),  # sealed for a resident
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


# -- a project's page ---------------------------------------------------------------------------

def _at(event: StoredEvent) -> str:
    return format_time(event.occurred_at)


def _pick(d: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: d[k] for k in keys}


# What the page keeps of each event of a project: (item id or None, the entry). An entry of an
# event that is not listed here is not kept (the state or the history has it).
ENTRIES: dict[str, Callable[[Mapping[str, Any], StoredEvent], tuple[str | None, dict[str, Any]]]] = {
    "ProjectProposed": lambda d, e: (None, {"revision": 0, **_pick(d, *AMENDABLE), "reason": "original proposal",
                                            "at": _at(e)}),
    "ProposalAmended": lambda d, e: (None, {**_pick(d, "revision", "changes", "reason"), "at": _at(e),
                                            "by": e.metadata.get("actor")}),
    "ProjectCosigned": lambda d, e: (None, {**_pick(d, "person_id", "name"), "at": _at(e)}),
    "OpinionPosted": lambda d, e: (None, {**_pick(d, "opinion_id", "person_id", "name", "stance", "text"),
                                          "at": _at(e)}),
    "ProjectWithdrawn": lambda d, e: (None, {"reason": d["reason"], "at": _at(e)}),
    "CouncilVoteOpened": lambda d, e: (None, {**_pick(d, "electorate_size", "quorum_numerator", "quorum_denominator",
                                                      "pass_numerator", "pass_denominator", "reserved_fen",
                                                      "opened_by"), "opened_at": _at(e)}),
    "CouncilVoteClosed": lambda d, e: (None, {"tally": _pick(d, "electorate_size", "ballots", "yes", "no", "abstain",
                                                             "quorum_required", "quorum_met", "result", "reason"),
                                              "closed_at": _at(e)}),
    "ContributionPledged": lambda d, e: (d["pledge_id"], {
        **_pick(d, "pledge_id", "contributor_id", "contributor_name", "contributor_type", "kind"),
        "description": d.get("description", ""), "pledged": {**zero_amounts(), **amount_fields(d)}, "at": _at(e)}),
    "ContributionDelivered": lambda d, e: (d["pledge_id"], {"delivered_at": d["delivered_at"]}),
    "ProjectSpendingRecorded": lambda d, e: (None, {**_pick(d, "spending_id", "amount_fen", "receipt_ref",
                                                            "description"), "at": _at(e)}),
    "MilestoneRecorded": lambda d, e: (None, {**_pick(d, "progress", "note"), "at": _at(e)}),
    "ProjectCompleted": lambda d, e: (None, {"at": _at(e)}),
    "MaintainerAssigned": lambda d, e: (d["maintainer_id"], {
        **_pick(d, "maintainer_id", "name", "kind", "duty", "rota", "members"), "since": _at(e)}),
    "MaintenanceLogged": lambda d, e: (None, {**_pick(d, "log_id", "maintainer_id", "logged_by", "note",
                                                      "performed_at"), "at": _at(e)}),
    "ProblemReported": lambda d, e: (d["problem_id"], {
        **_pick(d, "problem_id", "reported_by", "description"), "reported_at": _at(e), "resolved_at": None,
        "resolution": None, "resolution_seconds": None}),
    "ProblemResolved": lambda d, e: (d["problem_id"], {
        "resolved_at": _at(e), **_pick(d, "resolution", "resolution_seconds", "resolved_by")}),
    "EvaluationOpened": lambda d, e: (None, {"opened_at": _at(e)}),
    "EvaluationClosed": lambda d, e: (None, {"closed_at": _at(e)}),
    "ResultsPublished": lambda d, e: (None, {**{k: v for k, v in d.items() if k not in ("project_id", "community_id")},
                                             "at": _at(e)}),
    "RewardGranted": lambda d, e: (None, {**_pick(d, "recipient_id", "recipient_name", "amount_fen", "reason"),
                                          "at": _at(e)}),
}
MAINTENANCE_LOGS_SHOWN = 50  # the page shows the latest logs and how many there are


@dataclasses.dataclass
class ProjectPage:
    """The ``project_details`` rows of one project up to a version, as the detail reads them."""

    entries: dict[str, list[tuple[str | None, dict[str, Any]]]]  # event type -> (item id, entry), in order
    maintenance_logs: list[dict[str, Any]]  # the latest ones, oldest first
    maintenance_log_count: int
    last_delivered_at: dict[str, str]  # pledge id -> when its latest delivery was made
    # what the page lists of these rows, encoded once (:func:`listing_json`): a page is kept and given
    # again while no row is added, so from one version to the next (a ballot adds none)
    listed: bytes | None = dataclasses.field(default=None, compare=False, repr=False)

    def all(self, event_type: str) -> list[dict[str, Any]]:
        return [entry for _item, entry in self.entries.get(event_type, ())]

    def last(self, event_type: str) -> dict[str, Any] | None:
        found = self.entries.get(event_type)
        return found[-1][1] if found else None

    def by_item(self, event_type: str) -> dict[str | None, dict[str, Any]]:
        return dict(self.entries.get(event_type, ()))


class ProjectDetails:
    """What a project's page shows besides the project's state: one row per event of the project
    that the page lists or dates (``ENTRIES``), keyed by the project and the event's version. Rows
    are only ever added, so the rows up to a version are the page of that version (``as-of``)."""

    name = "project_details"
    TAILED = ("MaintenanceLogged", "ContributionDelivered")  # read by the page in part only

    def __init__(self) -> None:
        self.table = sa.Table(
            "project_details", sa.MetaData(),
            sa.Column("project_id", sa.String(100), primary_key=True, autoincrement=False),
            sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("event_type", sa.String(40), nullable=False),
            sa.Column("item_id", sa.String(100)),
            sa.Column("entry", sa.Text, nullable=False),
            sa.Index("ix_project_details_type", "project_id", "event_type", "version"),
        )
        self.tables = [self.table]
        self._prefix = Project.stream_prefix + "-"
        self._queries: tuple[Prepared, ...] | None = None
        self._pages: Newest[ProjectPage] = Newest("project_details", size=1024)
        self._insert = Prepared(self.table.insert().values(  # most of a project's commands add a row
            {name: sa.bindparam(name) for name in ("project_id", "version", "event_type", "item_id", "entry")}))

    def row(self, event: StoredEvent) -> dict[str, Any] | None:
        make = ENTRIES.get(event.event_type)
        if make is None or not event.stream_id.startswith(self._prefix):
            return None
        item_id, entry = make(event.data, event)
        return {"project_id": event.stream_id[len(self._prefix):], "version": event.version,
                "event_type": event.event_type, "item_id": item_id,
                "entry": json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":"))}

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        row = self.row(event)
        if row is not None:
            self._insert.execute(connection, row)

    def apply_many(self, connection: Connection, events: Sequence[StoredEvent]) -> None:
        rows = [row for row in map(self.row, events) if row is not None]
        if rows:
            connection.execute(self.table.insert(), rows)

    def page(self, connection: Connection, project_id: str, version: int) -> ProjectPage:
        """The project's rows up to ``version``: every entry but the tailed ones, the latest
        maintenance logs and their count, and the time of each pledge's latest delivery. Grown
        from the newest page this process keeps of the project when that one is older (rows are only
        ever added: what came after it is all there is to read), read whole otherwise
        (:class:`~services.kernel.cache.Newest`; issue 23: the four queries over all the rows were
        half of a ballot's answer). Called in read transactions (what is kept has committed)."""
        return self._pages.get(connection, project_id, version, lambda: self._read(connection, project_id, version),
                               lambda kept, since: self._grow(connection, kept, project_id, since, version))

    def _read(self, connection: Connection, project_id: str, version: int) -> ProjectPage:
        entries_q, count_q, latest_q, delivered_q, _after_q = self._prepared()
        at = {"project_id": project_id, "version": version}
        entries: dict[str, list[tuple[str | None, dict[str, Any]]]] = defaultdict(list)
        for event_type, item_id, entry in entries_q.all(connection, at):
            entries[event_type].append((item_id, loads(entry)))
        count = count_q.first(connection, at)[0]
        latest = [row[0] for row in latest_q.all(connection, at)]
        delivered = delivered_q.all(connection, at)
        return ProjectPage(dict(entries), [loads(entry) for entry in reversed(latest)], count,
                           {item_id: loads(entry)["delivered_at"] for item_id, entry in delivered})

    def _grow(self, connection: Connection, kept: ProjectPage, project_id: str, since: int,
              version: int) -> ProjectPage:
        """``kept`` (the page at ``since``) with the rows of the versions after it up to ``version``:
        a new page (the kept one is shared), or ``kept`` itself when no row came."""
        rows = self._prepared()[4].all(connection, {"project_id": project_id, "since": since, "version": version})
        if not rows:
            return kept
        entries, logs, count = dict(kept.entries), kept.maintenance_logs, kept.maintenance_log_count
        delivered = kept.last_delivered_at
        for event_type, item_id, entry in rows:  # in version order
            if event_type == "MaintenanceLogged":
                logs, count = [*logs, loads(entry)][-MAINTENANCE_LOGS_SHOWN:], count + 1
            elif event_type == "ContributionDelivered":
                delivered = {**delivered, item_id: loads(entry)["delivered_at"]}
            else:
                entries[event_type] = [*entries.get(event_type, ()), (item_id, loads(entry))]
        return ProjectPage(entries, logs, count, delivered)

    def _prepared(self) -> tuple[Prepared, ...]:
        if self._queries is None:
            self._queries = self._prepare()
        return self._queries

    def _prepare(self) -> tuple[Prepared, ...]:
        """The page's four queries and the rows after a version (:meth:`_grow`), prepared once."""
        t = self.table
        upto = [t.c.project_id == sa.bindparam("project_id"), t.c.version <= sa.bindparam("version")]
        logs = [*upto, t.c.event_type == "MaintenanceLogged"]
        last = (sa.select(t.c.item_id, sa.func.max(t.c.version).label("version"))
                .where(*upto, t.c.event_type == "ContributionDelivered").group_by(t.c.item_id).subquery())
        return (
            Prepared(sa.select(t.c.event_type, t.c.item_id, t.c.entry)
                     .where(*upto, *(t.c.event_type != tailed for tailed in self.TAILED)).order_by(t.c.version)),
            Prepared(sa.select(sa.func.count()).select_from(t).where(*logs)),
            Prepared(sa.select(t.c.entry).where(*logs).order_by(t.c.version.desc()).limit(MAINTENANCE_LOGS_SHOWN)),
            Prepared(sa.select(t.c.item_id, t.c.entry).join(last, sa.and_(
                t.c.project_id == sa.bindparam("project_id"), t.c.item_id == last.c.item_id,
                t.c.version == last.c.version))),
            Prepared(sa.select(t.c.event_type, t.c.item_id, t.c.entry)
                     .where(t.c.project_id == sa.bindparam("project_id"), t.c.version > sa.bindparam("since"),
                            t.c.version <= sa.bindparam("version")).order_by(t.c.version)),
        )


LEDGER = FundLedger()
PLEDGES = PledgesView()
DETAILS = ProjectDetails()


def projections():
    return [COMMUNITIES, FUNDS, PROJECTS, DETAILS, LEDGER, PLEDGES, ROUNDS, ROUND_BALLOTS]


# -- presenting -------------------------------------------------------------------------------

def project_summary(project: Project) -> dict[str, Any]:
    return {
        "project_id": project.id, "community_id": project.community_id, "grid_id": project.grid_id,
        "title": project.title, "category": project.category, "category_label": CATEGORIES.get(project.category),
        "stage": project.stage, "stage_label": STAGES.get(project.stage), "phase": project.phase,
        "phase_label": PHASES.get(project.phase), "proposer_id": project.proposer_id,
        "proposer_name": project.proposer_name, "requested_fen": project.requested_fen,
        "estimated_cost_fen": project.estimated_cost_fen, "progress": project.progress,
        "cosigner_count": len(project.cosigner_ids), "version": project.version,
        "created_at": project.created_at, "updated_at": project.updated_at,
    }


def project_detail(connection: Connection, project: Project) -> dict[str, Any]:
    """The project's page at its version: its state, with what ``project_details`` keeps of its
    events up to that version (so a command's answer and a past version read it alike). A new
    dict each time (the page's rows are kept: :class:`ProjectDetails`)."""
    page = DETAILS.page(connection, project.id, project.version)
    return {**_listed(page), **_stated(project, page)}


# A project's page at a version is the same every time (its rows up to that version never change):
# kept encoded per worker, the answer to a command that changed the project is the next reader's page too.
_PAGES_JSON: AtVersion[EncodedAnswer] = AtVersion("project_detail_json", size=1024)


def kept_project_detail_json(engine, project: Project) -> EncodedAnswer | None:
    """:func:`project_detail_json` as kept for the project's version, or None (nothing made)."""
    return _PAGES_JSON.kept(engine, project.id, project.version)


def project_detail_json(connection: Connection, project: Project) -> EncodedAnswer:
    """:func:`project_detail` encoded, kept at the project's version too."""
    return _PAGES_JSON.get(connection, project.id, project.version, lambda: _joined(*_parts(connection, project)))


def project_detail_parts(connection: Connection, project: Project) -> tuple[bytes, bytes]:
    """:func:`project_detail` encoded in two JSON objects whose keys together are the page's: what its
    rows list (:func:`listing_json`: the same bytes while no row is added, so their sealed names are
    opened once, not at each version — issue 23: a ballot's answer searched and opened the whole page
    again, a twelfth of its time) and what the project's state says. The page they make is kept for
    the next reader (:func:`project_detail_json`). Called after the command committed, or in a read
    transaction."""
    listed, stated = _parts(connection, project)
    _PAGES_JSON.get(connection, project.id, project.version, lambda: _joined(listed, stated))
    return listed, stated


def _parts(connection: Connection, project: Project) -> tuple[bytes, bytes]:
    page = DETAILS.page(connection, project.id, project.version)
    return listing_json(page), dumps(_stated(project, page)).encode()


def _joined(listed: bytes, stated: bytes) -> EncodedAnswer:
    return EncodedAnswer.of(joined_objects(listed, stated))


def listing_json(page: ProjectPage) -> bytes:
    """What the page lists of its rows (:func:`_listed`), encoded once per page (kept on it)."""
    listed = page.listed
    if listed is None:
        listed = page.listed = dumps(_listed(page)).encode()  # (two threads at once: the same bytes)
    return listed


def _listed(page: ProjectPage) -> dict[str, Any]:
    """The fields of a project's page that its rows alone decide."""
    opinions = page.all("OpinionPosted")
    stances = {stance: 0 for stance in STANCES}
    for opinion in opinions:
        stances[opinion["stance"]] += 1
    completed = page.last("ProjectCompleted")
    return {
        "cosigners": page.all("ProjectCosigned"), "revisions": _revisions(page), "opinions": opinions,
        "opinion_stances": stances, "withdrawal": page.last("ProjectWithdrawn"),
        "spending": page.all("ProjectSpendingRecorded"), "milestones": page.all("MilestoneRecorded"),
        "completed_at": completed["at"] if completed else None,
        "maintainers": page.all("MaintainerAssigned"), "maintenance_logs": page.maintenance_logs,
        "maintenance_log_count": page.maintenance_log_count,
        "problems": _problems(page), "results": page.last("ResultsPublished"), "rewards": page.all("RewardGranted"),
    }


# What a caller may do on a project at its version (Project.actions_for: a dry run of each allowed
# action's decision, refusals raised and caught): decided by the project's state and the caller's
# id, roles and community alone, so the same until the project changes. Kept per worker, by those.
_ACTIONS: AtVersion[tuple[str, ...]] = AtVersion("project_actions", size=4096)


def actions_for(engine, project: Project, principal) -> list[str]:
    """``project.actions_for(principal)``, kept at the project's version for the same caller."""
    key = (project.id, principal.person_id, principal.roles, principal.community)
    return list(_ACTIONS.get_of(engine, key, project.version, lambda: tuple(project.actions_for(principal))))


def _stated(project: Project, page: ProjectPage) -> dict[str, Any]:
    """The fields of a project's page that its state decides (with some of its rows)."""
    return {
        **project_summary(project),
        "description": project.description, "location": project.location,
        "allowed_actions": project.allowed_actions(), "cosigners_required": project.cosigners_required,
        "vote": _vote(project, page), "round_id": project.round_id, "funded_by_round": project.funded_by_round,
        "responsible_unit": project.responsible_unit, "pledges": _pledges(project, page),
        "totals": _totals(project, page), "evaluation": _evaluation(project, page),
    }


def _revisions(page: ProjectPage) -> list[dict[str, Any]]:
    """The original text and the whole text after each amendment, with its reason."""
    revisions = page.all("ProjectProposed")[:1]
    text = {k: revisions[0][k] for k in AMENDABLE} if revisions else {}
    for amended in page.all("ProposalAmended"):
        text.update(amended["changes"])
        revisions.append({"revision": amended["revision"], **text, "reason": amended["reason"],
                          "at": amended["at"], "by": amended["by"]})
    return revisions


def _vote(project: Project, page: ProjectPage) -> dict[str, Any] | None:
    if project.vote is None:
        return None
    closed = page.last("CouncilVoteClosed") or {"tally": None, "closed_at": None}
    if closed["tally"] is not None:
        tally = closed["tally"]
        closed = {**closed, "tally": {**tally, "reason_label": templated_label(tally["reason"], TALLY_REASONS)}}
    return {**page.last("CouncilVoteOpened"), **closed, "ballots_cast": len(project.vote["ballots"])}


def _pledges(project: Project, page: ProjectPage) -> list[dict[str, Any]]:
    return [{**entry, "delivered": project.pledges[entry["pledge_id"]]["delivered"],
             "delivery_count": project.pledges[entry["pledge_id"]]["delivery_count"],
             "last_delivered_at": page.last_delivered_at.get(entry["pledge_id"])}
            for entry in page.all("ContributionPledged")]


def _totals(project: Project, page: ProjectPage) -> dict[str, Any]:
    pledged = zero_amounts()
    for entry in page.all("ContributionPledged"):
        for key, value in entry["pledged"].items():
            pledged[key] += value
    return {"pledged": pledged, **project.totals(),
            "rewards_fen": sum(reward["amount_fen"] for reward in page.all("RewardGranted"))}


def _problems(page: ProjectPage) -> list[dict[str, Any]]:
    resolved = page.by_item("ProblemResolved")
    return [{**problem, **resolved.get(problem_id, {})} for problem_id, problem in page.entries.get("ProblemReported", ())]


def _evaluation(project: Project, page: ProjectPage) -> dict[str, Any] | None:
    if project.evaluation is None:
        return None
    e = project.evaluation
    scores = list(e["ratings"].values())
    closed = page.last("EvaluationClosed")
    return {"responsible_unit": e["responsible_unit"], "opened_at": page.last("EvaluationOpened")["opened_at"],
            "closed_at": closed["closed_at"] if closed else None, "ratings": len(scores),
            "average": e["average"] if e["count"] is not None else
            (round(sum(scores) / len(scores), 2) if scores else None)}


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
    found, total = _find_projects(connection, filters)
    return [project_summary(project) for project in found], total


def _find_projects(connection: Connection, filters: dict[str, Any]) -> tuple[list[Project], int]:
    """A page of the projects matching ``filters`` (newest first) and how many match in all."""
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
    return [Project.from_json(r.state) for r in rows], total


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


# -- named queries (the API's reads) -------------------------------------------------------------

def list_communities(connection: Connection, community_id: str | None) -> list[Community]:
    """Every community (``community_id`` None) or the one given."""
    return COMMUNITIES.find(connection, id=community_id)


def require_community(connection: Connection, community_id: str) -> None:
    if COMMUNITIES.get(connection, community_id) is None:
        raise NotFound(f"no community {community_id}")


def fund_page(connection: Connection, community_id: str, limit: int, after: int) -> dict[str, Any]:
    """The fund of an existing community: balance and totals, and its ledger after a position."""
    require_community(connection, community_id)
    fund = FUNDS.get(connection, community_id) or CommunityFund(id=community_id)
    ledger = LEDGER.page(connection, community_id, limit, after)
    return {**fund.view(), "ledger": ledger, "next_after": ledger[-1]["position"] if ledger else after}


def statistics(connection: Connection, community_id: str) -> dict[str, Any]:
    """:func:`community_stats` of an existing community."""
    require_community(connection, community_id)
    return community_stats(connection, community_id)


def find_project_alone(engine, project_id: str) -> Project | None:
    """The project for a page, read without a transaction (one statement: its version and state),
    or None when there is none (the transaction's read answers 404)."""
    return PROJECTS.get_shared_alone(engine, project_id)


def find_project(connection: Connection, project_id: str) -> Project:
    """The project for a page (read, never changed: shared by the readers of its version)."""
    project = PROJECTS.get_shared(connection, project_id)
    if project is None:
        raise NotFound(f"no project {project_id}")
    return project


def project_events(store: EventStore, project_id: str, version: int | None = None,
                   at: datetime | None = None) -> list[StoredEvent]:
    """The project's events, all of them or up to a version or an instant (404 when there are none)."""
    stream_id = Project.stream_id_for(project_id)
    events = store.load(stream_id, up_to_version=version, as_of=at)
    if not events:
        if (version is None and at is None) or store.current_version(stream_id) == 0:
            raise NotFound(f"no project {project_id}")
        raise NotFound(f"project {project_id} did not exist yet at that time")
    return events


def project_as_of(connection: Connection, project_id: str, events: Sequence[StoredEvent]) -> dict[str, Any]:
    """The page of the project as its ``events`` (its first ones) leave it."""
    return project_detail(connection, Project.replay(project_id, events))


def my_proposals(connection: Connection, person_id: str) -> tuple[list[dict[str, Any]], int]:
    return list_projects(connection, {"proposer_id": person_id, "page": 1, "per_page": 100})


def my_pledges(connection: Connection, person_id: str) -> list[dict[str, Any]]:
    return PLEDGES.for_contributor(connection, person_id)


# -- public reads: what anyone may read without a token (共享) -----------------------------------
#
# Each is built from what the token routes show and then kept to the privacy policy's allow-list
# for its kind (services.kernel.privacy.PUBLIC): what is not listed there is not shown, whatever
# the read models hold. Counts of people below ``min_count`` are suppressed, times are days.

LEDGER_KINDS = {"credit": "入账 credit", "reservation": "预留 reserved for a project or a budgeting round",
                "release": "释放 reservation released", "spending": "支出 spending", "reward": "以奖代补 reward paid",
                "transfer": "转入项目 moved from a budgeting round to a project"}


def bilingual(text: str | None) -> dict[str, str] | None:
    """A label of the domain ("共谋 co-planning") as ``{"zh": "共谋", "en": "co-planning"}``."""
    if text is None:
        return None
    zh, _, en = text.partition(" ")
    return {"zh": zh, "en": en}


def _community_or_404(connection: Connection, community_id: str) -> Community:
    community = COMMUNITIES.get(connection, community_id)
    if community is None:
        raise NotFound(f"no community {community_id}")
    return community


def public_community(connection: Connection, community_id: str) -> dict[str, Any]:
    """A community's name, district and grids, and the stages and categories to filter by."""
    community = _community_or_404(connection, community_id)
    return privacy.public_view("community", {
        **community.view(),
        "stages": [{"value": stage, "label": bilingual(label)} for stage, label in STAGES.items()],
        "categories": [{"value": category, "label": bilingual(label)} for category, label in CATEGORIES.items()]})


def _public_summary(project: Project, grids: Mapping[str, str], min_count: int) -> dict[str, Any]:
    counts, hidden = privacy.suppress({
        "cosignatures": len(project.cosigner_ids), "pledges": len(project.pledges),
        "contributors": len({p["contributor_id"] for p in project.pledges.values()})}, min_count)
    return {**project_summary(project), "grid_name": grids.get(project.grid_id),
            "category_label": bilingual(CATEGORIES.get(project.category)),
            "stage_label": bilingual(STAGES.get(project.stage)), "phase_label": bilingual(PHASES.get(project.phase)),
            "counts": {**counts, "suppressed": hidden}, "created_on": privacy.public_day(project.created_at),
            "updated_on": privacy.public_day(project.updated_at)}


def public_projects(connection: Connection, community_id: str, filters: dict[str, Any],
                    min_count: int) -> dict[str, Any]:
    """A page of a community's projects (newest first), filtered by grid, stage and category."""
    community = _community_or_404(connection, community_id)
    found, total = _find_projects(connection, {**filters, "community_id": community_id})
    return privacy.public_view("project_page", {
        "community_id": community_id, "items": [_public_summary(p, community.grids, min_count) for p in found],
        "total": total, "page": filters["page"], "per_page": filters["per_page"], "min_count": min_count})


def public_project(connection: Connection, project_id: str, min_count: int) -> dict[str, Any]:
    """A project's public page: its text, stage and timeline, milestones, money, the council's
    verdict, the residents' evaluation and the published results."""
    project = find_project(connection, project_id)
    page = DETAILS.page(connection, project.id, project.version)
    community = COMMUNITIES.get(connection, project.community_id)
    totals = _totals(project, page)
    completed = page.last("ProjectCompleted")
    return privacy.public_view("project", {
        **_public_summary(project, community.grids if community else {}, min_count),
        "description": project.description, "location": project.location, "timeline": _timeline(page),
        "milestones": [{**m, "recorded_on": privacy.public_day(m["at"])} for m in page.all("MilestoneRecorded")],
        "budget": {"estimated_cost_fen": project.estimated_cost_fen, "requested_fen": project.requested_fen,
                   "reserved_fen": project.vote["reserved_fen"] if project.vote else (
                       project.requested_fen if project.funded_by_round else None),
                   "spent_fen": project.spent_fen, "rewards_fen": totals["rewards_fen"]},
        "contributions": {"pledged": totals["pledged"], "delivered": totals["delivered"]},
        "vote": _public_vote(project, page, min_count), "evaluation": _public_evaluation(project, page, min_count),
        "results": _public_results(page, min_count),
        "completed_on": privacy.public_day(completed["at"]) if completed else None, "min_count": min_count})


def _timeline(page: ProjectPage) -> list[dict[str, Any]]:
    """The stages the project entered, with the day each was entered."""
    entered = []
    proposed, closed = page.last("ProjectProposed"), page.last("CouncilVoteClosed")
    if proposed:
        entered.append(("co_plan", proposed["at"]))
    if closed:
        entered.append(("co_build" if closed["tally"]["result"] == "approved" else "rejected", closed["closed_at"]))
    for event_type, stage, key in (("ProjectWithdrawn", "withdrawn", "at"), ("ProjectCompleted", "co_manage", "at"),
                                   ("EvaluationOpened", "co_evaluate", "opened_at"),
                                   ("EvaluationClosed", "co_share", "closed_at")):
        entry = page.last(event_type)
        if entry:
            entered.append((stage, entry[key]))
    return [{"stage": stage, "label": bilingual(STAGES[stage]), "entered_on": privacy.public_day(at)}
            for stage, at in entered]


def _public_vote(project: Project, page: ProjectPage, min_count: int) -> dict[str, Any] | None:
    """The council vote: its size while open; once closed the verdict and the tally, the yes, no
    and abstain counts shown together or not at all."""
    if project.vote is None:
        return None
    opened, closed = page.last("CouncilVoteOpened"), page.last("CouncilVoteClosed")
    tally = closed["tally"] if closed else project.tally()
    sizes, hidden = privacy.suppress({k: tally[k] for k in ("electorate_size", "quorum_required")}, min_count,
                                     together=True)
    ballots, choices = {"ballots": None}, dict.fromkeys(CHOICES)
    if closed:
        ballots, hidden_ballots = privacy.suppress({"ballots": tally["ballots"]}, min_count)
        choices, hidden_choices = privacy.suppress({c: tally[c] for c in CHOICES}, min_count, together=True)
        hidden = hidden + hidden_ballots + hidden_choices
    return {"status": "closed" if closed else "open", "result": tally["result"] if closed else None,
            "quorum_met": tally["quorum_met"] if closed else None, **sizes, **ballots, **choices,
            "opened_on": privacy.public_day(opened["opened_at"]),
            "closed_on": privacy.public_day(closed["closed_at"]) if closed else None, "suppressed": hidden}


def _public_evaluation(project: Project, page: ProjectPage, min_count: int) -> dict[str, Any] | None:
    """The residents' evaluation: how many rated and, once closed, the average — when enough rated."""
    if project.evaluation is None:
        return None
    e = project.evaluation
    closed = page.last("EvaluationClosed")
    counts, hidden = privacy.suppress({"ratings": len(e["ratings"]) if e["count"] is None else e["count"]},
                                      min_count)
    average = None if hidden or not closed else e["average"]
    return {"status": "closed" if closed else "open", "responsible_unit": e["responsible_unit"], **counts,
            "average": average, "opened_on": privacy.public_day(page.last("EvaluationOpened")["opened_at"]),
            "closed_on": privacy.public_day(closed["closed_at"]) if closed else None,
            "suppressed": hidden + (["average"] if hidden and closed else [])}


def _public_results(page: ProjectPage, min_count: int) -> dict[str, Any] | None:
    results = page.last("ResultsPublished")
    if results is None:
        return None
    counts, hidden = privacy.suppress({"contributors": results["contributors"]}, min_count)
    by_type = {t: {**zero_amounts(), **results.get("by_contributor_type", {}).get(t, {})} for t in CONTRIBUTOR_TYPES}
    return {**results, **counts, "by_contributor_type": by_type, "published_on": privacy.public_day(results["at"]),
            "suppressed": hidden}


def public_fund(connection: Connection, community_id: str, limit: int, after: int) -> dict[str, Any]:
    """The community fund: balance and totals, and its ledger after a position, each movement with
    its kind, amount, project and day (never who received or gave it)."""
    _community_or_404(connection, community_id)
    fund = FUNDS.get(connection, community_id) or CommunityFund(id=community_id)
    ledger = LEDGER.page(connection, community_id, limit, after)
    ids = sorted({entry["project_id"] for entry in ledger if entry["project_id"]})
    titles = {p.id: p.title for p in PROJECTS.find(connection, where=[PROJECTS.table.c.id.in_(ids)])} if ids else {}
    entries = []
    for entry in ledger:
        source = entry["detail"].split(" ", 1)[0] if entry["kind"] == "credit" else None
        source = source if source in FUND_SOURCES else None
        entries.append({**entry, "kind_label": bilingual(LEDGER_KINDS.get(entry["kind"])), "source": source,
                        "source_label": bilingual(FUND_SOURCES.get(source or "")),
                        "project_title": titles.get(entry["project_id"]), "on": privacy.public_day(entry["at"])})
    return privacy.public_view("fund", {**fund.view(), "ledger": entries,
                                        "next_after": ledger[-1]["position"] if ledger else after})


# -- participatory budgeting rounds ------------------------------------------------------------------

def _round_columns(budget_round: BudgetRound) -> dict[str, Any]:
    return {"community_id": budget_round.community_id, "status": budget_round.status,
            "closes_at_us": to_micros(parse_time(budget_round.closes_at)) if budget_round.closes_at else 0}


ROUNDS = AggregateView(BudgetRound, "rounds_view", [
    sa.Column("community_id", sa.String(100), nullable=False, index=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("closes_at_us", sa.BigInteger, nullable=False),
], _round_columns)
RULE_LABELS = {budgeting.GREEDY: "得票优先 greedy (most approvals first)",
               budgeting.MES: "平均份额法 Method of Equal Shares, completed by greedy"}


class RoundBallots:
    """Read model: each voter's current ballot in each round (their last ``RoundBallotCast``), with
    the log position it was cast at. A round is tallied from here; its verification recounts the
    log itself (:func:`round_verification`)."""

    name = "round_ballots"

    def __init__(self) -> None:
        self.table = sa.Table(
            "round_ballots", sa.MetaData(),
            sa.Column("round_id", sa.String(100), primary_key=True),
            sa.Column("voter_id", sa.String(100), primary_key=True),
            sa.Column("approvals", sa.Text, nullable=False),
            sa.Column("position", sa.BigInteger, nullable=False),
        )
        self.tables = [self.table]

    def apply(self, connection: Connection, event: StoredEvent) -> None:
        if event.event_type != "RoundBallotCast":
            return
        t, d = self.table, event.data
        approvals = json.dumps(d["approvals"], separators=(",", ":"))
        changed = connection.execute(t.update().where(t.c.round_id == d["round_id"], t.c.voter_id == d["voter_id"])
                                     .values(approvals=approvals, position=event.position)).rowcount
        if not changed:
            connection.execute(t.insert().values(round_id=d["round_id"], voter_id=d["voter_id"],
                                                 approvals=approvals, position=event.position))

    def ballots(self, connection: Connection, round_id: str) -> tuple[list[list[str]], int]:
        """The round's ballots (in the order they were last cast) and the last position among them."""
        t = self.table
        rows = connection.execute(sa.select(t.c.approvals, t.c.position).where(t.c.round_id == round_id)
                                  .order_by(t.c.position)).all()
        return [json.loads(r.approvals) for r in rows], (rows[-1].position if rows else 0)

    def count(self, connection: Connection, round_id: str) -> int:
        t = self.table
        return connection.execute(sa.select(sa.func.count()).select_from(t).where(t.c.round_id == round_id)).scalar()

    def of(self, connection: Connection, round_id: str, voter_id: str) -> list[str] | None:
        t = self.table
        row = connection.execute(sa.select(t.c.approvals).where(t.c.round_id == round_id,
                                                                t.c.voter_id == voter_id)).first()
        return None if row is None else json.loads(row.approvals)


ROUND_BALLOTS = RoundBallots()


def due_rounds(connection: Connection, now: datetime) -> list[str]:
    """Open rounds whose closing time has passed, the earliest first."""
    t = ROUNDS.table
    return list(connection.execute(sa.select(t.c.id).where(t.c.status == "open", t.c.closes_at_us <= to_micros(now))
                                   .order_by(t.c.closes_at_us, t.c.id)).scalars())


def find_round(connection: Connection, round_id: str) -> BudgetRound:
    budget_round = ROUNDS.get(connection, round_id)
    if budget_round is None:
        raise NotFound(f"no budgeting round {round_id}")
    return budget_round


def round_detail(connection: Connection, budget_round: BudgetRound, voter_id: str | None = None) -> dict[str, Any]:
    """A round as its community reads it: counts only, never anyone's approvals but the caller's own
    (``my_ballot``: null when the caller has not voted)."""
    r = budget_round
    ballots = ROUND_BALLOTS.count(connection, r.id)
    titles = {p["project_id"]: p["title"] for p in r.proposals}
    answer = {
        "round_id": r.id, "community_id": r.community_id, "title": r.title, "budget_fen": r.budget_fen,
        "rule": r.rule, "rule_label": bilingual(RULE_LABELS.get(r.rule)), "tie_break": budgeting.TIE_BREAK,
        "proposals": [dict(p) for p in r.proposals], "electorate": r.electorate,
        "electorate_size": r.electorate_size, "max_approvals": r.max_approvals, "confirmation": r.confirmation,
        "opens_at": r.opens_at, "closes_at": r.closes_at, "status": r.status,
        "status_label": bilingual(ROUND_STATUSES.get(r.status)), "ballots": ballots,
        "turnout": round(ballots / r.electorate_size, 4) if r.electorate_size else None,
        "outcome": None, "version": r.version,
    }
    if voter_id is not None:
        answer["my_ballot"] = ROUND_BALLOTS.of(connection, r.id, voter_id)
    if r.outcome is not None:
        answer["outcome"] = round_outcome(r.outcome, titles)
    return answer


def round_outcome(closed: Mapping[str, Any], titles: Mapping[str, str]) -> dict[str, Any]:
    """The ``RoundClosed`` record as read: winners in order with title, cost and support; every
    proposal's explanation in Chinese and English; the closing's time, closer and log position."""
    outcome = budgeting.Outcome.from_dict(closed)
    return {
        "rule": outcome.rule, "parameters": closed["parameters"], "ballots": closed["ballots"],
        "electorate_size": closed["electorate_size"], "inputs_position": closed["inputs_position"],
        "closed_by": closed["closed_by"], "spent_fen": outcome.spent_fen, "leftover_fen": outcome.leftover_fen,
        "winners": [{"rank": i, "project_id": w.proposal_id, "title": titles.get(w.proposal_id), "cost_fen": w.cost_fen,
                     "approvals": w.approvals, "stage": w.stage} for i, w in enumerate(outcome.winners, start=1)],
        "explanations": [{"project_id": e.proposal_id, "title": titles.get(e.proposal_id), "won": e.won,
                          "reason": e.reason, "rank": e.rank, "approvals": e.approvals, "cost_fen": e.cost_fen,
                          "label": budgeting.explanation_label(e)} for e in outcome.explanations],
    }


def list_rounds(connection: Connection, community_id: str | None, status: str | None) -> list[dict[str, Any]]:
    t = ROUNDS.table
    found = ROUNDS.find(connection, order_by=[t.c.created_at_us.desc()], community_id=community_id, status=status)
    return [{"round_id": r.id, "community_id": r.community_id, "title": r.title, "budget_fen": r.budget_fen,
             "rule": r.rule, "status": r.status, "proposals": len(r.proposals), "closes_at": r.closes_at,
             "ballots": ROUND_BALLOTS.count(connection, r.id)} for r in found]


def round_verification(store: EventStore, round_id: str) -> dict[str, Any]:
    """Recount a closed round from the log alone: the round's opening, then every ballot of the round
    in the log up to the recorded ``inputs_position`` (each voter's last one), tallied by the rule
    again; ``identical`` says whether that gives exactly the recorded outcome."""
    events = store.load(BudgetRound.stream_id_for(round_id))
    if not events:
        raise NotFound(f"no budgeting round {round_id}")
    opened = next(e for e in events if e.event_type == "RoundOpened")
    closed = next((e for e in events if e.event_type == "RoundClosed"), None)
    if closed is None:
        raise Conflict(f"budgeting round {round_id} is still open: there is no outcome to verify yet",
                       reason="round_open")
    position = closed.data["inputs_position"]
    ballots = latest_ballots(e for e in store.iterate_all(opened.position, up_to_position=position)
                             if e.event_type == "RoundBallotCast" and e.data["round_id"] == round_id)
    recount = BudgetRound.replay(round_id, [opened]).tally(list(ballots.values())).to_dict()
    recorded = {key: closed.data[key] for key in recount}
    titles = {p["project_id"]: p["title"] for p in opened.data["proposals"]}
    return {"round_id": round_id, "identical": recount == recorded and len(ballots) == closed.data["ballots"],
            "inputs_position": position, "ballots_recounted": len(ballots), "ballots_recorded": closed.data["ballots"],
            "winners_recorded": [w["proposal_id"] for w in recorded["winners"]],
            "winners_recounted": [w["proposal_id"] for w in recount["winners"]],
            "rule": opened.data["rule"], "titles": titles}


# -- budgeting rounds for visitors without a token (共享) ---------------------------------------------

def _public_round_summary(r: BudgetRound, ballots: int, min_count: int) -> dict[str, Any]:
    """While a round is open no count of ballots is shown (as for a council vote)."""
    shown, hidden = ({"ballots": None}, [])
    if r.status == "closed":
        shown, hidden = privacy.suppress({"ballots": ballots}, min_count)
    return {"round_id": r.id, "community_id": r.community_id, "title": r.title, "status": r.status,
            "status_label": bilingual(ROUND_STATUSES.get(r.status)), "budget_fen": r.budget_fen, "rule": r.rule,
            "rule_label": bilingual(RULE_LABELS.get(r.rule)), "proposal_count": len(r.proposals),
            "ballots": shown["ballots"], "opens_on": privacy.public_day(r.opens_at),
            "closes_on": privacy.public_day(r.closes_at), "suppressed": hidden}


def public_rounds(connection: Connection, community_id: str, min_count: int) -> dict[str, Any]:
    """A community's budgeting rounds, newest first, as anyone may read them."""
    _community_or_404(connection, community_id)
    t = ROUNDS.table
    found = ROUNDS.find(connection, order_by=[t.c.created_at_us.desc()], community_id=community_id)
    return privacy.public_view("round_page", {
        "community_id": community_id, "min_count": min_count,
        "items": [_public_round_summary(r, ROUND_BALLOTS.count(connection, r.id), min_count) for r in found]})


def public_round(connection: Connection, round_id: str, min_count: int) -> dict[str, Any]:
    """A round as anyone may read it: its proposals and, once closed, the outcome with why each
    proposal won or lost. Counts of people (ballots, a proposal's approvals) below ``min_count`` are
    null and named in ``suppressed``, and so is an explanation resting on such a count."""
    r = find_round(connection, round_id)
    answer = {**_public_round_summary(r, ROUND_BALLOTS.count(connection, r.id), min_count),
              "tie_break": budgeting.TIE_BREAK, "proposals": [dict(p) for p in r.proposals],
              "outcome": None, "min_count": min_count}
    if r.outcome is not None:
        outcome = round_outcome(r.outcome, {p["project_id"]: p["title"] for p in r.proposals})

        def counted(entry: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
            shown, hidden = privacy.suppress({"approvals": entry["approvals"]}, min_count)
            item = {k: entry[k] for k in keep}
            item["approvals"] = shown["approvals"]
            if "label" in item and hidden:
                item["label"] = None  # its words give the count
            return {**item, "suppressed": hidden + (["label"] if hidden and "label" in keep else [])}

        answer["outcome"] = {
            "spent_fen": outcome["spent_fen"], "leftover_fen": outcome["leftover_fen"],
            "closed_on": privacy.public_day(r.updated_at),
            "winners": [counted(w, ("rank", "project_id", "title", "cost_fen", "stage")) for w in outcome["winners"]],
            # ``result``: why it won or lost as a code (the explanation's reason: won_mes, lost_did_not_fit …)
            "explanations": [counted({**e, "result": e["reason"]},
                                     ("project_id", "title", "won", "result", "rank", "cost_fen", "label"))
                             for e in outcome["explanations"]]}
    return privacy.public_view("round", answer)

