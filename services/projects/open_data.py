"""Open data of the projects service (共享 开放数据), per community, from the same public reads anyone
may make without a token (:mod:`services.projects.views`, ``public_*``):

- ``projects``: every project with its stage, category, grid, money, contributions and days;
- ``fund-ledger``: every movement of the community fund (never who gave or received it);
- ``results``: the published results of each project (共享), with the residents' evaluation;
- ``rewards``: per project with published results, what each type of contributor delivered and the
  rewards (以奖代补) paid to them — organisations (enterprises, social organisations) by name, one
  row each; residents never by name, as one aggregate row whose counts of people are suppressed
  when small.

Served under ``/public/open-data/communities/<community_id>/projects/`` with a ``datapackage.json``
(:mod:`services.kernel.open_data`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.kernel import privacy
from services.kernel.errors import NotFound
from services.kernel.events import from_micros
from services.kernel import open_data
from services.kernel.open_data import Dataset, Field, Snapshot, Table, suppressed_field
from services.kernel.web import service_container
from services.projects import views
from services.projects.domain import CONTRIBUTOR_TYPES, Project, zero_amounts

F = Field
COMMUNITY = F("community_id", "string", "社区编号", "the community's id")
PROJECT_ID = F("project_id", "string", "项目编号", "the project's id")
AMOUNTS = (F("labour_minutes", "integer", "投工投劳(分钟)", "labour given", "minutes"),
           F("skills_minutes", "integer", "技能服务(分钟)", "skilled work given", "minutes"),
           F("money_fen", "integer", "出资(分)", "money given", "fen (0.01 yuan)"),
           F("materials_fen", "integer", "捐物折价(分)", "materials given, at their value", "fen (0.01 yuan)"))
DELIVERED = tuple(F(f.name, f.type, f"已到位{f.zh}", f"{f.en} (delivered)", f.unit) for f in AMOUNTS)
FEN = "fen (0.01 yuan)"

PROJECTS = Table("projects", "open_project", "项目", "projects", (
    COMMUNITY, PROJECT_ID, F("title", "string", "项目名称", "the project's title"),
    F("category", "string", "类别代码", "category code"), F("category_zh", "string", "类别", "category (Chinese)"),
    F("category_en", "string", "类别(英文)", "category (English)"),
    F("grid_id", "string", "网格编号", "the grid's id"), F("grid_name", "string", "网格名称", "the grid's name"),
    F("stage", "string", "阶段代码:co_plan 共谋, co_build 共建, co_manage 共管, co_evaluate 共评, co_share 共享, "
                         "rejected 否决, withdrawn 撤回",
      "stage code: co_plan, co_build, co_manage, co_evaluate, co_share, rejected, withdrawn"),
    F("stage_zh", "string", "阶段", "stage (Chinese)"), F("stage_en", "string", "阶段(英文)", "stage (English)"),
    F("phase", "string", "阶段内的步骤代码", "step within the stage (code)"),
    F("progress", "integer", "工程进度", "construction progress", "percent"),
    F("estimated_cost_fen", "integer", "估算总造价", "estimated cost", FEN),
    F("requested_fen", "integer", "申请社区基金", "money requested from the community fund", FEN),
    F("reserved_fen", "integer", "表决时预留的基金", "fund money reserved at the council vote", FEN),
    F("spent_fen", "integer", "已支出", "money spent", FEN),
    F("rewards_fen", "integer", "以奖代补已支付", "rewards (以奖代补) paid", FEN),
    *DELIVERED,
    F("cosignatures", "integer", "联署人数", "residents who co-signed the proposal", "people"),
    F("pledges", "integer", "认捐认领笔数", "pledges made", "pledges"),
    F("contributors", "integer", "投入者人数(居民与组织)", "contributors (residents and organisations)", "contributors"),
    F("vote_result", "string", "居民代表表决结果:approved 通过, rejected 否决", "the council vote: approved or rejected"),
    F("created_on", "date", "提出日期", "day proposed (China Standard Time)"),
    F("decided_on", "date", "表决结束日期", "day the council vote closed"),
    F("completed_on", "date", "竣工日期", "day completed"),
    F("results_published_on", "date", "成果公示日期", "day the results were published"),
    F("updated_on", "date", "最近更新日期", "day of the latest change"),
    suppressed_field()), primary_key=("community_id", "project_id"))

FUND_LEDGER = Table("fund-ledger", "open_fund_entry", "社区基金台账", "community fund ledger", (
    COMMUNITY, F("position", "integer", "台账序号(事件日志位置,递增)", "ledger position (the event log's, increasing)"),
    F("on", "date", "日期", "day (China Standard Time)"),
    F("kind", "string", "类型代码:credit 入账, reservation 预留, release 释放, spending 支出, reward 以奖代补, "
      "transfer 参与式预算轮次选中后转入项目", "kind: credit, reservation, release, spending, reward, "
      "transfer (from a budgeting round to a project it funded)"),
    F("kind_zh", "string", "类型", "kind (Chinese)"), F("kind_en", "string", "类型(英文)", "kind (English)"),
    F("source", "string", "入账来源代码:government_allocation 政府拨款, reward_pool 以奖代补奖励资金, donation 捐赠",
      "source of a credit: government_allocation, reward_pool, donation"),
    F("source_zh", "string", "入账来源", "source (Chinese)"), F("source_en", "string", "入账来源(英文)", "source (English)"),
    F("amount_fen", "integer", "金额", "amount", FEN),
    F("balance_after_fen", "integer", "变动后可用余额", "available balance after the movement", FEN),
    PROJECT_ID, F("project_title", "string", "项目名称", "the project's title")), primary_key=("community_id", "position"))

RESULTS = Table("results", "open_results", "项目成果公示", "published project results", (
    COMMUNITY, PROJECT_ID, F("project_title", "string", "项目名称", "the project's title"),
    F("published_on", "date", "公示日期", "day published"),
    F("benefits", "string", "成效说明(社区发布)", "the benefits, as the community published them"),
    F("volunteer_minutes", "integer", "志愿服务时长", "volunteer time given", "minutes"),
    *DELIVERED, F("spent_fen", "integer", "基金支出", "money spent from the fund", FEN),
    F("rewards_fen", "integer", "以奖代补已支付", "rewards (以奖代补) paid", FEN),
    F("contributors", "integer", "投入者人数", "contributors", "contributors"),
    F("evaluation_ratings", "integer", "参与评议的居民人数", "residents who evaluated the project", "people"),
    F("evaluation_average", "number", "评议平均分(1-5)", "average evaluation score (1 to 5)", "score"),
    suppressed_field()), primary_key=("community_id", "project_id"))

REWARDS = Table("rewards", "open_rewards", "投入与以奖代补(按投入者类型)", "contributions and rewards by contributor type", (
    COMMUNITY, PROJECT_ID, F("project_title", "string", "项目名称", "the project's title"),
    F("contributor_type", "string", "投入者类型代码:resident 居民, enterprise 企业, social_organisation 社会组织",
      "contributor type: resident, enterprise, social_organisation"),
    F("contributor_type_zh", "string", "投入者类型", "contributor type (Chinese)"),
    F("contributor_type_en", "string", "投入者类型(英文)", "contributor type (English)"),
    F("organisation", "string", "组织名称(企业、社会组织;居民不具名,合为一行)",
      "the organisation's name (enterprises, social organisations); residents are never named: one row for all"),
    F("contributors", "integer", "投入者人数", "contributors in this row", "contributors"),
    *DELIVERED, F("rewarded", "integer", "获奖励的投入者人数", "contributors in this row who were rewarded", "contributors"),
    F("rewards_fen", "integer", "以奖代补金额", "rewards (以奖代补) paid to them", FEN),
    suppressed_field()), primary_key=("community_id", "project_id", "contributor_type", "organisation"))

DATASET = Dataset("projects", "共同缔造项目、社区基金与成果", "co-creation projects, community fund and results",
                  (PROJECTS, FUND_LEDGER, RESULTS, REWARDS), sources=(
                      ("公开项目列表 public project list", "/api/v1/public/communities/{community_id}/projects"),
                      ("项目公开页 public project pages", "/api/v1/public/projects/<project_id>"),
                      ("社区基金 community fund", "/api/v1/public/communities/{community_id}/fund")))
CONTRIBUTOR_LABELS = {"resident": ("居民", "residents"), "enterprise": ("企业", "enterprise"),
                      "social_organisation": ("社会组织", "social organisation")}
LEDGER_PAGE = 1000


def snapshot(connection: Connection, community_id: str) -> Snapshot:
    """The community's projects, fund ledger, results and rewards as open data (404: no such community)."""
    if views.COMMUNITIES.get(connection, community_id) is None:
        raise NotFound(f"no community {community_id}")
    min_count = service_container().settings.public_min_count
    projects = views.PROJECTS.find(connection, order_by=[views.PROJECTS.table.c.created_at_us],
                                   community_id=community_id)
    rows: dict[str, list[dict[str, Any]]] = {"projects": [], "results": [], "rewards": []}
    for project in projects:
        page = views.public_project(connection, project.id, min_count)
        rows["projects"].append(project_row(community_id, page))
        if page["results"] is not None:
            rows["results"].append(results_row(community_id, page))
            rows["rewards"].extend(reward_rows(connection, community_id, project, min_count))
    return Snapshot({**rows, "fund-ledger": ledger_rows(connection, community_id)},
                    newest_change(connection, community_id))


