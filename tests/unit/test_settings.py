"""Typed settings from environment variables: lookup order, parsing errors naming the variable,
validation of the auth settings, defaults derived from other settings, and the documentation rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.kernel import settings as settings_module
from services.kernel.config import AuthSettings, GatewaySettings, ServiceSettings
from services.kernel.settings import SettingsError, describe, load, setting
from tests.conftest import TEST_SECRET

BASE = {"COCREATE_JWT_SECRET": TEST_SECRET}


def load_service(environ: dict[str, str], **overrides) -> ServiceSettings:
    return load(ServiceSettings, "PROJECTS", environ, service="projects", **overrides)


@dataclasses.dataclass(frozen=True)
class NeedsValue:
    """A settings class with a required field (the platform's classes have defaults everywhere)."""

    endpoint: str = setting(doc="required: no default")
    retries: int = setting(2, doc="an int")


# -- lookup order -----------------------------------------------------------------------------

def test_defaults_apply_when_nothing_is_set():
    loaded = load_service(dict(BASE))
    assert loaded.service == "projects"
    assert loaded.jwt_secret == TEST_SECRET
    assert loaded.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert loaded.relay_batch_size == 2000
    assert loaded.kafka_create_topics is True
    assert loaded.data_dir == Path("var")


def test_prefixed_variable_wins_over_platform_variable():
    loaded = load_service({**BASE, "COCREATE_LOG_LEVEL": "DEBUG", "PROJECTS_LOG_LEVEL": "WARNING",
                           "COCREATE_RELAY_BATCH_SIZE": "10", "PROJECTS_RELAY_BATCH_SIZE": "20"})
    assert loaded.log_level == "WARNING"
    assert loaded.relay_batch_size == 20


def test_platform_variable_used_when_prefixed_one_is_absent_or_empty():
    loaded = load_service({**BASE, "COCREATE_LOG_LEVEL": "DEBUG", "PROJECTS_LOG_LEVEL": "",
                           "COCREATE_RELAY_BATCH_SIZE": "10"})
    assert loaded.log_level == "DEBUG"
    assert loaded.relay_batch_size == 10


def test_other_services_prefix_is_ignored():
    loaded = load_service({**BASE, "VOLUNTEERS_LOG_LEVEL": "ERROR"})
    assert loaded.log_level == "INFO"


def test_alias_kafka_bootstrap_servers_is_honoured():
    loaded = load_service({**BASE, "KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9092,kafka-1:9092"})
    assert loaded.kafka_bootstrap_servers == "kafka-0:9092,kafka-1:9092"


def test_prefixed_and_platform_names_win_over_alias():
    loaded = load_service({**BASE, "KAFKA_BOOTSTRAP_SERVERS": "alias:9092",
                           "COCREATE_KAFKA_BOOTSTRAP_SERVERS": "platform:9092"})
    assert loaded.kafka_bootstrap_servers == "platform:9092"
    loaded = load_service({**BASE, "KAFKA_BOOTSTRAP_SERVERS": "alias:9092",
                           "COCREATE_KAFKA_BOOTSTRAP_SERVERS": "platform:9092",
                           "PROJECTS_KAFKA_BOOTSTRAP_SERVERS": "own:9092"})
    assert loaded.kafka_bootstrap_servers == "own:9092"


def test_typed_values_are_parsed():
    loaded = load_service({**BASE, "PROJECTS_KAFKA_CREATE_TOPICS": "off", "COCREATE_RELAY_IDLE_SECONDS": "0.25",
                           "PROJECTS_DATA_DIR": "/srv/data", "PROJECTS_HEALTH_PORT": "9100"})
    assert loaded.kafka_create_topics is False
    assert loaded.relay_idle_seconds == 0.25
    assert loaded.data_dir == Path("/srv/data")
    assert loaded.health_port == 9100


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("YES", True), (" on ", True),
    ("0", False), ("False", False), ("no", False), ("off", False),
])
def test_bool_spellings(raw, expected):
    assert load_service({**BASE, "PROJECTS_KAFKA_CREATE_TOPICS": raw}).kafka_create_topics is expected


def test_overrides_bypass_the_environment():
    loaded = load_service({**BASE, "PROJECTS_LOG_LEVEL": "WARNING"}, log_level="ERROR")
    assert loaded.log_level == "ERROR"


# -- errors name the variable -------------------------------------------------------------------

def test_missing_required_value_names_the_variable():
    with pytest.raises(SettingsError) as caught:
        load(NeedsValue, "THING", {})
    assert "THING_ENDPOINT" in str(caught.value)
    assert "required" in str(caught.value)


def test_required_value_found_under_platform_name():
    loaded = load(NeedsValue, "THING", {"COCREATE_ENDPOINT": "http://x", "THING_RETRIES": "7"})
    assert loaded == NeedsValue(endpoint="http://x", retries=7)


