"""send_alert_event's argument checks (before any database or broker I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from streams.webhooks.alerts import build_alert_delivery


class NoConnection:
    def execute(self, *args: Any) -> Any:
        raise AssertionError("bad arguments must be refused before any query")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event": object()}, "event must be a mapping"),
        ({"event": {"message": "no project"}}, "project_id"),
        ({"rule": 5}, "rule must be a str"),
        ({"sentry_app_id": "3"}, "sentry_app_id must be an int"),
        ({"event": {"project_id": 1, "tags": {"a"}}}, "event is not plain JSON"),
        ({"additional_payload": {"x": b"raw"}}, "additional_payload is not plain JSON"),
        ({"additional_payload_key": 7}, "additional_payload_key"),
    ],
)
def test_bad_arguments_raise_type_error_naming_them(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"event": {"project_id": 1}, "rule": "r", "sentry_app_id": 3}
    extra = {
        k: kwargs.pop(k) for k in ("additional_payload_key", "additional_payload") if k in kwargs
    }
    args.update(kwargs)
    with pytest.raises(TypeError, match=match):
        build_alert_delivery(NoConnection(), **args, **extra)  # type: ignore[arg-type]
