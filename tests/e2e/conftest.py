"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.support.broker import free_port
from tests.support.run_platform import APPS, ROOT, WORKERS


@pytest.fixture
def platform(tmp_path):
    """The whole platform started by ``bin/run-platform`` (as ``make run`` does) on free ports, with
    its data under ``tmp_path``: ``(process, ports by app or worker name and "broker", log path)``.
    Stopped as Ctrl-C would if the test left it running."""
    ports = {name: free_port() for name in (*APPS, *WORKERS, "broker")}
    env = {**os.environ, "COCREATE_DATA_DIR": str(tmp_path / "var"), "COCREATE_BROKER_PORT": str(ports["broker"])}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    for name, port in ports.items():
        env[f"{name.upper()}_PORT"] = str(port)
    log = open(tmp_path / "platform.log", "wb")
    process = subprocess.Popen([str(ROOT / "bin" / "run-platform")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process, ports, tmp_path / "platform.log"
    finally:
        if process.poll() is None:  # the test failed half-way: stop everything as Ctrl-C would
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
