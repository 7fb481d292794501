"""Composed views: several services asked at once, each with its own timeout.

A part whose service is down, slow or failing is left out and named under ``missing`` (with the
reason); the view still answers 200. Only the part that defines the view (the project of a
project overview) turns a 404 of its service into a 404 of the view.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gateway.upstream import Upstream, UpstreamUnavailable
from services.kernel import metrics
from services.kernel.errors import Forbidden, NotFound


@dataclass(frozen=True)
class Part:
    name: str
    service: str
    path: str
    shape: Callable[[Any], Any] = lambda body: body
    absent_ok: bool = True  # a 404 means "nothing yet" (null), not a failure
    spread: tuple[str, ...] = ()  # the shaped body holds these keys of the view (one call, several parts)


class Composer:
    def __init__(self, upstreams: Mapping[str, Upstream], pool: ThreadPoolExecutor) -> None:
        self.upstreams = upstreams
        self.pool = pool

    def gather(self, view: str, parts: list[Part], headers: Mapping[str, str]) -> tuple[dict[str, Any], list]:
        futures = {part.name: self.pool.submit(self._fetch, part, headers) for part in parts}
        answer: dict[str, Any] = {}
        missing = []
        for part in parts:
            ok, value = futures[part.name].result()
            names = part.spread or (part.name,)
            if ok:
                answer.update(value if part.spread else {part.name: value})
            else:
                answer.update({name: None for name in names})
                missing += [{"part": name, "service": part.service, "reason": value} for name in names]
                metrics.COMPOSED_PARTIAL.labels(view, part.service).inc()
        return answer, missing

    def _fetch(self, part: Part, headers: Mapping[str, str]) -> tuple[bool, Any]:
        try:
            reply = self.upstreams[part.service].request("GET", part.path, headers=headers)
        except UpstreamUnavailable as exc:
            return False, exc.why
        if reply.status == 404 and part.absent_ok:
            return True, None
        if reply.status == 404:
            raise NotFound((reply.json() or {}).get("message", "not found"))
        if reply.status == 403 and not part.absent_ok:
            # The view is about a record the caller may not read (another community's project).
            body = reply.json() or {}
            raise Forbidden(body.get("message", "forbidden"), reason=(body.get("errors") or {}).get("reason"))
        if reply.status >= 400:
            return False, f"answered {reply.status}"
        return True, part.shape(reply.json())


def q(value: str) -> str:
    return quote(value, safe="")


def project_overview_parts(project_id: str) -> list[Part]:
    pid = q(project_id)
    return [
        Part("project", "projects", f"/projects/{pid}", absent_ok=False),
        Part("volunteer_minutes", "volunteers", f"/projects/{pid}/minutes",
             lambda body: {"minutes": body["minutes"], "hours": body["hours"]}),
        Part("satisfaction", "feedback", f"/subjects/project-{pid}",
             lambda body: {"period": body["period"], **(body.get("figures") or {}), "formula": body["formula"]}),
    ]


def dashboard_parts(community_id: str, kind: str) -> list[Part]:
    cid = q(community_id)

    def ranking(body):
        ranked = body["ranked"]
        return {"kind": body["kind"], "period": body["period"], "ranked": len(ranked),
                "not_enough_ratings": len(body["not_enough_ratings"]), "top": ranked[:3],
                "bottom": ranked[-3:][::-1] if len(ranked) > 3 else [], "formula": body["formula"]}

    return [
        Part("community", "projects", f"/communities/{cid}/stats",
             lambda body: {"projects": {"total": body["projects"], "per_stage": body["projects_per_stage"],
                                        "votes": body["votes"], "contributions": body["contributions"]},
                           "fund": {k: body["fund"].get(k) for k in ("balance_fen", "reserved_fen", "spent_fen",
                                                                     "credited_fen")}},
             absent_ok=False, spread=("projects", "fund")),
        Part("top_volunteers", "volunteers", f"/leaderboards/{cid}?period=month&limit=5",
             lambda body: {"month": body["label"], "items": body["items"]}),
        Part("hours_per_month", "volunteers", f"/hours/{cid}?months=12", lambda body: body["items"]),
        Part("satisfaction", "feedback", f"/rankings/{cid}/{q(kind)}", ranking),
        Part("follow_ups", "feedback", f"/cases/summary?community_id={cid}"),
    ]


def me_parts() -> list[Part]:
    def card(body):
        c = body["card"]
        return {k: c.get(k) for k in ("card_number", "name", "community_id", "approved_minutes", "approved_hours",
                                      "points_balance", "star_level", "star_label")}

    return [
        Part("card", "volunteers", "/me/card", card),
        Part("proposals", "projects", "/me/proposals"),
        Part("pledges", "projects", "/me/pledges"),
        Part("ratings", "feedback", "/me/ratings"),
    ]


def my_data_parts() -> list[Part]:
    """A person's copy of everything the platform holds about them (``GET /me/data``): each service's
    records about them, their card with its credits and claims, their erasure request, and — for a
    rated cadre or grid worker — their figures, never the ratings."""
    return [
        Part("card", "volunteers", "/me/card"),
        Part("erasure", "volunteers", "/me/erasure"),
        Part("ratings_given", "feedback", "/me/ratings", lambda body: body["items"]),
        Part("ratings_received", "feedback", "/me/rated", lambda body: body["items"]),
        *(Part(f"{service}_records", service, f"/me/data/{service}", lambda body: body["records"])
          for service in ("projects", "volunteers", "feedback")),
    ]


def my_data_zip(document: Mapping[str, Any]) -> bytes:
    """``/me/data?format=zip``: the same document as ``data.json``, and as CSV (UTF-8 with a BOM,
    for Excel): ``records.csv`` (every service's records about the person, one row each, their data
    as JSON), ``credits.csv`` (the card's credited hours) and ``ratings.csv`` (the ratings given)."""
    def table(header: list[str], rows) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
        return ("\ufeff" + out.getvalue()).encode("utf-8")

    records = [(service, r["event_type"], r["stream_id"], r["recorded_at"],
                json.dumps(r["data"], ensure_ascii=False, sort_keys=True))
               for service in ("projects", "volunteers", "feedback") for r in document.get(f"{service}_records") or ()]
    card = document.get("card") or {}
    credits = [(c["day"], c["minutes"], c["points"], c["source"], c["source_id"], c["retroactive"], c["credited_at"])
               for c in card.get("credits") or ()]
    ratings = [(r.get("rating_id"), r.get("subject_id"), r.get("period"), r.get("level"), r.get("comment"),
                (r.get("case") or {}).get("status")) for r in document.get("ratings_given") or ()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.json", json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True))
        archive.writestr("records.csv", table(["service", "event_type", "stream_id", "recorded_at", "data"], records))
        archive.writestr("credits.csv", table(["day", "minutes", "points", "source", "source_id", "retroactive",
                                               "credited_at"], credits))
        archive.writestr("ratings.csv", table(["rating_id", "subject_id", "period", "level", "comment", "case_status"],
                                              ratings))
    return buffer.getvalue()
