"""Avro binary readers compiled to Python, one function per schema.

fastavro's ``schemaless_reader`` walks the schema's dicts for every value it reads: for a
seven-field invalidation request that is about 10 us, the largest single cost of
deciding a request (bench/README.md). Here a schema is turned once into Python source
with one straight line of reads per field (``compile_reader``), which reads the same
request in about a third of the time.

The result is the value fastavro returns for the same bytes and schema (records as
dicts, enums as symbols, ``timestamp-millis`` as an aware UTC datetime);
tests/avro/test_compiled.py compares the two on random values of every schema in
``schemas/``. Only the schema a message was written with is compiled: resolving an
older writer's schema against the reader's stays with fastavro, and so does a schema
with a logical type other than ``timestamp-millis`` (``compile_reader`` returns None).
Malformed bytes raise (``ValueError``, ``IndexError``, ``struct.error`` or
``UnicodeDecodeError``); the codec turns that into a ``DecodeError``.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable
from typing import Any

from streams.avro.varint import long_bytes

Reader = Callable[[bytes], Any]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class Unsupported(Exception):
    """The schema uses something this compiler leaves to fastavro."""


def _long(b: bytes, p: int) -> tuple[int, int]:
    """A zig-zag varint at ``p``: (value, next position)."""
    x = b[p]
    p += 1
    if x < 0x80:
        return (x >> 1) ^ -(x & 1), p
    n = x & 0x7F
    shift = 7
    while True:
        x = b[p]
        p += 1
        n |= (x & 0x7F) << shift
        if x < 0x80:
            return (n >> 1) ^ -(n & 1), p
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _span(length: int, p: int, n: int) -> int:
    """The end of a ``length``-byte value at ``p`` in ``n`` bytes (raises if it overruns)."""
    end = p + length
    if length < 0 or end > n:
        raise ValueError(f"a length of {length} at byte {p} overruns the {n} bytes")
    return end


class _Compiler:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.records: dict[str, str] = {}  # full name -> function name
        self.named: dict[str, Any] = {}  # full name -> schema
        self.counter = 0

    def var(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any) -> str:
        name = self.var("C")
        self.consts[name] = value
        return name

    def register(self, schema: Any, namespace: str | None) -> str:
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else f"{ns}.{name}"
        self.named[full] = schema
        self.named.setdefault(name, schema)
        return full

    def read(self, schema: Any, out: str, ind: str, ns: str | None) -> list[str]:
        """Lines that read ``schema`` at ``p`` into ``out`` (indented by ``ind``)."""
        if isinstance(schema, list):
            return self.union(schema, out, ind, ns)
        schema, record = self.resolve(schema, ns)
        if record is not None:
            return [f"{ind}{out}, p = {record}(b, p, n)"]
        if isinstance(schema, str):
            return self.primitive(schema, out, ind)
        kind = schema["type"]
        if self.millis(schema):
            return [
                f"{ind}{out}, p = _long(b, p)",
                f"{ind}{out} = _EPOCH + _td(microseconds={out} * 1000)",
            ]
        if kind in _PRIMITIVES:
            return self.primitive(kind, out, ind)
        if kind == "record":
            full = self.register(schema, ns)
            if full not in self.records:
                self.record(schema, full)
            return [f"{ind}{out}, p = {self.records[full]}(b, p, n)"]
        if kind == "enum":
            self.register(schema, ns)
            symbols = self.const(tuple(schema["symbols"]))
            i = self.var("i")
            return [
                f"{ind}{i}, p = _long(b, p)",
                f"{ind}if {i} < 0:",
                f"{ind}    raise ValueError('negative enum index')",
                f"{ind}{out} = {symbols}[{i}]",
            ]
        if kind == "fixed":
            self.register(schema, ns)
            e = self.var("e")
            return [
                f"{ind}{e} = _span({int(schema['size'])}, p, n)",
                f"{ind}{out} = b[p:{e}]",
                f"{ind}p = {e}",
            ]
        if kind in ("array", "map"):
            return self.blocks(schema, kind, out, ind, ns)
        raise Unsupported(f"type {kind!r}")

    def resolve(self, schema: Any, ns: str | None) -> tuple[Any, str | None]:
        """A named type's schema for a reference by name, and the function of a record
        already compiled (None otherwise); other schemas as they are."""
        if not isinstance(schema, str) or schema in _PRIMITIVES:
            return schema, None
        full = schema if "." in schema or not ns else f"{ns}.{schema}"
        named = self.named.get(full) or self.named.get(schema)
        if named is None:
            raise Unsupported(f"unknown type {schema!r}")
        if named.get("type") == "record":
            return named, self.records[self._full(named, ns)]
        return named, None

    @staticmethod
    def millis(schema: Any) -> bool:
        """Whether ``schema`` is a ``timestamp-millis`` long (other logical types: fastavro)."""
        logical = schema.get("logicalType")
        if logical is None:
            return False
        if logical != "timestamp-millis" or schema["type"] != "long":
            raise Unsupported(f"logical type {logical!r}")
        return True

    def _full(self, schema: Any, ns: str | None) -> str:
        name = schema["name"]
        ns = schema.get("namespace", ns)
        return name if "." in name or not ns else f"{ns}.{name}"

    def primitive(self, kind: str, out: str, ind: str) -> list[str]:
        if kind == "null":
            return [f"{ind}{out} = None"]
        if kind == "boolean":
            return [f"{ind}{out} = b[p] != 0", f"{ind}p += 1"]
        if kind in ("int", "long"):
            return [f"{ind}{out}, p = _long(b, p)"]
        if kind in ("float", "double"):
            unpack, size = ("_F", 4) if kind == "float" else ("_D", 8)
            return [f"{ind}({out},) = {unpack}(b, p)", f"{ind}p += {size}"]
        length, e = self.var("l"), self.var("e")
        value = f"b[p:{e}]" if kind == "bytes" else f"b[p:{e}].decode()"
        return [
            f"{ind}{length}, p = _long(b, p)",
            f"{ind}{e} = _span({length}, p, n)",
            f"{ind}{out} = {value}",
            f"{ind}p = {e}",
        ]

    def union(self, branches: list[Any], out: str, ind: str, ns: str | None) -> list[str]:
        u = self.var("u")
        lines = [f"{ind}{u}, p = _long(b, p)"]
        for index, branch in enumerate(branches):
            lines.append(f"{ind}{'if' if index == 0 else 'elif'} {u} == {index}:")
            lines.extend(self.read(branch, out, ind + "    ", ns))
        lines.append(f"{ind}else:")
        lines.append(f"{ind}    raise ValueError(f'union index {{{u}}} out of range')")
        return lines

    def blocks(self, schema: Any, kind: str, out: str, ind: str, ns: str | None) -> list[str]:
        count, item, key = self.var("c"), self.var("x"), self.var("k")
        lines = [f"{ind}{out} = {{}}" if kind == "map" else f"{ind}{out} = []"]
        lines += [
            f"{ind}while True:",
            f"{ind}    {count}, p = _long(b, p)",
            f"{ind}    if {count} == 0:",
            f"{ind}        break",
            f"{ind}    if {count} < 0:",
            f"{ind}        {count} = -{count}",
            f"{ind}        _, p = _long(b, p)",
            f"{ind}    for _ in range({count}):",
        ]
        inner = ind + "        "
        if kind == "map":
            lines += self.primitive("string", key, inner)
            lines += self.read(schema["values"], item, inner, ns)
            lines.append(f"{inner}{out}[{key}] = {item}")
        else:
            lines += self.read(schema["items"], item, inner, ns)
            lines.append(f"{inner}{out}.append({item})")
        return lines

    def record(self, schema: Any, full: str) -> None:
        fn = self.var("_record")
        self.records[full] = fn  # before the fields: a recursive reference calls it
        ns = full.rpartition(".")[0] or None
        body: list[str] = []
        names: list[tuple[str, str]] = []
        for field in schema["fields"]:
            out = self.var("f")
            body += self.read(field["type"], out, "    ", ns)
            names.append((field["name"], out))
        built = ", ".join(f"{name!r}: {out}" for name, out in names)
        self.lines += [f"def {fn}(b, p, n):", *body, f"    return {{{built}}}, p", ""]


def compile_reader(schema: Any) -> Reader | None:
    """A function reading one value of ``schema`` (as written, no resolution) from the
    whole of its bytes; None if the schema uses what only fastavro reads."""
    compiler = _Compiler()
    try:
        root = compiler.read(schema, "value", "    ", None)
    except (Unsupported, KeyError, TypeError):
        return None
    source = "\n".join(
        [
            *compiler.lines,
            "def read(b):",
            "    n = len(b)",
            "    p = 0",
            *root,
            "    if p != n:",
            "        raise ValueError(f'{n - p} trailing bytes after the Avro body')",
            "    return value",
        ]
    )
    namespace: dict[str, Any] = {
        "_long": _long,
        "_span": _span,
        "_EPOCH": _EPOCH,
        "_td": dt.timedelta,
        "_F": struct.Struct("<f").unpack_from,
        "_D": struct.Struct("<d").unpack_from,
        **compiler.consts,
    }
    name = schema.get("name", "?") if isinstance(schema, dict) else "?"
    exec(compile(source, f"<avro reader {name}>", "exec"), namespace)
    reader: Reader = namespace["read"]
    return reader


# -- writers ----------------------------------------------------------------------------

Writer = Callable[[Any], bytes]


_last_millis: tuple[Any, bytes] = (object(), b"")  # nothing else is this object


def _millis_bytes(value: Any) -> bytes:
    """The encoded ``timestamp-millis`` of ``value``; the last aware datetime's encoding is
    kept (a batch of records often shares one, e.g. the configs of one recompute)."""
    global _last_millis
    seen, encoded = _last_millis  # one tuple: read and replaced whole (threads)
    if value is seen:
        return encoded
    encoded = long_bytes(_millis(value))
    if isinstance(value, dt.datetime):
        _last_millis = (value, encoded)  # datetimes are immutable: same object, same bytes
    return encoded


def _millis(value: Any) -> Any:
    """A ``timestamp-millis`` value as fastavro writes it (aware datetimes here, the rest
    by fastavro's own conversion)."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    from fastavro._logical_writers import prepare_timestamp_millis  # type: ignore[attr-defined]

    return prepare_timestamp_millis(value, None)


class _WriterCompiler(_Compiler):
    def write(self, schema: Any, value: str, ind: str, ns: str | None) -> list[str]:
        """Lines that append the encoding of ``value`` (an expression) to ``o``."""
        if isinstance(schema, list):
            return self.write_union(schema, value, ind, ns)
        schema, record = self.resolve(schema, ns)
        if record is not None:
            return [f"{ind}{record}(o, {value})"]
        if isinstance(schema, str):
            return self.write_primitive(schema, value, ind)
        kind = schema["type"]
        if self.millis(schema):
            return [f"{ind}o += _millis_bytes({value})"]
        if kind in _PRIMITIVES:
            return self.write_primitive(kind, value, ind)
        if kind == "record":
            full = self.register(schema, ns)
            if full not in self.records:
                self.write_record(schema, full)
            return [f"{ind}{self.records[full]}(o, {value})"]
        if kind == "enum":
            self.register(schema, ns)
            index = self.const({s: long_bytes(i) for i, s in enumerate(schema["symbols"])})
            return [f"{ind}o += {index}[{value}]"]
        if kind == "fixed":
            self.register(schema, ns)
            size, v = int(schema["size"]), self.var("x")
            return [
                f"{ind}{v} = {value}",
                f"{ind}if len({v}) != {size}:",
                f"{ind}    raise ValueError(f'{{len({v})}} bytes for a fixed of {size}')",
                f"{ind}o += {v}",
            ]
        if kind in ("array", "map"):
            v, item, key = self.var("x"), self.var("x"), self.var("k")
            lines = [f"{ind}{v} = {value}", f"{ind}if len({v}):"]
            lines.append(f"{ind}    o += long_bytes(len({v}))")
            if kind == "map":
                lines.append(f"{ind}    for {key}, {item} in {v}.items():")
                lines += self.write_primitive("string", key, ind + "        ")
                lines += self.write(schema["values"], item, ind + "        ", ns)
            else:
                lines.append(f"{ind}    for {item} in {v}:")
                lines += self.write(schema["items"], item, ind + "        ", ns)
            return [*lines, f"{ind}o.append(0)"]
        raise Unsupported(f"type {kind!r}")

    def write_primitive(self, kind: str, value: str, ind: str) -> list[str]:
        if kind == "null":
            return [f"{ind}if {value} is not None:", f"{ind}    raise TypeError('not null')"]
        if kind == "boolean":
            return [f"{ind}o.append(1 if {value} else 0)"]
        if kind in ("int", "long"):
            return [f"{ind}o += long_bytes({value})"]
        if kind in ("float", "double"):
            return [f"{ind}o += {'_PF' if kind == 'float' else '_PD'}({value})"]
        v = self.var("x")
        encoded = f"{value}.encode()" if kind == "string" else value
        return [f"{ind}{v} = {encoded}", f"{ind}o += long_bytes(len({v}))", f"{ind}o += {v}"]

    def write_union(self, branches: list[Any], value: str, ind: str, ns: str | None) -> list[str]:
        if all(isinstance(b, str) and b in _PRIMITIVES for b in branches):
            return self.write_primitive_union(branches, value, ind)
        # Else only a nullable value: fastavro's choice among named or complex branches
        # (the one that validates with the most fields) stays with fastavro.
        others = [b for b in branches if b != "null"]
        if len(branches) != 2 or len(others) != 1 or isinstance(others[0], list):
            raise Unsupported("a union other than [null, T] or of primitives")
        null, other = branches.index("null"), 1 - branches.index("null")
        v = self.var("x")
        return [
            f"{ind}{v} = {value}",
            f"{ind}if {v} is None:",
            f"{ind}    o.append({null * 2})",
            f"{ind}else:",
            f"{ind}    o.append({other * 2})",
            *self.write(others[0], v, ind + "    ", ns),
        ]

    def write_primitive_union(self, branches: list[str], value: str, ind: str) -> list[str]:
        """fastavro's choice: the first branch the value validates against, by Python
        type (a bool is only a boolean; an int an int or long in range, else a float
        or double; a float a double rather than a float)."""
        v = self.var("x")

        def emit(names: list[str]) -> list[str]:
            """Write ``v`` as the first of ``names`` the union has (nothing if none)."""
            for i, branch in enumerate(branches):
                if branch in names:
                    return [f"o.append({i * 2})", *self.write_primitive(branch, v, "")]
            return []

        # An int: an int or long in range, in the union's order; else a float or double.
        int_lines: list[str] = []
        for i, kind in enumerate(branches):
            if kind not in ("int", "long", "float", "double"):
                continue
            bound = {"int": 2**31, "long": 2**63}.get(kind)
            test = f"-{bound} <= {v} < {bound}" if bound else "True"
            int_lines.append(f"{'elif' if int_lines else 'if'} {test}:")
            int_lines += [f"    o.append({i * 2})", *self.write_primitive(kind, v, "    ")]
        cases = [
            (f"{v} is None", emit(["null"])),
            (f"{v}.__class__ is bool", emit(["boolean"])),
            (f"isinstance({v}, int)", int_lines),
            (f"isinstance({v}, float)", emit(["double"]) or emit(["float"])),
            (f"isinstance({v}, str)", emit(["string"])),
            (f"isinstance({v}, (bytes, bytearray))", emit(["bytes"])),
        ]
        lines = [f"{ind}{v} = {value}"]
        first = True
        for test, body in cases:
            if not body:
                continue
            lines.append(f"{ind}{'if' if first else 'elif'} {test}:")
            lines += [f"{ind}    {line}" for line in body]
            if body[0].startswith("if "):  # an int in none of the ranges
                lines.append(f"{ind}    else:")
                lines.append(f"{ind}        raise ValueError(f'{{{v}!r}} fits no branch')")
            first = False
        lines.append(f"{ind}else:")
        lines.append(f"{ind}    raise ValueError(f'{{{v}!r}} fits no branch of the union')")
        return lines

    def write_record(self, schema: Any, full: str) -> None:
        fn = self.var("_record")
        self.records[full] = fn
        ns = full.rpartition(".")[0] or None
        body: list[str] = []
        for field in schema["fields"]:
            name, ftype = field["name"], field["type"]
            if "default" in field:
                value = f"r.get({name!r}, {self.const(field['default'])})"
            elif isinstance(ftype, list) and "null" in ftype:
                value = f"r.get({name!r})"
            else:
                value = f"r[{name!r}]"
            if ftype in ("float", "double"):
                value = f"float({value})"  # as fastavro: "NaN" and ints are accepted
            body += self.write(ftype, value, "    ", ns)
        self.lines += [f"def {fn}(o, r):", *(body or ["    pass"]), ""]


def compile_writer(schema: Any) -> Writer | None:
    """A function returning the Avro binary encoding of a value of ``schema``: the bytes
    fastavro's ``schemaless_writer`` writes; None if the schema uses what only
    fastavro writes (a union other than [null, T], a logical type other than
    ``timestamp-millis``). A value that does not fit raises."""
    compiler = _WriterCompiler()
    try:
        root = compiler.write(schema, "value", "    ", None)
    except (Unsupported, KeyError, TypeError):
        return None
    source = "\n".join([*compiler.lines, "def write(value):", "    o = bytearray()", *root])
    source += "\n    return bytes(o)\n"
    namespace: dict[str, Any] = {
        "long_bytes": long_bytes,
        "_millis_bytes": _millis_bytes,
        "_PF": struct.Struct("<f").pack,
        "_PD": struct.Struct("<d").pack,
        **compiler.consts,
    }
    name = schema.get("name", "?") if isinstance(schema, dict) else "?"
    exec(compile(source, f"<avro writer {name}>", "exec"), namespace)
    writer: Writer = namespace["write"]
    return writer
