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

import msgspec

FLUSH_SECONDS = 0.2
FLUSH_BYTES = 65_536

correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = self.head(record.created, record.levelname, record.name, record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return encode_line(line)

    def head(self, created: float, level: str, logger: str, message: str) -> dict[str, object]:
        """What every line starts with: time, level, service, logger, message, correlation id."""
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": level, "service": self.service, "logger": logger, "message": message,
        }
        correlation_id = correlation_id_var.get()
        if correlation_id:
            line["correlation_id"] = correlation_id
        return line


def encode_line(line: dict[str, object]) -> str:
    """A log line's JSON: msgspec, the same compact text a few times faster (a line per request:
    issue 23); what it cannot encode, as the standard library does with ``default=str``."""
    try:
        return _ENCODE(line).decode()
    except (TypeError, ValueError, OverflowError):
        return json.dumps(line, ensure_ascii=False, default=str)


def _encode_other(value: object) -> str:
    return str(value)


_ENCODE = msgspec.json.Encoder(enc_hook=_encode_other).encode


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
        self._add(line, record.levelno >= logging.WARNING, record)

    def add_info_line(self, line: str) -> None:
        """Add a line of level INFO formatted already (:func:`request_line`)."""
        with self.lock:
            self._add(line + self.terminator, False, None)

    def _add(self, line: str, at_once: bool, record: logging.LogRecord | None) -> None:
        self._waiting.append(line)
        self._size += len(line)
        if at_once or self._size >= self.flush_bytes or self.flush_seconds <= 0:
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


def request_line(logger: logging.Logger, message: str, fields: dict[str, object]) -> None:
    """``logger.info(message, extra=fields)`` — the line every request writes — without a
    ``LogRecord``: when the only place the record would go is this module's handler on the root
    logger (as :func:`configure_logging` leaves it), the line :class:`JsonFormatter` would make of
    that record is made at once and added to the batch (the logging module's record, filters and
    handler walk were half a project page's log line: issue 23). Otherwise (another handler or a
    filter on the way, a test capturing records) the record is logged as usual."""
    if not logger.isEnabledFor(logging.INFO):
        return
    handler = _only_handler(logger)
    if handler is None:
        logger.info(message, extra=fields)
        return
    line = handler.formatter.head(time.time(), "INFO", logger.name, message)
    line.update(fields)
    handler.add_info_line(encode_line(line))


def _only_handler(logger: logging.Logger) -> "BatchedLines | None":
    """The root's one :class:`BatchedLines` with a :class:`JsonFormatter` when a record of
    ``logger`` would reach that handler and nothing else (no filter, no other handler, on the way)."""
    root = logging.root
    current: logging.Logger | None = logger
    while current is not None and current is not root:
        if current.handlers or current.filters or not current.propagate:
            return None
        current = current.parent
    handlers = root.handlers
    if root.filters or len(handlers) != 1:
        return None
    handler = handlers[0]
    if (type(handler) is not BatchedLines or handler.filters or handler.level > logging.INFO
            or type(handler.formatter) is not JsonFormatter):
        return None
    return handler


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