def project_row(community_id: str, page: dict[str, Any]) -> dict[str, Any]:
    entered = {t["stage"]: t["entered_on"] for t in page["timeline"]}
    counts, budget, vote, results = page["counts"], page["budget"], page["vote"], page["results"]
    return {
        "community_id": community_id, **{k: page[k] for k in ("project_id", "title", "category")},
        "category_zh": page["category_label"]["zh"], "category_en": page["category_label"]["en"],
        "grid_id": page["grid_id"], "grid_name": page["grid_name"], "stage": page["stage"],
        "stage_zh": page["stage_label"]["zh"], "stage_en": page["stage_label"]["en"], "phase": page["phase"],
        "progress": page["progress"],
        **{k: budget[k] for k in ("estimated_cost_fen", "requested_fen", "reserved_fen", "spent_fen", "rewards_fen")},
        **page["contributions"]["delivered"], **{k: counts[k] for k in ("cosignatures", "pledges", "contributors")},
        "vote_result": vote["result"] if vote else None, "created_on": page["created_on"],
        "decided_on": entered.get("co_build") or entered.get("rejected"), "completed_on": page["completed_on"],
        "results_published_on": results["published_on"] if results else None, "updated_on": page["updated_on"],
        "suppressed": " ".join(counts["suppressed"])}


