"""The one-off sealing of stores written before personal fields were sealed (issue 25), from real
stores made by the code before the change (``tests/data/pre-sealing``: see its README), through
the command an operator runs, into SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.feedback.service import DEFINITION as FEEDBACK
from services.projects.service import DEFINITION as PROJECTS
from services.kernel.sealing import open_source
from services.volunteers.service import DEFINITION as VOLUNTEERS
from tests.conftest import fresh_postgres_database
from tests.support.apps import container, driver, service_app
from tests.support.projects import Person

ROOT = Path(__file__).resolve().parents[2]
PRE = ROOT / "tests" / "data" / "pre-sealing"
C = "haicang"
V1 = Person("v1", "李梅", ("resident",), C)
V2 = Person("v2", "陈强", ("resident",), C)
CADRE = Person("cadre-1", "社区干部", ("cadre",), C)
# what the old stores hold in clear (tests/data/pre-sealing/README.md)
PLAIN = {"projects": ["居民0", "居民1", "居民2", "建议装在三号楼路口旁边", "我周末出两天工", "砌墙搬砖两天"],
         "volunteers": ["李梅", "陈强", "13812345678", "13900001111"],
         "feedback": ["办事太慢,等了三个星期", "王书记很耐心", "李梅说窗口排队太久"]}
R1 = Person("haicang-r1", "居民1", ("resident",), C)


def run(service: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"services.{service}", "seal-copy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def everything_in(url: str) -> str:
    """Every value of every table of a database, as text."""
    engine = open_source(url)  # read only: a SQLite file stays byte for byte as it was
    try:
        with engine.connect() as connection:
            meta = sa.MetaData()
            meta.reflect(connection)
            return "\n".join(repr(tuple(row)) for table in meta.sorted_tables
                             for row in connection.execute(sa.select(table)))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def targets(request, tmp_path):
    """A new, empty database per service (on the backend of the parameter)."""
    if request.param == "sqlite":
        yield {service: f"sqlite:///{tmp_path}/new-{service}.db" for service in PLAIN}
        return
    with fresh_postgres_database() as first, fresh_postgres_database() as second, \
            fresh_postgres_database() as third:
        yield {"volunteers": first, "feedback": second, "projects": third}


def test_old_stores_are_copied_sealed_verified_and_serve_as_before(targets, tmp_path):
    old = {service: tmp_path / f"old-{service}.db" for service in PLAIN}
    for service, path in old.items():
        shutil.copy(PRE / f"{service}.db", path)
    before = {service: hashlib.sha256(path.read_bytes()).hexdigest() for service, path in old.items()}
    keys = f"sqlite:///{tmp_path}/keys.db"
    env = {**os.environ, "COCREATE_DATA_DIR": str(tmp_path), "COCREATE_KEYSTORE_URL": keys}
    for service in PLAIN:
        for text in PLAIN[service]:  # the old stores really hold them in clear
            assert text in everything_in(f"sqlite:///{old[service]}"), (service, text)
        service_env = {**env, f"{service.upper()}_DATABASE_URL": targets[service]}
        done = run(service, service_env, "--from", f"sqlite:///{old[service]}")
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads((tmp_path / f"{service}-sealing-report.json").read_text())
        assert report["events"] == {"projects": 23, "volunteers": 5, "feedback": 6}[service]
        assert report["sealed_fields"] >= 3
        assert report["source_sha256"] != report["target_sha256"]
        verified = run(service, service_env, "--verify", "--from", f"sqlite:///{old[service]}")
        assert verified.returncode == 0 and "verifies" in verified.stdout, verified.stderr[-3000:]
        everything = everything_in(targets[service])
        assert not [text for text in PLAIN[service] if text in everything], service  # logs and read models
        again = run(service, service_env, "--from", f"sqlite:///{old[service]}")
        assert again.returncode == 1 and "holds events already" in again.stderr
        assert hashlib.sha256(old[service].read_bytes()).hexdigest() == before[service]  # never touched

    # The sealed copies serve as the old stores did, opened for their readers.
    volunteers = service_app(VOLUNTEERS, targets["volunteers"], COCREATE_KEYSTORE_URL=keys)
    feedback = service_app(FEEDBACK, targets["feedback"], COCREATE_KEYSTORE_URL=keys)
    projects = service_app(PROJECTS, targets["projects"], COCREATE_KEYSTORE_URL=keys)
    v, f, p = driver(volunteers), driver(feedback), driver(projects)
    try:
        [listed] = p.get(CADRE, f"/projects?community_id={C}")["items"]
        detail = json.dumps(p.get(CADRE, f"/projects/{listed['project_id']}"), ensure_ascii=False)
        assert all(text in detail for text in ("居民0", "居民1", "建议装在三号楼路口旁边", "我周末出两天工")), detail[:500]
        assert "pii1" not in detail
        card = v.get(V1, "/cards/v1")
        assert (card["name"], card["phone"]) == ("李梅", "13812345678")
        assert v.get(V2, "/cards/v1")["phone"] == "138****5678"
        [case] = f.get(CADRE, f"/cases?community_id={C}")["items"]
        assert f.get(CADRE, f"/cases/{case['case_id']}")["comment"] == "办事太慢,等了三个星期"
        period = f.get(CADRE, "/subjects/wang")["period"]
        f.post(CADRE, "/rankings", {"community_id": C, "kind": "cadre", "period": period, "provisional": True})
        verification = f"/rankings/{C}/cadre/{period}/verification"
        assert f.get(CADRE, verification)["identical"] is True
        # Erasing v1 (through the volunteers service) makes their words unreadable in feedback's copy too.
        v.post(V1, "/me/erasure", {"reason": "moved_away"}, status=201)
        v.post(CADRE, "/erasures/v1/confirmation", None, status=200)
        container(feedback).sealer.keys.forget_cached()
        assert f.get(CADRE, f"/cases/{case['case_id']}")["comment"] == "已注销"
        assert v.get(CADRE, "/cards/v1")["name"] == "已注销" and v.get(CADRE, "/cards/v2")["name"] == "陈强"
        # A resident of the projects' copy erased: their co-signature's name and their opinion go.
        v.post(R1, "/me/erasure", {"reason": "other"}, status=201)
        v.post(CADRE, "/erasures/haicang-r1/confirmation", None, status=200)
        container(projects).sealer.keys.forget_cached()
        detail = json.dumps(p.get(CADRE, f"/projects/{listed['project_id']}"), ensure_ascii=False)
        assert "建议装在三号楼路口旁边" not in detail and "居民1" not in detail and "已注销" in detail
        assert "居民0" in detail and "我周末出两天工" in detail  # nobody else's
        # The figures and their verification stand: the erased rater's rating still counts.
        assert f.get(CADRE, verification)["identical"] is True
        assert f.get(CADRE, "/subjects/wang")["figures"]["ratings"] == 2
        # A verification after the erasure says that v1's fields no longer open (the old store is gone by then).
        verified = run("feedback", {**env, "FEEDBACK_DATABASE_URL": targets["feedback"]}, "--verify", "--from",
                       f"sqlite:///{old['feedback']}")
        assert verified.returncode == 1 and "does not open to the old text" in verified.stderr
    finally:
        for app in (volunteers, feedback, projects):
            container(app).store.engine.dispose()
