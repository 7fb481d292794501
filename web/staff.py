"""What the community's staff do (cadres, grid workers): the 共建 actions on a project's page
(confirm a delivery against a pledge, record spending with a receipt, record a milestone, complete
the project), the follow-up worklist of bad ratings (回访 contact → rectification → the resident's
confirmation, which closes the case), the subjects residents rate, the community's rating policy
(评价规则: staff read it, cadres change it), and publishing a ranking.

As everywhere in the web client: a page shows a form only for what the API allows the visitor
(the project's ``my_actions``; the case's state), every write is a form with its CSRF token and
idempotency key posted here, sent to the gateway and answered with a redirect (post/redirect/get)
and a message; a refusal of the API is shown as its message from the one message catalogue.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone
from decimal import Decimal
from urllib.parse import quote

import flask
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from cocreate_client import ApiError
from web import forms, labels
from web.account import require_signin
from web.upstream import Unavailable, error_text, form_action, invalid_form, part, post, send

blueprint = flask.Blueprint("staff", __name__)

CASE_HANDLERS = ("cadre", "grid_worker", "admin")  # who follows up cases (the feedback service's rule)
CADRES = ("cadre", "admin")  # who registers subjects and publishes rankings
PROJECT_ACTIONS = ("confirm_delivery", "record_spending", "record_milestone", "complete")
CHANNELS = {"phone": _l("Phone call"), "visit": _l("Home visit"), "message": _l("Message")}
AMOUNT_KEYS = {"labour": "labour_minutes", "skills": "skills_minutes", "money": "money_fen",
               "materials": "materials_fen"}
IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
PERIOD = re.compile(r"20\d\d-(0[1-9]|1[0-2]|Q[1-4])")
SUBJECT_KINDS = ("cadre", "grid_worker", "unit", "service")  # projects are registered by their evaluation


def q(value: str) -> str:
    return quote(value, safe="")


def has_role(*roles: str) -> bool:
    return bool(set(flask.session.get("roles", [])) & set(roles))


def _text(name: str, limit: int) -> str:
    return flask.request.form.get(name, "").strip()[:limit]


def _fen(name: str) -> int | None:
    """An amount typed in yuan (``12`` or ``12.50``) as a positive integer of fen."""
    return forms.fen(name, high=10**13)


def _minutes(name: str) -> int | None:
    """Hours typed as ``3`` or ``1.5`` (up to two decimals) as a positive whole number of minutes."""
    raw = flask.request.form.get(name, "").strip()
    if not re.fullmatch(r"\d{1,6}(\.\d{1,2})?", raw):
        return None
    minutes = int((Decimal(raw) * 60).to_integral_value())
    return minutes if 1 <= minutes <= 10**7 else None


def _whole(name: str, *, low: int, high: int) -> int | None:
    raw = flask.request.form.get(name, "").strip()
    if not raw.isdecimal() or len(raw) > 4 or not low <= int(raw) <= high:
        return None
    return int(raw)


@blueprint.app_template_filter("hours")
def hours(minutes) -> str:
    """Minutes shown as hours: ``90`` → ``1.5``, ``180`` → ``3``."""
    if not minutes:
        return "0"
    return f"{minutes / 60:.2f}".rstrip("0").rstrip(".")


@blueprint.app_template_global("pledge_amount")
def pledge_amount(kind: str, amounts) -> str:
    """A pledge's (or its deliveries') amount of its own kind: hours for labour and skills, yuan
    for money and materials."""
    value = (amounts or {}).get(AMOUNT_KEYS.get(kind, ""), 0) or 0
    if kind in ("labour", "skills"):
        return _("%(hours)s hours", hours=hours(value))
    return labels.yuan(value)


@blueprint.app_template_global("pledge_remaining")
def pledge_remaining(pledge) -> str:
    """What is still to be delivered of a pledge, as the form's amount field takes it ("" if nothing)."""
    key = AMOUNT_KEYS.get(pledge.get("kind"), "")
    left = (pledge.get("pledged") or {}).get(key, 0) - (pledge.get("delivered") or {}).get(key, 0)
    if left <= 0:
        return ""
    return hours(left) if pledge.get("kind") in ("labour", "skills") else f"{left // 100}.{left % 100:02d}"


