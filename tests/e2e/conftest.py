"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.support.broker import free_port
from tests.support.run_platform import APPS, ROOT, WORKERS, platform_environment, wait_for_banner


@pytest.fixture
def platform(tmp_path):
    """The whole platform started by ``bin/run-platform`` (as ``make run`` does) on free ports, with
    its data under ``tmp_path``, once it has printed its ready banner (every app and worker answers
    /readyz): ``(process, ports by app or worker name and "broker", log path)``; the log is the
    launcher's screen. Stopped as Ctrl-C would if the test left it running. Its processes keep no
    personal-information key they read (``COCREATE_KEYSTORE_CACHE_SECONDS=0``): a correction or an
    erasure shows in every worker at once."""
    ports = {name: free_port() for name in (*APPS, *WORKERS, "broker")}
    env = {**platform_environment(tmp_path / "var", ports), "COCREATE_KEYSTORE_CACHE_SECONDS": "0"}
    log = open(tmp_path / "platform.log", "wb")
    process = subprocess.Popen([str(ROOT / "bin" / "run-platform")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_banner(process, tmp_path / "platform.log")
        yield process, ports, tmp_path / "platform.log"
    finally:
        stop_platform(process)
        log.close()


def stop_platform(process: subprocess.Popen) -> None:
    """Ctrl-C, as in the terminal, if it still runs; SIGKILL if it has not stopped within 90 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # supervisord then gets SIGTERM (its parent died)
            process.wait()
