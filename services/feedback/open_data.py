"""Open data of the feedback service (共享 开放数据), per community: the published rankings (评价排队).

``rankings``: one row per subject of the latest edition of every published ranking of the
community (each kind, each period) — units, services and projects by name, cadres and grid workers
by name in their official role (the subject's kind) with their unit — with the number of ratings
(n) and the scores, exactly as the public ranking read shows them (:func:`services.feedback.views.public_ranking`):
a subject rated by fewer than ``FEEDBACK_PUBLIC_MIN_COUNT`` residents has n and its scores empty.
Never who rated, nor the ratings per level. Rankings that were never published are not open data.

Served under ``/public/open-data/communities/<community_id>/feedback/`` with a ``datapackage.json``
(:mod:`services.kernel.open_data`).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.feedback import views
from services.feedback.domain import SUBJECT_KINDS
from services.kernel import open_data
from services.kernel.errors import NotFound
from services.kernel.events import from_micros
from services.kernel.open_data import Dataset, Field, Snapshot, Table, suppressed_field
from services.kernel.web import service_container

F = Field
ROLES = {"cadre": ("社区干部", "community cadre"), "grid_worker": ("网格员", "grid worker"),
         "unit": ("单位", "unit"), "service": ("服务", "service"), "project": ("项目", "project")}
RANKINGS = Table("rankings", "open_ranking_entry", "已公布的评价排名", "published satisfaction rankings", (
    F("community_id", "string", "社区编号", "the community's id"),
    F("kind", "string", "被评价对象类型代码:cadre 社区干部, grid_worker 网格员, unit 单位, service 服务, project 项目",
      "kind of subject (for people: their official role): cadre, grid_worker, unit, service, project"),
    F("role_zh", "string", "类型(职务)", "kind or official role (Chinese)"),
    F("role_en", "string", "类型(职务,英文)", "kind or official role (English)"),
    F("period", "string", "评价周期(YYYY-MM 月或 YYYY-Qn 季度)", "rating period (YYYY-MM or YYYY-Qn)"),
    F("edition", "integer", "版次(同一周期的最新一版)", "edition (the latest of the period)"),
    F("provisional", "boolean", "是否月中临时排名", "whether a provisional (mid-period) edition"),
    F("published_on", "date", "公布日期", "day published (China Standard Time)"),
    F("formula_version", "string", "计分公式版本", "version of the scoring formula"),
    F("min_ratings", "integer", "参与排名所需最少评价数", "ratings needed to be ranked", "ratings"),
    F("rank", "integer", "名次(评价数不足者为空)", "rank (empty: not enough ratings to be ranked)"),
    F("name", "string", "名称或姓名(公职人员以公职身份公开)", "name (officials by name, in their official role)"),
    F("unit_id", "string", "所属单位编号", "the unit a cadre or grid worker belongs to"),
    F("unit_name", "string", "所属单位名称", "the unit's name (when registered as a subject)"),
    F("project_id", "string", "项目编号(项目评价)", "the project's id (rankings of projects)"),
    F("ratings", "integer", "评价人数 n", "residents who rated (n)", "ratings"),
    F("score", "number", "排名得分(贝叶斯平均,1-5)", "ranking score (Bayesian average, 1 to 5)", "score"),
    F("average", "number", "平均分(1-5)", "average level (1 to 5)", "score"),
    F("satisfaction_rate", "number", "满意率(4-5 分占比)", "share of ratings of 4 or 5", "ratio (0 to 1)"),
    suppressed_field()), primary_key=("community_id", "kind", "period", "name", "unit_id"))
DATASET = Dataset("feedback", "居民评价排名", "residents' satisfaction rankings", (RANKINGS,), sources=(
    ("公开评价排名 public rankings", "/api/v1/public/rankings/{community_id}/<kind>/<period>"),))
ALL_ENTRIES = 1_000_000  # a ranking's every entry (a page of the public read holds at most 1000)


def snapshot(connection: Connection, community_id: str) -> Snapshot:
    """Every published ranking of the community, latest edition each (404: a community the service
    knows nothing of — no policy, no subject, no ranking)."""
    if not known(connection, community_id):
        raise NotFound(f"no community {community_id}")
    min_count = service_container().settings.public_min_count
    units = {s.id: s.name for s in views.SUBJECTS.find(connection, community_id=community_id, kind="unit")}
    published = sorted(views.RANKINGS.find(connection, community_id=community_id),
                       key=lambda r: (SUBJECT_KINDS.index(r.kind) if r.kind in SUBJECT_KINDS else 99, r.kind, r.period))
    rows = []
    for ranking in published:
        page = views.public_ranking(connection, community_id, ranking.kind, ranking.period, ALL_ENTRIES, 0, min_count)
        if page is not None:
            rows.extend(ranking_rows(community_id, page, units))
    return Snapshot({"rankings": rows}, newest_change(connection, community_id))


def ranking_rows(community_id: str, page: dict[str, Any], units: dict[str, str]) -> list[dict[str, Any]]:
    zh, en = ROLES.get(page["kind"], (page["kind"], page["kind"]))
    head = {"community_id": community_id, "kind": page["kind"], "role_zh": zh, "role_en": en,
            "period": page["period"], "edition": page["edition"], "provisional": bool(page["provisional"]),
            "published_on": page["published_on"], "formula_version": page["formula"]["version"],
            "min_ratings": page["formula"]["min_ratings"]}
    return [{**head, "rank": entry["rank"], "name": entry["name"], "unit_id": entry["unit_id"],
             "unit_name": units.get(entry["unit_id"] or ""), "project_id": entry["project_id"],
             "ratings": entry["ratings"], **{k: _number(entry[k]) for k in ("score", "average", "satisfaction_rate")},
             "suppressed": " ".join(entry["suppressed"])}
            for entry in [*page["ranked"], *page["not_enough_ratings"]]]


def _number(value: Any) -> float | None:
    """A figure of the ranking (a decimal string, 4 places) as a number: a float's shortest form
    is the same digits."""
    return None if value is None else float(value)


def known(connection: Connection, community_id: str) -> bool:
    for view in (views.POLICIES, views.SUBJECTS, views.RANKINGS):
        column = view.table.c.id if view is views.POLICIES else view.table.c.community_id
        if connection.execute(sa.select(view.table.c.id).where(column == community_id).limit(1)).first():
            return True
    return False


def newest_change(connection: Connection, community_id: str):
    """When a ranking of the community was last published, or a subject (a unit's name) changed."""
    newest = 0
    for view in (views.RANKINGS, views.SUBJECTS):
        found = connection.execute(sa.select(sa.func.max(view.table.c.updated_at_us))
                                   .where(view.table.c.community_id == community_id)).scalar()
        newest = max(newest, found or 0)
    return from_micros(newest) if newest else None


blueprint = open_data.blueprint(DATASET, snapshot, "开放数据 open data: the published rankings per community, in CSV "
                                                   "and JSON with a data package (no token)")
