"""``streams dlq replay``: unknown topics and outbox tables are refused (exit 2); relay dead
letters go back into their outbox table with ``--to-outbox``, once."""

from __future__ import annotations

import json

import psycopg

from streams.relay.relay import Relay
from streams.settings import Settings
from tests.cli.support import streams
from tests.support import harness


def _replays(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM streams_dlq_replays").fetchone()
    return int(row[0]) if row else 0


def _dead_letter_a_row(settings: Settings) -> None:
    """A row the relay cannot route: it dead-letters it (as JSON) and deletes it."""
    dsn = settings.database_url.get()
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO region_outbox (shard_scope, shard_identifier, category,"
            " object_identifier, payload) VALUES ('organization_scope', 5, 'no_such_category',"
            " 7, '{\"x\": 1}')"
        )
        conn.commit()
    relay = Relay(settings, concurrency=1)
    relay.pool.open(wait=True)
    try:
        relay.run_pass()
    finally:
        relay.close()


def _outbox_rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT shard_scope, shard_identifier, category, object_identifier, payload"
            " FROM region_outbox"
        ).fetchall()


def test_unknown_topic_is_refused_with_the_valid_ones(settings: Settings) -> None:
    result = streams("dlq", "replay", "--topic", "nope", env=harness.env_for(settings))
    assert result.code == 2, result.stderr
    [line] = result.err_lines
    assert line.startswith("streams: unknown topic 'nope'; dead letters can be replayed to: ")
    assert "resource-changes" in line and "webhook-deliveries" in line


def test_relay_dead_letters_go_back_to_their_outbox_table_once(settings: Settings) -> None:
    dsn = settings.database_url.get()
    env = harness.env_for(settings)
    _dead_letter_a_row(settings)
    assert _outbox_rows(dsn) == []
    listed = streams("dlq", "list", env=env)
    assert "region_outbox" in listed.stdout and "reason=encode" in listed.stdout

    refused = streams("dlq", "replay", "--topic", "region_outbox", env=env)
    assert refused.code == 2, refused.stderr
    assert refused.err_lines[0].startswith("streams: 'region_outbox' is an outbox table")
    assert "--to-outbox" in refused.err_lines[0]
    assert _replays(dsn) == 0  # not marked replayed

    first = streams("dlq", "replay", "--to-outbox", env=env)
    assert first.code == 0, first.stderr
    assert first.stdout.strip() == "put 1 relay dead letters back into their outbox table"
    assert _outbox_rows(dsn) == [("organization_scope", 5, "no_such_category", 7, {"x": 1})]
    assert _replays(dsn) == 1

    again = streams("dlq", "replay", "--to-outbox", "--topic", "region_outbox", env=env)
    assert again.code == 0, again.stderr
    assert again.stdout.startswith("put 0 ")
    assert len(_outbox_rows(dsn)) == 1
    assert json.dumps(_outbox_rows(dsn)[0][4]) == '{"x": 1}'
