"""A batch whose COMMIT answer was lost with its connection: did it commit?

The relay's batch transaction deletes the rows the broker acknowledged. When the
connection drops during COMMIT, the relay cannot tell whether PostgreSQL committed.
``resolve`` learns it on a new connection by deleting the same acknowledged rows again:
none left means the batch committed; rows left mean it did not, and deleting them now
(with the rest of the batch's writes) finishes it, so the acknowledged rows are not
published a second time. Either way the relay goes on, at least once, never lost.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from psycopg_pool import ConnectionPool

from streams import marks
from streams.dlq import dead_rows
from streams.dlq.headers import Letter
from streams.outbox.categories import OutboxTable
from streams.relay import claim
from streams.relay.messages import ShardKey

if TYPE_CHECKING:
    from streams.relay.drain import DrainStats

log = logging.getLogger(__name__)

KIND = "relay_delete"


@dataclass
class Settled:
    """What a batch's transaction wrote after publishing, to be done again if lost."""

    stats: DrainStats
    deletable: list[int]
    parked: list[Letter]
    reschedule: dict[ShardKey, dt.timedelta] = field(default_factory=dict)


class CommitUnknown(Exception):
    """The batch's COMMIT answer was lost; ``settled`` holds what it wrote."""

    def __init__(self, settled: Settled, cursor: int, error: psycopg.Error) -> None:
        super().__init__(repr(error))
        self.settled = settled
        self.cursor = cursor
        self.error = error


def resolve(pool: ConnectionPool, table: OutboxTable, settled: Settled) -> bool:
    """Whether the lost COMMIT had committed; if not, its writes are done now.

    Raises what the database raises when it cannot be reached (the rows then stay,
    and are published again on a later pass: at least once).
    """
    with pool.connection() as conn, conn.transaction():
        left = claim.delete(conn, table, settled.deletable)
        committed = left == 0
        if not committed:
            dead_rows.park(conn, settled.parked)
            claim.reschedule(conn, table, settled.reschedule)
    marks.resolved(KIND, committed)
    log.warning(
        "relay.commit.resolved",
        extra={
            "table": table.name,
            "committed": committed,
            "rows": len(settled.deletable),
            "deleted_now": left,
        },
    )
    return committed
