"""A small extension agent used to test the agent framework end to end.

It is loaded into a real worker through ``STREAMS_AGENT_MODULES``, exactly as a team's
own agent would be, with its own topic and Avro schema.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams import catalogue
from streams.agents.base import AgentSpec, Message, RetryPolicy, attach
from streams.avro.store import default_store, load_version
from streams.errors import RetryLater
from streams.runtime import Runtime
from streams.silo import REGION_ONLY

TOPIC = "probe"
SCHEMA = {
    "type": "record",
    "name": "Probe",
    "namespace": "io.streams.tests",
    "doc": "A test message.",
    "fields": [
        {"name": "id", "type": "long", "doc": "Row id."},
        {
            "name": "action",
            "doc": "What the agent does.",
            "type": {
                "type": "enum",
                "name": "ProbeAction",
                "symbols": ["ok", "fail", "needs_row", "slow"],
            },
        },
        {"name": "note", "type": "string", "doc": "Free text.", "default": ""},
    ],
}

catalogue.register(
    catalogue.TopicSpec(TOPIC, key="id", doc="test probe", partitions=2, publishers=REGION_ONLY)
)
default_store().add(load_version(TOPIC, 1, SCHEMA))

DDL = """
CREATE TABLE IF NOT EXISTS probe_effects (id bigint PRIMARY KEY, note text, attempt int,
                                          traceparent text);
CREATE TABLE IF NOT EXISTS probe_rows (id bigint PRIMARY KEY);
"""


def install(app: Any, runtime: Runtime) -> None:
    ready = asyncio.Event()

    async def ensure_tables() -> None:
        if not ready.is_set():
            pool = await runtime.pool()
            async with pool.connection() as conn:
                await conn.execute(DDL)
            ready.set()

    async def handle(msg: Message) -> None:
        await ensure_tables()
        value = msg.value
        if value["action"] == "fail":
            raise ValueError(f"probe {value['id']} asked to fail")
        if value["action"] == "slow":
            await asyncio.sleep(10)
        pool = await runtime.pool()
        async with pool.connection() as conn:
            if value["action"] == "needs_row":
                cur = await conn.execute("SELECT 1 FROM probe_rows WHERE id = %s", (value["id"],))
                if await cur.fetchone() is None:
                    raise RetryLater(f"probe row {value['id']} not visible yet")
            await conn.execute(
                "INSERT INTO probe_effects (id, note, attempt, traceparent) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note",
                (
                    value["id"],
                    value["note"],
                    msg.attempt,
                    (msg.headers.get("traceparent") or b"").decode(),
                ),
            )

    attach(
        app,
        runtime,
        AgentSpec(
            name="probe",
            topic=TOPIC,
            silos=REGION_ONLY,
            handler=handle,
            retry=RetryPolicy(times=2, delay=0.05),
            deadline=1.0,
            batch_size=100,
        ),
    )
