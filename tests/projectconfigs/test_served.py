"""The served-configs table's direct path: owned partitions only, counted for the feed.

The table holds each key's value as published (bytes); here a config is ``b"<key>:<n>"``."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any, cast

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.agents.served_configs import ServedFeed
from streams.agents.wrapper.message import Message, RawEvent
from streams.errors import PublishError
from streams.projectconfigs.changelog import UNASSIGNED, ChangelogWriter
from streams.projectconfigs.documents import disabled_record, served_json

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
PARTITIONS = [0, 1, 2, 3]


class Table:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}


class Changelog:
    def __init__(self) -> None:
        self.records: list[tuple[int, bytes, bytes | None]] = []

    def send_raw(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.records.append((partition, key, value))


def check(record: Any) -> bytes:
    return served_json(record)


def feed(owned: set[int]) -> tuple[ServedFeed, Table, Changelog]:
    table, changelog = Table(), Changelog()
    served = ServedFeed(table, cast(ChangelogWriter, changelog), check, 4, lambda: owned)
    return served, table, changelog


def test_only_the_configs_of_owned_partitions_are_served_directly_on_their_partition() -> None:
    router = DefaultPartitioner()  # how Faust routes a GET, and the topic is partitioned
    keys = [f"key-{n}" for n in range(40)]
    served, table, changelog = feed({1, 3})
    done = served.serve([(k, k.encode()) for k in keys] + [("key-0", None)])
    mine = {k for k in keys if router(k.encode(), PARTITIONS, PARTITIONS) in {1, 3}}
    assert {key.decode() for key in done} == mine and 0 < len(mine) < len(keys)
    assert set(table.data) == {k.encode() for k in mine} - {b"key-0"}  # then its tombstone
    assert all(table.data[k] == k for k in table.data)  # the value as published
    for partition, key, _ in changelog.records:
        assert partition == router(key, PARTITIONS, PARTITIONS)


def test_nothing_is_served_directly_while_nothing_is_owned() -> None:
    served, table, changelog = feed(set())
    assert served.serve([("k", b"k:1")]) == []
    assert table.data == {} and changelog.records == []


class Log:
    """``project-configs`` as the feed reads it, with a feed that writes what it
    does not skip as the topic path does (the value as read)."""

    def __init__(self, served: ServedFeed, table: Table) -> None:
        self.served, self.table = served, table
        self.records: list[tuple[str, bytes]] = []
        self.read = 0

    def append(self, key: str, record: bytes) -> None:
        self.records.append((key, record))

    def consume(self, n: int) -> list[str]:
        """Feed the next ``n`` records to ``take``; the keys it handed on."""
        events = [
            RawEvent("configs", self.served.partition_of(k.encode()), o, k.encode(), b"", [], 0.0)
            for o, (k, _) in enumerate(self.records[self.read : self.read + n], self.read)
        ]
        self.read += len(events)
        handed: list[str] = []

        async def process(fresh: list[RawEvent]) -> None:
            for ev in fresh:
                key, record = self.records[ev.offset]
                handed.append(key)
                self.table.data[key.encode()] = record

        asyncio.run(self.served.take(events, process))
        return handed


def counted_feed() -> tuple[ServedFeed, Table, Log]:
    """A feed whose table's changelog is the topic itself (no changelog of its own)."""
    table = Table()
    served = ServedFeed(table, None, check, 4, lambda: {0, 1, 2, 3})
    return served, table, Log(served, table)


def config(key: str, n: int) -> bytes:
    return f"{key}:{n}".encode()


def test_the_feed_skips_the_configs_this_process_served_and_reads_the_others() -> None:
    served, table, log = counted_feed()
    served.serve([("a", config("a", 1)), ("b", config("b", 1))])
    log.append("a", config("a", 1))
    log.append("b", config("b", 1))
    log.append("c", config("c", 1))  # another worker's, of a key not served here
    assert log.consume(3) == ["c"]
    assert table.data[b"c"] == config("c", 1)


def test_another_workers_config_read_after_this_one_wrote_a_newer_one_is_not_served() -> None:
    served, table, log = counted_feed()
    log.append("a", config("a", 1))  # another worker's, earlier in the log
    served.serve([("a", config("a", 2))])  # written here before the feed read the above
    log.append("a", config("a", 2))
    log.consume(1)
    assert table.data[b"a"] == config("a", 2)  # not back to the older one
    log.consume(1)
    assert table.data[b"a"] == config("a", 2)


