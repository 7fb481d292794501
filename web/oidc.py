"""Signing in through an identity provider with OpenID Connect, when ``WEB_OIDC_ISSUER`` is set
(deployed: the gateway then trusts the provider's JWKS and has no users file).

The flow is the authorization code flow with PKCE (S256), through Authlib's Flask client:

1. ``/signin?next=/me`` keeps ``next`` (a path of this site only, :func:`web.account.safe_next`) in
   the server-side session and sends the browser to the provider's authorization endpoint with a
   fresh ``state``, ``nonce`` and PKCE challenge (Authlib keeps them in the same session row).
2. The provider sends the browser back to ``/signin/callback?code=...&state=...``. Authlib checks
   ``state``, exchanges the code with the PKCE verifier at the token endpoint (server to server) and
   validates the ID token: signature by the provider's JWKS, ``iss``, ``aud`` (the client id),
   ``exp``, ``iat``, ``nonce`` and ``at_hash``.
3. The token the gateway is given (``WEB_OIDC_GATEWAY_TOKEN``: the access token when it is a JWT for
   the platform, else the ID token) is presented to ``GET /api/v1/whoami``; the person's name, roles
   and community come from the gateway's answer, exactly as with the local sign-in.
4. A new session id is issued and the tokens are kept in its server-side row only; the browser
   holds nothing but the session id.

When the gateway answers ``401 token_expired`` the session's refresh token (if the provider gave
one) is spent once for new tokens and the call is made again (:func:`renew`); when that fails the
person is asked to sign in again. Signing out deletes the session and, when the provider publishes an
``end_session_endpoint``, ends the provider's session too (RP-initiated logout).

Every failure of the provider — the person declined (``error=access_denied``), a ``state`` that is
not this session's, the provider unreachable, an ID token that does not verify — is a page in the
visitor's language with the project's error page, never a stack trace or a 500.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode, urlsplit, urlunsplit

import flask
import requests
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask_babel import gettext as _

from cocreate_client import ApiError
from cocreate_client.messages import message
from web import i18n
from web.config import WebSettings

log = logging.getLogger(__name__)
blueprint = flask.Blueprint("oidc", __name__)
EXTENSION = "cocreate.oidc"
NEXT_KEY = "oidc_next"


def enabled() -> bool:
    return EXTENSION in flask.current_app.extensions


def init_app(app: flask.Flask, settings: WebSettings | None) -> None:
    """Register the provider's client when ``WEB_OIDC_ISSUER`` is set (the routes are always there;
    without an issuer the callback is a 404)."""
    app.register_blueprint(blueprint)
    if settings is None or not settings.oidc_issuer:
        return
    client_kwargs = {"scope": settings.oidc_scopes, "code_challenge_method": "S256",
                     "default_timeout": settings.upstream_timeout_seconds}
    if not settings.oidc_client_secret:
        client_kwargs["token_endpoint_auth_method"] = "none"  # a public client: PKCE alone
    oauth = OAuth(app)
    client = oauth.register(
        "provider", client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret or None,
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs=client_kwargs)
    app.extensions[EXTENSION] = client
    app.extensions["cocreate.renew_token"] = renew


def _client():
    return flask.current_app.extensions[EXTENSION]


def _settings() -> WebSettings:
    return flask.current_app.extensions["cocreate.web_settings"]


def _redirect_uri() -> str:
    return _settings().oidc_redirect_uri or flask.url_for("oidc.callback", _external=True)


def _site_root() -> str:
    """This site's start page as an absolute URL (where the provider sends the browser after signing
    out): the origin of ``WEB_OIDC_REDIRECT_URI`` when it is set, else the request's."""
    if configured := _settings().oidc_redirect_uri:
        parts = urlsplit(configured)
        return urlunsplit((parts.scheme, parts.netloc, flask.url_for("pages.home"), "", ""))
    return flask.url_for("pages.home", _external=True)


def failure(status: int, text: str):
    """The project's error page for a sign-in that did not succeed."""
    return flask.render_template("error.html", status=status, text=text, title=_("Sign-in did not succeed")), status


def start(next_page: str):
    """Send the browser to the provider (a full-page navigation also for an htmx request: the
    provider's page cannot be fetched by the page's script)."""
    flask.session[NEXT_KEY] = next_page
    try:
        response = _client().authorize_redirect(_redirect_uri())
    except (requests.RequestException, OSError, ValueError) as error:
        log.warning("the identity provider is unreachable: %r", error)
        return failure(503, _("The sign-in service is unavailable at the moment. Please try again later."))
    if flask.request.headers.get("HX-Request"):
        return flask.Response(status=204, headers={"HX-Redirect": response.location})
    return response


