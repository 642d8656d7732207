from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from streams.db.migrate import MigrationError, discover, migrate


def test_migrations_are_recorded_and_idempotent(database: str) -> None:
    # The fixture's database came from a migrated template: nothing is pending.
    assert migrate(database) == []
    with psycopg.connect(database) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM streams_migrations ORDER BY 1")]
    assert versions == [m.version for m in discover()]


def test_failed_migration_rolls_back_and_edited_migration_is_refused(
    database: str, tmp_path: Path
) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "9001_ok.sql").write_text("CREATE TABLE mig_ok (id int);")
    (d / "9002_bad.sql").write_text("CREATE TABLE mig_half (id int); SELECT * FROM nope;")
    with pytest.raises(MigrationError, match="9002_bad"):
        migrate(database, d)
    with psycopg.connect(database) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'mig_%'")
        }
    assert tables == {"mig_ok"}  # 9002 left nothing behind
    (d / "9002_bad.sql").unlink()
    (d / "9001_ok.sql").write_text("CREATE TABLE mig_ok (id bigint);")
    with pytest.raises(MigrationError, match="edited"):
        migrate(database, d)
