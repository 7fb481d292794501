"""One vocabulary of roles (issue 15): defined once in the domain kernel, spelt ``organiser``, accepted
alike by the services and the gateway's users file, and published in the OpenAPI documents."""

from __future__ import annotations

import importlib
import json

import flask
import pytest

from gateway.tokens import hash_password, load_users
from services.kernel import model
from services.kernel.model import LEGACY_ROLE_ALIASES, ROLE_MEANINGS, ROLES, canonical_role, role_names
from services.kernel.web import ANY_ROLE, BEARER_SCHEME, roles
from tests.support.apps import blueprints_app

SERVICES = ("projects", "volunteers", "feedback")
PASSWORD_HASH = hash_password("pw", iterations=1_000)


def test_the_roles_are_defined_once_each_with_its_meaning_in_chinese_and_english():
    assert ROLES == ("resident", "representative", "volunteer", "grid_worker", "cadre", "organiser", "admin")
    assert tuple(ROLE_MEANINGS) == ROLES
    for role, (zh, en) in ROLE_MEANINGS.items():
        assert zh and en and "\n" not in zh + en, role
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh), role


def test_the_legacy_spelling_is_an_alias_never_a_role():
    assert LEGACY_ROLE_ALIASES == {"organizer": "organiser"}
    assert "organizer" not in ROLES
    assert canonical_role("organizer") == canonical_role("organiser") == "organiser"
    assert canonical_role("superuser") is None
    with pytest.raises(ValueError, match="organizer"):
        role_names("organizer")


ROLE_CONSTANTS = {
    "services.projects.domain": ("STAFF", "FIELD_STAFF", "RESIDENTS"),
    "services.volunteers.domain": ("STAFF", "ORGANISERS", "VOLUNTEERS"),
    "services.feedback.domain": ("STAFF", "RATERS", "CASE_HANDLERS"),
    "services.kernel.privacy": ("STAFF_ROLES",),
    "services.kernel.history": ("STAFF_ROLES",),
}


def role_constants():
    """Every tuple of role names the services and the kernel gate with."""
    return {f"{module}.{name}": getattr(importlib.import_module(module), name)
            for module, names in ROLE_CONSTANTS.items() for name in names}


def test_the_services_role_constants_name_only_roles():
    constants = role_constants()
    assert len(constants) == 11
    for where, value in constants.items():
        assert value and set(value) <= set(ROLES), where


def service_document(service: str) -> dict:
    _app, smorest = blueprints_app(service)
    return smorest.spec.to_dict()


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_names_only_roles_of_the_platform(service):
    gates = [op["x-roles"] for ops in service_document(service)["paths"].values() for op in ops.values()
             if isinstance(op, dict) and "x-roles" in op]
    assert gates
    for allowed in gates:
        assert set(allowed) <= set(ROLES) | {ANY_ROLE}, allowed


def test_a_gate_naming_no_role_of_the_platform_fails_at_once():
    blueprint = flask.Blueprint("b", __name__)
    blueprint.doc = lambda **_: (lambda view: view)
    with pytest.raises(ValueError, match="organizer"):
        roles(blueprint, "cadre", "organizer")
    with pytest.raises(ValueError):
        roles(blueprint)
    assert roles(blueprint, "organiser", "cadre")(lambda: "ok")


def test_the_openapi_documents_describe_the_token_with_the_same_roles():
    assert BEARER_SCHEME["x-roles"] == {role: {"zh": zh, "en": en} for role, (zh, en) in ROLE_MEANINGS.items()}
    described = BEARER_SCHEME["description"]
    for role in ROLES:
        assert f"- `{role}` — " in described
    assert "`organizer` is read as `organiser`" in described
    for claim in ("sub", "name", "roles", "community", "aud", "iss", "iat", "exp", "jti"):
        assert f"`{claim}`" in described


def test_every_app_publishes_the_bearer_scheme():
    from services.kernel.config import AuthSettings
    from services.kernel.web import create_base_app
    from tests.conftest import TEST_SECRET

    app, api = create_base_app("roles", AuthSettings(jwt_secret=TEST_SECRET), title="roles")
    assert api.spec.to_dict()["components"]["securitySchemes"]["bearerAuth"] == BEARER_SCHEME


# -- the users file --------------------------------------------------------------------------------

def users_file(tmp_path, *roles_of_users: list[str]) -> str:
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": [
        {"username": f"u{i}", "password_hash": PASSWORD_HASH, "person_id": f"p{i}", "name": f"用户{i}",
         "roles": user_roles, "community": "xinyang"} for i, user_roles in enumerate(roles_of_users)]}),
        encoding="utf-8")
    return str(path)


def test_the_users_file_accepts_every_role_the_services_accept(tmp_path):
    users = load_users(users_file(tmp_path, ["volunteer", "resident"], *[[role] for role in ROLES]))
    assert users["u0"].roles == ("volunteer", "resident")
    assert [users[f"u{i + 1}"].roles for i in range(len(ROLES))] == [(role,) for role in ROLES]


def test_the_users_file_reads_the_legacy_spelling_as_organiser(tmp_path):
    users = load_users(users_file(tmp_path, ["organizer"], ["organizer", "organiser", "resident"]))
    assert users["u0"].roles == ("organiser",)
    assert users["u1"].roles == ("organiser", "resident")


def test_the_users_file_refuses_an_unknown_role_clearly(tmp_path):
    path = users_file(tmp_path, ["resident"], ["resident", "superuser"])
    with pytest.raises(ValueError) as refused:
        load_users(path)
    message = str(refused.value)
    assert path in message and "user u1" in message and "['superuser']" in message
    assert f"the roles are: {', '.join(ROLES)}" in message
    assert "'organizer' is read as 'organiser'" in message


@pytest.mark.parametrize("given", ["resident", [["resident"]], [None]])
def test_the_users_file_refuses_roles_that_are_not_a_list_of_names(tmp_path, given):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": [{"username": "u", "password_hash": PASSWORD_HASH, "person_id": "p",
                                           "name": "n", "roles": given}]}), encoding="utf-8")
    with pytest.raises(ValueError, match="roles must be a list of role names"):
        load_users(str(path))


def test_the_kernel_module_holds_the_one_definition():
    import gateway.tokens
    import services.kernel.auth
    import services.kernel.web

    assert gateway.tokens.ROLES is services.kernel.auth.ROLES is model.ROLES
    assert not hasattr(services.kernel.web, "PLATFORM_ROLES")  # no second list
