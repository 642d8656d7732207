"""A backfill batch whose state move committed but whose answer was lost with the
connection (a proxy in front of the real PostgreSQL drops it): the retry re-reads the
state, learns the move was its own, and counts the batch processed. Before: the retry
found the state moved and counted the batch stale."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from streams.backfill.batch import process_batch
from streams.backfill.models import MODELS
from streams.backfill.scheduler import Limits, plan
from streams.backfill.state import get_state
from streams.metrics import REGISTRY
from streams.settings import Settings
from tests.backfill.support import aconnect, add_organizations, outbox_objects
from tests.relay.commit_proxy import CommitProxy

ORG = MODELS["organization"]


@pytest.fixture
def proxy(settings: Settings) -> Iterator[CommitProxy]:
    target = int(conninfo_to_dict(settings.database_url.get()).get("port") or 5432)
    p = CommitProxy(target)
    try:
        yield p
    finally:
        p.close()


def _batches(outcome: str) -> float:
    labels = {"table": "organization", "outcome": outcome}
    return REGISTRY.get_sample_value("streams_backfill_batches_total", labels) or 0.0


def _resolved() -> float:
    labels = {"kind": "backfill_progress", "outcome": "committed"}
    return REGISTRY.get_sample_value("streams_commit_outcomes_resolved_total", labels) or 0.0


@pytest.mark.allow_errors
def test_a_batch_whose_move_answer_was_lost_counts_as_processed(
    settings: Settings, proxy: CommitProxy
) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 30)
    proxied = make_conninfo(dsn, host="127.0.0.1", port=proxy.port)
    before = (_batches("processed"), _batches("stale"), _resolved())

    async def scenario() -> tuple[str, int]:
        async with await aconnect(dsn) as conn:
            [first, *_] = await plan(conn, ORG, Limits(0, 20), None)
        proxy.arm("after", b"SET lower", on=b"SET lower")  # the autocommitted move
        lossy = await psycopg.AsyncConnection.connect(proxied, autocommit=True)
        with pytest.raises(psycopg.OperationalError):
            await process_batch(lossy, ORG, first, ("default",))
        assert proxy.fired.is_set()
        async with await aconnect(dsn) as conn:
            assert (await get_state(conn, "organization")).key == (first.upper + 1, 1)
            return await process_batch(conn, ORG, first, ("default",))  # the retry

    assert asyncio.run(scenario()) == ("processed", 0)
    after = (_batches("processed"), _batches("stale"), _resolved())
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 0, 1]
    assert sorted(outbox_objects(dsn)) == list(range(1, 22)), "each instance once"