def results_row(community_id: str, page: dict[str, Any]) -> dict[str, Any]:
    results, evaluation = page["results"], page["evaluation"] or {}
    hidden = [*results["suppressed"], *(f"evaluation_{name}" for name in evaluation.get("suppressed", []))]
    return {"community_id": community_id, "project_id": page["project_id"], "project_title": page["title"],
            "published_on": results["published_on"], "benefits": results["benefits"],
            "volunteer_minutes": results["volunteer_minutes"], **{**zero_amounts(), **results["contributions"]},
            "spent_fen": results["spent_fen"], "rewards_fen": page["budget"]["rewards_fen"],
            "contributors": results["contributors"], "evaluation_ratings": evaluation.get("ratings"),
            "evaluation_average": evaluation.get("average"), "suppressed": " ".join(hidden)}


def reward_rows(connection: Connection, community_id: str, project: Project, min_count: int) -> list[dict[str, Any]]:
    """What each type of contributor delivered and was paid: residents together (never named, their
    counts suppressed when small), each organisation on its own row, by name."""
    kinds = {p["contributor_id"]: p["contributor_type"] for p in project.pledges.values()}
    groups: dict[tuple[str, str | None], dict[str, Any]] = {
        ("resident", None): {"name": None, "ids": set(), "rewarded": set(), "amounts": zero_amounts(), "fen": 0}}

    def group(contributor_id: str, kind: str, name: str | None) -> dict[str, Any]:
        key = ("resident", None) if kind == "resident" else (kind, contributor_id)
        return groups.setdefault(key, {"name": name, "ids": set(), "rewarded": set(), "amounts": zero_amounts(),
                                       "fen": 0})

    for pledge in project.pledges.values():
        found = group(pledge["contributor_id"], pledge["contributor_type"], pledge["contributor_name"])
        found["ids"].add(pledge["contributor_id"])
        for key, value in pledge["delivered"].items():
            found["amounts"][key] += value
    page = views.DETAILS.page(connection, project.id, project.version)
    for reward in page.all("RewardGranted"):
        found = group(reward["recipient_id"], kinds.get(reward["recipient_id"], "resident"), None)
        found["rewarded"].add(reward["recipient_id"])
        found["fen"] += reward["amount_fen"]
    rows = []
    order = sorted(groups, key=lambda key: (CONTRIBUTOR_TYPES.index(key[0]), groups[key]["name"] or "", key[1] or ""))
    for kind, _contributor in order:
        found = groups[(kind, _contributor)]
        counts, hidden = {"contributors": len(found["ids"]), "rewarded": len(found["rewarded"])}, []
        if kind == "resident":  # people: small counts suppressed; organisations are not people
            counts, hidden = privacy.suppress(counts, min_count)
        zh, en = CONTRIBUTOR_LABELS[kind]
        rows.append({"community_id": community_id, "project_id": project.id, "project_title": project.title,
                     "contributor_type": kind, "contributor_type_zh": zh, "contributor_type_en": en,
                     "organisation": None if kind == "resident" else found["name"], **found["amounts"],
                     "contributors": counts["contributors"], "rewarded": counts["rewarded"],
                     "rewards_fen": found["fen"], "suppressed": " ".join(hidden)})
    return rows


