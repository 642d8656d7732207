"""What a config holds, when it is disabled, and how it is served (pure functions)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from streams.avro.codec import build_codec
from streams.avro.store import default_store
from streams.projectconfigs.documents import (
    KeyRow,
    canonical,
    config_document,
    config_record,
    config_text,
    disabled_record,
    served_document,
    served_json,
)

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
ROW = KeyRow("abc", 0, 100, 60, 10, "web", "python", 0, 1, "acme", 0)


def test_an_active_key_gets_its_project_organization_rate_limit_and_options() -> None:
    record = config_record(ROW, {"sentry:scrub": True, "ui:theme": "dark"}, {"relay:x": 1}, NOW)
    assert record["disabled"] is False
    doc = json.loads(record["config"])
    assert doc["project_slug"] == "web" and doc["organization_slug"] == "acme"
    assert doc["key"] == {"status": "active", "rate_limit": {"count": 100, "window": 60}}
    # Only options that shape a config are in it.
    assert doc["options"] == {"project": {"sentry:scrub": True}, "organization": {"relay:x": 1}}


def test_the_revision_follows_the_document_not_the_clock_or_irrelevant_options() -> None:
    base = config_record(ROW, {"sentry:scrub": True}, {}, NOW)
    later = config_record(ROW, {"sentry:scrub": True, "ui:theme": "x"}, {}, NOW + dt.timedelta(1))
    changed = config_record(ROW, {"sentry:scrub": False}, {}, NOW)
    assert base["revision"] == later["revision"] != changed["revision"]


def test_an_inactive_key_project_or_organization_is_disabled() -> None:
    for row in (
        ROW._replace(key_status=1),
        ROW._replace(project_status=2),
        ROW._replace(organization_status=1),
    ):
        record = config_record(row, {"sentry:scrub": True}, {}, NOW)
        assert record["disabled"] is True and record["config"] is None
        assert record["project_id"] == 10


def test_records_fit_the_topic_schema_and_serve_as_json() -> None:
    codec = build_codec(default_store(), None)
    for record in (config_record(ROW, {}, {}, NOW), disabled_record("gone", NOW)):
        decoded = codec.decode("project-configs", codec.encode("project-configs", record))
        served = served_document(decoded)
        assert json.loads(json.dumps(served)) == served
        assert served["computed_at"] == "2026-01-02T03:04:05+00:00"
    assert served["config"] == {"disabled": True}
    assert served["public_key"] == "gone" and served["project_id"] is None


def test_the_served_json_is_the_served_document_with_the_config_text_spliced_in() -> None:
    codec = build_codec(default_store(), None)
    for record in (config_record(ROW, {"sentry:x": [1, 2]}, {}, NOW), disabled_record("gone", NOW)):
        decoded = codec.decode("project-configs", codec.encode("project-configs", record))
        for value, trusted in ((record, True), (decoded, False)):
            assert json.loads(served_json(value, trusted=trusted)) == served_document(value)


def test_the_served_json_is_what_json_dumps_writes_for_any_key_and_ids() -> None:
    for key, project, org in (('k\u00e9"y\\', None, None), ("plain", 1, 2**40), ("", 0, None)):
        record = disabled_record(key, NOW, project, org)
        rest = {k: record[k] for k in ("disabled", "organization_id", "project_id", "public_key")}
        rest["revision"] = record["revision"]
        expected = (
            f'{{"computed_at": {json.dumps(served_document(record)["computed_at"])}, '
            f'"config": {{"disabled":true}}, {json.dumps(rest, sort_keys=True)[1:]}'
        )
        assert served_json(record).decode() == expected


def test_a_config_that_is_not_json_is_refused_when_read_from_the_topic() -> None:
    record = {**config_record(ROW, {}, {}, NOW), "config": "{not json"}
    with pytest.raises(ValueError):
        served_json(record)


@pytest.mark.parametrize(
    "row",
    [
        ROW,
        ROW._replace(rate_limit_count=None),
        ROW._replace(rate_limit_window=None, platform=None),
        ROW._replace(project_slug='we"b\\ü', organization_slug="acmé\n", public_key="k€y"),
        ROW._replace(project_id=2**62, organization_id=0),
    ],
)
def test_the_config_text_is_the_canonical_json_of_the_document(row: KeyRow) -> None:
    """The template writes what the JSON encoder writes, byte for byte (the revision is
    its hash: a config must not change revision with the code that writes it)."""
    options: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({}, {}),
        ({"sentry:scrub": True, "ui:theme": "dark", "filters:x": [1, {"b": 2, "a": None}]}, {}),
        ({"quotas:z": 1.5}, {"relay:ü": "é", "relay:a": {"z": 1, "y": [True, None]}}),
    ]
    for project, organization in options:
        expected = canonical(config_document(row, project, organization))
        assert config_text(row, project, organization) == expected
