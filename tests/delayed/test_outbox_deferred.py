"""``enqueue_outbox(..., countdown=)``: the row waits outside the outbox, its shard does not."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streams.outbox import enqueue_outbox
from streams.settings import Settings
from tests.relay.support import TopicReader, start_relay
from tests.support import harness


def test_a_deferred_row_is_published_when_due_without_holding_up_its_shard(
    settings: Settings, processes: list[harness.Proc], tmp_path: Path
) -> None:
    start_relay(settings, processes, tmp_path / "relay.log")
    reader = TopicReader(settings, ["outbox.region"])
    row: dict[str, Any] = {
        "scope": "organization_scope",
        "shard_identifier": 7,
        "category": "organization_update",
    }
    try:
        with psycopg.connect(settings.database_url.get()) as conn:
            started = time.monotonic()
            enqueue_outbox(conn, **row, object_identifier=1, countdown=3)
            enqueue_outbox(conn, **row, object_identifier=2)
            with pytest.raises(TypeError):  # checked at call time, not when due
                enqueue_outbox(conn, **row, object_identifier="3", countdown=3)  # type: ignore[arg-type]
            conn.commit()
        first = reader.wait_for(lambda rs: len(rs) >= 1, 10, "the immediate row")
        assert [r.value["object_identifier"] for r in first] == [2]
        assert time.monotonic() - started < 3.0
        both = reader.wait_for(lambda rs: len(rs) >= 2, 20, "the deferred row")
        assert time.monotonic() - started >= 3.0
        assert [r.value["object_identifier"] for r in both] == [2, 1]
    finally:
        reader.close()
