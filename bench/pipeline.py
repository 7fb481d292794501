"""Relay and consumer throughput beside bare kafka-python loops, against the same local broker.

One run starts its own tansu broker (in-memory storage) on a free port and measures:

- relay: a SQLite event store is filled with N ``BallotCast`` events (20,000 quick, 50,000 full);
  :class:`services.kernel.relay.Relay` (default page of 2,000) then publishes them to a fresh
  3-partition topic, stepped with ``publish_once`` until all N are acknowledged and checkpointed.
  Anchor: a bare ``KafkaProducer`` with the kernel's producer settings (``make_producer``: acks=all,
  idempotent, linger 5 ms) and kafka-python's default partitioner sends the same N envelopes (the
  same serialised JSON, keys and headers, prepared before the clock starts) to another fresh topic,
  then flushes once. The same bare loop with the kernel's partitioner (``KeyHashPartitioner``, which
  the relay's producer uses: each key's murmur2 hash remembered) is shown beside it.
- consumer: :class:`services.kernel.consumer.EventConsumer` (fresh group, a handler that does
  nothing, so each event costs exactly the kernel's own work: envelope parse, inbox lookup and
  insert in one durable SQLite transaction, offset commit per poll) reads the topic the relay filled,
  stepped with ``poll_once`` until the handler has seen all N. Anchor: a bare ``KafkaConsumer``
  with the kernel's consumer settings (``make_consumer``: fresh group, from the earliest offset,
  the same fetch settings) polling the same topic and json-decoding each value until N messages
  are read. (With kafka-python's defaults instead — a fetch may wait 500 ms — it measured either
  about 20,000 or about 50,000 events/s from one run to the next: how many fetches were under way
  when its clock started.)

Both producers are created and both topics exist before the clock starts. For both consumers the
clock starts when the first message is received, which leaves the group join out of the figure;
it stops when the N-th message has been handled (ours: after that poll's offset commit). Five
rounds (one with ``--quick``), each side in turn, each round on topics and groups of its own: the
rows give the medians and the ranges, and each target is the median of the rounds' own ratios (one
run of each moved by 10–20 points between runs; the bare producer alone from 11,948 to 16,712
events/s within one part).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from kafka import KafkaConsumer
from kafka.partitioner.default import DefaultPartitioner

from bench.store import PAYLOAD, rate
from services.kernel.broker import broker_command, free_port, wait_for_port
from services.kernel.consumer import EventConsumer, inbox_table
from services.kernel.db import make_engine
from services.kernel.events import Metadata, NewEvent
from services.kernel.eventstore import EventStore
from services.kernel.kafka import TopicPolicy, ensure_topics, make_consumer, make_producer
from services.kernel.relay import Relay, _headers

PARTITIONS = 3  # the TopicPolicy default the workers use
STREAMS = 100
APPEND_BATCH = 1_000
TIMEOUT_S = 900.0


# -- the broker ----------------------------------------------------------------------------------

# -- relay ---------------------------------------------------------------------------------------

def fill_store(url: str, events: int) -> EventStore:
    """``events`` events over ``STREAMS`` streams, appended through the store in large batches."""
    store = EventStore(make_engine(url), service="bench", projections=[])
    store.create_schema()
    versions = [0] * STREAMS
    meta = Metadata(actor="resident-42", correlation_id=str(uuid.uuid4()))
    for i in range(events // APPEND_BATCH):
        s = i % STREAMS
        store.append(f"project-{s}", versions[s], [NewEvent("BallotCast", PAYLOAD) for _ in range(APPEND_BATCH)],
                     metadata=meta)
        versions[s] += APPEND_BATCH
    return store


def relay_rate(store: EventStore, bootstrap: str, topic: str, events: int) -> tuple[float, int]:
    """Rate of the relay publishing every event, and its page size."""
    producer = make_producer(bootstrap, "bench-relay")
    relay = Relay(store, topic=topic, bootstrap_servers=bootstrap, topic_policy=TopicPolicy(create=False),
                  producer_factory=lambda: producer)
    # Its start-up check (the log holds what the topic holds: the topic's metadata and ends) before
    # the clock, as the bare producer's connecting is: the rate is of publishing.
    relay.check_log_holds_topic()
    published = 0
    started = time.perf_counter()
    while published < events:
        count = relay.publish_once()
        if count == 0:
            raise RuntimeError(f"relay stopped at {published} of {events} events")
        published += count
    elapsed = time.perf_counter() - started
    if relay.checkpoint() != store.last_position():
        raise RuntimeError("relay checkpoint does not match the last position")
    producer.close(timeout=10)
    return rate(events, elapsed), relay.batch_size


def bare_producer_rate(store: EventStore, bootstrap: str, topic: str, kernel_partitioner: bool = False
                       ) -> tuple[float, float]:
    """Rate and mean value size of a bare producer sending the relay's exact records: a plain
    KafkaProducer with the kernel's settings and kafka-python's default partitioner (or, with
    ``kernel_partitioner``, the kernel's, which remembers each key's hash)."""
    records = [(event.stream_id.encode(), event.to_json(), _headers(event)) for event in store.iterate_all()]
    producer = make_producer(bootstrap, "bench-bare")
    if not kernel_partitioner:
        producer.config["partitioner"] = DefaultPartitioner()
    started = time.perf_counter()
    for key, value, headers in records:
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush(timeout=120)
    elapsed = time.perf_counter() - started
    producer.close(timeout=10)
    return rate(len(records), elapsed), sum(len(r[1]) for r in records) / len(records)


# -- consumer ------------------------------------------------------------------------------------

def consumer_rate(workdir: Path, bootstrap: str, topic: str, events: int) -> float:
    group = f"bench-ours-{uuid.uuid4().hex[:8]}"
    engine = make_engine(f"sqlite:///{workdir}/{group}.db")  # a database of its own per round
    EventStore(engine, service="bench-consumer").create_schema()  # creates the inbox table
    seen = {"count": 0, "first": 0.0}

    def handler(connection, event) -> None:
        if seen["count"] == 0:
            seen["first"] = time.perf_counter()
        seen["count"] += 1

    worker = EventConsumer(engine=engine, group_id=group, topics=[topic], handlers={"BallotCast": handler},
                           bootstrap_servers=bootstrap, topic_policy=TopicPolicy(create=False))
    client = make_consumer(bootstrap, group, [topic], client_id=f"consumer-{group}")  # as EventConsumer.run does
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while seen["count"] < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"EventConsumer handled {seen['count']} of {events} events")
            worker.poll_once(client)
        elapsed = time.perf_counter() - seen["first"]
    finally:
        client.close(autocommit=False)
    with engine.connect() as connection:
        inbox = connection.execute(sa.select(sa.func.count()).select_from(inbox_table)).scalar()
    engine.dispose()
    if inbox != events:
        raise RuntimeError(f"inbox holds {inbox} rows, expected {events}")
    return rate(events, elapsed)


def bare_consumer_rate(bootstrap: str, topic: str, events: int) -> float:
    """A bare kafka-python consumer with the kernel's consumer settings (``make_consumer``, as ours
    and as the relay's anchor has the kernel's producer settings), json-decoding each value."""
    group = f"bench-bare-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(bootstrap, group, [topic], client_id=f"consumer-{group}")
    count, first = 0, 0.0
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while count < events and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for message in records:
                    if count == 0:
                        first = time.perf_counter()
                    json.loads(message.value)
                    count += 1
        elapsed = time.perf_counter() - first
    finally:
        consumer.close(autocommit=False)
    if count != events:
        raise TimeoutError(f"bare consumer read {count} of {events} messages")
    return rate(events, elapsed)


# -- the rows ------------------------------------------------------------------------------------

ROUNDS = 5  # rounds of each side in turn; the rows give the medians, the ranges and the rounds' ratios


def run(workdir: Path, quick: bool) -> list[dict]:
    events = 20_000 if quick else 50_000
    rounds = 1 if quick else ROUNDS
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen(broker_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    figures: dict[str, list[float]] = {"bare_out": [], "hashed_out": [], "ours_out": [], "bare_in": [], "ours_in": []}
    try:
        wait_for_port(port)
        store = fill_store(f"sqlite:///{workdir}/pipeline.db", events)
        relay_topics = []
        for _round in range(rounds):  # each round on topics of its own
            suffix = uuid.uuid4().hex[:8]
            relay_topic, bare_topic = f"bench-relay-{suffix}.events", f"bench-bare-{suffix}.events"
            hashed_topic = f"bench-bare-hashed-{suffix}.events"
            ensure_topics(bootstrap, [relay_topic, bare_topic, hashed_topic, f"{relay_topic}.dlq"],
                          TopicPolicy(partitions=PARTITIONS))
            bare_out, value_bytes = bare_producer_rate(store, bootstrap, bare_topic)
            hashed_out, _ = bare_producer_rate(store, bootstrap, hashed_topic, kernel_partitioner=True)
            ours_out, page = relay_rate(store, bootstrap, relay_topic, events)
            figures["bare_out"].append(bare_out)
            figures["hashed_out"].append(hashed_out)
            figures["ours_out"].append(ours_out)
            relay_topics.append(relay_topic)
        store.engine.dispose()
        for relay_topic in relay_topics:  # each round's consumers (fresh groups) read that round's topic
            figures["bare_in"].append(bare_consumer_rate(bootstrap, relay_topic, events))
            figures["ours_in"].append(consumer_rate(workdir, bootstrap, relay_topic, events))
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
    median = {name: statistics.median(values) for name, values in figures.items()}
    # a target: the median of the rounds' own ratios (each round's sides measured one after the other)
    relay_share = statistics.median(o / b for o, b in zip(figures["ours_out"], figures["bare_out"]))
    consumer_share = statistics.median(o / b for o, b in zip(figures["ours_in"], figures["bare_in"]))

    def spread(name: str) -> str:
        return f"{min(figures[name]):,.0f}–{max(figures[name]):,.0f}"

    common = {"events": events, "partitions": PARTITIONS, "mean value bytes": round(value_bytes),
              "median of": rounds}
    return [
        {"measure": "relay: SQLite event store to Kafka", "unit": "events/s", "ours": median["ours_out"],
         "anchors": {"bare kafka-python producer": median["bare_out"],
                     "the same with the kernel's partitioner (KeyHashPartitioner)": median["hashed_out"]},
         "targets": [{"what": f"≥ 70% of bare producer ({relay_share:.0%})", "met": relay_share >= 0.7}],
         "extra": {**common, "ours range": spread("ours_out"), "bare range": spread("bare_out"),
                   "ours / bare (median of the rounds' ratios)": f"{relay_share:.0%}", "relay page": page}},
        {"measure": "consumer: Kafka to handler with inbox (SQLite)", "unit": "events/s", "ours": median["ours_in"],
         "anchors": {"bare kafka-python consumer": median["bare_in"]},
         "targets": [{"what": f"≥ 60% of bare consumer ({consumer_share:.0%})", "met": consumer_share >= 0.6}],
         "extra": {**common, "ours range": spread("ours_in"), "bare range": spread("bare_in"),
                   "ours / bare (median of the rounds' ratios)": f"{consumer_share:.0%}",
                   "clock starts": "first message received"}},
    ]


if __name__ == "__main__":
    began = time.perf_counter()
    rows = run(Path(tempfile.mkdtemp()), quick=True)
    print(json.dumps(rows, ensure_ascii=False, indent=2))
    print(f"total {time.perf_counter() - began:.1f}s")
