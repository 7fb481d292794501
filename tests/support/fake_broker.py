"""An in-memory broker for UNIT tests only: a producer and a BrokerView over shared state.

It mirrors the real adapters the relay and the consumer use, with the same signatures and return
shapes, so the code under test cannot tell them apart:

* :class:`FakeProducer` is what :func:`services.kernel.kafka.make_producer` returns as far as the
  relay uses it: ``send(topic, key=, value=, headers=)`` returns a future with ``is_done``,
  ``failed()``, ``exception``, ``value`` (``.partition``, ``.offset``) and ``get(timeout=)``;
  ``flush(timeout=)``, ``close(timeout=)``. Records go to the partition of the key's murmur2 hash,
  as kafka-python's default partitioner puts them; sending to a missing topic fails the future
  (a real Kafka with ``allow_auto_create_topics=False`` creates nothing).
* :class:`FakeBrokerView` is :class:`services.kernel.kafka.BrokerView`: ``topics(names)``,
  ``create(mapping, replication_factor)``, ``end_offsets(partitions, beyond=None, timeout=,
  fetch=True)`` (``ListOffsets`` first, a fetch's high watermark when that cannot tell; set
  :attr:`FakeBroker.listed_behind` for a broker whose ``ListOffsets`` undercounts, as tansu's
  does), ``begin_offsets(partitions)``, ``committed(group_id)``, ``records(topic, partitions,
  start=None)``, ``last_records(topic, partitions)``, ``close()``.

What a broker can do to the data, for the tests to inflict: :meth:`FakeBroker.wipe` (it came back
empty: every topic and group offset gone), :meth:`FakeBroker.truncate` (records from an offset on
dropped, same topic id: an unclean leader election), :meth:`FakeBroker.recreate` (a new topic id,
empty), plus :meth:`FakeBroker.delete_before` (retention), :meth:`FakeBroker.commit` /
:meth:`FakeBroker.forget_offsets` (group offsets) and :attr:`FakeBroker.failure` (an exception
every view call and every send raises: the broker does not answer).

It is no substitute for the real broker: integration tests run against tansu
(``tests/support/broker.py``).
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Iterable, Iterator, Mapping

from kafka.errors import KafkaError, UnknownTopicOrPartitionError
from kafka.partitioner.default import murmur2

from services.kernel.kafka import FetchedEnds, TopicInfo


@dataclasses.dataclass(frozen=True)
class FakeRecord:
    """A stored record, with the attributes of a kafka-python ``ConsumerRecord`` tests read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclasses.dataclass(frozen=True)
class FakeRecordMetadata:
    """What an acknowledged send resolves to (kafka-python's ``RecordMetadata``, the fields used)."""

    topic: str
    partition: int
    offset: int


class _Partition:
    def __init__(self) -> None:
        self.begin = 0  # the first offset still held (records before it were deleted)
        self.records: list[FakeRecord] = []  # records[i] has offset begin + i

    @property
    def end(self) -> int:
        return self.begin + len(self.records)


class _Topic:
    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.topic_id = str(uuid.uuid4())
        self.partitions = [_Partition() for _ in range(partitions)]


