"""A local OpenID provider for the tests of the web client's sign-in: ``oidc-provider-mock`` (an
Authlib-based provider made for testing: a login form, discovery, JWKS, RS256 ID tokens, refresh
tokens, ``end_session``) run as a process, with the platform's claims (``name``, ``roles``,
``community``) for its users.

oidc-provider-mock 0.3 issues PKCE-less codes happily (it registers no code-challenge check), so
that a client that forgot PKCE would still pass; :class:`RequirePkce` puts the check in front of it,
as a real provider configured to require PKCE does: an authorization request without an S256
``code_challenge`` is refused, and a code is exchanged only with the verifier of its challenge.
``GET /_test/pkce`` counts the exchanges it checked. And a refresh gives a new ID token, as real
providers' do (:func:`_issue_id_tokens_on_refresh`).

    python -m tests.support.oidc_provider --port 9400 --user '{"sub": "...", "name": ..., "roles": [...]}'
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "cocreate-web", "test-client-secret-0123456789"


class RequirePkce:
    """WSGI middleware: PKCE (S256) required at the authorization endpoint, checked at the token endpoint."""

    def __init__(self, app) -> None:
        self.app = app
        self.challenges: dict[str, str] = {}  # code -> its code_challenge
        self.counts = {"verified": 0, "refused": 0}
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/_test/pkce":
            with self.lock:
                return self._json(start_response, "200 OK", dict(self.counts))
        if path == "/oauth2/authorize":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            challenge = query.get("code_challenge", [""])[0]
            if not challenge or query.get("code_challenge_method", [""])[0] != "S256":
                return self._json(start_response, "400 Bad Request",
                                  {"error": "invalid_request", "error_description": "PKCE (S256) is required"})

            def remember(status, headers, exc_info=None):
                for name, value in headers:
                    if name.lower() == "location":
                        code = parse_qs(urlsplit(value).query).get("code", [""])[0]
                        if code:
                            with self.lock:
                                self.challenges[code] = challenge
                return start_response(status, headers, exc_info)

            return self.app(environ, remember)
        if path == "/oauth2/token" and environ.get("REQUEST_METHOD") == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            form = parse_qs(body.decode())
            if form.get("grant_type", [""])[0] == "authorization_code":
                with self.lock:
                    challenge = self.challenges.pop(form.get("code", [""])[0], None)
                verifier = form.get("code_verifier", [""])[0].encode()
                expected = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()
                if challenge is None or not verifier or expected != challenge:
                    with self.lock:
                        self.counts["refused"] += 1
                    return self._json(start_response, "400 Bad Request",
                                      {"error": "invalid_grant", "error_description": "PKCE verification failed"})
                with self.lock:
                    self.counts["verified"] += 1
        return self.app(environ, start_response)

    @staticmethod
    def _json(start_response, status: str, body: dict):
        payload = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]


def _issue_id_tokens_on_refresh(lifetime) -> None:
    """A refresh answers with a new ID token too (OpenID Connect Core 12.2), as Keycloak, Auth0,
    Google and Entra ID do when the scope has ``openid``; oidc-provider-mock 0.3 gives only a new
    access token. Its refresh grant gets Authlib's own ``OpenIDToken`` extension, with the mock's
    keys and claims."""
    from authlib.oidc.core import OpenIDToken
    from oidc_provider_mock import _app

    class RefreshTokenGrant(_app.RefreshTokenGrant):
        def __init__(self, request, server):
            super().__init__(request, server)
            OpenIDToken.__call__(_app.OpenIDCode(require_nonce=False, token_max_age=lifetime), self)

    _app.RefreshTokenGrant = RefreshTokenGrant  # what the mock's setup registers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", action="append", default=[], help="a user's claims as JSON, with its sub")
    parser.add_argument("--token-seconds", type=int, default=3600, help="lifetime of access and ID tokens")
    args = parser.parse_args()
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain HTTP on 127.0.0.1, for tests only
    import oidc_provider_mock
    from oidc_provider_mock import User
    from werkzeug.serving import run_simple

    users = []
    for raw in args.user:
        claims = json.loads(raw)
        users.append(User(sub=claims.pop("sub"), claims=claims))
    from datetime import timedelta

    lifetime = timedelta(seconds=args.token_seconds)
    _issue_id_tokens_on_refresh(lifetime)
    app = oidc_provider_mock.app(require_nonce=True, user_claims=users, access_token_max_age=lifetime)
    app.wsgi_app = RequirePkce(app.wsgi_app)
    run_simple("127.0.0.1", args.port, app, threaded=True, use_debugger=False, use_reloader=False)


class Provider:
    """The provider as a process on a free port: ``with Provider(users) as p: p.issuer``."""

    def __init__(self, users: list[dict], log: Path, *, token_seconds: int = 3600) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.users, self.log, self.token_seconds = users, log, token_seconds
        self.process: subprocess.Popen | None = None

    def env(self, *, gateway_token: str = "id_token") -> dict[str, str]:
        """What the gateway, the services and the web client need to trust and use this provider: its
        ID tokens carry ``aud`` = the client id, so the platform's audience is the client id."""
        return {"COCREATE_JWT_ALGORITHM": "RS256", "COCREATE_JWT_JWKS_URL": f"{self.issuer}/jwks",
                "COCREATE_JWT_ISSUER": self.issuer, "COCREATE_JWT_AUDIENCE": CLIENT_ID,
                "WEB_OIDC_ISSUER": self.issuer, "WEB_OIDC_CLIENT_ID": CLIENT_ID,
                "WEB_OIDC_CLIENT_SECRET": CLIENT_SECRET, "WEB_OIDC_GATEWAY_TOKEN": gateway_token}

    def start(self) -> "Provider":
        command = [sys.executable, "-m", "tests.support.oidc_provider", "--port", str(self.port),
                   "--token-seconds", str(self.token_seconds)]
        for user in self.users:
            command += ["--user", json.dumps(user, ensure_ascii=False)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the OpenID provider exited: {self.log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration", timeout=2) as reply:
                    if json.load(reply).get("issuer") == self.issuer:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"the OpenID provider did not answer: {self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tokens_for(self, sub: str) -> dict:
        """The provider's token answer for ``sub`` (who signs in at once), by the code flow with PKCE
        as a client would go through it — for a test that calls the API as that person."""
        import requests

        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        redirect_uri = "http://127.0.0.1:9/callback"
        query = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect_uri,
                 "scope": "openid profile", "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
                 "code_challenge": challenge, "code_challenge_method": "S256"}
        reply = requests.post(f"{self.issuer}/oauth2/authorize?{urlencode(query)}", data={"sub": sub},
                              allow_redirects=False, timeout=10)
        code = parse_qs(urlsplit(reply.headers["Location"]).query)["code"][0]
        answer = requests.post(f"{self.issuer}/oauth2/token", auth=(CLIENT_ID, CLIENT_SECRET), timeout=10,
                               data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                                     "code_verifier": verifier})
        answer.raise_for_status()
        return answer.json()

    def pkce_counts(self) -> dict:
        with urllib.request.urlopen(f"{self.issuer}/_test/pkce", timeout=5) as reply:
            return json.load(reply)

    def __enter__(self) -> "Provider":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()


if __name__ == "__main__":
    main()
