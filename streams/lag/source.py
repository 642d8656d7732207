"""Reading consumer groups and partition offsets from the cluster (confluent-kafka).

``KafkaOffsetSource`` uses one ``AdminClient`` for groups, committed offsets and
ListOffsets, and one assign-only ``Consumer`` to find true end offsets. The embedded
broker answers ListOffsets(latest) with the base offset of the last record batch + 1
(docs/broker.md #2), so for every partition whose reported latest changed since the
last poll it fetches once from (reported latest - 1) and reads the high watermark of that
fetch. On Apache Kafka the probe returns the same number ListOffsets did; it costs
one small fetch per changed partition and no fetch at all for idle ones.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from streams.errors import StreamsError

log = logging.getLogger(__name__)

TP = tuple[str, int]
PROBE_GROUP = "streams-lag-exporter-probe"
ACTIVE_STATES = frozenset({"stable", "preparing_rebalancing", "completing_rebalancing"})


class LagSourceError(StreamsError, KafkaException):
    """The cluster could not be read (broker away, request timed out)."""


@dataclass(frozen=True)
class GroupReading:
    """One consumer group as the broker reports it; offsets only where committed."""

    group: str
    state: str | None = None  # lower-case broker state; None when not reported
    members: int | None = None  # None when the broker did not describe the group
    committed: dict[TP, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionOffsets:
    earliest: int
    end: int  # the true end (next offset to be written)


class OffsetSource(Protocol):
    """Where the poller reads from; a fake implements it in unit tests."""

    def read_groups(self, pattern: re.Pattern[str]) -> list[GroupReading]: ...

    def read_offsets(self, partitions: Collection[TP]) -> dict[TP, PartitionOffsets]: ...

    def close(self) -> None: ...


def _result(fut: Future[Any], timeout: float, what: str) -> Any:
    try:
        return fut.result(timeout)
    except KafkaException:
        raise
    except Exception as exc:  # concurrent.futures.TimeoutError and friends
        raise LagSourceError(f"{what}: {exc!r}") from exc


class KafkaOffsetSource:
    """``OffsetSource`` over a real cluster; every call is bounded by ``timeout``."""

    def __init__(self, config: dict[str, Any], timeout: float = 10.0) -> None:
        self.timeout = timeout
        quiet = {"log.connection.close": False}
        self._admin = AdminClient({**config, **quiet})
        self._probe = Consumer(
            {
                **config,
                **quiet,
                "group.id": PROBE_GROUP,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                "isolation.level": "read_uncommitted",
                # Only the high watermark of the fetch matters: keep fetches small.
                "fetch.wait.max.ms": 20,
                "max.partition.fetch.bytes": 65536,
                "fetch.max.bytes": 4 << 20,
                "queued.max.messages.kbytes": 8192,
            }
        )
        # reported latest -> true end, per partition, from the last successful probe
        self._ends: dict[TP, tuple[int, int]] = {}
        self.probe_misses = 0

    def close(self) -> None:
        self._probe.close()

    # -- groups ---------------------------------------------------------------------
    def read_groups(self, pattern: re.Pattern[str]) -> list[GroupReading]:
        listing = _result(
            self._admin.list_consumer_groups(request_timeout=self.timeout),
            self.timeout + 1,
            "list consumer groups",
        )
        if listing.errors and not listing.valid:
            raise LagSourceError(f"list consumer groups: {listing.errors[0]}")
        ids = sorted(
            g.group_id
            for g in listing.valid
            if g.group_id != PROBE_GROUP and pattern.search(g.group_id)
        )
        if not ids:
            return []
        described = self._describe(ids)
        committed = self._committed(ids)
        return [
            GroupReading(g, *described.get(g, (None, None)), committed=committed[g])
            for g in ids
            if g in committed
        ]

    def _describe(self, ids: list[str]) -> dict[str, tuple[str | None, int | None]]:
        out: dict[str, tuple[str | None, int | None]] = {}
        futures = self._admin.describe_consumer_groups(ids, request_timeout=self.timeout)
        for group, fut in futures.items():
            try:
                d = _result(fut, self.timeout + 1, f"describe {group}")
            except KafkaException as exc:
                # State and members are extras: lag is still right without them.
                log.debug("lag.describe.failed", extra={"group": group, "error": str(exc)})
                continue
            state = d.state.name.lower()
            out[group] = (state, member_count(state, len(d.members)))
        return out

    def _committed(self, ids: list[str]) -> dict[str, dict[TP, int]]:
        # The client takes one group per request; send them all, then wait.
        futures: dict[str, Future[Any]] = {}
        for g in ids:
            futures.update(
                self._admin.list_consumer_group_offsets(
                    [ConsumerGroupTopicPartitions(g)], request_timeout=self.timeout
                )
            )
        out: dict[str, dict[TP, int]] = {}
        for group, fut in futures.items():
            try:
                res = _result(fut, self.timeout + 1, f"offsets of {group}")
            except KafkaException as exc:
                if _is_gone(exc):
                    continue  # deleted between listing and reading: simply not there
                raise
            out[group] = {
                (tp.topic, tp.partition): tp.offset
                for tp in res.topic_partitions
                if tp.error is None and tp.offset >= 0
            }
        return out

    # -- offsets --------------------------------------------------------------------
    def read_offsets(self, partitions: Collection[TP]) -> dict[TP, PartitionOffsets]:
        if not partitions:
            return {}
        latest = self._list_offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        earliest = self._list_offsets(latest, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        changed = {
            tp: hi
            for tp, hi in latest.items()
            if hi > earliest.get(tp, 0) and self._ends.get(tp, (-1, -1))[0] != hi
        }
        if changed:
            for tp, end in self._true_ends(changed).items():
                self._ends[tp] = (changed[tp], end)
        for tp in list(self._ends):
            if tp not in latest:
                del self._ends[tp]  # topic deleted: forget it
        out: dict[TP, PartitionOffsets] = {}
        for tp, hi in latest.items():
            reported, true_end = self._ends.get(tp, (hi, hi))
            end = true_end if reported == hi else hi
            out[tp] = PartitionOffsets(earliest.get(tp, 0), max(end, hi))
        return out

    def _list_offsets(self, partitions: Iterable[TP], spec: Any) -> dict[TP, int]:
        futures = self._admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in partitions}, request_timeout=self.timeout
        )
        out: dict[TP, int] = {}
        for tp, fut in futures.items():
            try:
                res = _result(fut, self.timeout + 1, "list offsets")
                out[(tp.topic, tp.partition)] = res.offset
            except KafkaException as exc:
                if not _is_gone(exc):
                    raise
        return out

    def _true_ends(self, reported: dict[TP, int]) -> dict[TP, int]:
        """Fetch once from (reported - 1) per partition; the fetch's high watermark.

        A partition is done when a record of it arrived, or when its cached high
        watermark reached the reported end: on Apache Kafka the last offset can be a
        transaction marker, which a consumer never receives. A cached value left from
        an earlier probe is always below a changed reported end, so it cannot pass.
        """
        self._probe.assign([TopicPartition(t, p, hi - 1) for (t, p), hi in reported.items()])
        out: dict[TP, int] = {}
        deadline = time.monotonic() + self.timeout
        try:
            while len(out) < len(reported) and time.monotonic() < deadline:
                seen: set[TP] = set()
                for m in self._probe.consume(num_messages=10_000, timeout=0.05):
                    if m.error() is None:
                        seen.add((str(m.topic()), int(m.partition() or 0)))
                for key in reported.keys() - out.keys():
                    _, hwm = self._probe.get_watermark_offsets(TopicPartition(*key), cached=True)
                    if key in seen or (hwm is not None and hwm >= reported[key]):
                        out[key] = max(hwm or 0, reported[key])
        finally:
            self._probe.unassign()
        missed = len(reported) - len(out)
        if missed:
            # Not an error for the poll: those partitions keep their reported value.
            self.probe_misses += missed
            log.warning("lag.probe.incomplete", extra={"missed": missed})
        return out


def member_count(state: str, members: int) -> int | None:
    """The member count, or None where the broker evidently does not report members.

    A stable or rebalancing group has at least one member; the embedded broker
    describes such groups with none (docs/broker.md #7), so 0 there means "not reported".
    """
    if members == 0 and state in ACTIVE_STATES:
        return None
    return members


def _is_gone(exc: KafkaException) -> bool:
    from confluent_kafka import KafkaError

    err = exc.args[0] if exc.args else None
    code = err.code() if isinstance(err, KafkaError) else None
    return code in (
        KafkaError.GROUP_ID_NOT_FOUND,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
    )
