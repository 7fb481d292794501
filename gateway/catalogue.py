"""What the public API offers: every service route under ``/api/v1`` and one OpenAPI document.

The services' own API definitions are the contract. At start the gateway builds each service's
app in memory (over a scratch SQLite file, removed at once) to read its URL rules and its
OpenAPI document; it routes ``/api/v1/<path>`` to the service owning ``<path>`` and merges the
documents into its own, with schema, response and tag names prefixed by the service. Each
service's admin history routes (``/events``, ``/streams/...``) are published as
``/api/v1/admin/<service>/...`` because every service has them.
"""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from dataclasses import dataclass
from typing import Any

from werkzeug.routing import Map, Rule

from services.feedback.service import DEFINITION as FEEDBACK
from services.kernel.config import ServiceSettings
from services.kernel.service import ServiceDefinition, create_service_app
from services.projects.service import DEFINITION as PROJECTS
from services.volunteers.service import DEFINITION as VOLUNTEERS

PREFIX = "/api/v1"
SERVICES: dict[str, ServiceDefinition] = {"projects": PROJECTS, "volunteers": VOLUNTEERS, "feedback": FEEDBACK}
OPERATIONAL = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/static")
ADMIN = ("/events", "/streams")
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Target:
    service: str
    rule: str  # the service's own rule, e.g. /projects/<project_id>/cosignatures


def public_rule(service: str, rule: str) -> str:
    if rule.startswith(ADMIN):
        return f"/admin/{service}{rule}"
    return rule


def service_path(service: str, public_path: str) -> str:
    admin = f"/admin/{service}"
    return public_path[len(admin):] if public_path.startswith(admin + "/") else public_path


class Catalogue:
    def __init__(self) -> None:
        rules: list[Rule] = []
        self.specs: dict[str, dict[str, Any]] = {}
        for name, definition in SERVICES.items():
            with tempfile.TemporaryDirectory(prefix="cocreate-catalogue-") as scratch:
                settings = ServiceSettings(service=name, database_url=f"sqlite:///{scratch}/{name}.db",
                                           jwt_secret="x" * 32)
                app = create_service_app(definition, settings)
                app.extensions["cocreate.container"].store.engine.dispose()
            with app.app_context():
                self.specs[name] = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
            for rule in app.url_map.iter_rules():
                if rule.rule.startswith(OPERATIONAL) or rule.endpoint == "static":
                    continue
                methods = sorted(m for m in rule.methods or () if m not in ("HEAD", "OPTIONS"))
                rules.append(Rule(public_rule(name, rule.rule), methods=methods,
                                  endpoint=Target(name, rule.rule)))
        self.map = Map(rules, strict_slashes=False)

    def adapter(self):
        return self.map.bind("gateway")

    def openapi_parts(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """(paths, schemas, responses, tags) of every service, renamed for the merged document."""
        paths, schemas, responses, tags = {}, {}, {}, []
        for name, spec in self.specs.items():
            label = name.capitalize()
            components = spec.get("components", {})
            text = json.dumps({"paths": spec.get("paths", {}), "schemas": components.get("schemas", {}),
                               "responses": components.get("responses", {})}, ensure_ascii=False, default=_plain)
            for schema in components.get("schemas", {}):
                text = text.replace(f'"#/components/schemas/{schema}"', f'"#/components/schemas/{label}{schema}"')
            for response in components.get("responses", {}):
                text = text.replace(f'"#/components/responses/{response}"',
                                    f'"#/components/responses/{label}{response}"')
            renamed = json.loads(text)
            for path, operations in renamed["paths"].items():
                for method, operation in operations.items():
                    if method in METHODS:
                        operation["tags"] = [f"{name} · {tag}" for tag in operation.get("tags", [])]
                        operation["operationId"] = f"{name}_{method}_{path}".replace("/", "_").replace(
                            "{", "").replace("}", "")
                        if method == "post":
                            operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
                paths[PREFIX + public_rule(name, path)] = operations
            schemas.update({f"{label}{k}": v for k, v in renamed["schemas"].items()})
            responses.update({f"{label}{k}": v for k, v in renamed["responses"].items()})
            tags += [{**tag, "name": f"{name} · {tag['name']}"} for tag in spec.get("tags", [])]
        return paths, schemas, responses, tags


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Send the same key again to retry safely: the first answer is returned again "
                   "(kept 24 hours); another body with the same key is a 422 (idempotency_key_reused)."}


def _plain(value: Any) -> Any:
    """Spec values JSON does not know (a Decimal bound, say) as numbers or strings."""
    return float(value) if isinstance(value, Decimal) else str(value)
