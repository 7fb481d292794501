"""Signing in through an identity provider with OpenID Connect (``WEB_OIDC_ISSUER`` set), over real
HTTP: a local OpenID provider (``oidc-provider-mock`` requiring PKCE, :mod:`tests.support.oidc_provider`)
as a process, the real gateway (RS256, trusting the provider's JWKS, no users file) and the web client
and the services as processes (the ``Procfile``'s commands), and a ``requests`` session as the visitor's browser,
following each redirect by hand to check it.

The provider's tokens live 8 seconds here, so that a test can see the gateway answer
``token_expired`` and the web client refresh the tokens (or ask the person to sign in again).
"""

from __future__ import annotations

import base64
import re
import sqlite3
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support.broker import free_port
from tests.support.oidc_provider import CLIENT_ID, Provider
from tests.support.platform import LocalPlatform
from web import config

TOKEN_SECONDS = 8
APPS = ("projects", "volunteers", "feedback", "gateway", "web")
WANG = {"sub": "oidc-wang", "name": "王小明", "roles": ["resident"], "community": "xinyang"}
LI = {"sub": "oidc-li", "name": "李阿姨", "roles": ["resident", "volunteer"], "community": "xinyang"}
ZHAO = {"sub": "oidc-zhao", "name": "赵大伯", "roles": ["resident"], "community": "xinyang"}
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
CANCELLED_ZH = "您已在统一身份认证页面取消登录，当前未登录。"
CANCELLED_EN = "Sign-in was cancelled at the identity provider. You are not signed in."
STALE_ZH = "此登录链接已失效或来自其他浏览器，请重新登录。"
UNAVAILABLE_ZH = "登录服务暂时不可用，请稍后再试。"
REFUSED_ZH = "平台未接受此次登录，请告知社区工作人员。"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The provider, the three services (the gateway is ready once it knows their documents), the
    gateway and the web client, one worker each; no relays or consumers."""
    workdir = tmp_path_factory.mktemp("web-oidc")
    with Provider([WANG, LI, ZHAO], workdir / "provider.log", token_seconds=TOKEN_SECONDS) as provider:
        env = {**provider.env(gateway_token="id_token"), "GUNICORN_WORKERS": "1", "GATEWAY_THREADS": "4",
               "WEB_SECRET_KEY": "oidc-integration-key-0123456789"}
        with LocalPlatform(workdir, env=env, only=APPS) as platform:
            yield provider, platform


def web_url(stack) -> str:
    return stack[1].url("web")


def start_signin(browser: requests.Session, stack, next_page: str = "/me") -> tuple[str, dict]:
    """``/signin`` → the provider's authorization URL and its parameters."""
    reply = browser.get(f"{web_url(stack)}/signin", params={"next": next_page}, allow_redirects=False)
    assert reply.status_code == 302, reply.text
    location = reply.headers["Location"]
    assert location.startswith(stack[0].issuer + "/oauth2/authorize?"), location
    return location, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def authorize(location: str, sub: str) -> str:
    """What the person does on the provider's page: sign in as ``sub``; the provider's redirect."""
    reply = requests.post(location, data={"sub": sub}, allow_redirects=False, timeout=10)
    assert reply.status_code == 302, reply.text
    return reply.headers["Location"]


def sign_in(browser: requests.Session, stack, user: dict, next_page: str = "/me") -> requests.Response:
    """The whole flow; the web client's answer to the callback (a redirect to ``next``)."""
    location, _ = start_signin(browser, stack, next_page)
    callback = authorize(location, user["sub"])
    return browser.get(callback, allow_redirects=False)


def session_rows(stack) -> dict[str, bytes]:
    with sqlite3.connect(stack[1].data_dir / "web.db") as connection:
        return {sid: bytes(data) for sid, data in connection.execute("SELECT session_id, data FROM web_sessions")}