@pytest.mark.parametrize("variable, raw", [
    ("PROJECTS_RELAY_BATCH_SIZE", "many"),
    ("COCREATE_KAFKA_TOPIC_PARTITIONS", "3.5"),
    ("PROJECTS_KAFKA_CREATE_TOPICS", "maybe"),
    ("COCREATE_RELAY_IDLE_SECONDS", "fast"),
    ("PROJECTS_MAX_BODY_BYTES", "1MB"),
])
def test_invalid_values_name_the_variable(variable, raw):
    with pytest.raises(SettingsError) as caught:
        load_service({**BASE, variable: raw})
    assert variable in str(caught.value)
    assert "invalid" in str(caught.value)


def test_settings_error_is_a_runtime_error():
    assert issubclass(SettingsError, RuntimeError)


# -- validation ---------------------------------------------------------------------------------

def auth_checked(environ: dict[str, str]) -> ServiceSettings:
    """Load a service's settings and check them the way its HTTP app does."""
    loaded = load_service(environ)
    loaded.validate_auth("PROJECTS")
    return loaded


def test_hs256_with_short_secret_fails_naming_the_variable():
    with pytest.raises(SettingsError) as caught:
        auth_checked({"COCREATE_JWT_SECRET": "x" * 31})
    assert "PROJECTS_JWT_SECRET" in str(caught.value)
    assert "32" in str(caught.value)


def test_hs256_without_secret_fails():
    with pytest.raises(SettingsError, match="PROJECTS_JWT_SECRET"):
        auth_checked({})


def test_hs256_secret_of_exactly_32_characters_is_accepted():
    assert auth_checked({"PROJECTS_JWT_SECRET": "s" * 32}).jwt_secret == "s" * 32


def test_rs256_without_key_or_jwks_fails():
    with pytest.raises(SettingsError) as caught:
        auth_checked({"PROJECTS_JWT_ALGORITHM": "RS256"})
    assert "PROJECTS_JWT_PUBLIC_KEY" in str(caught.value)
    assert "PROJECTS_JWT_JWKS_URL" in str(caught.value)


def test_rs256_with_public_key_or_jwks_url_is_accepted():
    with_key = auth_checked({"PROJECTS_JWT_ALGORITHM": "RS256", "COCREATE_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----"})
    assert with_key.jwt_algorithm == "RS256"
    with_jwks = auth_checked({"PROJECTS_JWT_ALGORITHM": "RS256", "COCREATE_JWT_JWKS_URL": "https://idp/jwks"})
    assert with_jwks.jwt_jwks_url == "https://idp/jwks"


def test_unknown_algorithm_fails():
    with pytest.raises(SettingsError, match="PROJECTS_JWT_ALGORITHM"):
        auth_checked({**BASE, "PROJECTS_JWT_ALGORITHM": "none"})


def test_workers_load_service_settings_without_token_settings():
    # Relays, consumers and commands verify no tokens: loading does not check the auth settings.
    loaded = load_service({"PROJECTS_DATABASE_URL": "sqlite:///x.db"})
    assert loaded.jwt_secret == ""
    assert loaded.effective_database_url == "sqlite:///x.db"


def test_service_app_refuses_to_start_without_a_secret(tmp_path):
    from services.projects.service import DEFINITION
    from tests.support.apps import service_app

    with pytest.raises(SettingsError, match="PROJECTS_JWT_SECRET"):
        service_app(DEFINITION, COCREATE_DATA_DIR=str(tmp_path), COCREATE_JWT_SECRET="too-short")


def test_validate_directly():
    ServiceSettings(jwt_secret=TEST_SECRET, service="projects").validate("PROJECTS")
    ServiceSettings(jwt_secret=TEST_SECRET, service="projects").validate_auth("PROJECTS")
    with pytest.raises(SettingsError, match="FEEDBACK_JWT_SECRET"):
        ServiceSettings(jwt_secret="short", service="feedback").validate_auth("FEEDBACK")
    with pytest.raises(SettingsError, match="service name"):
        ServiceSettings(jwt_secret=TEST_SECRET).validate("PROJECTS")
    with pytest.raises(SettingsError, match="PROJECTS_RELAY_BATCH_SIZE"):
        load_service({**BASE, "PROJECTS_RELAY_BATCH_SIZE": "0"})


def test_gateway_settings_validate_too():
    with pytest.raises(SettingsError, match="GATEWAY_JWT_SECRET"):
        load(GatewaySettings, "GATEWAY", {})
    loaded = load(GatewaySettings, "GATEWAY", {**BASE, "GATEWAY_PROJECTS_URL": "http://projects:8000"})
    assert loaded.projects_url == "http://projects:8000"
    assert loaded.volunteers_url == "http://127.0.0.1:8002"


# -- derived values -----------------------------------------------------------------------------

def test_effective_database_url_defaults_to_sqlite_in_data_dir():
    loaded = load_service({**BASE, "COCREATE_DATA_DIR": "/tmp/cocreate-data"})
    assert loaded.effective_database_url == "sqlite:////tmp/cocreate-data/projects.db"
    assert load_service(dict(BASE)).effective_database_url == "sqlite:///var/projects.db"


def test_effective_database_url_prefers_explicit_url():
    loaded = load_service({**BASE, "COCREATE_DATA_DIR": "/tmp/x",
                           "PROJECTS_DATABASE_URL": "postgresql://db/projects"})
    assert loaded.effective_database_url == "postgresql://db/projects"


