"""The gateway deploys apart from the services: it runs under gunicorn in a process where the three
service packages cannot be imported, learns each service's routes from its ``GET /openapi.json``
over HTTP, keeps the last good documents on disk and starts from them when a service is down, and
learns a service that was neither answering nor on disk once a later refresh reaches it.

The service packages are made unimportable by a ``sitecustomize`` module on ``PYTHONPATH`` (Python
imports it at start, before gunicorn, and gunicorn's workers are forks of that process): an import
hook raising ImportError for ``BLOCKED_PACKAGES`` and writing each attempt to a file, so that an
import hidden behind ``except ImportError`` is caught as well."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.errors import assert_error
from tests.support.projects import Community, HttpClient, ProjectsDriver
from tests.support.servers import ROOT, ServiceServer

SERVICES = ("projects", "volunteers", "feedback")
SERVICE_PACKAGES = ",".join(f"services.{name}" for name in SERVICES)
BLOCKER = '''
import importlib.abc
import os
import sys

BLOCKED = tuple(p for p in os.environ.get("BLOCKED_PACKAGES", "").split(",") if p)
ATTEMPTS = os.environ.get("BLOCKED_IMPORTS_LOG", "")


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == p or name.startswith(p + ".") for p in BLOCKED):
            if ATTEMPTS:
                with open(ATTEMPTS, "a", encoding="utf-8") as log:
                    log.write(f"{os.getpid()} {name}\\n")
            raise ImportError(f"{name} is blocked in this process (BLOCKED_PACKAGES)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
'''


@pytest.fixture
def blocker(tmp_path) -> dict[str, str]:
    """The environment of a process that cannot import the service packages."""
    directory = tmp_path / "blocker"
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "BLOCKED_PACKAGES": SERVICE_PACKAGES,
            "BLOCKED_IMPORTS_LOG": str(tmp_path / "blocked-imports.log")}


def gateway_server(services, workdir: Path, blocker: dict[str, str], **env) -> ServiceServer:
    workdir.mkdir(parents=True, exist_ok=True)
    return ServiceServer("gateway", workdir, workers=1, app="gateway.app:build()", env={
        **blocker, "GATEWAY_CATALOGUE_REFRESH_SECONDS": "1",
        **{f"GATEWAY_{name.upper()}_URL": server.base_url for name, server in services.items()}, **env})


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def states(gateway: ServiceServer) -> dict[str, str]:
    status, body = get_json(gateway.base_url + "/readyz")
    assert status == 200 and body["checks"] == {"database": "ok", "catalogue": "ok", "live": "ok"}, body
    return {name: entry["state"] for name, entry in body["catalogue"].items()}


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_the_blocker_blocks_and_neither_gateway_nor_client_needs_what_it_blocks(blocker, tmp_path):
    refused = run("import services.projects.service", blocker)
    assert refused.returncode != 0 and "is blocked in this process" in refused.stderr
    assert "services.projects" in Path(blocker["BLOCKED_IMPORTS_LOG"]).read_text()
    Path(blocker["BLOCKED_IMPORTS_LOG"]).unlink()
    # gunicorn's workers have the hook too: a service cannot even start under it.
    blocked = ServiceServer("projects", tmp_path, workers=1, env=blocker)
    with pytest.raises(RuntimeError, match="exited"):
        blocked.start()
    blocked.stop()
    assert "services.projects" in Path(blocker["BLOCKED_IMPORTS_LOG"]).read_text()
    Path(blocker["BLOCKED_IMPORTS_LOG"]).unlink()
    gateway = run("import gateway.app, gateway.catalogue, gateway.compose, gateway.__main__", blocker)
    assert gateway.returncode == 0, gateway.stderr
    # The Python client and the demo need neither the gateway nor any part of the services.
    client = run("import cocreate_client, cocreate_client.cli, cocreate_client.demo",
                 {**blocker, "BLOCKED_PACKAGES": "gateway,services"})
    assert client.returncode == 0, client.stderr
    assert not Path(blocker["BLOCKED_IMPORTS_LOG"]).exists()


def test_the_demo_writes_password_hashes_the_gateway_accepts():
    from cocreate_client.demo import password_hash
    from gateway.tokens import check_password

    hashed = password_hash("demo", iterations=1_000)
    assert check_password("demo", hashed) and not check_password("other", hashed)


def test_the_gateway_without_the_service_packages_serves_them_and_starts_from_disk(services, blocker, tmp_path,
                                                                                   unique):
    gateway = gateway_server(services, tmp_path / "gateway", blocker)
    catalogue = tmp_path / "gateway" / "var" / "gateway" / "catalogue"
    d = ProjectsDriver(HttpClient(gateway.base_url + "/api/v1"))
    gateway.start()
    try:
        assert states(gateway) == {name: "current" for name in SERVICES}
        assert sorted(p.name for p in catalogue.iterdir()) == [f"{name}.json" for name in sorted(SERVICES)]
        c = Community(d, f"i{unique[:8]}", representatives=0, residents=1, fund_fen=0)  # POST /communities
        holder = c.residents[0]
        assert c.id in json.dumps(d.get(c.cadre, f"/communities/{c.id}"))  # projects
        reply = d.call(holder, "POST", "/cards", {})  # volunteers
        assert reply.status_code == 201 and reply.headers["Location"] == f"/api/v1/cards/{holder.person_id}"
        assert d.get(c.cadre, f"/policies/{c.id}")["settings"]["min_ratings"] == 10  # feedback
        assert_error(d.call(c.cadre, "GET", "/no-such-route"), 404)  # every service known: a plain 404
        _status, document = get_json(gateway.base_url + "/openapi.json")
        for path in ("/api/v1/communities/{community_id}", "/api/v1/cards", "/api/v1/policies/{community_id}",
                     "/api/v1/admin/feedback/events", "/api/v1/me"):
            assert path in document["paths"], path

        # Feedback stops; the gateway starts again: feedback's routes come from its last good document.
        gateway.stop()
        services["feedback"].stop()
        try:
            gateway.start()
            status, ready = get_json(gateway.base_url + "/readyz")
            assert status == 200, ready
            assert states(gateway) == {"projects": "current", "volunteers": "current", "feedback": "last_good"}
            assert ready["catalogue"]["feedback"]["origin"] == "disk"
            assert ready["catalogue"]["feedback"]["error"] == "connection refused"
            reply = d.call(c.cadre, "GET", f"/policies/{c.id}")  # routed to feedback, which is down
            assert assert_error(reply, 503, "service_unavailable")["errors"]["service"] == "feedback"
            assert c.id in json.dumps(d.get(c.cadre, f"/communities/{c.id}"))
            assert d.get(c.cadre, f"/cards/{holder.person_id}")["person_id"] == holder.person_id
            _status, document = get_json(gateway.base_url + "/openapi.json")
            assert "/api/v1/policies/{community_id}" in document["paths"]
        finally:
            services["feedback"].start()  # the same port and data
        wait_until(lambda: states(gateway)["feedback"] == "current", "feedback's document fetched again")
        assert d.get(c.cadre, f"/policies/{c.id}")["settings"]["min_ratings"] == 10
    finally:
        gateway.stop()
    log = Path(blocker["BLOCKED_IMPORTS_LOG"])
    assert not log.exists(), log.read_text()


def test_a_service_neither_answering_nor_on_disk_appears_once_a_refresh_reaches_it(services, blocker, tmp_path,
                                                                                   unique):
    gateway = gateway_server(services, tmp_path / "gateway", blocker)
    d = ProjectsDriver(HttpClient(gateway.base_url + "/api/v1"))
    services["feedback"].stop()
    try:
        try:
            gateway.start()  # ready without feedback: its own database and two services' routes
            assert states(gateway) == {"projects": "current", "volunteers": "current", "feedback": "unknown"}
            c = Community(d, f"u{unique[:8]}", representatives=0, residents=0, fund_fen=0)
            reply = d.call(c.cadre, "GET", f"/policies/{c.id}")
            body = assert_error(reply, 503, "catalogue_incomplete")
            assert body["errors"]["services"] == ["feedback"] and int(reply.headers["Retry-After"]) >= 1
            _status, document = get_json(gateway.base_url + "/openapi.json")
            assert "/api/v1/communities/{community_id}" in document["paths"]
            assert not any(path.startswith("/api/v1/policies") for path in document["paths"])
        finally:
            services["feedback"].start()
        wait_until(lambda: states(gateway)["feedback"] == "current", "feedback's routes learnt")
        assert d.get(c.cadre, f"/policies/{c.id}")["settings"]["min_ratings"] == 10
        assert (tmp_path / "gateway" / "var" / "gateway" / "catalogue" / "feedback.json").exists()
        _status, document = get_json(gateway.base_url + "/openapi.json")
        assert "/api/v1/policies/{community_id}" in document["paths"]
    finally:
        gateway.stop()
    log = Path(blocker["BLOCKED_IMPORTS_LOG"])
    assert not log.exists(), log.read_text()