def test_a_failed_publish_leaves_the_feed_to_read_those_configs() -> None:
    served, table, log = counted_feed()
    done = served.serve([("a", config("a", 1))])
    served.unsent(done)  # the publish failed: its config may be in the log or not
    log.append("a", config("a", 3))  # another worker's, later
    assert log.consume(1) == ["a"]
    assert table.data[b"a"] == config("a", 3)


def test_after_any_interleaving_the_table_holds_the_last_config_of_each_key_in_the_log() -> None:
    rng = random.Random(7)
    for _ in range(300):
        served, table, log = counted_feed()
        keys = ["a", "b", "c"]
        produced: list[tuple[str, bytes]] = []  # served here, not yet in the log (in order)
        for n in range(rng.randint(1, 40)):
            step = rng.random()
            key = rng.choice(keys)
            if step < 0.3:
                served.serve([(key, config(key, n))])
                produced.append((key, config(key, n)))
            elif step < 0.5 and produced:
                log.append(*produced.pop(0))
            elif step < 0.7:
                log.append(key, config(key, n))  # another worker's
            else:
                log.consume(rng.randint(1, 3))
        for own in produced:
            log.append(*own)
        log.consume(len(log.records))
        last = dict(log.records)
        assert {k.decode(): v for k, v in table.data.items()} == last


def test_skipped_configs_wait_until_their_changelog_records_are_acknowledged() -> None:
    class Refusing(Changelog):
        def __init__(self) -> None:
            super().__init__()
            self.flushes = 0

        async def flush(self) -> None:
            self.flushes += 1
            if self.flushes == 1:
                raise PublishError("changelog records not acknowledged")

    changelog = Refusing()
    served = ServedFeed(Table(), cast(ChangelogWriter, changelog), check, 4, lambda: {0})
    asyncio.run(served.flush_until_done())
    assert changelog.flushes == 2  # retried, not given up


def test_owning_every_partition_the_records_are_left_to_the_murmur2_partitioner() -> None:
    """The changelog producer places them (partitioner murmur2_random, as the topic):
    no partition is computed here."""
    served, _, changelog = feed({0, 1, 2, 3})
    done = served.serve([("a", b"a:1"), ("b", None)])
    assert done == [b"a", b"b"]
    assert [(p, k) for p, k, _ in changelog.records] == [(UNASSIGNED, b"a"), (UNASSIGNED, b"b")]


def message(key: bytes, value: Any, raw: bytes | None, offset: int = 0) -> Message:
    return Message("project-configs", 0, offset, key, value, raw, {}, 0.0)


def test_the_topic_path_keeps_the_value_as_read_and_refuses_a_batch_with_a_bad_one() -> None:
    table = Table()
    served = ServedFeed(table, None, check, 4, lambda: {0})
    good = disabled_record("a", NOW)
    asyncio.run(served.handle_batch([message(b"a", good, b"avro-of-a")]))
    assert table.data == {b"a": b"avro-of-a"}  # rendered when asked for, not now

    bad = {**good, "public_key": "b", "config": "not json"}
    batch = [message(b"b", disabled_record("b", NOW), b"avro-of-b"), message(b"c", bad, b"x", 1)]
    with pytest.raises(ValueError):
        asyncio.run(served.handle_batch(batch))
    assert table.data == {b"a": b"avro-of-a"}  # nothing of the failed batch written

    asyncio.run(served.handle_batch([message(b"a", None, None)]))  # a tombstone
    assert table.data == {}


def test_the_feed_takes_over_where_faust_surely_applied_the_recovered_records() -> None:
    """Faust stops its recovery at the high watermark it aimed at (on the embedded broker,
    the base offset of the last batch); records it read past it are not applied, so the
    feed starts after the lower of the two."""
    from types import SimpleNamespace

    from faust.types import TP

    from streams.agents.served_configs import recovered_ends

    recovery = SimpleNamespace(
        active_offsets={TP("t", 0): 1, TP("t", 1): 4, TP("t", 2): -1, TP("other", 0): 9},
        active_highwaters={TP("t", 0): 0, TP("t", 1): 7, TP("t", 2): -1},
    )
    app = SimpleNamespace(tables=SimpleNamespace(recovery=recovery))
    assert recovered_ends(app, "t") == {0: 1, 1: 5, 2: 0}
    assert recovered_ends(SimpleNamespace(), "t") == {}  # no recovery: the group's commit
