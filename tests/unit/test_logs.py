"""Log lines: JSON, and each written once even under gunicorn (whose logconfig_dict puts a JSON
handler on the root logger before the app configures its own)."""

from __future__ import annotations

import io
import json
import logging
import time

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
        root.handlers[-1].flush()  # INFO lines are written in batches (the next test)
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(line["message"], line["service"], line["event_id"]) for line in lines] == [("once", "projects", "e1")]
        assert other in root.handlers
    finally:
        root.handlers, root.level = saved


def test_lines_are_written_in_batches_a_warning_at_once_after_the_lines_before_it():
    stream = io.StringIO()
    handler = logs.BatchedLines(stream, flush_seconds=3600)
    handler.setFormatter(logs.JsonFormatter("projects"))
    logger = logging.getLogger("services.test.batches")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("first")
        logger.info("second")
        assert stream.getvalue() == ""  # waiting for the batch
        logger.warning("third")
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["first", "second", "third"]
        logger.info("fourth")
        handler.flush()  # as logging.shutdown does when the process exits
        assert json.loads(stream.getvalue().splitlines()[-1])["message"] == "fourth"
        small = logs.BatchedLines(io.StringIO(), flush_seconds=3600, flush_bytes=300)
        small.setFormatter(logs.JsonFormatter("projects"))
        logger.addHandler(small)
        for n in range(5):
            logger.info("x" * 100, extra={"n": n})
        assert 2 <= len(small.stream.getvalue().splitlines()) < 5  # 300 bytes waiting: written
    finally:
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def test_a_batch_is_written_by_itself_once_its_time_is_up():
    stream = io.StringIO()
    handler = logs.BatchedLines(stream, flush_seconds=0.05)
    handler.setFormatter(logs.JsonFormatter("projects"))
    logger = logging.getLogger("services.test.timer")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        for message in ("one", "two"):
            logger.info(message)
            deadline = time.monotonic() + 10
            while message not in stream.getvalue() and time.monotonic() < deadline:
                time.sleep(0.01)
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["one", "two"]
    finally:
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def _only_our_handler(stream):
    handler = logs.BatchedLines(stream, flush_seconds=3600)
    handler.setFormatter(logs.JsonFormatter("projects"))
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    return handler, saved


def test_a_request_line_is_the_line_the_logging_module_would_write():
    stream = io.StringIO()
    handler, (saved_handlers, saved_level) = _only_our_handler(stream)
    logger = logging.getLogger("services.test.requests")
    fields = {"method": "GET", "path": "/projects/p1", "status": 200, "duration_ms": 1.25}
    token = logs.correlation_id_var.set("c-1")
    try:
        logs.request_line(logger, "request", fields)
        logger.info("request", extra=fields)
        handler.flush()
        fast, usual = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert fast.pop("ts")[:16] == usual.pop("ts")[:16]  # the same minute at least
        assert fast == usual == {"level": "INFO", "service": "projects", "logger": "services.test.requests",
                                 "message": "request", "correlation_id": "c-1", **fields}
        root = logging.getLogger()
        root.setLevel(logging.WARNING)
        logs.request_line(logger, "request", fields)  # below the level: nothing
        handler.flush()
        assert len(stream.getvalue().splitlines()) == 2
    finally:
        logs.correlation_id_var.reset(token)
        logging.getLogger().handlers = saved_handlers
        logging.getLogger().setLevel(saved_level)


def test_a_request_line_goes_through_the_logging_module_when_something_else_listens():
    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record)

    stream = io.StringIO()
    handler, (saved_handlers, saved_level) = _only_our_handler(stream)
    logger = logging.getLogger("services.test.listened")
    listener = Records()
    try:
        for attach, detach in ((lambda: logging.getLogger().addHandler(listener),
                                lambda: logging.getLogger().removeHandler(listener)),
                               (lambda: logger.addHandler(listener), lambda: logger.removeHandler(listener))):
            attach()
            logs.request_line(logger, "request", {"status": 201})
            detach()
        assert [(r.getMessage(), r.status) for r in listener.records] == [("request", 201), ("request", 201)]
        handler.flush()
        assert [json.loads(line)["status"] for line in stream.getvalue().splitlines()] == [201, 201]
    finally:
        logging.getLogger().handlers = saved_handlers
        logging.getLogger().setLevel(saved_level)
