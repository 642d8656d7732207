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
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any

from faust.transport import consumer as faust_consumer
from mode import Service

_EVENT_WAIT = asyncio.Event.wait.__code__
_ORIGINAL = Service.wait_first
_GATE = "_streams_flow_gate"


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


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    if len(coros) != 2 or timeout is not None or not _is_flow_wait(self, coros[1]):
        return await _ORIGINAL(self, *coros, timeout=timeout)
    gate = _gate(self)
    if gate is None:
        return await _ORIGINAL(self, *coros)
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


def enable(on: bool = True) -> None:
    """Use the one-task drain (or Faust's own) in every Faust consumer of this process."""
    faust_consumer.Consumer.wait_first = wait_first if on else _ORIGINAL  # type: ignore[method-assign]
