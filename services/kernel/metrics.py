"""Prometheus metric declarations shared by every app and worker, and the /metrics exposition.

Metric objects are declarations (the prometheus-client idiom), not connections: creating them
opens nothing. Under gunicorn ``PROMETHEUS_MULTIPROC_DIR`` is set before this module is imported
(see ``gunicorn_conf``), so each worker writes its own files and /metrics aggregates them.
"""

from __future__ import annotations

import inspect
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import values as _prometheus_values

# A worker started with PROMETHEUS_MULTIPROC_DIR pointing at a fresh emptyDir would fail on its
# first metric write: make sure the directory exists (gunicorn's master also wipes it at start).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


# A multiprocess value asks ``os.getpid()`` at every change, to notice a fork (a new process writes
# files of its own): a system call each, seven a ballot (issue 23: 1.6% of a ballot's CPU). The pid is
# known without asking — this process's, updated in a child by ``os.register_at_fork`` (gunicorn's
# workers and multiprocessing's children are made by ``os.fork``) — so the values get it from here.
# Only while no value of the library's own class exists yet: two classes would each open the
# process's files and write over each other. Otherwise (a metric made before this module was
# imported) the library's class stays, asking the pid as before.
_pid = os.getpid()


def process_id() -> int:
    """This process's id without a system call (kept current after a fork): what the multiprocess
    values and the SQLite writers' turn (services.kernel.db) check on every change."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


def _unused_multiprocess_class(value_class) -> bool:
    """The library's multiprocess value class, with no value made of it and no file open."""
    try:
        made = inspect.getclosurevars(value_class.__init__).nonlocals["values"]
        opened = inspect.getclosurevars(value_class._MmapedValue__reset).nonlocals["files"]
    except (AttributeError, KeyError, TypeError):  # another prometheus-client: left as it is
        return False
    return getattr(value_class, "_multiprocess", False) and not made and not opened


os.register_at_fork(after_in_child=_forked)
if _unused_multiprocess_class(_prometheus_values.ValueClass):
    _prometheus_values.ValueClass = _prometheus_values.MultiProcessValue(process_identifier=process_id)


HTTP_REQUESTS = Counter(
    "cocreate_http_requests_total", "HTTP requests handled",
    ["app", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "cocreate_http_request_duration_seconds", "HTTP request latency",
    ["app", "route", "method"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CACHE_LOOKUPS = Counter(
    "cocreate_cache_lookups_total", "Lookups of answers kept per process at a version (services.kernel.cache)",
    ["cache", "result"],
)
COMMANDS_RERUN = Counter(
    "cocreate_commands_rerun_total",
    "Commands run optimistically whose loaded streams had moved by their first write, run again in the "
    "writers' turn (services.kernel.bus)", ["command"],
)
EVENTS_APPENDED = Counter(
    "cocreate_events_appended_total", "Events appended to the event store", ["service", "event_type"],
)
RELAY_LAG_EVENTS = Gauge(
    "cocreate_relay_lag_events", "Events stored but not yet acknowledged by the broker",
    ["service"], multiprocess_mode="max",
)
RELAY_LAG_SECONDS = Gauge(
    "cocreate_relay_lag_seconds", "Age of the oldest event not yet acknowledged by the broker",
    ["service"], multiprocess_mode="max",
)
RELAY_PUBLISHED = Counter(
    "cocreate_relay_published_total", "Events acknowledged by the broker", ["service", "topic"],
)
RELAY_ERRORS = Counter(
    "cocreate_relay_errors_total", "Failed publish attempts (retried)", ["service", "topic"],
)
RELAY_BROKER_DATA_LOSS = Counter(
    "cocreate_relay_broker_data_loss_total",
    "Times the broker held fewer records than it had acknowledged (the relay re-published)",
    ["service", "topic"],
)
RELAY_REPUBLISHED = Counter(
    "cocreate_relay_republished_events_total", "Events re-published after the broker lost them",
    ["service", "topic"],
)
RELAY_CHECKPOINT = Gauge(
    "cocreate_relay_checkpoint_position", "Last position acknowledged by the broker",
    ["service"], multiprocess_mode="max",
)
CONSUMER_LAG = Gauge(
    "cocreate_consumer_lag_messages", "Messages on the topic not yet consumed by the group",
    ["group", "topic", "partition"], multiprocess_mode="max",
)
MESSAGES_HANDLED = Counter(
    "cocreate_consumer_messages_handled_total", "Messages whose effects were committed",
    ["group", "topic", "event_type"],
)
MESSAGES_DUPLICATE = Counter(
    "cocreate_consumer_messages_duplicate_total", "Redelivered messages skipped by the inbox",
    ["group", "topic"],
)
MESSAGES_FAILED = Counter(
    "cocreate_consumer_messages_failed_total", "Handling attempts that raised (retried or dead-lettered)",
    ["group", "topic", "kind"],
)
MESSAGES_DEAD_LETTERED = Counter(
    "cocreate_consumer_messages_dead_lettered_total", "Messages sent to the dead-letter topic",
    ["group", "topic"],
)

UPSTREAM_CALLS = Counter(
    "cocreate_gateway_upstream_calls_total", "Gateway calls to a service, by outcome",
    ["service", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "cocreate_gateway_upstream_duration_seconds", "Latency of gateway calls to a service",
    ["service"], buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
COMPOSED_PARTIAL = Counter(
    "cocreate_gateway_composed_partial_total", "Composed views answered without some of their parts",
    ["view", "service"],
)


def exposition(collectors=()) -> tuple[bytes, str]:
    """The text exposition for this process (all gunicorn workers in multiprocess mode), plus
    ``collectors`` computed at scrape time (domain figures read from the read models)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = CollectorRegistry()
        registry.register(_DefaultRegistryView())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _DefaultRegistryView:
    """The process's default registry as one collector (outside gunicorn)."""

    def collect(self):
        return DEFAULT_REGISTRY.collect()


class QueryGauge:
    """A gauge family computed by a query at scrape time: ``query(connection)`` returns
    ``[(label values..., value)]``. A failing query is left out of the scrape, not fatal."""

    def __init__(self, engine, name: str, documentation: str, labels: list[str], query) -> None:
        self.engine, self.name, self.documentation, self.labels, self.query = engine, name, documentation, labels, query

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        try:
            with self.engine.connect() as connection:
                for *values, number in self.query(connection):
                    family.add_metric([str(v) for v in values], float(number))
        except Exception:  # noqa: BLE001 — a scrape must not fail because a figure could not be read
            return
        yield family
