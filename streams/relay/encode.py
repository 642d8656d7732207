"""Encoding a batch of outbox messages: Avro values, keys, outbox and metadata headers.

The relay's hot path. Values are built by the relay from typed columns, so the schema
check the publisher runs on arbitrary user values is skipped for them (fastavro still
refuses a wrong type); resource changes, whose fields come from the JSON payload, are
checked. Metadata headers (``streams.tracing``) are made once per batch, the batch being
the producing span, with a unique message id per message: one random draw per batch
instead of two per message. OutboxMessage values (the bulk) are written straight from
the row by a precompiled encoder (``streams.relay.outbox_avro``) when the codec is the
single-object one and the schema has the expected shape; anything else goes through the
codec (fastavro).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from streams import catalogue, tracing
from streams.avro.codec import MAGIC, SingleObjectCodec
from streams.outbox.categories import OutboxTable
from streams.relay import messages as msg
from streams.relay.messages import Row, ShardKey, outbound, route
from streams.relay.outbox_avro import OutboxEncoder, compile_outbox

# Values built from payload JSON rather than typed columns: always schema-checked.
CHECKED_TOPICS = frozenset({"resource-changes"})


class Encoded(NamedTuple):
    """One message ready to produce."""

    topic: str  # catalogue name
    full_topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


# (topic, full topic, key, value, headers): Encoded's fields in a plain tuple, which the
# hot path builds several times faster than the named one.
Raw = tuple[str, str, bytes, bytes, list[tuple[str, bytes]]]
Header = tuple[str, bytes]

H_MESSAGE_ID = tracing.H_MESSAGE_ID
H_OUTBOX_ID = msg.H_OUTBOX_ID
H_OBJECT_ID = msg.H_OBJECT_ID


class BatchEncoder:
    """Encodes the rows of one batch; build one per batch (it carries the batch's span)."""

    def __init__(
        self, table: OutboxTable, codec: SingleObjectCodec, prefix: str, producer: str
    ) -> None:
        self.table = table
        self.codec = codec
        meta = tracing.metadata_headers(producer)
        self._id_stem = dict(meta)[H_MESSAGE_ID][:24]
        self._meta = [(k, v) for k, v in meta if k != H_MESSAGE_ID]
        self._full = {name: spec.full_name(prefix) for name, spec in catalogue.TOPICS.items()}
        self._fast = _fast_writer(codec, table.topic)
        # Per batch: rows share shards, categories and commit times, so their key and
        # header tuples are made once and shared by every message.
        self._shards: dict[ShardKey, tuple[bytes, Header]] = {}  # key, shard header
        self._categories: dict[str, Header] = {}
        self._dates: dict[dt.datetime, Header] = {}
        self._plain_rows: dict[tuple[str, str], bool] = {}
        self._topic = table.topic
        self._full_topic = self._full[table.topic]
        if len(self._meta) != 4:  # encode_raw() lays the metadata headers out one by one
            self._fast = None

    @property
    def id_stem(self) -> bytes:
        """What every message id of the batch starts with; the rest is ``seq`` in 8 hex
        digits (``BatchAcks.reports`` finds a failed message by it)."""
        return self._id_stem

    def encode(self, row: Row, seq: int) -> Encoded:
        """Raises (OutboxError, SchemaMismatch, ValueError, ...) when ``row`` cannot go out."""
        return Encoded(*self.encode_raw(row, seq))

    def encode_raw(self, row: Row, seq: int) -> Raw:
        """``encode`` as a plain tuple (the relay's hot path)."""
        fast = self._fast
        if fast is None or not self._plain(row):
            return self._encode_general(row, seq)
        header, body = fast
        shard = self._shards.get((row.shard_scope, row.shard_identifier))
        if shard is None:
            shard = self._shard(row)
        date = self._dates.get(row.date_added)
        if date is None:
            date = self._dates[row.date_added] = (
                msg.H_DATE_ADDED,
                body.time_parts(row.date_added)[1],
            )
        meta = self._meta
        # One list display per row: the headers every message carries, in a fixed order.
        headers = [
            (H_MESSAGE_ID, self._id_stem + b"%08x" % seq),
            meta[0],
            meta[1],
            meta[2],
            meta[3],
            (H_OUTBOX_ID, b"%d" % row.id),
            self._category(row.category),
            (H_OBJECT_ID, b"%d" % row.object_identifier),
            date,
            shard[1],
        ]
        return (self._topic, self._full_topic, shard[0], header + body(row), headers)

    def _plain(self, row: Row) -> bool:
        """Whether ``row`` goes to the table's topic as an OutboxMessage (known per
        category and scope after its first row; a refused row is never cached)."""
        key = (row.category, row.shard_scope)
        found = self._plain_rows.get(key)
        if found is None:
            found = route(row, self.table) is None  # raises when it cannot be routed
            self._plain_rows[key] = found
        return found

    def _category(self, name: str) -> Header:
        found = self._categories.get(name)
        if found is None:
            found = self._categories[name] = (msg.H_CATEGORY, name.encode())
        return found

    def _shard(self, row: Row) -> tuple[bytes, Header]:
        key = f"{row.shard_scope}:{row.shard_identifier}".encode()
        found = self._shards[(row.shard_scope, row.shard_identifier)] = (key, (msg.H_SHARD, key))
        return found

    def _encode_general(self, row: Row, seq: int) -> Encoded:
        out = outbound(row, self.table)
        value = self.codec.encode(out.topic, out.value, checked=out.topic not in CHECKED_TOPICS)
        headers = [(H_MESSAGE_ID, self._id_stem + f"{seq:08x}".encode())]
        headers += self._meta
        headers += out.headers
        return Encoded(out.topic, self._full[out.topic], out.key.encode(), value, headers)


def _fast_writer(codec: SingleObjectCodec, subject: str) -> tuple[bytes, OutboxEncoder] | None:
    """(single-object header, body encoder) for ``subject``, if it can be precompiled."""
    if type(codec) is not SingleObjectCodec:
        return None  # e.g. Confluent framing: its own header, written by its codec
    version = codec.store.latest(subject)
    body = compile_outbox(version.parsed)
    return None if body is None else (MAGIC + version.fingerprint, body)
