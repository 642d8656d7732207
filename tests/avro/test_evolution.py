"""Every released schema version must be readable by every newer one."""

from __future__ import annotations

import io
import json

import avro.schema
import fastavro
import fastavro.utils
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from streams import catalogue
from streams.avro.codec import MAGIC, SingleObjectCodec
from streams.avro.store import SchemaStore, SchemaVersion, default_schema_dir, default_store

PAIRS = [
    (subject, older, newer)
    for subject in default_store().subjects()
    for i, newer in enumerate(default_store().versions(subject))
    for older in default_store().versions(subject)[:i]
]


def test_every_avro_topic_has_a_schema_and_every_schema_a_topic() -> None:
    avro_topics = {t.name for t in catalogue.builtin_topics() if t.avro}
    on_disk = SchemaStore.from_dir(default_schema_dir())  # not the extension-augmented store
    assert avro_topics == set(on_disk.subjects())


def test_every_field_is_documented() -> None:
    for subject in default_store().subjects():
        for v in default_store().versions(subject):
            assert v.raw.get("namespace"), f"{subject} v{v.version} has no namespace"
            for field in v.raw["fields"]:
                assert field.get("doc"), f"{subject} v{v.version}: {field['name']} has no doc"


def test_there_is_at_least_one_evolved_schema() -> None:
    assert PAIRS, "no schema has two versions, so evolution is untested"


@pytest.mark.parametrize(
    ("subject", "older", "newer"),
    PAIRS,
    ids=[f"{s}:v{o.version}->v{n.version}" for s, o, n in PAIRS],
)
def test_newer_version_reads_older_data(
    subject: str, older: SchemaVersion, newer: SchemaVersion
) -> None:
    reader = avro.schema.parse(json.dumps(newer.raw))
    writer = avro.schema.parse(json.dumps(older.raw))
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # untyped library
    result = checker.get_compatibility(reader, writer)
    assert result.compatibility is SchemaCompatibilityType.compatible, result.messages

    # And for real: bytes written with the older schema decode through the codec.
    sample = next(fastavro.utils.generate_many(older.raw, 1))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, older.parsed, sample)
    decoded = SingleObjectCodec(default_store()).decode(
        subject, MAGIC + older.fingerprint + buf.getvalue()
    )
    for field in newer.raw["fields"]:
        assert field["name"] in decoded
