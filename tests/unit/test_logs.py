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
