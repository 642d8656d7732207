"""The publish-side value check: what the old pickle guard refused, and more."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from streams.avro.codec import SingleObjectCodec
from streams.avro.store import default_store
from streams.errors import SchemaMismatch

TOPIC = "resource-changes"


def good() -> dict[str, Any]:
    return {
        "action": "created",
        "sender": "Group",
        "instance_id": 42,
        "organization_id": 7,
        "project_id": 3,
        "occurred_at": 1_700_000_000_000,
    }


class Model:
    """Looks like an ORM model: has ``_meta`` and ``objects``."""

    _meta = object()
    objects = object()
    id = 1


class Custom:
    pass


@pytest.fixture(scope="module")
def codec() -> SingleObjectCodec:
    return SingleObjectCodec(default_store())


@pytest.mark.parametrize(
    ("field", "value", "type_name", "reason"),
    [
        ("instance_id", Model(), "Model", "model object"),
        ("instance_id", Custom(), "Custom", "custom class"),
        ("action", {"created"}, "set", "a set is not allowed"),
        ("action", b"created", "bytes", "bytes are not a string"),
        ("instance_id", 4.0, "float", "a float is not a long"),
        ("instance_id", True, "bool", "expected long"),
        ("project_id", "3", "str", "expected long"),
        ("instance_id", 2**63, "int", "does not fit"),
    ],
)
def test_bad_values_raise_type_error_naming_topic_field_type_reason(
    codec: SingleObjectCodec, field: str, value: object, type_name: str, reason: str
) -> None:
    v = good()
    v[field] = value
    with pytest.raises(TypeError) as info:
        codec.encode(TOPIC, v)
    text = str(info.value)
    assert TOPIC in text
    assert repr(field) in text
    assert type_name in text
    assert reason in text


def test_missing_required_field_is_named(codec: SingleObjectCodec) -> None:
    v = good()
    del v["sender"]
    with pytest.raises(SchemaMismatch, match=r"'sender'.*missing required field"):
        codec.encode(TOPIC, v)


def test_unknown_extra_key_is_refused(codec: SingleObjectCodec) -> None:
    v = good()
    v["instance"] = {"id": 42}
    with pytest.raises(TypeError, match=r"'instance'.*unknown field"):
        codec.encode(TOPIC, v)


def test_nested_paths_are_named(codec: SingleObjectCodec) -> None:
    value: dict[str, Any] = {
        "model": "issue_group",
        "filters": {"id": 1},
        "columns": {"times_seen": 1.5},
        "extra": None,
        "signal_only": False,
        "event_time": 0,
    }
    with pytest.raises(TypeError, match=r"columns\['times_seen'\].*float"):
        codec.encode("buffer-increments", value)
    value["columns"] = {"times_seen": 1}
    value["filters"] = {"id": [1]}
    with pytest.raises(TypeError, match=r"filters\['id'\].*list"):
        codec.encode("buffer-increments", value)


def test_round_trip_with_defaults_filled(codec: SingleObjectCodec) -> None:
    data = codec.encode(TOPIC, good())
    assert data[:2] == b"\xc3\x01"
    decoded = codec.decode(TOPIC, data)
    assert decoded["instance_id"] == 42
    assert decoded["data"] is None
    assert decoded["actor_id"] is None


def test_datetime_is_accepted_for_timestamps(codec: SingleObjectCodec) -> None:
    v = good()
    v["occurred_at"] = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    decoded = codec.decode(TOPIC, codec.encode(TOPIC, v))
    assert decoded["occurred_at"] == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
