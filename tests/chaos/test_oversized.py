"""Oversized messages are refused in the caller's transaction; nothing is truncated."""

from __future__ import annotations

import psycopg
import pytest

from streams.errors import MessageTooLarge
from streams.outbox import enqueue_outbox
from streams.publisher import Publisher
from tests.relay import support as rs


def _row(conn: psycopg.Connection[tuple[object, ...]], blob: str) -> int:
    return enqueue_outbox(
        conn,
        scope="organization_scope",
        shard_identifier=1,
        category="organization_update",
        object_identifier=1,
        payload={"blob": blob},
    )


@pytest.mark.parametrize("size", [5_000_000, 20_000_000])
def test_an_outbox_row_its_topic_cannot_take_is_refused_in_the_callers_transaction(
    database: str, size: int
) -> None:
    # Before: written, then dead-lettered truncated to 900,000 bytes and deleted.
    with psycopg.connect(database) as conn:
        kept = _row(conn, "small")
        with pytest.raises(MessageTooLarge, match="nothing was written"):
            _row(conn, "x" * size)
        conn.commit()  # the caller's transaction goes on: the rest of it commits
    assert rs.queued(database) == 1 and kept > 0


def test_a_payload_just_under_the_limit_is_accepted(database: str) -> None:
    with psycopg.connect(database) as conn:
        _row(conn, "x" * 1_000_000)
        conn.commit()
    assert rs.queued(database) == 1


def test_publish_refuses_a_message_over_the_topics_limit_before_sending(
    publisher: Publisher,
) -> None:
    with pytest.raises(MessageTooLarge, match="nothing was sent"):
        publisher.publish("dead-letters", b"x" * 2_000_000, key=b"k")
    publisher.publish("dead-letters", b"x" * 500_000, key=b"k")  # still fine
