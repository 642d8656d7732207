"""The pump: publishes due rows of ``scheduled_messages``, then forgets them.

Each pass claims the oldest due rows (``FOR UPDATE SKIP LOCKED``, so several relays
share the table), publishes their bytes, waits for the broker's acknowledgements and,
in the same transaction, deletes them (rows with a dedupe id are kept, emptied and
marked delivered). A crash before the commit leaves the rows pending: they are
published again (at least once), never lost. Between passes the pump sleeps until the
next due time, a NOTIFY (a new row) or the poll interval, whichever comes first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from confluent_kafka import KafkaError, Message

from streams.delayed import metrics as m
from streams.delayed.store import NOTIFY_CHANNEL
from streams.kafka_config import PRODUCER_BROKEN, RawSender

log = logging.getLogger(__name__)

H_DUE_AT = "streams-due-at"
TRIM_EVERY = 60.0
MAX_BACKOFF = 300.0
STOP_CHECK = 0.5  # seconds: how soon a waiting pump sees stop


class SenderSlot(Protocol):
    """The relay's ``PublisherSlot``: the current publisher, replaced when broken."""

    def get(self) -> Any: ...

    def renew(self, broken: Any) -> None: ...


_CLAIM = b"""
SELECT id, topic, key, value, header_names, header_values, dedupe_id,
       floor(extract(epoch FROM due_at) * 1000)::bigint, attempts  -- as producer timestamps
FROM scheduled_messages
WHERE delivered_at IS NULL AND due_at <= clock_timestamp()
ORDER BY due_at
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
_DELETE = b"DELETE FROM scheduled_messages WHERE id = ANY(%s) AND dedupe_id IS NULL"
_MARK = b"""
UPDATE scheduled_messages
SET delivered_at = clock_timestamp(), value = NULL, header_names = '{}', header_values = '{}'
WHERE id = ANY(%s) AND dedupe_id IS NOT NULL
"""
_BACK_OFF = b"""
UPDATE scheduled_messages
SET attempts = attempts + 1,
    due_at = clock_timestamp() + make_interval(secs => least(%s, power(2, attempts)))
WHERE id = ANY(%s)
"""
_NEXT_DUE = b"""
SELECT extract(epoch FROM min(due_at) - clock_timestamp())::float8
FROM scheduled_messages WHERE delivered_at IS NULL
"""
_TRIM = b"""
DELETE FROM scheduled_messages
WHERE delivered_at IS NOT NULL AND delivered_at < clock_timestamp() - make_interval(secs => %s)
"""


@dataclass
class _Acks:
    """Broker answers of one pass, filled by the producer's poll thread."""

    expected: int
    done: threading.Event = field(default_factory=threading.Event)
    ok: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    fatal: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def callback(self, row_id: int) -> Any:
        def cb(err: KafkaError | None, msg: Message) -> None:
            with self._lock:
                if err is None:
                    self.ok.append(row_id)
                else:
                    self.failed.append((row_id, err.str()))
                    self.fatal = self.fatal or err.fatal() or err.code() in PRODUCER_BROKEN
                if len(self.ok) + len(self.failed) >= self.expected:
                    self.done.set()

        return cb


# Rows whose topic starts with this are not published: at their due time a local
# target (e.g. "local:outbox": insert the outbox row) runs in the claim transaction.
LOCAL_PREFIX = "local:"
LocalTarget = Callable[[psycopg.Connection[Any], bytes], None]


