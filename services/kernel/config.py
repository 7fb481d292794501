"""The settings objects of the platform's processes (services, their workers, the gateway)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from services.kernel.settings import SettingsError, setting

if TYPE_CHECKING:
    from services.kernel.kafka import TopicPolicy


# The licences open data may be published under (SPDX identifier -> title, URL).
OPEN_DATA_LICENCES: dict[str, tuple[str, str]] = {
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International",
                  "https://creativecommons.org/licenses/by/4.0/"),
    "CC-BY-SA-4.0": ("Creative Commons Attribution Share-Alike 4.0 International",
                     "https://creativecommons.org/licenses/by-sa/4.0/"),
    "CC0-1.0": ("Creative Commons Zero v1.0 Universal", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "ODC-By-1.0": ("Open Data Commons Attribution License v1.0", "https://opendatacommons.org/licenses/by/1-0/"),
    "ODbL-1.0": ("Open Data Commons Open Database License v1.0",
                 "https://opendatacommons.org/licenses/odbl/1-0/"),
    "PDDL-1.0": ("Open Data Commons Public Domain Dedication and License v1.0",
                 "https://opendatacommons.org/licenses/pddl/1-0/"),
}


@dataclasses.dataclass(frozen=True)
class AuthSettings:
    """How bearer tokens are verified. HS256 with a shared secret locally, RS256 in production."""

    jwt_algorithm: str = setting("HS256", doc="HS256 (shared secret, local use) or RS256 (production)")
    jwt_secret: str = setting("", doc="HS256 secret, at least 32 characters")
    jwt_public_key: str = setting("", doc="RS256 public key in PEM")
    jwt_jwks_url: str = setting("", doc="RS256 JWKS URL (instead of a public key)")
    jwt_audience: str = setting("cocreate", doc="expected `aud` claim")
    jwt_issuer: str = setting("cocreate", doc="expected `iss` claim")

    def validate(self, prefix: str) -> None:
        self.validate_auth(prefix)

    def validate_auth(self, prefix: str) -> None:
        """Token verification is configured (needed by HTTP apps, not by workers)."""
        if self.jwt_algorithm not in ("HS256", "RS256"):
            raise SettingsError(f"environment variable {prefix}_JWT_ALGORITHM must be HS256 or RS256")
        if self.jwt_algorithm == "HS256" and len(self.jwt_secret) < 32:
            raise SettingsError(
                f"environment variable {prefix}_JWT_SECRET (or COCREATE_JWT_SECRET) must be set to at "
                "least 32 characters when the algorithm is HS256"
            )
        if self.jwt_algorithm == "RS256" and not (self.jwt_public_key or self.jwt_jwks_url):
            raise SettingsError(
                f"environment variable {prefix}_JWT_PUBLIC_KEY or {prefix}_JWT_JWKS_URL is required for RS256"
            )


@dataclasses.dataclass(frozen=True)
class KafkaSettings:
    """How a worker reaches the broker and which topic shape it expects (relays, consumers, the feed).

    Every worker checks at start that each topic it uses exists with these partition counts and
    stops with a message naming the topic otherwise; the relay creates its own missing topics
    when ``kafka_create_topics`` is on (off when Strimzi's ``KafkaTopic``s manage them)."""

    kafka_bootstrap_servers: str = setting(
        "127.0.0.1:9092", aliases=("KAFKA_BOOTSTRAP_SERVERS",), doc="Kafka bootstrap servers")
    kafka_create_topics: bool = setting(True, doc="the relay creates its missing topics (off when Strimzi manages them)")
    kafka_topic_partitions: int = setting(3, doc="partitions of every event topic (created with, and checked at start)")
    kafka_dlq_partitions: int = setting(1, doc="partitions of every dead-letter topic (created with, and checked at start)")
    kafka_replication_factor: int = setting(1, doc="replication factor of the topics the relay creates")
    broker_verify_seconds: float = setting(
        2.0, doc="how often a relay, and every consumer, compares what the broker holds with what it "
                 "acknowledged or committed (a relay also before its first round after a pause); consumer lag "
                 "is reported at the same pace")
    pipeline_pace_max_seconds: float = setting(
        0.1, doc="the longest a relay, or a consumer, waits after a busy round before the next, so that the next "
                 "gathers more (2 ms for each event the round held: `services.kernel.kafka.paced_wait`); 0: none, "
                 "at most 1. Fewer, fuller rounds cost the relays, consumers and broker less per event under load, "
                 "and add up to this to an event's way from service to service then")

    def validate_kafka(self, prefix: str) -> None:
        for name in ("kafka_topic_partitions", "kafka_dlq_partitions", "kafka_replication_factor"):
            if getattr(self, name) < 1:
                raise SettingsError(f"environment variable {prefix}_{name.upper()} must be >= 1")
        if self.broker_verify_seconds <= 0:
            raise SettingsError(f"environment variable {prefix}_BROKER_VERIFY_SECONDS must be > 0")
        if not 0 <= self.pipeline_pace_max_seconds <= 1:
            raise SettingsError(f"environment variable {prefix}_PIPELINE_PACE_MAX_SECONDS must be between 0 and 1")

    @property
    def topic_policy(self) -> "TopicPolicy":
        from services.kernel.kafka import TopicPolicy

        return TopicPolicy(self.kafka_create_topics, self.kafka_topic_partitions, self.kafka_replication_factor,
                           self.kafka_dlq_partitions)


@dataclasses.dataclass(frozen=True)
class KeyStoreSettings:
    """Where the personal-information keys live (:mod:`services.kernel.personal`): one key store for
    the whole platform, outside every event store, reached by the services, their workers and the
    gateway (never by the broker)."""

    keystore_url: str = setting(
        "", doc="the key store's database (the keys that seal personal fields, and the erasure log), the same for "
                "every service, worker and the gateway; default sqlite:///<data_dir>/keys.db. Back it up on its "
                "own, with a shorter retention than the event stores (docs/operations.md)")
    keystore_cache_seconds: float = setting(
        5.0, doc="how long a process keeps a key it has read: at most this long after an erasure a process may "
                 "still open the erased person's fields (0: read the key store every time)")

    def effective_keystore_url(self, data_dir: Path) -> str:
        return self.keystore_url or f"sqlite:///{data_dir}/keys.db"

    def validate_keystore(self, prefix: str) -> None:
        if not 0 <= self.keystore_cache_seconds <= 300:
            raise SettingsError(f"environment variable {prefix}_KEYSTORE_CACHE_SECONDS must be between 0 and 300")


@dataclasses.dataclass(frozen=True)
class ServiceSettings(AuthSettings, KafkaSettings, KeyStoreSettings):
    """Settings of a service's API and of its relay and consumer workers."""

    service: str = setting("", internal=True, doc="set by the entry point: projects, volunteers or feedback")
    data_dir: Path = setting(Path("var"), doc="where SQLite files live when no database URL is set")
    database_url: str = setting("", doc="SQLAlchemy URL; default sqlite:///<data_dir>/<service>.db")
    log_level: str = setting("INFO", doc="log level")
    max_body_bytes: int = setting(1_048_576, doc="largest accepted request body (413 above)")
    relay_batch_size: int = setting(2000, doc="events published per relay round")
    relay_idle_seconds: float = setting(0.05, doc="relay poll interval when caught up")
    relay_rounds_kept: int = setting(1000, doc="publish rounds the relay remembers to find what a broker still "
                                               "holds after a loss (older: it re-publishes from the start)")
    consumer_max_retries: int = setting(5, doc="attempts for a transient error before the worker gives up")
    health_port: int = setting(0, doc="HTTP port of a worker's /healthz /readyz /metrics (0: none)")
    rating_id_secret: str = setting(
        "", doc="feedback: the secret that keys rating ids (at least 32 characters; never change it). Empty: one "
                "is generated at first start and kept in the feedback database")
    checkin_opens_minutes: int = setting(
        30, doc="volunteers: how many minutes before an activity's start its check-in opens (0 to 1440; it closes at "
                "the end)")
    public_min_count: int = setting(
        5, doc="public reads (no token, `/public/...`): a count of people (co-signatures, pledges, ballots, "
               "ratings, ...) from 1 to this minus 1 is shown as null and named in the record's `suppressed`, and "
               "so is a score resting on it; 1: nothing suppressed")
    open_data_licence: str = setting(
        "CC-BY-4.0", doc="the licence the open data files (`/public/open-data/...`) are published under, named in "
                         "each `datapackage.json`: " + ", ".join(f"`{name}`" for name in OPEN_DATA_LICENCES))

    def validate(self, prefix: str) -> None:
        if self.rating_id_secret and len(self.rating_id_secret) < 32:
            raise SettingsError(f"environment variable {prefix}_RATING_ID_SECRET must be at least 32 characters")
        # Relays, consumers and commands verify no tokens: the API checks auth settings itself.
        if not self.service:
            raise SettingsError("the service name is not set (entry point bug)")
        if self.relay_batch_size < 1:
            raise SettingsError(f"environment variable {prefix}_RELAY_BATCH_SIZE must be >= 1")
        if self.relay_rounds_kept < 1:
            raise SettingsError(f"environment variable {prefix}_RELAY_ROUNDS_KEPT must be >= 1")
        if not 0 <= self.checkin_opens_minutes <= 24 * 60:
            raise SettingsError(f"environment variable {prefix}_CHECKIN_OPENS_MINUTES must be between 0 and 1440")
        if self.public_min_count < 1:
            raise SettingsError(f"environment variable {prefix}_PUBLIC_MIN_COUNT must be >= 1")
        if self.open_data_licence not in OPEN_DATA_LICENCES:
            raise SettingsError(f"environment variable {prefix}_OPEN_DATA_LICENCE must be one of "
                                f"{', '.join(OPEN_DATA_LICENCES)}")
        self.validate_kafka(prefix)
        self.validate_keystore(prefix)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir}/{self.service}.db"

    @property
    def topic(self) -> str:
        return f"{self.service}.events"


