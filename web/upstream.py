"""Calls to the gateway for one page: a :class:`cocreate_client.Client` per request, carrying the
session's token (never the browser's), the visitor's address and the page language.

A page is made of *parts*; :func:`part` asks for one and turns a gateway or service that is down
into :class:`Unavailable` — the template shows "暂时无法获取" for that part and the rest of the page
as usual. A 401 from the gateway (the token expired) ends the session and sends the visitor to
sign in again.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.error
from collections.abc import Callable
from typing import Any

import flask

from cocreate_client import ApiError, Client
from cocreate_client.messages import message
from web.i18n import language_tag

log = logging.getLogger(__name__)
DOWN_STATUSES = (502, 503, 504)


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
    try:
        return fetch(gateway(anonymous=anonymous))
    except ApiError as error:
        if error.status == 401 and not anonymous:
            raise SessionExpired() from error
        if error.status in DOWN_STATUSES or error.status == 429:
            log.warning("a page part is unavailable: %s %s", error.status, error.reason)
            return Unavailable()
        if error.status == 404:
            return absent
        raise
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
        log.warning("the gateway is unreachable: %s", error)
        return Unavailable()


def send(do: Callable[[Client], Any]) -> Any:
    """A write for the signed-in visitor; a 401 ends the session. Errors propagate (the view
    shows their message); the gateway being unreachable is a 503-like :class:`ApiError`."""
    try:
        return do(gateway())
    except ApiError as error:
        if error.status == 401:
            raise SessionExpired() from error
        raise
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        raise ApiError(503, {"errors": {"reason": "service_unavailable"}}) from None


def error_text(error: ApiError) -> str:
    """The visitor's message for an API error, from the one message catalogue; a validation error
    names its fields."""
    from cocreate_client.messages import message_for_status

    tag = language_tag()
    reason = error.reason
    text = message(reason, tag) if reason else message_for_status(error.status, tag)
    errors = error.body.get("errors") if isinstance(error.body, dict) else None
    if error.status == 422 and isinstance(errors, dict):
        fields = [k for k in errors if k not in ("reason",) and not k.startswith("_")]
        if fields:
            text = f"{text} ({', '.join(sorted(fields))})"
    return text