# -- the project's 共建 actions (a section of the member's project page) ----------------------------

def _delivery():
    kind = flask.request.form.get("kind")
    pledge_id = flask.request.form.get("pledge_id", "")
    if kind not in AMOUNT_KEYS or not IDENTIFIER.fullmatch(pledge_id):
        return None
    amount = _minutes("amount") if kind in ("labour", "skills") else _fen("amount")
    if amount is None:
        return None
    return {AMOUNT_KEYS[kind]: amount, "note": _text("note", 500)}


def _spending():
    amount, receipt = _fen("amount"), _text("receipt_ref", 100)
    if amount is None or not receipt:
        return None
    return {"amount_fen": amount, "receipt_ref": receipt, "description": _text("description", 500)}


def _milestone():
    progress, note = _whole("progress", low=0, high=100), _text("note", 1000)
    return {"progress": progress, "note": note} if progress is not None and note else None


# action -> (the API path under the project, how the form becomes the body, the success message)
ACTIONS = {
    "confirm_delivery": (lambda: f"pledges/{q(flask.request.form.get('pledge_id', ''))}/deliveries", _delivery,
                         _l("The delivery is confirmed.")),
    "record_spending": (lambda: "spending", _spending, _l("The spending is recorded.")),
    "record_milestone": (lambda: "milestones", _milestone, _l("The milestone is recorded.")),
    "complete": (lambda: "completion", lambda: {}, _l("The project is completed: it is in co-management now.")),
}


@blueprint.post("/projects/<project_id>/staff/<action>")
def project_action(project_id: str, action: str):
    if (redirect := require_signin()) is not None:
        return redirect
    if action not in ACTIONS:
        flask.abort(404)
    path_of, body_of, done = ACTIONS[action]
    back = flask.url_for("pages.project", project_id=project_id)
    return form_action(f"/projects/{q(project_id)}/{path_of()}", body_of(), done, back, invalid_anchor="#staff",
                       anchor="#staff")


# -- the follow-up worklist (差评回访) -------------------------------------------------------------

def _handlers_only():
    """Signed in as a case handler, or where to go instead (sign in; a 403 page for others)."""
    if (redirect := require_signin()) is not None:
        return redirect
    if not has_role(*CASE_HANDLERS):
        flask.abort(403)
    return None


def _deadline(case: dict) -> datetime:
    try:
        instant = datetime.fromisoformat(str(case.get("deadline")).replace("Z", "+00:00"))
    except ValueError:
        instant = datetime.min
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=timezone.utc)


@blueprint.get("/cases")
def worklist():
    if (redirect := _handlers_only()) is not None:
        return redirect
    status = "closed" if flask.request.args.get("status") == "closed" else "open"
    community_id = flask.session.get("community")
    found = part(lambda c: c.get("/cases", community_id=community_id, status=status, limit=500))
    cases = found if isinstance(found, Unavailable) else sorted(found["items"], key=_deadline, reverse=True)
    counts = None if isinstance(found, Unavailable) else {"open": found.get("open"), "overdue": found.get("overdue")}
    return flask.render_template("staff/worklist.html", cases=cases, counts=counts, status=status,
                                 title=_("Follow-ups"))


@blueprint.get("/worklist/<case_id>")
def case(case_id: str):
    if (redirect := _handlers_only()) is not None:
        return redirect
    found = part(lambda c: c.get(f"/cases/{q(case_id)}"), absent=None)
    if found is None:
        flask.abort(404)
    return flask.render_template("staff/case.html", case=found, channels=CHANNELS, title=_("Follow-up case"))


