"""Webhook payloads: what the receivers of the old system expect, built from plain data.

- sentry-app webhooks: ``{"action", "installation": {"uuid"}, "data": {<resource>: ...},
  "actor": {"type", "id", "name"}}``;
- service hooks, payload version 0: ``{"project": {"slug", "name"}, "group", "event"}``;
  any other version is refused with ``UnsupportedHookVersion``;
- alert events: a sentry-app payload for resource ``event_alert``, action
  ``triggered``, whose data holds the event, the rule and an optional extra payload.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streams.errors import StreamsError
from streams.webhooks.resources import Instance

# The actor of a change made by the system itself rather than by a user.
APPLICATION_ACTOR: dict[str, Any] = {"type": "application", "id": "sentry", "name": "Sentry"}

ALERT_RESOURCE = "event_alert"
ALERT_ACTION = "triggered"
SUPPORTED_HOOK_VERSIONS = (0,)


class UnsupportedHookVersion(StreamsError, NotImplementedError):
    """A service hook asks for a payload version that is not implemented."""


def actor(user_id: int | None, names: Mapping[int, str]) -> dict[str, Any]:
    """The payload's actor: the user who made the change, else the application."""
    if user_id is None:
        return dict(APPLICATION_ACTOR)
    return {"type": "user", "id": user_id, "name": names.get(user_id, "")}


def sentry_app(
    *, action: str, installation_uuid: str, resource: str, data: Any, actor: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "action": action,
        "installation": {"uuid": installation_uuid},
        "data": {resource: data},
        "actor": dict(actor),
    }


def sentry_app_json(
    *, action: str, installation_uuid: str, resource: str, data_json: str, actor_json: str
) -> str:
    """``dumps(sentry_app(...))`` from pre-encoded parts: a change's data is encoded once,
    not once per installation."""
    head = dumps({"action": action, "installation": {"uuid": installation_uuid}})[:-1]
    return f'{head},"data":{{{dumps(resource)}:{data_json}}},"actor":{actor_json}}}'


def service_hook(version: int, instance: Instance, *, hook_id: int | None = None) -> dict[str, Any]:
    """The payload of a service hook firing for an error event."""
    if version not in SUPPORTED_HOOK_VERSIONS:
        raise UnsupportedHookVersion(
            f"service hook {hook_id} asks for payload version {version}; "
            f"supported: {', '.join(map(str, SUPPORTED_HOOK_VERSIONS))}"
        )
    return {
        "project": {"slug": instance.project.slug, "name": instance.project.name},
        "group": instance.group,
        "event": instance.data,
    }


def alert(
    *,
    installation_uuid: str,
    event: Mapping[str, Any],
    rule: str,
    additional_payload_key: str | None = None,
    additional_payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"event": dict(event), "triggered_rule": rule}
    # Both are needed: a key without a payload (or the reverse) attaches nothing.
    if additional_payload_key and additional_payload:
        data[additional_payload_key] = dict(additional_payload)
    return {
        "action": ALERT_ACTION,
        "installation": {"uuid": installation_uuid},
        "data": data,
        "actor": dict(APPLICATION_ACTOR),
    }


def dumps(payload: Any) -> str:
    """Compact JSON; anything that is not plain JSON data raises ``TypeError``."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
