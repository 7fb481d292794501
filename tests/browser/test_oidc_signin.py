"""Signing in through an identity provider (OpenID Connect), as deployed, in a real browser: a local
OpenID provider (``oidc-provider-mock`` requiring PKCE, :mod:`tests.support.oidc_provider`) whose
tokens carry the platform's claims, and a platform whose gateway and services trust only that
provider's JWKS (RS256, no users file). Its own small platform (the services, the gateway and the
web client; no relays or consumers), for this module only. axe-core on each of our pages the journey
shows; the provider's own pages are not ours to check.
"""

from __future__ import annotations

import re
import uuid

import pytest

from cocreate_client import Client
from tests.browser.conftest import accessibility_violations, text_of
from tests.support.oidc_provider import Provider
from tests.support.platform import LocalPlatform

pytestmark = pytest.mark.browser

APPS = ("projects", "volunteers", "feedback", "gateway", "web")
COMMUNITY = "oidc-xinyang"
RESIDENT = {"sub": "oidc-res-wang", "name": "王秀英", "roles": ["resident"], "community": COMMUNITY}
ADMIN = {"sub": "oidc-admin", "name": "平台管理员", "roles": ["admin"]}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The provider and the platform trusting it, with a community and one proposal by the resident
    (made through the API with the provider's tokens)."""
    workdir = tmp_path_factory.mktemp("oidc-browser")
    with Provider([RESIDENT, ADMIN], workdir / "provider.log") as provider:
        env = {**provider.env(gateway_token="id_token"), "GUNICORN_WORKERS": "1", "GATEWAY_THREADS": "4",
               "WEB_SECRET_KEY": "oidc-browser-key-0123456789", "GATEWAY_TRUSTED_PROXIES": "1"}
        with LocalPlatform(workdir, env=env, only=APPS) as platform:
            gateway = platform.url("gateway")
            admin = Client(gateway, provider.tokens_for(ADMIN["sub"])["id_token"])
            admin.post("/communities", {"community_id": COMMUNITY, "name": "新阳社区（统一身份认证）",
                                        "district": "海沧区", "grids": [{"grid_id": "g1", "name": "第一网格"}]})
            resident = Client(gateway, provider.tokens_for(RESIDENT["sub"])["id_token"])
            title = f"楼道加装扶手 {uuid.uuid4().hex[:6]}"
            resident.propose(community_id=COMMUNITY, grid_id="g1", title=title, category="elderly_care",
                             description="老人上下楼不方便", location="5号楼", estimated_cost_fen=300_000,
                             requested_fen=200_000)
            yield provider, platform, title


@pytest.fixture
def offline(page):
    """Nothing leaves this machine (the provider's page links a stylesheet on a CDN)."""
    page.context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"), lambda route: route.abort())
    return page


def assert_accessible(page) -> None:
    violations = accessibility_violations(page)
    assert violations == [], (page.url, violations)


def test_signing_in_at_the_provider_lands_on_my_page_with_my_data(deployed, offline):
    provider, platform, title = deployed
    page, web = offline, platform.url("web")
    page.goto(f"{web}/me")  # not signed in: to /signin, which sends the browser to the provider
    page.wait_for_url(re.compile(re.escape(provider.issuer) + r"/oauth2/authorize\?"), wait_until="commit")
    assert "code_challenge_method=S256" in page.url and "nonce=" in page.url
    page.get_by_role("button", name=RESIDENT["sub"]).click()  # the provider's page: sign in as this person
    page.wait_for_url(f"{web}/me")
    body = text_of(page)
    assert "欢迎" in body and RESIDENT["name"] in body, body
    assert title in body, body  # my proposal, as the gateway gives it to the provider's token
    assert page.get_attribute("html", "lang") == "zh-CN"
    for cookie in page.context.cookies():  # the provider's tokens never reach the browser
        assert "eyJ" not in cookie["value"], cookie["name"]
    assert "eyJ" not in page.content()
    assert_accessible(page)

    page.get_by_role("button", name="退出登录").click()  # ends the provider's session too
    page.wait_for_url(re.compile(re.escape(provider.issuer) + r"/oauth2/end_session\?"), wait_until="commit")
    page.get_by_role("button", name="End session").click()
    page.wait_for_url(f"{web}/")
    assert "您已退出登录" in text_of(page)
    assert_accessible(page)
    page.goto(f"{web}/me")
    page.wait_for_url(re.compile(re.escape(provider.issuer)), wait_until="commit")  # signed out: asked again


def test_declining_at_the_provider_shows_a_clear_page_in_chinese(deployed, offline):
    provider, platform, _title = deployed
    page, web = offline, platform.url("web")
    page.goto(f"{web}/signin")
    page.wait_for_url(re.compile(re.escape(provider.issuer)), wait_until="commit")
    page.get_by_role("button", name="Deny").click()
    page.wait_for_url(re.compile(re.escape(web) + r"/signin/callback\?error=access_denied"))
    assert "您已在统一身份认证页面取消登录，当前未登录。" in page.inner_text("main")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert_accessible(page)
    assert "退出登录" not in text_of(page)  # not signed in
