"""Reading consumed Kafka messages in tests."""

from __future__ import annotations

from confluent_kafka import Message


def headers_of(msg: Message) -> dict[str, bytes]:
    """A consumed message's headers by name (a null value reads as ``b""``).

    librdkafka hands consumed headers over as (name, bytes) pairs; the stub's type also
    allows the dict and str forms a producer accepts, hence the normalisation.
    """
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v.encode() if isinstance(v, str) else (v or b"") for k, v in pairs}
