"""Wiring a service from its definition: the store, the HTTP app, the relay, consumers, rebuild.

Each service declares one :class:`ServiceDefinition` (its name, projections, upcasters, HTTP
blueprints and subscriptions); the functions here turn it into processes, so that the three
services have the same shape and the same operational behaviour.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flask

from services.kernel import settings as settings_module
from services.kernel.aggregate import new_id as default_new_id
from services.kernel.bus import Handler as CommandHandler
from services.kernel.bus import MessageBus
from services.kernel.config import ServiceSettings
from services.kernel.consumer import ConsumerStalled, EventConsumer, Handler, list_dead_letters
from services.kernel.db import make_engine, ping
from services.kernel.events import UpcasterChain, utc_now
from services.kernel.eventstore import EventStore, Projection, rebuild
from services.kernel.history import history_blueprint, records_blueprint
from services.kernel.kafka import broker_reachable
from services.kernel.logs import configure_logging
from services.kernel.personal import KeyStore, Sealer
from services.kernel.relay import Relay
from services.kernel.web import Blueprint, check_public_routes, create_base_app, open_personal_fields, require_tokens
from services.kernel.worker import run_until_signalled

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Subscription:
    """A consumer of another service's topic: ``group`` is stable per purpose."""

    group: str
    topics: Sequence[str]
    handlers: Callable[["Container"], Mapping[str, Handler]]


@dataclasses.dataclass(frozen=True)
class ServiceDefinition:
    name: str
    title: str
    description: str
    projections: Callable[[], Sequence[Projection]] = lambda: ()
    upcasters: Callable[[], UpcasterChain] = UpcasterChain
    # The HTTP API: module-level blueprints whose routes send commands to the container's bus.
    blueprints: Sequence[Blueprint] = ()
    # What a process builds once from its store and settings for its handlers and routes (e.g. keys
    # derived from a deployment secret): ``Container.resources``.
    resources: Callable[[EventStore, ServiceSettings], Mapping[str, Any]] = lambda store, settings: {}
    # Each command class (a frozen dataclass) and its one handler, ``handler(command, uow)``; or a
    # function ``(resources) -> that mapping`` when handlers need one of the process's resources.
    command_handlers: Mapping[type, CommandHandler] | Callable[[Mapping[str, Any]], Mapping[type, CommandHandler]] = \
        dataclasses.field(default_factory=dict)
    subscriptions: Sequence[Subscription] = ()
    # Extra one-shot commands: name -> (help, run(container) -> the line to print), e.g. a sweep
    # that a Kubernetes CronJob runs.
    commands: Mapping[str, tuple[str, Callable[["Container"], str]]] = dataclasses.field(default_factory=dict)
    # Domain figures exported on the API's /metrics, computed from read models at scrape time.
    collectors: Callable[["Container"], Sequence[Any]] = lambda container: ()


@dataclasses.dataclass
class Container:
    """Everything a service's handlers need, built once per process by :func:`bootstrap`."""

    settings: ServiceSettings
    store: EventStore
    bus: MessageBus
    resources: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # seals personal fields as events are stored and opens them where an answer leaves the process
    sealer: Sealer | None = None


def load_settings(definition: ServiceDefinition, environ=None, **overrides) -> ServiceSettings:
    return settings_module.load(ServiceSettings, definition.name.upper(), environ,
                                service=definition.name, **overrides)


