"""Wire format: single-object encoding, fingerprints, Confluent framing, and decode errors."""

from __future__ import annotations

import contextlib
import json
import random
import struct
from typing import Any

import fastavro
import pytest

from streams.avro.codec import ConfluentCodec, SingleObjectCodec
from streams.avro.store import default_store
from streams.errors import DecodeError

VALUE = {
    "scope": "project",
    "organization_id": 1,
    "project_id": 2,
    "public_key": None,
    "trigger": "test",
    "countdown": 5.0,
    "requested_at": 0,
}
TOPIC = "project-config-invalidations"


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(default_store())


def _rabin(data: bytes) -> int:
    """CRC-64-AVRO, written from the Avro specification, to cross-check the codec."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def test_single_object_header_is_marker_and_little_endian_crc64(codec: SingleObjectCodec) -> None:
    data = codec.encode(TOPIC, VALUE)
    canonical = default_store().latest(TOPIC).canonical.encode()
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == struct.pack("<Q", _rabin(canonical))


def test_any_avro_library_can_read_the_body(codec: SingleObjectCodec) -> None:
    import io

    data = codec.encode(TOPIC, VALUE)
    raw = json.loads(default_store().latest(TOPIC).canonical)
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(raw), None)
    assert isinstance(body, dict)
    assert body["trigger"] == "test"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not Avro"),
        (b"{json}", "not Avro"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", "unknown schema fingerprint"),
        (b"\x00\x00\x00\x00\x01abc", "no schema registry"),
    ],
)
def test_undecodable_bytes_raise_decode_error(
    codec: SingleObjectCodec, data: bytes, match: str
) -> None:
    with pytest.raises(DecodeError, match=match):
        codec.decode(TOPIC, data)


def test_truncated_and_trailing_bodies_are_refused(codec: SingleObjectCodec) -> None:
    data = codec.encode(TOPIC, VALUE)
    with pytest.raises(DecodeError):
        codec.decode(TOPIC, data[:-3])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(TOPIC, data + b"\x00\x01")


def test_message_of_another_topic_is_refused(codec: SingleObjectCodec) -> None:
    data = codec.encode(TOPIC, VALUE)
    with pytest.raises(DecodeError, match=r"another|not 'resource-changes'"):
        codec.decode("resource-changes", data)


def test_random_bytes_never_raise_anything_but_decode_error(codec: SingleObjectCodec) -> None:
    rng = random.Random(7)
    good = codec.encode(TOPIC, VALUE)
    for _ in range(2000):
        n = rng.randrange(0, 40)
        blob = bytes(rng.randrange(256) for _ in range(n))
        if rng.random() < 0.5:  # keep a valid header so the body parser is exercised
            blob = good[:10] + blob
        with contextlib.suppress(DecodeError):
            codec.decode(TOPIC, blob)


class FakeRegistry:
    """A schema registry behind the codec's Protocol (unit test only)."""

    def __init__(self) -> None:
        self.schemas: dict[int, Any] = {}

    def register_schema(self, subject_name: str, schema: Any) -> int:
        for sid, s in self.schemas.items():
            if s.schema_str == schema.schema_str:
                return sid
        sid = 100 + len(self.schemas)
        self.schemas[sid] = schema
        return sid

    def get_schema(self, schema_id: int) -> Any:
        return self.schemas[schema_id]


def test_confluent_framing_round_trip_and_single_object_still_read() -> None:
    registry = FakeRegistry()
    codec = ConfluentCodec(default_store(), registry)
    data = codec.encode(TOPIC, VALUE)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 100
    assert codec.decode(TOPIC, data)["trigger"] == "test"
    # A second process that never registered resolves the id through the registry.
    other = ConfluentCodec(default_store(), registry)
    assert other.decode(TOPIC, data)["project_id"] == 2
    plain = SingleObjectCodec(default_store()).encode(TOPIC, VALUE)
    assert other.decode(TOPIC, plain)["project_id"] == 2
    with pytest.raises(DecodeError, match="unknown to the registry"):
        other.decode(TOPIC, b"\x00" + (999).to_bytes(4, "big") + b"\x00")
