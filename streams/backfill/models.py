"""The outbox-producing models: domain tables whose instances each have an outbox row.

Each declares its silo, the outbox scope and category of its rows, how to read a range
of instances (id, shard identifier, payload), and a coded ``replication_version``.
Raising the coded version (or the operator override, see ``streams.backfill.state``)
makes the backfill re-emit an outbox row for every instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.errors import StreamsError
from streams.outbox.categories import OutboxCategory, OutboxScope
from streams.silo import SiloMode


class UnknownModel(StreamsError, KeyError):
    """A model name that is not in the registry."""


@dataclass(frozen=True)
class OutboxProducingModel:
    name: str  # what `streams backfill --model` takes
    table: str  # the domain table; also the key of its processing state
    silo: SiloMode  # REGION or CONTROL: which silo's outbox its rows go to
    scope: OutboxScope
    category: OutboxCategory
    replication_version: int
    # Reads instances with lower <= id <= upper as (id, shard identifier, payload jsonb).
    select_sql: str

    @property
    def control(self) -> bool:
        return self.silo is SiloMode.CONTROL


_O = OutboxScope.ORGANIZATION
MODELS: dict[str, OutboxProducingModel] = {
    m.name: m
    for m in (
        OutboxProducingModel(
            "organization",
            "organization",
            SiloMode.REGION,
            _O,
            OutboxCategory.ORGANIZATION_UPDATE,
            replication_version=1,
            select_sql=(
                "SELECT id, id, jsonb_build_object('slug', slug, 'name', name, 'status', status)"
                " FROM organization WHERE id BETWEEN %s AND %s ORDER BY id"
            ),
        ),
        OutboxProducingModel(
            "project",
            "project",
            SiloMode.REGION,
            _O,
            OutboxCategory.PROJECT_UPDATE,
            replication_version=1,
            select_sql=(
                "SELECT id, organization_id, jsonb_build_object('slug', slug, 'status', status)"
                " FROM project WHERE id BETWEEN %s AND %s ORDER BY id"
            ),
        ),
        OutboxProducingModel(
            "project_key",
            "project_key",
            SiloMode.REGION,
            _O,
            OutboxCategory.PROJECT_KEY_UPDATE,
            replication_version=1,
            select_sql=(
                "SELECT k.id, p.organization_id, jsonb_build_object('project_id', k.project_id,"
                " 'public_key', k.public_key, 'status', k.status)"
                " FROM project_key k JOIN project p ON p.id = k.project_id"
                " WHERE k.id BETWEEN %s AND %s ORDER BY k.id"
            ),
        ),
        OutboxProducingModel(
            "user",
            "auth_user",
            SiloMode.CONTROL,
            OutboxScope.USER,
            OutboxCategory.USER_UPDATE,
            replication_version=1,
            select_sql=(
                "SELECT id, id, jsonb_build_object('username', username, 'is_active', is_active)"
                " FROM auth_user WHERE id BETWEEN %s AND %s ORDER BY id"
            ),
        ),
    )
}
BY_TABLE: dict[str, OutboxProducingModel] = {m.table: m for m in MODELS.values()}


def model(name: str) -> OutboxProducingModel:
    """A model by its name or its table name."""
    found = MODELS.get(name) or BY_TABLE.get(name)
    if found is None:
        raise UnknownModel(f"no outbox-producing model {name!r} (known: {sorted(MODELS)})")
    return found


def for_silo(silo: SiloMode) -> list[OutboxProducingModel]:
    """The models whose outbox rows this silo writes (monolith: all)."""
    return [m for m in MODELS.values() if silo.allows(frozenset({m.silo}))]
