"""The local platform under supervisord, as `make run` starts it (bin/run-platform → python -m
localrun): a process killed with SIGKILL comes back while the rest keep answering — a service's
gunicorn master, a consumer, the broker (which comes back empty, and an effect across services still
arrives) —, a process that keeps failing is reported plainly while the others keep running, a busy
port is one line and starts nothing, Ctrl-C leaves nothing behind, and the README's quick start
(`make run`, then `make demo`) works as written."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from cocreate_client import Client
from tests.e2e.conftest import stop_platform
from tests.e2e.test_gateway_platform import users
from tests.support.broker import free_port
from tests.support.run_platform import (APPS, BANNER, ROOT, WORKERS, get, group_processes, listening, pid_of,
                                        platform_environment, session_processes, supervisord_pid,
                                        wait_for_banner, wait_for_line)

pytestmark = pytest.mark.broker
C = "haixin"


def until(condition, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ready(url: str) -> bool:
    try:
        return get(url + "/readyz")[0] == 200
    except OSError:
        return False


def kill(data_dir, name: str) -> int:
    """SIGKILL the process supervisord knows as ``name``; its pid."""
    pid = pid_of(data_dir, name)
    assert pid > 0, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


def screen_length(log_path) -> int:
    return len(log_path.read_text(errors="replace"))


def comes_back(process, log_path, data_dir, name: str, old_pid: int, url: str | None, after: int,
               timeout: float = 120) -> int:
    """Wait for the launcher to say (after character ``after`` of its screen) that ``name`` is back,
    then check it: a new pid, answering."""
    short = name.split(":")[-1]
    wait_for_line(process, log_path, f"{short} is back: it answers again", timeout, after=after)
    new_pid = pid_of(data_dir, name)
    assert new_pid not in (0, old_pid), f"{name}: pid {old_pid} -> {new_pid}"
    if url is not None:
        assert ready(url), f"{name} does not answer /readyz"
    return new_pid


def stop_with_ctrl_c(process, ports, data_dir, exit_codes=(0,)) -> None:
    """Ctrl-C (SIGINT to the launcher's process group, as the terminal sends it): everything stops,
    the launcher exits 0, no process of supervisord's session and no port is left."""
    session = supervisord_pid(data_dir)
    assert session_processes(session), "supervisord's session is empty while the platform runs"
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=90) in exit_codes
    assert session_processes(session) == [], "processes were left behind"
    still_listening = [name for name, port in ports.items() if listening(port)]
    assert still_listening == [], f"left listening: {still_listening}"


def test_killed_processes_come_back_and_the_platform_keeps_working(platform):
    process, ports, log_path = platform
    data_dir = log_path.parent / "var"
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    gateway = url["gateway"]
    (data_dir / "users.json").write_text(json.dumps({"users": users()}), encoding="utf-8")
    u = {entry["username"]: Client(gateway).login(entry["username"], "pw") for entry in users()}
    u["admin"].post("/communities", {"community_id": C, "name": "海新社区", "district": "海沧区",
                                     "grids": [{"grid_id": "g1", "name": "第一网格"}]})

    # 1. The projects service's gunicorn master: its orphaned workers are stopped, a new master
    # binds the port, and the gateway answers for the other services all along.
    mark = screen_length(log_path)
    old = kill(data_dir, "cocreate:projects")
    answers = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        answers.append(_status(f"{gateway}/api/v1/rankings/{C}/unit", u["cadre"].token))  # the feedback service
        time.sleep(0.2)
    assert answers and all(status == 200 for status in answers), answers
    comes_back(process, log_path, data_dir, "cocreate:projects", old, url["projects"], after=mark)
    assert group_processes(old) == [], "the killed master's workers are still running"
    assert u["res1"].projects(community_id=C) is not None  # through the gateway to the new master

    # 2. A consumer.
    mark = screen_length(log_path)
    old = kill(data_dir, "cocreate:volunteers-consumer")
    comes_back(process, log_path, data_dir, "cocreate:volunteers-consumer", old, url["volunteers_consumer"], after=mark)

    # 3. The broker: it comes back empty (tansu keeps everything in memory); relays publish their
    # logs again and consumers start over, so an effect across services still arrives.
    mark = screen_length(log_path)
    old = kill(data_dir, "broker")
    comes_back(process, log_path, data_dir, "broker", old, None, after=mark)
    cadre, grid = u["cadre"], u["grid"]
    res = [u[f"res{i}"] for i in range(8)]
    cadre.request("PUT", f"/communities/{C}/representatives",
                  {"representatives": [{"person_id": f"rep{i}", "name": f"rep{i}"} for i in range(5)]})
    cadre.post(f"/communities/{C}/fund/credits", {"amount_fen": 5_000_000, "source": "government_allocation",
                                                  "reference": "海财〔2026〕7号"})
    pid = res[0].propose(community_id=C, grid_id="g1", title="楼道照明", category="safety",
                         description="装楼道灯", location="海新路 5 号", estimated_cost_fen=200_000,
                         requested_fen=150_000)["project_id"]
    for person in res[1:7]:
        person.cosign(pid)
    cadre.open_vote(pid, {"unit_id": "haixin-jsb", "name": "海新街道建设办"})
    for i in range(4):
        u[f"rep{i}"].ballot(pid, "yes")
    assert cadre.close_vote(pid)["stage"] == "co_build"
    pledge = res[7].pledge(pid, kind="labour", labour_minutes=120)
    grid.deliver(pid, pledge, labour_minutes=90, note="接线")
    until(lambda: ((res[7].me().get("card") or {}).get("approved_minutes") == 90), 180,
          "the delivery on projects to credit the volunteer's card on volunteers, through the new broker")
    # the platform answers everywhere again: every process ready, each consumer once its topics are
    # back (volunteers' feedback-cases consumer waits for feedback's relay to create feedback.events,
    # which may come after the credit above arrived through projects.events)
    def not_ready() -> list[str]:
        return [name for name in (*APPS, *WORKERS) if not ready(url[name])]

    try:
        until(lambda: not not_ready(), 90, "every app and worker to be ready again after the broker came back empty")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; not ready: {not_ready()}") from None
    stop_with_ctrl_c(process, ports, data_dir)


