"""Calls to the gateway for one page: a :class:`cocreate_client.Client` per request, carrying the
session's token (never the browser's), the visitor's address and the page language.

A page is made of *parts*; :func:`part` asks for one and turns a gateway or service that is down
into :class:`Unavailable` — the template shows "暂时无法获取" for that part and the rest of the page
as usual. A 401 from the gateway (the token expired) ends the session and sends the visitor to
sign in again — unless the session was signed in through an identity provider that gave a refresh
token: then a ``token_expired`` is answered by renewing the tokens once and asking again
(:func:`web.oidc.renew`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import logging
import urllib.error
import uuid
from collections.abc import Callable
from typing import Any

import flask
from flask_babel import gettext as _

from cocreate_client import ApiError, Client
from cocreate_client.messages import message, message_for_status
from web.i18n import language_tag

log = logging.getLogger(__name__)


class SessionExpired(Exception):
    """The gateway no longer accepts the session's token."""


@dataclasses.dataclass(frozen=True)
class Unavailable:
    """A part of a page that could not be fetched now (its service or the gateway is down)."""

    reason: str = "service_down_part"

    def __bool__(self) -> bool:
        return False

    @property
    def text(self) -> str:
        return message("service_down_part", language_tag())


def visitor_address() -> str:
    settings = flask.current_app.extensions["cocreate.web_settings"]
    request = flask.request
    if settings.trusted_proxies > 0:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        if len(hops) >= settings.trusted_proxies:
            return hops[-settings.trusted_proxies]
    return request.remote_addr or "unknown"


def gateway(*, anonymous: bool = False) -> Client:
    """A client of the gateway for this request: the session's token unless ``anonymous``."""
    settings = flask.current_app.extensions["cocreate.web_settings"]
    headers = {"Accept-Language": language_tag(), "X-Correlation-ID": flask.g.get("correlation_id", "")}
    if settings.forward_client_address:
        headers["X-Forwarded-For"] = visitor_address()
    token = None if anonymous else flask.session.get("token")
    # No retries: a person is waiting; a part that fails now says so and the page still renders.
    return Client(settings.gateway_url, token, timeout=settings.upstream_timeout_seconds, retries=0,
                  headers=headers)


def part(fetch: Callable[[Client], Any], *, anonymous: bool = False, absent: Any = Unavailable()) -> Any:
    """What ``fetch(client)`` answers, or :class:`Unavailable` when the gateway or the service
    behind it is down; a 404 answers ``absent``; other errors propagate as :class:`ApiError`."""
    return _settle(_attempt(fetch, gateway(anonymous=anonymous)), fetch, anonymous, absent)


def parts(*fetches: tuple[Callable[[Client], Any], dict]) -> list[Any]:
    """Several :func:`part` calls at once (``(fetch, {"anonymous": ..., "absent": ...})`` each),
    answered in order: a page's independent reads cost the slowest, not their sum. The calls go
    out on a small shared pool of threads; everything that needs the request (the session, a
    token's renewal, errors) stays in the request's own thread."""
    futures = [_POOL.submit(_attempt, fetch, gateway(anonymous=options.get("anonymous", False)))
               for fetch, options in fetches]
    return [_settle(future.result(), fetch, options.get("anonymous", False), options.get("absent", Unavailable()))
            for future, (fetch, options) in zip(futures, fetches)]


_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="gateway-part")


def _attempt(fetch: Callable[[Client], Any], client: Client) -> tuple[bool, Any]:
    """(True, answer) or (False, the exception) of one call, without touching the request."""
    try:
        return True, fetch(client)
    except Exception as error:  # settled in the request's thread by _settle
        return False, error


def _settle(outcome: tuple[bool, Any], fetch: Callable[[Client], Any], anonymous: bool, absent: Any) -> Any:
    ok, value = outcome
    if ok:
        return value
    try:
        try:
            raise value
        except ApiError as error:
            if anonymous or not renewed(error):
                raise
            return fetch(gateway())
    except ApiError as error:
        if error.status == 401 and not anonymous:
            raise SessionExpired() from error
        if error.status >= 500 or error.status == 429:
            log.warning("a page part is unavailable: %s %s", error.status, error.reason)
            return Unavailable()
        if error.status == 404:
            return absent
        raise
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, http.client.HTTPException,
            ValueError) as error:  # unreachable, cut off, or not JSON
        log.warning("the gateway is unreachable or answered nonsense: %r", error)
        return Unavailable()


def post(client: Client, path: str, body: Any) -> Any:
    """A POST with the form's own ``Idempotency-Key`` (made when the form was rendered), so that
    a double click or a resent form records once: the gateway answers the second with the first
    answer. A form without a valid key gets a fresh one."""
    key = flask.request.form.get("idempotency_key", "")
    try:
        key = str(uuid.UUID(key))
    except ValueError:
        key = str(uuid.uuid4())
    return client.request("POST", path, body, headers={"Idempotency-Key": key})


def send(do: Callable[[Client], Any]) -> Any:
    """A write for the signed-in visitor; a 401 ends the session. Errors propagate (the view
    shows their message); the gateway being unreachable is a 503-like :class:`ApiError`."""
    try:
        try:
            return do(gateway())
        except ApiError as error:
            if not renewed(error):
                raise
            return do(gateway())  # refused before it was routed: nothing was recorded
    except ApiError as error:
        if error.status == 401:
            raise SessionExpired() from error
        raise
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        raise ApiError(503, {"errors": {"reason": "service_unavailable"}}) from None


def renewed(error: ApiError) -> bool:
    """Whether the gateway said the session's token expired and the session got a new one (see
    :func:`web.oidc.renew`; only a session signed in through an identity provider can)."""
    renew = flask.current_app.extensions.get("cocreate.renew_token")
    return error.status == 401 and error.reason == "token_expired" and renew is not None and renew()


def error_text(error: ApiError) -> str:
    """The visitor's message for an API error, from the one message catalogue (by its reason, or
    by its status when it has none); the API's own field names are not shown to people."""
    tag = language_tag()
    return message(error.reason, tag) if error.reason else message_for_status(error.status, tag)


# -- a form's write, post/redirect/get ----------------------------------------------------------------

def write(path: str, body: Any, done: str) -> Any | None:
    """POST one write for the signed-in visitor (with the form's idempotency key) and flash its
    outcome: ``done``, or the API's refusal in the visitor's language (its reason is kept in
    ``flask.g.refusal``). The API's answer, or None when it refused."""
    try:
        answer = send(lambda c: post(c, path, body))
    except ApiError as error:
        flask.flash(error_text(error), "error")
        flask.g.refusal = error.reason
        return None
    flask.flash(str(done), "info")
    return answer


def invalid_form(back: str) -> flask.Response:
    """Back to the form that was not filled in right, saying so (nothing was sent)."""
    flask.flash(_("Please check the form: something is missing or not valid."), "error")
    return flask.redirect(back)


def form_action(path: str, body: Any, done: str, back: str, *, invalid_anchor: str = "",
                anchor: str = "") -> flask.Response:
    """A form's whole write: a form read as ``None`` goes back to it (``back + invalid_anchor``);
    otherwise :func:`write`, then back to the page (``back + anchor``) with the outcome."""
    if body is None:
        return invalid_form(back + invalid_anchor)
    write(path, body, done)
    return flask.redirect(back + anchor)