def _contact():
    channel, note = flask.request.form.get("channel"), _text("note", 1000)
    return {"channel": channel, "note": note} if channel in CHANNELS and note else None


def _rectification():
    actions = _text("actions", 2000)
    return {"actions": actions} if actions else None


def _confirmation():
    satisfied = flask.request.form.get("satisfied")
    if satisfied not in ("yes", "no"):
        return None
    return {"satisfied": satisfied == "yes", "comment": _text("comment", 1000)}


CASE_ACTIONS = {
    "contact": ("contacts", _contact, _l("The call-back is recorded.")),
    "rectification": ("rectifications", _rectification, _l("The rectification is recorded.")),
    "confirmation": ("confirmation", _confirmation, _l("The resident's answer is recorded: the case is closed.")),
}


@blueprint.post("/worklist/<case_id>/<action>")
def case_action(case_id: str, action: str):
    if (redirect := _handlers_only()) is not None:
        return redirect
    if action not in CASE_ACTIONS:
        flask.abort(404)
    path, body_of, done = CASE_ACTIONS[action]
    return form_action(f"/cases/{q(case_id)}/{path}", body_of(), done, flask.url_for("staff.case", case_id=case_id),
                       invalid_anchor=f"#{action}")


# -- subjects residents rate, and publishing a ranking (cadres) -------------------------------------

@blueprint.route("/subjects", methods=["GET", "POST"])
def subjects():
    if (redirect := _handlers_only()) is not None:
        return redirect
    community_id = flask.session.get("community")
    if flask.request.method == "POST":
        if not has_role(*CADRES):
            flask.abort(403)
        form = flask.request.form
        body = {"subject_id": form.get("subject_id", "").strip(), "kind": form.get("kind"),
                "name": _text("name", 100), "community_id": community_id,
                "unit_id": form.get("unit_id", "").strip() or None,
                "person_id": form.get("person_id", "").strip() or None,
                "description": _text("description", 500)}
        valid = (IDENTIFIER.fullmatch(body["subject_id"]) and body["kind"] in SUBJECT_KINDS and body["name"]
                 and community_id and all(body[k] is None or IDENTIFIER.fullmatch(body[k])
                                          for k in ("unit_id", "person_id")))
        if not valid:
            return invalid_form(flask.url_for("staff.subjects") + "#register")
        try:
            send(lambda c: post(c, "/subjects", {k: v for k, v in body.items() if v is not None}))
            flask.flash(_("%(name)s can be rated now.", name=body["name"]), "info")
        except ApiError as error:
            flask.flash(error_text(error), "error")
        return flask.redirect(flask.url_for("staff.subjects"))
    found = part(lambda c: c.get("/subjects", community_id=community_id))
    items = found if isinstance(found, Unavailable) else found["items"]
    return flask.render_template("staff/subjects.html", subjects=items, kinds=SUBJECT_KINDS,
                                 is_cadre=has_role(*CADRES), title=_("Who residents rate"))


@blueprint.route("/rankings/publish", methods=["GET", "POST"])
def publish_ranking():
    if (redirect := require_signin()) is not None:
        return redirect
    if not has_role(*CADRES):
        flask.abort(403)
    community_id = flask.session.get("community")
    if flask.request.method == "POST":
        kind, period = flask.request.form.get("kind"), flask.request.form.get("period", "").strip()
        if kind not in labels.SUBJECT_KINDS or not PERIOD.fullmatch(period) or not community_id:
            return invalid_form(flask.url_for("staff.publish_ranking"))
        body = {"community_id": community_id, "kind": kind, "period": period,
                "provisional": flask.request.form.get("provisional") == "yes"}
        try:
            send(lambda c: post(c, "/rankings", body))
            flask.flash(_("The ranking is published."), "info")
            return flask.redirect(flask.url_for("pages.rankings", community_id=community_id, kind=kind))
        except ApiError as error:
            flask.flash(error_text(error), "error")
        return flask.redirect(flask.url_for("staff.publish_ranking"))
    live = part(lambda c: c.get(f"/rankings/{q(community_id)}/cadre")) if community_id else Unavailable()
    period = live.get("period", "") if isinstance(live, dict) else ""
    return flask.render_template("staff/publish.html", kinds=labels.SUBJECT_KINDS, period=period,
                                 title=_("Publish a ranking"))


