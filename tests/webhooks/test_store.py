"""The delivery store on a real PostgreSQL: targets, request log trimming, fired counts."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from streams.webhooks.deliver import Target, TargetKey
from streams.webhooks.store import DeliveryStore, LogEntry
from tests.support.webhooks import Rows


def entry(kind: str, target: int, n: int) -> LogEntry:
    return LogEntry(
        target_kind=kind,
        target_id=target,
        delivery_id=f"d-{n}",
        attempt=1,
        event_type="event.created",
        sent_at=dt.datetime.now(dt.UTC),
        status_code=200 if n % 2 else None,
        duration_ms=1.5,
        error=None if n % 2 else "timeout after 10s\twith a tab",
    )


T = TypeVar("T")


def with_store(dsn: str, work: Callable[[DeliveryStore], Awaitable[T]]) -> T:
    async def run() -> T:
        pool = AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False)
        await pool.open()

        async def factory() -> AsyncConnectionPool:
            return pool

        try:
            return await work(DeliveryStore(factory, cache_seconds=60.0))
        finally:
            await pool.close()

    return asyncio.run(run())


def test_log_keeps_the_newest_per_target_and_counts_firings(database: str) -> None:
    rows = Rows(database)
    hook = rows.hook("http://93.184.216.34/h", ["event.created"])
    other = rows.hook("http://93.184.216.34/o", ["event.created"])

    async def work(store: DeliveryStore) -> int:
        await store.record([entry("service_hook", hook, n) for n in range(130)], Counter({hook: 2}))
        await store.record([entry("service_hook", other, n) for n in range(5)], Counter())
        await store.record([], Counter({hook: 3, 10**9: 1}))  # a deleted hook is skipped
        return await store.trim(keep=100)

    assert with_store(database, work) == 30
    with psycopg.connect(database) as conn:
        kept = conn.execute(
            "SELECT target_id, delivery_id FROM webhook_delivery_log ORDER BY id"
        ).fetchall()
        errors = conn.execute(
            "SELECT DISTINCT error FROM webhook_delivery_log WHERE error IS NOT NULL"
        ).fetchall()
        fired = conn.execute("SELECT service_hook_id, count FROM service_hook_fired").fetchall()
    assert [d for t, d in kept if t == hook] == [f"d-{n}" for n in range(30, 130)]  # newest
    assert [d for t, d in kept if t == other] == [f"d-{n}" for n in range(5)]
    assert errors == [("timeout after 10s\twith a tab",)]
    assert fired == [(hook, 5)]


def test_targets_are_active_ones_only_and_cached(database: str) -> None:
    rows = Rows(database)
    active = rows.install(rows.app("http://93.184.216.34/a", ["issue"], secret="sa"))[0]
    pending = rows.install(rows.app("http://93.184.216.34/p", ["issue"]), status=1)[0]
    hook = rows.hook("http://93.184.216.34/h", ["event.created"], secret="sh")
    off = rows.hook("http://93.184.216.34/x", ["event.created"], status=1)
    keys = [("sentry_app", active), ("sentry_app", pending), ("service_hook", hook)]
    keys.append(("service_hook", off))

    async def work(store: DeliveryStore) -> tuple[Mapping[TargetKey, Target], ...]:
        first = await store.targets(keys)
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("UPDATE service_hook SET status = 1 WHERE id = %s", (hook,))
        return first, await store.targets(keys)

    first, second = with_store(database, work)
    assert sorted(first) == [("sentry_app", active), ("service_hook", hook)]
    assert first["sentry_app", active].secret == "sa"
    assert first["service_hook", hook].guid
    assert second == first  # cached (cache_seconds=60): no query per delivery
