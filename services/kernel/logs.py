"""JSON log lines carrying the service name and the current correlation id.

Lines are written in batches (:class:`BatchedLines`): a line of level INFO or below waits at most
:data:`FLUSH_SECONDS` (or until 64 KiB are waiting) and goes out with the others of that time in
one write; a WARNING or worse goes out at once, after the lines before it. That is the buffered
access log of nginx (``buffer=``, ``flush=``) for the line every request writes (issue 23: one
write to the log pipe per request was a twentieth of a project page's time). A process that exits
normally, or on SIGTERM or SIGINT (every process here handles them), writes what waits; one that
is killed (SIGKILL, out of memory) loses at most the last ``FLUSH_SECONDS`` of its INFO lines.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import time
import weakref
from datetime import datetime, timezone

FLUSH_SECONDS = 0.2
FLUSH_BYTES = 65_536

correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        correlation_id = correlation_id_var.get()
        if correlation_id:
            line["correlation_id"] = correlation_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class BatchedLines(logging.StreamHandler):
    """A stream handler that writes its lines in batches (see the module's docstring)."""

    def __init__(self, stream, flush_seconds: float = FLUSH_SECONDS, flush_bytes: int = FLUSH_BYTES) -> None:
        super().__init__(stream)
        self.flush_seconds = flush_seconds
        self.flush_bytes = flush_bytes
        self._waiting: list[str] = []
        self._size = 0
        self._wake = threading.Event()
        self._flusher_pid = 0
        _BATCHED.add(self)

    def emit(self, record: logging.LogRecord) -> None:  # called holding the handler's lock
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._waiting.append(line)
        self._size += len(line)
        if record.levelno >= logging.WARNING or self._size >= self.flush_bytes or self.flush_seconds <= 0:
            self._write(record)
        elif len(self._waiting) == 1:
            if self._flusher_pid != os.getpid():
                self._start_flusher()
            self._wake.set()

    def flush(self) -> None:
        with self.lock:
            self._write(None)

    def _write(self, record: logging.LogRecord | None) -> None:
        if not self._waiting:
            return
        text = "".join(self._waiting)
        self._waiting.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            if record is not None:
                self.handleError(record)

    def _start_flusher(self) -> None:
        self._flusher_pid = os.getpid()
        threading.Thread(target=_flush_batches, args=(weakref.ref(self), self._wake), daemon=True,
                         name="log-flusher").start()

    def _forget_after_fork(self) -> None:
        self._waiting.clear()  # the parent writes them
        self._size = 0
        self._wake = threading.Event()
        self._flusher_pid = 0


def _flush_batches(handler_ref: "weakref.ref[BatchedLines]", wake: threading.Event) -> None:
    while True:
        wake.wait()
        handler = handler_ref()
        if handler is None or handler._wake is not wake:
            return
        time.sleep(handler.flush_seconds)
        wake.clear()  # a line after this wakes it again; one before it is in this batch
        handler.flush()
        del handler


_BATCHED: "weakref.WeakSet[BatchedLines]" = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [handler._forget_after_fork() for handler in list(_BATCHED)])


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        # Ours from an earlier call, or the JSON one gunicorn's logconfig_dict put on the root
        # (services.kernel.gunicorn_conf): one handler, so every line is written once.
        if getattr(handler, "_cocreate", False) or isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
            handler.flush()
    handler = BatchedLines(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler._cocreate = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    # A JSON line names no source file, line, thread or process: the logging module need not look
    # them up for every record (its documented optimisation; issue 23: a tenth of a request's log line).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
