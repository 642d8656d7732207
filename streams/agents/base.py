"""Instrumented agents: the wrapper every Faust agent of streams runs inside.

Per message it decodes the Avro value, activates the trace context from the headers,
runs the handler under a deadline and a retry policy (``RetryPolicy.decide``),
records duration / sampled memory / outcome metrics, and sends what fails for good
to the dead-letter topic, then goes on: bad input never stops a worker. Nothing
collects results. An agent declared for one silo is not started in another.

The steps live in ``streams.agents.wrapper`` (one per module); this module is the
stable import path of the names agents use.
"""

from __future__ import annotations

from streams.agents.wrapper.agent import InstrumentedAgent
from streams.agents.wrapper.attach import attach, from_faust, runs_here
from streams.agents.wrapper.message import BatchHandler, Handler, Message, RawEvent
from streams.agents.wrapper.retry import DeadLetter, Decision, Ignore, Retry, RetryPolicy
from streams.agents.wrapper.spec import AgentSpec, Holder, Mode

__all__ = [
    "AgentSpec",
    "BatchHandler",
    "DeadLetter",
    "Decision",
    "Handler",
    "Holder",
    "Ignore",
    "InstrumentedAgent",
    "Message",
    "Mode",
    "RawEvent",
    "Retry",
    "RetryPolicy",
    "attach",
    "from_faust",
    "runs_here",
]
