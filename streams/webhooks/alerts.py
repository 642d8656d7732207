"""Alert events for sentry apps: one delivery request, built where the alert fires.

``build_alert_delivery`` finds the app's installation in the event's organization
(through the event's project) and builds the ``webhook-deliveries`` value; the
client's ``send_alert_event`` publishes it. No Faust here: upstream services call it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import psycopg

from streams.webhooks import payloads

EVENT_TYPE = f"{payloads.ALERT_RESOURCE}.{payloads.ALERT_ACTION}"


def _plain(name: str, value: Any) -> None:
    """TypeError naming the argument when ``value`` is not plain JSON data."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"send_alert_event: {name} is not plain JSON data: {exc}") from None


def _check(
    event: Any, rule: Any, sentry_app_id: Any, key: Any, extra: Any
) -> tuple[Mapping[str, Any], int]:
    if not isinstance(event, Mapping):
        raise TypeError(
            f"send_alert_event: event must be a mapping of plain data, got {type(event).__name__}"
        )
    project_id = event.get("project_id", event.get("project"))
    if not isinstance(project_id, int) or isinstance(project_id, bool):
        raise TypeError("send_alert_event: event needs an integer 'project_id'")
    if not isinstance(rule, str):
        raise TypeError(f"send_alert_event: rule must be a str, got {type(rule).__name__}")
    if not isinstance(sentry_app_id, int) or isinstance(sentry_app_id, bool):
        raise TypeError("send_alert_event: sentry_app_id must be an int")
    if key is not None and not isinstance(key, str):
        raise TypeError("send_alert_event: additional_payload_key must be a str or None")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError("send_alert_event: additional_payload must be a mapping or None")
    _plain("event", dict(event))
    _plain("additional_payload", dict(extra) if extra is not None else None)
    return event, project_id


def build_alert_delivery(
    conn: psycopg.Connection[Any],
    event: Mapping[str, Any],
    rule: str,
    sentry_app_id: int,
    *,
    additional_payload_key: str | None = None,
    additional_payload: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The delivery value, or None when the app is not installed in the event's organization."""
    event, project_id = _check(
        event, rule, sentry_app_id, additional_payload_key, additional_payload
    )
    row = conn.execute(
        "SELECT i.id, i.uuid FROM project p "
        "JOIN sentry_app_installation i ON i.organization_id = p.organization_id "
        "JOIN sentry_app a ON a.id = i.sentry_app_id "
        "WHERE p.id = %s AND a.id = %s AND i.status = 0 AND a.status = 0",
        (project_id, sentry_app_id),
    ).fetchone()
    if row is None:
        return None
    body = payloads.alert(
        installation_uuid=str(row[1]),
        event=event,
        rule=rule,
        additional_payload_key=additional_payload_key,
        additional_payload=additional_payload,
    )
    now = int(time.time() * 1000)
    return {
        "delivery_id": str(uuid.uuid4()),
        "target_kind": "sentry_app",
        "target_id": int(row[0]),
        "event_type": EVENT_TYPE,
        "resource": payloads.ALERT_RESOURCE,
        "payload": payloads.dumps(body),
        "attempt": 1,
        "not_before": now,
        "created_at": now,
    }
