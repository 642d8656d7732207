"""Invalidation scopes: an organization, a project or one public key.

A request names exactly one scope. Before it is published the client resolves the
scope's organization (and, for a key, its project) so that every scope of one
organization lands on the same partition of ``project-config-invalidations``: the
agent can then decide locally whether a covering scope is already pending.
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, overload

import psycopg


class ScopeKind(enum.StrEnum):
    ORGANIZATION = "organization"
    PROJECT = "project"
    PUBLIC_KEY = "public_key"


_KIND_OF = {kind.value: kind for kind in ScopeKind}  # a dict lookup: ScopeKind(text) is ~0.5 us
_T = TypeVar("_T")


class _Once(Generic[_T]):
    """``functools.cached_property`` without its lock: Python 3.11's takes an RLock on
    every first read, which was most of the cost of a scope's keys (a worker at 100k
    projects reads them for tens of thousands of new scopes a second). A race only
    computes the same value twice."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Once[_T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> _Once[_T] | _T:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(frozen=True)
class Scope:
    """One scope, with whatever covers it that is known (organization, project)."""

    kind: ScopeKind
    organization_id: int | None = None
    project_id: int | None = None
    public_key: str | None = None

    @property
    def key(self) -> str:
        """The debounce key of this scope ('o:1', 'p:2', 'k:abc')."""
        if self.kind is ScopeKind.ORGANIZATION:
            return f"o:{self.organization_id}"
        if self.kind is ScopeKind.PROJECT:
            return f"p:{self.project_id}"
        return f"k:{self.public_key}"

    @_Once
    def own_key(self) -> str:
        """``key``, formatted once: the agent reuses one Scope per distinct request scope,
        and reads it for each window the scope opens. (Computing the keys eagerly when
        the scope is made cost the worker's request path: at 100k projects the last
        requests were decided 0.6-1.0 s after the offer ended, instead of 0.3 s.)"""
        return self.key

    def covering(self) -> tuple[tuple[ScopeKind, str], ...]:
        """Debounce keys of the scopes that cover this one, widest first, itself last."""
        return self._covering

    @_Once
    def _covering(self) -> tuple[tuple[ScopeKind, str], ...]:
        # Cached on the instance: the agent reuses one Scope per distinct request
        # scope, and this is read for every request it decides.
        out: list[tuple[ScopeKind, str]] = []
        if self.organization_id is not None:
            out.append((ScopeKind.ORGANIZATION, f"o:{self.organization_id}"))
        if self.kind is not ScopeKind.ORGANIZATION and self.project_id is not None:
            out.append((ScopeKind.PROJECT, f"p:{self.project_id}"))
        if self.kind is ScopeKind.PUBLIC_KEY:
            out.append((ScopeKind.PUBLIC_KEY, self.key))
        return tuple(out)

    @property
    def message_key(self) -> str:
        """The Kafka key: the organization, so all of its scopes share a partition.

        A scope whose organization cannot be resolved (a deleted key or project)
        is keyed by itself; nothing can cover it anyway.
        """
        if self.organization_id is not None:
            return str(self.organization_id)
        return self.key


MAX_PUBLIC_KEY_LENGTH = 256  # keys are 32 hex characters; leave room, refuse the absurd


