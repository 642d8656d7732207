"""Gaps in what Faust's consumers fetch: read again, and never passed over in silence.

On the embedded broker a fetch can return a batch appended a moment *after* one that is
not visible yet (docs/broker.md #11); aiokafka then moves its position past the missing
batch and Faust never sees those records. Two patches, on the verified versions only
(``streams/faust_versions.py``):

- **Re-read** (aiokafka's ``PartitionRecords``): the record batches of one fetch
  response are checked as aiokafka unpacks them. Batches are contiguous in a partition's
  log (control batches and aborted transactions occupy their offsets too), so a batch
  starting past the expected offset means batches the fetch did not return. Unpacking
  stops there, aiokafka's position stays at the expected offset, and its next fetch
  reads from it: the records past the gap come again after the missing ones. A filled
  gap is logged (``consumer.gap.refetched``) and counted
  (``streams_consumer_gaps_total{agent="faust", outcome="refetched"}``); one still
  there after ``gaps.PATIENCE`` seconds is accepted, logged at ERROR and counted
  (``outcome="accepted"``), and reading goes on. Only non-compacted catalogue topics are
  checked (compaction removes whole batches; Faust's changelogs are not in the catalogue).
- **Report** (Faust's ``Consumer._add_gap``): Faust notes a record more than one past the
  previous one of its partition as a gap. On a topic the re-read does not cover, each
  such gap is logged at ERROR (``consumer.gap.unchecked``) and counted
  (``outcome="unchecked"``).

tests/test_faust_gaps.py reads the installed sources for both calls and unpacks real
aiokafka record batches with a gap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher
from faust.transport import consumer as faust_consumer

from streams import catalogue
from streams.agents.wrapper import gaps
from streams.agents.wrapper.direct import GAPS
from streams.errors import UnknownTopic
from streams.faust_versions import DRAIN_VERIFIED, FETCH_VERIFIED, verified

log = logging.getLogger(__name__)

_ORIGINAL_ADD_GAP: Callable[..., Awaitable[None]] = faust_consumer.Consumer._add_gap
_ORIGINAL_INIT: Callable[..., None] = aiokafka_fetcher.PartitionRecords.__init__
_UNCHECKED = GAPS.labels("faust", "unchecked")
_REFETCHED = GAPS.labels("faust", "refetched")
_ACCEPTED = GAPS.labels("faust", "accepted")

_prefix: str | None = None  # the worker's topic prefix; None: re-read nothing
_checked: dict[str, bool] = {}  # full topic name -> checked
_open: dict[tuple[str, int], tuple[int, float]] = {}  # (topic, partition) -> (expected, since)


def checked(topic: str) -> bool:
    """Whether ``topic`` (a full name) is a non-compacted catalogue topic of this worker."""
    known = _checked.get(topic)
    if known is None:
        known = False
        if _prefix is not None and topic.startswith(_prefix):
            try:
                known = not catalogue.lookup(topic[len(_prefix) :]).compacted
            except UnknownTopic:
                known = False
        _checked[topic] = known
    return known


class GapCheckedRecords:
    """A fetch response's record batches, up to a gap (see the module docstring)."""

    def __init__(self, records: Any, topic: str, partition: int, fetch_offset: int) -> None:
        self._records = records
        self._key = (topic, partition)
        self._expected = fetch_offset
        self._peeked: Any = None
        self._stopped = False

    def has_next(self) -> bool:
        if self._stopped:
            return False
        if self._peeked is None:
            if not self._records.has_next():
                return False
            batch = self._records.next_batch()
            if batch is None:
                return False
            if not self._admit(batch):
                self._stopped = True  # aiokafka's position stays at the gap: fetched again
                return False
            self._peeked = batch
        return True

    def next_batch(self) -> Any:
        if not self.has_next():
            return None
        batch, self._peeked = self._peeked, None
        self._expected = max(self._expected, batch.next_offset)
        return batch

    def _admit(self, batch: Any) -> bool:
        """Whether to unpack ``batch`` (decided once per batch): not past a gap, or past
        one that outlasted the patience."""
        base, expected = batch.base_offset, self._expected
        opened = _open.get(self._key)
        if base > expected:
            now = time.monotonic()
            since = opened[1] if opened and opened[0] == expected else now
            if now - since < gaps.PATIENCE:
                _open[self._key] = (expected, since)
                return False
            _open.pop(self._key, None)
            _report("accepted", self._key, expected, base)
        elif opened is not None and base <= opened[0] < batch.next_offset:
            _open.pop(self._key, None)
            _report("refetched", self._key, opened[0], None)
        return True


_LEVELS = {"refetched": logging.WARNING, "accepted": logging.ERROR, "unchecked": logging.ERROR}
_COUNTERS = {"refetched": _REFETCHED, "accepted": _ACCEPTED, "unchecked": _UNCHECKED}


def _report(outcome: str, key: tuple[str, int], expected: int, got: int | None) -> None:
    _COUNTERS[outcome].inc()
    log.log(
        _LEVELS[outcome],
        f"consumer.gap.{outcome}",
        extra={
            "topic": key[0],
            "partition": key[1],
            "offsets": f"{expected}-{got - 1}" if got is not None else f"from {expected}",
        },
    )


def checked_init(
    self: Any, tp: Any, records: Any, aborted: Any, fetch_offset: int, *a: Any
) -> None:
    """aiokafka's ``PartitionRecords.__init__``, with the batches of a checked topic
    read through ``GapCheckedRecords``."""
    if checked(tp.topic):
        records = GapCheckedRecords(records, tp.topic, tp.partition, fetch_offset)
    _ORIGINAL_INIT(self, tp, records, aborted, fetch_offset, *a)


async def reported_add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Faust's ``_add_gap``, after a log line and a count for a topic the re-read does
    not cover. ``offset_to`` is the offset of the record that came instead."""
    if not checked(tp.topic):
        _report("unchecked", (tp.topic, tp.partition), offset_from, offset_to)
    await _ORIGINAL_ADD_GAP(self, tp, offset_from, offset_to)


def enable(topic_prefix: str) -> bool:
    """Re-read and report the gaps of every Faust consumer of this process (verified
    versions only); ``topic_prefix`` is the worker's (``STREAMS_TOPIC_PREFIX``)."""
    global _prefix
    for counter in (_UNCHECKED, _REFETCHED, _ACCEPTED):
        counter.inc(0)
    _checked.clear()
    if not verified("gap_check", {**DRAIN_VERIFIED, **FETCH_VERIFIED}):
        _prefix = None
        return False
    _prefix = topic_prefix
    aiokafka_fetcher.PartitionRecords.__init__ = checked_init
    faust_consumer.Consumer._add_gap = reported_add_gap  # type: ignore[method-assign]
    return True
