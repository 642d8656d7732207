"""The precompiled OutboxMessage encoder writes exactly what fastavro writes."""

from __future__ import annotations

import datetime as dt
import io
import random

import fastavro
import pytest

from streams.avro.codec import SingleObjectCodec, build_codec
from streams.avro.store import default_store
from streams.outbox.categories import CATEGORIES, CONTROL_OUTBOX, REGION_OUTBOX, OutboxTable
from streams.relay.encode import BatchEncoder
from streams.relay.messages import Row, outbound
from streams.relay.outbox_avro import compile_outbox

EDGE_LONGS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, 16383, 16384, 2**31, -(2**31), 2**63 - 1]
EDGE_LONGS += [-(2**63), 2**53 + 1]
TEXTS = ["", "a", "é", "日本語", "🙂 emoji", "x" * 200, '{"k": "\\u0000"}', "n" * 20_000]


def _long(rnd: random.Random) -> int:
    if rnd.random() < 0.3:
        return rnd.choice(EDGE_LONGS)
    return rnd.randint(-(2**63), 2**63 - 1) >> rnd.randint(0, 63)


def _text(rnd: random.Random) -> str:
    if rnd.random() < 0.5:
        return rnd.choice(TEXTS)
    return "".join(
        chr(rnd.choice([rnd.randint(32, 126), rnd.randint(0xA0, 0xD7FF)]))
        for _ in range(rnd.randint(0, 60))
    )


def _time(rnd: random.Random) -> dt.datetime:
    # Before and after the epoch, with microseconds (millisecond truncation must match).
    seconds = rnd.uniform(-2e9, 4e9)
    tz = rnd.choice([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))])
    return dt.datetime.fromtimestamp(seconds, tz)


def _random_row(rnd: random.Random, table: OutboxTable) -> Row:
    cats = [
        (c, info)
        for c, info in CATEGORIES.items()
        if info.sender is None and table.kind in info.outboxes
    ]
    cat, info = rnd.choice(cats)
    return Row(
        _long(rnd),
        info.scope.value,
        _long(rnd),
        cat.value,
        _long(rnd),
        None if rnd.random() < 0.2 else _text(rnd),
        None if rnd.random() < 0.5 else _text(rnd),
        rnd.random() < 0.5,
        _time(rnd),
        _time(rnd),
    )


@pytest.mark.parametrize("table", [REGION_OUTBOX, CONTROL_OUTBOX], ids=lambda t: t.name)
def test_body_is_byte_identical_to_fastavro_for_random_rows(table: OutboxTable) -> None:
    version = default_store().latest(table.topic)
    body = compile_outbox(version.parsed)
    assert body is not None, "the released OutboxMessage schema must be precompilable"
    rnd = random.Random(20261121)
    for _ in range(5_000):
        row = _random_row(rnd, table)
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, version.parsed, outbound(row, table).value)
        assert body(row) == expected.getvalue(), row


@pytest.mark.parametrize("table", [REGION_OUTBOX, CONTROL_OUTBOX], ids=lambda t: t.name)
def test_fast_path_produces_the_same_message_as_the_codec_path(table: OutboxTable) -> None:
    codec = build_codec(default_store(), None)
    assert isinstance(codec, SingleObjectCodec)
    encoder = BatchEncoder(table, codec, "pfx.", "relay-test")
    assert encoder._fast is not None
    rnd = random.Random(7)
    for seq in range(2_000):
        row = _random_row(rnd, table)
        # bigint columns of real rows are never negative here (ids, shard, object)
        mask = 2**63 - 1
        row.id, row.shard_identifier = row.id & mask, row.shard_identifier & mask
        row.object_identifier &= mask
        fast = encoder.encode(row, seq)
        general = encoder._encode_general(row, seq)
        assert fast == general, row
        assert codec.decode(table.topic, fast.value)["outbox_id"] == row.id


def test_out_of_range_long_is_refused() -> None:
    body = compile_outbox(default_store().latest("outbox.region").parsed)
    assert body is not None
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    row = Row(2**63, "organization_scope", 1, "organization_update", 1, None, None, False, t, t)
    with pytest.raises(ValueError):
        body(row)


def test_other_shapes_are_not_precompiled() -> None:
    parsed = default_store().latest("outbox.region").parsed
    renamed = {**parsed, "fields": [{**parsed["fields"][0], "name": "id"}, *parsed["fields"][1:]]}
    extra = {**parsed, "fields": [*parsed["fields"], {"name": "more", "type": "long"}]}
    retyped = {**parsed, "fields": [{**parsed["fields"][0], "type": "int"}, *parsed["fields"][1:]]}
    for schema in (renamed, extra, retyped, {"type": "string"}):
        assert compile_outbox(schema) is None
