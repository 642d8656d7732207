"""Versioned SQL migrations: ``streams/db/migrations/NNNN_name.sql``, applied in order.

A small runner rather than a library: the migrations are plain SQL, each runs in its
own transaction together with its record in ``streams_migrations`` (name + checksum),
and a PostgreSQL advisory lock serialises concurrent ``migrate`` calls (several pods
starting at once). Alembic would bring SQLAlchemy and yoyo its own connection layer
for what is ~80 lines here. An applied migration whose file changed is an error.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg

from streams.errors import StreamsError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
LOCK_ID = 0x5772EA45  # arbitrary, constant: "streams" migrations advisory lock


class MigrationError(StreamsError, RuntimeError):
    """A migration failed or an applied one was edited."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for f in sorted(directory.glob("*.sql")):
        number, _, name = f.stem.partition("_")
        if not number.isdigit():
            raise MigrationError(f"migration {f.name} does not start with a number")
        found.append(Migration(int(number), name, f.read_text()))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"duplicate migration numbers in {directory}")
    return found


def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations; returns those applied now. Idempotent."""
    applied_now: list[Migration] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS streams_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = conn.execute("SELECT version, checksum FROM streams_migrations").fetchall()
            done = {int(v): str(c) for v, c in rows}
            for m in discover(directory):
                if m.version in done:
                    if done[m.version] != m.checksum:
                        raise MigrationError(
                            f"migration {m.version:04d}_{m.name} was edited after it was applied"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(m.sql.encode())
                        conn.execute(
                            "INSERT INTO streams_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} failed: {exc}"
                    ) from exc
                log.info("db.migration.applied", extra={"version": m.version, "migration": m.name})
                applied_now.append(m)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied_now