@dataclasses.dataclass(frozen=True)
class GatewaySettings(AuthSettings, KafkaSettings, KeyStoreSettings):
    """Settings of the public gateway."""

    log_level: str = setting("INFO", doc="log level")
    max_body_bytes: int = setting(1_048_576, doc="largest accepted request body (413 above)")
    projects_url: str = setting("http://127.0.0.1:8001", doc="base URL of the projects service")
    volunteers_url: str = setting("http://127.0.0.1:8002", doc="base URL of the volunteers service")
    feedback_url: str = setting("http://127.0.0.1:8003", doc="base URL of the feedback service")
    data_dir: Path = setting(Path("var"), doc="where the gateway's SQLite file lives when no database URL is set")
    database_url: str = setting("", doc="gateway database (idempotency keys, rate windows, live feed); "
                                       "default sqlite:///<data_dir>/gateway.db")
    upstream_timeout_seconds: float = setting(2.0, doc="timeout of one call to a service")
    upstream_read_retries: int = setting(1, doc="extra attempts for idempotent reads (never for writes)")
    upstream_address_seconds: float = setting(
        5.0, doc="how long a gevent worker keeps a service's resolved address (0: looked up for every connection)")
    breaker_failures: int = setting(5, doc="consecutive failures that open a service's circuit breaker")
    breaker_open_seconds: float = setting(15.0, doc="how long an open breaker refuses calls before a trial")
    idempotency_hours: int = setting(24, doc="how long Idempotency-Key answers are kept")
    rate_limit_per_caller: int = setting(600, doc="requests per minute per authenticated caller (0: off)")
    rate_limit_per_ip: int = setting(1200, doc="requests per minute per client IP (0: off)")
    trusted_proxies: int = setting(0, doc="X-Forwarded-For hops to trust for the client IP (1 behind an ingress)")
    cors_origins: tuple[str, ...] = setting((), doc="comma-separated origins allowed by CORS (empty: none)")
    users_file: str = setting("", doc="JSON users file enabling POST /api/v1/auth/token (local use and demos)")
    token_minutes: int = setting(480, doc="lifetime of tokens the token endpoint issues")
    feed_retention_hours: int = setting(72, doc="how long the live feed keeps events for Last-Event-ID resumption")
    live_ticket_seconds: int = setting(60, doc="how long a live stream ticket (POST /api/v1/live/tickets) may wait "
                                              "to open its stream; it opens one, once")
    live_streams_per_caller: int = setting(
        5, doc="live streams (GET /api/v1/live) one caller may hold open at once, counted across the gateway's "
               "processes and replicas (a stream ticket counts for its holder): one more is a 429 "
               "`too_many_streams` with Retry-After (0: no cap)")
    live_max_streams_per_process: int = setting(
        1000, doc="live streams one gateway process holds at most (under a thread worker class at most half its "
                  "GUNICORN_THREADS, under gevent at most GUNICORN_WORKER_CONNECTIONS less a tenth for other "
                  "requests): one more is a 503 `live_streams_full` with Retry-After, for another replica to take")
    live_queue_events: int = setting(
        1000, doc="events a live stream may fall behind its process's live hub before it is closed as a slow "
                  "reader (its client reconnects with Last-Event-ID)")
    live_poll_seconds: float = setting(
        0.5, doc="how often each gateway process's live hub reads new events of the feed, one query for all its "
                 "streams")
    health_port: int = setting(0, doc="HTTP port of the feed worker's /healthz /readyz /metrics (0: none)")
    catalogue_refresh_seconds: float = setting(
        60.0, doc="how often the gateway reads each service's GET /openapi.json again to learn its routes (every "
                  "2 s while a service's routes are not known at all)")
    catalogue_dir: str = setting(
        "", doc="where the gateway keeps each service's last good OpenAPI document (<service>.json), used for a "
                "service that does not answer when the gateway starts; default <data_dir>/gateway/catalogue")

    def validate(self, prefix: str) -> None:
        self.validate_auth(prefix)
        self.validate_kafka(prefix)
        self.validate_keystore(prefix)
        if self.catalogue_refresh_seconds <= 0:
            raise SettingsError(f"environment variable {prefix}_CATALOGUE_REFRESH_SECONDS must be > 0")
        if not 1 <= self.live_ticket_seconds <= 600:
            raise SettingsError(f"environment variable {prefix}_LIVE_TICKET_SECONDS must be between 1 and 600")
        if self.live_streams_per_caller < 0:
            raise SettingsError(f"environment variable {prefix}_LIVE_STREAMS_PER_CALLER must be >= 0")
        if self.live_max_streams_per_process < 1:
            raise SettingsError(f"environment variable {prefix}_LIVE_MAX_STREAMS_PER_PROCESS must be >= 1")
        if self.live_queue_events < 10:
            raise SettingsError(f"environment variable {prefix}_LIVE_QUEUE_EVENTS must be >= 10")
        if not 0.05 <= self.live_poll_seconds <= 10:
            raise SettingsError(f"environment variable {prefix}_LIVE_POLL_SECONDS must be between 0.05 and 10")

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir}/gateway.db"

    @property
    def effective_catalogue_dir(self) -> Path:
        return Path(self.catalogue_dir) if self.catalogue_dir else self.data_dir / "gateway" / "catalogue"
