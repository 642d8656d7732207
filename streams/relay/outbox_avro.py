"""A precompiled Avro encoder for the relay's OutboxMessage rows (the relay's hot path).

fastavro's ``schemaless_writer`` walks the schema for every value (~3.7 us a row, plus
the value dict the relay would build for it); this writes the fixed OutboxMessage field
sequence straight from a claimed row (~2 us). It is only used when the schema is exactly
the shape below (``compile_outbox`` returns None otherwise, and the relay goes through
fastavro), and tests/relay/test_outbox_avro.py proves byte-identical output against
fastavro for many random rows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.avro.varint import long_bytes
from streams.relay.messages import Row

_STR = "string"
_OPT_STR = ("null", "string")
_MILLIS = ("long", "timestamp-millis")

# The OutboxMessage fields, in schema order, with the type each must have.
OUTBOX_FIELDS: tuple[tuple[str, object], ...] = (
    ("outbox_id", "long"),
    ("shard_scope", _STR),
    ("shard_identifier", "long"),
    ("category", _STR),
    ("object_identifier", "long"),
    ("payload", _OPT_STR),
    ("region_name", _OPT_STR),
    ("scheduled_for", _MILLIS),
    ("date_added", _MILLIS),
)


def _shape(avro_type: Any) -> object:
    if isinstance(avro_type, list):
        return tuple(_shape(t) for t in avro_type)
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        return (avro_type.get("type"), logical) if logical else _shape(avro_type.get("type"))
    return avro_type


def millis(t: dt.datetime) -> int:
    """Epoch milliseconds, as messages.outbound computes them."""
    return int(t.timestamp() * 1000)


def _string(s: str) -> bytes:
    data = s.encode()
    return long_bytes(len(data)) + data


class OutboxEncoder:
    """Encodes Rows to OutboxMessage Avro bodies (no single-object header)."""

    def __init__(self) -> None:
        self._strings: dict[str, bytes] = {}  # scopes, categories, regions repeat
        # Rows of one transaction share their timestamps: datetime -> (Avro long bytes,
        # decimal millis for the date-added header). A datetime's hash is cheaper than
        # its timestamp() (psycopg's zoneinfo tz) and the varint loop.
        self._times: dict[dt.datetime, tuple[bytes, bytes]] = {}

    def _cached(self, s: str) -> bytes:
        found = self._strings.get(s)
        if found is None:
            found = _string(s)
            if len(self._strings) < 10_000:
                self._strings[s] = found
        return found

    def time_parts(self, t: dt.datetime) -> tuple[bytes, bytes]:
        """(Avro timestamp-millis bytes, decimal millis) of ``t``."""
        found = self._times.get(t)
        if found is None:
            ms = millis(t)
            found = (long_bytes(ms), str(ms).encode())
            if len(self._times) < 10_000:
                self._times[t] = found
        return found

    def __call__(self, row: Row) -> bytes:
        payload = row.payload
        region = row.region_name
        return b"".join(
            (
                long_bytes(row.id),
                self._cached(row.shard_scope),
                long_bytes(row.shard_identifier),
                self._cached(row.category),
                long_bytes(row.object_identifier),
                b"\x00" if payload is None else b"\x02" + _string(payload),
                b"\x00" if region is None else b"\x02" + self._cached(region),
                self.time_parts(row.scheduled_for)[0],
                self.time_parts(row.date_added)[0],
            )
        )


def compile_outbox(parsed: Any) -> OutboxEncoder | None:
    """An encoder for ``parsed`` (a fastavro-parsed schema) if it is OutboxMessage's shape."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    fields = parsed.get("fields")
    if not isinstance(fields, list) or len(fields) != len(OUTBOX_FIELDS):
        return None
    for f, (name, shape) in zip(fields, OUTBOX_FIELDS, strict=True):
        if f.get("name") != name or _shape(f.get("type")) != shape:
            return None
    return OutboxEncoder()
