"""The outbox write API: validation before SQL, the caller's transaction, NOTIFY on commit."""

from __future__ import annotations

import psycopg
import pytest

from streams.outbox import enqueue_outbox
from streams.outbox.categories import OutboxCategory, OutboxError, OutboxScope
from streams.outbox.write import NOTIFY_CHANNEL, build_insert
from streams.settings import Settings


def insert(**kw: object) -> str:
    base: dict[str, object] = {
        "scope": "organization_scope",
        "shard_identifier": 1,
        "category": "organization_update",
        "object_identifier": 1,
        "payload": None,
        "region": None,
        "backfill": False,
    }
    base.update(kw)
    table, _ = build_insert(**base)  # type: ignore[arg-type]
    return table.name


def test_a_category_must_belong_to_its_scope() -> None:
    with pytest.raises(OutboxError, match="belongs to scope 'user_scope'"):
        insert(category="user_update", region="eu")
    with pytest.raises(OutboxError, match="unknown outbox scope"):
        insert(scope="galaxy_scope")
    with pytest.raises(OutboxError, match="unknown outbox category"):
        insert(category="organisation_update")


def test_region_selects_the_control_outbox_and_categories_must_fit_it() -> None:
    assert insert() == "region_outbox"
    assert insert(region="eu") == "control_outbox"
    with pytest.raises(OutboxError, match="takes no region"):
        insert(category="project_update", region="eu")
    with pytest.raises(OutboxError, match="needs a region"):
        insert(scope=OutboxScope.USER, category=OutboxCategory.USER_UPDATE)
    with pytest.raises(OutboxError, match="non-empty region"):
        insert(region="")


def test_values_must_be_plain_data() -> None:
    with pytest.raises(TypeError, match="shard_identifier must be an int"):
        insert(shard_identifier="1")
    with pytest.raises(TypeError, match="not plain JSON"):
        insert(payload={"tags": {1, 2}})
    with pytest.raises(OutboxError, match="bigint"):
        insert(object_identifier=2**63)


def test_resource_change_rows_need_an_action() -> None:
    with pytest.raises(OutboxError, match="'action'"):
        insert(category="issue_change", payload={"project_id": 1})
    with pytest.raises(OutboxError, match="unknown payload keys"):
        insert(category="issue_change", payload={"action": "created", "sender": "x"})
    assert insert(category="issue_change", payload={"action": "created"}) == "region_outbox"


def test_the_row_and_its_notify_exist_only_if_the_transaction_commits(settings: Settings) -> None:
    dsn = settings.database_url.get()
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with psycopg.connect(dsn) as conn:
            enqueue_outbox(
                conn,
                scope="organization_scope",
                shard_identifier=1,
                category="organization_update",
                object_identifier=1,
            )
            conn.rollback()
            assert list(listener.notifies(timeout=0.5)) == []
            row_id = enqueue_outbox(
                conn,
                scope="organization_scope",
                shard_identifier=1,
                category="organization_update",
                object_identifier=2,
                payload={"name": "x"},
            )
            conn.commit()
        [note] = list(listener.notifies(timeout=2, stop_after=1))
        assert note.payload == "region_outbox"
        rows = listener.execute(
            "SELECT id, object_identifier, payload FROM region_outbox"
        ).fetchall()
    assert rows == [(row_id, 2, {"name": "x"})]
