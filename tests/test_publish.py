"""Publishing against the real broker: headers, acks, refusals before anything is sent."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams import kafka_config
from streams.avro.codec import SingleObjectCodec
from streams.avro.store import default_store
from streams.errors import WrongSilo
from streams.offsets import true_end_offsets
from streams.publisher import Publisher
from streams.settings import Settings
from streams.silo import SiloMode
from streams.tracing import METADATA_HEADERS, TraceContext, activate, deactivate
from tests.support.messages import headers_of

CHANGE = {
    "action": "created",
    "sender": "Group",
    "instance_id": 1,
    "organization_id": 9,
    "occurred_at": 0,
}


def read_all(
    settings: Settings, topic: str
) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    full = settings.topic_prefix + topic
    c = Consumer(kafka_config.consumer(settings, f"reader-{uuid.uuid4()}"))
    try:
        parts = c.list_topics(full, timeout=10).topics[full].partitions
        ends = true_end_offsets(c, [(full, p) for p in parts])
        out = []
        for (t, p), (lo, hi) in ends.items():
            if hi <= lo:
                continue
            c.assign([TopicPartition(t, p, lo)])
            got = 0
            while got < hi - lo:
                for m in c.consume(100, timeout=2.0):
                    if m.error() is None:
                        got += 1
                        out.append((m.key(), m.value(), headers_of(m)))
            c.unassign()
        return out
    finally:
        c.close()


def test_publish_waits_for_ack_and_adds_metadata_headers(
    settings: Settings, publisher: Publisher
) -> None:
    delivered = publisher.publish("resource-changes", CHANGE, key=9, headers={"x-team": "a"})
    assert delivered.topic == settings.topic_prefix + "resource-changes"
    [(key, value, headers)] = read_all(settings, "resource-changes")
    assert key == b"9"
    for name in METADATA_HEADERS:
        assert headers[name], name
    assert headers["x-team"] == b"a"
    assert headers["streams-attempt"] == b"1"
    decoded = SingleObjectCodec(default_store()).decode("resource-changes", value or b"")
    assert decoded["instance_id"] == 1


def test_trace_context_is_propagated_as_child_span(
    publisher: Publisher, settings: Settings
) -> None:
    ctx = TraceContext("ab" * 16, "cd" * 8)
    token = activate(ctx)
    try:
        publisher.publish("resource-changes", CHANGE, key=9)
    finally:
        deactivate(token)
    [(_, _, headers)] = read_all(settings, "resource-changes")
    version, trace_id, span_id, flags = headers["traceparent"].decode().split("-")
    assert (version, trace_id, flags) == ("00", "ab" * 16, "01")
    assert span_id != "cd" * 8


def test_bad_value_raises_before_anything_is_sent(publisher: Publisher, settings: Settings) -> None:
    with pytest.raises(TypeError, match="instance_id"):
        publisher.publish("resource-changes", {**CHANGE, "instance_id": {1, 2}}, key=9)
    with pytest.raises(TypeError, match="unknown field"):
        publisher.publish("resource-changes", {**CHANGE, "extra": 1}, key=9)
    publisher.flush()
    assert read_all(settings, "resource-changes") == []


def test_wrong_silo_publish_raises(settings: Settings) -> None:
    control = Publisher(settings.with_(silo_mode=SiloMode.CONTROL))
    try:
        with pytest.raises(WrongSilo, match="control"):
            control.publish("resource-changes", CHANGE, key=9)
        # The control silo may publish to its own outbox topic.
        value = {
            "outbox_id": 1,
            "shard_scope": "user_scope",
            "shard_identifier": 1,
            "category": "user_update",
            "object_identifier": 1,
            "scheduled_for": 0,
            "date_added": 0,
        }
        assert control.publish("outbox.control", value, key="user_scope:1").offset >= 0
    finally:
        control.close()


def test_async_publish(publisher: Publisher) -> None:
    async def go() -> int:
        results = await asyncio.gather(
            *(
                publisher.publish_async("resource-changes", {**CHANGE, "instance_id": i}, key=9)
                for i in range(50)
            )
        )
        return len({r.offset for r in results})

    assert asyncio.run(go()) == 50
