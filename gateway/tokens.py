"""The local token endpoint's users file (demos and local use; production uses an identity
provider's RS256 tokens, verified through its JWKS).

The file is JSON: ``{"users": [{"username": "wang", "password_hash": "pbkdf2_sha256$…",
"person_id": "wang", "name": "王阿姨", "roles": ["resident"], "community": "xinyang"}]}``.
Passwords are stored only as PBKDF2-SHA256 hashes: ``python -m gateway hash-password``.

A user's roles are the platform's roles (:data:`services.kernel.model.ROLES`, the very roles the
services accept); the legacy spelling ``organizer`` is read as ``organiser`` (and tokens carry only
the latter). A role the platform does not know makes the whole file refused, naming the user, the
role and the roles there are.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from services.kernel.model import LEGACY_ROLE_ALIASES, ROLES, canonical_role

ITERATIONS = 200_000


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "pbkdf2_sha256":
        return False
    expected = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    return hmac.compare_digest(expected, base64.b64decode(digest))


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    person_id: str
    name: str
    roles: tuple[str, ...]
    community: str | None


def load_users(path: str) -> dict[str, User]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    users = {}
    for entry in data["users"]:
        users[entry["username"]] = User(entry["username"], entry["password_hash"], entry["person_id"],
                                        entry["name"], user_roles(path, entry), entry.get("community"))
    return users


def user_roles(path: str, entry: dict) -> tuple[str, ...]:
    """The roles of a user of the file, in their current spelling (a legacy alias normalised)."""
    given = entry["roles"]
    if not isinstance(given, list) or not all(isinstance(r, str) for r in given):
        raise ValueError(f"users file {path}: user {entry['username']}: roles must be a list of role names")
    unknown = [r for r in given if canonical_role(r) is None]
    if unknown:
        legacy = "".join(f"; {old!r} is read as {new!r}" for old, new in LEGACY_ROLE_ALIASES.items())
        raise ValueError(f"users file {path}: user {entry['username']} has unknown roles {unknown}; "
                         f"the roles are: {', '.join(ROLES)}{legacy}")
    return tuple(dict.fromkeys(canonical_role(r) for r in given))


# A hash to compare against when the username is unknown, so timing does not reveal which exist.
_DUMMY = hash_password("not a password", iterations=ITERATIONS, salt=b"0123456789abcdef")


def authenticate(users: dict[str, User], username: str, password: str) -> User | None:
    user = users.get(username)
    ok = check_password(password, user.password_hash if user else _DUMMY)
    return user if user and ok else None
