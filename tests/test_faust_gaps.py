"""Gaps in Faust's consumer loop are reported (streams/faust_gaps.py): Faust's loop
really notes them through ``_add_gap``, the wrapper logs and counts each one and keeps
Faust's behaviour, and a real worker reports the offsets a fetch did not return."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from confluent_kafka import Producer
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree  # type: ignore[import-untyped]

from streams import catalogue, faust_gaps, kafka_config
from streams.agents.wrapper.direct import GAPS
from streams.publisher import Publisher
from streams.silo import SiloMode
from tests.support import harness
from tests.support import probe_agent as probe
from tests.test_faust_drain import _sample


def test_faust_notes_a_gap_through_add_gap() -> None:
    """If a Faust upgrade stops calling ``_add_gap`` this way, the report goes quiet."""
    source = inspect.getsource(FaustConsumer._drain_messages)
    assert "await self._add_gap(tp, r_offset + 1, offset)" in source
    assert faust_gaps.enable()
    assert FaustConsumer._add_gap is faust_gaps.reported_add_gap


@pytest.mark.allow_errors  # the gap is logged at ERROR, as it must be
def test_a_gap_is_logged_counted_and_still_noted_for_commits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tp = TP(topic="t", partition=3)
    consumer = SimpleNamespace(_committed_offset={tp: 9}, _gap=defaultdict(IntervalTree))
    counted = GAPS.labels("faust", "unchecked")
    before = counted._value.get()
    with caplog.at_level(logging.ERROR, logger="streams.faust_gaps"):
        asyncio.run(faust_gaps.reported_add_gap(consumer, tp, 11, 15))
    assert counted._value.get() == before + 1
    [record] = [r for r in caplog.records if r.getMessage() == "consumer.gap.unchecked"]
    assert (record.topic, record.partition, record.offsets) == ("t", 3, "11-14")  # type: ignore[attr-defined]
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(11, 16)]  # Faust's own


@pytest.mark.allow_errors
def test_a_real_worker_reports_offsets_its_fetches_did_not_return(
    real_stack: harness.Stack, template_db: str, tmp_path: Path
) -> None:
    """A transactional producer's commit marker is an offset no fetch returns: the
    probe agent's Faust consumer steps over it, and the worker reports it."""
    with harness.isolated_settings(
        real_stack,
        template_db,
        agent_modules=("tests.support.probe_agent",),
        silo_mode=SiloMode.REGION,
        agents=("none",),
    ) as settings:
        proc = harness.start_worker(settings, tmp_path / "worker.log")
        try:
            with contextlib.closing(Publisher(settings)) as pub:
                encoded = [
                    pub.encode(probe.TOPIC, {"id": i, "action": "ok", "note": ""}) for i in range(4)
                ]
            topic = catalogue.lookup(probe.TOPIC).full_name(settings.topic_prefix)
            producer = Producer(
                {**kafka_config.producer(settings), "transactional.id": f"{settings.app_id}-tx"}
            )
            producer.init_transactions(30)
            for txn in (encoded[:2], encoded[2:]):  # offsets 0, 1, marker 2, 3, 4, marker 5
                producer.begin_transaction()
                for full, value in txn:
                    producer.produce(full, value, key=b"1", partition=0)
                producer.commit_transaction(30)
            assert topic == encoded[0][0]

            def unchecked() -> float:
                text = proc.get("/metrics")[1].decode()
                return _sample(
                    text, "streams_consumer_gaps_total", agent="faust", outcome="unchecked"
                )

            harness.wait_for(lambda: unchecked() >= 1, 60, what="the reported gap")
            assert "consumer.gap.unchecked" in (tmp_path / "worker.log").read_text()
        finally:
            proc.stop()