def row_of(browser: requests.Session, stack) -> bytes:
    sid = browser.cookies.get("cocreate_session")
    return next(data for key, data in session_rows(stack).items() if key.endswith(sid))


def test_the_code_flow_with_pkce_signs_in_with_the_providers_token_kept_on_the_server(stack):
    provider, _platform = stack
    browser = requests.Session()
    browser.get(web_url(stack) + "/")
    anonymous_sid = browser.cookies.get("cocreate_session")
    before = provider.pkce_counts()

    location, params = start_signin(browser, stack, "/me")
    assert params["response_type"] == "code" and params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == f"{web_url(stack)}/signin/callback"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["state"] and params["nonce"] and "code_verifier" not in params
    assert set(params["scope"].split()) == {"openid", "profile"}

    callback = authorize(location, WANG["sub"])
    assert callback.startswith(f"{web_url(stack)}/signin/callback?") and "code=" in callback
    landed = browser.get(callback, allow_redirects=False)
    assert landed.status_code == 302 and landed.headers["Location"] == "/me", landed.text
    assert provider.pkce_counts()["verified"] == before["verified"] + 1  # the verifier matched the challenge

    sid = browser.cookies.get("cocreate_session")
    assert sid and sid != anonymous_sid  # a new session id at sign-in
    for cookie in browser.cookies:  # the browser holds the session id and nothing else of the sign-in
        assert "eyJ" not in cookie.value, cookie.name
    row = row_of(browser, stack)
    assert b"eyJ" in row  # the provider's ID token is in the session row, on the server
    page = browser.get(web_url(stack) + "/me")
    assert page.status_code == 200
    assert "王小明" in page.text  # the name as the gateway read it from the provider's token
    assert "eyJ" not in page.text and "password" not in page.text


