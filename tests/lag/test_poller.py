"""Poller + collector over a fake ``OffsetSource``: sums, maxes, vanishing series."""

from __future__ import annotations

import re
from collections.abc import Collection

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.lag.collector import LagCollector
from streams.lag.poller import LagPoller
from streams.lag.source import TP, GroupReading, PartitionOffsets


class FakeSource:
    """The cluster as plain dicts; tests mutate it between polls."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupReading] = {}
        self.ends: dict[TP, int] = {}
        self.fail = False

    def read_groups(self, pattern: re.Pattern[str]) -> list[GroupReading]:
        if self.fail:
            raise ConnectionError("broker away")
        return [g for name, g in sorted(self.groups.items()) if pattern.search(name)]

    def read_offsets(self, partitions: Collection[TP]) -> dict[TP, PartitionOffsets]:
        return {tp: PartitionOffsets(0, self.ends[tp]) for tp in partitions if tp in self.ends}

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Values = dict[tuple[str, frozenset[tuple[str, str]]], float]


class World:
    """A fake cluster, a clock, the poller and the collector over its latest snapshot."""

    def __init__(self) -> None:
        self.source, self.clock = FakeSource(), Clock()
        self.poller = LagPoller(self.source, "^app", clock=self.clock)
        self.snap = self.poller.poll()
        self.collector = LagCollector(lambda: self.snap, "test", clock=self.clock)

    def refresh(self) -> None:
        self.snap = self.poller.poll()

    def scrape(self) -> Values:
        registry = CollectorRegistry()
        registry.register(self.collector)
        text = generate_latest(registry).decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }


def series(values: Values, name: str, **labels: str) -> float:
    want = set(labels.items())
    found = [v for (n, lab), v in values.items() if n == name and want <= lab]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


@pytest.fixture
def world() -> World:
    return World()


def test_lag_per_partition_and_aggregates(world: World) -> None:
    source = world.source
    source.ends = {("a", 0): 100, ("a", 1): 50, ("b", 0): 10}
    source.groups["app-1"] = GroupReading(
        "app-1", "stable", 2, {("a", 0): 40, ("a", 1): 50, ("b", 0): 3}
    )
    source.groups["other"] = GroupReading("other", "stable", 1, {("a", 0): 0})
    world.refresh()
    v = world.scrape()
    assert series(v, "kafka_consumergroup_group_lag", group="app-1", topic="a", partition="0") == 60
    assert series(v, "kafka_consumergroup_group_lag", group="app-1", topic="a", partition="1") == 0
    assert series(v, "kafka_consumergroup_group_topic_sum_lag", group="app-1", topic="a") == 60
    assert series(v, "kafka_consumergroup_group_sum_lag", group="app-1") == 67
    assert series(v, "kafka_consumergroup_group_max_lag", group="app-1") == 60
    assert series(v, "kafka_consumergroup_members", group="app-1") == 2
    assert series(v, "kafka_consumergroup_group_state", group="app-1", state="stable") == 1
    assert series(v, "kafka_consumergroup_group_state", group="app-1", state="empty") == 0
    assert series(v, "kafka_partition_latest_offset", topic="a", partition="0") == 100
    assert not [k for k in v if ("group", "other") in k[1]], "the group filter leaked"


def test_time_lag_grows_while_nothing_moves_and_is_zero_when_caught_up(world: World) -> None:
    source, clock = world.source, world.clock
    source.ends = {("a", 0): 0}
    source.groups["app"] = GroupReading("app", None, None, {("a", 0): 0})
    world.refresh()
    for s in range(1, 11):  # 10 messages/s for 10 s, the consumer stuck at 0
        clock.now = 1000.0 + s
        source.ends[("a", 0)] = 10 * s
        world.refresh()
    clock.now = 1015.0
    v = world.scrape()
    # message 0 was appended between t=1000 (end 0) and t=1001 (end 10)
    assert series(v, "kafka_consumergroup_group_lag_seconds", group="app") == pytest.approx(15.0)
    assert series(v, "kafka_consumergroup_group_max_lag_seconds", group="app") == pytest.approx(
        15.0
    )
    source.groups["app"] = GroupReading("app", None, None, {("a", 0): 100})
    world.refresh()
    v = world.scrape()
    assert series(v, "kafka_consumergroup_group_lag_seconds", group="app") == 0.0
    assert series(v, "kafka_consumergroup_group_lag", group="app") == 0
    # state and members are left out when the broker does not report them
    assert not [k for k in v if k[0].startswith("kafka_consumergroup_members")]


def test_a_deleted_group_and_a_deleted_topic_vanish(world: World) -> None:
    source, poller = world.source, world.poller
    source.ends = {("a", 0): 5, ("b", 0): 5}
    source.groups["app-x"] = GroupReading("app-x", "empty", 0, {("a", 0): 1})
    source.groups["app-y"] = GroupReading("app-y", "empty", 0, {("a", 0): 2, ("b", 0): 1})
    world.refresh()
    assert series(world.scrape(), "kafka_consumergroup_group_sum_lag", group="app-x") == 4
    del source.groups["app-x"]
    del source.ends[("b", 0)]
    world.refresh()
    v = world.scrape()
    assert not [k for k in v if ("group", "app-x") in k[1]]
    assert not [k for k in v if ("topic", "b") in k[1]]
    assert series(v, "kafka_consumergroup_group_sum_lag", group="app-y") == 3
    assert set(poller._tables) == {("a", 0)}  # no table kept for what is gone


def test_a_failed_poll_keeps_the_last_snapshot_and_reports_the_broker_down(world: World) -> None:
    from streams.lag.exporter import BROKER_UP, LagExporter

    world.source.ends = {("a", 0): 9}
    world.source.groups["app"] = GroupReading("app", None, None, {("a", 0): 4})
    exporter = LagExporter(world.poller, interval=1.0)
    assert exporter.poll_once()
    good = exporter.snapshot()
    world.source.fail = True
    assert not exporter.poll_once()
    assert exporter.snapshot() is good
    assert BROKER_UP._value.get() == 0
    world.source.fail = False
    world.source.ends[("a", 0)] = 12
    assert exporter.poll_once()
    assert BROKER_UP._value.get() == 1
    assert exporter.snapshot().partitions[0].lag == 8


def test_members_are_left_out_when_an_active_group_reports_none() -> None:
    from streams.lag.source import member_count

    assert member_count("stable", 3) == 3
    assert member_count("empty", 0) == 0
    assert member_count("stable", 0) is None  # the embedded broker's empty member list
    assert member_count("preparing_rebalancing", 0) is None
