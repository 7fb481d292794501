"""Bearer-token verification: pinned algorithm, required claims, roles, header parsing, RS256."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.kernel.auth import Principal, TokenVerifier, issue_token
from services.kernel.config import AuthSettings
from services.kernel.errors import DomainError, Forbidden, Unauthenticated
from tests.conftest import TEST_SECRET

HS = AuthSettings(jwt_secret=TEST_SECRET)
OTHER_SECRET = "another-secret-that-is-also-long-enough-for-hs256"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private_pem, public_pem


def claims(**changes) -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    value = {"sub": "person-42", "name": "王芳", "roles": ["resident"], "community": "东湖社区",
             "aud": "cocreate", "iss": "cocreate", "iat": now, "exp": now + dt.timedelta(hours=1)}
    value.update(changes)
    return {k: v for k, v in value.items() if v is not _DROP}


_DROP = object()


def hs_token(secret: str = TEST_SECRET, **changes) -> str:
    return jwt.encode(claims(**changes), secret, algorithm="HS256")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- valid tokens -------------------------------------------------------------------------------

def test_valid_token_gives_principal():
    token = issue_token(HS, person_id="person-1", name="李雷", roles=["resident", "organiser"],
                        community="东湖社区")
    principal = TokenVerifier(HS).verify(token)
    assert principal.person_id == "person-1"
    assert principal.name == "李雷"
    assert principal.roles == frozenset({"resident", "organiser"})
    assert principal.community == "东湖社区"
    assert principal.token == token


def test_token_without_community_or_roles():
    principal = TokenVerifier(HS).verify(hs_token(roles=_DROP, community=_DROP))
    assert principal.roles == frozenset()
    assert principal.community is None


def test_from_header_accepts_bearer_in_any_case():
    token = issue_token(HS, person_id="person-2", roles=["admin"])
    verifier = TokenVerifier(HS)
    assert verifier.from_header(f"Bearer {token}").person_id == "person-2"
    assert verifier.from_header(f"bearer  {token} ").roles == frozenset({"admin"})


def test_token_repr_does_not_leak_the_token():
    token = issue_token(HS, person_id="person-3")
    principal = TokenVerifier(HS).verify(token)
    assert token not in repr(principal)


def test_custom_audience_and_issuer():
    settings = AuthSettings(jwt_secret=TEST_SECRET, jwt_audience="gw", jwt_issuer="idp")
    token = issue_token(settings, person_id="p")
    assert TokenVerifier(settings).verify(token).person_id == "p"
    with pytest.raises(Unauthenticated):
        TokenVerifier(HS).verify(token)


# -- refused tokens -----------------------------------------------------------------------------

def test_expired_token():
    token = issue_token(HS, person_id="p", lifetime=dt.timedelta(seconds=-120))
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(HS).verify(token)
    assert caught.value.reason == "token_expired"
    assert caught.value.status == 401


@pytest.mark.parametrize("token_factory", [
    pytest.param(lambda: hs_token(aud="someone-else"), id="wrong audience"),
    pytest.param(lambda: hs_token(aud=_DROP), id="no audience"),
    pytest.param(lambda: hs_token(iss="evil-issuer"), id="wrong issuer"),
    pytest.param(lambda: hs_token(iss=_DROP), id="no issuer"),
    pytest.param(lambda: hs_token(secret=OTHER_SECRET), id="wrong secret"),
    pytest.param(lambda: hs_token(exp=_DROP), id="no exp"),
    pytest.param(lambda: hs_token(iat=_DROP), id="no iat"),
    pytest.param(lambda: hs_token(sub=_DROP), id="no sub"),
    pytest.param(lambda: hs_token(iat=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)),
                 id="issued in the future"),
    pytest.param(lambda: jwt.encode(claims(), None, algorithm="none"), id="alg none"),
    pytest.param(lambda: "not-a-token", id="garbage"),
    pytest.param(lambda: hs_token()[:-4] + "AAAA", id="tampered signature"),
])
def test_invalid_tokens(token_factory):
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(HS).verify(token_factory())
    assert caught.value.reason == "token_invalid"


def test_alg_none_token_claiming_to_be_admin_is_refused():
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps({**claims(roles=["admin"]), "iat": 1, "exp": 4_000_000_000}).encode())
    with pytest.raises(Unauthenticated):
        TokenVerifier(HS).verify(f"{header}.{payload}.")


def test_tampered_payload_is_refused():
    token = hs_token()
    header, _, signature = token.split(".")
    payload = b64(json.dumps({**claims(roles=["admin"]), "iat": 1, "exp": 4_000_000_000}).encode())
    with pytest.raises(Unauthenticated):
        TokenVerifier(HS).verify(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("roles", ["admin", {"admin": True}, ["admin", 3], [None]])
def test_roles_must_be_a_list_of_strings(roles):
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(HS).verify(hs_token(roles=roles))
    assert "roles" in caught.value.message


@pytest.mark.parametrize("header", [None, "", "Basic x", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ",
                                    "Token abc", "abc"])
def test_from_header_requires_bearer_token(header):
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(HS).from_header(header)
    assert caught.value.status == 401


def test_unauthenticated_is_a_domain_error():
    assert issubclass(Unauthenticated, DomainError)
    assert Unauthenticated("x").reason == "unauthenticated"


# -- algorithm pinning and RS256 ----------------------------------------------------------------

def rs_settings(public_pem: str) -> AuthSettings:
    return AuthSettings(jwt_algorithm="RS256", jwt_public_key=public_pem)


def test_rs256_verification_with_public_key(rsa_keys):
    private_pem, public_pem = rsa_keys
    settings = rs_settings(public_pem)
    token = issue_token(settings, person_id="person-9", roles=["cadre"], community="西湖社区",
                        private_key=private_pem)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    principal = TokenVerifier(settings).verify(token)
    assert (principal.person_id, principal.roles, principal.community) == (
        "person-9", frozenset({"cadre"}), "西湖社区")


def test_rs256_token_needs_private_key():
    with pytest.raises(ValueError):
        issue_token(AuthSettings(jwt_algorithm="RS256", jwt_public_key="x"), person_id="p")


def test_rs256_token_signed_by_another_key_is_refused(rsa_keys):
    _, public_pem = rsa_keys
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    token = jwt.encode(claims(), other, algorithm="RS256")
    with pytest.raises(Unauthenticated):
        TokenVerifier(rs_settings(public_pem)).verify(token)


def test_hs256_verifier_rejects_rs256_token(rsa_keys):
    private_pem, _ = rsa_keys
    token = jwt.encode(claims(), private_pem, algorithm="RS256")
    with pytest.raises(Unauthenticated) as caught:
        TokenVerifier(HS).verify(token)
    assert caught.value.reason == "token_invalid"


def test_rs256_verifier_rejects_hs256_token(rsa_keys):
    _, public_pem = rsa_keys
    with pytest.raises(Unauthenticated):
        TokenVerifier(rs_settings(public_pem)).verify(hs_token())


def test_rs256_verifier_rejects_key_confusion_token(rsa_keys):
    # The classic attack: an HS256 token whose HMAC key is the (public) RSA key.
    _, public_pem = rsa_keys
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({**claims(roles=["admin"]), "iat": 1, "exp": 4_000_000_000}).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b64(hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest())
    with pytest.raises(Unauthenticated):
        TokenVerifier(rs_settings(public_pem)).verify(f"{header}.{payload}.{signature}")


# -- principals ---------------------------------------------------------------------------------

def test_principal_require():
    principal = Principal(person_id="p", name="", roles=frozenset({"resident", "grid_worker"}), community=None)
    principal.require("grid_worker")
    principal.require("admin", "resident")
    assert principal.has_any(["cadre", "resident"])
    assert not principal.has_any([])
    with pytest.raises(Forbidden) as caught:
        principal.require("admin", "cadre")
    assert caught.value.status == 403
    assert caught.value.reason == "role_required"
    assert "admin" in caught.value.message and "cadre" in caught.value.message


def test_principal_without_roles_is_refused_everything():
    principal = Principal(person_id="p", name="", roles=frozenset(), community=None)
    with pytest.raises(Forbidden):
        principal.require("resident")


def test_a_remembered_token_still_expires_and_is_checked_again_after_a_while():
    verifier = TokenVerifier(HS)
    token = issue_token(HS, person_id="p1", roles=["resident"], lifetime=dt.timedelta(minutes=10))
    now = dt.datetime.now(dt.timezone.utc).timestamp()
    assert verifier.verify(token, now=now).person_id == "p1"
    assert verifier.verify(token, now=now + 60).person_id == "p1"  # remembered
    with pytest.raises(Unauthenticated) as expired:
        verifier.verify(token, now=now + 601)
    assert expired.value.reason == "token_expired"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated):
        verifier.verify(forged, now=now)  # a different string is verified, never taken from memory


# -- the claims, as documented, and the roles ---------------------------------------------------

def documented_claims() -> dict[str, bool]:
    """The claims the module's docstring lists (``- ``name`` (required) — ...``): name -> required."""
    import re

    from services.kernel import auth

    found = re.findall(r"^- ``(\w+)``( \(required\))?", auth.__doc__, flags=re.MULTILINE)
    return {name: bool(required) for name, required in found}


