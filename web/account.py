"""Signing in and out, the page language, and "我的" (my proposals, pledges, ratings, card).

Locally people sign in with the gateway's token endpoint (username and password); the token
answer is kept in the server-side session with the person's name, roles and community. Deployed
(``WEB_OIDC_ISSUER`` set) there is no password form: ``/signin`` sends the browser to the identity
provider and :mod:`web.oidc` signs the person in with OpenID Connect. Either way signing in replaces
the session id, and signing out deletes the session.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import flask
from flask_babel import gettext as _

from cocreate_client import ApiError
from cocreate_client.messages import message
from web import i18n, oidc
from web.upstream import Unavailable, error_text, gateway, part

blueprint = flask.Blueprint("account", __name__)


@blueprint.record_once
def _sign_in_through_a_provider(state) -> None:
    oidc.init_app(state.app, state.app.extensions.get("cocreate.web_settings"))


def safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no host, not ``//``) is a place to go back to. A
    backslash or a control character is refused too: browsers read ``/\\host`` and ``/<tab>/host``
    as ``//host``."""
    if (target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc
            and "\\" not in target and all(ord(c) >= 0x20 and ord(c) != 0x7F for c in target)):
        return target
    return flask.url_for("pages.home")


def require_signin():
    if not flask.session.get("token"):
        return flask.redirect(flask.url_for("account.signin", next=flask.request.full_path.rstrip("?")))
    return None


@blueprint.route("/signin", methods=["GET", "POST"])
def signin():
    next_page = safe_next(flask.request.values.get("next"))
    if flask.session.get("token") and flask.request.method == "GET":
        return flask.redirect(next_page)
    if oidc.enabled():  # deployed: no password here, the identity provider signs people in
        return oidc.start(next_page)
    if flask.request.method == "GET":
        return flask.render_template("signin.html", next=next_page, title=_("Sign in"))
    username = flask.request.form.get("username", "").strip()
    password = flask.request.form.get("password", "")
    if not username or not password:
        flask.flash(_("Enter your username and password."), "error")
        return flask.render_template("signin.html", next=next_page, username=username, title=_("Sign in")), 422
    try:
        client = gateway(anonymous=True)
        answer = client.request("POST", "/auth/token", {"username": username, "password": password})
        client.token = answer["access_token"]
        who = client.whoami()
    except ApiError as error:
        text = message("signin_failed", i18n.language_tag()) if error.status == 401 else error_text(error)
        flask.flash(text, "error")
        return flask.render_template("signin.html", next=next_page, username=username,
                                     title=_("Sign in")), error.status if 400 <= error.status < 500 else 503
    except OSError:
        flask.flash(message("service_unavailable", i18n.language_tag()), "error")
        return flask.render_template("signin.html", next=next_page, username=username, title=_("Sign in")), 503
    new_session()
    flask.session.update(token=answer["access_token"], person_id=answer["person_id"], name=who.get("name"),
                         roles=list(answer.get("roles", [])), community=answer.get("community"))
    flask.flash(_("Welcome, %(name)s.", name=who.get("name") or answer["person_id"]), "info")
    return flask.redirect(next_page)


def new_session() -> None:
    """A fresh session id for the signed-in visitor (the old id, if any, is deleted)."""
    interface = flask.current_app.session_interface
    if hasattr(interface, "regenerate"):
        interface.regenerate(flask.session)  # before clearing: it leaves an empty session as it is
    flask.session.clear()


@blueprint.post("/signout")
def signout():
    id_token = flask.session.get("id_token")
    new_session()  # the signed-in session's row is deleted, not kept for the message below
    flask.flash(_("You have signed out."), "info")
    # Signed in through an identity provider: its session ends too, and it sends the browser back.
    provider = oidc.end_session_url(id_token) if id_token else None
    if provider and flask.request.headers.get("HX-Request"):
        return flask.Response(status=204, headers={"HX-Redirect": provider})
    return flask.redirect(provider or flask.url_for("pages.home"))


@blueprint.get("/lang/<code>")
def language(code: str):
    response = flask.redirect(safe_next(flask.request.args.get("next")))
    if code in i18n.LOCALES:
        response.set_cookie(i18n.COOKIE, code, max_age=365 * 24 * 3600, samesite="Lax", httponly=True,
                            secure=flask.current_app.extensions["cocreate.web_settings"].cookie_secure)
    return response


@blueprint.get("/me")
def me():
    if (redirect := require_signin()) is not None:
        return redirect
    mine = part(lambda c: c.me())
    missing = {entry["part"] for entry in mine.get("missing", [])} if not isinstance(mine, Unavailable) else set()
    view = {}
    for name in ("card", "proposals", "pledges", "ratings"):
        view[name] = Unavailable() if isinstance(mine, Unavailable) or name in missing else mine.get(name)
    return flask.render_template("me.html", mine=view, title=_("Mine"))


@blueprint.get("/cases/<case_id>")
def case(case_id: str):
    if (redirect := require_signin()) is not None:
        return redirect
    found = part(lambda c: c.get(f"/cases/{quote(case_id, safe='')}"), absent=None)
    if found is None:
        flask.abort(404)
    return flask.render_template("case.html", case=found, title=_("Follow-up of my rating"))
