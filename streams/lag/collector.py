"""Prometheus families rendered from the latest lag ``Snapshot``.

Names follow the ``kafka_consumergroup_*`` / ``kafka_partition_*`` conventions of
kafka-lag-exporter, so dashboards written for it fit. Every scrape renders the
current snapshot from scratch: nothing is left behind for a group or partition that
is gone. Time lag is computed at scrape time from the estimated append time of the
oldest unconsumed message, so it keeps growing between polls while nothing moves.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.lag.poller import Snapshot

# The states a group can report (confluent_kafka.ConsumerGroupState, lower case).
GROUP_STATES = (
    "stable",
    "preparing_rebalancing",
    "completing_rebalancing",
    "empty",
    "dead",
    "unknown",
)

PARTITION = ("cluster_name", "group", "topic", "partition")
GROUP_TOPIC = ("cluster_name", "group", "topic")
GROUP = ("cluster_name", "group")
TOPIC_PARTITION = ("cluster_name", "topic", "partition")


def _gauge(name: str, doc: str, labels: tuple[str, ...]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class LagCollector(Collector):
    """Collector over whatever snapshot ``current()`` returns at scrape time."""

    def __init__(
        self,
        current: Callable[[], Snapshot],
        cluster: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.current = current
        self.cluster = cluster
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the cluster; nothing to check up front

    def collect(self) -> Iterator[Metric]:
        snap, now, c = self.current(), self.clock(), self.cluster
        yield from self._partition_families(snap, now)
        yield from self._aggregate_families(snap, now)
        yield from self._group_families(snap)
        latest = _gauge("kafka_partition_latest_offset", "True end offset.", TOPIC_PARTITION)
        earliest = _gauge("kafka_partition_earliest_offset", "Earliest offset.", TOPIC_PARTITION)
        for (topic, partition), off in sorted(snap.offsets.items()):
            latest.add_metric([c, topic, str(partition)], off.end)
            earliest.add_metric([c, topic, str(partition)], off.earliest)
        yield latest
        yield earliest
        poll = _gauge(
            "kafka_consumergroup_poll_time_ms", "Duration of the last poll.", ("cluster_name",)
        )
        poll.add_metric([c], snap.poll_seconds * 1000.0)
        yield poll

    def _partition_families(self, snap: Snapshot, now: float) -> Iterator[Metric]:
        offset = _gauge(
            "kafka_consumergroup_group_offset", "Last committed offset of the group.", PARTITION
        )
        lag = _gauge("kafka_consumergroup_group_lag", "Offset lag (end - committed).", PARTITION)
        seconds = _gauge(
            "kafka_consumergroup_group_lag_seconds",
            "Estimated age of the oldest unconsumed message, in seconds.",
            PARTITION,
        )
        for p in snap.partitions:
            labels = [self.cluster, p.group, p.topic, str(p.partition)]
            offset.add_metric(labels, p.committed)
            lag.add_metric(labels, p.lag)
            seconds.add_metric(labels, p.lag_seconds(now))
        yield from (offset, lag, seconds)

    def _aggregate_families(self, snap: Snapshot, now: float) -> Iterator[Metric]:
        by_topic: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        by_group: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for p in snap.partitions:
            pair = (p.lag, p.lag_seconds(now))
            by_topic[(p.group, p.topic)].append(pair)
            by_group[p.group].append(pair)
        for scope, labels, rows in (
            ("group_topic", GROUP_TOPIC, {k: v for k, v in by_topic.items()}),
            ("group", GROUP, {(k,): v for k, v in by_group.items()}),
        ):
            total = _gauge(f"kafka_consumergroup_{scope}_sum_lag", "Sum of offset lag.", labels)
            most = _gauge(f"kafka_consumergroup_{scope}_max_lag", "Max offset lag.", labels)
            most_s = _gauge(
                f"kafka_consumergroup_{scope}_max_lag_seconds", "Max time lag, seconds.", labels
            )
            for key, pairs in sorted(rows.items()):
                values = [self.cluster, *key]
                total.add_metric(values, sum(lag for lag, _ in pairs))
                most.add_metric(values, max(lag for lag, _ in pairs))
                most_s.add_metric(values, max(s for _, s in pairs))
            yield from (total, most, most_s)

    def _group_families(self, snap: Snapshot) -> Iterator[Metric]:
        state = _gauge(
            "kafka_consumergroup_group_state",
            "1 for the state the broker reports for the group, 0 for the others.",
            (*GROUP, "state"),
        )
        members = _gauge(
            "kafka_consumergroup_members", "Members the broker reports for the group.", GROUP
        )
        for g in snap.groups:
            if g.state is not None:
                for s in GROUP_STATES:
                    state.add_metric([self.cluster, g.group, s], 1.0 if s == g.state else 0.0)
            if g.members is not None:
                members.add_metric([self.cluster, g.group], g.members)
        yield state
        yield members
