"""Running a worker (relay or consumer): signals, and its /healthz, /readyz and /metrics port."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from services.kernel import metrics
from services.kernel.kafka import TopicMismatch
from services.kernel.relay import LogBehindTopic

log = logging.getLogger(__name__)


class HealthServer:
    """A small HTTP server in a daemon thread; workers have no web framework of their own."""

    def __init__(self, port: int, readiness: Mapping[str, Callable[[], None]], host: str = "0.0.0.0") -> None:
        checks = dict(readiness)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._send(200, "application/json", json.dumps({"status": "ok"}).encode())
                elif path == "/readyz":
                    results, ready = {}, True
                    for name, check in checks.items():
                        try:
                            check()
                            results[name] = "ok"
                        except Exception as exc:  # a probe reports, it does not raise
                            results[name] = f"failing: {exc.__class__.__name__}: {exc}"[:300]
                            ready = False
                    body = {"status": "ready" if ready else "not ready", "checks": results}
                    self._send(200 if ready else 503, "application/json", json.dumps(body).encode())
                elif path == "/metrics":
                    body, content_type = metrics.exposition()
                    self._send(200, content_type, body)
                else:
                    body = {"code": 404, "status": "Not Found", "message": f"no route {path}", "errors": {}}
                    self._send(404, "application/json", json.dumps(body).encode())

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):  # probes every few seconds would flood the log
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_until_signalled(loop: Callable[[threading.Event], None], *, health_port: int,
                        readiness: Mapping[str, Callable[[], None]]) -> None:
    """Run ``loop(stop)`` until SIGTERM or SIGINT; serve probes on ``health_port`` when set.

    A topic with another partition count than configured stops the worker with exit code 2 and
    the message on stderr (the same code as a configuration error); a relay whose log does not
    hold what its topic holds (a restored database) with exit code 4 and the message. Restarting
    fixes neither: an operator does."""
    stop = threading.Event()

    def _stop(signum, _frame):
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    _fresh_metrics_directory()
    health = HealthServer(health_port, readiness).start() if health_port else None
    try:
        loop(stop)
    except TopicMismatch as exc:  # configuration, not an outage: restarting would not help
        log.error("topic mismatch; stopping", extra={"error": str(exc)})
        print(f"topic mismatch: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except LogBehindTopic as exc:  # a restored database: the runbook, not a restart
        print(f"log behind topic: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(4) from None
    finally:
        if health is not None:
            health.stop()


def _fresh_metrics_directory() -> None:
    """A worker is the only process of its container: files a crashed predecessor left in the
    multiprocess directory (an emptyDir survives container restarts) would keep its last gauge
    values alive, so they are removed at start."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.endswith(".db"):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass
