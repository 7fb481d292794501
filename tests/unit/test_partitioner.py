"""The kernel's producers partition keyed records exactly as kafka-python's default partitioner
(and so the Java client) does, remembering each key's hash (services.kernel.kafka.KeyHashPartitioner)."""

from __future__ import annotations

import pytest
from kafka.partitioner.default import DefaultPartitioner

from services.kernel.kafka import KeyHashPartitioner


class Cluster:
    """The part of kafka-python's ClusterMetadata a partitioner reads."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def topics(self):
        return set(self.partitions)

    def partitions_for_topic(self, topic):
        return set(range(self.partitions[topic])) if topic in self.partitions else None

    def available_partitions_for_topic(self, topic):
        return self.partitions_for_topic(topic)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 12])
def test_a_key_goes_to_the_partition_the_default_partitioner_chooses(count):
    cluster, ours, default = Cluster({"t": count}), KeyHashPartitioner(), DefaultPartitioner()
    keys = [f"project-{i:04x}".encode() for i in range(500)] + [b"", b"a", bytearray(b"stream-1")]
    for _ in range(2):  # the second time from the remembered hashes
        for key in keys:
            assert ours.partition("t", key, key, None, None, cluster) == \
                default.partition("t", key, key, None, None, cluster)
    assert len({ours.partition("t", k, k, None, None, cluster) for k in keys}) == count  # all are used


def test_hashes_are_remembered_up_to_a_bound_and_the_rest_is_as_the_default_does():
    ours, cluster = KeyHashPartitioner(), Cluster({"t": 3})
    for i in range(KeyHashPartitioner.KEYS_KEPT + 100):
        ours.partition("t", None, f"k{i}".encode(), None, None, cluster)
    assert ours._hash.cache_info().currsize == KeyHashPartitioner.KEYS_KEPT
    assert ours.partition("t", None, None, None, None, cluster) in {0, 1, 2}  # no key: any partition
    with pytest.raises(ValueError, match="not found"):  # a topic the metadata does not hold
        ours.partition("other", b"k", b"k", None, None, cluster)