class FakeBroker:
    """The shared state: topics with their ids and records, and groups' committed offsets."""

    def __init__(self) -> None:
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, dict[tuple[str, int], int]] = {}
        self._round_robin = itertools.count()
        self.failure: BaseException | None = None  # set: every view call and send raises/fails with it
        # How far ListOffsets(latest) falls short of a partition's end (never below its beginning):
        # the local broker answers the last batch's base offset + 1, fewer when records were batched.
        self.listed_behind = 0

    # -- clients ----------------------------------------------------------------------------

    def producer(self) -> "FakeProducer":
        return FakeProducer(self)

    def view(self) -> "FakeBrokerView":
        return FakeBrokerView(self)

    # -- topics and records -----------------------------------------------------------------

    def create_topic(self, name: str, partitions: int) -> str:
        """Create ``name`` with ``partitions`` (no-op when it exists); returns its topic id."""
        if name not in self._topics:
            self._topics[name] = _Topic(name, partitions)
        return self._topics[name].topic_id

    def has_topic(self, name: str) -> bool:
        return name in self._topics

    def topic_id(self, name: str) -> str:
        return self._topic(name).topic_id

    def partition_count(self, name: str) -> int:
        return len(self._topic(name).partitions)

    @staticmethod
    def partition_for(key: bytes | None, partitions: int) -> int | None:
        """The partition a keyed record goes to: murmur2, as kafka-python's default partitioner."""
        if key is None:
            return None
        return (murmur2(key) & 0x7FFFFFFF) % partitions

    def append(self, topic: str, key: bytes | None = None, value: bytes | None = None,
               headers: Iterable[tuple[str, bytes]] = (), partition: int | None = None) -> FakeRecord:
        """Store one record (what an acknowledged send does); a missing topic raises."""
        found = self._topic(topic)
        count = len(found.partitions)
        if partition is None:
            partition = self.partition_for(key, count)
        if partition is None:
            partition = next(self._round_robin) % count
        if not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(f"{topic}/{partition}")
        held = found.partitions[partition]
        record = FakeRecord(topic, partition, held.end, key, value, list(headers or []))
        held.records.append(record)
        return record

    def records(self, topic: str, partition: int | None = None) -> list[FakeRecord]:
        """The records the broker holds now, partition by partition in offset order."""
        found = self._topic(topic)
        wanted = range(len(found.partitions)) if partition is None else [partition]
        return [record for p in wanted for record in found.partitions[p].records]

    def end(self, topic: str, partition: int) -> int:
        return self._topic(topic).partitions[partition].end

    # -- what a broker may do to its data ----------------------------------------------------

    def wipe(self) -> None:
        """The broker came back empty: every topic and every group's offsets are gone."""
        self._topics.clear()
        self._groups.clear()

    def truncate(self, topic: str, partition: int, end: int) -> None:
        """Drop the records from offset ``end`` on; the topic keeps its id."""
        held = self._topic(topic).partitions[partition]
        if end < held.begin:
            raise ValueError(f"cannot truncate {topic}/{partition} to {end}: it begins at {held.begin}")
        del held.records[end - held.begin:]

    def recreate(self, topic: str, partitions: int | None = None) -> str:
        """Delete the topic and create it again, empty, with a new id; returns the new id."""
        count = partitions if partitions is not None else len(self._topic(topic).partitions)
        del self._topics[topic]
        return self.create_topic(topic, count)

    def delete_topic(self, topic: str) -> None:
        self._topics.pop(topic, None)

    def delete_before(self, topic: str, partition: int, offset: int) -> None:
        """Records before ``offset`` deleted (retention): the partition now begins there."""
        held = self._topic(topic).partitions[partition]
        offset = min(max(offset, held.begin), held.end)
        del held.records[:offset - held.begin]
        held.begin = offset

    # -- group offsets ----------------------------------------------------------------------

    def commit(self, group_id: str, topic: str, partition: int, offset: int) -> None:
        self._groups.setdefault(group_id, {})[(topic, partition)] = offset

    def forget_offsets(self, group_id: str, topic: str | None = None, partition: int | None = None) -> None:
        """The broker lost a group's committed offsets (all, a topic's, or one partition's)."""
        offsets = self._groups.get(group_id, {})
        for key in list(offsets):
            if (topic is None or key[0] == topic) and (partition is None or key[1] == partition):
                del offsets[key]

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        return dict(self._groups.get(group_id, {}))

    # -- internals --------------------------------------------------------------------------

    def _topic(self, name: str) -> _Topic:
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"topic {name} does not exist") from None

    def _listed_end(self, topic: str, partition: int) -> int:
        held = self._topic(topic).partitions[partition]
        return max(held.begin, held.end - self.listed_behind)

    def _answer(self) -> None:
        if self.failure is not None:
            raise self.failure


class FakeFuture:
    """A send's outcome, decided at once (the fake has no in-flight state)."""

    def __init__(self, value: FakeRecordMetadata | None = None, exception: BaseException | None = None) -> None:
        self.is_done = True
        self.value = value
        self.exception = exception

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def get(self, timeout: float | None = None) -> FakeRecordMetadata:
        if self.exception is not None:
            raise self.exception
        return self.value  # type: ignore[return-value]


