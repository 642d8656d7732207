"""Config documents: what a public key's config holds, its revision, how it is served.

Pure functions over plain rows, so the shape of a config is tested without a
database. The ``project-configs`` record carries the document as a JSON string;
the HTTP endpoint serves the record with that document expanded.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

# Options that shape what a key may send; anything else (UI preferences, ...) is not
# part of a config, so changing it does not change the revision.
OPTION_PREFIXES = ("sentry:", "filters:", "relay:", "quotas:")
ACTIVE = 0


class KeyRow(NamedTuple):
    """One public key joined with its project and organization (a named tuple: one
    per recomputed key, built from the row as it is)."""

    public_key: str
    key_status: int
    rate_limit_count: int | None
    rate_limit_window: int | None
    project_id: int
    project_slug: str
    platform: str | None
    project_status: int
    organization_id: int
    organization_slug: str
    organization_status: int


def relevant_options(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(options.items()) if k.startswith(OPTION_PREFIXES)}


# Built once: ``json.dumps`` with options builds an encoder per call (1-1.5 us of the
# 5-10 us a config's JSON takes).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
_string = encode_basestring_ascii


def canonical(doc: Mapping[str, Any]) -> str:
    return _canonical(doc)


def revision_of(doc: Mapping[str, Any]) -> str:
    return _revision(canonical(doc))


def _revision(text: str) -> str:
    # The first 32 hex digits of the SHA-256 (the first 16 bytes, in hex).
    return hashlib.sha256(text.encode()).digest()[:16].hex()


def inactive_reason(row: KeyRow) -> str | None:
    """Why the key is disabled, or None: an inactive key, project or organization."""
    if row.key_status != ACTIVE:
        return "key_inactive"
    if row.project_status != ACTIVE:
        return "project_inactive"
    if row.organization_status != ACTIVE:
        return "organization_inactive"
    return None


def config_document(
    row: KeyRow, project_options: Mapping[str, Any], organization_options: Mapping[str, Any]
) -> dict[str, Any]:
    rate_limit = (
        {"count": row.rate_limit_count, "window": row.rate_limit_window}
        if row.rate_limit_count is not None and row.rate_limit_window is not None
        else None
    )
    return {
        "disabled": False,
        "public_key": row.public_key,
        "project_id": row.project_id,
        "project_slug": row.project_slug,
        "platform": row.platform,
        "organization_id": row.organization_id,
        "organization_slug": row.organization_slug,
        "key": {"status": "active", "rate_limit": rate_limit},
        "options": {
            "project": relevant_options(project_options),
            "organization": relevant_options(organization_options),
        },
    }


def config_record(
    row: KeyRow,
    project_options: Mapping[str, Any],
    organization_options: Mapping[str, Any],
    computed_at: dt.datetime,
) -> dict[str, Any]:
    """The ``project-configs`` record of a key that exists (disabled if inactive)."""
    if inactive_reason(row) is not None:
        return disabled_record(row.public_key, computed_at, row.project_id, row.organization_id)
    # Serialized once: the config and its revision are the same text.
    text = config_text(row, project_options, organization_options)
    return {
        "public_key": row.public_key,
        "disabled": False,
        "project_id": row.project_id,
        "organization_id": row.organization_id,
        "config": text,
        "revision": _revision(text),
        "computed_at": computed_at,
    }


def config_text(
    row: KeyRow, project_options: Mapping[str, Any], organization_options: Mapping[str, Any]
) -> str:
    """``canonical(config_document(...))``, byte for byte, written from a template: the
    keys are known and sorted here, only the options go through the encoder. The JSON
    encoder's walk of the whole document (sorting every dict) was the largest cost of a
    recompute at 100k projects (bench/README.md). A row with unusual types (an id that
    is not an int) goes to ``canonical``."""
    count, window = row.rate_limit_count, row.rate_limit_window
    if not (
        type(row.project_id) is int
        and type(row.organization_id) is int
        and (count is None or type(count) is int)
        and (window is None or type(window) is int)
    ):
        return canonical(config_document(row, project_options, organization_options))
    rate_limit = (
        "null" if count is None or window is None else f'{{"count":{count},"window":{window}}}'
    )
    platform = "null" if row.platform is None else _string(row.platform)
    return (
        f'{{"disabled":false,"key":{{"rate_limit":{rate_limit},"status":"active"}},'
        f'"options":{{"organization":{_options(organization_options)},'
        f'"project":{_options(project_options)}}},'
        f'"organization_id":{row.organization_id},'
        f'"organization_slug":{_string(row.organization_slug)},"platform":{platform},'
        f'"project_id":{row.project_id},"project_slug":{_string(row.project_slug)},'
        f'"public_key":{_string(row.public_key)}}}'
    )


def _options(options: Mapping[str, Any]) -> str:
    return _canonical(relevant_options(options)) if options else "{}"


DISABLED_DOC = {"disabled": True}
_DISABLED_TEXT = canonical(DISABLED_DOC)
_DISABLED_REVISION = _revision(_DISABLED_TEXT)


def disabled_record(
    public_key: str,
    computed_at: dt.datetime,
    project_id: int | None = None,
    organization_id: int | None = None,
) -> dict[str, Any]:
    """The record of a key that is inactive or no longer exists: ``{"disabled": true}``."""
    return {
        "public_key": public_key,
        "disabled": True,
        "project_id": project_id,
        "organization_id": organization_id,
        "config": None,
        "revision": _DISABLED_REVISION,
        "computed_at": computed_at,
    }


def _computed_at(computed: Any) -> str:
    if isinstance(computed, dt.datetime):
        return computed.astimezone(dt.UTC).isoformat()
    return dt.datetime.fromtimestamp(int(computed) / 1000, dt.UTC).isoformat()


def served_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """What ``GET /api/project-configs/{public_key}`` answers for a decoded record."""
    computed_at = _computed_at(record["computed_at"])
    config = json.loads(record["config"]) if record.get("config") else None
    return {
        "public_key": record["public_key"],
        "disabled": record["disabled"],
        "project_id": record.get("project_id"),
        "organization_id": record.get("organization_id"),
        "revision": record["revision"],
        "computed_at": computed_at,
        "config": config if config is not None else dict(DISABLED_DOC),
    }


@functools.lru_cache(maxsize=16)  # a recompute batch's configs share their computed_at
def _computed_at_json(computed: Any) -> str:
    return json.dumps(_computed_at(computed))


def served_json(record: Mapping[str, Any], *, trusted: bool = False) -> bytes:
    """``served_document(record)`` as JSON bytes, with the config's own text spliced in.

    The record's config is already canonical JSON (``config_record``), so it is not
    parsed and dumped again per served config; ``trusted=False`` (a record read from
    the topic) still parses it once, to refuse one that is not JSON (``ValueError``).
    The outer keys are sorted as ``json.dumps(..., sort_keys=True)`` sorts them.
    """
    text = record.get("config") or _DISABLED_TEXT
    if not trusted and not isinstance(json.loads(text), dict):
        raise ValueError("the config is not a JSON object")
    # The rest as json.dumps(..., sort_keys=True) writes it, without an encoder walk.
    return (
        f'{{"computed_at": {_computed_at_json(record["computed_at"])}, "config": {text}, '
        f'"disabled": {"true" if record["disabled"] else "false"}, '
        f'"organization_id": {_id(record.get("organization_id"))}, '
        f'"project_id": {_id(record.get("project_id"))}, '
        f'"public_key": {_string(record["public_key"])}, '
        f'"revision": {_string(record["revision"])}}}'
    ).encode()


def _id(value: int | None) -> str:
    return "null" if value is None else str(int(value))
