"""Outbox backfill: a timer emits batches to ``outbox-backfill-batches``; this agent writes them.

Topic: ``outbox-backfill-batches`` (key: table, so a table's batches stay in order on
one partition). State: ``outbox_backfill_state`` in PostgreSQL (see
``streams.backfill.state``). The timer runs on the leader worker only, every
``STREAMS_BACKFILL_INTERVAL`` seconds, within the per-minute budget.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from streams.agents.base import AgentSpec, Message, RetryPolicy, attach
from streams.backfill.batch import Batch, process_batch
from streams.backfill.models import BY_TABLE, for_silo
from streams.backfill.scheduler import Limits, schedule
from streams.errors import PermanentFailure
from streams.runtime import Runtime
from streams.silo import ALL_SILOS

log = logging.getLogger(__name__)

TOPIC: Final = "outbox-backfill-batches"


def install(app: Any, runtime: Runtime) -> None:
    settings = runtime.settings
    models = for_silo(settings.silo_mode)
    mine = {m.table: m for m in models}
    limits = Limits(settings.backfill_max_rate, settings.backfill_batch_size)

    async def handle(msg: Message) -> None:
        batch = Batch.from_value(msg.value)
        model = mine.get(batch.table)
        if model is None:
            if batch.table not in BY_TABLE:
                raise PermanentFailure(f"no outbox-producing model has table {batch.table!r}")
            log.info("backfill.batch.other_silo", extra={"table": batch.table})
            return
        pool = await runtime.pool()
        async with pool.connection() as conn:
            await conn.set_autocommit(True)  # one transaction per instance
            try:
                outcome, rows = await process_batch(conn, model, batch, settings.region_names)
            finally:
                await conn.set_autocommit(False)
        log.info(
            "backfill.batch.done",
            extra={"table": batch.table, "outcome": outcome, "rows": rows, "upper": batch.upper},
        )

    attach(
        app,
        runtime,
        AgentSpec(
            name="outbox_backfill",
            topic=TOPIC,
            silos=ALL_SILOS,
            handler=handle,
            retry=RetryPolicy(times=10, delay=1.0, max_delay=10.0),
            deadline=600.0,
        ),
    )

    async def emit(batch: Batch) -> None:
        await runtime.publisher.publish_async(TOPIC, batch.value(), key=batch.table)

    async def schedule_backfill() -> None:
        try:
            pool = await runtime.pool()
            async with pool.connection() as conn:
                await conn.set_autocommit(True)
                try:
                    await schedule(conn, models, settings.silo_mode, limits, emit)
                finally:
                    await conn.set_autocommit(False)
        except Exception as exc:  # a failed run is retried by the next tick
            log.warning("backfill.schedule.failed", extra={"error": repr(exc)})

    app.timer(settings.backfill_interval, on_leader=True, name="backfill-schedule")(
        schedule_backfill
    )
