"""The lag exporter against the real broker: its numbers equal the truth computed here.

Truth is what the test itself produced, consumed and committed; the exporter is a real
``streams lag-exporter`` process scraped over HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.dev import stack
from streams.settings import Settings
from tests.lag.helpers import (
    commit,
    consume_exactly,
    make_topic,
    matching,
    one,
    parse,
    polls,
    produce,
    scrape,
    start_exporter,
)
from tests.support import harness


def test_offset_lag_is_exact_then_zero_when_caught_up_then_gone_when_deleted(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path, real_stack: harness.Stack
) -> None:
    bs = settings.kafka_bootstrap_servers
    topic, group = f"{settings.topic_prefix}lag-exact", f"{settings.topic_prefix}readers"
    produced, consumed = {0: 1500, 1: 900}, {0: 400, 1: 250}
    make_topic(bs, topic, 2)
    produce(bs, topic, produced)
    consume_exactly(bs, group, topic, consumed)
    if real_stack.started is not None:  # our embedded broker: prove the trap is live
        probe = Consumer({"bootstrap.servers": bs, "group.id": "naive"})
        naive = {p: probe.get_watermark_offsets(TopicPartition(topic, p), 5)[1] for p in produced}
        probe.close()
        assert naive != produced, "the broker reports true ends: the test proves nothing"

    exporter = start_exporter(settings, processes, tmp_path / "exporter.log")
    harness.wait_for(
        lambda: matching(scrape(exporter), "kafka_consumergroup_group_lag", group=group),
        10,
        what="lag series of the group",
    )
    v = scrape(exporter)
    for p, n in produced.items():
        part = {"topic": topic, "partition": str(p)}
        assert one(v, "kafka_consumergroup_group_lag", group=group, **part) == n - consumed[p]
        assert one(v, "kafka_consumergroup_group_offset", group=group, **part) == consumed[p]
        assert one(v, "kafka_partition_latest_offset", **part) == n
    total = sum(produced.values()) - sum(consumed.values())
    assert one(v, "kafka_consumergroup_group_sum_lag", group=group) == total
    assert one(v, "kafka_consumergroup_group_topic_sum_lag", group=group, topic=topic) == total
    assert one(v, "kafka_consumergroup_group_max_lag", group=group) == 1100
    assert (one(v, "kafka_consumergroup_group_max_lag_seconds", group=group) or 0) > 0

    consume_exactly(bs, group, topic, produced)

    def caught_up() -> bool:
        v = scrape(exporter)
        return (
            one(v, "kafka_consumergroup_group_sum_lag", group=group) == 0
            and one(v, "kafka_consumergroup_group_max_lag_seconds", group=group) == 0.0
        )

    harness.wait_for(caught_up, 10, what="lag and lag seconds at 0")
    seconds = matching(scrape(exporter), "kafka_consumergroup_group_lag_seconds", group=group)
    assert list(seconds.values()) == [0.0, 0.0]

    admin = AdminClient({"bootstrap.servers": bs})
    for fut in admin.delete_consumer_groups([group], request_timeout=10).values():
        fut.result(10)
    # The next poll that starts after the deletion has finished once two more complete.
    seen = polls(exporter)
    harness.wait_for(lambda: polls(exporter) >= seen + 2, 10, what="two more polls")
    left = [k for k in scrape(exporter) if ("group", group) in k[1]]
    assert left == [], f"series of the deleted group are left: {left[:3]}"


def test_lag_seconds_follow_the_age_of_the_oldest_unconsumed_message(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path
) -> None:
    bs = settings.kafka_bootstrap_servers
    topic, group = f"{settings.topic_prefix}lag-time", f"{settings.topic_prefix}slow"
    make_topic(bs, topic, 1)
    commit(bs, group, topic, {0: 0})
    exporter = start_exporter(settings, processes, tmp_path / "exporter.log")
    harness.wait_for(
        lambda: one(scrape(exporter), "kafka_consumergroup_group_sum_lag", group=group) == 0,
        10,
        what="the idle group",
    )
    producer = Producer({"bootstrap.servers": bs, "linger.ms": 0})
    for _ in range(100):  # a steady 20 messages/s for 5 s
        producer.produce(topic, b"x", partition=0)
        producer.flush(5)
        time.sleep(0.05)
    # The consumer read 10 messages: the oldest unconsumed is the 11th; its age is truth.
    consumer = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 10)])
    msg = consumer.poll(10)
    assert msg is not None and msg.error() is None and msg.offset() == 10
    appended = msg.timestamp()[1] / 1000.0
    consumer.commit(offsets=[TopicPartition(topic, 0, 10)], asynchronous=False)
    consumer.close()
    harness.wait_for(
        lambda: one(scrape(exporter), "kafka_consumergroup_group_sum_lag", group=group) == 90,
        10,
        what="the commit seen",
    )
    for idle in (0.0, 2.0):  # right away, and after a quiet stretch with no new points
        time.sleep(idle)
        before = time.time()
        v = scrape(exporter)
        real = (before + time.time()) / 2 - appended
        seconds = one(v, "kafka_consumergroup_group_lag_seconds", group=group, partition="0")
        assert seconds is not None
        assert abs(seconds - real) <= 0.2 * real, f"exported {seconds:.2f}s, real {real:.2f}s"
        assert one(v, "kafka_consumergroup_group_max_lag_seconds", group=group) == seconds


def test_the_exporter_survives_the_broker_going_away_and_coming_back(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path
) -> None:
    # A broker of our own: pausing the session's broker would stall other tests' clients.
    pid, port = stack.start_broker(tmp_path / "broker")
    bs = f"127.0.0.1:{port}"
    try:
        topic, group = f"{settings.topic_prefix}outage", f"{settings.topic_prefix}outage-g"
        make_topic(bs, topic, 1)
        produce(bs, topic, {0: 10}, linger_ms=0)
        commit(bs, group, topic, {0: 3})
        exporter = start_exporter(
            settings, processes, tmp_path / "exporter.log", timeout=1.0, bootstrap=bs
        )

        def lag() -> float | None:
            return one(scrape(exporter), "kafka_consumergroup_group_sum_lag", group=group)

        harness.wait_for(lambda: lag() == 7, 10, what="lag 7")
        os.kill(pid, signal.SIGSTOP)
        try:
            harness.wait_for(
                lambda: one(scrape(exporter), "streams_lag_broker_up") == 0, 15, what="broker down"
            )
            started = time.monotonic()
            assert lag() == 7, "the last good reading is still served"
            assert time.monotonic() - started < 1.0, "a scrape waited for the broker"
        finally:
            os.kill(pid, signal.SIGCONT)
        produce(bs, topic, {0: 5}, linger_ms=0)
        harness.wait_for(lambda: lag() == 12, 20, what="lag 12 after the broker came back")
        assert one(scrape(exporter), "streams_lag_broker_up") == 1
        assert exporter.alive()
    finally:
        stack.stop_pid(pid)


def test_once_prints_one_reading_and_exits(settings: Settings, tmp_path: Path) -> None:
    bs = settings.kafka_bootstrap_servers
    topic, group = f"{settings.topic_prefix}once", f"{settings.topic_prefix}once-g"
    make_topic(bs, topic, 1)
    produce(bs, topic, {0: 12}, linger_ms=0)
    commit(bs, group, topic, {0: 5})
    result = subprocess.run(
        [sys.executable, "-m", "streams", "lag-exporter", "--once", "--groups", f"^{group}$"],
        env=harness.env_for(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    values = parse(result.stdout)
    assert one(values, "kafka_consumergroup_group_lag", group=group, partition="0") == 7
    assert one(values, "streams_lag_broker_up") == 1
    groups = {dict(lab).get("group") for (_, lab) in values} - {None}
    assert groups == {group}, "--groups let other groups through"