@blueprint.get("/signin/callback")
def callback():
    """Where the provider sends the browser back with ``code`` and ``state`` (or ``error``)."""
    if not enabled():
        flask.abort(404)
    from web.account import new_session, safe_next  # account imports this module

    client = _client()
    try:
        token = client.authorize_access_token()
    except MismatchingStateError:
        return failure(400, _("This sign-in link has expired or belongs to another browser. Please sign in again."))
    except OAuthError as error:  # an error answer (error=...), or the token endpoint refused the code
        log.warning("the identity provider refused the sign-in: %s %s", error.error, error.description)
        if error.error == "access_denied":
            return failure(403, _("Sign-in was cancelled at the identity provider. You are not signed in."))
        return failure(502, _("The identity provider could not sign you in. Please try again."))
    except (requests.RequestException, OSError) as error:
        log.warning("the identity provider is unreachable: %r", error)
        return failure(503, _("The sign-in service is unavailable at the moment. Please try again later."))
    except Exception:  # an ID token that does not verify, or an answer that is not OpenID Connect
        log.exception("the identity provider's answer could not be verified")
        return failure(502, _("The identity provider could not sign you in. Please try again."))
    claims = token.get("userinfo")
    bearer = token.get(_settings().oidc_gateway_token)
    if not claims or not bearer:
        log.warning("the identity provider's answer has no %s or no ID token",
                    _settings().oidc_gateway_token)
        return failure(502, _("The identity provider could not sign you in. Please try again."))
    from web.upstream import gateway

    try:
        client_of_gateway = gateway(anonymous=True)
        client_of_gateway.token = bearer
        who = client_of_gateway.whoami()
    except ApiError as error:
        if error.status == 401:
            log.warning("the gateway refuses the identity provider's %s (%s): check COCREATE_JWT_ISSUER, "
                        "COCREATE_JWT_AUDIENCE, COCREATE_JWT_JWKS_URL and WEB_OIDC_GATEWAY_TOKEN",
                        _settings().oidc_gateway_token, error.reason)
            return failure(502, _("The platform did not accept this sign-in. Please tell the community's staff."))
        return failure(503, message("service_unavailable", i18n.language_tag()))
    except (OSError, ValueError):
        return failure(503, message("service_unavailable", i18n.language_tag()))
    next_page = safe_next(flask.session.get(NEXT_KEY))
    new_session()
    flask.session.update(token=bearer, refresh_token=token.get("refresh_token"), id_token=token.get("id_token"),
                         person_id=who["person_id"], name=who.get("name"), roles=list(who.get("roles", [])),
                         community=who.get("community"))
    flask.flash(_("Welcome, %(name)s.", name=who.get("name") or who["person_id"]), "info")
    return flask.redirect(next_page)


def renew() -> bool:
    """New tokens for the session from its refresh token, after the gateway said the token expired;
    ``False`` when there is no refresh token or the provider does not give a usable new token (the
    person then signs in again). A refreshed ID token is validated like the first one and must be
    the same person's."""
    refresh_token = flask.session.get("refresh_token")
    if not refresh_token or not enabled():
        return False
    client, settings = _client(), _settings()
    try:
        metadata = client.load_server_metadata()
        with OAuth2Session(client.client_id, client.client_secret,
                           token_endpoint_auth_method=client.client_kwargs.get("token_endpoint_auth_method"),
                           default_timeout=settings.upstream_timeout_seconds) as session:
            token = dict(session.refresh_token(metadata["token_endpoint"], refresh_token=refresh_token))
        if token.get("id_token"):
            claims = client.parse_id_token(token, nonce=None)
            if str(claims["sub"]) != flask.session.get("person_id"):
                log.warning("a refreshed ID token names another person; the session ends")
                return False
    except Exception as error:  # refused (the refresh token expired or was revoked), or unreachable
        log.info("the session's tokens could not be refreshed: %r", error)
        return False
    bearer = token.get(settings.oidc_gateway_token)
    if not bearer:
        log.info("the provider's refresh answer has no %s; the person signs in again", settings.oidc_gateway_token)
        return False
    flask.session.update(token=bearer, refresh_token=token.get("refresh_token") or refresh_token,
                         id_token=token.get("id_token") or flask.session.get("id_token"))
    return True


def end_session_url(id_token: str | None) -> str | None:
    """The provider's end-session address (RP-initiated logout) back to this site's start page, or
    ``None`` when the provider has none or cannot be reached now (the local session ends anyway)."""
    if not enabled():
        return None
    client = _client()
    try:
        endpoint = client.load_server_metadata().get("end_session_endpoint")
    except (requests.RequestException, OSError, ValueError) as error:
        log.warning("the identity provider is unreachable for signing out: %r", error)
        return None
    if not endpoint:
        return None
    params = {"client_id": client.client_id, "post_logout_redirect_uri": _site_root()}
    if id_token:
        params["id_token_hint"] = id_token
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"
