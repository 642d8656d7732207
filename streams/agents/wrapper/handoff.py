"""Records a worker published to a topic its own direct consumer reads: handled at once.

``resource_changes`` publishes each webhook delivery to ``webhook-deliveries`` and
``webhook_delivery`` reads it back; on the embedded broker that hop costs about 7 ms
(the producer's linger, the append, the rest of the fetch the broker holds), a third of
a change's latency at light load (bench/README.md). When the worker that published a
delivery also owns its partition in the reading agent's group, the hop carries nothing
the worker does not already know: the record is acknowledged by the broker (so durable,
and on the topic for any later owner), and its partition, offset and bytes are in the
delivery report.

``Handoff.offer`` hands such acknowledged records to the reading agent's wrapper at once,
as a batch of its own (the same decode, handler, retries, dead letters and metrics as a
consumed batch), and *claims* their offsets. When the direct consumer reaches a claimed
offset it does not hand the record over again: it waits until the early handling is
done, then commits it with its batch. So each record is handled once by this worker,
and its offset is committed only after it was handled (a crash before then hands it to
the next owner, as for any consumed record: at least once).

Races, and why they are safe:
- The consumer may fetch a record before its delivery report reaches ``offer`` (both
  follow the broker's append). ``offer`` and ``split`` share a lock, and ``split``
  remembers the last offset it handed out per partition: a record the consumer already
  took is not claimed.
- A partition revoked meanwhile: its claims are forgotten; its next owner reads the
  records from the topic (the delivered log skips what was acknowledged already).
- Early handling that fails with an error escaping the wrapper: the consumer handles
  those records itself.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from streams import metrics
from streams.agents.wrapper.message import RawEvent

log = logging.getLogger(__name__)

HANDOFFS = metrics.counter(
    "streams_consumer_handoffs_total",
    "Records a worker published and handled at once because its own direct consumer of "
    "the topic owns their partition (streams/agents/wrapper/handoff.py), by agent.",
    ("agent",),
)


class Processor(Protocol):
    async def process(self, events: Sequence[RawEvent]) -> None: ...


class Handoff:
    """The claims of one direct agent (see the module docstring)."""

    def __init__(self, agent: str, runner: Processor) -> None:
        self.agent = agent
        self.runner = runner
        self._lock = threading.Lock()
        self._owned: set[int] = set()
        self._taken: dict[int, int] = {}  # partition -> last offset the consumer handed out
        self._claims: dict[int, dict[int, asyncio.Task[None]]] = {}
        self._count = HANDOFFS.labels(agent)

    # The consumer's side (its thread) ------------------------------------------------

    def assigned(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self._owned = set(partitions)

    def revoked(self) -> None:
        with self._lock:
            self._owned = set()
            self._taken.clear()
            self._claims.clear()

    def split(
        self, events: Sequence[RawEvent]
    ) -> tuple[list[RawEvent], list[tuple[RawEvent, asyncio.Task[None]]]]:
        """The events to hand to the agent, and those handled early (with their task)."""
        fresh: list[RawEvent] = []
        claimed: list[tuple[RawEvent, asyncio.Task[None]]] = []
        with self._lock:
            for ev in events:
                p = ev.partition
                if self._taken.get(p, -1) < ev.offset:
                    self._taken[p] = ev.offset
                task = self._claims.get(p, {}).pop(ev.offset, None)
                if task is None:
                    fresh.append(ev)
                else:
                    claimed.append((ev, task))
            for p in {ev.partition for ev in events}:
                claims = self._claims.get(p)
                if claims:  # offsets the consumer passed without reading (a seek): unclaim
                    for offset in [o for o in claims if o <= self._taken[p]]:
                        del claims[offset]
        return fresh, claimed

    # The publisher's side (the event loop) --------------------------------------------

    def offer(self, records: Sequence[RawEvent]) -> int:
        """Handle at once the acknowledged ``records`` whose partition this worker's
        consumer owns and has not read past; returns how many."""
        with self._lock:
            mine = [
                r
                for r in records
                if r.partition in self._owned and r.offset > self._taken.get(r.partition, -1)
            ]
            if not mine:
                return 0
            task = asyncio.get_running_loop().create_task(self.runner.process(mine))
            for r in mine:
                self._claims.setdefault(r.partition, {})[r.offset] = task
        task.add_done_callback(self._report)
        self._count.inc(len(mine))
        return len(mine)

    def _report(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "consumer.handoff.failed",
                extra={"agent": self.agent, "error": repr(task.exception())},
            )


async def settled(tasks: Iterable[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
    """Wait for every task; the failed (or cancelled) ones."""
    unique = set(tasks)
    await asyncio.gather(*unique, return_exceptions=True)
    return {t for t in unique if t.cancelled() or t.exception() is not None}
