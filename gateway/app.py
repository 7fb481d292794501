"""The gateway's HTTP app: authentication at the edge; the services behind it verify again."""

from __future__ import annotations

import flask
import marshmallow as ma
from flask.views import MethodView
from flask_smorest import Blueprint

from services.kernel import settings as settings_module
from services.kernel.config import GatewaySettings
from services.kernel.logs import configure_logging
from services.kernel.web import Schema, create_base_app, current_principal


class PrincipalSchema(Schema):
    person_id = ma.fields.String()
    name = ma.fields.String()
    roles = ma.fields.List(ma.fields.String())
    community = ma.fields.String(allow_none=True)


def load_settings(environ=None, **overrides) -> GatewaySettings:
    return settings_module.load(GatewaySettings, "GATEWAY", environ, **overrides)


def create_app(settings: GatewaySettings) -> flask.Flask:
    app, api = create_base_app(
        "gateway", settings, title="共同缔造 public API", version="v1",
        description="The one public API of the co-creation platform for resident and staff apps.",
        max_body_bytes=settings.max_body_bytes,
    )
    app.extensions["cocreate.gateway_settings"] = settings
    blp = Blueprint("identity", __name__, url_prefix="/api/v1", description="Who is calling")

    @blp.route("/whoami")
    class WhoAmI(MethodView):
        @blp.response(200, PrincipalSchema)
        def get(self):
            """The caller as the verified token describes them"""
            principal = current_principal()
            return {"person_id": principal.person_id, "name": principal.name,
                    "roles": sorted(principal.roles), "community": principal.community}

    api.register_blueprint(blp)
    return app


def build() -> flask.Flask:
    """Entry for gunicorn (``gateway.app:build()``): settings from the environment."""
    settings = load_settings()
    configure_logging("gateway", settings.log_level)
    return create_app(settings)
