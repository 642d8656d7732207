"""The relay in-process against the real broker and PostgreSQL: publish, coalesce, route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaError

from streams.metrics import REGISTRY
from streams.outbox import enqueue_outbox
from streams.publisher import Publisher
from streams.relay import messages
from streams.relay.relay import Relay
from streams.settings import Settings
from tests.relay.support import TopicReader, ids_of, queued, write


@pytest.fixture
def relay(settings: Settings) -> Iterator[Relay]:
    r = Relay(settings, concurrency=2)
    r.pool.open(wait=True)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def reader(settings: Settings) -> Iterator[TopicReader]:
    r = TopicReader(
        settings, ["outbox.region", "outbox.control", "resource-changes", "dead-letters"]
    )
    try:
        yield r
    finally:
        r.close()


def test_rolled_back_row_is_never_published_committed_one_is_with_headers(
    settings: Settings, relay: Relay, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        enqueue_outbox(
            conn,
            scope="organization_scope",
            shard_identifier=7,
            category="organization_update",
            object_identifier=70,
            payload={"rolled": "back"},
        )
        conn.rollback()
        kept = enqueue_outbox(
            conn,
            scope="organization_scope",
            shard_identifier=7,
            category="organization_update",
            object_identifier=71,
            payload={"name": "kept"},
        )
        conn.commit()
    relay.run_pass()
    [record] = reader.drain(quiet=1.0)
    assert record.topic == "outbox.region"
    assert record.key == "organization_scope:7"
    assert record.headers[messages.H_OUTBOX_ID] == str(kept).encode()
    assert record.headers[messages.H_CATEGORY] == b"organization_update"
    assert record.headers[messages.H_OBJECT_ID] == b"71"
    assert int(record.headers[messages.H_DATE_ADDED]) > 0
    assert record.headers["streams-message-id"]
    assert record.value["outbox_id"] == kept
    assert json.loads(record.value["payload"]) == {"name": "kept"}
    assert queued(dsn) == 0


def test_only_the_newest_row_of_an_object_is_published_in_shard_order(
    settings: Settings, relay: Relay, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    a1, b1, a2, a3 = write(dsn, [(1, 10), (1, 11), (1, 10), (1, 10)])
    relay.run_pass()
    records = reader.drain(quiet=1.0)
    assert ids_of(records) == [b1, a3]
    assert a1 not in ids_of(records) and a2 not in ids_of(records)
    assert queued(dsn) == 0


def test_a_row_inserted_during_the_drain_survives_and_goes_out_next_pass(
    settings: Settings, reader: TopicReader
) -> None:
    """Coalescing deletes only the claimed rows: a newer row committed meanwhile stays."""
    dsn = settings.database_url.get()
    a1, a2 = write(dsn, [(3, 30), (3, 30)])
    inserted: list[int] = []

    class InsertingPublisher(Publisher):
        def send_raw(self, *args: Any, **kwargs: Any) -> None:
            if not inserted:  # a writer commits while the relay holds its batch
                inserted.extend(write(dsn, [(3, 30)]))
            super().send_raw(*args, **kwargs)

    pub = InsertingPublisher(settings)
    r = Relay(settings, concurrency=1, publisher=pub)
    r.pool.open(wait=True)
    try:
        r.run_pass()
        first = ids_of(reader.drain(quiet=1.0))
        assert first == [a2]
        assert queued(dsn) == 1
        r.run_pass()
    finally:
        r.close()
        pub.close()
    assert ids_of(reader.drain(quiet=1.0)) == [a2, *inserted]
    assert a1 not in ids_of(reader.records)
    assert queued(dsn) == 0


def test_resource_change_rows_go_to_resource_changes_keyed_by_organization(
    settings: Settings, relay: Relay, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        for action in ("created", "resolved"):  # events: never coalesced
            enqueue_outbox(
                conn,
                scope="organization_scope",
                shard_identifier=42,
                category="issue_change",
                object_identifier=5,
                payload={"action": action, "project_id": 3, "data": {"title": "boom"}},
            )
        conn.commit()
    relay.run_pass()
    records = reader.drain(quiet=1.0)
    assert [r.value["action"] for r in records] == ["created", "resolved"]
    first = records[0]
    assert first.topic == "resource-changes" and first.key == "42"
    assert first.value["sender"] == "Group"
    assert first.value["instance_id"] == 5
    assert first.value["organization_id"] == 42
    assert first.value["project_id"] == 3
    assert json.loads(first.value["data"]) == {"title": "boom"}


def test_control_rows_carry_their_region(
    settings: Settings, relay: Relay, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        enqueue_outbox(
            conn,
            scope="user_scope",
            shard_identifier=9,
            category="user_update",
            object_identifier=9,
            region="eu",
        )
        conn.commit()
    relay.run_pass()
    [record] = reader.drain(quiet=1.0)
    assert record.topic == "outbox.control"
    assert record.value["region_name"] == "eu"
    assert record.value["payload"] is None
    assert queued(dsn, "control_outbox") == 0


@pytest.mark.allow_errors
def test_a_row_that_cannot_be_encoded_goes_to_dead_letters_and_its_shard_goes_on(
    settings: Settings, relay: Relay, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        # Written behind the API's back (an old writer, a manual fix): no way to route it.
        bad = conn.execute(
            "INSERT INTO region_outbox (shard_scope, shard_identifier, category,"
            " object_identifier, payload) VALUES ('organization_scope', 5, 'no_such_category',"
            " 1, '{\"x\": 1}') RETURNING id"
        ).fetchone()
        no_action = conn.execute(
            "INSERT INTO region_outbox (shard_scope, shard_identifier, category,"
            " object_identifier, payload) VALUES ('organization_scope', 5, 'issue_change',"
            " 2, '{}') RETURNING id"
        ).fetchone()
        conn.commit()
    assert bad is not None and no_action is not None
    [good] = write(dsn, [(5, 3)])
    relay.run_pass()
    records = reader.drain(quiet=1.0)
    letters = [r for r in records if r.topic == "dead-letters"]
    assert sorted(int(r.headers["dlq.source_offset"]) for r in letters) == [bad[0], no_action[0]]
    assert {r.headers["dlq.reason"] for r in letters} == {b"encode"}
    assert all(r.headers["dlq.source_topic"] == b"region_outbox" for r in letters)
    row = json.loads(next(r.raw for r in letters if r.outbox_id == bad[0]))
    assert row["category"] == "no_such_category" and row["payload"] == {"x": 1}
    assert [r.outbox_id for r in records if r.topic == "outbox.region"] == [good]
    assert queued(dsn) == 0


class FailingProducer:
    """A real producer, except that messages keyed with a chosen shard fail to deliver."""

    def __init__(self, settings: Settings, failing_key: bytes) -> None:
        from confluent_kafka import Producer

        from streams import kafka_config

        self.real = Producer(kafka_config.producer(settings))
        self.failing_key = failing_key

    def produce(self, topic: str, value: Any = None, key: Any = None, **kw: Any) -> None:
        if key == self.failing_key:
            kw["on_delivery"](KafkaError(KafkaError._MSG_TIMED_OUT), None)
            return
        self.real.produce(topic, value=value, key=key, **kw)

    def poll(self, timeout: float = 0) -> int:
        return int(self.real.poll(timeout))

    def flush(self, timeout: float = 10) -> int:
        return int(self.real.flush(timeout))


def backoff_steps(dsn: str, shard: int) -> set[float]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT extract(epoch FROM scheduled_for - scheduled_from) FROM region_outbox"
            " WHERE shard_identifier = %s",
            (shard,),
        ).fetchall()
    return {float(r[0]) for r in rows}


def make_due(dsn: str) -> None:
    """Move every row's schedule into the past, keeping its backoff step."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE region_outbox SET scheduled_from = scheduled_from - interval '2 hours',"
            " scheduled_for = scheduled_for - interval '2 hours'"
        )
        conn.commit()


