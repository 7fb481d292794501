"""What a signed-in resident or representative does: propose a project, co-sign it, give an
opinion, pledge, vote in the council (representatives), rate a finished project, rate a cadre or
unit; and the cadre's two council buttons (open and close the vote) that the journey needs.

Every write is a form (with its CSRF token) posted here, sent to the gateway and answered with a
redirect to the page it came from (post/redirect/get); htmx turns that into a partial update. A
refusal of the API is shown as its message from the one message catalogue, and the form keeps
what the visitor typed.
"""

from __future__ import annotations

from urllib.parse import quote

import flask
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from cocreate_client import ApiError
from web import forms, labels
from web.account import require_signin
from web.upstream import Unavailable, error_text, form_action, part, post, send

blueprint = flask.Blueprint("resident", __name__)


def q(value: str) -> str:
    return quote(value, safe="")


_int = forms.whole_number
_fen = forms.fen


@blueprint.route("/propose", methods=["GET", "POST"])
def propose():
    if (redirect := require_signin()) is not None:
        return redirect
    community_id = flask.session.get("community")
    community = part(lambda c: c.get(f"/public/communities/{q(community_id)}"), anonymous=True,
                     absent=None) if community_id else None
    form = flask.request.form
    if flask.request.method == "POST":
        body = {"community_id": community_id, "grid_id": form.get("grid_id", ""),
                "title": form.get("title", "").strip(), "description": form.get("description", "").strip(),
                "category": form.get("category", ""), "location": form.get("location", "").strip(),
                "estimated_cost_fen": _fen("estimated_cost", allow_zero=True),
                "requested_fen": _fen("requested", allow_zero=True)}
        problems = [name for name in ("title", "description", "location", "grid_id", "category") if not body[name]]
        problems += [name for name in ("estimated_cost", "requested") if body[f"{name}_fen"] is None]
        if problems:
            flask.flash(_("Please fill in: %(fields)s", fields=", ".join(_field_names(problems))), "error")
        else:
            try:
                created = send(lambda c: post(c, "/projects", body))["project"]
                flask.flash(_("Your proposal is published. It needs co-signers now."), "info")
                return flask.redirect(flask.url_for("pages.project", project_id=created["project_id"]))
            except ApiError as error:
                flask.flash(error_text(error), "error")
        status = 422
    else:
        status = 200
    return flask.render_template("propose.html", community=community, form=form, categories=labels.CATEGORIES,
                                 title=_("Propose a project")), status


def _field_names(names):
    table = {"title": _("title"), "description": _("description"), "location": _("location"),
             "grid_id": _("grid"), "category": _("category"), "estimated_cost": _("estimated cost"),
             "requested": _("amount requested from the fund")}
    return [table[name] for name in names]


# action -> (API path under the project, how the form becomes the body, the success message)
def _opinion():
    stance, text = flask.request.form.get("stance"), flask.request.form.get("text", "").strip()
    return {"stance": stance, "text": text} if stance in labels.STANCES and text else None


def _ballot():
    choice = flask.request.form.get("choice")
    return {"choice": choice} if choice in labels.CHOICES else None


def _pledge():
    kind = flask.request.form.get("kind")
    description = flask.request.form.get("description", "").strip()[:500]
    if kind in ("labour", "skills"):
        hours = _int("hours", low=1, high=1000)
        return {"kind": kind, f"{kind}_minutes": hours * 60, "description": description} if hours else None
    if kind in ("money", "materials"):
        fen = _fen("amount")
        return {"kind": kind, f"{kind}_fen": fen, "description": description} if fen else None
    return None


def _rating():
    score = _int("score", low=1, high=5)
    return {"score": score, "comment": flask.request.form.get("comment", "").strip()[:1000]} if score else None


def _problem():
    text = flask.request.form.get("description", "").strip()
    return {"description": text} if text else None


ACTIONS = {
    "cosign": ("cosignatures", lambda: {}, _l("You co-signed the proposal.")),
    "post_opinion": ("opinions", _opinion, _l("Your opinion is posted.")),
    "pledge": ("pledges", _pledge, _l("Thank you: your pledge is recorded.")),
    "cast_ballot": ("vote/ballots", _ballot, _l("Your ballot is cast.")),
    "rate": ("evaluation/ratings", _rating, _l("Thank you for your evaluation.")),
    "report_problem": ("problems", _problem, _l("The problem is reported to the maintainers.")),
    "open_vote": ("vote/open", lambda: {}, _l("The council vote is open.")),
    "close_vote": ("vote/close", lambda: {}, _l("The council vote is closed.")),
}


@blueprint.post("/projects/<project_id>/actions/<action>")
def act(project_id: str, action: str):
    if (redirect := require_signin()) is not None:
        return redirect
    if action not in ACTIONS:
        flask.abort(404)
    path, body_of, done = ACTIONS[action]
    return form_action(f"/projects/{q(project_id)}/{path}", body_of(), done,
                       flask.url_for("pages.project", project_id=project_id), invalid_anchor=f"#{action}")


@blueprint.get("/rate")
def subjects():
    if (redirect := require_signin()) is not None:
        return redirect
    community_id = flask.session.get("community")
    found = part(lambda c: c.get("/subjects", community_id=community_id)) if community_id else {"items": []}
    items = found if isinstance(found, Unavailable) else [s for s in found["items"] if s.get("kind") != "project"]
    return flask.render_template("subjects.html", subjects=items, title=_("Rate the people who serve you"))


@blueprint.route("/rate/<subject_id>", methods=["GET", "POST"])
def rate(subject_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    subject = part(lambda c: c.get(f"/subjects/{q(subject_id)}"), absent=None)
    if subject is None:
        flask.abort(404)
    status = 200
    if flask.request.method == "POST" and not isinstance(subject, Unavailable):
        level = _int("level", low=1, high=5)
        comment = flask.request.form.get("comment", "").strip()[:1000]
        if level is None:
            flask.flash(_("Choose one of the five levels."), "error")
            status = 422
        else:
            try:
                rating = send(lambda c: post(c, f"/subjects/{q(subject_id)}/ratings",
                                             {"level": level, "comment": comment}))["resource"]
                if level <= 2:
                    flask.flash(_("Thank you. A bad rating is followed up: you will be contacted, and you can "
                                  "follow the case under Mine."), "info")
                else:
                    flask.flash(_("Thank you for your rating."), "info")
                return flask.redirect(flask.url_for("account.me") if rating.get("case_id") or level <= 2
                                      else flask.url_for("resident.subjects"))
            except ApiError as error:
                flask.flash(error_text(error), "error")
                status = error.status if 400 <= error.status < 500 else 503
    return flask.render_template("rate.html", subject=subject, levels=labels.LEVELS,
                                 title=_("Rate %(name)s", name=subject.get("name", "") if subject else "")), status
