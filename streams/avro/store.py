"""Every released version of every topic's schema, indexed by fingerprint.

Layout on disk: ``schemas/<topic>/v<N>.avsc``. The highest version is the one we
write (and read into); older versions stay so data written with them still decodes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro.schema

from streams.errors import ConfigurationError

SCHEMA_DIR_ENV = "STREAMS_SCHEMA_DIR"


# The wheel carries the top-level ``schemas/`` as ``streams/_schemas`` (pyproject's
# hatch force-include); a checkout (editable install) reads ``schemas/`` itself.
PACKAGED_SCHEMA_DIR = Path(__file__).resolve().parents[1] / "_schemas"
CHECKOUT_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def default_schema_dir() -> Path:
    """``$STREAMS_SCHEMA_DIR``, else the schemas packaged in the wheel, else the checkout's."""
    env = os.environ.get(SCHEMA_DIR_ENV)
    if env:
        return Path(env)
    if PACKAGED_SCHEMA_DIR.is_dir():
        return PACKAGED_SCHEMA_DIR
    return CHECKOUT_SCHEMA_DIR


@dataclass(frozen=True)
class SchemaVersion:
    subject: str  # topic name without prefix
    version: int
    raw: dict[str, Any]
    parsed: Any
    canonical: str
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of the canonical form

    @property
    def full_name(self) -> str:
        return str(self.raw.get("name", ""))


def load_version(subject: str, version: int, raw: dict[str, Any]) -> SchemaVersion:
    # The write hint marks the schema as parsed, so fastavro does not parse it per call.
    parsed = fastavro.schema.parse_schema(raw)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    return SchemaVersion(subject, version, raw, parsed, canonical, fingerprint)


class SchemaStore:
    """Schemas by subject and version, and every version by fingerprint."""

    def __init__(self, versions: list[SchemaVersion]) -> None:
        self._by_subject: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for v in sorted(versions, key=lambda v: (v.subject, v.version)):
            self._by_subject.setdefault(v.subject, []).append(v)
            self._by_fingerprint.setdefault(v.fingerprint, v)

    @classmethod
    def from_dir(cls, root: Path) -> SchemaStore:
        versions: list[SchemaVersion] = []
        if not root.is_dir():
            raise ConfigurationError(
                f"schema directory {root} does not exist (set {SCHEMA_DIR_ENV} to the directory"
                " holding <topic>/v<N>.avsc)"
            )
        for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(topic_dir.glob("v*.avsc")):
                try:
                    number = int(f.stem[1:])
                except ValueError as exc:
                    raise ConfigurationError(f"schema file {f} is not named v<N>.avsc") from exc
                versions.append(load_version(topic_dir.name, number, json.loads(f.read_text())))
        return cls(versions)

    def add(self, version: SchemaVersion) -> None:
        """Add a schema version (extension agents register their topics' schemas)."""
        known = self._by_subject.setdefault(version.subject, [])
        if any(v.version == version.version for v in known):
            return
        known.append(version)
        known.sort(key=lambda v: v.version)
        self._by_fingerprint.setdefault(version.fingerprint, version)

    def subjects(self) -> list[str]:
        return sorted(self._by_subject)

    def latest(self, subject: str) -> SchemaVersion:
        try:
            return self._by_subject[subject][-1]
        except KeyError:
            raise ConfigurationError(f"no schema for topic {subject!r}") from None

    def versions(self, subject: str) -> list[SchemaVersion]:
        return list(self._by_subject.get(subject, []))

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fingerprint)


@cache
def default_store() -> SchemaStore:
    return SchemaStore.from_dir(default_schema_dir())
