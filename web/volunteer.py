"""The volunteer's and the organiser's pages (义工卡): my card with its history, the community's
activities (sign up, check in and out with the code; the organiser publishes, sees the check-in
code and the volunteers, records attendance and approves the hours), the rewards bought with
points, and certificates of volunteer service (志愿服务记录证明) with their printable page.

Everything comes from the volunteers service through the gateway (``/api/v1/cards``,
``/activities``, ``/rewards``, ``/certificates``, ``/me/card``); the rules are the service's (who
may publish, when check-in opens, how hours are counted) and a refusal is shown as its message.
Every write is a form posted here and answered with a redirect (post/redirect/get).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from urllib.parse import quote

import flask
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from cocreate_client import ApiError
from web import forms, labels
from web.account import require_signin
from web.labels import CHINA
from web.upstream import Unavailable, error_text, invalid_form, part, post, send, write

blueprint = flask.Blueprint("volunteer", __name__)

# the volunteers service's roles (services/volunteers/domain.py)
ORGANISERS = ("organiser", "cadre", "admin")
VOLUNTEERS = ("volunteer", "resident", "representative")
CARD_HOLDERS = VOLUNTEERS + ("cadre", "admin")  # who may register a card of their own
COMMUNITY_ORGANISERS = ("cadre", "admin")  # who publish in the community's name
DECIDERS = ("cadre", "admin")  # besides the activity's own organiser
ORGANISER_KINDS = {"community": _l("The community"), "social_organisation": _l("A social organisation"),
                   "project": _l("A co-creation project")}
CLAIM_STATUS = {"pending": _l("Waiting for approval"), "approved": _l("Approved"), "rejected": _l("Rejected")}
ACTIVITY_STATUS = {"published": _l("Open for sign-up"), "cancelled": _l("Cancelled")}
SOURCES = {"activity": _l("Activity"), "project": _l("Co-creation project")}
VOLUNTEER_LIST_LIMIT = 50  # cards fetched for an activity's page (the organiser's list)
PROJECT_TITLES = 10  # projects whose titles a card's page fetches for its credits


def q(value: str) -> str:
    return quote(str(value), safe="")


def _roles() -> set[str]:
    return set(flask.session.get("roles", []))


def _has(*roles: str) -> bool:
    return bool(_roles() & set(roles))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _instant(value) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def local_input(value: str) -> str | None:
    """A ``datetime-local`` input's value (``2026-12-03T09:30``, China Standard Time) as an aware
    UTC instant in ISO 8601 (``2026-12-03T01:30:00+00:00``); ``None`` if it is not one."""
    try:
        moment = datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M")
    except ValueError:
        try:
            moment = datetime.strptime(value.strip(), "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return None
    return moment.replace(tzinfo=CHINA).astimezone(timezone.utc).isoformat()


_int = forms.whole_number


def _today() -> date:
    return _now().astimezone(CHINA).date()


# What this session saw of the visitor's own steps in an activity (the API shows the list of
# volunteers to the organiser only): a hint for which buttons to offer first, never a rule — the
# API decides every step. activity id -> "signed_up" | "checked_in"; the newest few.
STEPS = "volunteer_steps"
STEPS_KEPT = 30
STEP_AFTER = {  # (what was asked, the API's answer: None for done, else its reason) -> the step now
    ("signup", None): "signed_up", ("signup", "already_signed_up"): "signed_up",
    ("withdrawal", None): None, ("withdrawal", "not_signed_up"): None,
    ("check-in", None): "checked_in", ("check-in", "already_checked_in"): "checked_in",
    ("check-in", "not_signed_up"): None, ("check-out", None): None, ("check-out", "not_checked_in"): None,
}


def _remember(activity_id: str, asked: str, answered: bool) -> None:
    key = (asked, None if answered else flask.g.get("refusal"))
    if key not in STEP_AFTER:
        return
    steps = {k: v for k, v in dict(flask.session.get(STEPS) or {}).items() if k != activity_id}
    if STEP_AFTER[key]:
        steps[activity_id] = STEP_AFTER[key]
    flask.session[STEPS] = dict(list(steps.items())[-STEPS_KEPT:])


def _my_card():
    """``/me/card``: ``{"card", "credits", "claims"}``; ``None`` when I have no card yet."""
    return part(lambda c: c.get("/me/card"), absent=None)


def _render(template: str, **context):
    context.setdefault("tab", None)
    return flask.render_template(
        f"volunteer/{template}", stars=labels.STARS, claim_status=CLAIM_STATUS, activity_status=ACTIVITY_STATUS,
        organiser_kinds=ORGANISER_KINDS, sources=SOURCES, can_organise=_has(*ORGANISERS), **context)


# -- my card ----------------------------------------------------------------------------------------

@blueprint.get("/card")
def card():
    if (redirect := require_signin()) is not None:
        return redirect
    mine = _my_card()
    history = {}
    if isinstance(mine, dict):
        titles = {c["activity_id"]: c.get("activity_title") for c in mine.get("claims", [])}
        projects = {c["source_id"] for c in mine.get("credits", []) if c.get("source") == "project"}
        for project_id in sorted(projects)[:PROJECT_TITLES]:  # a title is a nicety: its id will do
            try:
                found = part(lambda c: c.get(f"/public/projects/{q(project_id)}"), anonymous=True, absent=None)
            except ApiError:
                found = None
            if isinstance(found, dict) and found.get("title"):
                titles[project_id] = found["title"]
        history = {"credits": [dict(credit, title=titles.get(credit.get("source_id")))
                               for credit in mine.get("credits", [])],
                   "claims": sorted(mine.get("claims", []), key=lambda c: c.get("start") or "", reverse=True)}
    return _render("card.html", mine=mine, history=history, may_register=_has(*CARD_HOLDERS), tab="card",
                   title=_("My volunteer card"))


@blueprint.post("/card")
def register_card():
    if (redirect := require_signin()) is not None:
        return redirect
    write("/cards", {}, _("Your volunteer card is registered."))
    return flask.redirect(flask.url_for("volunteer.card"))


# -- activities -------------------------------------------------------------------------------------

@blueprint.get("/activities")
def activities():
    if (redirect := require_signin()) is not None:
        return redirect
    community_id = flask.session.get("community")
    found = part(lambda c: c.get("/activities", community_id=community_id))
    items = found if isinstance(found, Unavailable) else found.get("items", [])
    now = _now()
    if not isinstance(items, Unavailable):
        items = [dict(a, over=(_instant(a.get("ends_at")) or now) < now) for a in items]
    return _render("activities.html", activities=items, tab="activities", title=_("Volunteer activities"))


def _publish_form_defaults() -> dict:
    community_id = flask.session.get("community") or ""
    if _has(*COMMUNITY_ORGANISERS):
        return {"organiser_kind": "community", "organiser_id": community_id, "organiser_name": ""}
    return {"organiser_kind": "social_organisation", "organiser_id": flask.session.get("person_id", ""),
            "organiser_name": flask.session.get("name") or ""}


@blueprint.route("/activities/new", methods=["GET", "POST"])
def publish():
    if (redirect := require_signin()) is not None:
        return redirect
    if not _has(*ORGANISERS):
        flask.abort(403)
    kinds = {k: v for k, v in ORGANISER_KINDS.items() if k != "community" or _has(*COMMUNITY_ORGANISERS)}
    form = flask.request.form
    status = 200
    if flask.request.method == "POST":
        kind = form.get("organiser_kind", "")
        body = {"title": form.get("title", "").strip(), "community_id": flask.session.get("community"),
                "place": form.get("place", "").strip(),
                "organiser": {"kind": kind, "id": form.get("organiser_id", "").strip(),
                              "name": form.get("organiser_name", "").strip()},
                "starts_at": local_input(form.get("starts_at", "")), "ends_at": local_input(form.get("ends_at", "")),
                "capacity": _int("capacity", low=1, high=10000),
                "planned_minutes": _int("planned_minutes", low=30, high=24 * 60),
                "points_per_hour": _int("points_per_hour", low=0, high=1000)}
        problems = [name for name in ("title", "place", "starts_at", "ends_at", "capacity", "planned_minutes",
                                      "points_per_hour") if body[name] in (None, "")]
        if kind not in kinds:
            problems.append("organiser_kind")
        problems += [f"organiser_{key}" for key in ("id", "name") if not body["organiser"][key]]
        if body["starts_at"] and body["ends_at"] and body["ends_at"] <= body["starts_at"]:
            problems.append("ends_at")
        if problems:
            flask.flash(_("Please fill in: %(fields)s", fields=", ".join(_field_names(problems))), "error")
            status = 422
        else:
            try:
                created = send(lambda c: post(c, "/activities", body))
                flask.flash(_("The activity is published. Show its check-in code to the volunteers when "
                              "they arrive."), "info")
                return flask.redirect(flask.url_for("volunteer.activity", activity_id=created["created_id"]))
            except ApiError as error:
                flask.flash(error_text(error), "error")
                status = error.status if 400 <= error.status < 500 else 503
        values = form
    else:
        values = _publish_form_defaults()
    return _render("publish.html", form=values, kinds=kinds, tab="activities",
                   title=_("Publish an activity")), status


def _field_names(names):
    table = {"title": _("title"), "place": _("place"), "starts_at": _("start"), "ends_at": _("end (after the start)"),
             "capacity": _("places"), "planned_minutes": _("planned minutes (30 to 1440)"),
             "points_per_hour": _("points per hour (0 to 1000)"), "organiser_kind": _("organised by"),
             "organiser_id": _("organiser's code"), "organiser_name": _("organiser's name")}
    return [table[name] for name in dict.fromkeys(names)]


@blueprint.get("/activities/<activity_id>")
def activity(activity_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    found = part(lambda c: c.get(f"/activities/{q(activity_id)}"), absent=None)
    if found is None:
        flask.abort(404)
    if isinstance(found, Unavailable):
        return _render("activity.html", activity=None, down=found, tab="activities", title=_("Activity")), 503
    me = flask.session.get("person_id")
    now = _now()
    over = (_instant(found.get("ends_at")) or now) < now
    organising = found.get("checkin_code") is not None and (
        found.get("organiser_person_id") == me or _has(*DECIDERS))
    volunteers = []
    if organising:
        for person_id in (found.get("volunteers") or [])[:VOLUNTEER_LIST_LIMIT]:
            volunteers.append(_volunteer_row(activity_id, person_id))
    my_claim = mine = None
    if _has(*VOLUNTEERS):
        mine = _my_card()
        if isinstance(mine, dict):
            my_claim = _claim_for(mine.get("claims", []), activity_id)
    return _render("activity.html", activity=found, over=over, organising=organising, volunteers=volunteers,
                   more_volunteers=len(found.get("volunteers") or []) > VOLUNTEER_LIST_LIMIT,
                   volunteering=_has(*VOLUNTEERS), my_card=mine, my_claim=my_claim,
                   my_step=(flask.session.get(STEPS) or {}).get(activity_id), tab="activities",
                   title=found.get("title") or _("Activity"))


def _claim_for(claims: list, activity_id: str) -> dict | None:
    """The volunteer's claim for the activity: the one not rejected, else the last one."""
    own = [c for c in claims if c.get("activity_id") == activity_id]
    return next((c for c in own if c.get("status") != "rejected"), own[-1] if own else None)


