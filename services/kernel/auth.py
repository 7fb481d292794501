"""Bearer-token verification shared by the gateway and every service.

The algorithm is pinned by configuration (a token's own ``alg`` header is never trusted), and
``exp``, ``aud`` and ``iss`` are checked. Services verify the forwarded token themselves; they never
trust plain identity headers.

The claims of a token (a JWT signed with HS256 and the shared secret, or RS256 by an identity
provider whose keys the JWKS publishes):

- ``sub`` (required) — the person's id on the platform (``person_id`` in the API and events).
- ``name`` — the person's display name, recorded with what they do (a string; default empty).
- ``roles`` — the person's roles: a list of strings from the platform's roles (``resident``,
  ``representative``, ``volunteer``, ``grid_worker``, ``cadre``, ``organiser``, ``admin``; see
  :data:`services.kernel.model.ROLE_MEANINGS`). The legacy spelling ``organizer`` is read as
  ``organiser``; a name that is no role of the platform grants nothing and is ignored. Default:
  no roles.
- ``community`` — the id of the person's community (a string), or absent or null for a token of
  no community (a platform administrator).
- ``aud`` (required) — the audience: must equal the configured audience (``COCREATE_JWT_AUDIENCE``,
  default ``cocreate``).
- ``iss`` (required) — the issuer: must equal the configured issuer (``COCREATE_JWT_ISSUER``, default
  ``cocreate``).
- ``iat`` (required) — when the token was issued (seconds since the epoch); not in the future.
- ``exp`` (required) — when the token expires (seconds since the epoch); an expired token is a 401
  ``token_expired``.
- ``jti`` — a unique id of the token; the platform's own tokens carry one, verification does not
  require it.

A token missing a required claim, or whose ``roles``, ``name`` or ``community`` has the wrong
type, is a 401 ``token_invalid``.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable

import jwt

from services.kernel.config import AuthSettings
from services.kernel.errors import Unauthenticated
from services.kernel.model import LEGACY_ROLE_ALIASES, ROLES, Principal, canonical_role, require_member

__all__ = ["LEGACY_ROLE_ALIASES", "REQUIRED_CLAIMS", "ROLES", "TOKEN_CLAIMS", "Principal", "TokenVerifier",
           "issue_token", "require_member"]

# The claims of a token, as the docstring above lists them, and those verification requires.
TOKEN_CLAIMS = ("sub", "name", "roles", "community", "aud", "iss", "iat", "exp", "jti")
REQUIRED_CLAIMS = ("sub", "aud", "iss", "iat", "exp")



class TokenVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        self._key = settings.jwt_secret if self.algorithm == "HS256" else settings.jwt_public_key
        self._verified: dict[str, tuple[Principal, float, float]] = {}

    # Verified tokens are remembered for a while: a client sends the same token with every
    # request, and checking a signature costs more than the rest of a small read. A remembered
    # token still expires at its ``exp``; the memory is bounded in size and in age (so a key
    # removed from the JWKS stops working within CACHE_SECONDS).
    CACHE_SECONDS = 300.0
    CACHE_SIZE = 10_000

    def verify(self, token: str, now: float | None = None) -> Principal:
        now = time.time() if now is None else now
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, expires, forget_at = remembered
            if now < expires and now < forget_at:
                return principal
            del self._verified[token]
            if now >= expires:
                raise Unauthenticated("the token has expired", reason="token_expired")
        principal, expires = self._verify(token)
        if len(self._verified) >= self.CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, expires, now + self.CACHE_SECONDS)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            key = self._signing_key(token) if self._jwks else self._key
            claims = jwt.decode(
                token, key, algorithms=[self.algorithm], audience=self.audience, issuer=self.issuer,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", reason="token_expired") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise Unauthenticated(f"the token is not valid: {exc}", reason="token_invalid") from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the token's roles claim must be a list of strings", reason="token_invalid")
        name, community = claims.get("name") or "", claims.get("community")
        if not isinstance(name, str) or not (community is None or isinstance(community, str)):
            raise Unauthenticated("the token's name and community claims must be strings", reason="token_invalid")
        return Principal(
            person_id=str(claims["sub"]),
            name=name,
            roles=frozenset(role for role in map(canonical_role, roles) if role is not None),
            community=community,
            token=token,
        ), float(claims["exp"])

    def _signing_key(self, token: str):
        """The JWKS key that signed ``token``: the one its ``kid`` names, or — for a token without a
        ``kid`` (the header parameter is optional) — the JWKS's only signing key; a JWKS of several
        keys needs the ``kid``."""
        if jwt.get_unverified_header(token).get("kid") is None:
            keys = self._jwks.get_signing_keys()
            if len(keys) == 1:
                return keys[0].key
        return self._jwks.get_signing_key_from_jwt(token).key

    def from_header(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("an Authorization: Bearer token is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())


def issue_token(
    settings: AuthSettings,
    *,
    person_id: str,
    name: str = "",
    roles: Iterable[str] = ("resident",),
    community: str | None = None,
    lifetime: dt.timedelta = dt.timedelta(hours=8),
    private_key: str | None = None,
) -> str:
    """Sign a token (HS256 with the shared secret, or RS256 with ``private_key``) with the claims
    the module's docstring lists. ``roles`` are the platform's roles; a legacy spelling is written
    in its current one, and a name that is no role is a ValueError."""
    canonical = {name: canonical_role(name) for name in roles}
    unknown = sorted(name for name, role in canonical.items() if role is None)
    if unknown:
        raise ValueError(f"unknown roles {unknown}; the roles are: {', '.join(ROLES)}")
    now = dt.datetime.now(dt.timezone.utc)
    claims = {
        "sub": person_id, "name": name, "roles": sorted(set(canonical.values())), "community": community,
        "aud": settings.jwt_audience, "iss": settings.jwt_issuer,
        "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4()),
    }
    if settings.jwt_algorithm == "HS256":
        return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    if private_key is None:
        raise ValueError("RS256 tokens need the private key")
    return jwt.encode(claims, private_key, algorithm="RS256")
