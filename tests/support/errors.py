"""The platform's one error shape, checked the same way by every API test."""

from __future__ import annotations

ERROR_KEYS = {"code", "status", "message", "errors"}


def assert_error(reply, status: int, reason: str | None = None) -> dict:
    """``reply`` is a JSON error ``{code, status, message, errors}`` with ``status`` and, for domain
    refusals, ``errors.reason``; returns the body."""
    assert reply.status_code == status, f"{reply.status_code}: {reply.body.decode()}"
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()
    assert set(error) == ERROR_KEYS, error
    assert error["code"] == status
    assert isinstance(error["status"], str) and error["status"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["errors"], dict)
    if reason is not None:
        assert error["errors"].get("reason") == reason, error
    return error