def test_a_process_that_keeps_failing_is_reported_and_the_others_keep_running(platform):
    process, ports, log_path = platform
    data_dir = log_path.parent / "var"
    gateway = f"http://127.0.0.1:{ports['gateway']}"
    # The overdue sweep's health port is taken while it restarts: it cannot start again.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the probes' connections in TIME_WAIT
    try:
        old = kill(data_dir, "cocreate:feedback-sweep")
        until(lambda: _try_bind(holder, ports["feedback_sweep"]), 10, "the sweep's health port", every=0.02)
        report = wait_for_line(process, log_path, "feedback-sweep KEEPS FAILING", 180)
        assert "(FATAL)" in report and "exit code 1" in report, report
        screen = log_path.read_text(errors="replace")
        block = screen[screen.index(report):]
        assert str(data_dir / "logs" / "feedback-sweep.log") in block[:2000]
        assert "Address already in use" in block[:4000]
        assert "supervisorctl -c" in block[:4000] and "start cocreate:feedback-sweep" in block[:4000]
        status = subprocess.run([str(ROOT / ".venv" / "bin" / "supervisorctl"), "-c", str(data_dir / "supervisord.conf"),
                                 "status"], capture_output=True, text=True).stdout
        states = dict(re.findall(r"^(\S+)\s+([A-Z]+)", status, re.M))
        assert states.pop("cocreate:feedback-sweep") == "FATAL", status
        assert set(states.values()) == {"RUNNING"} and len(states) == 14, status
        assert ready(gateway) and ready(f"http://127.0.0.1:{ports['feedback']}")
        assert old not in session_processes(supervisord_pid(data_dir))
    finally:
        holder.close()
    # Fixed: started again as the report says, it runs.
    subprocess.run([str(ROOT / ".venv" / "bin" / "supervisorctl"), "-c", str(data_dir / "supervisord.conf"),
                    "start", "cocreate:feedback-sweep"], capture_output=True, text=True, timeout=60)
    until(lambda: ready(f"http://127.0.0.1:{ports['feedback_sweep']}"), 60, "the sweep to answer again")
    stop_with_ctrl_c(process, ports, data_dir)


def _status(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _try_bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("0.0.0.0", port))
    except OSError:
        return False
    sock.listen()
    return True


def test_a_busy_port_is_one_line_and_nothing_starts(tmp_path):
    ports = {name: free_port() for name in (*APPS, *WORKERS, "broker")}
    env = platform_environment(tmp_path / "var", ports)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["gateway"]))
        busy.listen()
        before = set(_pids())
        result = subprocess.run([str(ROOT / "bin" / "run-platform")], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [f"port {ports['gateway']} is in use (GATEWAY_PORT): stop what uses it or set GATEWAY_PORT=… "
                     f"to a free port"], lines
    assert not (tmp_path / "var" / "supervisord.conf").exists()
    assert [name for name, port in ports.items() if name != "gateway" and listening(port)] == []
    started = [pid for pid in set(_pids()) - before if str(tmp_path) in _cmdline(pid)]
    assert started == [], "a process was started"


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.timeout(600)
def test_the_quick_start_as_the_readme_says(tmp_path):
    """`make run` prints where everything is once it answers; the demo command it prints works."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme[readme.index("## Quick start"):readme.index("## The picture")]
    assert "make run" in quick_start and "make demo" in quick_start
    ports = {name: free_port() for name in (*APPS, *WORKERS, "broker")}
    env = platform_environment(tmp_path / "var", ports)
    log_path = tmp_path / "screen.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            banner = wait_for_banner(process, log_path, timeout=400)
            web, gateway = f"http://127.0.0.1:{ports['web']}", f"http://127.0.0.1:{ports['gateway']}"
            assert f"{web}/" in banner and f"{gateway}/api/v1" in banner and f"{gateway}/docs" in banner, banner
            assert "Ctrl-C" in banner
            demo = re.search(r"^\s*demo community\s+(.*make demo)\b", banner, re.M)
            assert demo, banner
            assert get(web + "/")[0] == 200
            assert get(gateway + "/docs")[0] == 200
            # `make demo` exactly as the banner prints it, from another "terminal"
            command = demo.group(1)
            assert f"COCREATE_URL={gateway}" in command
            shell_env = {k: v for k, v in os.environ.items() if not k.endswith("_PORT") and k not in (
                "COCREATE_DATA_DIR", "COCREATE_URL", "COCREATE_USERS_FILE")}
            result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=shell_env, capture_output=True,
                                    text=True, timeout=400)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            assert get(web + "/")[0] == 200
            assert BANNER in log_path.read_text(errors="replace")
            # make waits for the launcher, then dies of the SIGINT itself
            stop_with_ctrl_c(process, ports, tmp_path / "var", exit_codes=(0, -signal.SIGINT, 130))
            assert "stopped: nothing of the platform is left running" in log_path.read_text(errors="replace")
        finally:
            stop_platform(process)
