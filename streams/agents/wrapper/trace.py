"""The trace step: a handler runs inside the trace context of the message it handles,
so what it publishes continues the message's trace (``traceparent``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from streams import tracing


@contextmanager
def activated(ctx: tracing.TraceContext | None) -> Iterator[None]:
    """Make ``ctx`` the current trace context for the block (None: no trace)."""
    token = tracing.activate(ctx)
    try:
        yield
    finally:
        tracing.deactivate(token)