def bootstrap(definition: ServiceDefinition, settings: ServiceSettings, *, create_schema: bool = True,
              clock: Callable[[], Any] = utc_now, new_id: Callable[[], str] = default_new_id) -> Container:
    """The store, its read models and the message bus of one process. ``clock`` and ``new_id``
    are the only clock and id factory command handlers see (tests pass their own). The store
    stamps events with the wall clock: ``occurred_at`` is when an event was stored, and it orders
    the read models' lists even when a test's clock stands still."""
    engine = make_engine(settings.effective_database_url)
    keys = KeyStore(settings.effective_keystore_url(settings.data_dir), cache_seconds=settings.keystore_cache_seconds)
    sealer = Sealer(keys)
    store = EventStore(engine, service=definition.name, upcasters=definition.upcasters(),
                       projections=list(definition.projections()), sealer=sealer)
    if create_schema:
        keys.create_schema()
        store.create_schema()
    resources = dict(definition.resources(store, settings))
    handlers = definition.command_handlers
    if callable(handlers):
        handlers = handlers(resources)
    bus = MessageBus(store, handlers, clock=clock, new_id=new_id)
    return Container(settings=settings, store=store, bus=bus, resources=resources, sealer=sealer)


def create_service_app(definition: ServiceDefinition, settings: ServiceSettings, *,
                       clock: Callable[[], Any] = utc_now, new_id: Callable[[], str] = default_new_id) -> flask.Flask:
    settings.validate_auth(definition.name.upper())
    container = bootstrap(definition, settings, clock=clock, new_id=new_id)
    app, api = create_base_app(
        definition.name, settings, title=definition.title, description=definition.description,
        readiness={"database": lambda: ping(container.store.engine)},
        max_body_bytes=settings.max_body_bytes,
    )
    app.extensions["cocreate.container"] = container
    app.extensions["cocreate.collectors"] = list(definition.collectors(container))
    require_tokens(app)
    open_personal_fields(app, container.sealer)
    api.register_blueprint(history_blueprint(container.store))
    api.register_blueprint(records_blueprint(container.store, definition.name))
    for blueprint in definition.blueprints:
        api.register_blueprint(blueprint)
    check_public_routes(app)
    return app


def app_factory(definition: ServiceDefinition) -> flask.Flask:
    """Entry for gunicorn (``module:build()``): settings from the environment."""
    settings = load_settings(definition)
    configure_logging(definition.name, settings.log_level)
    return create_service_app(definition, settings)


# -- worker and command entry points ------------------------------------------------------------

def _settings_or_exit(definition: ServiceDefinition) -> ServiceSettings:
    try:
        settings = load_settings(definition)
    except settings_module.SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


def _worker_readiness(worker: Relay | EventConsumer, container: Container, settings: ServiceSettings):
    """Ready when the database answers and the broker does (the worker's own last attempt included)."""

    def broker_ready() -> None:
        if not worker.broker_ok:
            raise ConnectionError("the last attempt to reach the broker failed")
        broker_reachable(settings.kafka_bootstrap_servers)

    return {"database": lambda: ping(container.store.engine), "broker": broker_ready}


def relay_main(definition: ServiceDefinition) -> None:
    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-relay", settings.log_level)
    container = bootstrap(definition, settings)
    relay = Relay(
        container.store, topic=settings.topic, bootstrap_servers=settings.kafka_bootstrap_servers,
        batch_size=settings.relay_batch_size, idle_seconds=settings.relay_idle_seconds,
        topic_policy=settings.topic_policy, verify_seconds=settings.broker_verify_seconds,
        rounds_kept=settings.relay_rounds_kept, pace_max_seconds=settings.pipeline_pace_max_seconds,
    )
    run_until_signalled(relay.run, health_port=settings.health_port,
                        readiness=_worker_readiness(relay, container, settings))


def _consumer(definition: ServiceDefinition, group: str, settings: ServiceSettings,
              container: Container) -> EventConsumer:
    subscription = {s.group: s for s in definition.subscriptions}[group]
    return EventConsumer(
        engine=container.store.engine, group_id=subscription.group, topics=subscription.topics,
        handlers=subscription.handlers(container), bootstrap_servers=settings.kafka_bootstrap_servers,
        max_retries=settings.consumer_max_retries, topic_policy=settings.topic_policy,
        verify_seconds=settings.broker_verify_seconds, pace_max_seconds=settings.pipeline_pace_max_seconds,
    )


