"""Schemathesis fuzzes every public document over real HTTP: the three services and the gateway
under gunicorn (SQLite in a temporary directory; no broker is needed for the HTTP apps).

The gateway's ``/openapi.json`` is fuzzed once with a resident's token and once with a cadre's (both
of the community the test sets up), and each service's own document with an admin's. Checks:
no 5xx, only documented status codes, the documented content types, bodies matching the documented
schemas. A community with projects, a pledge, a card, an activity, a reward, a rated subject and
its follow-up case is created first, and half of the generated identifiers are those real ones
(schemathesis "dictionaries"), so requests reach the domain rules and not only 404s.

About 25 examples per operation; the whole fuzz run is capped at 10 minutes (documents not reached
by then are listed, not failed). The seed is printed; ``COCREATE_FUZZ_SEED=<n>`` replays a run.
Streaming routes (``GET /api/v1/live``: server-sent events for minutes) are left out. The
gateway's rate limits are off and its upstream timeout is 30 s for the run, so that a busy
machine's 429s and 504s are not counted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.tokens import hash_password
from tests.support.platform import LocalPlatform
from tests.support.projects import Community, HttpClient, ProjectsDriver

pytestmark = pytest.mark.timeout(1200)  # the fuzz run is capped at 10 minutes, the platform starts first

SEED = int(os.environ.get("COCREATE_FUZZ_SEED") or 20_261_203)
MAX_EXAMPLES = 25
BUDGET_SECONDS = 600.0  # the whole fuzz run, every document together
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
APPS = ("projects", "volunteers", "feedback", "gateway")
STREAMING = "text/event-stream"
# Streams for minutes. Its document says text/event-stream (found by that too); named here as well so
# that a document that stopped saying so would not hang the run.
STREAMING_PATHS = ("/api/v1/live",)
C = "fuzz"


@dataclass
class Outcome:
    document: str
    seconds: float = 0.0
    exit_code: int | None = None
    report: dict = field(default_factory=dict)
    failures_text: str = ""
    note: str = ""
    capped: bool = False

    @property
    def failures(self) -> list[dict]:
        return list(self.report.get("failures") or []) + list(self.report.get("errors") or [])

    @property
    def ok(self) -> bool:
        # Stopped at the cap (130, as after Ctrl-C) is not a failure: what it had tested passed.
        return (self.exit_code == 0 or (self.capped and self.exit_code == 130)) and not self.failures


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    users_file = workdir / "users.json"
    users_file.write_text(json.dumps({"users": [{
        "username": "fuzzer", "password_hash": hash_password("pw", iterations=5_000), "person_id": f"{C}-r0",
        "name": "居民0", "roles": ["resident"], "community": C}]}), encoding="utf-8")
    instance = LocalPlatform(workdir, env={
        "GUNICORN_WORKERS": "1", "GATEWAY_THREADS": "4", "GATEWAY_RATE_LIMIT_PER_CALLER": "0",
        "GATEWAY_RATE_LIMIT_PER_IP": "0", "GATEWAY_UPSTREAM_TIMEOUT_SECONDS": "30",
        "GATEWAY_USERS_FILE": str(users_file)})
    try:
        for name in APPS:
            instance.start(name)
        instance.wait_ready(APPS)
        yield instance
    finally:
        for name in list(instance.processes):
            instance.kill(name, signal.SIGTERM)


def seed_data(gateway_url: str) -> tuple[Community, dict[str, list[str]]]:
    """A community with something behind every kind of identifier, made through the gateway;
    the identifiers the fuzzer should try, by parameter name."""
    d = ProjectsDriver(HttpClient(gateway_url + "/api/v1"))
    community = Community(d, C)
    cadre, residents = community.cadre, community.residents
    proposed = community.propose()["project_id"]
    approved = community.approved_project(title="修缮凉亭")["project_id"]
    evaluated = community.project_in_evaluation({"unit_id": f"{C}-unit", "name": "街道建设办"})
    pledge = d.post(residents[1], f"/projects/{approved}/pledges", {"kind": "labour", "labour_minutes": 120})
    card = d.post(residents[0], "/cards", {"phone": "13812345678"})
    start = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0)
    activity = d.post(cadre, "/activities", {
        "title": "敬老院陪伴", "community_id": C, "place": "敬老院", "capacity": 5, "planned_minutes": 120,
        "organiser": {"kind": "social_organisation", "id": "so-1", "name": "社工站"}, "points_per_hour": 20,
        "starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=3)).isoformat()})
    d.post(residents[0], f"/activities/{activity['created_id']}/signups", {})
    reward = d.post(cadre, "/rewards", {"name": "环保袋", "community_id": C, "cost_points": 50, "stock": 10})
    subject = d.post(cadre, "/subjects", {"subject_id": f"{C}-wang", "kind": "cadre", "name": "王书记",
                                          "community_id": C, "person_id": f"{C}-wang", "unit_id": "jiedao"})
    rating = d.post(residents[2], f"/subjects/{C}-wang/ratings", {"level": 1, "comment": "没人回复"})
    cases = d.get(cadre, f"/cases?community_id={C}")["items"]
    answers = (pledge, card, activity, reward, subject, rating)
    return community, {
        "community_id": [C],
        "project_id": [proposed, approved, evaluated],
        "pledge_id": [pledge["created_id"]],
        "person_id": [residents[0].person_id, residents[1].person_id],
        "activity_id": [activity["created_id"]],
        "reward_id": [reward["created_id"]],
        "subject_id": [subject["created_id"]],
        "rating_id": [rating["created_id"]],
        "case_id": [case["case_id"] for case in cases][:3],
        "kind": ["cadre", "unit"],
        "period": [start.strftime("%Y-%m")],
        "stream_id": sorted({event["stream_id"] for answer in answers for event in answer["recorded"]}),
    }


def config_file(path: Path, identifiers: dict[str, list[str]]) -> Path:
    """A schemathesis config: each named identifier is one of the real ones half of the time (in
    the path, the query and the JSON body), anything the schema allows the other half."""
    lines = []
    for name, values in identifiers.items():
        if values:
            lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for name, values in identifiers.items():
        if values:
            for key in (name, f"body.{name}"):
                lines.append(f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def streaming_paths(document: dict) -> list[str]:
    """The document's paths with an operation that answers server-sent events."""
    return sorted(path for path, operations in document["paths"].items()
                  if path in STREAMING_PATHS or any(
                      STREAMING in (response.get("content") or {})
                      for operation in operations.values() if isinstance(operation, dict)
                      for response in (operation.get("responses") or {}).values()))


def openapi(base_url: str) -> dict:
    with urllib.request.urlopen(base_url + "/openapi.json", timeout=30) as reply:
        return json.load(reply)


def operation_count(document: dict) -> int:
    return sum(method in ("get", "post", "put", "patch", "delete")
               for operations in document["paths"].values() for method in operations)


def fuzz(name: str, base_url: str, document: dict, token: str, config: Path, workdir: Path,
         budget: float) -> Outcome:
    """One ``schemathesis run`` of ``base_url``'s document, stopped (SIGINT, as Ctrl-C) when the
    budget is spent."""
    document_url = base_url + "/openapi.json"
    report_path = workdir / f"{name}.report.json"
    log_path = workdir / f"{name}.log"
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(config), "run",
               document_url, "--header", f"Authorization: Bearer {token}", "--checks", CHECKS,
               "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
               "--request-timeout", "60", "--generation-database", "none", "--no-color",
               "--report", "json", "--report-json-path", str(report_path)]
    excluded = streaming_paths(document)
    for path in excluded:
        command += ["--exclude-path", path]
    outcome = Outcome(name, note=f"left out (streaming): {', '.join(excluded)}" if excluded else "")
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            outcome.exit_code = process.wait(timeout=max(budget, 1.0))
        except subprocess.TimeoutExpired:
            outcome.capped = True
            outcome.note = (outcome.note + "; " if outcome.note else "") + "stopped at the fuzz run's time cap"
            os.killpg(process.pid, signal.SIGINT)
            try:
                outcome.exit_code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                outcome.exit_code = process.wait()
    outcome.seconds = time.monotonic() - started
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if report_path.exists():
        outcome.report = json.loads(report_path.read_text(encoding="utf-8"))
    section = re.search(r"^=+ (?:FAILURES|ERRORS) =+$(.*?)^=+ (?:WARNINGS|SUMMARY) =+$", output, re.M | re.S)
    if section:
        outcome.failures_text = section.group(0)
    elif not outcome.report and outcome.exit_code != 0:
        outcome.failures_text = output[-4000:]
    return outcome


def summary(outcome: Outcome) -> str:
    cases = outcome.report.get("test_cases") or {}
    operations = outcome.report.get("operations") or {}
    return (f"{outcome.document}: exit {outcome.exit_code}, {operations.get('tested', '?')} operations, "
            f"{cases.get('generated', '?')} cases, {len(outcome.failures)} failures in {outcome.seconds:.0f} s"
            + (f" ({outcome.note})" if outcome.note else ""))


def test_every_document_survives_the_fuzzer(platform, tmp_path):
    print(f"\nfuzz seed: {SEED} (replay with COCREATE_FUZZ_SEED={SEED})")
    gateway = platform.url("gateway")
    community, identifiers = seed_data(gateway)
    config = config_file(tmp_path / "schemathesis.toml", identifiers)
    admin = community.admin.token
    runs = [("gateway-as-resident", gateway, community.residents[0].token),
            ("gateway-as-cadre", gateway, community.cadre.token),
            *((f"{app}-as-admin", platform.url(app), admin) for app in ("projects", "volunteers", "feedback"))]
    documents = {url: openapi(url) for _name, url, _token in runs}
    weights = [operation_count(documents[url]) for _name, url, _token in runs]
    outcomes, skipped = [], []
    deadline = time.monotonic() + BUDGET_SECONDS
    for index, (name, url, token) in enumerate(runs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            skipped.append(name)
            continue
        # Each run gets its share of what is left by its number of operations, so that one slow
        # document cannot starve the others.
        budget = remaining * weights[index] / sum(weights[index:])
        outcome = fuzz(name, url, documents[url], token, config, tmp_path, budget)
        print(summary(outcome), flush=True)
        outcomes.append(outcome)
        platform.check_alive()
    if skipped:
        print(f"not fuzzed: the {BUDGET_SECONDS:.0f} s cap was spent before {', '.join(skipped)}")
    failed = [outcome for outcome in outcomes if not outcome.ok]
    report = "\n\n".join(f"### {outcome.document} (seed {SEED}; log and report in {tmp_path})\n"
                         f"{summary(outcome)}\n{outcome.failures_text}" for outcome in failed)
    assert not failed, f"the fuzzer found failures:\n{report}"