def _volunteer_row(activity_id: str, person_id: str) -> dict:
    """A signed-up volunteer as the organiser sees them: name, card number and claim for this activity."""
    history = part(lambda c: c.get(f"/cards/{q(person_id)}/history"), absent=None)
    if not isinstance(history, dict):
        return {"person_id": person_id, "name": None, "card_number": None, "claim": None,
                "unavailable": isinstance(history, Unavailable)}
    card = history.get("card") or {}
    return {"person_id": person_id, "name": card.get("name"), "card_number": card.get("card_number"),
            "claim": _claim_for(history.get("claims", []), activity_id), "unavailable": False}


def _activity_page(activity_id: str) -> str:
    return flask.url_for("volunteer.activity", activity_id=activity_id)


@blueprint.post("/activities/<activity_id>/signup")
def sign_up(activity_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    answer = write(f"/activities/{q(activity_id)}/signups", {}, _("You are signed up. See you there!"))
    _remember(activity_id, "signup", answer is not None)
    return flask.redirect(_activity_page(activity_id))


@blueprint.post("/activities/<activity_id>/withdrawal")
def withdraw(activity_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    answer = write(f"/activities/{q(activity_id)}/signups/withdrawal", {}, _("Your sign-up is withdrawn."))
    _remember(activity_id, "withdrawal", answer is not None)
    return flask.redirect(_activity_page(activity_id))


@blueprint.post("/activities/<activity_id>/code")
def check_in_or_out(activity_id: str):
    """Check in or out with the activity's code (one form, the button says which)."""
    if (redirect := require_signin()) is not None:
        return redirect
    code = flask.request.form.get("code", "").strip()
    step = flask.request.form.get("step")
    back = _activity_page(activity_id)
    if len(code) != 6 or not code.isdecimal() or not code.isascii() or step not in ("check-in", "check-out"):
        flask.flash(_("Enter the six-digit check-in code the organiser shows."), "error")
        return flask.redirect(back)
    if step == "check-in":
        answer = write(f"/activities/{q(activity_id)}/check-in", {"code": code},
                        _("You are checked in. Check out with the same code when you leave."))
    else:
        answer = write(f"/activities/{q(activity_id)}/check-out", {"code": code},
                        _("You are checked out. Your hours wait for the organiser's approval."))
    _remember(activity_id, step, answer is not None)
    return flask.redirect(back)


@blueprint.post("/activities/<activity_id>/attendance")
def attendance(activity_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    form = flask.request.form
    person_id = form.get("person_id", "").strip()
    body = {"person_id": person_id}
    back = _activity_page(activity_id) + "#volunteers"
    for key in ("start", "end"):
        if form.get(key, "").strip():
            body[key] = local_input(form[key])
            if body[key] is None:
                return invalid_form(back)
    if not person_id:
        return invalid_form(back)
    write(f"/activities/{q(activity_id)}/attendance", body,
           _("Attendance of %(person)s is recorded; approve the hours when you have checked them.",
             person=person_id))
    return flask.redirect(back)


@blueprint.post("/activities/<activity_id>/decision")
def decide(activity_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    form = flask.request.form
    person_id = form.get("person_id", "").strip()
    decision = form.get("decision")
    reason = form.get("reason", "").strip()[:500]
    back = _activity_page(activity_id) + "#volunteers"
    body = {"decision": decision, "reason": reason}
    if form.get("minutes", "").strip():
        body["minutes"] = _int("minutes", low=30, high=24 * 60)
    if not person_id or decision not in ("approve", "reject") or body.get("minutes", 0) is None:
        return invalid_form(back)
    if decision == "reject" and not reason:
        flask.flash(_("Say why the hours are rejected."), "error")
        return flask.redirect(back)
    done = (_("The hours of %(person)s are approved.", person=person_id) if decision == "approve"
            else _("The hours of %(person)s are rejected.", person=person_id))
    write(f"/activities/{q(activity_id)}/claims/{q(person_id)}/decision", body, done)
    return flask.redirect(back)


@blueprint.post("/activities/<activity_id>/cancellation")
def cancel(activity_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    reason = flask.request.form.get("reason", "").strip()[:500]
    back = _activity_page(activity_id)
    if not reason:
        flask.flash(_("Say why the activity is cancelled."), "error")
        return flask.redirect(back)
    write(f"/activities/{q(activity_id)}/cancellation", {"reason": reason}, _("The activity is cancelled."))
    return flask.redirect(back)


# -- rewards ----------------------------------------------------------------------------------------

@blueprint.get("/rewards")
def rewards():
    if (redirect := require_signin()) is not None:
        return redirect
    community_id = flask.session.get("community")
    found = part(lambda c: c.get("/rewards", community_id=community_id))
    items = found if isinstance(found, Unavailable) else found.get("items", [])
    mine = _my_card() if _has(*VOLUNTEERS) else None
    return _render("rewards.html", rewards=items, mine=mine, volunteering=_has(*VOLUNTEERS), tab="rewards",
                   title=_("Rewards for points"))


@blueprint.post("/rewards/<reward_id>/redemption")
def redeem(reward_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    name = flask.request.form.get("name", "").strip()[:100]
    write(f"/rewards/{q(reward_id)}/redemptions", {},
           _("You redeemed %(name)s. The community's staff will hand it over.", name=name or reward_id))
    return flask.redirect(flask.url_for("volunteer.rewards"))


# -- certificates -----------------------------------------------------------------------------------

@blueprint.get("/certificates")
def certificates():
    if (redirect := require_signin()) is not None:
        return redirect
    number = flask.request.args.get("number", "").strip().upper()
    if number:
        return flask.redirect(flask.url_for("volunteer.certificate", number=number))
    today = _today()
    defaults = {"person_id": flask.request.args.get("person_id", "").strip()[:100],
                "period_from": date(today.year, 1, 1).isoformat(), "period_to": today.isoformat(),
                "issuing_organisation": flask.session.get("name") or ""}
    return _render("certificates.html", form=defaults, issuing=_has(*ORGANISERS), tab="certificates",
                   title=_("Certificates of volunteer service"))


@blueprint.post("/certificates")
def issue_certificate():
    if (redirect := require_signin()) is not None:
        return redirect
    form = flask.request.form
    body = {"person_id": form.get("person_id", "").strip() or flask.session.get("person_id"),
            "period_from": form.get("period_from", "").strip(), "period_to": form.get("period_to", "").strip(),
            "issuing_organisation": form.get("issuing_organisation", "").strip()[:200]}
    valid = bool(body["issuing_organisation"])
    for key in ("period_from", "period_to"):
        try:
            date.fromisoformat(body[key])
        except ValueError:
            valid = False
    if not valid:
        return invalid_form(flask.url_for("volunteer.certificates", person_id=form.get("person_id", "")))
    try:
        created = send(lambda c: post(c, "/certificates", body))
    except ApiError as error:
        flask.flash(error_text(error), "error")
        return flask.redirect(flask.url_for("volunteer.certificates", person_id=form.get("person_id", "")))
    flask.flash(_("The certificate is issued. Print this page or give its number to the volunteer."), "info")
    return flask.redirect(flask.url_for("volunteer.certificate", number=created["created_id"]))


@blueprint.get("/certificates/<number>")
def certificate(number: str):
    if (redirect := require_signin()) is not None:
        return redirect
    found = part(lambda c: c.get(f"/certificates/{q(number)}"), absent=None)
    if found is None:
        flask.abort(404)
    if isinstance(found, Unavailable):
        return _render("certificate.html", certificate=None, down=found, tab="certificates",
                       title=_("Certificate of volunteer service")), 503
    check_url = flask.url_for("volunteer.check_certificate", number=found.get("certificate_number") or number,
                              _external=True)
    api_path = f"/api/v1/public/certificates/{q(number)}/verification"
    return _render("certificate.html", certificate=found, check_url=check_url, api_path=api_path,
                   tab="certificates", title=_("Certificate of volunteer service"))


# What a third party may type in from a paper certificate: the public check's query keys.
PRESENTED = ("holder", "card_number", "period_from", "period_to", "issued_on", "issuing_organisation",
             "total_hours", "entries")
PRESENTED_LABELS = {"value": _l("Verification value"), "holder": _l("Holder's name"),
                    "card_number": _l("Volunteer card number"), "period_from": _l("From"), "period_to": _l("To"),
                    "issued_on": _l("Issued on"), "issuing_organisation": _l("Issuing organisation"),
                    "total_hours": _l("Total hours"), "entries": _l("Entries (day:hours, separated by commas)")}


@blueprint.get("/certificates/verify")
def check_certificate():
    """Check a paper certificate without an account: its number, its verification value and what
    it says (each part optional), answered part by part by the public check of the API."""
    args = flask.request.args
    number = args.get("number", "").strip().upper()[:64]
    presented = {"value": args.get("value", "").strip().lower()[:64],
                 **{key: args.get(key, "").strip()[:4000] for key in PRESENTED}}
    result = None
    status = 200
    if bool(number) != bool(presented["value"]):
        flask.flash(_("Enter the certificate's number and its verification value, as printed."), "error")
        status = 422
    elif number:
        query = {key: value for key, value in presented.items() if value}
        try:
            result = part(lambda c: c.get(f"/public/certificates/{q(number)}/verification", **query),
                          anonymous=True, absent=None)
        except ApiError as error:
            flask.flash(error_text(error), "error")
            status = error.status if 400 <= error.status < 500 else 503
        if isinstance(result, Unavailable):
            status = 503
    return flask.render_template(
        "volunteer/verify.html", number=number, presented=presented, labels=PRESENTED_LABELS, result=result,
        title=_("Check a certificate of volunteer service")), status


@blueprint.post("/certificates/<number>/verification")
def verify(number: str):
    if (redirect := require_signin()) is not None:
        return redirect
    value = flask.request.form.get("verification", "").strip().lower()
    back = flask.url_for("volunteer.certificate", number=number)
    if len(value) != 64:
        flask.flash(_("The verification value has 64 characters: copy it exactly as printed."), "error")
        return flask.redirect(back)
    try:
        # a query (it records nothing), sent as a POST: the form's key is used all the same
        result = send(lambda c: post(c, f"/certificates/{q(number)}/verification", {"verification": value}))
    except ApiError as error:
        flask.flash(error_text(error), "error")
        return flask.redirect(back)
    if result.get("valid"):
        flask.flash(_("Verified: this certificate matches the platform's records."), "info")
    else:
        flask.flash(_("Not verified: this certificate does not match the platform's records."), "error")
    return flask.redirect(back)
