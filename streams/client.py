"""The API for upstream producers. Importing this module does not import Faust.

    from streams.client import publish
    publish("resource-changes", {...}, key=org_id)

Every call checks the value against the topic's Avro schema before anything is sent
and raises ``TypeError`` (``SchemaMismatch``) naming the topic, the field, the
offending type and the reason.
"""

from __future__ import annotations

import threading
from typing import Any

from streams.publisher import Delivered, HeaderInput, Publisher
from streams.settings import get_settings

_lock = threading.Lock()
_publisher: Publisher | None = None


def get_publisher() -> Publisher:
    """The process-wide publisher, built from the environment on first use."""
    global _publisher
    if _publisher is None:
        with _lock:
            if _publisher is None:
                _publisher = Publisher(get_settings())
    return _publisher


def set_publisher(publisher: Publisher | None) -> None:
    """Install (or forget) the process-wide publisher; for workers and tests."""
    global _publisher
    _publisher = publisher


def publish(
    topic: str, value: Any, *, key: str | bytes | int | None = None, headers: HeaderInput = None
) -> Delivered:
    """Publish one value and wait for the broker's acknowledgement."""
    return get_publisher().publish(topic, value, key=key, headers=headers)


async def publish_async(
    topic: str, value: Any, *, key: str | bytes | int | None = None, headers: HeaderInput = None
) -> Delivered:
    """Publish one value; await the acknowledgement without blocking the event loop."""
    return await get_publisher().publish_async(topic, value, key=key, headers=headers)
