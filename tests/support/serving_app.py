"""A tiny Flask app for the gunicorn worker tests (``tests/integration/test_serving.py``), served by
``gunicorn -c python:services.kernel.gunicorn_conf tests.support.serving_app:app``."""

from __future__ import annotations

import flask
from gunicorn import util

app = flask.Flask(__name__)


@app.get("/hello")
def hello():
    return {"hello": "world"}


@app.post("/refuse")
def refuse():
    """Answers before reading the body, as an app refusing a body too large or a caller unknown does."""
    return {"refused": True}, 413


@app.get("/lingering")
def lingering():
    """The client ports of the connections this worker keeps lingering (services.kernel.serving)."""
    kept = getattr(util.close_graceful, "__self__", None)
    if kept is None:
        return {"error": "the worker closes connections with gunicorn's own close"}, 500
    ports = []
    for sock in list(kept._kept):
        try:
            ports.append(sock.getpeername()[1])
        except OSError:
            pass
    return {"ports": ports}
