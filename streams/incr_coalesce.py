"""``incr()`` increments summed per row in the calling process before they are sent.

A busy client calls ``incr()`` for the same few rows many times a second; each call
used to be one Avro-encoded message and one event for the buffer worker. Here the
increments of one row are summed in a dict and sent as one message per row per
*window*: the first increment after a quiet window is sent at once (no added
latency at light load); under load, increments wait at most ``window`` seconds.
Every row's sum then carries its ``extra`` columns from the latest call (as the
buffer would keep them), the latest event time, and ``increments``, the number of
calls it sums (the worker counts calls, not messages, in its metrics and marks).
The rows of one model that hash to the same partition go out in one message (the
first row at the top level, the others column by column in ``more``; schema v2),
keyed by the first row: each row still travels on its own key's partition, so its order against the
unbatched calls is kept, and the number of messages stays about partitions x
windows however many rows there are (the worker's cost per message then spreads
over many rows).

On by default, ``WINDOW`` = 20 ms (``client.coalesce_increments(window)`` changes
it; 0 sends every call at once). Why 20 ms: buffered counters only become visible
when the worker's flush window (``STREAMS_BUFFER_FLUSH_INTERVAL``, 5 s by default)
closes, so 20 ms adds at most 0.4% to when a user sees them, and nothing at light
load; a longer window merges more calls per row but adds to what a crash loses.

Durability: an asynchronous ``incr()`` sits in the producer's queue until the
broker acknowledges it, so a client killed with -9 loses its unacknowledged
increments (a few ms of calls normally; everything sent during a broker outage, up
to ``message.timeout.ms``). Coalescing adds at most ``window`` seconds of calls held
in this dict to that loss (``Publisher.flush()``/``close()`` send them first, so a
clean exit loses nothing). ``incr(wait=True)``, ``incr(conn=...)`` and
``signal_only`` are never coalesced, and they send what is held first, so a row's
order is kept.

Validation is the allow-list's (``check_increment``), cached per distinct call
shape whose values are plain ints and strings (``NotAllowed`` still raises in the
caller, before anything is held).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from streams import catalogue
from streams.buffers.models import check_increment

log = logging.getLogger(__name__)

TOPIC = "buffer-increments"
WINDOW = 0.02  # default seconds an increment may wait to be summed with others of its row
_CACHE_LIMIT = 100_000
_BIGINT = 2**62  # flush a row before its sum could leave PostgreSQL's bigint
MAX_ROWS = 1000  # rows per message
MAX_BYTES = 512 * 1024  # about; well below the broker's 1 MB message limit

Shape = tuple[str, tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]


class _Row:
    __slots__ = ("columns", "count", "event_time_ms", "extra", "filters", "key", "model")

    def __init__(self, key: str, model: str, filters: dict[str, Any]) -> None:
        self.key = key
        self.model = model
        self.filters = filters
        self.columns: dict[str, int] = {}
        self.extra: dict[str, Any] | None = None
        self.event_time_ms = 0
        self.count = 0

    def size(self) -> int:
        """About the bytes this row takes in a message (texts are what can be large)."""
        texts = sum(len(v) for v in (self.extra or {}).values() if isinstance(v, str))
        return 64 + len(self.key) + texts

    def wire(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "filters": self.filters,
            "columns": self.columns,
            "extra": self.extra,
            "signal_only": False,
            "event_time": self.event_time_ms,
            "increments": self.count,
        }


class Sender(Protocol):
    """What the coalescer needs of ``streams.publisher.Publisher``."""

    before_flush: list[Callable[[], None]]

    def send(
        self, topic: str, value: Any, *, key: str, on_delivery: Callable[[Any, Any], None]
    ) -> None: ...


class IncrCoalescer:
    """Sums one publisher's asynchronous increments per row; sends each row once per window."""

    def __init__(self, publisher: Sender, window: float = WINDOW) -> None:
        self.publisher = publisher
        self.window = window
        self._lock = threading.Lock()  # the held rows
        self._sending = threading.Lock()  # one window's sends at a time, in order
        self._rows: dict[str, _Row] = {}
        self._shapes: dict[Shape, tuple[str, str, dict[str, Any]]] = {}
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None
        self._partitions = catalogue.lookup(TOPIC).partitions
        publisher.before_flush.append(self.flush)

    def add(
        self, model: str, columns: Mapping[str, int], filters: Mapping[str, Any], extra: Any
    ) -> None:
        """Validate, then hold the increment (or send the held ones, if the window is over)."""
        key, name, flt, wire_extra = self._checked(model, columns, filters, extra)
        now = time.time()
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = _Row(key, name, flt)
            sums = row.columns
            for col, delta in columns.items():  # checked before any change
                total = sums.get(col, 0) + delta
                if not -_BIGINT < total < _BIGINT:
                    # Keep every sum exact: what the row holds goes first, then it
                    # starts again from this call.
                    self._send([self._rows.pop(key)])
                    row = self._rows[key] = _Row(key, name, flt)
                    sums = row.columns
                    break
            for col, delta in columns.items():
                sums[col] = sums.get(col, 0) + delta
            if wire_extra:
                row.extra = {**(row.extra or {}), **wire_extra}
            row.event_time_ms = int(now * 1000)
            row.count += 1
            due = now - self._last_flush >= self.window
            if not due and self._timer is None:
                self._timer = threading.Timer(self.window, self.flush)
                self._timer.daemon = True
                self._timer.start()
        if due:
            self.flush()

    def flush(self) -> None:
        """Send every held row now (before a publisher flush, a wait, an exit)."""
        # Encoding a window's rows takes a while: done outside ``_lock`` so that incr()
        # callers keep adding meanwhile; ``_sending`` keeps the sends in window order.
        with self._sending:
            with self._lock:
                self._last_flush = time.time()
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                rows, self._rows = list(self._rows.values()), {}
            if rows:
                self._send(rows)

    def _send(self, rows: list[_Row]) -> None:
        for batch in _batches(rows, self._partitions):
            first = batch[0]
            value = first.wire()
            value["more"] = _columns(batch[1:])
            count = sum(r.count for r in batch)

            def undelivered(err: Any, msg: Any, count: int = count, n: int = len(batch)) -> None:
                if err is not None:
                    log.error(
                        "client.incr.undelivered",
                        extra={"error": str(err), "key": msg.key(), "increments": count, "rows": n},
                    )

            self.publisher.send(TOPIC, value, key=first.key, on_delivery=undelivered)

    def _checked(
        self, model: str, columns: Mapping[str, int], filters: Mapping[str, Any], extra: Any
    ) -> tuple[str, str, dict[str, Any], dict[str, Any] | None]:
        """(row key, model, filters, wire extra) of a valid increment; else ``NotAllowed``.

        Calls without ``extra`` whose values are plain ints and strings are validated
        once per distinct shape (the same arguments always get the same verdict)."""
        shape: Shape | None = None
        if not extra and _plain(columns) and _plain(filters):
            shape = (model, tuple(columns.items()), tuple(filters.items()))
            hit = self._shapes.get(shape)
            if hit is not None:
                return (*hit, None)
        inc = check_increment(model, columns, filters, extra, False)
        checked = (inc.key, inc.model.name, dict(inc.filters))
        if shape is not None:
            if len(self._shapes) >= _CACHE_LIMIT:
                self._shapes.clear()
            self._shapes[shape] = checked
        return (*checked, dict(inc.extra) if inc.extra else None)


