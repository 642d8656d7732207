"""Where ``streams dlq replay`` may send dead letters, and relay dead letters back home.

Agents dead-letter Kafka records: their source is a catalogue topic, and a replay
re-publishes the original bytes there. The relay dead-letters outbox *rows* (the row as
JSON, source = the outbox table): nothing consumes a topic named after a table, so
replaying those to Kafka would lose them. ``--to-outbox`` instead inserts each row again
into its outbox table, where the relay publishes it like any new row; the insert and the
replay record commit in one transaction, so a letter goes back once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import psycopg
from psycopg import sql

from streams import catalogue
from streams.db.pool import connect
from streams.dlq import dead_rows
from streams.dlq import headers as dl
from streams.dlq.replay import DeadLetter, read, record_replay
from streams.outbox.categories import TABLES, OutboxTable
from streams.preflight import Refused
from streams.settings import Settings

log = logging.getLogger(__name__)

OUTBOX_SOURCES: dict[str, OutboxTable] = {t.name: t for t in TABLES.values()}


def replayable_topics() -> list[str]:
    """Catalogue topics a dead letter can be replayed to (not the dead letters' own)."""
    return sorted(n for n in catalogue.TOPICS if n != "dead-letters")


def check_topic(settings: Settings, topic: str) -> None:
    """Raise ``Refused`` unless ``topic`` is a catalogue topic (prefixed or not)."""
    if topic in OUTBOX_SOURCES:
        raise Refused(
            f"{topic!r} is an outbox table (relay dead letters), not a topic: nothing would "
            f"read them there; use `streams dlq replay --to-outbox --topic {topic}` to put "
            "them back into the table for the relay"
        )
    bare = topic.removeprefix(settings.topic_prefix) if settings.topic_prefix else topic
    if bare in catalogue.TOPICS and bare != "dead-letters":
        return
    if bare != "dead-letters" and _exists_on_cluster(settings, settings.topic_prefix + bare):
        return  # an extension agent's topic (STREAMS_AGENT_MODULES): not in the catalogue
    raise Refused(
        f"unknown topic {topic!r}; dead letters can be replayed to: "
        f"{', '.join(replayable_topics())} (relay dead letters: --to-outbox)"
    )


def _exists_on_cluster(settings: Settings, topic: str) -> bool:
    from confluent_kafka.admin import AdminClient

    from streams.kafka_config import common

    admin = AdminClient(common(settings))
    try:
        meta = admin.list_topics(timeout=settings.connect_timeout)  # all: never auto-create
    except Exception:
        return False
    found = meta.topics.get(topic)
    return found is not None and found.error is None


def _matches(letter: DeadLetter, since_ms: int, reason: str | None, key: bytes | None) -> bool:
    return (
        letter.source_topic in OUTBOX_SOURCES
        and letter.timestamp_ms >= since_ms
        and (reason is None or letter.reason == reason)
        and (key is None or letter.key == key)
    )


def replay_to_outbox(
    settings: Settings,
    *,
    table: str | None = None,
    since: dt.datetime | None = None,
    reason: str | None = None,
    key: bytes | None = None,
) -> tuple[int, int]:
    """Insert matching relay dead letters back into their outbox table, each once, and
    the rows kept whole in ``relay_dead_rows``; returns (rows put back, letters skipped
    because an older relay cut their row to fit)."""
    if table is not None and table not in OUTBOX_SOURCES:
        raise Refused(
            f"--to-outbox takes an outbox table, not {table!r}: {', '.join(OUTBOX_SOURCES)}"
        )
    dlq_topic = catalogue.spec("dead-letters").full_name(settings.topic_prefix)
    since_ms = int(since.timestamp() * 1000) if since else 0
    put_back = skipped = 0
    with connect(settings) as conn:
        for letter in read(settings, source_topic=table):
            if not _matches(letter, since_ms, reason, key):
                continue
            if letter.header(dl.H_TRUNCATED) in ("1", "true"):
                # The stored row was cut to fit a message: inserting it would publish
                # garbage. Say so; the letter stays listed for a manual fix.
                log.warning(
                    "dlq.outbox_replay.truncated",
                    extra={"partition": letter.partition, "offset": letter.offset},
                )
                skipped += 1
                continue
            if _put_back(conn, dlq_topic, letter):
                put_back += 1
            conn.commit()
        if key is None:  # rows kept in PostgreSQL have no message key to match
            put_back += _restore_dead_rows(conn, table, since, reason)
            conn.commit()
    return put_back, skipped


def _put_back(conn: psycopg.Connection[Any], dlq_topic: str, letter: DeadLetter) -> bool:
    """Record the replay and insert the row, in the caller's transaction; False when the
    letter went back before."""
    recorded = record_replay(conn, dlq_topic, letter)
    if not recorded:
        return False
    row = json.loads(letter.value or b"{}")
    _insert_row(conn, OUTBOX_SOURCES[letter.source_topic], row)
    log.info(
        "dlq.outbox_replay.row",
        extra={"table": letter.source_topic, "old_id": row.get("id"), "offset": letter.offset},
    )
    return True


def _insert_row(conn: psycopg.Connection[Any], table: OutboxTable, row: dict[str, Any]) -> None:
    """Insert a dead-lettered row (its JSON form) into its outbox table as a new row."""
    columns = ["shard_scope", "shard_identifier", "category", "object_identifier", "payload"]
    values = [
        row["shard_scope"],
        row["shard_identifier"],
        row["category"],
        row["object_identifier"],
        None if row.get("payload") is None else json.dumps(row["payload"]),
    ]
    if table.has_region:
        columns.append("region_name")
        values.append(row["region_name"])
    query = sql.SQL("INSERT INTO {t} ({c}) VALUES ({v})").format(
        t=sql.Identifier(table.name),
        c=sql.SQL(", ").join(map(sql.Identifier, columns)),
        v=sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    conn.execute(query, values)


def _restore_dead_rows(
    conn: psycopg.Connection[Any], table: str | None, since: dt.datetime | None, reason: str | None
) -> int:
    """Put rows kept whole in ``relay_dead_rows`` (too large for a dead letter) back into
    their outbox tables, each once; in the caller's transaction."""
    restored = 0
    for dead in dead_rows.pending(conn, table=table, since=since, reason=reason, lock=True):
        _insert_row(conn, OUTBOX_SOURCES[dead.outbox_table], dead.row)
        dead_rows.mark_restored(conn, dead)
        log.info(
            "dlq.outbox_replay.dead_row",
            extra={"table": dead.outbox_table, "old_id": dead.outbox_id},
        )
        restored += 1
    return restored


def dead_row_lines(settings: Settings, table: str | None = None) -> list[str]:
    """``streams dlq list`` lines for the rows kept in ``relay_dead_rows``."""
    with connect(settings) as conn:
        rows = dead_rows.pending(conn, table=table)
    return [
        f"postgres:relay_dead_rows {r.outbox_table} id={r.outbox_id} reason={r.reason} "
        f"{r.error_type}: {r.error_message[:200]} ({r.size_bytes} bytes, kept whole: "
        "too large for the dead-letter topic)"
        for r in rows
    ]
