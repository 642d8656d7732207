"""Gaps in what Faust's consumers fetch (streams/faust_gaps.py): aiokafka's real record
batches with a gap are unpacked only up to it (so the next fetch starts at the gap),
a filled gap is reported as refetched and one that stays as accepted; Faust's own gap
notes are reported for topics the re-read does not cover; and a real worker reads past
a transaction's commit marker without a false alarm."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import struct
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition
from confluent_kafka import Producer
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from streams import faust_gaps, kafka_config
from streams.agents.wrapper import gaps
from streams.agents.wrapper.direct import GAPS
from streams.publisher import Publisher
from tests.support import harness
from tests.support import probe_agent as probe
from tests.test_faust_drain import _sample

PREFIX = "gapcheck."
TOPIC = PREFIX + "resource-changes"  # a non-compacted catalogue topic


def test_the_patched_calls_are_where_faust_and_aiokafka_make_them() -> None:
    """If an upgrade moves these calls, the re-read and the report go quiet."""
    drain = inspect.getsource(FaustConsumer._drain_messages)
    assert "await self._add_gap(tp, r_offset + 1, offset)" in drain
    unpack = inspect.getsource(aiokafka_fetcher.PartitionRecords._unpack_records)
    assert "records = self._records" in unpack
    assert "while records.has_next():" in unpack
    assert "next_batch = records.next_batch()" in unpack
    assert "self.next_fetch_offset = next_batch.next_offset" in unpack
    fetch = " ".join(inspect.getsource(aiokafka_fetcher.Fetcher).split())
    assert "PartitionRecords( tp, records, aborted_transactions, fetch_offset," in fetch


@pytest.fixture
def checking() -> Iterator[None]:
    assert faust_gaps.enable(PREFIX)
    faust_gaps._open.clear()
    yield
    faust_gaps._open.clear()


def _batch(base: int, n: int) -> bytes:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(n):
        builder.append(i, timestamp=1000, key=b"k", value=b"v%d" % (base + i), headers=[])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)  # the base offset the broker assigns
    return bytes(data)


def _fetched(fetch_offset: int, *batches: bytes, topic: str = TOPIC) -> tuple[list[int], int]:
    """What aiokafka hands out of one fetch response, and where it fetches next."""
    records = aiokafka_fetcher.PartitionRecords(
        TopicPartition(topic, 0),
        MemoryRecords(b"".join(batches)),
        [],
        fetch_offset,
        None,
        None,
        True,
        aiokafka_fetcher.READ_UNCOMMITTED,
    )
    return [r.offset for r in records], records.next_fetch_offset


@pytest.mark.allow_errors  # the accepted gap is logged at ERROR, as it must be
def test_a_fetch_with_a_gap_is_unpacked_up_to_it_and_read_again(
    checking: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    refetched = GAPS.labels("faust", "refetched")
    accepted = GAPS.labels("faust", "accepted")
    r0, a0 = refetched._value.get(), accepted._value.get()
    # Offsets 3-4 are not returned: the fetch stops at 3, and aiokafka fetches from 3.
    assert _fetched(0, _batch(0, 3), _batch(5, 2)) == ([0, 1, 2], 3)
    assert _fetched(3, _batch(5, 2)) == ([], 3)
    # They are there on the next fetch: everything from 3, reported as refetched.
    assert _fetched(3, _batch(3, 2), _batch(5, 2)) == ([3, 4, 5, 6], 7)
    assert (refetched._value.get(), accepted._value.get()) == (r0 + 1, a0)
    # A gap that stays: read again for the patience, then accepted and read past.
    monkeypatch.setattr(gaps, "PATIENCE", 0.2)
    assert _fetched(7, _batch(9, 1)) == ([], 7)
    harness.wait_for(lambda: _fetched(7, _batch(9, 1)) == ([9], 10), 5, 0.05, "accepted")
    assert (refetched._value.get(), accepted._value.get()) == (r0 + 1, a0 + 1)
    # Topics outside the catalogue (Faust's changelogs) and compacted ones are not checked.
    assert _fetched(0, _batch(5, 2), topic="app-table-changelog") == ([5, 6], 7)
    assert _fetched(0, _batch(5, 2), topic=PREFIX + "project-configs") == ([5, 6], 7)


@pytest.mark.allow_errors  # the gap is logged at ERROR, as it must be
def test_faust_gaps_on_topics_the_re_read_does_not_cover_are_logged_and_counted(
    checking: None, caplog: pytest.LogCaptureFixture
) -> None:
    unchecked = GAPS.labels("faust", "unchecked")
    before = unchecked._value.get()
    for topic in ("app-table-changelog", TOPIC):
        tp = TP(topic=topic, partition=3)
        consumer = type("C", (), {})()
        consumer._committed_offset = {tp: 9}
        consumer._gap = defaultdict(IntervalTree)
        with caplog.at_level(logging.ERROR, logger="streams.faust_gaps"):
            asyncio.run(faust_gaps.reported_add_gap(consumer, tp, 11, 15))
        # Faust's own bookkeeping is unchanged (its commits move over the gap).
        assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(11, 16)]
    # Only the changelog's gap is reported: the catalogue topic's was checked when fetched.
    assert unchecked._value.get() == before + 1
    [record] = [r for r in caplog.records if r.getMessage() == "consumer.gap.unchecked"]
    assert (record.topic, record.partition, record.offsets) == ("app-table-changelog", 3, "11-14")  # type: ignore[attr-defined]


def test_a_real_worker_reads_past_a_commit_marker_without_a_false_alarm(
    real_stack: harness.Stack, template_db: str, tmp_path: Path
) -> None:
    """A transactional producer's commit marker is an offset no fetch hands out as a
    record: the batches stay contiguous, so the probe agent's Faust consumer reads on,
    handles every record, and reports no gap."""
    with harness.probe_settings(real_stack, template_db) as settings:
        proc = harness.start_worker(settings, tmp_path / "worker.log")
        try:
            with contextlib.closing(Publisher(settings)) as pub:
                encoded = [
                    pub.encode(probe.TOPIC, {"id": i, "action": "ok", "note": "tx"})
                    for i in range(4)
                ]
            producer = Producer(
                {**kafka_config.producer(settings), "transactional.id": f"{settings.app_id}-tx"}
            )
            producer.init_transactions(30)
            for txn in (encoded[:2], encoded[2:]):  # offsets 0, 1, marker 2, 3, 4, marker 5
                producer.begin_transaction()
                for full, value in txn:
                    producer.produce(full, value, key=b"1", partition=0)
                producer.commit_transaction(30)

            def handled() -> int:
                with psycopg.connect(settings.database_url.get()) as conn:
                    try:
                        row = conn.execute(
                            "SELECT count(*) FROM probe_effects WHERE id = ANY(%s)",
                            ([0, 1, 2, 3],),
                        ).fetchone()
                    except psycopg.errors.UndefinedTable:  # the agent creates it first
                        return 0
                return int(row[0]) if row else 0

            harness.wait_for(lambda: handled() == 4, 60, what="the 4 records handled")
            text = proc.get("/metrics")[1].decode()
            for outcome in ("unchecked", "accepted", "refetched"):
                assert (
                    _sample(text, "streams_consumer_gaps_total", agent="faust", outcome=outcome)
                    == 0
                )
            assert "consumer.gap" not in (tmp_path / "worker.log").read_text()
        finally:
            proc.stop()
