"""No task per consumed message (instead of four) in Faust's consumer loop.

faust-streaming 0.15's ``Consumer._drain_messages`` hands every record to the
streams with ``await self.wait_first(callback(message), self.suspend_flow.wait())``:
``Service.wait_first`` wraps the callback, the flow event and the service's stopped
and crashed events in four tasks and an ``asyncio.wait`` per record. Profiled under
the invalidation benchmark that is about a third of the worker's event-loop time
(more than the agent's own work). ``enable()`` replaces ``wait_first`` on Faust's
consumer for that one call shape only: the flow/stopped/crashed watch becomes one
long-lived *gate* task (``Service.wait_first`` itself, on the flow event); the
callback's first step runs inline (in a copy of the context, as a task's would), and
only a callback that has to wait (a full stream buffer) is continued in a task, with
an ``asyncio.wait`` on (that task, gate). What the caller observes is unchanged: it
returns when the callback finishes or the flow is suspended / the consumer stops or
crashes, cancelling an unfinished callback, and re-raises the callback's exception.
Any other call goes to ``Service.wait_first``. ``STREAMS_CONSUMER_FAST_DRAIN=0``
turns it off (see ``streams/app.py``).

It is applied only on the versions it was verified on (``streams/faust_versions.py``;
otherwise an ERROR line ``faust.patch.unverified`` and Faust's own drain), and
``streams_faust_drains_total{path="fast"|"fallback"}`` counts every record handed
over, so a worker that silently lost the fast path shows on a dashboard.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport import consumer as faust_consumer
from mode import Service

from streams import metrics
from streams.faust_versions import DRAIN_VERIFIED, verified

_EVENT_WAIT = asyncio.Event.wait.__code__
_ORIGINAL = Service.wait_first
_GATE = "_streams_flow_gate"

DRAINS = metrics.counter(
    "streams_faust_drains_total",
    "Records Faust's consumer handed to the streams, by path: fast (streams/faust_drain.py) "
    "or fallback (Faust's own wait_first: fast drain off, unverified versions, or flow "
    "suspended).",
    ("path",),
)
_FAST = DRAINS.labels("fast")
_FALLBACK = DRAINS.labels("fallback")


def _is_flow_wait(consumer: Any, coro: Any) -> bool:
    """True if ``coro`` is ``consumer.suspend_flow.wait()`` (not started yet)."""
    if getattr(coro, "cr_code", None) is not _EVENT_WAIT:
        return False
    frame = coro.cr_frame
    return frame is not None and frame.f_locals.get("self") is consumer.suspend_flow


class _Continue:
    """Awaitable driving ``coro`` on from a step that already yielded ``first``."""

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.first
        while True:
            try:
                sent = yield pending  # to the task: the future the coroutine waits on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: passed on to coro
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _resume(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Continue(coro, first)


def _gate(consumer: Any) -> asyncio.Future[Any] | None:
    """The running gate; a new one if the last has finished; None while suspended."""
    gate: asyncio.Future[Any] | None = consumer.__dict__.get(_GATE)
    if gate is not None and not gate.done():
        return gate
    if consumer.suspend_flow.is_set() or consumer._stopped.is_set() or consumer._crashed.is_set():
        return None
    gate = asyncio.ensure_future(_ORIGINAL(consumer, consumer.suspend_flow.wait()))
    consumer.__dict__[_GATE] = gate
    return gate


def _is_drain_call(consumer: Any, coros: tuple[Any, ...], timeout: Any) -> bool:
    """True for ``_drain_messages``' call: (callback(message), suspend_flow.wait())."""
    return len(coros) == 2 and timeout is None and _is_flow_wait(consumer, coros[1])


async def counted_original(self: Any, *coros: Any, timeout: Any = None) -> Any:
    """Faust's own ``wait_first``, counting the drains it makes as fallback ones."""
    if _is_drain_call(self, coros, timeout):
        _FALLBACK.inc()
    return await _ORIGINAL(self, *coros, timeout=timeout)


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    """``Service.wait_first`` for Faust's consumer, without tasks for the drain call."""
    if not _is_drain_call(self, coros, timeout):
        return await _ORIGINAL(self, *coros, timeout=timeout)
    gate = _gate(self)
    if gate is None:
        _FALLBACK.inc()
        return await _ORIGINAL(self, *coros)
    _FAST.inc()
    callback: Coroutine[Any, Any, Any] = coros[0]
    coros[1].close()  # the gate watches the flow event instead
    # Run the callback's first step right here, in its own context as a task would:
    # most records are queued without waiting, so no task is needed at all.
    context = contextvars.copy_context()
    try:
        first = context.run(callback.send, None)
    except StopIteration:
        return None
    # It waits (a full stream buffer, say): a task continues it from that point.
    task = asyncio.get_running_loop().create_task(_resume(callback, first), context=context)
    try:
        await asyncio.wait((task, gate), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    if not task.done():
        task.cancel()  # the flow was suspended (or the consumer stopped) first
    else:
        task.result()  # re-raise its exception (or cancellation), as Service.wait_first does
    return None  # _drain_messages ignores the result


def enable(on: bool = True) -> bool:
    """Use the one-task drain (or Faust's own) in every Faust consumer of this process.

    Returns whether the fast drain is in use: ``on`` and the installed Faust and mode
    are the verified versions (else an ERROR line names both, and Faust's drain runs).
    """
    fast = on and verified("fast_drain", DRAIN_VERIFIED)
    chosen = wait_first if fast else counted_original
    faust_consumer.Consumer.wait_first = chosen  # type: ignore[method-assign]
    return fast
