"""The batch step: a whole batch through the batch handler, or ``False`` to go one by one.

The handler sees every message; each keeps its own trace context (``Message.trace``,
which ``streams.agents.batch_io`` activates per output). The call runs in the
batch's shared trace when all its messages carry the same trace, else in none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from streams.agents.wrapper.deadline import within
from streams.agents.wrapper.measure import AgentMetrics
from streams.agents.wrapper.message import BatchHandler, Message
from streams.agents.wrapper.trace import activated
from streams.tracing import H_TRACEPARENT, TraceContext

log = logging.getLogger(__name__)


async def run_batch(
    agent: str,
    handler: BatchHandler,
    msgs: Sequence[Message],
    *,
    deadline: float | None,
    measured: AgentMetrics,
) -> bool:
    """Whole-batch fast path; on any error the caller falls back to one by one."""
    try:
        with activated(shared_trace(msgs)), measured.call(len(msgs), failures=False):
            await within(deadline, handler(msgs))
    except Exception as exc:
        log.warning(
            "agent.batch.failed", extra={"agent": agent, "error": repr(exc), "size": len(msgs)}
        )
        return False
    measured.ok.inc(len(msgs))
    return True


def shared_trace(msgs: Sequence[Message]) -> TraceContext | None:
    """The trace context every message of ``msgs`` carries, if they share one."""
    first = msgs[0].trace if msgs else None
    if first is None:
        return None
    # Compare the trace-id part of the raw headers: no parse per message of a batch.
    want = first.trace_id.encode()
    for m in msgs[1:]:
        raw = m.headers.get(H_TRACEPARENT)
        if raw is None or raw[3:35] != want:
            return None
    return first
