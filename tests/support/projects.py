"""Driving the projects API in tests: people with tokens, and a community set up through the API.

``ProjectsDriver`` works over Flask's test client or over real HTTP (:class:`HttpClient`), so the
same scenario code serves the API tests and the end-to-end tests against gunicorn.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from services.kernel.auth import issue_token
from services.kernel.config import AuthSettings
from tests.conftest import TEST_SECRET

AUTH = AuthSettings(jwt_secret=TEST_SECRET)


class Response:
    def __init__(self, status_code: int, body: bytes, headers) -> None:
        self.status_code = status_code
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class HttpClient:
    """A minimal HTTP client over urllib with the test client's call shape."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, path: str, json_body=None, headers=None) -> Response:
        data = None if json_body is None else json.dumps(json_body).encode()
        all_headers = dict(headers or {})
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return Response(reply.status, reply.read(), reply.headers)
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read(), error.headers)


class FlaskClient:
    """Flask's test client with :class:`HttpClient`'s call shape; ``prefix`` goes before every path."""

    def __init__(self, client, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix

    def request(self, method: str, path: str, json_body=None, headers=None) -> Response:
        reply = self.client.open(self.prefix + path, method=method, json=json_body, headers=headers or {})
        return Response(reply.status_code, reply.get_data(), reply.headers)


class Person:
    def __init__(self, person_id: str, name: str, roles: tuple[str, ...], community: str | None) -> None:
        self.person_id = person_id
        self.name = name
        self.roles = roles
        self.community = community
        self.token = issue_token(AUTH, person_id=person_id, name=name, roles=roles, community=community)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class ProjectsDriver:
    def __init__(self, client) -> None:
        self.client = client

    def call(self, person: Person | None, method: str, path: str, body=None, headers=None) -> Response:
        all_headers = {**(person.headers if person else {}), **(headers or {})}
        return self.client.request(method, path, body, all_headers)

    def ok(self, person: Person, method: str, path: str, body=None, status: int | None = None) -> Any:
        reply = self.call(person, method, path, body)
        expected = status or (201 if method == "POST" else 200)
        assert reply.status_code in ((expected,) if status else (200, 201)), (
            f"{method} {path} -> {reply.status_code}: {reply.body.decode()}")
        return reply.json()

    def post(self, person: Person, path: str, body=None, status: int | None = None) -> Any:
        return self.ok(person, "POST", path, {} if body is None else body, status)

    def get(self, person: Person, path: str) -> Any:
        return self.ok(person, "GET", path)


class Community:
    """A community registered through the API: staff, residents, representatives, a funded fund."""

    def __init__(self, driver: ProjectsDriver, community_id: str, *, representatives: int = 9,
                 residents: int = 12, fund_fen: int = 10_000_000, settings: dict | None = None) -> None:
        self.driver = driver
        self.id = community_id
        self.admin = Person("admin-1", "管理员", ("admin",), None)
        self.cadre = Person(f"{community_id}-cadre", "社区干部", ("cadre",), community_id)
        self.grid_worker = Person(f"{community_id}-grid", "网格员", ("grid_worker",), community_id)
        self.residents = [Person(f"{community_id}-r{i}", f"居民{i}", ("resident",), community_id)
                          for i in range(residents)]
        self.representatives = [Person(f"{community_id}-rep{i}", f"代表{i}", ("representative", "resident"),
                                       community_id) for i in range(representatives)]
        body = {"community_id": community_id, "name": f"{community_id} 社区", "district": "海沧区",
                "grids": [{"grid_id": "g1", "name": "第一网格"}, {"grid_id": "g2", "name": "第二网格"}]}
        if settings:
            body["settings"] = settings
        driver.post(self.admin, "/communities", body)
        if representatives:
            driver.ok(self.cadre, "PUT", f"/communities/{community_id}/representatives",
                      {"representatives": [{"person_id": p.person_id, "name": p.name}
                                           for p in self.representatives]})
        if fund_fen:
            driver.post(self.cadre, f"/communities/{community_id}/fund/credits",
                        {"amount_fen": fund_fen, "source": "government_allocation", "reference": "海财〔2026〕1号"})

    def propose(self, proposer: Person | None = None, **overrides) -> dict:
        body = {"community_id": self.id, "grid_id": "g1", "title": "修建休闲活动室",
                "description": "在小区空地建一间居民休闲活动室", "category": "facilities", "location": "3号楼旁",
                "estimated_cost_fen": 5_000_000, "requested_fen": 3_000_000, **overrides}
        return self.driver.post(proposer or self.residents[0], "/projects", body)["project"]

    def qualify(self, project_id: str) -> dict:
        project = None
        for person in self.residents[1:7]:
            project = self.driver.post(person, f"/projects/{project_id}/cosignatures")["project"]
        return project

    def vote(self, project_id: str, yes: int, no: int = 0, abstain: int = 0) -> dict:
        d = self.driver
        d.post(self.cadre, f"/projects/{project_id}/vote/open", {}, status=200)
        choices = ["yes"] * yes + ["no"] * no + ["abstain"] * abstain
        for person, choice in zip(self.representatives, choices):
            d.post(person, f"/projects/{project_id}/vote/ballots", {"choice": choice})
        return d.post(self.cadre, f"/projects/{project_id}/vote/close", {}, status=200)["project"]

    def approved_project(self, **overrides) -> dict:
        project = self.propose(**overrides)
        self.qualify(project["project_id"])
        return self.vote(project["project_id"], yes=len(self.representatives))

    def project_in_evaluation(self, unit: dict, **overrides) -> str:
        """A project approved with ``unit`` responsible, completed, and open for evaluation (共评)."""
        d = self.driver
        pid = self.propose(**{"title": "背街小巷路灯", "category": "safety", **overrides})["project_id"]
        self.qualify(pid)
        d.post(self.cadre, f"/projects/{pid}/vote/open", {"responsible_unit": unit}, status=200)
        for rep in self.representatives:
            d.post(rep, f"/projects/{pid}/vote/ballots", {"choice": "yes"})
        d.post(self.cadre, f"/projects/{pid}/vote/close", {}, status=200)
        d.post(self.cadre, f"/projects/{pid}/milestones", {"progress": 100, "note": "路灯全部安装"})
        d.post(self.cadre, f"/projects/{pid}/completion", {}, status=200)
        d.post(self.cadre, f"/projects/{pid}/evaluation/open", {}, status=200)
        return pid

    def fund(self) -> dict:
        return self.driver.get(self.cadre, f"/communities/{self.id}/fund")
