"""Delayed messages end to end: stored in PostgreSQL, published by the relay's pump."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from streams.errors import SchemaMismatch
from streams.publisher import Publisher
from streams.settings import Settings
from tests.delayed.support import JobsReader, pending, percentile, value
from tests.relay.support import start_relay
from tests.support import harness

SOAK = os.environ.get("STREAMS_SOAK", "") not in ("", "0")


@pytest.fixture
def relays(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path
) -> Callable[[], harness.Proc]:
    """Start a ``streams relay`` (its pump publishes the delayed messages)."""
    count = [0]

    def start() -> harness.Proc:
        count[0] += 1
        return start_relay(settings, processes, tmp_path / f"relay-{count[0]}.log")

    return start


@pytest.fixture
def reader(settings: Settings) -> Iterator[JobsReader]:
    r = JobsReader(settings)
    try:
        yield r
    finally:
        r.close()


def schedule_spread(publisher: Publisher, count: int, spread: float, seed: int = 7) -> None:
    rnd = random.Random(seed)
    for n in range(count):
        publisher.schedule("jobs", value(n), key=str(n), countdown=rnd.uniform(0, spread))


def test_bad_values_and_bounds_are_refused_before_anything_is_stored(
    settings: Settings, publisher: Publisher
) -> None:
    dsn = settings.database_url.get()
    with pytest.raises(SchemaMismatch, match="job_id"):
        publisher.schedule("jobs", {**value(1), "job_id": 5}, countdown=1)
    with pytest.raises(ValueError, match="maximum delay of 2592000s"):
        publisher.schedule("jobs", value(1), countdown=31 * 86400)
    with pytest.raises(ValueError, match="in the past"):
        publisher.schedule("jobs", value(1), eta=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with pytest.raises(TypeError, match="timezone-aware"):
        publisher.schedule("jobs", value(1), eta=dt.datetime.now())
    with pytest.raises(TypeError, match="not both"):
        publisher.schedule("jobs", value(1), countdown=1, eta=dt.datetime.now(dt.UTC))
    assert pending(dsn) == 0
    # The largest declared delay and a slightly late eta are accepted.
    publisher.schedule("jobs", value(1), countdown=30 * 86400)
    publisher.schedule("jobs", value(2), eta=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
    assert pending(dsn) == 2


def test_a_rolled_back_transaction_publishes_nothing(
    settings: Settings,
    publisher: Publisher,
    processes: list[harness.Proc],
    tmp_path: Path,
    reader: JobsReader,
) -> None:
    dsn = settings.database_url.get()
    start_relay(settings, processes, tmp_path / "relay.log")
    with psycopg.connect(dsn) as conn:
        publisher.schedule("jobs", value(1), conn=conn)
        conn.rollback()
        publisher.schedule("jobs", value(2), conn=conn)
        time.sleep(1.0)  # the pump cannot see an uncommitted row; nothing may arrive yet
        assert reader.poll(0.5) == 0
        conn.commit()
    arrivals = reader.collect(1, 15)
    time.sleep(1.0)
    reader.poll(0.5)
    assert set(arrivals.first) == {2}


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_ten_thousand_delayed_messages_arrive_no_earlier_than_due_and_about_on_time(
    settings: Settings,
    publisher: Publisher,
    processes: list[harness.Proc],
    tmp_path: Path,
    reader: JobsReader,
) -> None:
    count, spread = (50_000, 60.0) if SOAK else (10_000, 20.0)
    start_relay(settings, processes, tmp_path / "relay.log")
    # Scheduling runs beside the reader, so arrival times are taken as messages arrive.
    writer = threading.Thread(target=schedule_spread, args=(publisher, count, spread))
    started = time.monotonic()
    writer.start()
    try:
        arrivals = reader.collect(count, spread + 60)
    finally:
        writer.join()
    print(f"scheduled and received {count} in {time.monotonic() - started:.1f}s")
    assert arrivals.early() == []
    late = arrivals.lateness()
    p50, p99 = percentile(late, 0.5), percentile(late, 0.99)
    print(f"lateness p50={p50:.3f}s p99={p99:.3f}s max={late[-1]:.3f}s load={os.getloadavg()}")
    assert p99 < 1.0, f"lateness p99 {p99:.3f}s (p50 {p50:.3f}s)"
    assert pending(settings.database_url.get()) == 0


@pytest.mark.slow  # `make test-slow` (CI runs it): a load or kill -9 test
def test_kill_9_of_the_relay_and_a_broker_pause_lose_nothing_and_deliver_nothing_early(
    settings: Settings,
    publisher: Publisher,
    relays: Callable[[], harness.Proc],
    reader: JobsReader,
    real_stack: harness.Stack,
) -> None:
    if real_stack.started is None or real_stack.started.broker_pid is None:
        pytest.skip("the broker is not ours to pause")
    broker = real_stack.started.broker_pid
    count, spread = (50_000, 60.0) if SOAK else (10_000, 20.0)
    relay = relays()
    writer = threading.Thread(target=schedule_spread, args=(publisher, count, spread))
    writer.start()
    try:
        harness.wait_for(lambda: len(reader.arrivals.first) > 500 or reader.poll(), 30, 0.0)
        relay.kill9()
        time.sleep(1.0)
        relays()
        harness.wait_for(lambda: reader.poll() > 0, 30, 0.0, "relay 2 publishing")
        os.kill(broker, signal.SIGSTOP)
        try:
            time.sleep(10.0)
        finally:
            os.kill(broker, signal.SIGCONT)
    finally:
        writer.join()
    arrivals = reader.collect(count, spread + 90)
    assert arrivals.early() == []
    assert pending(settings.database_url.get()) == 0
    print(f"duplicates after kill -9 / pause: {arrivals.duplicates}")


def test_a_dedupe_id_is_sent_once_even_when_scheduled_again_after_delivery(
    settings: Settings,
    publisher: Publisher,
    relays: Callable[[], harness.Proc],
    reader: JobsReader,
) -> None:
    relays()
    first = publisher.schedule("jobs", value(1), countdown=0.5, dedupe_id="run-1.1")
    again = publisher.schedule("jobs", value(1), countdown=0, dedupe_id="run-1.1")
    assert first.id is not None and again.id is None
    reader.collect(1, 20)
    later = publisher.schedule("jobs", value(1), dedupe_id="run-1.1")
    assert later.id is None
    time.sleep(1.5)
    reader.poll(0.5)
    assert reader.arrivals.duplicates == 0
    assert pending(settings.database_url.get()) == 0
