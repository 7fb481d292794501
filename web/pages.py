"""Pages anyone can open, signed in or not (共享 transparency): a community's projects, a project's
page, the fund ledger and the published satisfaction rankings.

A visitor who is not signed in is served from the gateway's public routes (``/api/v1/public/...``:
non-personal fields only, small counts suppressed); a signed-in member of the community sees the
project page as the API shows it to them (opinions, contributions, history, the buttons for what
they may do now).
"""

from __future__ import annotations

import re
from urllib.parse import quote

import flask
from flask_babel import gettext as _

from cocreate_client import ApiError
from web import labels
from web.upstream import Unavailable, part, parts

blueprint = flask.Blueprint("pages", __name__)
LEDGER_PAGE = 100
RANKING_KINDS = ("cadre", "grid_worker", "unit", "service", "project")
# the project actions these pages offer a form for (the staff's other ones come with their pages)
OFFERED = ("cosign", "post_opinion", "pledge", "rate", "report_problem", "cast_ballot", "open_vote", "close_vote",
           "confirm_delivery", "record_spending", "record_milestone", "complete")


def q(value: str) -> str:
    return quote(value, safe="")


def signed_in() -> bool:
    return bool(flask.session.get("token"))


def htmx_target() -> str | None:
    return flask.request.headers.get("HX-Target") if flask.request.headers.get("HX-Request") else None


@blueprint.get("/")
def home():
    settings = flask.current_app.extensions["cocreate.web_settings"]
    wanted = flask.request.args.get("community", "").strip()
    community = wanted or flask.session.get("community") or settings.default_community
    if community:
        return flask.redirect(flask.url_for("pages.community", community_id=community))
    return flask.render_template("home.html", title=_("Co-creation"))


@blueprint.get("/c/<community_id>")
def community(community_id: str):
    args = flask.request.args
    # a value the API would refuse (a stale or crafted link) is no filter rather than an error page
    filters = {"grid_id": args.get("grid_id") or None,
               "stage": args.get("stage") if args.get("stage") in labels.STAGES else None,
               "category": args.get("category") if args.get("category") in labels.CATEGORIES else None}
    if filters["grid_id"] and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", filters["grid_id"]):
        filters["grid_id"] = None
    page_number = args.get("page", "1")
    page = int(page_number) if page_number.isdecimal() and len(page_number) <= 4 else 0  # 1 to 9999
    filters["page"] = page if page > 0 else 1
    header = part(lambda c: c.get(f"/public/communities/{q(community_id)}"), anonymous=True, absent=None)
    if header is None:
        flask.abort(404)
    projects = part(lambda c: c.get(f"/public/communities/{q(community_id)}/projects", **filters), anonymous=True)
    context = {"community_id": community_id, "community": header, "projects": projects, "filters": filters,
               "filter_args": {k: v for k, v in filters.items() if v and k != "page"},
               "title": header.get("name") if header else _("Projects")}
    if htmx_target() == "project-list":
        return flask.render_template("partials/project_list.html", **context)
    return flask.render_template("community.html", **context)


@blueprint.get("/c/<community_id>/fund")
def fund(community_id: str):
    header = part(lambda c: c.get(f"/public/communities/{q(community_id)}"), anonymous=True, absent=None)
    if header is None:
        flask.abort(404)
    after = flask.request.args.get("after", "0")
    after = int(after) if after.isdecimal() and len(after) < 15 else 0
    ledger = part(lambda c: c.get(f"/public/communities/{q(community_id)}/fund", after=after, limit=LEDGER_PAGE),
                  anonymous=True)
    return flask.render_template("fund.html", community_id=community_id, community=header, fund=ledger,
                                 page_size=LEDGER_PAGE,
                                 title=_("Community fund"))


@blueprint.get("/c/<community_id>/rankings")
def rankings(community_id: str):
    kind = flask.request.args.get("kind", "cadre")
    if kind not in RANKING_KINDS:
        flask.abort(404)
    header = part(lambda c: c.get(f"/public/communities/{q(community_id)}"), anonymous=True, absent=None)
    if header is None:
        flask.abort(404)
    ranking = part(lambda c: c.get(f"/public/rankings/{q(community_id)}/{kind}"), anonymous=True, absent=None)
    return flask.render_template("rankings.html", community_id=community_id, community=header, kind=kind,
                                 kinds=RANKING_KINDS, ranking=ranking, title=_("Satisfaction rankings"))


@blueprint.get("/projects/<project_id>")
def project(project_id: str):
    if signed_in():
        return _member_project(project_id)
    return _public_project(project_id)


def _public_project(project_id: str):
    found = part(lambda c: c.get(f"/public/projects/{q(project_id)}"), anonymous=True, absent=None)
    if found is None:
        flask.abort(404)
    if isinstance(found, Unavailable):
        return flask.render_template("project_public.html", project=None, down=found,
                                     title=_("Project")), 503
    return flask.render_template("project_public.html", project=found, title=found.get("title"))


def _member_project(project_id: str):
    # The three reads at once; the community's header is the member's own community's (a member
    # reads only their own community's projects — an admin's other community's is read after).
    own = flask.session.get("community") or ""
    try:
        overview, history, header = parts(
            (lambda c: c.get(f"/projects/{q(project_id)}/overview"), {"absent": None}),
            (lambda c: c.get(f"/projects/{q(project_id)}/history"), {}),
            (lambda c: c.get(f"/public/communities/{q(own)}"), {"anonymous": True, "absent": None}))
    except ApiError as error:
        if error.status == 403:  # another community's project: its public page, as for anyone
            return _public_project(project_id)
        raise
    if overview is None:
        flask.abort(404)
    project = overview.get("project") if isinstance(overview, dict) else None
    if not isinstance(project, dict):  # the gateway or the projects service is down
        return flask.render_template("project.html", project=None, down=Unavailable(), title=_("Project")), 503
    missing = {entry["part"] for entry in overview.get("missing", [])}
    if project["community_id"] != own:
        header = part(lambda c: c.get(f"/public/communities/{q(project['community_id'])}"), anonymous=True,
                      absent=None)
    grid_names = {g["grid_id"]: g["name"] for g in header.get("grids", [])} if isinstance(header, dict) else {}
    # exactly what the API says this visitor may do now (``my_actions``: the stage's actions whose
    # decision would accept them — not a second co-signature, ballot or evaluation)
    actions = [a for a in project.get("my_actions", []) if a in OFFERED]
    return flask.render_template(
        "project.html", project=project, overview=overview, history=history, actions=actions,
        minutes=Unavailable() if "volunteer_minutes" in missing else overview.get("volunteer_minutes"),
        satisfaction=Unavailable() if "satisfaction" in missing else overview.get("satisfaction"),
        grid_name=grid_names.get(project["grid_id"], project["grid_id"]), stages=labels.FIVE_STAGES,
        title=project["title"])
