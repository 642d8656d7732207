"""Why and how the Faust consumer's fetch wait is configurable (streams/faust_fetch.py)."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator

import faust
import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.faust_fetch import set_fetch_max_wait
from streams.settings import Settings
from tests.support import harness


@pytest.fixture
def restore_fetch_wait() -> Iterator[None]:
    yield
    set_fetch_max_wait(None)


def created_wait_ms() -> int:
    async def create() -> int:
        app = faust.App(f"fetch-{uuid.uuid4().hex[:6]}", broker="kafka://127.0.0.1:1")
        # Faust's typed ConsumerT hides the thread that builds the aiokafka consumer.
        consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        await consumer.stop()
        return int(consumer._fetch_max_wait_ms)

    return asyncio.run(create())


def test_setting_reaches_the_consumer_faust_builds(restore_fetch_wait: None) -> None:
    assert created_wait_ms() == 1500  # Faust's own
    set_fetch_max_wait(0.1)
    set_fetch_max_wait(0.1)  # idempotent: wrapped once
    assert created_wait_ms() == 100
    set_fetch_max_wait(None)
    assert created_wait_ms() == 1500


def test_settings_read_the_variable() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DATABASE_URL": "postgresql://x"}
    assert Settings.from_env(env).consumer_fetch_max_wait is None
    env["STREAMS_CONSUMER_FETCH_MAX_WAIT"] = "0.1"
    assert Settings.from_env(env).consumer_fetch_max_wait == 0.1


async def _latency_ms(bootstrap: str, topic: str, wait_ms: int, rate: int = 200) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=wait_ms,
    )
    await consumer.start()
    try:
        await asyncio.sleep(1.0)  # assigned and positioned at the end
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1})
        total = rate * 2
        lat: list[float] = []

        async def consume() -> None:
            while len(lat) < total:
                batch = await consumer.getmany(timeout_ms=2000)
                now = time.time()
                lat.extend(now - float(m.value) for msgs in batch.values() for m in msgs)

        task = asyncio.create_task(consume())
        for _ in range(total):
            producer.produce(topic, str(time.time()).encode())
            producer.poll(0)
            await asyncio.sleep(1 / rate)
        producer.flush(10)
        await asyncio.wait_for(task, 20)
        return statistics.median(lat) * 1000
    finally:
        await consumer.stop()


def test_embedded_broker_holds_fetches_for_the_whole_wait(real_stack: harness.Stack) -> None:
    topic = f"fetchwait-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": real_stack.bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(10)
    slow = asyncio.run(_latency_ms(real_stack.bootstrap, topic, 1500))
    fast = asyncio.run(_latency_ms(real_stack.bootstrap, topic, 100))
    # Kafka would answer both as soon as records arrive; Tansu waits the wait out.
    assert slow > 250, (slow, fast)
    assert fast < 150, (slow, fast)
    assert slow > 3 * fast
