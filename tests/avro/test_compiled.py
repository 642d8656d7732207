"""Compiled readers (streams/avro/compiled.py) read what fastavro reads, for random values
of every schema version in ``schemas/``, and refuse bytes fastavro refuses."""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Callable, Iterator
from typing import Any

import fastavro
import pytest

from streams.avro.codec import build_codec
from streams.avro.compiled import compile_reader, compile_writer
from streams.avro.store import SchemaVersion, default_store
from streams.avro.varint import long_bytes
from streams.errors import DecodeError


def _versions() -> list[SchemaVersion]:
    store = default_store()
    return [v for subject in store.subjects() for v in store.versions(subject)]


class Values:
    """Random values of a schema, with every branch, length and sign exercised."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.named: dict[str, Any] = {}

    def of(self, schema: Any, ns: str | None = None) -> Any:
        rnd = self.rnd
        if isinstance(schema, list):
            return self.of(rnd.choice(schema), ns)
        if isinstance(schema, str):
            if schema in self.named:
                return self.of(self.named[schema], ns)
            schema = {"type": schema}
        kind = schema["type"]
        if isinstance(kind, (dict, list)):
            return self.of(kind, ns)
        if schema.get("logicalType") == "timestamp-millis":
            ms = rnd.randrange(-(2**40), 2**42)
            return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
        if kind in ("record", "enum", "fixed"):
            name = schema["name"]
            self.named[name] = schema
            namespace = schema.get("namespace", ns)
            if namespace:
                self.named[f"{namespace}.{name}"] = schema
        simple: dict[str, Callable[[], Any]] = {
            "null": lambda: None,
            "boolean": lambda: rnd.random() < 0.5,
            "int": lambda: rnd.randrange(-(2**31), 2**31),
            "long": lambda: rnd.choice([0, -1, 63, -64, 64, rnd.randrange(-(2**63), 2**63)]),
            "float": lambda: float(rnd.randrange(-1000, 1000)) / 4,
            "double": lambda: rnd.uniform(-1e12, 1e12),
            "bytes": lambda: rnd.randbytes(rnd.choice([0, 1, 200])),
            "string": lambda: rnd.choice(["", "é ✓", "x" * rnd.randrange(0, 300)]),
        }
        if kind in simple:
            return simple[kind]()
        if kind == "enum":
            return rnd.choice(schema["symbols"])
        if kind == "fixed":
            return rnd.randbytes(schema["size"])
        if kind == "array":
            return [self.of(schema["items"], ns) for _ in range(rnd.choice([0, 1, 5, 70]))]
        if kind == "map":
            n = rnd.choice([0, 1, 5, 70])
            return {f"k{i}": self.of(schema["values"], ns) for i in range(n)}
        assert kind == "record", kind
        namespace = schema.get("namespace", ns)
        return {f["name"]: self.of(f["type"], namespace) for f in schema["fields"]}


def _fastavro(version: SchemaVersion, body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), version.parsed, None)


def _samples(version: SchemaVersion, salt: int, n: int = 300) -> Iterator[tuple[Any, bytes]]:
    """``n`` random values of ``version`` and the bytes fastavro writes for each."""
    values = Values(seed=version.version * salt + len(version.subject))
    for _ in range(n):
        value = values.of(version.raw)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, version.parsed, value)
        yield value, buf.getvalue()


@pytest.mark.parametrize("version", _versions(), ids=lambda v: f"{v.subject}-v{v.version}")
def test_compiled_reader_reads_what_fastavro_reads(version: SchemaVersion) -> None:
    read = compile_reader(version.raw)
    assert read is not None, "every schema of the catalogue compiles"
    for _, body in _samples(version, 7919):
        assert read(body) == _fastavro(version, body)
        # Truncated or with trailing bytes: refused (fastavro refuses a truncated body
        # too; the codec refuses trailing bytes after either reader).
        if body:
            with pytest.raises(Exception):
                read(body[: len(body) // 2] if len(body) > 1 else b"")
        with pytest.raises(ValueError, match="trailing bytes"):
            read(body + b"\x00")


@pytest.mark.parametrize("version", _versions(), ids=lambda v: f"{v.subject}-v{v.version}")
def test_compiled_writer_writes_the_bytes_fastavro_writes(version: SchemaVersion) -> None:
    write = compile_writer(version.raw)
    assert write is not None, "every schema of the catalogue compiles"
    for value, body in _samples(version, 104729):
        assert write(value) == body


def test_a_value_that_does_not_fit_is_refused_by_the_compiled_writer() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "id", "type": "long"},
            {"name": "name", "type": ["null", "string"]},
            {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["a", "b"]}},
            {"name": "n", "type": "int", "default": 3},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
    write = compile_writer(schema)
    assert write is not None
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=dt.UTC)
    good = {"id": 1, "kind": "b", "at": at}  # name: null when absent; n: its default
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), good)
    assert write(good) == buf.getvalue()
    naive = {**good, "at": at.replace(tzinfo=None)}  # fastavro's own conversion
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), naive)
    assert write(naive) == buf.getvalue()
    for bad in (
        {"kind": "b", "at": at},  # no id, no default
        {**good, "id": "1"},
        {**good, "id": 2**63},
        {**good, "name": 5},
        {**good, "kind": "c"},
        {**good, "at": "yesterday"},
    ):
        with pytest.raises((KeyError, TypeError, ValueError)):
            write(bad)


def test_a_corrupt_message_is_a_decode_error_through_the_codec() -> None:
    codec = build_codec(default_store(), None)
    subject = "project-config-invalidations"
    good = codec.encode(
        subject,
        {
            "scope": "project",
            "organization_id": 1,
            "project_id": 2,
            "public_key": None,
            "trigger": "t",
            "countdown": 5.0,
            "requested_at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        },
    )
    assert codec.decode(subject, good)["project_id"] == 2
    for bad, reason in (
        (good[:-3], "does not decode"),
        (good + b"\x01", "trailing bytes"),
        (good[:10] + b"\x09" + good[11:], "does not decode"),  # enum index 4 (-5 zig-zag)
    ):
        with pytest.raises(DecodeError, match=reason):
            codec.decode(subject, bad)


def test_schemas_with_other_logical_types_are_left_to_fastavro() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "d", "type": {"type": "int", "logicalType": "date"}}],
    }
    assert compile_reader(schema) is None and compile_writer(schema) is None
    inner = {"type": "record", "name": "I", "fields": [{"name": "y", "type": "long"}]}
    either = {"type": "record", "name": "E", "fields": [{"name": "x", "type": [inner, "string"]}]}
    assert compile_writer(either) is None  # fastavro chooses among records
    recursive = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "v", "type": "long"},
            {"name": "next", "type": ["null", "Node"]},
        ],
    }
    read = compile_reader(recursive)
    assert read is not None
    value = {"v": 1, "next": {"v": -2, "next": None}}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(recursive), value)
    assert read(buf.getvalue()) == value
    write = compile_writer(recursive)
    assert write is not None and write(value) == buf.getvalue()


def test_records_sharing_a_timestamp_and_records_that_do_not_are_each_written_right() -> None:
    """The compiled writer keeps the last timestamp's encoding (a recompute's configs
    share one): a record with another timestamp, or the same one again, or none at
    all, must still be written exactly as fastavro writes it, or refused."""
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    write = compile_writer(schema)
    assert write is not None
    parsed = fastavro.parse_schema(schema)

    def expected(value: Any) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, {"at": value})
        return buf.getvalue()

    now = dt.datetime(2026, 11, 30, 20, 50, 1, 123_000, tzinfo=dt.UTC)
    later = now + dt.timedelta(milliseconds=1)
    equal = dt.datetime.fromtimestamp(now.timestamp(), dt.UTC)  # another object, same time
    sequence = [now, now, later, now, equal, now.replace(tzinfo=None), 0, 2**41, now]
    for value in sequence:
        assert write({"at": value}) == expected(value), value
    with pytest.raises((KeyError, TypeError, ValueError)):
        write({"at": None})
    assert write({"at": now}) == expected(now)  # a refusal leaves nothing stale behind


@pytest.mark.parametrize("n", [2**34 - 1, 2**34, 2**41 - 1, 2**41, 2**42, -(2**41), -(2**41) - 1])
def test_longs_at_the_unrolled_varint_lengths_match_fastavro(n: int) -> None:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    assert long_bytes(n) == buf.getvalue()