@pytest.mark.allow_errors
def test_a_failing_shard_backs_off_doubling_while_other_shards_go_on(
    settings: Settings, reader: TopicReader
) -> None:
    dsn = settings.database_url.get()
    pub = Publisher(settings, producer=FailingProducer(settings, b"organization_scope:66"))
    r = Relay(settings, concurrency=2, publisher=pub)
    r.pool.open(wait=True)
    try:
        ok = write(dsn, [(67, 0)])
        r.run_pass()  # warm the producer up, so the passes below take milliseconds
        stuck = write(dsn, [(66, 1), (66, 2)])
        ok += write(dsn, [(67, 1), (67, 2)])
        r.run_pass()
        assert backoff_steps(dsn, 66) == {1.0}
        r.run_pass()  # within the second: not due yet, so not tried
        assert backoff_steps(dsn, 66) == {1.0}
        assert sorted(ids_of(reader.drain(quiet=1.0))) == ok
        for expected in (2.0, 4.0, 8.0):
            make_due(dsn)
            r.run_pass()
            assert backoff_steps(dsn, 66) == {expected}
        assert queued(dsn) == len(stuck)
        assert_metric("streams_relay_shards_rescheduled_total", 4)
    finally:
        r.close()


def assert_metric(name: str, value: float, table: str = "region_outbox") -> None:
    got = REGISTRY.get_sample_value(name, {"table": table})
    assert got is not None and got >= value, (name, got, value)


def test_backlog_gauges_show_queued_rows_depth_and_age(settings: Settings, relay: Relay) -> None:
    dsn = settings.database_url.get()
    write(dsn, [(1, 1), (1, 2), (1, 3), (2, 1)])
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE region_outbox SET date_added = now() - interval '90 seconds'")
        conn.commit()
    relay.record_backlog()
    labels = {"table": "region_outbox"}
    assert REGISTRY.get_sample_value("streams_relay_queued_rows", labels) == 4
    assert REGISTRY.get_sample_value("streams_relay_max_shard_depth", labels) == 3
    age = REGISTRY.get_sample_value("streams_relay_oldest_pending_seconds", labels)
    assert age is not None and 90 <= age < 120
    before = REGISTRY.get_sample_value("streams_relay_rows_published_total", labels) or 0
    relay.run_pass()
    relay.record_backlog()
    assert REGISTRY.get_sample_value("streams_relay_queued_rows", labels) == 0
    assert REGISTRY.get_sample_value("streams_relay_oldest_pending_seconds", labels) == 0
    assert REGISTRY.get_sample_value("streams_relay_rows_published_total", labels) == before + 4


def test_the_linger_gathers_a_batch_but_never_delays_it(
    settings: Settings, reader: TopicReader
) -> None:
    """``STREAMS_RELAY_LINGER`` only groups the messages produced while a batch is being
    produced: the batch's flush sends at once. With a 5 s linger, a pass over a few rows
    still publishes and deletes them in well under 5 s."""
    import time

    dsn = settings.database_url.get()
    r = Relay(settings.with_(relay_linger=5.0), concurrency=1)
    r.pool.open(wait=True)
    try:
        r.run_pass()  # the producer's connection and metadata, before the clock starts
        ids = write(dsn, [(81, 0), (82, 0), (81, 1)])
        started = time.monotonic()
        r.run_pass()
        took = time.monotonic() - started
    finally:
        r.close()
    assert queued(dsn) == 0
    assert sorted(ids_of(reader.drain(quiet=1.0))) == sorted(ids)
    assert took < 2.5, f"a pass took {took:.1f} s: the flush waited for the 5 s linger"
