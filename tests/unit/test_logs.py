"""Log lines: JSON, and each written once even under gunicorn (whose logconfig_dict puts a JSON
handler on the root logger before the app configures its own)."""

from __future__ import annotations

import io
import json
import logging

from services.kernel import logs


def test_a_line_is_written_once_under_gunicorn_s_logging(monkeypatch):
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    stream = io.StringIO()
    gunicorn_handler = logging.StreamHandler(stream)  # as gunicorn_conf.logconfig_dict makes it
    gunicorn_handler.setFormatter(logs.JsonFormatter("projects"))
    other = logging.StreamHandler(io.StringIO())  # not ours: left alone
    try:
        root.handlers = [gunicorn_handler, other]
        monkeypatch.setattr(logs.sys, "stderr", stream)
        logs.configure_logging("projects")
        logs.configure_logging("projects")  # idempotent
        logging.getLogger("services.test").info("once", extra={"event_id": "e1"})
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(line["message"], line["service"], line["event_id"]) for line in lines] == [("once", "projects", "e1")]
        assert other in root.handlers
    finally:
        root.handlers, root.level = saved
