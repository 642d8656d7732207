"""A relay dead letter too large for the dead-letter topic: the outbox row is kept whole in
PostgreSQL (relay_dead_rows) with its reason, listed by ``streams dlq list`` and put back
by ``streams dlq replay --to-outbox``, once. Before: the letter was cut to 900,000 bytes
and the row deleted, so the rest of its payload was gone."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from streams.relay.relay import Relay
from streams.settings import Settings
from tests.cli.support import streams
from tests.relay.support import TopicReader, queued, write
from tests.support import harness


@pytest.fixture
def relay(settings: Settings) -> Iterator[Relay]:
    r = Relay(settings, concurrency=1)
    r.pool.open(wait=True)
    try:
        yield r
    finally:
        r.close()


def _unroutable(dsn: str, object_id: int, blob: str) -> int:
    """A row written behind the API's back (no size check): no category routes it."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO region_outbox (shard_scope, shard_identifier, category,"
            " object_identifier, payload) VALUES ('organization_scope', 5, 'no_such_category',"
            " %s, jsonb_build_object('blob', %s::text)) RETURNING id",
            (object_id, blob),
        ).fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


def _payload_sizes(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT length(payload->>'blob') FROM region_outbox ORDER BY object_identifier"
        ).fetchall()
    return [int(r[0]) for r in rows]


@pytest.mark.allow_errors
def test_a_row_too_large_for_a_dead_letter_is_kept_whole_and_put_back(
    settings: Settings, relay: Relay
) -> None:
    dsn = settings.database_url.get()
    reader = TopicReader(settings, ["outbox.region", "dead-letters"])
    big = _unroutable(dsn, 1, "x" * 5_000_000)
    small = _unroutable(dsn, 2, "y" * 10)
    [good] = write(dsn, [(5, 3)])
    try:
        relay.run_pass()
        records = reader.drain(quiet=1.0)
    finally:
        reader.close()
    assert queued(dsn) == 0
    letters = [r for r in records if r.topic == "dead-letters"]
    assert [r.outbox_id for r in letters] == [small]  # the big one is not cut into a letter
    assert all("dlq.truncated" not in r.headers for r in letters)
    assert [r.outbox_id for r in records if r.topic == "outbox.region"] == [good]
    with psycopg.connect(dsn) as conn:
        kept = conn.execute(
            "SELECT outbox_id, reason, length(row_json->'payload'->>'blob') FROM relay_dead_rows"
        ).fetchall()
    assert kept == [(big, "encode", 5_000_000)]

    env = harness.env_for(settings)
    listed = streams("dlq", "list", env=env)
    assert f"relay_dead_rows region_outbox id={big} reason=encode" in listed.stdout
    assert listed.stdout.strip().endswith("2 dead letters")
    put = streams("dlq", "replay", "--to-outbox", env=env)
    assert put.code == 0, put.stderr
    assert put.stdout.strip() == "put 2 relay dead letters back into their outbox table"
    assert _payload_sizes(dsn) == [5_000_000, 10]  # whole, both
    again = streams("dlq", "replay", "--to-outbox", env=env)
    assert again.stdout.startswith("put 0 "), again.stdout
    assert "relay_dead_rows" not in streams("dlq", "list", env=env).stdout