# -- the rating policy (评价规则) ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PolicyField:
    name: str
    label: object
    help: object
    low: int | Decimal | None = None
    high: int | Decimal | None = None

    def read(self, raw: str):
        """The typed value, or None when it is not one (the API checks the same bounds again)."""
        raw = raw.strip()
        if self.name == "period":
            return raw if raw in ("month", "quarter") else None
        if self.name == "prior_mean":
            if not re.fullmatch(r"[1-5](\.\d{1,2})?", raw):
                return None
            value = Decimal(raw)
            return f"{value:.2f}" if self.low <= value <= self.high else None
        if not raw.isdecimal() or len(raw) > 6:
            return None
        value = int(raw)
        return value if self.low <= value <= self.high else None


# The feedback service's policy settings, with the bounds its API checks (services/feedback/api.py).
POLICY_FIELDS = (
    PolicyField("period", _l("Rating period"), _l("Rankings are made per month or per quarter.")),
    PolicyField("min_ratings", _l("Ratings needed to be ranked"),
                _l("With fewer ratings in the period a subject is listed as not ranked yet."), 1, 10_000),
    PolicyField("prior_mean", _l("Starting score (1.00 to 5.00)"),
                _l("A score is pulled towards this value while there are few ratings."), Decimal("1"), Decimal("5")),
    PolicyField("prior_weight", _l("Weight of the starting score, in ratings"),
                _l("How many ratings the starting score counts as."), 0, 10_000),
    PolicyField("satisfaction_threshold_pct", _l("Satisfaction threshold (%)"),
                _l("Below this share of satisfied ratings a support plan opens."), 1, 100),
    PolicyField("followup_working_days", _l("Working days to follow up a bad rating"),
                _l("The deadline of a follow-up case, counted in working days."), 1, 30),
    PolicyField("burst_window_minutes", _l("Burst window (minutes)"),
                _l("Many top ratings for one subject within this window are flagged for review."), 1, 7 * 24 * 60),
    PolicyField("burst_min_ratings", _l("Ratings that make a burst"),
                _l("How many top ratings within the window are flagged."), 2, 10_000),
)


@blueprint.route("/policy", methods=["GET", "POST"])
def policy():
    """The community's rating policy: staff read it; cadres change it. The form carries the
    version it was made from (``If-Match``): a change made meanwhile by someone else is not
    overwritten — the page says so and shows the current policy."""
    if (redirect := _handlers_only()) is not None:
        return redirect
    community_id = flask.session.get("community")
    if not community_id:
        flask.abort(403)
    if flask.request.method == "POST":
        if not has_role(*CADRES):
            flask.abort(403)
        form = flask.request.form
        values = {field.name: field.read(form.get(field.name, "")) for field in POLICY_FIELDS}
        version = form.get("version", "")
        if any(value is None for value in values.values()) or not version.isdecimal():
            return invalid_form(flask.url_for("staff.policy") + "#change")
        try:
            send(lambda c: c.request("PATCH", f"/policies/{q(community_id)}", values,
                                     headers={"If-Match": f'"{int(version)}"'}))
            flask.flash(_("The rating policy is changed; it applies from now on."), "info")
        except ApiError as error:
            flask.flash(error_text(error), "error")
        return flask.redirect(flask.url_for("staff.policy"))
    current = part(lambda c: c.get(f"/policies/{q(community_id)}"))
    return flask.render_template("staff/policy.html", policy=current, fields=POLICY_FIELDS,
                                 is_cadre=has_role(*CADRES), title=_("Rating policy"))
