"""Kafka clients as the workers use them. API processes never import this module's clients.

Time-outs are short on purpose: a relay or consumer that cannot reach the broker should notice
within seconds, back off and retry, not hang for the library's default minute.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)

CLIENT_TIMEOUTS = {"request_timeout_ms": 10_000}


def make_producer(bootstrap_servers: str, client_id: str) -> KafkaProducer:
    """Idempotent producer, acks from all in-sync replicas, order kept per partition."""
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers.split(","),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        max_in_flight_requests_per_connection=5,
        linger_ms=5,
        max_block_ms=10_000,
        delivery_timeout_ms=30_000,
        retry_backoff_ms=200,
        **CLIENT_TIMEOUTS,
    )


def make_consumer(bootstrap_servers: str, group_id: str, topics: Iterable[str], client_id: str) -> KafkaConsumer:
    """Manual-commit consumer; short session time-outs so a group join takes seconds."""
    return KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers.split(","),
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=60_000,
        max_poll_records=500,
        # How long a fetch may wait for new records. Kafka answers as soon as data arrives; a
        # broker that holds every fetch to the limit (the local tansu) would add this much to
        # each event's way between services, so it is kept short.
        fetch_max_wait_ms=100,
        **CLIENT_TIMEOUTS,
    )


def ensure_topics(bootstrap_servers: str, topics: Iterable[str], partitions: int, replication_factor: int) -> None:
    """Create the topics that do not exist yet (a no-op for existing ones)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="cocreate-admin",
                             **CLIENT_TIMEOUTS)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if not missing:
            return
        try:
            admin.create_topics([NewTopic(t, partitions, replication_factor) for t in missing])
            log.info("created topics", extra={"topics": missing})
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()


@dataclasses.dataclass(frozen=True)
class TopicPolicy:
    """Whether a worker creates the topics it needs, and how (off when Strimzi manages them)."""

    create: bool = True
    partitions: int = 3
    replication_factor: int = 1

    def ensure(self, bootstrap_servers: str, topics: Iterable[str]) -> None:
        if self.create:
            ensure_topics(bootstrap_servers, list(topics), self.partitions, self.replication_factor)


def broker_reachable(bootstrap_servers: str) -> None:
    """Raise unless the broker answers a metadata request."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), client_id="cocreate-probe",
                             **CLIENT_TIMEOUTS)
    try:
        admin.list_topics()
    finally:
        admin.close()


__all__ = ["KafkaError", "TopicPolicy", "make_producer", "make_consumer", "ensure_topics", "broker_reachable"]
