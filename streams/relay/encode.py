"""Encoding a batch of outbox messages: Avro values, keys, outbox and metadata headers.

The relay's hot path. Values are built by the relay from typed columns, so the schema
check the publisher runs on arbitrary user values is skipped for them (fastavro still
refuses a wrong type); resource changes, whose fields come from the JSON payload, are
checked. Metadata headers (``streams.tracing``) are made once per batch, the batch being
the producing span, with a unique message id per message: one random draw per batch
instead of two per message.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams import catalogue, tracing
from streams.avro.codec import SingleObjectCodec
from streams.outbox.categories import OutboxTable
from streams.relay.messages import Row, outbound

# Values built from payload JSON rather than typed columns: always schema-checked.
CHECKED_TOPICS = frozenset({"resource-changes"})


@dataclass(frozen=True)
class Encoded:
    topic: str  # catalogue name
    full_topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class BatchEncoder:
    """Encodes the rows of one batch; build one per batch (it carries the batch's span)."""

    def __init__(
        self, table: OutboxTable, codec: SingleObjectCodec, prefix: str, producer: str
    ) -> None:
        self.table = table
        self.codec = codec
        meta = tracing.metadata_headers(producer)
        self._id_stem = dict(meta)[tracing.H_MESSAGE_ID][:24].decode()
        self._meta = [(k, v) for k, v in meta if k != tracing.H_MESSAGE_ID]
        self._full = {name: spec.full_name(prefix) for name, spec in catalogue.TOPICS.items()}

    def encode(self, row: Row, seq: int) -> Encoded:
        """Raises (OutboxError, SchemaMismatch, ValueError, ...) when ``row`` cannot go out."""
        out = outbound(row, self.table)
        value = self.codec.encode(out.topic, out.value, checked=out.topic not in CHECKED_TOPICS)
        headers = [(tracing.H_MESSAGE_ID, f"{self._id_stem}{seq:08x}".encode())]
        headers += self._meta
        headers += out.headers
        return Encoded(out.topic, self._full[out.topic], out.key.encode(), value, headers)
