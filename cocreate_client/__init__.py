"""A Python client of the 共同缔造 public API (the gateway's ``/api/v1``).

    from cocreate_client import Client, default_url
    client = Client(default_url()).login("wang", "password")
    project = client.propose(community_id="xinyang", grid_id="g1", title="安装路灯", ...)

Every POST carries an ``Idempotency-Key``; when the gateway or a service is unavailable (503, a
dropped connection) the client retries the same request with the same key, so a retried write
never happens twice. Errors raise :class:`ApiError` with the API's error shape; a gateway that
cannot be reached raises :class:`OSError` (``urllib.error.URLError``, ``ConnectionError``, …).

:func:`default_url` is the one rule for where the gateway is, shared by the ``cocreate`` command
line and ``make demo``: ``COCREATE_URL`` when set, else ``http://127.0.0.1:${GATEWAY_PORT:-8000}``
(the port ``make run`` gives the gateway).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

__all__ = ["ApiError", "Client", "default_url"]


def default_url(environ=None) -> str:
    """The gateway's base URL: ``COCREATE_URL`` when set, else ``http://127.0.0.1:<GATEWAY_PORT>``
    (default port 8000, as ``make run`` serves it)."""
    environ = os.environ if environ is None else environ
    url = (environ.get("COCREATE_URL") or "").strip()
    if url:
        return url.rstrip("/")
    port = (environ.get("GATEWAY_PORT") or "").strip() or "8000"
    return f"http://127.0.0.1:{port}"


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body

    @property
    def reason(self) -> str | None:
        errors = self.body.get("errors") if isinstance(self.body, dict) else None
        return errors.get("reason") if isinstance(errors, dict) else None


class Client:
    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 15.0, retries: int = 3,
                 headers: dict[str, str] | None = None, longest_wait: float = 5.0) -> None:
        """``retries``: how often a call refused for now (503, 429, an idempotent call still in
        progress) or cut off is tried again; ``longest_wait``: the most it waits before one retry,
        even when the gateway's ``Retry-After`` asks for more (a bulk loader such as the demo
        passes a minute: the rate limits count per minute; nothing was done by a 429)."""
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.longest_wait = longest_wait
        # Sent with every request: e.g. a web front end's ``X-Forwarded-For`` (the visitor's
        # address, for the gateway's per-address rate limits) and ``Accept-Language``.
        self.headers = dict(headers or {})

    # -- plumbing -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Any:
        url = f"{self.base_url}/api/v1{path}"
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        all_headers = {"Accept": "application/json", **self.headers, **(headers or {})}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        if method == "POST":
            all_headers.setdefault("Idempotency-Key", str(uuid.uuid4()))
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    raw = reply.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as error:
                raw = error.read()
                try:
                    payload = json.loads(raw) if raw else None
                except ValueError:
                    payload = raw.decode(errors="replace")
                retryable = error.code in (503, 429) or (error.code == 409 and _reason(payload) == "idempotency_in_progress")
                if retryable and attempt < self.retries:
                    time.sleep(min(self.longest_wait, float(error.headers.get("Retry-After") or 1)))
                    continue
                raise ApiError(error.code, payload) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if attempt < self.retries and (method == "GET" or "Idempotency-Key" in all_headers):
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise
        raise AssertionError("unreachable")

    def get(self, path: str, **query) -> Any:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, {} if body is None else body)

    # -- identity -----------------------------------------------------------------------------

    def login(self, username: str, password: str) -> "Client":
        answer = self.request("POST", "/auth/token", {"username": username, "password": password})
        self.token = answer["access_token"]
        return self

    def whoami(self) -> dict:
        return self.get("/whoami")

    # -- projects (共谋 共建 共管 共评 共享) ---------------------------------------------------------

    def projects(self, **filters) -> dict:
        return self.get("/projects", **filters)

    def project(self, project_id: str) -> dict:
        return self.get(f"/projects/{project_id}/overview")

    def propose(self, **proposal) -> dict:
        return self.post("/projects", proposal)["project"]

    def cosign(self, project_id: str) -> dict:
        return self.post(f"/projects/{project_id}/cosignatures")["project"]

    def opinion(self, project_id: str, stance: str, text: str) -> dict:
        return self.post(f"/projects/{project_id}/opinions", {"stance": stance, "text": text})["project"]

    def open_vote(self, project_id: str, responsible_unit: dict | None = None) -> dict:
        body = {"responsible_unit": responsible_unit} if responsible_unit else {}
        return self.post(f"/projects/{project_id}/vote/open", body)["project"]

    def ballot(self, project_id: str, choice: str) -> dict:
        return self.post(f"/projects/{project_id}/vote/ballots", {"choice": choice})["project"]

    def close_vote(self, project_id: str) -> dict:
        return self.post(f"/projects/{project_id}/vote/close")["project"]

    def pledge(self, project_id: str, **pledge) -> str:
        return self.post(f"/projects/{project_id}/pledges", pledge)["created_id"]

    def deliver(self, project_id: str, pledge_id: str, **delivery) -> dict:
        return self.post(f"/projects/{project_id}/pledges/{pledge_id}/deliveries", delivery)["project"]

    def command(self, project_id: str, action: str, body: dict | None = None) -> dict:
        """Any other project command: ``milestones``, ``completion``, ``evaluation/open`` …"""
        return self.post(f"/projects/{project_id}/{action}", body)["project"]

    # -- participatory budgeting rounds (参与式预算) -------------------------------------------------

    def rounds(self, community_id: str, status: str | None = None) -> list[dict]:
        return self.get(f"/communities/{community_id}/rounds", status=status)["items"]

    def budget_round(self, round_id: str) -> dict:
        return self.get(f"/rounds/{round_id}")

    def open_round(self, community_id: str, **spec) -> dict:
        """``title``, ``budget_fen``, ``rule`` (greedy | mes), ``project_ids``, ``closes_at`` (ISO 8601
        with a time zone); optionally ``electorate``, ``electorate_size``, ``max_approvals``."""
        return self.post(f"/communities/{community_id}/rounds", spec)["round"]

    def approve(self, round_id: str, project_ids: list[str]) -> dict:
        """Cast (or revise) your approval ballot; the round with ``my_ballot``."""
        return self.request("PUT", f"/rounds/{round_id}/ballot", {"approvals": list(project_ids)})["round"]

    def close_round(self, round_id: str) -> dict:
        return self.post(f"/rounds/{round_id}/close")["round"]

    def verify_round(self, round_id: str) -> dict:
        return self.get(f"/rounds/{round_id}/verification")

    # -- volunteers, feedback, views ----------------------------------------------------------

    def card(self) -> dict:
        return self.get("/me/card")

    def rate(self, subject_id: str, level: int, comment: str = "", **dimensions) -> dict:
        body = {"level": level, "comment": comment}
        if dimensions:
            body["dimensions"] = dimensions
        return self.post(f"/subjects/{subject_id}/ratings", body)["resource"]

    def ranking(self, community_id: str, kind: str = "cadre", period: str | None = None) -> dict:
        return self.get(f"/rankings/{community_id}/{kind}", period=period)

    def dashboard(self, community_id: str, kind: str = "cadre") -> dict:
        return self.get(f"/communities/{community_id}/dashboard", kind=kind)

    def me(self) -> dict:
        return self.get("/me")


def _reason(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("errors"), dict):
        return payload["errors"].get("reason")
    return None