def ledger_rows(connection: Connection, community_id: str) -> list[dict[str, Any]]:
    rows, after = [], 0
    while True:
        page = views.public_fund(connection, community_id, LEDGER_PAGE, after)
        for entry in page["ledger"]:
            kind, source = entry["kind_label"] or {}, entry["source_label"] or {}
            rows.append({"community_id": community_id, "position": entry["position"], "on": entry["on"],
                         "kind": entry["kind"], "kind_zh": kind.get("zh"), "kind_en": kind.get("en"),
                         "source": entry["source"], "source_zh": source.get("zh"), "source_en": source.get("en"),
                         "amount_fen": entry["amount_fen"], "balance_after_fen": entry["balance_after_fen"],
                         "project_id": entry["project_id"], "project_title": entry["project_title"]})
        if len(page["ledger"]) < LEDGER_PAGE:
            return rows
        after = page["next_after"]


def newest_change(connection: Connection, community_id: str):
    """When the community, its fund or one of its projects last changed."""
    newest = 0
    for view, condition in ((views.COMMUNITIES, views.COMMUNITIES.table.c.id == community_id),
                            (views.FUNDS, views.FUNDS.table.c.id == community_id),
                            (views.PROJECTS, views.PROJECTS.table.c.community_id == community_id)):
        found = connection.execute(sa.select(sa.func.max(view.table.c.updated_at_us)).where(condition)).scalar()
        newest = max(newest, found or 0)
    return from_micros(newest) if newest else None


blueprint = open_data.blueprint(DATASET, snapshot, "开放数据 open data: projects, the community fund, results and rewards "
                                                   "per community, in CSV and JSON with a data package (no token)")
