"""Open data of the volunteers service (共享 开放数据), per community: volunteer hours per month.

``volunteer-hours``: approved volunteer minutes and hours (活动 and 共同缔造 project labour) per
calendar month (China Standard Time), with how many volunteers gave them — the members' read
``GET /hours/<community_id>`` (:meth:`services.volunteers.views.CreditsView.per_month`) from the
community's first month with approved hours to the current month, months without any listed with
zero. A month with fewer than ``VOLUNTEERS_PUBLIC_MIN_COUNT`` volunteers has its number of
volunteers *and* its minutes and hours empty (the hours of one or two people are theirs). No card,
name or phone is in it.

Served under ``/public/open-data/communities/<community_id>/volunteers/`` with a
``datapackage.json`` (:mod:`services.kernel.open_data`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.kernel import open_data, privacy
from services.kernel.errors import NotFound
from services.kernel.events import LOCAL_TZ, from_micros
from services.kernel.open_data import Dataset, Field, Snapshot, Table, suppressed_field
from services.kernel.web import service_container
from services.volunteers.views import ACTIVITIES, CARDS, CREDITS

F = Field
HOURS = Table("volunteer-hours", "open_volunteer_month", "志愿服务时长(按月)", "volunteer hours per month", (
    F("community_id", "string", "社区编号", "the community's id"),
    F("month", "yearmonth", "月份(北京时间)", "calendar month (China Standard Time)"),
    F("minutes", "integer", "经审核的志愿服务时长", "approved volunteer time", "minutes"),
    F("hours", "number", "经审核的志愿服务时长(小时,保留一位小数)", "approved volunteer time, to a tenth of an hour",
      "hours"),
    F("volunteers", "integer", "提供服务的志愿者人数", "volunteers who gave it", "people"),
    suppressed_field()), primary_key=("community_id", "month"))
DATASET = Dataset("volunteers", "义工卡志愿服务时长", "volunteer card (义工卡) hours", (HOURS,), sources=(
    ("社区志愿服务时长(成员可读)members' hours per month", "/api/v1/hours/{community_id}"),))


def snapshot(connection: Connection, community_id: str) -> Snapshot:
    """The community's volunteer hours per month (404: no card, activity or credit of it)."""
    if not known(connection, community_id):
        raise NotFound(f"no community {community_id}")
    container = service_container()
    today = container.bus.clock().astimezone(LOCAL_TZ).date()
    t = CREDITS.table
    first_day = connection.execute(sa.select(sa.func.min(t.c.day)).where(t.c.community_id == community_id)).scalar()
    found = CREDITS.per_month(connection, community_id, first_day) if first_day else {}
    rows = [month_row(community_id, month, found.get(month, {}), container.settings.public_min_count)
            for month in months(first_day[:7] if first_day else None, f"{today.year}-{today.month:02d}")]
    # Last-Modified: the newest credit, or the start of this month (its row is new then).
    newest = connection.execute(sa.select(sa.func.max(t.c.at_us)).where(t.c.community_id == community_id)).scalar()
    month_start = datetime(today.year, today.month, 1, tzinfo=LOCAL_TZ)
    return Snapshot({"volunteer-hours": rows}, max(from_micros(newest), month_start) if newest else month_start)


def months(first: str | None, last: str) -> list[str]:
    """Every month from ``first`` to ``last`` (YYYY-MM), both included; ``last`` alone without a first."""
    if first is None or first > last:
        return [last]
    year, month = int(first[:4]), int(first[5:7])
    found = []
    while f"{year}-{month:02d}" <= last:
        found.append(f"{year}-{month:02d}")
        year, month = (year, month + 1) if month < 12 else (year + 1, 1)
    return found


def month_row(community_id: str, month: str, found: dict[str, Any], min_count: int) -> dict[str, Any]:
    minutes, volunteers = found.get("minutes", 0), found.get("volunteers", 0)
    counts, hidden = privacy.suppress({"volunteers": volunteers}, min_count)
    if hidden:  # the time of so few people is theirs
        hidden = ["minutes", "hours", *hidden]
    return {"community_id": community_id, "month": month, "minutes": None if hidden else minutes,
            "hours": None if hidden else round(minutes / 60, 1), "volunteers": counts["volunteers"],
            "suppressed": " ".join(hidden)}


def known(connection: Connection, community_id: str) -> bool:
    for table in (CARDS.table, ACTIVITIES.table, CREDITS.table):
        found = sa.select(table.c.community_id).where(table.c.community_id == community_id).limit(1)
        if connection.execute(found).first():
            return True
    return False


blueprint = open_data.blueprint(DATASET, snapshot, "开放数据 open data: volunteer hours per month and community, in "
                                                   "CSV and JSON with a data package (no token)")
