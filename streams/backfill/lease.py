"""Who schedules backfill batches: ``streams backfill`` holds a lease, the workers yield.

Without it the worker's scheduler timer and the command both schedule, each within its
own rate, and the table is backfilled at their sum. The lease is one row per silo in
``outbox_backfill_lease`` with an expiry: the command renews it each pass and releases
it at the end; one that was killed stops counting after ``LEASE_SECONDS``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from streams.backfill.state import AConn
from streams.errors import StreamsError
from streams.silo import SiloMode

LEASE_SECONDS = 15.0


class LeaseHeld(StreamsError, RuntimeError):
    """Another ``streams backfill`` holds the lease of this silo."""


@dataclass(frozen=True)
class Lease:
    holder: str
    max_rate: int
    seconds_left: float


def holder_name() -> str:
    """``host:pid`` of this process: what ``backfill status`` shows as the holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def current(conn: AConn, silo: SiloMode) -> Lease | None:
    """The live lease of ``silo``, if any."""
    cur = await conn.execute(
        "SELECT holder, max_rate, extract(epoch FROM expires_at - now())"
        " FROM outbox_backfill_lease WHERE silo = %s AND expires_at > now()",
        (silo.value,),
    )
    row = await cur.fetchone()
    return Lease(str(row[0]), int(row[1]), float(row[2])) if row else None


async def acquire(conn: AConn, silo: SiloMode, holder: str, max_rate: int) -> None:
    """Take (or renew) the lease; ``LeaseHeld`` when another live holder has it."""
    cur = await conn.execute(
        "INSERT INTO outbox_backfill_lease AS l (silo, holder, max_rate, expires_at)"
        " VALUES (%s, %s, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (silo) DO UPDATE SET holder = EXCLUDED.holder,"
        "  max_rate = EXCLUDED.max_rate, expires_at = EXCLUDED.expires_at"
        " WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()"
        " RETURNING holder",
        (silo.value, holder, max_rate, LEASE_SECONDS),
    )
    if await cur.fetchone() is None:
        other = await current(conn, silo)
        raise LeaseHeld(
            f"another `streams backfill` ({other.holder if other else 'unknown'}) is "
            f"scheduling the {silo.value} silo's backfill; wait for it, or for its lease to "
            f"expire ({LEASE_SECONDS:g} s after it stopped)"
        )


async def release(conn: AConn, silo: SiloMode, holder: str) -> None:
    """Give the lease back (the workers' scheduler resumes at its next tick)."""
    await conn.execute(
        "DELETE FROM outbox_backfill_lease WHERE silo = %s AND holder = %s", (silo.value, holder)
    )
