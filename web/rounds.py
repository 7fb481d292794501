"""Participatory budgeting rounds (参与式预算) in the browser: a community's rounds, a round's page
(approve proposals with a secret ballot while it is open; the winners and why each proposal won or
lost once it is closed, with the recount from the log), and the cadre's forms to open and close one.

A visitor who is not signed in (or a member of another community) reads the public rounds
(``/api/v1/public/...``: counts only, small ones suppressed); a member of the community reads the
round as the API shows it to them, with their own ballot. A ballot is a set of checkboxes sent as
one ``PUT`` (the last one counts); the page shows the visitor their own ballot and nobody else's —
the API gives nothing more.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

import flask
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from cocreate_client import ApiError
from web import forms, labels
from web.account import require_signin
from web.upstream import Unavailable, error_text, part, parts, post, send, write

blueprint = flask.Blueprint("rounds", __name__)
CADRES = ("cadre", "admin")
RULES = {"mes": _l("Method of Equal Shares (proportional), completed by the greedy rule"),
         "greedy": _l("Most approvals first (greedy)")}
ELECTORATES = {"residents": _l("All residents"), "representatives": _l("Residents' representatives")}
MAX_PROPOSALS = 200


def q(value: str) -> str:
    return quote(value, safe="")


def is_cadre() -> bool:
    return bool(set(flask.session.get("roles", [])) & set(CADRES))


def _own_community(community_id: str) -> None:
    if not _member_of(community_id):
        flask.abort(403)


def _member_of(community_id: str) -> bool:
    return bool(flask.session.get("token")) and (flask.session.get("community") == community_id
                                                 or "admin" in flask.session.get("roles", []))


@blueprint.get("/c/<community_id>/rounds")
def rounds(community_id: str):
    listing = (f"/communities/{q(community_id)}/rounds", {}) if _member_of(community_id) else \
        (f"/public/communities/{q(community_id)}/rounds", {"anonymous": True})
    header, found = parts(
        (lambda c: c.get(f"/public/communities/{q(community_id)}"), {"anonymous": True, "absent": None}),
        (lambda c: c.get(listing[0]), listing[1]))
    if header is None:
        flask.abort(404)
    items = found if isinstance(found, Unavailable) else found.get("items", [])
    return flask.render_template("rounds/list.html", community_id=community_id, community=header, rounds=items,
                                 is_cadre=is_cadre() and _member_of(community_id), rules=RULES,
                                 title=_("Budgeting rounds"))


@blueprint.get("/rounds/<round_id>")
def budget_round(round_id: str):
    public = not flask.session.get("token")
    try:
        found = part(lambda c: c.get(f"/{'public/' if public else ''}rounds/{q(round_id)}"), anonymous=public,
                     absent=None)
    except ApiError as error:
        if error.status != 403:
            raise
        public = True  # another community's round: its public page, as for anyone
        found = part(lambda c: c.get(f"/public/rounds/{q(round_id)}"), anonymous=True, absent=None)
    if found is None:
        flask.abort(404)
    if isinstance(found, Unavailable):
        return flask.render_template("rounds/round.html", round=None, down=found, title=_("Budgeting round")), 503
    verification = None
    if not public and found["status"] == "closed" and flask.request.args.get("verify") == "1":
        verification = part(lambda c: c.get(f"/rounds/{q(round_id)}/verification"), absent=None)
    roles = set(flask.session.get("roles", [])) if not public else set()
    may_vote = found["status"] == "open" and not public and (
        "representative" in roles if found["electorate"] == "representatives" else bool(roles & {"resident",
                                                                                                   "representative"}))
    return flask.render_template("rounds/round.html", round=found, public=public, may_vote=may_vote,
                                 is_cadre=is_cadre() and not public,
                                 rules=RULES, electorates=ELECTORATES, verification=verification,
                                 title=found["title"])


@blueprint.post("/rounds/<round_id>/ballot")
def ballot(round_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    back = flask.url_for("rounds.budget_round", round_id=round_id)
    approvals = flask.request.form.getlist("approve")
    if len(approvals) > MAX_PROPOSALS:
        flask.flash(_("Please check the form: something is missing or not valid."), "error")
        return flask.redirect(back)
    try:
        send(lambda c: c.request("PUT", f"/rounds/{q(round_id)}/ballot", {"approvals": approvals}))
        flask.flash(_("Your ballot is recorded. You can change it until the round closes."), "info")
    except ApiError as error:
        flask.flash(error_text(error), "error")
    return flask.redirect(back + "#ballot")


@blueprint.post("/rounds/<round_id>/close")
def close(round_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    write(f"/rounds/{q(round_id)}/close", {}, _("The round is closed and counted."))
    return flask.redirect(flask.url_for("rounds.budget_round", round_id=round_id) + "#outcome")


@blueprint.route("/c/<community_id>/rounds/new", methods=["GET", "POST"])
def open_round(community_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    _own_community(community_id)
    if not is_cadre():
        flask.abort(403)
    form = flask.request.form
    status = 200
    if flask.request.method == "POST":
        body, problems = _round_body(form)
        if problems:
            flask.flash(_("Please fill in: %(fields)s", fields=", ".join(problems)), "error")
            status = 422
        else:
            try:
                opened = send(lambda c: post(c, f"/communities/{q(community_id)}/rounds", body))["round"]
                flask.flash(_("The round is open: residents can vote now."), "info")
                return flask.redirect(flask.url_for("rounds.budget_round", round_id=opened["round_id"]))
            except ApiError as error:
                flask.flash(error_text(error), "error")
                status = error.status if 400 <= error.status < 500 else 503
    listed = part(lambda c: c.get("/projects", community_id=community_id, stage="co_plan", per_page=100))
    candidates = listed if isinstance(listed, Unavailable) else [
        p for p in listed.get("items", []) if p.get("phase") == "deliberation"]
    return flask.render_template("rounds/new.html", community_id=community_id, candidates=candidates, form=form,
                                 rules=RULES, electorates=ELECTORATES, title=_("Open a budgeting round")), status


def _round_body(form) -> tuple[dict, list[str]]:
    """The round the form describes, and the names of the fields that are missing or not valid."""
    problems = []
    title = form.get("title", "").strip()[:100]
    budget = forms.fen("budget")
    rule = form.get("rule")
    electorate = form.get("electorate", "residents")
    project_ids = form.getlist("project_ids")[:MAX_PROPOSALS]
    closes = form.get("closes_at", "").strip()
    try:
        closes_at = datetime.fromisoformat(closes).replace(tzinfo=labels.CHINA).isoformat() if closes else None
    except ValueError:
        closes_at = None
    for name, ok, text in (("title", title, _("title")), ("budget", budget, _("budget")),
                           ("rule", rule in RULES, _("rule")), ("electorate", electorate in ELECTORATES,
                                                                _("who votes")),
                           ("project_ids", project_ids, _("proposals")), ("closes_at", closes_at, _("closing time"))):
        if not ok:
            problems.append(text)
    body = {"title": title, "budget_fen": budget, "rule": rule, "electorate": electorate,
            "project_ids": project_ids, "closes_at": closes_at}
    for name, high in (("max_approvals", MAX_PROPOSALS), ("electorate_size", 10_000_000)):
        if form.get(name, "").strip():
            value = forms.whole_number(name, low=1, high=high)
            if value is None:
                problems.append({"max_approvals": _("most approvals per ballot"),
                                 "electorate_size": _("size of the electorate")}[name])
            body[name] = value
    return body, problems