def partition_of(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random: CRC-32 of the
    key) gives a keyed message; tests/test_incr_coalesce.py checks it on the broker."""
    return zlib.crc32(key.encode()) % partitions


def _batches(rows: list[_Row], partitions: int) -> list[list[_Row]]:
    """Rows of one model and one partition per message, so that every row still
    travels on its own key's partition (the worker's one-row-one-partition order);
    bounded in rows and (roughly) bytes."""
    groups: dict[tuple[str, int], list[list[_Row]]] = {}
    sizes: dict[tuple[str, int], int] = {}
    for row in rows:
        at = (row.model, partition_of(row.key, partitions))
        size = row.size()
        chunks = groups.setdefault(at, [[]])
        if len(chunks[-1]) >= MAX_ROWS or sizes.get(at, 0) + size > MAX_BYTES:
            chunks.append([])
            sizes[at] = 0
        chunks[-1].append(row)
        sizes[at] = sizes.get(at, 0) + size
    return [chunk for chunks in groups.values() for chunk in chunks if chunk]


def _columns(rows: list[_Row]) -> dict[str, Any] | None:
    """``rows`` (one model) column by column, as a message's ``more`` (schema v2):
    arrays of plain longs encode and decode far faster than a record per row."""
    if not rows:
        return None
    counters = sorted({c for r in rows for c in r.columns})
    extras = [r.extra for r in rows]
    return {
        "filters": {f: [r.filters[f] for r in rows] for f in rows[0].filters},
        # 0 where a row does not increment a counter: adding 0 changes nothing.
        "columns": {c: [r.columns.get(c, 0) for r in rows] for c in counters},
        "extra": extras if any(extras) else [],
        "event_time": [r.event_time_ms for r in rows],
        "increments": [r.count for r in rows],
    }


def _plain(values: Any) -> bool:
    """A dict of plain ``int``/``str`` values (no bool, no subclass): safe to cache."""
    if type(values) is not dict:
        return False
    for v in values.values():  # noqa: SIM110 (a loop: no generator per call on the hot path)
        if type(v) is not int and type(v) is not str:
            return False
    return True


_ATTR = "_streams_incr_coalescer"
_for_lock = threading.Lock()


def default_coalescer(publisher: Any) -> IncrCoalescer:
    """The coalescer of ``publisher``, made with the default ``WINDOW`` if it has none."""
    found: IncrCoalescer | None = getattr(publisher, _ATTR, None)
    if found is not None:
        return found
    with _for_lock:
        found = getattr(publisher, _ATTR, None)
        if found is None:
            found = IncrCoalescer(publisher, WINDOW)
            setattr(publisher, _ATTR, found)
    return found


def coalescer_for(publisher: Any, window: float | None = None) -> IncrCoalescer | None:
    """The coalescer of ``publisher``; with ``window``, made (or re-timed) first; None
    if none was made yet (``incr()`` makes the default one on its first call)."""
    found: IncrCoalescer | None = getattr(publisher, _ATTR, None)
    if window is None:
        return found
    with _for_lock:
        found = getattr(publisher, _ATTR, None)
        if found is None:
            found = IncrCoalescer(publisher, window)
            setattr(publisher, _ATTR, found)
        found.window = window
    return found
