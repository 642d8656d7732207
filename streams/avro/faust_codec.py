"""The Avro codec as Faust codecs: one per catalogue topic, ``streams-avro:<topic>``.

Faust codecs see only bytes or values, never the topic, so each topic gets its own named
codec bound to that topic's schema. Use it as ``value_serializer`` of a Faust topic or
table to read and write the same single-object (or Confluent) encoding as everything
else. The built-in agents read raw bytes and decode inside the instrumented wrapper
instead, so that undecodable bytes reach the dead-letter topic rather than a Faust log.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from streams import catalogue
from streams.avro.codec import SingleObjectCodec

PREFIX = "streams-avro:"


def codec_name(topic: str) -> str:
    return f"{PREFIX}{topic}"


class TopicAvroCodec(codecs.Codec):
    """Encodes and decodes the values of one catalogue topic."""

    def __init__(self, topic: str, codec: SingleObjectCodec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topic = topic
        self.codec = codec

    def _dumps(self, obj: Any) -> bytes:
        return self.codec.encode(self.topic, obj)

    def _loads(self, s: bytes) -> Any:
        return self.codec.decode(self.topic, s)

    def clone(self, *children: Any) -> TopicAvroCodec:
        return TopicAvroCodec(self.topic, self.codec, children=(*self.children, *children))


def register_codecs(codec: SingleObjectCodec) -> list[str]:
    """Register a Faust codec for every Avro topic of the catalogue; returns their names."""
    names = []
    for spec in catalogue.TOPICS.values():
        if spec.avro:
            codecs.register(codec_name(spec.name), TopicAvroCodec(spec.name, codec))
            names.append(codec_name(spec.name))
    return names
