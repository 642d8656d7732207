"""Strict value checks against an Avro schema, compiled once per schema.

This replaces the old pickle guard: anything that is not plain data of the right
shape (a model object, a custom class, a set, bytes where a string is due, a float
for a long, a missing or unknown field) raises ``SchemaMismatch`` (a ``TypeError``)
naming the topic, the field path, the offending type and the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from streams.errors import SchemaMismatch

Checker = Callable[[Any], None]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


class _Bad(Exception):
    """Internal: carries the path back up the compiled checker tree."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        self.path: list[str] = []


def _describe(value: object) -> str:
    cls = type(value)
    if hasattr(value, "_meta") or hasattr(cls, "objects"):
        return f"a model object ({cls.__name__}) is not plain data; pass its id or a dict"
    if isinstance(value, set | frozenset):
        return "a set is not allowed (no order, not JSON); use a list"
    if isinstance(value, bytes | bytearray):
        return "bytes are not a string; decode them first"
    if cls.__module__ not in ("builtins", "datetime", "decimal", "uuid"):
        return f"custom class {cls.__module__}.{cls.__qualname__} is not allowed; pass plain data"
    return ""


def _wrong(value: object, expected: str) -> _Bad:
    why = _describe(value)
    return _Bad(value, why or f"expected {expected}")


def _primitive(name: str, logical: str | None) -> Checker:
    if name == "null":

        def check_null(v: Any) -> None:
            if v is not None:
                raise _wrong(v, "null")

        return check_null
    if name == "boolean":

        def check_bool(v: Any) -> None:
            if type(v) is not bool:
                raise _wrong(v, "boolean")

        return check_bool
    if name in ("int", "long"):
        lo, hi = INT32 if name == "int" else INT64
        allow_dt = logical in ("timestamp-millis", "timestamp-micros")

        def check_int(v: Any) -> None:
            if type(v) is int:
                if not lo <= v <= hi:
                    raise _Bad(v, f"{v} does not fit in an Avro {name}")
                return
            if allow_dt and isinstance(v, dt.datetime):
                return
            if isinstance(v, float):
                raise _Bad(v, f"a float is not a {name}; round it explicitly")
            raise _wrong(v, name)

        return check_int
    if name in ("float", "double"):

        def check_float(v: Any) -> None:
            if type(v) is not float and type(v) is not int:
                raise _wrong(v, name)

        return check_float
    if name == "string":

        def check_str(v: Any) -> None:
            if type(v) is not str:
                raise _wrong(v, "string")

        return check_str
    if name == "bytes":

        def check_bytes(v: Any) -> None:
            if not isinstance(v, bytes | bytearray):
                raise _Bad(v, "expected bytes")

        return check_bytes
    raise ValueError(f"unknown Avro type {name!r}")


def compile_checker(schema: Any, named: dict[str, Checker] | None = None) -> Checker:
    """Compile a (fastavro-parsed) schema into a checker that raises ``_Bad``."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return named[schema]
        return _primitive(schema, None)
    if isinstance(schema, list):
        return _union([compile_checker(s, named) for s in schema], schema)
    kind = schema["type"]
    if kind == "record":
        return _record(schema, named)
    if kind == "enum":
        symbols = frozenset(schema["symbols"])

        def check_enum(v: Any) -> None:
            if type(v) is not str or v not in symbols:
                raise _Bad(v, f"expected one of {sorted(symbols)}")

        named[schema["name"]] = check_enum
        return check_enum
    if kind == "array":
        item = compile_checker(schema["items"], named)

        def check_array(v: Any) -> None:
            if type(v) is not list and type(v) is not tuple:
                raise _wrong(v, "a list")
            for i, x in enumerate(v):
                try:
                    item(x)
                except _Bad as bad:
                    bad.path.append(f"[{i}]")
                    raise

        return check_array
    if kind == "map":
        value_check = compile_checker(schema["values"], named)

        def check_map(v: Any) -> None:
            if not isinstance(v, Mapping):
                raise _wrong(v, "a map (dict with string keys)")
            for k, x in v.items():
                if type(k) is not str:
                    raise _Bad(k, "map keys must be strings")
                try:
                    value_check(x)
                except _Bad as bad:
                    bad.path.append(f"[{k!r}]")
                    raise

        return check_map
    if kind == "fixed":
        size = schema["size"]

        def check_fixed(v: Any) -> None:
            if not isinstance(v, bytes) or len(v) != size:
                raise _Bad(v, f"expected {size} bytes")

        named[schema["name"]] = check_fixed
        return check_fixed
    return _primitive(kind, schema.get("logicalType"))


def _union(branches: list[Checker], schema: list[Any]) -> Checker:
    names = [s if isinstance(s, str) else s.get("name", s.get("type")) for s in schema]
    if len(branches) == 2 and schema[0] == "null":
        other = branches[1]

        def check_optional(v: Any) -> None:
            if v is not None:
                other(v)

        return check_optional

    def check_union(v: Any) -> None:
        for b in branches:
            try:
                b(v)
                return
            except _Bad:
                continue
        why = _describe(v)
        raise _Bad(v, why or f"matches none of {names}")

    return check_union


def _record(schema: Mapping[str, Any], named: dict[str, Checker]) -> Checker:
    fields: list[tuple[str, Checker, bool]] = []
    # Register before compiling fields so recursive types resolve.
    slot: list[Checker] = []

    def forward(v: Any) -> None:
        slot[0](v)

    named[schema["name"]] = forward
    for f in schema["fields"]:
        fields.append((f["name"], compile_checker(f["type"], named), "default" in f))
    known = frozenset(name for name, _, _ in fields)
    required = [name for name, _, has_default in fields if not has_default]

    def check_record(v: Any) -> None:
        if type(v) is not dict and not isinstance(v, Mapping):
            raise _wrong(v, "a record (dict)")
        if len(v) > len(known) or not known.issuperset(v.keys()):
            extra = sorted(str(k) for k in v.keys() - known)
            bad = _Bad(v.get(extra[0]), "unknown field (not in schema)")
            bad.path.append(extra[0])
            raise bad
        for name in required:
            if name not in v:
                bad = _Bad(None, "missing required field")
                bad.path.append(name)
                raise bad
        for name, check, _ in fields:
            if name in v:
                try:
                    check(v[name])
                except _Bad as bad:
                    bad.path.append(name)
                    raise

    slot.append(check_record)
    return check_record


def validator(topic: str, schema: Any) -> Callable[[Any], None]:
    """A function that raises ``SchemaMismatch`` if a value does not fit ``schema``."""
    inner = compile_checker(schema)

    def validate(value: Any) -> None:
        try:
            inner(value)
        except _Bad as bad:
            path = ""
            for part in reversed(bad.path):
                path += part if part.startswith("[") else (f".{part}" if path else part)
            raise SchemaMismatch(topic, path, bad.value, bad.reason) from None

    return validate
