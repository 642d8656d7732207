"""Faust speaks the same wire format: the registered per-topic codecs round-trip."""

from __future__ import annotations

import pytest
from faust.serializers import codecs

from streams.avro.codec import MAGIC, SingleObjectCodec
from streams.avro.faust_codec import codec_name, register_codecs
from streams.avro.store import default_store
from streams.errors import DecodeError

VALUE = {
    "action": "created",
    "sender": "Group",
    "instance_id": 5,
    "organization_id": 1,
    "occurred_at": 0,
}


def test_every_avro_topic_gets_a_faust_codec_that_round_trips() -> None:
    codec = SingleObjectCodec(default_store())
    names = register_codecs(codec)
    assert codec_name("resource-changes") in names
    assert codec_name("dead-letters") not in names  # raw bytes, not Avro
    data = codecs.dumps(codec_name("resource-changes"), VALUE)
    assert data[:2] == MAGIC
    assert codecs.loads(codec_name("resource-changes"), data)["instance_id"] == 5
    # The same bytes as the publisher writes.
    assert codec.decode("resource-changes", data) == codecs.loads(
        codec_name("resource-changes"), codec.encode("resource-changes", VALUE)
    )


def test_faust_codec_refuses_bad_values_and_bytes() -> None:
    register_codecs(SingleObjectCodec(default_store()))
    with pytest.raises(TypeError, match="instance_id"):
        codecs.dumps(codec_name("resource-changes"), {**VALUE, "instance_id": "5"})
    with pytest.raises(DecodeError):
        codecs.loads(codec_name("resource-changes"), b"not avro")