def test_the_documented_claims_are_the_claims_verification_requires_and_issue_writes():
    """The docstring of services/kernel/auth.py is the documentation of a token: a claim it calls
    required is one without which a token is refused, every other one may be left out, and the
    platform's own tokens carry exactly the claims it lists."""
    from services.kernel.auth import REQUIRED_CLAIMS, TOKEN_CLAIMS

    documented = documented_claims()
    assert list(documented) == list(TOKEN_CLAIMS) == ["sub", "name", "roles", "community", "aud", "iss", "iat",
                                                      "exp", "jti"]
    assert sorted(jwt.decode(issue_token(HS, person_id="p"), options={"verify_signature": False})) == sorted(documented)
    full = {**claims(), "jti": "token-1"}
    assert sorted(full) == sorted(documented)
    required = set()
    for name in documented:
        try:
            TokenVerifier(HS).verify(jwt.encode({k: v for k, v in full.items() if k != name}, TEST_SECRET,
                                                algorithm="HS256"))
        except Unauthenticated as refused:
            assert refused.reason == "token_invalid", name
            required.add(name)
    assert required == {name for name, needed in documented.items() if needed} == set(REQUIRED_CLAIMS)


def test_the_documented_roles_are_the_platform_roles():
    import re

    from services.kernel import auth
    from services.kernel.model import ROLES

    roles_item = auth.__doc__.split("- ``roles``", 1)[1].split("\n- ", 1)[0]
    listed = re.search(r"platform's roles \(([^)]*)", roles_item).group(1)
    assert tuple(re.findall(r"``(\w+)``", listed)) == ROLES


def test_a_legacy_organizer_token_is_accepted_as_organiser():
    """Tokens issued before the one spelling (role ``organizer``) keep working, read as ``organiser``."""
    principal = TokenVerifier(HS).verify(hs_token(roles=["organizer", "resident"]))
    assert principal.roles == frozenset({"organiser", "resident"})
    principal.require("organiser")


def test_a_role_the_platform_does_not_know_grants_nothing():
    principal = TokenVerifier(HS).verify(hs_token(roles=["resident", "superuser", "offline_access"]))
    assert principal.roles == frozenset({"resident"})


def test_issued_tokens_carry_only_the_current_spelling_and_known_roles():
    token = issue_token(HS, person_id="p", roles=["organizer", "organiser", "volunteer"])
    assert jwt.decode(token, options={"verify_signature": False})["roles"] == ["organiser", "volunteer"]
    with pytest.raises(ValueError, match="unknown roles \\['superuser'\\]"):
        issue_token(HS, person_id="p", roles=["superuser"])
