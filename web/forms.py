"""What a form's fields say, read the one way every page reads them: a whole number within bounds,
an amount typed in yuan (``12``, ``1,200.50``) as integer fen. A field that does not say one is
None, and the page asks again (the API checks the same bounds once more)."""

from __future__ import annotations

import flask


def whole_number(name: str, *, low: int, high: int) -> int | None:
    raw = flask.request.form.get(name, "").strip()
    if not raw.isdecimal() or len(raw) > 9 or not low <= int(raw) <= high:
        return None
    return int(raw)


def fen(name: str, *, allow_zero: bool = False, high: int = 10_000_000_000) -> int | None:
    """An amount typed in yuan, at most two decimals, as integer fen from 1 (0 with ``allow_zero``)
    to ``high``."""
    raw = flask.request.form.get(name, "").strip().replace(",", "")
    whole, _dot, cents = raw.partition(".")
    if not whole.isdecimal() or len(whole) > 13 or (cents and (not cents.isdecimal() or len(cents) > 2)):
        return None
    amount = int(whole) * 100 + int((cents or "0").ljust(2, "0"))
    return amount if (0 if allow_zero else 1) <= amount <= high else None
