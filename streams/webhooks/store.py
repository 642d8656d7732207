"""PostgreSQL side of deliveries: targets (cached briefly), the request log, fired counts.

Writes are batched per agent batch: one COPY into ``webhook_delivery_log`` and one
upsert per (hook, minute) into ``service_hook_fired``. The log keeps the last
``LOG_KEEP`` requests per target; ``trim`` deletes older rows of the targets written
since the previous trim, so its cost follows the traffic, not the table size.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from streams.db.pool import reading
from streams.webhooks.deliver import Target, TargetKey

LOG_KEEP = 100
TARGET_CACHE_SECONDS = 5.0

PoolFactory = Callable[[], Awaitable[AsyncConnectionPool]]


@dataclass(frozen=True)
class LogEntry:
    target_kind: str
    target_id: int
    delivery_id: str
    attempt: int
    event_type: str
    sent_at: dt.datetime
    status_code: int | None
    duration_ms: float
    error: str | None


def minute_of(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)


class DeliveryStore:
    """Targets, request log and fired counter, over the worker's async pool."""

    def __init__(self, pool: PoolFactory, *, cache_seconds: float = TARGET_CACHE_SECONDS) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: dict[TargetKey, tuple[float, Target | None]] = {}
        self._dirty: set[TargetKey] = set()

    async def targets(self, keys: Sequence[TargetKey]) -> Mapping[TargetKey, Target]:
        now = time.monotonic()
        found: dict[TargetKey, Target] = {}
        missing: set[TargetKey] = set()
        for key in keys:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                if hit[1] is not None:
                    found[key] = hit[1]
            else:
                missing.add(key)
        if missing:
            loaded = await self._load(missing)
            for key in missing:
                self._cache[key] = (now + self._cache_seconds, loaded.get(key))
            found.update(loaded)
        return found

    async def _load(self, keys: set[TargetKey]) -> dict[TargetKey, Target]:
        apps = [i for k, i in keys if k == "sentry_app"]
        hooks = [i for k, i in keys if k == "service_hook"]
        out: dict[TargetKey, Target] = {}
        pool = await self._pool()
        async with reading(pool) as conn:
            if apps:
                cur = await conn.execute(
                    "SELECT i.id, a.webhook_url, a.client_secret FROM sentry_app_installation i "
                    "JOIN sentry_app a ON a.id = i.sentry_app_id "
                    "WHERE i.id = ANY(%s) AND i.status = 0 AND a.status = 0",
                    (apps,),
                )
                for iid, url, secret in await cur.fetchall():
                    out["sentry_app", int(iid)] = Target("sentry_app", int(iid), url, secret)
            if hooks:
                cur = await conn.execute(
                    "SELECT id, url, secret, guid FROM service_hook "
                    "WHERE id = ANY(%s) AND status = 0",
                    (hooks,),
                )
                for hid, url, secret, guid in await cur.fetchall():
                    out["service_hook", int(hid)] = Target(
                        "service_hook", int(hid), url, secret, str(guid)
                    )
        return out

    async def record(self, entries: Sequence[LogEntry], fired: Counter[int]) -> None:
        """Append request-log rows and add service-hook firings to the current minute."""
        if not entries and not fired:
            return
        minute = minute_of(dt.datetime.now(dt.UTC))
        pool = await self._pool()
        async with pool.connection() as conn, conn.transaction():
            if entries:
                async with (
                    conn.cursor() as cur,
                    cur.copy(
                        "COPY webhook_delivery_log (target_kind, target_id, delivery_id, attempt, "
                        "event_type, sent_at, status_code, duration_ms, error) FROM STDIN"
                    ) as copy,
                ):
                    for e in entries:
                        await copy.write_row(
                            (
                                e.target_kind,
                                e.target_id,
                                e.delivery_id,
                                e.attempt,
                                e.event_type,
                                e.sent_at,
                                e.status_code,
                                e.duration_ms,
                                e.error,
                            )
                        )
            if fired:
                # Through a SELECT so a hook deleted meanwhile is skipped, not an FK error.
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO service_hook_fired (service_hook_id, minute, count) "
                        "SELECT id, %s, %s FROM service_hook WHERE id = %s "
                        "ON CONFLICT (service_hook_id, minute) "
                        "DO UPDATE SET count = service_hook_fired.count + EXCLUDED.count",
                        [(minute, n, hook_id) for hook_id, n in sorted(fired.items())],
                    )
        self._dirty.update((e.target_kind, e.target_id) for e in entries)

    async def trim(self, keep: int = LOG_KEEP) -> int:
        """Delete log rows beyond the newest ``keep`` of each recently written target."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return 0
        pool = await self._pool()
        deleted = 0
        async with pool.connection() as conn:
            for kind, target_id in sorted(dirty):
                cur = await conn.execute(
                    "DELETE FROM webhook_delivery_log WHERE target_kind = %s AND target_id = %s "
                    "AND id < (SELECT id FROM webhook_delivery_log WHERE target_kind = %s "
                    "AND target_id = %s ORDER BY id DESC OFFSET %s LIMIT 1)",
                    (kind, target_id, kind, target_id, keep - 1),
                )
                deleted += cur.rowcount
        return deleted
