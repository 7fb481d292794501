"""The web client: a signed-in member's project page (``GET /projects/<id>`` of ``web/``), beside
the gateway's composed view that page calls (``GET /api/v1/projects/<id>/overview``).

The page is what a resident opens most; the web client renders it from three calls to the gateway
(the overview — project, volunteer minutes and satisfaction from three services —, the project's
history and the community's public header) and its server-side session (a row of the web
client's own SQLite database, read and refreshed on every request). The anchor is the overview
alone, asked with the same member's token: the difference is what the web client adds.

Both are served as ``make run`` serves them (gunicorn, 2 sync workers for the web client, the
gateway 2 gevent workers) and measured by the same load generator (:mod:`bench.load`): the
peak (closed loop, 4 clients), then p50/p99 at half of each one's own peak (open loop, latency from
the scheduled send time). The page is fetched with the session cookies of 8 members' browsers
signed in through the sign-in form (the gateway's token endpoint reads a users file written here),
shared out among the requests; every answer must be the page (200), not the sign-in redirect.
"""

from __future__ import annotations

import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

from bench.http import CONCURRENCY, _check, _request, measure
from bench.load import Request
from bench.platform import Platform
from cocreate_client.demo import write_users
from tests.support.projects import Community, HttpClient, ProjectsDriver

COMMUNITY = "benchweb"
SESSIONS = 8
TARGET_P99_MS = 100.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def web_session(web_url: str, username: str, password: str) -> str:
    """Sign in through the web client's form, as a browser does; the ``cocreate_session`` cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    with opener.open(f"{web_url}/signin", timeout=30) as reply:
        page = reply.read().decode()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    if not token:
        raise RuntimeError(f"no CSRF token on the sign-in page: {page[:300]}")
    form = urllib.parse.urlencode({"username": username, "password": password, "next": "/",
                                   "csrf_token": html.unescape(token.group(1))}).encode()
    try:
        opener.open(f"{web_url}/signin", data=form, timeout=30)
        raise RuntimeError(f"signing in as {username} did not redirect")
    except urllib.error.HTTPError as error:  # the 302 to the next page, not followed
        if error.code != 302:
            raise RuntimeError(f"signing in as {username}: {error.code} {error.read()[:300]!r}") from None
    cookie = next((c.value for c in jar if c.name == "cocreate_session"), None)
    if not cookie:
        raise RuntimeError(f"signing in as {username} set no session cookie")
    return cookie


def scenario(platform: Platform, projects: int) -> tuple[list[str], list, list[str]]:
    """A community with projects in deliberation (six co-signatures each) and under the council
    vote; its members' web sessions. Returns the project ids, the members (for their tokens) and
    the session cookies."""
    d = ProjectsDriver(HttpClient(platform.urls["projects"]))
    c = Community(d, COMMUNITY, residents=max(8, SESSIONS), fund_fen=100_000_000)
    ids = []
    for i in range(projects):
        project = c.propose(title=f"楼道加装扶手{i}", requested_fen=100_000, estimated_cost_fen=200_000)
        c.qualify(project["project_id"])
        if i % 2:
            d.post(c.cadre, f"/projects/{project['project_id']}/vote/open", {}, status=200)
        ids.append(project["project_id"])
    members = c.residents[:SESSIONS]
    write_users(platform.users_file, [{"username": p.person_id, "person_id": p.person_id, "name": p.name,
                                       "roles": list(p.roles), "community": p.community} for p in members])
    cookies = [web_session(platform.urls["web"], p.person_id, "demo") for p in members]
    return ids, members, cookies


def run(workdir, quick: bool, platform: Platform) -> list[dict]:
    duration = 3.0 if quick else 8.0
    reads = 10_000 if quick else 30_000
    ids, members, cookies = scenario(platform, 4 if quick else 12)
    pages = [Request("GET", f"/projects/{pid}", None, (("Cookie", f"cocreate_session={cookie}"),))
             for pid in ids for cookie in cookies]
    pages = pages * (reads // len(pages) + 1)
    overviews = [_request("GET", f"/api/v1/projects/{pid}/overview", member) for pid in ids for member in members]
    overviews = overviews * (reads // len(overviews) + 1)

    anchor = measure(platform.urls["gateway"], overviews, overviews, duration)
    _check(anchor["peak"], "gateway project overview")
    _check(anchor["half"], "gateway project overview at half the peak")
    ours = measure(platform.urls["web"], pages, pages, duration)
    _check(ours["peak"], "web project page")
    _check(ours["half"], "web project page at half the peak")

    p99, anchor_p99 = ours["half"].percentile(99), anchor["half"].percentile(99)
    return [{
        "measure": "web client: a signed-in member's project page (`web/` GET /projects/<id>), "
                   "against the gateway's composed view it calls (GET /api/v1/projects/<id>/overview)",
        "unit": "ms p99", "ours": p99,
        "anchors": {"gateway project overview, p99 at its half peak": anchor_p99},
        "extra": {"p50 ms @ half peak": round(ours["half"].percentile(50), 1),
                  "peak req/s": round(ours["peak"].per_second),
                  "overview p50 ms @ half peak": round(anchor["half"].percentile(50), 1),
                  "overview peak req/s": round(anchor["peak"].per_second),
                  "clients": CONCURRENCY, "RSS MB per worker": platform.worker_rss_mb("web"),
                  "errors": sum(r.errors for r in (*ours.values(), *anchor.values()))},
        "targets": [{"what": f"p99 < {TARGET_P99_MS:.0f} ms at half the peak rate", "met": p99 < TARGET_P99_MS}],
    }]
