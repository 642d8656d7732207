"""The attempts step: one message through its handler until the policy says stop."""

from __future__ import annotations

import logging

from streams.agents.wrapper.deadline import within
from streams.agents.wrapper.measure import AgentMetrics
from streams.agents.wrapper.message import Handler, Message
from streams.agents.wrapper.retry import DeadLetter, Ignore, RetryPolicy
from streams.clock import Clock
from streams.dlq.headers import Failure

log = logging.getLogger(__name__)


async def attempt_all(
    agent: str,
    handler: Handler,
    msg: Message,
    *,
    policy: RetryPolicy,
    deadline: float | None,
    clock: Clock,
    measured: AgentMetrics,
) -> Failure | None:
    """Run ``handler`` on ``msg`` until it succeeds or ``policy`` gives up.

    Returns None when handled (or ignored), else the failure to dead-letter with.
    Retries wait on ``clock``; each is counted.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            await within(deadline, handler(msg))
        except Exception as exc:
            decision = policy.decide(exc, attempt)
        else:
            measured.ok.inc()
            return None
        if isinstance(decision, Ignore):
            measured.ignored.inc()
            return None
        if isinstance(decision, DeadLetter):
            log.warning(
                "agent.message.failed",
                extra={
                    "agent": agent,
                    "offset": msg.offset,
                    "partition": msg.partition,
                    "reason": decision.failure.reason.value,
                    "error": decision.failure.message,
                    "attempts": attempt,
                },
            )
            return decision.failure
        measured.retries.inc()
        await clock.sleep(decision.delay)
