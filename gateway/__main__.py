"""``python -m gateway feed`` — the live-feed worker; ``python -m gateway hash-password`` — a
password hash for the users file."""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import timedelta

TOPICS = ("projects.events", "volunteers.events", "feedback.events")
FEED_GROUP = "gateway.live-feed"


def feed_main() -> None:
    from gateway.app import load_settings
    from gateway.store import GatewayStore
    from services.kernel.consumer import ConsumerStalled
    from services.kernel.db import ping
    from services.kernel.kafka import broker_reachable
    from services.kernel.logs import configure_logging
    from services.kernel.settings import SettingsError
    from services.kernel.worker import run_until_signalled

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging("gateway-feed", settings.log_level)
    store = GatewayStore(settings.effective_database_url)
    store.create_schema()
    consumer = feed_consumer(settings, store)
    readiness = {"database": lambda: ping(store.engine),
                 "broker": lambda: broker_reachable(settings.kafka_bootstrap_servers)}
    try:
        run_until_signalled(consumer.run, health_port=settings.health_port, readiness=readiness)
    except ConsumerStalled:
        raise SystemExit(3) from None


def feed_consumer(settings, store):
    from services.kernel.consumer import ANY_EVENT, EventConsumer

    return EventConsumer(engine=store.engine, group_id=FEED_GROUP, topics=TOPICS,
                         handlers={ANY_EVENT: pruning(store, timedelta(hours=settings.feed_retention_hours))},
                         bootstrap_servers=settings.kafka_bootstrap_servers, topic_policy=settings.topic_policy,
                         verify_seconds=settings.broker_verify_seconds,
                         pace_max_seconds=settings.pipeline_pace_max_seconds)


def dead_letters_main(action: str, republish_all: bool) -> None:
    """Like ``python -m services.<name> dead-letters``, for the feed worker's dead letters."""
    import json

    from gateway.app import load_settings
    from gateway.store import GatewayStore
    from services.kernel.consumer import list_dead_letters

    settings = load_settings()
    store = GatewayStore(settings.effective_database_url)
    store.create_schema()
    if action == "list":
        for row in list_dead_letters(store.engine):
            print(json.dumps(row, ensure_ascii=False))
    else:
        sent = feed_consumer(settings, store).republish_dead_letters(all_of_them=republish_all)
        print(f"gateway: re-published {sent} dead letters")


def pruning(store, retention, every: int = 1000):
    """The feed handler, dropping events older than ``retention`` every ``every`` events."""
    count = 0

    def handle(connection, event) -> None:
        nonlocal count
        store.add_feed_event(connection, event)
        if event.event_type == "PersonErased":  # once: the consumer's inbox commits with this
            store.purge_person(connection, event.data["person_id"])
        count += 1
        if count % every == 0:
            store.prune_feed(retention, connection=connection)

    return handle


def reapply_erasures_main() -> None:
    """After the gateway's database was restored: forget again what it keeps in clear of every
    person in the erasure log (the key store's, which a restore of this database does not touch)."""
    from gateway.app import load_settings
    from gateway.store import GatewayStore
    from services.kernel.db import write_transaction
    from services.kernel.personal import KeyStore

    settings = load_settings()
    store = GatewayStore(settings.effective_database_url)
    store.create_schema()
    keys = KeyStore(settings.effective_keystore_url(settings.data_dir))
    keys.create_schema()
    erased = [row["person_id"] for row in keys.erased()]
    with write_transaction(store.engine) as connection:
        gone = sum(store.purge_person(connection, person_id) for person_id in erased)
    print(f"gateway: {len(erased)} erased people, {gone} rows of theirs purged")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="the gateway's workers and tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("feed", help="consume every service's topic into the live feed (one per gateway database)")
    commands.add_parser("hash-password", help="read a password and print its hash for the users file")
    dead = commands.add_parser("dead-letters", help="list the feed worker's dead letters kept in the database, "
                                                     "or re-publish them to their DLQ topics")
    dead.add_argument("action", choices=["list", "republish"])
    dead.add_argument("--all", action="store_true", help="re-publish those already re-published too")
    commands.add_parser("reapply-erasures", help="after a restore of the gateway's database: purge again what it "
                                                 "keeps in clear of every erased person (the key store's log)")
    args = parser.parse_args(argv)
    if args.command == "feed":
        feed_main()
    elif args.command == "reapply-erasures":
        reapply_erasures_main()
    elif args.command == "dead-letters":
        dead_letters_main(args.action, args.all)
    else:
        from gateway.tokens import hash_password
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        print(hash_password(password))


if __name__ == "__main__":
    main()