def test_the_gateway_verifies_the_providers_id_token_as_a_bearer_token(stack):
    provider, platform = stack
    id_token = provider.tokens_for(LI["sub"])["id_token"]
    header = id_token.split(".")[0]
    assert "kid" not in base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)).decode()  # see auth.py
    who = requests.get(platform.url("gateway") + "/api/v1/whoami", timeout=10,
                       headers={"Authorization": f"Bearer {id_token}"})
    assert who.status_code == 200, who.text
    assert who.json() == {"person_id": "oidc-li", "name": "李阿姨", "roles": ["resident", "volunteer"],
                          "community": "xinyang"}
    forged = id_token[:-4] + ("AAAA" if not id_token.endswith("AAAA") else "BBBB")
    assert requests.get(platform.url("gateway") + "/api/v1/whoami", timeout=10,
                        headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert requests.post(platform.url("gateway") + "/api/v1/auth/token", json={"username": "a", "password": "b"},
                         timeout=10).status_code == 404  # no users file when a provider signs people in


def test_the_password_form_is_not_offered(stack):
    browser = requests.Session()
    page = browser.get(web_url(stack) + "/signin", allow_redirects=False)
    assert page.status_code == 302 and page.headers["Location"].startswith(stack[0].issuer)
    boosted = browser.get(web_url(stack) + "/signin", headers={"HX-Request": "true"}, allow_redirects=False)
    assert boosted.headers["HX-Redirect"].startswith(stack[0].issuer + "/oauth2/authorize?")  # a full navigation


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/x", "/\\evil.example", "/\t/evil.example"])
def test_next_goes_only_to_a_path_of_this_site(stack, target):
    browser = requests.Session()
    landed = sign_in(browser, stack, ZHAO, next_page=target)
    assert landed.status_code == 302 and landed.headers["Location"] == "/", landed.headers


def test_a_callback_whose_state_is_not_this_sessions_is_refused(stack):
    browser = requests.Session()
    location, params = start_signin(browser, stack)
    callback = authorize(location, ZHAO["sub"])
    code = parse_qs(urlsplit(callback).query)["code"][0]
    forged = browser.get(f"{web_url(stack)}/signin/callback", params={"code": code, "state": "not-the-state"},
                         allow_redirects=False)
    assert forged.status_code == 400 and STALE_ZH in forged.text
    # a browser that did not start this sign-in (login CSRF: the attacker's code in the victim's browser)
    other = requests.Session()
    replayed = other.get(callback, allow_redirects=False)
    assert replayed.status_code == 400 and STALE_ZH in replayed.text
    assert other.get(web_url(stack) + "/me", allow_redirects=False).headers["Location"].startswith("/signin")


def test_a_person_who_declines_at_the_provider_gets_a_clear_page(stack):
    browser = requests.Session()
    location, _ = start_signin(browser, stack)
    denied = requests.post(location, data={"action": "deny"}, allow_redirects=False, timeout=10)
    assert "error=access_denied" in denied.headers["Location"]
    page = browser.get(denied.headers["Location"], allow_redirects=False)
    assert page.status_code == 403 and CANCELLED_ZH in page.text and 'lang="zh-CN"' in page.text
    assert "Traceback" not in page.text
    browser.cookies.set("lang", "en")
    location, _ = start_signin(browser, stack)
    denied = requests.post(location, data={"action": "deny"}, allow_redirects=False, timeout=10)
    page = browser.get(denied.headers["Location"], allow_redirects=False)
    assert page.status_code == 403 and CANCELLED_EN in page.text


def test_an_expired_token_is_refreshed_then_a_refused_refresh_asks_to_sign_in_again(stack):
    provider, _platform = stack
    browser = requests.Session()
    assert sign_in(browser, stack, LI).status_code == 302
    first = row_of(browser, stack)
    time.sleep(TOKEN_SECONDS + 1.5)  # the ID token the gateway was given has expired
    page = browser.get(web_url(stack) + "/me", allow_redirects=False)
    assert page.status_code == 200 and "李阿姨" in page.text, page.headers  # refreshed, asked again
    assert row_of(browser, stack) != first

    requests.post(f"{provider.issuer}/users/{LI['sub']}/revoke-tokens", timeout=10).raise_for_status()
    time.sleep(TOKEN_SECONDS + 1.5)
    page = browser.get(web_url(stack) + "/me", allow_redirects=False)
    assert page.status_code == 302 and page.headers["Location"].startswith("/signin?next=/me"), page.text
    assert b"eyJ" not in row_of(browser, stack)  # the session's tokens are gone


def test_signing_out_deletes_the_session_and_ends_the_providers(stack):
    browser = requests.Session()
    sign_in(browser, stack, WANG)
    page = browser.get(web_url(stack) + "/me")
    signed_in_sid = browser.cookies.get("cocreate_session")
    token = CSRF_INPUT.search(page.text).group(1)
    # The sign-out form's redirect to the provider is allowed by the page's CSP, and only that.
    issuer = urlsplit(stack[0].issuer)
    assert f"form-action 'self' {issuer.scheme}://{issuer.netloc};" in page.headers["Content-Security-Policy"]
    out = browser.post(web_url(stack) + "/signout", data={"csrf_token": token}, allow_redirects=False,
                       headers={"Referer": web_url(stack) + "/me"})
    assert out.status_code == 302, out.text
    location = out.headers["Location"]
    assert location.startswith(stack[0].issuer + "/oauth2/end_session?"), location
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["post_logout_redirect_uri"] == web_url(stack) + "/" and query["client_id"] == CLIENT_ID
    assert query["id_token_hint"].startswith("eyJ")
    assert not any(key.endswith(signed_in_sid) for key in session_rows(stack))
    assert browser.get(web_url(stack) + "/me", allow_redirects=False).headers["Location"].startswith("/signin")


def test_the_provider_down_gives_a_clear_page_not_a_500(stack, tmp_path):
    """Its own provider, stopped between the redirect and the callback; and a web client whose
    provider does not answer at all."""
    from web.app import create_app

    gateway = stack[1].url("gateway")
    with Provider([ZHAO], tmp_path / "provider.log") as provider:
        settings = config.load({"WEB_SECRET_KEY": "oidc-integration-key-0123456789", "WEB_COOKIE_SECURE": "false",
                                "WEB_GATEWAY_URL": gateway, "WEB_DATA_DIR": str(tmp_path / "var"),
                                **{k: v for k, v in provider.env().items() if k.startswith("WEB_")}})
        app = create_app(settings)
        browser = app.test_client()
        reply = browser.get("/signin?next=/me")
        assert reply.status_code == 302
        callback = authorize(reply.headers["Location"], ZHAO["sub"])
    page = browser.get(callback[callback.index("/signin/callback"):])  # the provider has stopped
    assert page.status_code == 503 and UNAVAILABLE_ZH in page.get_data(as_text=True)

    closed = f"http://127.0.0.1:{free_port()}"
    settings = config.load({"WEB_SECRET_KEY": "oidc-integration-key-0123456789", "WEB_COOKIE_SECURE": "false",
                            "WEB_GATEWAY_URL": gateway, "WEB_DATA_DIR": str(tmp_path / "var2"),
                            "WEB_OIDC_ISSUER": closed, "WEB_OIDC_CLIENT_ID": CLIENT_ID})
    page = create_app(settings).test_client().get("/signin")
    assert page.status_code == 503 and UNAVAILABLE_ZH in page.get_data(as_text=True)


def test_a_token_the_gateway_does_not_accept_is_a_clear_page(stack, tmp_path):
    """The provider's access tokens are opaque: presenting them (``WEB_OIDC_GATEWAY_TOKEN=access_token``)
    is refused by the gateway, and the person is told, not signed in."""
    from web.app import create_app

    provider, platform = stack
    settings = config.load({"WEB_SECRET_KEY": "oidc-integration-key-0123456789", "WEB_COOKIE_SECURE": "false",
                            "WEB_GATEWAY_URL": platform.url("gateway"), "WEB_DATA_DIR": str(tmp_path / "var"),
                            **{k: v for k, v in provider.env(gateway_token="access_token").items()
                               if k.startswith("WEB_")}})
    browser = create_app(settings).test_client()
    reply = browser.get("/signin")
    callback = authorize(reply.headers["Location"], ZHAO["sub"])
    page = browser.get(callback[callback.index("/signin/callback"):])
    assert page.status_code == 502 and REFUSED_ZH in page.get_data(as_text=True)
    assert browser.get("/me").status_code == 302


def test_the_settings_name_the_variable_that_is_missing():
    base = {"WEB_SECRET_KEY": "oidc-integration-key-0123456789"}
    assert config.load(base).oidc_issuer == ""  # local sign-in, as before
    with pytest.raises(config.SettingsError, match="WEB_OIDC_CLIENT_ID"):
        config.load({**base, "WEB_OIDC_ISSUER": "https://id.example"})
    with pytest.raises(config.SettingsError, match="WEB_OIDC_GATEWAY_TOKEN"):
        config.load({**base, "WEB_OIDC_ISSUER": "https://id.example", "WEB_OIDC_CLIENT_ID": "c",
                     "WEB_OIDC_GATEWAY_TOKEN": "both"})
    with pytest.raises(config.SettingsError, match="WEB_OIDC_SCOPES"):
        config.load({**base, "WEB_OIDC_ISSUER": "https://id.example", "WEB_OIDC_CLIENT_ID": "c",
                     "WEB_OIDC_SCOPES": "profile"})
    loaded = config.load({**base, "WEB_OIDC_ISSUER": "https://id.example", "WEB_OIDC_CLIENT_ID": "c"})
    assert (loaded.oidc_scopes, loaded.oidc_gateway_token, loaded.oidc_client_secret) == (
        "openid profile", "access_token", "")
