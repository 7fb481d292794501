"""Run a service's HTTP app (or the gateway's) under gunicorn, as the local platform does, for
end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import TEST_SECRET
from tests.support.apps import KEYSTORE_URL
from tests.support.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServiceServer:
    def __init__(self, service: str, tmp_path: Path, env: dict[str, str] | None = None, workers: int = 2,
                 app: str | None = None) -> None:
        self.service = service
        self.app = app or f"services.{service}.app:build()"  # gunicorn's app spec
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"{service}-gunicorn.log"
        self.env = {
            **os.environ, "COCREATE_DATA_DIR": str(tmp_path / "var"), "COCREATE_JWT_SECRET": TEST_SECRET,
            "COCREATE_APP_NAME": service, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics" / service),
            "GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": str(workers),
            "COCREATE_KEYSTORE_URL": KEYSTORE_URL,  # one key store for every app of the test session
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "ServiceServer":
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [gunicorn, "-c", "python:services.kernel.gunicorn_conf", self.app],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.service} exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.service} not ready in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()


def write_service_documents(directory: Path) -> Path:
    """The three services' OpenAPI documents, as their apps serve them, kept in ``directory`` as a
    gateway keeps them (``GATEWAY_CATALOGUE_DIR``): for a gateway built in a test without the
    services running. Each app is built in memory over a scratch SQLite file."""
    import importlib
    import tempfile

    from gateway.catalogue import SERVICES, save_document
    from services.kernel.config import ServiceSettings
    from services.kernel.service import create_service_app

    for name in SERVICES:
        definition = importlib.import_module(f"services.{name}.service").DEFINITION
        with tempfile.TemporaryDirectory(prefix="cocreate-documents-") as scratch:
            settings = ServiceSettings(service=name, database_url=f"sqlite:///{scratch}/{name}.db",
                                       jwt_secret=TEST_SECRET)
            app = create_service_app(definition, settings)
            try:
                document = app.test_client().get("/openapi.json").get_json()
            finally:
                app.extensions["cocreate.container"].store.engine.dispose()
        save_document(directory, name, document, url=f"(in memory: services.{name})")
    return directory
