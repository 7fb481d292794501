"""The community dashboard (社区看板) for members of the community: projects per stage, the fund,
volunteer hours per month, the satisfaction ranking's top and bottom, follow-ups open and overdue.

One call to the gateway's composed view (``/communities/<id>/dashboard``): a part whose service is
down is missing there and shows "暂时无法获取" here. The charts are Apache ECharts (vendored); their
options are made here, on the server, and handed to ``static/dashboard.js`` as JSON data (the page
runs no inline script). Every chart has its figures in a table too, for screen readers and for
anyone without JavaScript.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import flask
from flask_babel import gettext as _

from web import labels
from web.account import require_signin
from web.upstream import Unavailable, part

blueprint = flask.Blueprint("dashboard", __name__)
KINDS = ("cadre", "grid_worker", "unit", "service", "project")


def _number(value) -> float | None:
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError, TypeError):
        return None


def _bar(categories: list[str], values: list, name: str, *, horizontal: bool = False) -> dict:
    category_axis = {"type": "category", "data": categories, "axisLabel": {"interval": 0}}
    value_axis = {"type": "value"}
    return {
        "aria": {"enabled": True},
        "grid": {"left": 8, "right": 16, "top": 24, "bottom": 8, "containLabel": True},
        "tooltip": {"trigger": "axis"},
        "xAxis": value_axis if horizontal else category_axis,
        "yAxis": category_axis if horizontal else value_axis,
        "series": [{"type": "bar", "name": name, "data": values, "label": {"show": True,
                                                                           "position": "right" if horizontal else "top"}}],
        "color": ["#1d5a8c"],
    }


def charts_of(view: dict) -> dict:
    """The ECharts options of the parts the view has (a missing part has no chart)."""
    charts = {}
    projects = view.get("projects")
    if isinstance(projects, dict):
        per_stage = projects.get("per_stage") or {}
        stages = [s for s in labels.STAGES if s in per_stage or s in labels.FIVE_STAGES]
        charts["stages"] = _bar([labels.label(labels.STAGES, s) for s in stages],
                                [per_stage.get(s, 0) for s in stages], _("Projects"))
    hours = view.get("hours_per_month")
    if isinstance(hours, list):
        charts["hours"] = _bar([h["month"] for h in hours], [h["hours"] for h in hours], _("Volunteer hours"))
        charts["hours"]["series"][0]["type"] = "line"
        charts["hours"]["series"][0]["areaStyle"] = {}
    ranking = view.get("satisfaction")
    if isinstance(ranking, dict):
        entries = list(ranking.get("top") or []) + [e for e in ranking.get("bottom") or []
                                                   if e not in (ranking.get("top") or [])]
        entries.sort(key=lambda e: _number(e.get("score")) or 0)
        scores = [_number(e.get("score")) for e in entries]
        charts["ranking"] = _bar([e.get("name", "") for e in entries],
                                 [None if score is None else round(score, 2) for score in scores],
                                 _("Score"), horizontal=True)
    return charts


@blueprint.get("/c/<community_id>/dashboard")
def dashboard(community_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    kind = flask.request.args.get("kind", "cadre")
    if kind not in KINDS:
        kind = "cadre"
    view = part(lambda c: c.get(f"/communities/{quote(community_id, safe='')}/dashboard", kind=kind), absent=None)
    if view is None:
        flask.abort(404)
    if isinstance(view, Unavailable):
        return flask.render_template("dashboard.html", community_id=community_id, view=None, down=view, kind=kind,
                                     kinds=KINDS, charts={}, title=_("Community dashboard")), 503
    missing = {entry["part"] for entry in view.get("missing", [])}
    shown = {name: (Unavailable() if name in missing else view.get(name))
             for name in ("projects", "fund", "top_volunteers", "hours_per_month", "satisfaction", "follow_ups")}
    return flask.render_template("dashboard.html", community_id=community_id, view=shown, kind=kind, kinds=KINDS,
                                 charts=charts_of({k: v for k, v in shown.items() if not isinstance(v, Unavailable)}),
                                 title=_("Community dashboard"))
