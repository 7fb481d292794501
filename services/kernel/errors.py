"""Named domain errors and their HTTP meaning; the HTTP layer maps them to the one error shape."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A command refused for a domain reason. ``reason`` is a stable machine-readable code."""

    status = 422
    reason = "domain_rule"

    def __init__(self, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.details = details or {}


class NotFound(DomainError):
    status = 404
    reason = "not_found"


class Forbidden(DomainError):
    status = 403
    reason = "forbidden"


class Conflict(DomainError):
    """The command contradicts the current state (already voted, insufficient fund, ...)."""

    status = 409
    reason = "conflict"


class ConcurrencyError(Conflict):
    """Someone else appended to the stream first: reload and decide again."""

    reason = "concurrency_conflict"

    def __init__(self, stream_id: str, expected_version: int, actual_version: int | None):
        actual = "unknown" if actual_version is None else str(actual_version)
        super().__init__(
            f"stream {stream_id} is at version {actual}, expected {expected_version}",
            details={"stream_id": stream_id, "expected_version": expected_version,
                     "actual_version": actual_version},
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class Unauthenticated(DomainError):
    status = 401
    reason = "unauthenticated"
