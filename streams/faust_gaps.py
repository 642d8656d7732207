"""Offsets Faust's consumer skipped over, reported instead of passed over in silence.

Faust's consumer loop (``Consumer._drain_messages``) notes a record whose offset is
more than one past the previous one of its partition as a *gap* (``_add_gap``), so that
its commits can move over offsets that hold no record (compaction, transaction markers).
On the embedded broker a fetch can also return a later batch before an earlier one is
visible (docs/broker.md #11): the records between are then never handed to the agent.
Direct consumers re-read such a partition (streams/agents/wrapper/gaps.py); Faust's loop
cannot (its next record is already on its way to the stream), so here every gap is
logged at ERROR with its range and counted as
``streams_consumer_gaps_total{agent="faust", outcome="unchecked"}``, which alerts.

Wrapped only on the Faust version whose loop was read (``streams/faust_versions.py``);
tests/test_faust_gaps.py reads the installed source for the call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.transport import consumer as faust_consumer

from streams.agents.wrapper.direct import GAPS
from streams.faust_versions import DRAIN_VERIFIED, verified

log = logging.getLogger(__name__)

_ORIGINAL: Callable[..., Awaitable[None]] = faust_consumer.Consumer._add_gap
_UNCHECKED = GAPS.labels("faust", "unchecked")


async def reported_add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Faust's ``_add_gap``, after a log line and a count. ``offset_to`` is the offset
    of the record that came instead (Faust's interval excludes it from the gap)."""
    _UNCHECKED.inc()
    log.error(
        "consumer.gap.unchecked",
        extra={
            "topic": tp.topic,
            "partition": tp.partition,
            "offsets": f"{offset_from}-{offset_to - 1}",
        },
    )
    await _ORIGINAL(self, tp, offset_from, offset_to)


def enable() -> bool:
    """Report the gaps of every Faust consumer of this process (verified versions only)."""
    _UNCHECKED.inc(0)
    if not verified("gap_report", DRAIN_VERIFIED):
        return False
    faust_consumer.Consumer._add_gap = reported_add_gap  # type: ignore[method-assign]
    return True
