"""Backfill in-process against the real PostgreSQL: state, versions, budget, re-delivery."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from streams.backfill import batch as batch_mod
from streams.backfill.batch import Batch, process_batch
from streams.backfill.models import MODELS
from streams.backfill.scheduler import Limits, plan, schedule
from streams.backfill.state import compare_and_set, get_state, set_override
from streams.metrics import REGISTRY
from streams.relay.relay import Relay
from streams.settings import Settings
from streams.silo import SiloMode
from tests.backfill.support import (
    aconnect,
    add_organizations,
    clear_outbox,
    outbox_objects,
    run_sync,
    state,
)
from tests.relay.support import write

ORG = MODELS["organization"]


def test_processing_state_defaults_to_0_1_and_only_moves_forward(settings: Settings) -> None:
    async def scenario() -> None:
        conn = await aconnect(settings.database_url.get())
        async with conn:
            assert (await get_state(conn, "organization")).key == (0, 1)
            assert await compare_and_set(conn, "organization", (0, 1), (101, 1))
            assert not await compare_and_set(conn, "organization", (0, 1), (201, 1)), "stale"
            assert not await compare_and_set(conn, "organization", (101, 1), (50, 1)), "back"
            assert not await compare_and_set(conn, "organization", (101, 1), (0, 1)), "back"
            # Two schedulers racing from the same state: exactly one wins.
            other = await aconnect(settings.database_url.get())
            async with other:
                wins = await asyncio.gather(
                    compare_and_set(conn, "organization", (101, 1), (201, 1)),
                    compare_and_set(other, "organization", (101, 1), (301, 1)),
                )
            assert sorted(wins) == [False, True]
            assert await compare_and_set(
                conn, "organization", (await get_state(conn, "organization")).key, (0, 2)
            )
        assert (
            REGISTRY.get_sample_value(
                "streams_backfill_lower_bound", {"table": "organization", "version": "2"}
            )
            == 0
        )
        assert (
            REGISTRY.get_sample_value(
                "streams_backfill_lower_bound", {"table": "organization", "version": "1"}
            )
            is None
        )

    asyncio.run(scenario())


def test_batches_take_batch_size_plus_one_ids_and_chain_their_states(settings: Settings) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 25)

    async def scenario() -> list[Batch]:
        async with await aconnect(dsn) as conn:
            return await plan(conn, ORG, Limits(0, 10), None)

    batches = asyncio.run(scenario())
    assert [(b.lower, b.upper, b.state_lower, b.rows) for b in batches] == [
        (1, 11, 0, 11),
        (12, 22, 12, 11),
        (23, 25, 23, 3),
    ]


def test_every_instance_gets_one_outbox_row_and_the_state_ends_at_0_2(settings: Settings) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 2_500)
    written, output = run_sync(settings, [ORG])
    assert written == 2_500
    objects = outbox_objects(dsn)
    assert sorted(objects) == list(range(1, 2_501))
    assert state(dsn) == (0, 2)
    assert "2,500/2,500 rows (100.0%)" in output


def test_a_version_bump_re_emits_every_row_and_a_lower_override_holds_it_back(
    settings: Settings,
) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 300)
    run_sync(settings, [ORG])
    assert state(dsn) == (0, 2)
    clear_outbox(dsn)  # as if the relay had published them
    run_sync(settings, [ORG])
    assert outbox_objects(dsn) == [], "same version: nothing to do"

    bumped = replace(ORG, replication_version=2)

    async def override(version: int | None) -> None:
        async with await aconnect(dsn) as conn:
            await set_override(conn, "organization", version)

    asyncio.run(override(1))
    run_sync(settings, [bumped])
    assert outbox_objects(dsn) == [] and state(dsn) == (0, 2), "held back by the override"
    asyncio.run(override(2))
    run_sync(settings, [bumped])
    assert sorted(outbox_objects(dsn)) == list(range(1, 301))
    assert state(dsn) == (0, 3)


def _wait_for_fresh_minute() -> None:
    """The budget is per minute: do not straddle a minute boundary."""
    second = dt.datetime.now(dt.UTC).second
    if second >= 48:
        time.sleep(61 - second)


def test_backfill_emits_at_most_max_rate_minus_the_regular_drain(settings: Settings) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 5_000)
    _wait_for_fresh_minute()
    # The regular drain: the relay publishes 1,000 ordinary outbox rows this minute.
    write(dsn, [(i % 50, i) for i in range(1_000)])
    relay = Relay(settings, concurrency=2)
    relay.pool.open(wait=True)
    try:
        relay.run_pass()
    finally:
        relay.close()
    emitted: list[Batch] = []

    async def scenario() -> None:
        async def collect(b: Batch) -> None:
            emitted.append(b)

        async with await aconnect(dsn) as conn:
            limits = Limits(3_000, 500)
            await schedule(conn, [ORG], SiloMode.MONOLITH, limits, collect)
            await schedule(conn, [ORG], SiloMode.MONOLITH, limits, collect)  # same minute

    asyncio.run(scenario())
    assert sum(b.rows for b in emitted) == 3_000 - 1_000
    assert max(b.rows for b in emitted) <= 501


def test_a_redelivered_batch_resumes_and_a_stale_one_changes_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = settings.database_url.get()
    add_organizations(dsn, 50)
    monkeypatch.setattr(batch_mod, "CHUNK", 5)

    class Crash(Exception):
        pass

    async def scenario() -> None:
        async with await aconnect(dsn) as conn:
            [first, *_] = await plan(conn, ORG, Limits(0, 20), None)
            assert (first.lower, first.upper, first.state_lower) == (1, 21, 0)
            calls = {"n": 0}
            real = conn.execute

            async def crashing(query: Any, params: Any = None) -> Any:
                if isinstance(query, bytes) and query.startswith(b"BEGIN"):
                    calls["n"] += 1
                    if calls["n"] == 3:  # two chunks of 5 committed, then the worker dies
                        raise Crash()
                return await real(query, params)

            conn.execute = crashing  # type: ignore[method-assign,assignment]
            with pytest.raises(Crash):
                await process_batch(conn, ORG, first, ("default",))
            conn.execute = real  # type: ignore[method-assign]
            assert (await get_state(conn, "organization")).key == (0, 1)
            assert sorted(outbox_objects(dsn)) == list(range(1, 11))
            # Re-delivered: resumes after instance 10, then moves the state on.
            assert await process_batch(conn, ORG, first, ("default",)) == ("processed", 11)
            assert (await get_state(conn, "organization")).key == (22, 1)
            # Delivered once more: stale, writes nothing, state stays.
            assert await process_batch(conn, ORG, first, ("default",)) == ("stale", 0)
            assert (await get_state(conn, "organization")).key == (22, 1)

    asyncio.run(scenario())
    objects = outbox_objects(dsn)
    assert sorted(objects) == list(range(1, 22)), "no instance twice, none skipped"


def test_a_control_model_writes_one_row_per_region(settings: Settings) -> None:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO auth_user (username) SELECT 'u' || i FROM generate_series(1, 20) i"
        )
        conn.commit()
    run_sync(settings.with_(region_names=("eu", "us")), [MODELS["user"]])
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT region_name, count(*) FROM control_outbox WHERE backfill GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert rows == [("eu", 20), ("us", 20)]
    assert state(dsn, "auth_user") == (0, 2)