def consumer_main(definition: ServiceDefinition, group: str) -> None:
    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-consumer", settings.log_level)
    container = bootstrap(definition, settings)
    consumer = _consumer(definition, group, settings, container)
    try:
        run_until_signalled(consumer.run, health_port=settings.health_port,
                            readiness=_worker_readiness(consumer, container, settings))
    except ConsumerStalled as exc:
        log.error("consumer stalled; exiting so that it is restarted", extra={"error": str(exc)})
        raise SystemExit(3) from None


def dead_letters_main(definition: ServiceDefinition, action: str, republish_all: bool) -> None:
    """List the dead letters kept in the service's database, or send them to their DLQ topics
    again (after a broker lost them): those never re-published, or every one with ``--all``."""
    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-dead-letters", settings.log_level)
    container = bootstrap(definition, settings)
    if action == "list":
        for row in list_dead_letters(container.store.engine):
            print(json.dumps(row, ensure_ascii=False))
        return
    sent = 0
    for subscription in definition.subscriptions:
        sent += _consumer(definition, subscription.group, settings, container).republish_dead_letters(
            all_of_them=republish_all)
    print(f"{definition.name}: re-published {sent} dead letters")


def rebuild_main(definition: ServiceDefinition) -> None:
    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-rebuild", settings.log_level)
    container = bootstrap(definition, settings)
    count = rebuild(container.store)
    print(f"{definition.name}: rebuilt {len(container.store.projections)} read models from {count} events")


