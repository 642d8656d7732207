"""The served-configs table's direct path: owned partitions only, marked for the feed."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, cast

from aiokafka.partitioner import DefaultPartitioner

from streams.agents.served_configs import HEADER, ServedFeed
from streams.errors import PublishError
from streams.projectconfigs.changelog import ChangelogWriter
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


def render(record: Any, trusted: bool) -> bytes:
    return served_json(record, trusted=trusted)


def feed(owned: set[int]) -> tuple[ServedFeed, Table, Changelog]:
    table, changelog = Table(), Changelog()
    served = ServedFeed(table, cast(ChangelogWriter, changelog), render, 4, lambda: owned)
    return served, table, changelog


def test_only_the_configs_of_owned_partitions_are_served_directly_on_their_partition() -> None:
    router = DefaultPartitioner()  # how Faust routes a GET, and the topic is partitioned
    keys = [f"key-{n}" for n in range(40)]
    served, table, changelog = feed({1, 3})
    done = served.serve([(k, disabled_record(k, NOW)) for k in keys] + [("key-0", None)])
    mine = {k for k in keys if router(k.encode(), PARTITIONS, PARTITIONS) in {1, 3}}
    assert done == mine and 0 < len(mine) < len(keys)
    assert set(table.data) == {k.encode() for k in mine} - {b"key-0"}  # then its tombstone
    for partition, key, _ in changelog.records:
        assert partition == router(key, PARTITIONS, PARTITIONS)


def test_nothing_is_served_directly_while_nothing_is_owned() -> None:
    served, table, changelog = feed(set())
    assert served.serve([("k", disabled_record("k", NOW))]) == set()
    assert table.data == {} and changelog.records == []


def test_the_feed_skips_only_what_this_process_served() -> None:
    served, _, _ = feed({0, 1, 2, 3})
    other, _, _ = feed({0, 1, 2, 3})
    assert served.served_here([("x", b"1"), (HEADER, served.token)])
    assert not served.served_here([(HEADER, other.token)])
    assert not served.served_here([]) and not served.served_here(None)


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
    served = ServedFeed(Table(), cast(ChangelogWriter, changelog), render, 4, lambda: {0})
    asyncio.run(served.flush_until_done())
    assert changelog.flushes == 2  # retried, not given up
