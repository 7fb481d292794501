"""gunicorn settings shared by every HTTP app: ``gunicorn -c python:services.kernel.gunicorn_conf``.

Prometheus multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus-client
is first imported, so it is set here (the master loads this file before any worker imports the
app); the directory is wiped when the master starts and a dead worker's gauges are marked.

The worker class is ``GUNICORN_WORKER_CLASS``: ``sync`` for the services and the web client — run
as :class:`services.kernel.serving.SyncWorker` (gunicorn's sync worker, whose lingering close no
longer holds up the next request), or as gunicorn's ``gthread`` when ``GUNICORN_THREADS`` > 1; ``gevent`` for
the gateway (decision 17: a live stream is a parked greenlet, not a held thread), with at most
``GUNICORN_WORKER_CONNECTIONS`` connections per worker. The gevent worker monkey-patches the
standard library when it starts, before it imports the app: the app is never loaded by the master
(``preload_app`` stays off), and this file imports nothing that would open a socket or a thread.
"""

import os
import shutil
import tempfile

from gunicorn.glogging import Logger

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))  # thread worker classes only
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
if worker_class == "sync" and threads == 1:
    # gunicorn's sync worker, its lingering close off the request path (services.kernel.serving)
    worker_class = "services.kernel.serving.SyncWorker"
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))  # gevent only
preload_app = False  # the gevent worker patches before the app is imported: never import it in the master
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# gunicorn answers a request line over its limit (at most 8190) with an HTML 414 before the app
# sees it. Its limit is lifted so that the apps answer over-long URLs themselves, with a 414 in the
# one JSON error shape (services.kernel.web.MAX_URL_BYTES); in a cluster the ingress bounds
# request lines before they reach a pod.
limit_request_line = 0
# gunicorn >= 25 opens a control socket under $HOME by default: four apps on one host would share
# its path, and a read-only root filesystem has no place for it. Nothing here uses it.
control_socket_disable = True
accesslog = None  # the apps log every request as a JSON line with its correlation id


class NoAccessLog(Logger):
    """gunicorn's logger without its access log. With ``logconfig_dict`` set, gunicorn builds an
    access record for every request (its atoms, a log call) even with ``accesslog`` off, and then
    drops it; that was a twentieth of a write's time in a worker (issue 23)."""

    def access(self, resp, req, environ, request_time) -> None:
        return None


logger_class = NoAccessLog
errorlog = "-"
# gunicorn's own lines (worker boot, timeouts) as JSON too, like the apps' lines.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "services.kernel.logs.JsonFormatter",
                            "service": os.environ.get("COCREATE_APP_NAME", "gunicorn")}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cocreate-metrics-")


def on_starting(server):
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """A worker told to stop (SIGTERM: a rollout, a scale-down) first ends its live streams — the
    gateway's, when :mod:`gateway.live` is loaded — so that it exits at once instead of holding them
    until the graceful timeout; their clients reconnect (to another replica) with Last-Event-ID."""
    import signal
    import sys

    plain = worker.handle_exit

    def handle_exit(sig, frame):
        plain(sig, frame)
        live = sys.modules.get("gateway.live")
        if live is not None:
            live.stop_all_soon()

    signal.signal(signal.SIGTERM, handle_exit)
