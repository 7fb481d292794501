"""The tools a newcomer uses, as the README tells them to: ``make run``, ``make demo``, ``make cli``
and the ``cocreate`` command line, against the platform that ``make run`` starts (on free ports,
with its data in a temporary directory and a temporary ``HOME``).

- The README's section "The demo and the command line" is read from README.md and its code blocks
  run verbatim in one bash session, so the README cannot drift from what works; so is every
  example of ``cocreate --help`` and of each command's ``--help``.
- The tools follow the platform: only ``GATEWAY_PORT`` is set (as for ``make run``), never
  ``COCREATE_URL``, unless a test is about ``COCREATE_URL``.
- The exit codes 0, 1, 2 and 3; one-line errors, never a traceback; a closed pipe; ``make demo``
  run twice (the second adds nothing) and on a half-made community (it finishes it).
- Every make target: those that need no cluster, container engine or minutes are run
  (``help``, ``run``, ``demo``, ``cli``, ``rebuild``, ``clean`` in a copy); the others
  (``test``, ``bench`` … which would run the suite or the benchmarks, ``translations`` which rewrites
  the catalogue in the work tree) are checked with ``make -n``.

``make`` runs with ``-o .venv/.installed-stamp``: the virtual environment running these tests is
used as it is and never reinstalled half-way through a test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.broker import free_port
from tests.support.run_platform import APPS, ROOT, WORKERS

VENV_BIN = Path(sys.executable).parent
COCREATE = str(VENV_BIN / "cocreate")
STAMP = ".venv/.installed-stamp"
MAKE = ["make", "--no-print-directory", "-o", STAMP]
SECTION = "## The demo and the command line"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as reply:
            body = json.loads(reply.read())
    except (OSError, ValueError):
        return False
    catalogue = body.get("catalogue")
    return catalogue is None or all(part.get("state") == "current" for part in catalogue.values())


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """``make run`` on free ports, its data and a ``HOME`` of its own: ``(env, ports, workdir)``.
    ``env`` is what a newcomer's shell would have after ``make run`` in another terminal: the same
    ``GATEWAY_PORT`` and ``COCREATE_DATA_DIR``, no ``COCREATE_URL``, ``~/.local/bin`` on PATH
    and not ``.venv/bin``."""
    workdir = tmp_path_factory.mktemp("cli")
    home = workdir / "home"
    home.mkdir()
    ports = {name: free_port() for name in (*APPS, *WORKERS, "broker")}
    base = {k: v for k, v in os.environ.items()
            if k not in ("COCREATE_URL", "COCREATE_TOKEN", "COCREATE_TOKEN_FILE", "COCREATE_USERS_FILE",
                         "KAFKA_BOOTSTRAP_SERVERS", "COCREATE_LANG", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS")}
    path = [p for p in base.get("PATH", "").split(os.pathsep) if p and Path(p) != VENV_BIN]
    env = {**base, "HOME": str(home), "PATH": os.pathsep.join([str(home / ".local" / "bin"), *path]),
           "COCREATE_DATA_DIR": str(workdir / "var"), "COCREATE_BROKER_PORT": str(ports["broker"]),
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("LC_ALL", None)
    env.pop("LC_MESSAGES", None)
    for name, port in ports.items():
        env[f"{name.upper()}_PORT"] = str(port)
    log = open(workdir / "platform.log", "wb")
    process = subprocess.Popen([*MAKE, "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        deadline = time.monotonic() + 180
        while not (_ready(gateway) and _ready(f"http://127.0.0.1:{ports['web']}")):
            assert process.poll() is None, (workdir / "platform.log").read_text(errors="replace")[-5000:]
            assert time.monotonic() < deadline, (workdir / "platform.log").read_text(errors="replace")[-5000:]
            time.sleep(0.5)
        yield env, ports, workdir
    finally:
        if process.poll() is None:  # as Ctrl-C would
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def sh(script: str, env: dict, timeout: float = 180, stdin: str | None = None) -> subprocess.CompletedProcess:
    """A bash script in the repository, as a newcomer's shell runs it (``make`` with ``-o STAMP``)."""
    prelude = f"set -euo pipefail\nmake() {{ command make --no-print-directory -o {STAMP} \"$@\"; }}\n"
    return subprocess.run(["bash", "-c", prelude + script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, input=stdin)


def cocreate(*args: str, env: dict, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([COCREATE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          input=stdin)


def as_user(env: dict, username: str, workdir: Path) -> dict:
    """``env`` with a token file of ``username``'s own, signed in."""
    token_file = workdir / f"token-{username}"
    user_env = {**env, "COCREATE_TOKEN_FILE": str(token_file)}
    if not token_file.exists():
        done = cocreate("login", username, "--password", "demo", env=user_env)
        assert done.returncode == 0, done.stderr
    return user_env


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


_MADE: dict[Path, dict] = {}


def demo_made(workdir: Path, env: dict) -> dict:
    """The ids of the demo community, as ``python -m cocreate_client.demo --json`` reports them
    (a run of the demo: it adds what is missing)."""
    done = subprocess.run([sys.executable, "-m", "cocreate_client.demo", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    _MADE[workdir] = json.loads(done.stdout)
    return _MADE[workdir]


def demo_ids(workdir: Path, env: dict) -> dict:
    """The demo's ids as its last run in this platform reported them (they do not change), without
    running it again when it ran already: each run reads every record, and the tests' calls all come
    from one address, which the gateway's per-address rate limit counts."""
    return _MADE[workdir] if workdir in _MADE else demo_made(workdir, env)


# -- without the platform ---------------------------------------------------------------------------

def test_the_url_rule_is_one_function():
    from cocreate_client import default_url

    assert default_url({}) == "http://127.0.0.1:8000"
    assert default_url({"GATEWAY_PORT": "9100"}) == "http://127.0.0.1:9100"
    assert default_url({"GATEWAY_PORT": "9100", "COCREATE_URL": "https://api.example/"}) == "https://api.example"
    assert default_url({"COCREATE_URL": "", "GATEWAY_PORT": ""}) == "http://127.0.0.1:8000"


def test_the_choices_are_the_services_own():
    from cocreate_client import cli
    from services.feedback.domain import SUBJECT_KINDS
    from services.projects.domain import CATEGORIES, CHOICES, STAGES, STANCES

    assert cli.CATEGORIES == CATEGORIES and cli.STAGES == STAGES
    assert cli.SUBJECT_KINDS == SUBJECT_KINDS and cli.STANCES == STANCES and cli.CHOICES == CHOICES


def test_help_lists_choices_examples_and_exit_codes():
    env = {**os.environ, "GATEWAY_PORT": "9123"}
    env.pop("COCREATE_URL", None)
    top = cocreate("--help", env=env)
    assert top.returncode == 0 and top.stderr == ""
    for words in ("exit codes:", "0  done", "1  the API refused", "2  usage", "3  the platform cannot be reached",
                  "examples:", "COCREATE_URL", "http://127.0.0.1:9123", "COCREATE_LANG"):
        assert words in top.stdout, words
    propose = cocreate("propose", "--help", env=env)
    assert propose.returncode == 0 and "examples:" in propose.stdout
    assert "environment, facilities, greening, elderly_care, children, culture, safety, parking, other" in \
        " ".join(propose.stdout.split())
    for command in ("projects", "ranking", "dashboard"):
        text = " ".join(cocreate(command, "--help", env=env).stdout.split())
        assert "one of:" in text and "examples:" in text, command
    choices = cocreate("projects", "--stage", "nope", env=env)
    assert choices.returncode == 2 and "co_plan" in choices.stderr and "Traceback" not in choices.stderr


def test_usage_errors_exit_2_without_a_traceback():
    env = {**os.environ, "GATEWAY_PORT": str(free_port())}
    env.pop("COCREATE_URL", None)
    for args in (("propose", "--community", "xinyang"), ("rate", "chen", "6"), ("pledge", "abc"), ("nonsense",),
                 ("call", "GET", "rankings"), ("call", "POST", "/projects", "{not json")):
        done = cocreate(*args, env=env)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stdout == "", args


def test_a_platform_that_is_not_running_is_exit_3_within_seconds(tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "GATEWAY_PORT": str(port), "COCREATE_TOKEN_FILE": str(tmp_path / "token"),
           "COCREATE_USERS_FILE": str(tmp_path / "users.json"), "COCREATE_LANG": "en"}
    env.pop("COCREATE_URL", None)
    for command in (["login", "res1", "--password", "demo"], ["projects"], ["dashboard", "xinyang"]):
        started = time.monotonic()
        done = cocreate(*command, env=env)
        assert done.returncode == 3, done.stderr
        assert time.monotonic() - started < 8
        line = one_line_error(done)
        assert "Cannot reach the platform" in line and f"127.0.0.1:{port}" in line and "make run" in line
    started = time.monotonic()
    demo = sh("make demo", env)
    assert demo.returncode != 0 and time.monotonic() - started < 15
    assert "Traceback" not in demo.stderr and "Cannot reach the platform" in demo.stderr
    assert f"127.0.0.1:{port}" in demo.stderr
    direct = subprocess.run([sys.executable, "-m", "cocreate_client.demo"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30)
    assert direct.returncode == 3 and "Traceback" not in direct.stderr
    # Chinese unless the locale says English
    zh = cocreate("projects", env={**env, "COCREATE_LANG": "", "LANG": "zh_CN.UTF-8"})
    assert zh.returncode == 3 and "无法连接平台" in one_line_error(zh)
    en = cocreate("projects", env={**{k: v for k, v in env.items() if k != "COCREATE_LANG"}, "LANG": "en_GB.UTF-8"})
    assert en.returncode == 3 and "Cannot reach the platform" in one_line_error(en)


def test_make_help_lists_every_target():
    done = subprocess.run([*MAKE, "help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    phony = re.search(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    listed = re.findall(r"^  make (\S+)\s+\S", done.stdout, re.M)
    assert sorted(listed) == sorted(phony)
    assert "demo" in phony and "cli" in phony and "help" in phony


@pytest.mark.parametrize(("target", "expected"), [
    ("test", "-m pytest tests"), ("test-unit", "-m pytest tests/unit"),
    ("test-integration", "-m pytest tests/integration tests/e2e"), ("bench", "-m bench --readme"),
    ("bench-quick", "-m bench --quick"), ("screenshots", "bin/screenshots"), ("translations", "pybabel update"),
    ("run", "bin/run-platform"), ("demo", "-m cocreate_client.demo"),
])
def test_the_long_targets_exist_and_say_what_they_run(target, expected):
    done = subprocess.run([*MAKE, "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and expected in done.stdout, done.stdout + done.stderr


def test_make_venv_installs_the_extras_the_tools_need():
    done = subprocess.run(["make", "--no-print-directory", "-n", "-W", "pyproject.toml", "venv"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and re.search(r"pip install .* -e '\.\[[^]]*local[^]]*\]'", done.stdout), done.stdout


def test_make_clean_deletes_the_local_data_only(tmp_path):
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    for kept in ("var/users.json", ".pytest_cache/x", "README.md"):
        (tmp_path / kept).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / kept).write_text("x")
    done = subprocess.run(["make", "--no-print-directory", "clean"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "var").exists() and not (tmp_path / ".pytest_cache").exists()
    assert (tmp_path / "README.md").exists()


def test_make_rebuild_shows_progress_and_a_summary(tmp_path):
    env = {**os.environ, "COCREATE_DATA_DIR": str(tmp_path / "var")}
    for name in ("PROJECTS_DATABASE_URL", "VOLUNTEERS_DATABASE_URL", "FEEDBACK_DATABASE_URL"):
        env.pop(name, None)
    done = subprocess.run([*MAKE, "rebuild"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    steps = [line for line in lines if re.match(r"\[\d/3\] ", line)]
    assert [s.split()[1] for s in steps] == ["projects:", "volunteers:", "feedback:"]
    assert lines.index(steps[0]) < lines.index(next(l for l in lines if l.startswith("projects: rebuilt")))
    assert re.search(r"^make rebuild: done in \d+ s", done.stdout, re.M)
    assert sorted(p.name for p in (tmp_path / "var").glob("*.db")) == ["feedback.db", "keys.db", "projects.db", "volunteers.db"]


def test_make_cli_links_cocreate_and_never_replaces_a_file(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("CLI_BIN", None)
    done = subprocess.run([*MAKE, "cli"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    link = tmp_path / ".local" / "bin" / "cocreate"
    assert done.returncode == 0 and link.is_symlink() and link.resolve() == Path(COCREATE).resolve(), done.stdout
    assert "not on your PATH" in done.stdout  # and says how to put it there
    again = subprocess.run([*MAKE, "cli"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0
    other = tmp_path / "bin"
    other.mkdir()
    (other / "cocreate").write_text("#!/bin/sh\necho mine\n")
    refused = subprocess.run([*MAKE, "cli", f"CLI_BIN={other}"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0 and "not a link" in refused.stdout
    assert (other / "cocreate").read_text() == "#!/bin/sh\necho mine\n"


# -- against the platform (make run) ----------------------------------------------------------------

def test_make_demo_finishes_a_half_made_community(platform):
    """A community and a project begun (as an interrupted run leaves them): ``make demo`` keeps
    them and adds what is missing."""
    from cocreate_client import Client
    from cocreate_client.demo import ensure_users, people

    env, ports, workdir = platform
    url = f"http://127.0.0.1:{ports['gateway']}"
    assert ensure_users(workdir / "var" / "users.json", people()) == len(people())
    deadline = time.monotonic() + 30
    while True:  # the gateway reads the users file once it exists
        try:
            admin = Client(url).login("admin", "demo")
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    admin.post("/communities", {"community_id": "xinyang", "name": "新阳社区", "district": "海沧区",
                                "grids": [{"grid_id": "g1", "name": "第一网格"}, {"grid_id": "g2", "name": "第二网格"},
                                          {"grid_id": "g3", "name": "第三网格"}]})
    res3 = Client(url).login("res3", "demo")
    begun = res3.propose(community_id="xinyang", grid_id="g1", title="楼道加装扶手", category="elderly_care",
                         description="楼道加装扶手", location="新阳社区", estimated_cost_fen=1_200_000,
                         requested_fen=1_000_000)["project_id"]
    Client(url).login("res1", "demo").cosign(begun)

    done = sh("make demo", env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert re.search(r"^\[1/9\] ", done.stderr, re.M) and re.search(r"^\[9/9\] ", done.stderr, re.M)
    assert "all 28 demo users there" in done.stderr  # the users file was left as it was
    assert re.search(r"^Done in [\d.]+ s: added 10 projects and \d+ other records", done.stdout, re.M), done.stdout
    assert "password is demo" in done.stdout and "cocreate login chen --password demo" in done.stdout
    made = demo_made(workdir, env)
    assert made["deliberation"] == begun and made["added"] == []
    per_stage = made["dashboard"]["projects"]["per_stage"]
    assert {stage: per_stage[stage] for stage in ("co_plan", "co_build", "co_manage", "co_evaluate", "co_share",
                                                  "rejected")} == {
        "co_plan": 6, "co_build": 1, "co_manage": 1, "co_evaluate": 1, "co_share": 1, "rejected": 1}
    assert made["dashboard"]["missing"] == []
    assert [name for name, _score in made["ranking"]["ranked"]] == ["陈书记", "林主任"]
    project = Client(url).login("chen", "demo").get(f"/projects/{begun}")
    assert project["phase"] == "deliberation" and project["cosigner_count"] == 6
    assert {o["text"] for o in project["opinions"]} == {"老人上下楼更安全", "先修电梯更好"}


def test_the_readme_client_section_runs_verbatim(platform):
    env, ports, workdir = platform
    blocks = readme_blocks()
    assert len(blocks) >= 2 and any("make demo" in b for b in blocks) and any("cocreate propose" in b for b in blocks)
    script = "\n".join(blocks) + '\nprintf "\\nID=%s\\n" "$ID"\n'
    done = sh(script, env)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr
    # make cli put cocreate on PATH: ~/.local/bin/cocreate (PATH has no .venv/bin)
    assert (Path(env["HOME"]) / ".local" / "bin" / "cocreate").is_symlink()
    project_id = re.search(r"^ID=(\w+)$", done.stdout, re.M).group(1)
    assert re.search(rf"^project_id:\s+{project_id}$", done.stdout, re.M)  # cocreate project "$ID", a record
    assert re.search(r"^project_id\s+stage\s+phase\s+cosigner_count", done.stdout, re.M)  # the projects table
    assert "小区安装路灯" in done.stdout and "fund.balance (¥):" in done.stdout  # the dashboard
    assert re.search(r"^12$", done.stdout, re.M)  # --field total: 11 demo projects (3 in the round) and the new one
    token = Path(env["HOME"]) / ".cocreate" / "token"
    assert token.exists() and oct(token.stat().st_mode & 0o777) == "0o600"
    # the co-signature is res2's
    from cocreate_client import Client

    detail = Client(f"http://127.0.0.1:{ports['gateway']}").login("chen", "demo").get(f"/projects/{project_id}")
    assert [c["person_id"] for c in detail["cosigners"]] == ["res2"] and detail["proposer_id"] == "res1"


def test_make_demo_again_adds_nothing(platform):
    env, ports, workdir = platform
    done = sh("make demo", env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "everything was there already; nothing added" in done.stdout
    assert done.stderr.count("(was there)") == 8 and "Traceback" not in done.stderr
    again = demo_made(workdir, env)
    assert again["added"] == []


def test_every_help_example_runs(platform):
    """Every ``cocreate`` line under "examples:" in ``cocreate --help`` and each command's help, with
    PROJECT_ID standing for a project in the stage the example needs, as a user who may do it."""
    from cocreate_client import Client

    env, ports, workdir = platform
    url = f"http://127.0.0.1:{ports['gateway']}"
    made = demo_ids(workdir, env)
    # a fresh proposal with 6 co-signers, for the opinion, open-vote, vote and close-vote examples
    fresh = Client(url).login("res12", "demo").propose(
        community_id="xinyang", grid_id="g2", title="社区图书角", category="culture", description="社区图书角",
        location="活动中心", estimated_cost_fen=300_000, requested_fen=200_000)["project_id"]
    for i in (1, 2, 3, 4, 5, 6):
        Client(url).login(f"res{i}", "demo").cosign(fresh)
    # two more for the budgeting rounds: one for the open-round example, one in a round of ROUND_ID
    chen = Client(url).login("chen", "demo")
    more = []
    for title in ("儿童游乐角", "楼道扶手"):
        pid = Client(url).login("res12", "demo").propose(
            community_id="xinyang", grid_id="g2", title=title, category="children", description=title,
            location="活动中心", estimated_cost_fen=100_000, requested_fen=100_000)["project_id"]
        for i in (1, 2, 3, 4, 5, 6):
            Client(url).login(f"res{i}", "demo").cosign(pid)
        more.append(pid)
    round_id = chen.open_round("xinyang", title="楼道微更新", budget_fen=100_000, rule="greedy", project_ids=[more[1]],
                               closes_at="2030-01-01T00:00:00+08:00")["round_id"]
    # command -> (who runs it, which project PROJECT_ID is)
    cases = {"open-round": ("chen", more[0]), "approve": ("res1", more[1]), "round": ("res1", None),
             "cosign": ("res5", made["collecting"]), "opinion": ("res7", fresh), "open-vote": ("chen", fresh),
             "vote": ("rep1", fresh), "close-vote": ("chen", fresh), "pledge": ("res3", made["co_build"]),
             "call": ("res8", made["deliberation"]), "propose": ("res4", None), "rate": ("res13", None),
             "card": ("res1", None), "me": ("res1", None), "project": ("res1", made["co_share"])}
    help_texts = [cocreate("--help", env=env).stdout]
    commands = re.findall(r"^    ([a-z-]+)\s{2,}", help_texts[0], re.M)
    assert len(commands) >= 17
    help_texts += [cocreate(command, "--help", env=env).stdout for command in commands]
    ran = []
    for text in help_texts:
        examples = text.split("\nexamples:\n", 1)[1] if "\nexamples:\n" in text else ""
        assert examples, text[:300]
        for example in re.sub(r"\\\n\s*", "", examples).splitlines():
            if not example.startswith("  cocreate "):
                continue
            words = shlex.split(example, comments=True)
            command = next(w for w in words[1:] if not w.startswith("-"))
            user, project = cases.get(command, ("chen", None))
            if any("PROJECT_ID" in w for w in words):
                assert project, example
                words = [w.replace("PROJECT_ID", project) for w in words]
            words = [w.replace("ROUND_ID", round_id) for w in words]
            if command == "login":
                user_env = {**env, "COCREATE_TOKEN_FILE": str(workdir / "token-example-login")}
                done = cocreate(*words[1:], env=user_env, stdin="demo\n")
            else:
                done = cocreate(*words[1:], env=as_user(env, user, workdir))
            assert done.returncode == 0, f"{example.strip()}\n{done.stderr}"
            assert "Traceback" not in done.stderr and done.stdout.strip(), example
            ran.append(command)
    assert {"login", "projects", "project", "propose", "cosign", "opinion", "open-vote", "vote", "close-vote",
            "pledge", "card", "rate", "ranking", "dashboard", "me", "call", "whoami", "rounds", "round", "open-round",
            "approve", "close-round", "verify-round"} <= set(ran)
    assert chen.verify_round(round_id)["identical"] is True


def test_json_field_and_tables(platform):
    env, ports, workdir = platform
    chen = as_user(env, "chen", workdir)
    as_json = cocreate("projects", "--community", "xinyang", "--stage", "co_share", "--json", env=chen)
    assert as_json.returncode == 0 and [p["title"] for p in json.loads(as_json.stdout)["items"]] == ["儿童游乐场翻新"]
    before = cocreate("--json", "projects", "--community", "xinyang", "--stage", "co_share", env=chen)
    assert json.loads(before.stdout) == json.loads(as_json.stdout)
    table = cocreate("projects", "--community", "xinyang", "--stage", "co_share", env=chen)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["project_id", "stage", "phase", "cosigner_count", "progress", "requested", "(¥)",
                                "title"]
    assert lines[1].split()[1:3] == ["co_share", "published"] and lines[1].endswith("儿童游乐场翻新")
    assert lines[-1] == "(1–1 of 1)"
    card = cocreate("me", "--field", "card.approved_minutes", env=as_user(env, "res1", workdir))
    assert card.returncode == 0 and card.stdout == "180\n"
    missing = cocreate("me", "--field", "no.such", env=as_user(env, "res1", workdir))
    assert missing.returncode == 2 and "no field" in one_line_error(missing)
    ranking = cocreate("ranking", "xinyang", env=chen)
    assert re.search(r"^1\s+chen\s+陈书记", ranking.stdout, re.M)


def test_refusals_are_exit_1_in_one_line(platform):
    env, ports, workdir = platform
    wrong = cocreate("login", "res1", "--password", "wrong", env={**env, "COCREATE_TOKEN_FILE": str(workdir / "t")})
    assert wrong.returncode == 1 and "用户名或密码不对" in one_line_error(wrong)
    wrong_en = cocreate("login", "res1", "--password", "wrong",
                        env={**env, "COCREATE_LANG": "en", "COCREATE_TOKEN_FILE": str(workdir / "t")})
    assert wrong_en.returncode == 1 and "The username or password is wrong" in one_line_error(wrong_en)
    res1 = as_user(env, "res1", workdir)
    body = '{"subject_id": "x", "kind": "unit", "name": "x", "community_id": "xinyang"}'
    refused = cocreate("call", "POST", "/subjects", body, env=res1)
    line = one_line_error(refused)
    assert refused.returncode == 1 and "您的身份不能进行此操作" in line and "role_required" in line
    as_json = cocreate("call", "POST", "/subjects", body, "--json", env=res1)
    assert as_json.returncode == 1 and json.loads(as_json.stderr)["errors"]["reason"] == "role_required"
    signed_out = cocreate("me", env={**env, "COCREATE_TOKEN_FILE": str(workdir / "nobody")})
    assert signed_out.returncode == 1 and "cocreate login" in one_line_error(signed_out)
    own = cocreate("cosign", demo_ids(workdir, env)["collecting"], env=res1)  # res1 proposed it
    assert own.returncode == 1 and "提议人不能给自己的提议联署" in one_line_error(own)


def test_cocreate_url_wins_over_gateway_port(platform):
    env, ports, workdir = platform
    res1 = as_user(env, "res1", workdir)
    dead = str(free_port())
    through_url = cocreate("whoami", env={**res1, "GATEWAY_PORT": dead,
                                          "COCREATE_URL": f"http://127.0.0.1:{ports['gateway']}"})
    assert through_url.returncode == 0 and "res1" in through_url.stdout
    flag = cocreate("--url", f"http://127.0.0.1:{ports['gateway']}", "whoami", env={**res1, "GATEWAY_PORT": dead})
    assert flag.returncode == 0
    wrong = cocreate("whoami", env={**res1, "COCREATE_URL": f"http://127.0.0.1:{dead}"})
    assert wrong.returncode == 3
    not_the_platform = cocreate("projects", env={**res1, "COCREATE_URL": f"http://127.0.0.1:{ports['web']}"})
    assert not_the_platform.returncode in (1, 3) and "Traceback" not in not_the_platform.stderr


def test_a_closed_pipe_is_no_traceback(platform):
    env, ports, workdir = platform
    env = as_user(env, "chen", workdir)
    for reader in ("head -1", "true", "head -c 10"):
        for command in ("cocreate projects --community xinyang", "cocreate dashboard xinyang --json",
                        "cocreate --help"):
            done = sh(f"{command} | {reader}; echo \"status=${{PIPESTATUS[0]}}\"",
                      {**env, "PATH": f"{VENV_BIN}:{env['PATH']}"})
            assert done.returncode == 0 and "status=0" in done.stdout, (command, reader, done.stderr)
            assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr, (command, reader, done.stderr)
