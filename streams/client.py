"""The API for upstream producers. Importing this module does not import Faust.

    from streams.client import publish
    publish("resource-changes", {...}, key=org_id)

Every call checks the value against the topic's Avro schema before anything is sent
and raises ``TypeError`` (``SchemaMismatch``) naming the topic, the field, the
offending type and the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Mapping
from typing import Any, overload

import psycopg

from streams.buffers.models import check_increment
from streams.delayed.store import Scheduled
from streams.incr_coalesce import coalescer_for, default_coalescer
from streams.projectconfigs.scopes import (
    DatabaseScopeResolver,
    ScopeResolver,
    request_value,
    validate_scope,
)
from streams.publisher import Delivered, HeaderInput, Publisher
from streams.settings import get_settings

_lock = threading.Lock()
_publisher: Publisher | None = None


def get_publisher() -> Publisher:
    """The process-wide publisher, built from the environment on first use."""
    global _publisher
    if _publisher is None:
        with _lock:
            if _publisher is None:
                _publisher = Publisher(get_settings())
    return _publisher


def set_publisher(publisher: Publisher | None) -> None:
    """Install (or forget) the process-wide publisher; for workers and tests."""
    global _publisher
    _publisher = publisher


def close(timeout: float = 10.0) -> None:
    """Send what the process-wide publisher holds (increments summed in it first) and close
    it; a later call builds a new one. A clean exit that calls it loses nothing."""
    global _publisher
    with _lock:
        publisher, _publisher = _publisher, None
    if publisher is not None:
        publisher.close(timeout)


Key = str | bytes | int | None
Conn = psycopg.Connection[Any]


@overload
def publish(
    topic: str,
    value: Any,
    *,
    key: Key = None,
    headers: HeaderInput = None,
    countdown: None = None,
    eta: None = None,
    conn: None = None,
) -> Delivered: ...


@overload
def publish(
    topic: str,
    value: Any,
    *,
    key: Key = None,
    headers: HeaderInput = None,
    countdown: float | None = None,
    eta: dt.datetime | None = None,
    conn: Conn | None = None,
) -> Delivered | Scheduled: ...


def publish(
    topic: str,
    value: Any,
    *,
    key: Key = None,
    headers: HeaderInput = None,
    countdown: float | None = None,
    eta: dt.datetime | None = None,
    conn: Conn | None = None,
) -> Delivered | Scheduled:
    """Publish one value and wait for the broker's acknowledgement.

    With ``countdown`` (seconds, up to 30 days) or ``eta`` (an aware datetime) the
    message is published no earlier than then, by ``streams relay``; with ``conn``
    only if that psycopg transaction commits (right after the commit, or when due).
    Either way the value is checked first (``TypeError``) and a ``Scheduled`` is
    returned once the message is stored.
    """
    if countdown is None and eta is None and conn is None:
        return get_publisher().publish(topic, value, key=key, headers=headers)
    return get_publisher().schedule(
        topic, value, key=key, headers=headers, countdown=countdown, eta=eta, conn=conn
    )


async def publish_async(
    topic: str,
    value: Any,
    *,
    key: Key = None,
    headers: HeaderInput = None,
    countdown: float | None = None,
    eta: dt.datetime | None = None,
) -> Delivered | Scheduled:
    """``publish`` without blocking the event loop (``countdown``/``eta`` as there)."""
    if countdown is None and eta is None:
        return await get_publisher().publish_async(topic, value, key=key, headers=headers)
    return await get_publisher().schedule_async(
        topic, value, key=key, headers=headers, countdown=countdown, eta=eta
    )


def send_alert_event(
    event: Mapping[str, Any],
    rule: str,
    sentry_app_id: int,
    additional_payload_key: str | None = None,
    additional_payload: Mapping[str, Any] | None = None,
    *,
    conn: Conn | None = None,
) -> Delivered | Scheduled | None:
    """Send an alert to a sentry app's webhook: one delivery on ``webhook-deliveries``.

    ``event`` is plain data with an integer ``project_id``; the payload's data holds
    it under ``event``, the rule name under ``triggered_rule``, and
    ``additional_payload`` under ``additional_payload_key`` when both are given.
    Returns None (nothing sent) when the app is not installed in the event's
    organization; raises ``TypeError`` for arguments that are not plain data. With
    ``conn`` the installation is read in that transaction and the delivery is sent
    only if it commits.
    """
    from streams.db.pool import connect
    from streams.webhooks.alerts import build_alert_delivery

    publisher = get_publisher()
    if conn is not None:
        value = build_alert_delivery(
            conn,
            event,
            rule,
            sentry_app_id,
            additional_payload_key=additional_payload_key,
            additional_payload=additional_payload,
        )
        if value is None:
            return None
        key = f"{value['target_kind']}:{value['target_id']}"
        return publisher.schedule("webhook-deliveries", value, key=key, conn=conn)
    with connect(publisher.settings) as own:
        value = build_alert_delivery(
            own,
            event,
            rule,
            sentry_app_id,
            additional_payload_key=additional_payload_key,
            additional_payload=additional_payload,
        )
    if value is None:
        return None
    key = f"{value['target_kind']}:{value['target_id']}"
    return publisher.publish("webhook-deliveries", value, key=key)


_resolver: ScopeResolver | None = None


def set_scope_resolver(resolver: ScopeResolver | None) -> None:
    """Install (or forget) how scopes find their organization; for tests and services."""
    global _resolver
    _resolver = resolver


def _scope_resolver() -> ScopeResolver:
    global _resolver
    if _resolver is None:
        # Outside the lock: get_publisher() takes it too.
        dsn = get_publisher().settings.database_url.get()
        with _lock:
            if _resolver is None:
                _resolver = DatabaseScopeResolver(dsn)
    return _resolver


@overload
def schedule_invalidate_project_config(
    *,
    trigger: str,
    organization_id: int | None = None,
    project_id: int | None = None,
    public_key: str | None = None,
    countdown: float = 5,
    conn: None = None,
) -> Delivered: ...


@overload
def schedule_invalidate_project_config(
    *,
    trigger: str,
    organization_id: int | None = None,
    project_id: int | None = None,
    public_key: str | None = None,
    countdown: float = 5,
    conn: Conn,
) -> Scheduled: ...


def schedule_invalidate_project_config(
    *,
    trigger: str,
    organization_id: int | None = None,
    project_id: int | None = None,
    public_key: str | None = None,
    countdown: float = 5,
    conn: Conn | None = None,
) -> Delivered | Scheduled:
    """Ask for the project configs of one scope to be recomputed ``countdown`` s from now.

    Exactly one of ``organization_id``, ``project_id``, ``public_key`` must be given,
    else ``TypeError`` (and nothing is published). The scope's organization is looked
    up (one query) so that all scopes of an organization share a partition; a request
    whose scope, or a scope covering it, is already pending is skipped by the agent.
    Organization scope deletes the configs of all its keys; project and key scope
    recompute them. Returns once the broker acknowledged the request.

    With ``conn`` (the caller's psycopg connection) the scope is resolved in that
    transaction and the request is published only after it commits, so the
    recompute reads the committed rows; a rollback publishes nothing.
    """
    kind, value = validate_scope(organization_id, project_id, public_key)
    if not isinstance(trigger, str) or not trigger:
        raise TypeError(f"trigger must be a non-empty str, got {type(trigger).__name__}")
    if isinstance(countdown, bool) or not isinstance(countdown, int | float):
        raise TypeError(f"countdown must be a number of seconds, got {type(countdown).__name__}")
    if not math.isfinite(countdown) or countdown < 0:
        raise ValueError(f"countdown must be a finite number >= 0, got {countdown!r}")
    resolver = _scope_resolver() if conn is None else _InTransaction(conn)
    scope = resolver.resolve(kind, value)
    record = request_value(scope, trigger=trigger, countdown=countdown)
    if conn is not None:
        return get_publisher().schedule(
            "project-config-invalidations", record, key=scope.message_key, conn=conn
        )
    return publish("project-config-invalidations", record, key=scope.message_key)


class _InTransaction(DatabaseScopeResolver):
    """Resolves scopes with the caller's connection (it sees the caller's own rows)."""

    def __init__(self, conn: Conn) -> None:
        super().__init__("")
        self._caller = conn

    def _fetch(self, sql: str, value: int | str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._caller.execute(sql.encode(), (value,)).fetchone()
        return row


def incr(
    model: str,
    columns: Mapping[str, int],
    filters: Mapping[str, int | str],
    extra: Mapping[str, Any] | None = None,
    signal_only: bool = False,
    *,
    wait: bool = False,
    conn: Conn | None = None,
) -> None:
    """Add ``columns`` to the counters of the ``model`` row matching ``filters``, buffered.

    >>> incr("issue_group", {"times_seen": 1}, {"id": 42}, extra={"last_seen": now})

    Increments of one row are summed and written by one statement per flush window;
    ``extra`` columns are set, the latest event wins. ``signal_only`` writes nothing
    and emits a ``buffer-completions`` event instead. Model and column names must be
    in the allow-list (``streams.buffers.models.MODELS``), else ``TypeError`` and
    nothing is published. Does not wait for the broker unless ``wait=True``; an
    increment the broker refuses later is logged (``client.incr.undelivered``). With
    ``conn`` the increment is sent only if that transaction commits. Asynchronous
    increments are summed per row for up to 20 ms before they are sent (the first
    after a quiet window at once; ``coalesce_increments`` changes the window, 0 turns
    it off; ``streams/incr_coalesce.py``): a client killed with -9 also loses those.
    """
    coalescer = coalescer_for(_publisher) if _publisher is not None else None
    if conn is None and not wait and signal_only is False:
        if coalescer is None:
            # Checked before a publisher (and its settings) is needed.
            check_increment(model, columns, filters, extra, signal_only)
            coalescer = default_coalescer(get_publisher())
        if coalescer.window > 0:
            # Summed per row in this process for up to a window (streams/incr_coalesce.py).
            coalescer.add(model, columns, filters, extra)
            return
    inc = check_increment(model, columns, filters, extra, signal_only)
    publisher = get_publisher()
    if coalescer is not None:
        coalescer.flush()  # what is held for this row goes first: its order is kept
    if conn is not None:
        # After commit only: the increment then counts exactly the committed change.
        publisher.schedule("buffer-increments", inc.to_wire(), key=inc.key, conn=conn)
    elif wait:
        publisher.publish("buffer-increments", inc.to_wire(), key=inc.key)
    else:
        publisher.send("buffer-increments", inc.to_wire(), key=inc.key, on_delivery=_undelivered)


def coalesce_increments(window: float = 0.02) -> None:
    """Sum this process's asynchronous ``incr()`` calls per row for up to ``window``
    seconds before sending them (on by default with 0.02 s; one message per row per
    window; the first after a quiet window goes at once). A clean exit
    (``Publisher.flush``/``close``) sends what is held; a kill -9 loses at most
    ``window`` seconds of increments more than without it. ``window=0`` sends every
    call at once."""
    if window < 0:
        raise ValueError("window must be >= 0 seconds")
    coalescer_for(get_publisher(), window)


def _undelivered(err: Any, msg: Any) -> None:
    if err is not None:
        logging.getLogger(__name__).error(
            "client.incr.undelivered", extra={"error": str(err), "key": msg.key()}
        )
