"""Publish throughput with schema check, Avro encoding and metadata headers, next to a bare
confluent-kafka producer of the same bytes on the same broker in the same run.

Goal: the checks add <= 10 us per message.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Producer

from bench._stack import bench_stack
from streams import kafka_config, topics, tracing
from streams.publisher import Publisher

N = 200_000
ROUNDS = 3
TOPIC = "resource-changes"


class _NoopProducer:
    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def value(i: int) -> dict[str, object]:
    return {
        "action": "created",
        "sender": "Group",
        "instance_id": i,
        "organization_id": i % 1000,
        "project_id": i % 5000,
        "occurred_at": 1_700_000_000_000 + i,
        "data": '{"title": "ZeroDivisionError: division by zero in worker.py"}',
        "actor_id": None,
    }


def main() -> None:
    with bench_stack("publish") as settings:
        topics.create_all(settings)
        full = settings.topic_prefix + TOPIC
        pub = Publisher(settings)
        values = [value(i) for i in range(N)]
        keys = [str(v["organization_id"]) for v in values]
        encoded = [pub.codec.encode(TOPIC, v) for v in values]
        headers: list[tuple[str, str | bytes | None]] = list(
            tracing.metadata_headers(settings.producer_name)
        )

        # CPU cost of what publish adds, without any I/O.
        t = time.perf_counter()
        for v in values:
            pub.codec.check(TOPIC, v)
        check_us = (time.perf_counter() - t) / N * 1e6
        t = time.perf_counter()
        for v in values:
            pub.codec.encode(TOPIC, v, checked=True)
        encode_us = (time.perf_counter() - t) / N * 1e6
        t = time.perf_counter()
        for _ in values:
            tracing.metadata_headers(settings.producer_name)
        header_us = (time.perf_counter() - t) / N * 1e6

        # Everything send() adds (silo + schema check, encode, headers, metrics), as process
        # CPU per message against a producer that does nothing: robust to a busy machine.
        idle = Publisher(settings, codec=pub.codec, producer=_NoopProducer())
        t = time.process_time()
        for k, v in zip(keys, values, strict=True):
            idle.send(TOPIC, v, key=k)
        send_cpu_us = (time.process_time() - t) / N * 1e6
        idle.close()

        bare_rates, pub_rates = [], []
        bare = Producer(kafka_config.producer(settings))
        for _ in range(ROUNDS):
            t = time.perf_counter()
            for k, data in zip(keys, encoded, strict=True):
                while True:
                    try:
                        bare.produce(full, value=data, key=k.encode(), headers=headers)
                        break
                    except BufferError:
                        bare.poll(0.005)
                bare.poll(0)
            bare.flush(60)
            bare_rates.append(N / (time.perf_counter() - t))

            t = time.perf_counter()
            for k, v in zip(keys, values, strict=True):
                pub.send(TOPIC, v, key=k)
            pub.flush(60)
            pub_rates.append(N / (time.perf_counter() - t))
        pub.close()

        bare_rate = statistics.median(bare_rates)
        pub_rate = statistics.median(pub_rates)
        added = (1 / pub_rate - 1 / bare_rate) * 1e6
        print(f"messages per round: {N:,} ({len(encoded[0])} B values), rounds: {ROUNDS}, medians")
        print(f"bare confluent-kafka producer (same bytes): {bare_rate:>10,.0f} msg/s")
        print(f"streams Publisher.send (check+encode+hdrs): {pub_rate:>10,.0f} msg/s")
        print(f"added per message, end to end:              {added:>10.2f} us  (goal <= 10 us)")
        print(
            f"CPU that send() adds per message (no-op producer): {send_cpu_us:.2f} us "
            "(goal <= 10 us)"
        )
        print(
            f"  of which schema check {check_us:.2f} us, Avro encode {encode_us:.2f} us, "
            f"headers {header_us:.2f} us (CPU only)"
        )


if __name__ == "__main__":
    main()