def recover_tail_main(definition: ServiceDefinition, dry_run: bool) -> None:
    """After the database was restored to an earlier point: append the events that are on the
    service's topic and not in its log, as they were (:mod:`services.kernel.restore`). Exit code 1
    with the reason when they cannot be put back as they were."""
    from services.kernel.kafka import BrokerView
    from services.kernel.restore import TailNotRecoverable, recover_tail

    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-recover-tail", settings.log_level)
    container = bootstrap(definition, settings)
    view = BrokerView(settings.kafka_bootstrap_servers, f"recover-tail-{definition.name}")
    try:
        recovery = recover_tail(container.store, settings.topic, view, dry_run=dry_run,
                                subscriptions={s.group: tuple(s.topics) for s in definition.subscriptions})
    except TailNotRecoverable as exc:
        print(f"{definition.name}: the lost tail cannot be recovered: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        view.close()
    print(recovery.report())


def seal_copy_main(definition: ServiceDefinition, source_url: str, verify: bool, report_path: str | None) -> None:
    """The one-off sealing of a store written before personal fields were sealed
    (:mod:`services.kernel.sealing`): exit code 1 with the reason when it cannot be done or does
    not verify."""
    from services.kernel.sealing import SealingRefused, seal_copy, verify_copy

    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-seal-copy", settings.log_level)
    container = bootstrap(definition, settings)
    if verify:
        problems = verify_copy(source_url, container.store, container.sealer)
        for problem in problems[:50]:
            print(f"{definition.name}: {problem}", file=sys.stderr)
        if problems:
            print(f"{definition.name}: the sealed copy does not verify ({len(problems)} problems)", file=sys.stderr)
            raise SystemExit(1)
        print(f"{definition.name}: the sealed copy verifies: every event as it was, every personal field opens "
              "to the old text")
        return
    try:
        report = seal_copy(source_url, container.store, container.sealer)
    except SealingRefused as exc:
        print(f"{definition.name}: not sealed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    text = json.dumps(report.as_dict(), ensure_ascii=False, indent=1)
    path = report_path or str(settings.data_dir / f"{definition.name}-sealing-report.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    print(text)
    print(f"{definition.name}: sealed {report.sealed_fields} personal fields of {report.events} events; "
          f"report in {path}")


def migrate_main(definition: ServiceDefinition) -> None:
    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-migrate", settings.log_level)
    bootstrap(definition, settings, create_schema=True)
    print(f"{definition.name}: schema is up to date")


def run_job(definition: ServiceDefinition, name: str, every: float | None) -> None:
    """Run one of the definition's commands once, or every ``every`` seconds until SIGTERM/SIGINT
    (with /healthz and /readyz on the service's health port when one is set). A run that fails is
    logged and tried again at the next period: the job outlives a database that is briefly away."""
    settings = _settings_or_exit(definition)
    configure_logging(f"{definition.name}-{name}", settings.log_level)
    container = bootstrap(definition, settings)
    run = definition.commands[name][1]
    if every is None:
        print(run(container))
        return
    if every <= 0:
        raise SystemExit("--every needs a positive number of seconds")

    def loop(stop) -> None:
        while not stop.is_set():
            try:
                print(run(container), flush=True)
            except Exception:  # noqa: BLE001 (logged; the next period tries again)
                log.exception("periodic job failed", extra={"job": name})
            stop.wait(every)

    run_until_signalled(loop, health_port=settings.health_port,
                        readiness={"database": lambda: ping(container.store.engine)})


def main(definition: ServiceDefinition, argv: Sequence[str] | None = None) -> None:
    """``python -m services.<name> relay|consumer GROUP|rebuild|migrate|recover-tail|dead-letters|<definition.commands>``"""
    parser = argparse.ArgumentParser(prog=f"python -m services.{definition.name}",
                                     description=f"{definition.title}: workers and commands")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("relay", help="publish the event store to Kafka (one per service)")
    consumer = commands.add_parser("consumer", help="consume another service's events")
    consumer.add_argument("group", choices=sorted(s.group for s in definition.subscriptions) or ["-"])
    commands.add_parser("rebuild", help="drop the read models and replay the whole event store")
    commands.add_parser("migrate", help="create or update the database schema")
    recover = commands.add_parser("recover-tail", help="after a restore of the database: append the events that "
                                                       "are on the service's topic and not in its log, as they were")
    recover.add_argument("--dry-run", action="store_true", help="say what would be appended, change nothing")
    seal = commands.add_parser("seal-copy", help="once: copy a store written before personal fields were sealed into "
                                                 "the configured (new, empty) database, sealing them; --verify "
                                                 "compares the two (docs/operations.md)")
    seal.add_argument("--from", dest="source", required=True, metavar="URL", help="the old store's database URL")
    seal.add_argument("--verify", action="store_true", help="compare the old store with its sealed copy, change nothing")
    seal.add_argument("--report", metavar="PATH", help="where to write the report (default <data_dir>/<service>-"
                                                       "sealing-report.json)")
    dead = commands.add_parser("dead-letters", help="list the consumers' dead letters kept in the database, "
                                                     "or re-publish them to their DLQ topics")
    dead.add_argument("action", choices=["list", "republish"])
    dead.add_argument("--all", action="store_true", help="re-publish those already re-published too")
    for name, (help_text, _run) in definition.commands.items():
        job = commands.add_parser(name, help=help_text)
        job.add_argument("--every", type=float, metavar="SECONDS",
                         help="run again every SECONDS until stopped (the local platform's periodic job; "
                              "on Kubernetes a CronJob runs it once per schedule)")
    args = parser.parse_args(argv)
    if args.command in definition.commands:
        run_job(definition, args.command, args.every)
        return
    if args.command == "relay":
        relay_main(definition)
    elif args.command == "consumer":
        if not definition.subscriptions:
            parser.error(f"{definition.name} has no subscriptions")
        consumer_main(definition, args.group)
    elif args.command == "dead-letters":
        if not definition.subscriptions:
            parser.error(f"{definition.name} has no subscriptions, so no dead letters")
        dead_letters_main(definition, args.action, args.all)
    elif args.command == "rebuild":
        rebuild_main(definition)
    elif args.command == "recover-tail":
        recover_tail_main(definition, args.dry_run)
    elif args.command == "seal-copy":
        seal_copy_main(definition, args.source, args.verify, args.report)
    else:
        migrate_main(definition)
