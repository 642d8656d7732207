"""The decode step: raw bytes to a ``Message``, or the failure that dead-letters them."""

from __future__ import annotations

from typing import Any, Protocol

from streams.agents.wrapper.message import LazyHeaders, Message, RawEvent
from streams.dlq.headers import Failure, FailureReason
from streams.errors import DecodeError


class Decoder(Protocol):
    """The codec's reading side (``streams.avro.codec.SingleObjectCodec``)."""

    def decode(self, topic: str, data: bytes) -> Any:
        """The value of ``data``, a message of catalogue topic ``topic``."""
        ...


def decode(
    codec: Decoder, topic: str, ev: RawEvent, *, tombstones: bool = False
) -> Message | Failure:
    """Decode ``ev`` of catalogue topic ``topic``.

    An empty value is a tombstone: a ``Message`` with value None when ``tombstones``
    (compacted topics), else a decode failure.
    """
    try:
        if ev.value is None:
            if not tombstones:
                raise DecodeError("empty value (tombstone) on a non-compacted topic")
            value = None
        else:
            value = codec.decode(topic, ev.value)
    except DecodeError as exc:
        return Failure.of(FailureReason.DECODE, exc)
    return Message(
        topic, ev.partition, ev.offset, ev.key, value, ev.value, LazyHeaders(ev), ev.timestamp
    )
