"""Outbox scopes, categories and the two outbox tables, declared once.

A shard is (scope, identifier): the relay publishes the rows of one shard in id order.
A category says what changed; it belongs to exactly one scope, may be written to the
region outbox, the control outbox or both, and decides the topic its rows go to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from streams.errors import StreamsError


class OutboxError(StreamsError, ValueError):
    """An outbox row that may not be written (wrong scope, table, region or payload)."""


class OutboxScope(enum.StrEnum):
    ORGANIZATION = "organization_scope"
    USER = "user_scope"
    WEBHOOK = "webhook_scope"
    AUDIT_LOG = "audit_log_scope"
    USER_IP = "user_ip_scope"
    APP = "app_scope"
    PROVISION = "provision_scope"


class OutboxKind(enum.StrEnum):
    """Which outbox table: the region silo's or the control silo's."""

    REGION = "region"
    CONTROL = "control"


class OutboxCategory(enum.StrEnum):
    ORGANIZATION_UPDATE = "organization_update"
    ORGANIZATION_MEMBER_UPDATE = "organization_member_update"
    PROJECT_UPDATE = "project_update"
    PROJECT_KEY_UPDATE = "project_key_update"
    ISSUE_CHANGE = "issue_change"
    ERROR_EVENT_CHANGE = "error_event_change"
    USER_UPDATE = "user_update"
    AUDIT_LOG_EVENT = "audit_log_event"
    USER_IP_EVENT = "user_ip_event"
    WEBHOOK_PROXY = "webhook_proxy"
    API_APPLICATION_UPDATE = "api_application_update"
    PROVISION_ORGANIZATION = "provision_organization"


BOTH = frozenset({OutboxKind.REGION, OutboxKind.CONTROL})
REGION = frozenset({OutboxKind.REGION})
CONTROL = frozenset({OutboxKind.CONTROL})


@dataclass(frozen=True)
class CategoryInfo:
    scope: OutboxScope
    outboxes: frozenset[OutboxKind]
    # Resource-change categories name the sender model and go to `resource-changes`.
    sender: str | None = None
    # "Something changed, re-sync" categories coalesce: only the newest row of an object
    # is published. Events (each one matters: a webhook per action) do not.
    coalesce: bool = True


_O = OutboxScope.ORGANIZATION
CATEGORIES: dict[OutboxCategory, CategoryInfo] = {
    OutboxCategory.ORGANIZATION_UPDATE: CategoryInfo(_O, BOTH),
    OutboxCategory.ORGANIZATION_MEMBER_UPDATE: CategoryInfo(_O, BOTH),
    OutboxCategory.PROJECT_UPDATE: CategoryInfo(_O, REGION),
    OutboxCategory.PROJECT_KEY_UPDATE: CategoryInfo(_O, REGION),
    OutboxCategory.ISSUE_CHANGE: CategoryInfo(_O, REGION, sender="Group", coalesce=False),
    OutboxCategory.ERROR_EVENT_CHANGE: CategoryInfo(_O, REGION, sender="Event", coalesce=False),
    OutboxCategory.USER_UPDATE: CategoryInfo(OutboxScope.USER, CONTROL),
    OutboxCategory.AUDIT_LOG_EVENT: CategoryInfo(OutboxScope.AUDIT_LOG, BOTH, coalesce=False),
    OutboxCategory.USER_IP_EVENT: CategoryInfo(OutboxScope.USER_IP, BOTH, coalesce=False),
    OutboxCategory.WEBHOOK_PROXY: CategoryInfo(OutboxScope.WEBHOOK, CONTROL, coalesce=False),
    OutboxCategory.API_APPLICATION_UPDATE: CategoryInfo(OutboxScope.APP, CONTROL),
    OutboxCategory.PROVISION_ORGANIZATION: CategoryInfo(OutboxScope.PROVISION, CONTROL),
}


@dataclass(frozen=True)
class OutboxTable:
    name: str
    kind: OutboxKind
    topic: str  # catalogue name of its default topic

    @property
    def has_region(self) -> bool:
        return self.kind is OutboxKind.CONTROL


REGION_OUTBOX = OutboxTable("region_outbox", OutboxKind.REGION, "outbox.region")
CONTROL_OUTBOX = OutboxTable("control_outbox", OutboxKind.CONTROL, "outbox.control")
TABLES: dict[OutboxKind, OutboxTable] = {t.kind: t for t in (REGION_OUTBOX, CONTROL_OUTBOX)}


def category_info(category: OutboxCategory | str) -> tuple[OutboxCategory, CategoryInfo]:
    """The category and its declaration; ``OutboxError`` for an unknown name."""
    try:
        cat = OutboxCategory(category)
    except ValueError:
        raise OutboxError(f"unknown outbox category {category!r}") from None
    return cat, CATEGORIES[cat]


def resolve(
    scope: OutboxScope | str, category: OutboxCategory | str, region: str | None
) -> tuple[OutboxTable, OutboxScope, OutboxCategory, CategoryInfo]:
    """Check that ``category`` belongs to ``scope`` and to the outbox ``region`` selects.

    A region name selects the control outbox (a control-silo row aimed at that region);
    no region selects the region outbox.
    """
    try:
        sc = OutboxScope(scope)
    except ValueError:
        raise OutboxError(f"unknown outbox scope {scope!r}") from None
    cat, info = category_info(category)
    if info.scope is not sc:
        raise OutboxError(
            f"category {cat.value!r} belongs to scope {info.scope.value!r}, not {sc.value!r}"
        )
    kind = OutboxKind.REGION if region is None else OutboxKind.CONTROL
    if region is not None and not region:
        raise OutboxError("region must be a non-empty region name (or None)")
    if kind not in info.outboxes:
        where = (
            "needs a region (control outbox)" if kind is OutboxKind.REGION else "takes no region"
        )
        raise OutboxError(f"category {cat.value!r} {where}")
    return TABLES[kind], sc, cat, info