class FakeProducer:
    """The producer interface the relay uses, storing into a :class:`FakeBroker`.

    Unlike a real one it keeps working after ``close()`` (counted in ``closes``), so a factory may
    hand out the same instance again after the relay dropped it."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.closes = 0
        self.sent = 0

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> FakeFuture:
        try:
            self.broker._answer()
            record = self.broker.append(topic, key=key, value=value, headers=headers or [], partition=partition)
        except KafkaError as exc:
            return FakeFuture(exception=exc)
        self.sent += 1
        return FakeFuture(FakeRecordMetadata(record.topic, record.partition, record.offset))

    def flush(self, timeout: float | None = None) -> None:
        return None

    def close(self, timeout: float | None = None) -> None:
        self.closes += 1


class FakeBrokerView:
    """:class:`services.kernel.kafka.BrokerView` over a :class:`FakeBroker`: same methods, same shapes."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.closes = 0
        self.end_offset_calls = 0
        self.fetches = 0  # end_offsets answers that needed the (real view's) fetch probe
        self._topic_ids: dict[str, str | None] = {}
        self._fetched = FetchedEnds()  # the real view's rule for reusing fetched ends

    def close(self) -> None:
        self.closes += 1

    def topics(self, names: Iterable[str]) -> dict[str, TopicInfo | None]:
        """Each topic's id and partition count, or None when the broker does not have it."""
        self.broker._answer()
        found: dict[str, TopicInfo | None] = {}
        for name in names:
            topic = self.broker._topics.get(name)
            found[name] = None if topic is None else TopicInfo(name, topic.topic_id, len(topic.partitions))
            self._topic_ids[name] = None if topic is None else topic.topic_id
        return found

    def create(self, topics: Mapping[str, int], replication_factor: int) -> None:
        """Create the topics that do not exist (an existing one is left as it is, as the real
        view swallows ``TopicAlreadyExistsError``)."""
        self.broker._answer()
        for name, partitions in topics.items():
            self.broker.create_topic(name, partitions)

    def end_offsets(self, partitions: Mapping[str, int], beyond: Mapping[tuple[str, int], int] | None = None,
                    timeout: float = 5.0, fetch: bool = True, reuse_seconds: float = 0.0) -> dict[tuple[str, int], int]:
        """``{topic: partition count}`` in, ``{(topic, partition): end offset}`` out, decided as
        the real view decides: the ``ListOffsets`` answer (which falls
        :attr:`FakeBroker.listed_behind` short of the end) when ``fetch`` is false or when it lies
        beyond each offset of ``beyond``; the ends fetched before when ``reuse_seconds`` lets them
        be reused (same ids, same answers, young enough); otherwise the true end
        (a fetch's high watermark)."""
        self.broker._answer()
        self.end_offset_calls += 1
        wanted = self._wanted(partitions)
        listed = {key: self.broker._listed_end(*key) for key in wanted}
        if not fetch or (beyond is not None and all(listed[key] > beyond.get(key, -1) for key in listed)):
            return listed
        reused = self._fetched.reusable(listed, self._topic_ids, reuse_seconds)
        if reused is not None:
            return reused
        self.fetches += 1
        ends = {key: self.broker._topic(key[0]).partitions[key[1]].end for key in wanted}
        self._fetched.keep(listed, ends, self._topic_ids)
        return ends

    def begin_offsets(self, partitions: Mapping[str, int]) -> dict[tuple[str, int], int]:
        self.broker._answer()
        return {key: self.broker._topic(key[0]).partitions[key[1]].begin for key in self._wanted(partitions)}

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets on the broker: ``{(topic, partition): offset}``."""
        self.broker._answer()
        return self.broker.committed(group_id)

    def records(self, topic: str, partitions: int, start: Mapping[int, int] | None = None,
                timeout: float = 30.0) -> Iterator[FakeRecord]:
        """The records of ``topic`` from ``start`` (per partition; the beginning where not given)."""
        self.broker._answer()
        for partition in range(partitions):
            held = self.broker._topic(topic).partitions[partition]
            first = max(held.begin, (start or {}).get(partition, held.begin))
            yield from held.records[first - held.begin:]

    def last_records(self, topic: str, partitions: int) -> dict[int, FakeRecord]:
        """The last record of each partition that holds any."""
        self.broker._answer()
        found = self.broker._topic(topic).partitions[:partitions]
        return {p: held.records[-1] for p, held in enumerate(found) if held.records}

    def _wanted(self, partitions: Mapping[str, int]) -> list[tuple[str, int]]:
        wanted = [(topic, p) for topic, count in partitions.items() for p in range(count)]
        for topic, p in wanted:
            if p >= len(self.broker._topic(topic).partitions):
                raise UnknownTopicOrPartitionError(f"{topic}/{p}")
        return wanted
