"""Live pages: a project's page and the community dashboard update without a reload.

The browser opens the gateway's live stream (``GET /api/v1/live``, server-sent events) itself;
the web client holds no connection or thread per open page. ``EventSource`` cannot send a bearer
token, and the token never leaves the session row, so the page asks the web client for a stream
ticket (``POST /live/ticket``, CSRF-checked) and the web client asks the gateway for one with the
session's token (``POST /api/v1/live/tickets``): single-use, valid for a minute, bound to the
person and their community. The page opens ``<live URL>?ticket=…&named=false`` with it.

``static/live.js`` then, for an event that concerns the page (any event of the community on the
dashboard; an event naming the project on its page), fetches the page again from the web client
and swaps its ``data-live-region`` parts in place — a part where the person is typing is left
alone; an opened ``<details>`` stays open in the new part — and says so in a polite status line. When the stream ends (the gateway closes one after
five minutes) or fails, it asks for a new ticket and resumes after the last event it saw
(``last_event_id``), backing off while the gateway is unreachable.

Where the browser reaches the stream is ``WEB_LIVE_URL``: by default the gateway's own address
(local runs: ``GATEWAY_CORS_ORIGINS`` lets the web client's origin read it), ``/api/v1/live``
when an ingress serves the web client and the gateway on one host, ``off`` for no live pages.
Visitors who are not signed in get no live updates (the public pages are not live).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import flask

from cocreate_client import ApiError
from web.upstream import SessionExpired, send

blueprint = flask.Blueprint("live", __name__)


def stream_url(settings) -> str | None:
    """Where the browser opens the live stream (None: live pages are off)."""
    if settings.live_url.strip().lower() == "off":
        return None
    return settings.live_url or settings.gateway_url.rstrip("/") + "/api/v1/live"


def connect_sources(settings) -> str:
    """The Content-Security-Policy ``connect-src`` that lets pages open the stream."""
    url = stream_url(settings)
    parts = urlsplit(url) if url else None
    if parts is None or not parts.scheme:
        return "'self'"
    return f"'self' {parts.scheme}://{parts.netloc}"


@blueprint.app_context_processor
def _live():
    """``live_stream``: the stream URL for templates (None when off or not signed in)."""
    settings = flask.current_app.extensions["cocreate.web_settings"]
    return {"live_stream": stream_url(settings) if flask.session.get("token") else None}


@blueprint.post("/live/ticket")
def ticket():
    """A stream ticket for this page's ``EventSource`` (JSON: ``{"url": ...}``)."""
    settings = flask.current_app.extensions["cocreate.web_settings"]
    url = stream_url(settings)
    if url is None:
        return {"error": "live pages are off"}, 404
    if not flask.session.get("token"):
        return {"error": "sign in first"}, 401
    try:
        issued = send(lambda client: client.request("POST", "/live/tickets", {}))
    except SessionExpired:
        flask.session.clear()
        return {"error": "sign in again"}, 401
    except ApiError as error:
        status = error.status if error.status in (403, 429, 503) else 502
        return {"error": error.reason or "unavailable"}, status
    return {"url": f"{url}?ticket={issued['ticket']}&named=false", "expires_at": issued["expires_at"]}