class Pump:
    """Publishes due delayed messages until ``stop`` is set."""

    def __init__(
        self,
        dsn: str,
        publishers: SenderSlot,
        stop: threading.Event,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        publish_timeout: float = 30.0,
        retention: float = 7 * 24 * 3600.0,
        local_targets: dict[str, LocalTarget] | None = None,
    ) -> None:
        self.dsn = dsn
        self.publishers = publishers
        self.stop = stop
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.retention = retention
        self.local_targets = local_targets or {}
        self.published = 0
        self._conn: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._last_trim = 0.0

    def run(self) -> None:
        """Pump until ``stop``; database or broker errors are logged and retried."""
        log.info("delayed.pump.started", extra={"batch_size": self.batch_size})
        try:
            while not self.stop.is_set():
                try:
                    handled = self.pump_once()
                    if handled >= self.batch_size:
                        continue
                    self._maybe_trim()
                    self._wait(self._next_due())
                except psycopg.Error as exc:
                    log.warning("delayed.pump.db_error", extra={"error": repr(exc)})
                    self._reset()
                    self.stop.wait(self.poll_interval)
        finally:
            self._reset()

    def pump_once(self) -> int:
        """Publish one batch of due rows; returns how many rows were claimed."""
        conn = self._connection()
        with conn.transaction():
            rows = conn.execute(_CLAIM, (self.batch_size,)).fetchall()
            if not rows:
                return 0
            local = [r for r in rows if r[1].startswith(LOCAL_PREFIX)]
            acks = self._publish([r for r in rows if not r[1].startswith(LOCAL_PREFIX)])
            acks.ok += self._run_local(conn, local)
            if acks.ok:
                conn.execute(_DELETE, (acks.ok,))
                conn.execute(_MARK, (acks.ok,))
            unsettled = sorted(set(r[0] for r in rows) - set(acks.ok))
            if unsettled:
                conn.execute(_BACK_OFF, (MAX_BACKOFF, unsettled))
        self._record(rows, acks, unsettled)
        return len(rows)

    def _run_local(self, conn: psycopg.Connection[Any], rows: list[Any]) -> list[int]:
        """Run local targets, each in a savepoint; returns the ids that succeeded."""
        done: list[int] = []
        for row in rows:
            target = self.local_targets.get(row[1])
            try:
                if target is None:
                    raise LookupError(f"no local target {row[1]!r} in this process")
                with conn.transaction():
                    target(conn, bytes(row[3]))
                done.append(row[0])
            except Exception as exc:  # a bad row must not stop the others: backoff + log
                log.error(
                    "delayed.pump.local_failed",
                    extra={"id": row[0], "target": row[1], "error": repr(exc)},
                )
        return done

    def _publish(self, rows: list[Any]) -> _Acks:
        acks = _Acks(len(rows))
        if not rows:
            return acks
        publisher: RawSender = self.publishers.get()
        for row_id, topic, key, value, names, values, _dedupe, due_ms, _att in rows:
            headers = [(n, bytes(v)) for n, v in zip(names, values, strict=True)]
            headers.append((H_DUE_AT, str(due_ms).encode()))
            publisher.send_raw(
                topic,
                bytes(value) if value is not None else None,
                key=bytes(key) if key is not None else None,
                headers=headers,
                on_delivery=acks.callback(row_id),
            )
        # librdkafka times each message out after the publish timeout: the wait ends.
        if not acks.done.wait(self.publish_timeout + 10):
            log.warning("delayed.pump.ack_timeout", extra={"rows": len(rows)})
        if acks.fatal:
            self.publishers.renew(publisher)
        return acks

    def _record(self, rows: list[Any], acks: _Acks, unsettled: list[int]) -> None:
        now_ms = time.time() * 1000
        due = {r[0]: (r[1], r[7]) for r in rows}
        for row_id in acks.ok:
            topic, due_ms = due[row_id]
            m.DELIVERED.labels(topic).inc()
            m.LATENESS.observe(max(0.0, (now_ms - due_ms) / 1000))
        self.published += len(acks.ok)
        if unsettled:
            m.PUBLISH_ERRORS.inc(len(unsettled))
            first = acks.failed[0][1] if acks.failed else "no acknowledgement"
            log.warning(
                "delayed.pump.publish_failed",
                extra={"rows": len(unsettled), "error": first, "retry": "backoff"},
            )

    def _next_due(self) -> float:
        row = self._connection().execute(_NEXT_DUE).fetchone()
        self._connection().commit()
        if row is None or row[0] is None:
            return self.poll_interval
        return max(0.0, min(float(row[0]), self.poll_interval))

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or until a NOTIFY or ``stop`` (seen within half a second:
        a long poll interval must not hold up the relay's exit)."""
        deadline = time.monotonic() + seconds
        listener = self._listen()
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if listener is None:
                self.stop.wait(min(STOP_CHECK, remaining))
            elif list(listener.notifies(timeout=min(STOP_CHECK, remaining), stop_after=1)):
                list(listener.notifies(timeout=0))  # everything queued is covered by the pass
                return

    def _maybe_trim(self) -> None:
        now = time.monotonic()
        if now - self._last_trim < TRIM_EVERY:
            return
        self._last_trim = now
        conn = self._connection()
        with conn.transaction():
            conn.execute(_TRIM, (self.retention,))
        cur = conn.execute(b"SELECT count(*) FROM scheduled_messages WHERE delivered_at IS NULL")
        row = cur.fetchone()
        conn.commit()
        m.PENDING.set(row[0] if row else 0)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn)
        return self._conn

    def _listen(self) -> psycopg.Connection[Any] | None:
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self.dsn, autocommit=True)
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._listener

    def _reset(self) -> None:
        for c in (self._conn, self._listener):
            if c is not None and not c.closed:
                c.close()
        self._conn = None
        self._listener = None


def start_pump(
    dsn: str, publishers: SenderSlot, stop: threading.Event, **kw: Any
) -> threading.Thread:
    """Run a ``Pump`` in a daemon thread (the relay process calls this)."""
    pump = Pump(dsn, publishers, stop, **kw)
    thread = threading.Thread(target=pump.run, name="delayed-pump", daemon=True)
    thread.start()
    return thread
