"""streams' murmur2 gives the Java client's (aiokafka's) partition for every key."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as reference

from streams.partitioner import murmur2, partition_of


def test_murmur2_matches_the_reference_for_keys_of_every_length() -> None:
    rnd = random.Random(7)
    keys = [bytes(rnd.getrandbits(8) for _ in range(n)) for n in range(70) for _ in range(20)]
    keys += [b"", b"\xff" * 9, f"{rnd.getrandbits(128):032x}".encode()]
    for key in keys:
        assert murmur2(key) == reference(key), key


def test_partitions_are_those_of_the_default_partitioner() -> None:
    router = DefaultPartitioner()
    for n in range(2_000):
        key = f"public-key-{n}".encode()
        for count in (1, 4, 12):
            parts = list(range(count))
            assert partition_of(key, count) == router(key, parts, parts)