def validate_scope(
    organization_id: object, project_id: object, public_key: object
) -> tuple[ScopeKind, int | str]:
    """The one scope given; ``TypeError`` unless exactly one is, with the right type."""
    given = [
        (kind, value)
        for kind, value in (
            (ScopeKind.ORGANIZATION, organization_id),
            (ScopeKind.PROJECT, project_id),
            (ScopeKind.PUBLIC_KEY, public_key),
        )
        if value is not None
    ]
    if len(given) != 1:
        names = ", ".join(f"{k.value}_id" if k != ScopeKind.PUBLIC_KEY else k for k, _ in given)
        raise TypeError(
            "exactly one of organization_id, project_id, public_key is required"
            + (f" (got {names})" if given else " (got none)")
        )
    kind, value = given[0]
    if kind is ScopeKind.PUBLIC_KEY:
        if not isinstance(value, str) or not value:
            raise TypeError(f"public_key must be a non-empty str, got {type(value).__name__}")
        if len(value) > MAX_PUBLIC_KEY_LENGTH:
            # It travels in message keys and headers: a huge one makes the message exceed
            # the topic's limit and be retried for minutes before it is dead-lettered.
            raise TypeError(
                f"public_key is {len(value)} characters long; at most {MAX_PUBLIC_KEY_LENGTH}"
            )
        return kind, value
    if type(value) is not int:
        raise TypeError(f"{kind.value}_id must be an int, got {type(value).__name__}")
    return kind, value


class ScopeResolver(Protocol):
    """Finds the organization (and project) of a scope; None when the row is gone."""

    def resolve(self, kind: ScopeKind, value: int | str) -> Scope: ...


_PROJECT_SQL = "SELECT organization_id FROM project WHERE id = %s"
_KEY_SQL = (
    "SELECT p.organization_id, p.id FROM project_key k JOIN project p ON p.id = k.project_id "
    "WHERE k.public_key = %s"
)


class DatabaseScopeResolver:
    """Resolves scopes with one short query on a lazily opened, reused connection."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._lock = threading.Lock()

    def resolve(self, kind: ScopeKind, value: int | str) -> Scope:
        if kind is ScopeKind.ORGANIZATION:
            assert isinstance(value, int)
            return Scope(kind, organization_id=value)
        sql = _PROJECT_SQL if kind is ScopeKind.PROJECT else _KEY_SQL
        row = self._fetch(sql, value)
        if kind is ScopeKind.PROJECT:
            assert isinstance(value, int)
            return Scope(kind, organization_id=row[0] if row else None, project_id=value)
        assert isinstance(value, str)
        return Scope(
            kind,
            organization_id=row[0] if row else None,
            project_id=row[1] if row else None,
            public_key=value,
        )

    def _fetch(self, sql: str, value: int | str) -> tuple[Any, ...] | None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(self._dsn, autocommit=True)
                    return self._conn.execute(sql, (value,)).fetchone()
                except psycopg.OperationalError:
                    # A connection dropped since last use: reconnect once, then give up.
                    self._conn = None
                    if attempt == 2:
                        raise
        return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def request_value(
    scope: Scope, *, trigger: str, countdown: float, requested_at: dt.datetime | None = None
) -> dict[str, Any]:
    """The ``project-config-invalidations`` record for ``scope``."""
    return {
        "scope": scope.kind.value,
        "organization_id": scope.organization_id,
        "project_id": scope.project_id,
        "public_key": scope.public_key,
        "trigger": trigger,
        "countdown": float(countdown),
        "requested_at": requested_at or dt.datetime.now(dt.UTC),
    }


def scope_of(value: dict[str, Any]) -> Scope:
    """The scope a decoded request names; ``ValueError`` if its fields contradict it."""
    text = value["scope"]
    kind = _KIND_OF.get(text) or ScopeKind(text)  # ValueError for an unknown kind
    org, project, key = (
        value.get("organization_id"),
        value.get("project_id"),
        value.get("public_key"),
    )
    if kind is ScopeKind.ORGANIZATION:
        missing = org is None
    elif kind is ScopeKind.PROJECT:
        missing = project is None
    else:
        missing = not key
    if missing:
        raise ValueError(f"{kind.value} scope without its {kind.value} identifier")
    # As Scope(kind, org, project, key), without the frozen dataclass's __init__ (an
    # object.__setattr__ per field): one is made per new scope a worker reads.
    scope = object.__new__(Scope)
    scope.__dict__.update(kind=kind, organization_id=org, project_id=project, public_key=key)
    return scope
