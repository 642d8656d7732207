"""Payload shapes: sentry-app webhooks, service hooks v0 (others refused), alerts."""

from __future__ import annotations

import json

import pytest

from streams.webhooks import payloads, resources
from streams.webhooks.resources import ERROR, Instance, Project


def event_instance() -> Instance:
    project = Project(7, 3, "backend", "Backend")
    return Instance(
        ERROR,
        11,
        project,
        {"event_id": "ab", "message": "boom", "issue_id": "5"},
        {"id": "5", "title": "boom"},
    )


def test_sentry_app_payload_shape() -> None:
    body = payloads.sentry_app(
        action="created",
        installation_uuid="u-1",
        resource="issue",
        data={"id": "5"},
        actor=payloads.actor(9, {9: "jane"}),
    )
    assert body == {
        "action": "created",
        "installation": {"uuid": "u-1"},
        "data": {"issue": {"id": "5"}},
        "actor": {"type": "user", "id": 9, "name": "jane"},
    }
    assert payloads.actor(None, {})["type"] == "application"


def test_service_hook_v0_payload() -> None:
    body = payloads.service_hook(0, event_instance())
    assert body == {
        "project": {"slug": "backend", "name": "Backend"},
        "group": {"id": "5", "title": "boom"},
        "event": {"event_id": "ab", "message": "boom", "issue_id": "5"},
    }


def test_other_service_hook_versions_are_refused_clearly() -> None:
    with pytest.raises(payloads.UnsupportedHookVersion, match="hook 4 asks for payload version 1"):
        payloads.service_hook(1, event_instance(), hook_id=4)
    with pytest.raises(NotImplementedError):
        payloads.service_hook(2, event_instance())


def test_alert_payload_attaches_extra_only_with_key_and_payload() -> None:
    event = {"event_id": "ab", "project_id": 7}
    body = payloads.alert(
        installation_uuid="u",
        event=event,
        rule="Too many errors",
        additional_payload_key="metric_alert",
        additional_payload={"count": 3},
    )
    assert body["action"] == "triggered"
    assert body["data"] == {
        "event": event,
        "triggered_rule": "Too many errors",
        "metric_alert": {"count": 3},
    }
    only_key = payloads.alert(
        installation_uuid="u", event=event, rule="r", additional_payload_key="k"
    )
    assert set(only_key["data"]) == {"event", "triggered_rule"}


def test_dumps_refuses_what_is_not_json() -> None:
    assert json.loads(payloads.dumps({"a": [1, "é"]})) == {"a": [1, "é"]}
    with pytest.raises(TypeError):
        payloads.dumps({"a": {1, 2}})
    with pytest.raises(ValueError):
        payloads.dumps({"a": float("nan")})


def test_sender_allow_list_and_subscriptions() -> None:
    assert resources.resource_for("Group").name == "issue"
    assert resources.resource_for("Event").name == "error"
    assert resources.resource_for("Event").hook_event == "event"
    with pytest.raises(resources.UnknownSender, match="'Project' is not allow-listed"):
        resources.resource_for("Project")
    assert resources.subscribed(["issue.created"], "issue", "created")
    assert not resources.subscribed(["issue.created"], "issue", "resolved")
    assert resources.subscribed(["issue"], "issue", "resolved")
    assert not resources.subscribed(["error"], "issue", "created")


def test_sentry_app_json_from_parts_equals_the_full_encoding() -> None:
    data = {"id": "5", "title": 'KeyError: "é"\n', "n": [1, None]}
    actor = payloads.actor(3, {3: "jo"})
    args = {"action": "resolved", "installation_uuid": "u-2", "resource": "issue"}
    full = payloads.dumps(payloads.sentry_app(**args, data=data, actor=actor))
    parts = payloads.sentry_app_json(
        **args, data_json=payloads.dumps(data), actor_json=payloads.dumps(actor)
    )
    assert parts == full
    assert json.loads(parts)["data"]["issue"] == data
