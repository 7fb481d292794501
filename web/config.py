"""The web client's settings, read from ``WEB_*`` environment variables (``COCREATE_DATA_DIR`` and
``COCREATE_LOG_LEVEL`` are the platform-wide fallbacks; nothing else is shared with the services —
above all not their database). The web client imports no service
code, so it reads its own settings; ``python -m services.kernel.config_docs`` documents them with
the rest (:func:`describe`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PREFIX, PLATFORM_PREFIX = "WEB", "COCREATE"
LOCAL_SECRET = "local-web-only-secret-change-me-please"


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the variable."""


def _setting(default: Any, doc: str, *, platform_wide: bool = False):
    return dataclasses.field(default=default, metadata={"doc": doc, "platform_wide": platform_wide})


@dataclasses.dataclass(frozen=True)
class WebSettings:
    gateway_url: str = _setting("http://127.0.0.1:8000", "base URL of the gateway (the web client's only upstream)")
    data_dir: Path = _setting(Path("var"), "where the web client's SQLite session database lives when no "
                                           "database URL is set", platform_wide=True)
    database_url: str = _setting("", "the web client's own database, for server-side sessions; default "
                                     "sqlite:///<data_dir>/web.db (PostgreSQL when deployed)")
    secret_key: str = _setting("", "key that signs CSRF tokens (required; `make run` sets a local one)")
    cookie_secure: bool = _setting(True, "session cookie only over HTTPS (false only for local runs over HTTP)")
    session_hours: int = _setting(8, "how long a signed-in session lasts without use (the gateway token's "
                                     "own lifetime still applies)")
    default_community: str = _setting("", "the community `/` opens (empty: a page asking for one)")
    forward_client_address: bool = _setting(True, "send the visitor's address to the gateway as "
                                                  "X-Forwarded-For (the gateway counts rate limits per visitor "
                                                  "when GATEWAY_TRUSTED_PROXIES is 1)")
    trusted_proxies: int = _setting(0, "X-Forwarded-For hops in front of the web client to trust for the "
                                       "visitor's address (1 behind an ingress)")
    live_url: str = _setting("", "where the browser opens the gateway's live stream (`/api/v1/live`) for live "
                                 "pages; default <gateway_url>/api/v1/live (`/api/v1/live` when an ingress serves "
                                 "both on one host); `off` turns live pages off")
    oidc_issuer: str = _setting("", "the identity provider's issuer URL (OpenID Connect; its discovery document is "
                                    "<issuer>/.well-known/openid-configuration); empty: people sign in with a username "
                                    "and password at the gateway's token endpoint (local runs); set: only through the "
                                    "provider")
    oidc_client_id: str = _setting("", "the web client's client id at the identity provider (required with "
                                       "WEB_OIDC_ISSUER)")
    oidc_client_secret: str = _setting("", "its client secret (empty: a public client, PKCE alone)")
    oidc_scopes: str = _setting("openid profile", "scopes asked of the identity provider (must include openid)")
    oidc_gateway_token: str = _setting("access_token", "which of the provider's tokens the web client presents to the "
                                                       "gateway: access_token (a JWT access token whose aud is the "
                                                       "gateway's COCREATE_JWT_AUDIENCE) or id_token (providers whose "
                                                       "access tokens are opaque; aud is the client id)")
    oidc_redirect_uri: str = _setting("", "the sign-in callback registered at the provider, e.g. "
                                          "https://cocreate.example/signin/callback; default /signin/callback on the "
                                          "address the request came to (set it behind an ingress that ends TLS)")
    upstream_timeout_seconds: float = _setting(5.0, "timeout of one call to the gateway")
    log_level: str = _setting("INFO", "log level", platform_wide=True)

    @property
    def effective_database_url(self) -> str:
        url = self.database_url or f"sqlite:///{Path(self.data_dir).resolve()}/web.db"
        for plain in ("postgresql://", "postgres://"):  # psycopg 3 is the driver the platform ships
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain):]
        return url


def _parse(raw: str, kind: type, name: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true/false, got {raw!r}")
        return kind(raw)
    except ValueError as error:
        raise SettingsError(f"environment variable {name} is invalid: {error}") from None


def _kind(field: dataclasses.Field) -> type:
    return {"str": str, "int": int, "bool": bool, "float": float, "Path": Path}[str(field.type)]


def names(field: dataclasses.Field) -> tuple[str, ...]:
    own = f"{PREFIX}_{field.name.upper()}"
    return (own, f"{PLATFORM_PREFIX}_{field.name.upper()}") if field.metadata["platform_wide"] else (own,)


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> WebSettings:
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in dataclasses.fields(WebSettings):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        for name in names(field):
            if environ.get(name) not in (None, ""):
                values[field.name] = _parse(environ[name], _kind(field), name)
                break
    settings = WebSettings(**values)
    if len(settings.secret_key) < 16:
        raise SettingsError("environment variable WEB_SECRET_KEY must be set (16 characters or more)")
    if settings.session_hours < 1:
        raise SettingsError("environment variable WEB_SESSION_HOURS must be >= 1")
    _check_oidc(settings)
    return settings


def _check_oidc(settings: WebSettings) -> None:
    if not settings.oidc_issuer:
        return
    if not settings.oidc_issuer.startswith(("https://", "http://")):
        raise SettingsError("environment variable WEB_OIDC_ISSUER must be an http(s) URL")
    if not settings.oidc_client_id:
        raise SettingsError("environment variable WEB_OIDC_CLIENT_ID is required when WEB_OIDC_ISSUER is set")
    if "openid" not in settings.oidc_scopes.split():
        raise SettingsError("environment variable WEB_OIDC_SCOPES must include openid")
    if settings.oidc_gateway_token not in ("access_token", "id_token"):
        raise SettingsError("environment variable WEB_OIDC_GATEWAY_TOKEN must be access_token or id_token")
    if settings.oidc_redirect_uri and not settings.oidc_redirect_uri.startswith(("https://", "http://")):
        raise SettingsError("environment variable WEB_OIDC_REDIRECT_URI must be an http(s) URL")


def describe() -> list[tuple[str, str, str]]:
    """``(names, default, meaning)`` rows for the configuration page."""
    rows = []
    for field in dataclasses.fields(WebSettings):
        default = field.default
        shown = "" if default in ("", None) else str(default)
        rows.append((" / ".join(names(field)), shown, field.metadata["doc"]))
    return rows