def test_topic_is_named_after_service():
    assert load_service(dict(BASE)).topic == "projects.events"


# -- documentation ------------------------------------------------------------------------------

def test_describe_lists_every_variable():
    rows = describe(ServiceSettings, "PROJECTS")
    public = [f for f in dataclasses.fields(ServiceSettings) if not f.metadata.get("internal")]
    assert len(rows) == len(public) >= 18
    by_variables = {variables: (default, doc) for variables, default, doc in rows}
    assert by_variables["PROJECTS_DATABASE_URL / COCREATE_DATABASE_URL"][0] == ""
    assert ("PROJECTS_KAFKA_BOOTSTRAP_SERVERS / COCREATE_KAFKA_BOOTSTRAP_SERVERS / KAFKA_BOOTSTRAP_SERVERS"
            in by_variables)
    assert by_variables["PROJECTS_RELAY_BATCH_SIZE / COCREATE_RELAY_BATCH_SIZE"] == (
        "2000", "events published per relay round")
    assert by_variables["PROJECTS_JWT_SECRET / COCREATE_JWT_SECRET"][1].startswith("HS256 secret")


def test_describe_leaves_out_internal_fields():
    variables = " ".join(row[0] for row in describe(ServiceSettings, "PROJECTS"))
    assert "PROJECTS_SERVICE " not in variables + " "
    assert "COCREATE_SERVICE " not in variables + " "


def test_internal_service_name_is_not_read_from_the_environment():
    loaded = load_service({**BASE, "PROJECTS_SERVICE": "feedback", "COCREATE_SERVICE": "volunteers"})
    assert loaded.service == "projects"


def test_describe_without_prefix_lists_platform_names_only():
    rows = describe(AuthSettings, "")
    assert [row[0] for row in rows][:2] == ["COCREATE_JWT_ALGORITHM", "COCREATE_JWT_SECRET"]


def test_env_names_order():
    field = {f.name: f for f in dataclasses.fields(ServiceSettings)}["kafka_bootstrap_servers"]
    assert settings_module.env_names("VOLUNTEERS", field) == [
        "VOLUNTEERS_KAFKA_BOOTSTRAP_SERVERS", "COCREATE_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"]


# -- the shape of topics ------------------------------------------------------------------------

def test_topic_policy_follows_the_kafka_settings_for_services_and_the_gateway_feed():
    environ = {**BASE, "COCREATE_KAFKA_TOPIC_PARTITIONS": "6", "COCREATE_KAFKA_DLQ_PARTITIONS": "2",
               "COCREATE_KAFKA_REPLICATION_FACTOR": "3", "COCREATE_KAFKA_CREATE_TOPICS": "false"}
    for loaded in (load_service(environ), load(GatewaySettings, "GATEWAY", environ)):
        policy = loaded.topic_policy
        assert (policy.create, policy.partitions, policy.dlq_partitions, policy.replication_factor) == (False, 6, 2, 3)
        assert policy.expected_partitions("projects.events") == 6
        assert policy.expected_partitions("projects.events.dlq") == 2
    defaults = load_service(dict(BASE)).topic_policy
    assert (defaults.create, defaults.partitions, defaults.dlq_partitions, defaults.replication_factor) == (True, 3, 1, 1)


@pytest.mark.parametrize("variable", ["KAFKA_TOPIC_PARTITIONS", "KAFKA_DLQ_PARTITIONS", "KAFKA_REPLICATION_FACTOR",
                                      "BROKER_VERIFY_SECONDS"])
def test_topic_shape_and_verify_pace_must_be_positive_for_workers_and_the_feed(variable):
    with pytest.raises(SettingsError, match=f"PROJECTS_{variable}"):
        load_service({**BASE, f"COCREATE_{variable}": "0"})
    with pytest.raises(SettingsError, match=f"GATEWAY_{variable}"):
        load(GatewaySettings, "GATEWAY", {**BASE, f"COCREATE_{variable}": "0"})


def test_relay_rounds_kept_must_be_positive():
    with pytest.raises(SettingsError, match="PROJECTS_RELAY_ROUNDS_KEPT"):
        load_service({**BASE, "PROJECTS_RELAY_ROUNDS_KEPT": "0"})


def test_pipeline_pacing_is_a_setting_of_workers_and_the_feed_from_0_to_1_second():
    assert load_service(dict(BASE)).pipeline_pace_max_seconds == 0.1
    assert load_service({**BASE, "COCREATE_PIPELINE_PACE_MAX_SECONDS": "0"}).pipeline_pace_max_seconds == 0.0
    assert load(GatewaySettings, "GATEWAY", {**BASE, "GATEWAY_PIPELINE_PACE_MAX_SECONDS": "0.5"}
                ).pipeline_pace_max_seconds == 0.5
    for value in ("-0.1", "1.5"):
        with pytest.raises(SettingsError, match="PROJECTS_PIPELINE_PACE_MAX_SECONDS must be between 0 and 1"):
            load_service({**BASE, "PROJECTS_PIPELINE_PACE_MAX_SECONDS": value})
