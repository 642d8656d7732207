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
first row at the top level, the others column by column: in ``packed``, little-endian
int64 bytes, when the model's filters are all bigints and no row sets ``extra``
(schema v3: 8 bytes a value, packed and unpacked in C); else in ``more``, Avro arrays),
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
from streams.buffers.models import MODELS, Kind, check_increment
from streams.buffers.wire import pack

log = logging.getLogger(__name__)

TOPIC = "buffer-increments"
WINDOW = 0.02  # default seconds an increment may wait to be summed with others of its row
_CACHE_LIMIT = 100_000
_BIGINT = 2**62  # flush a row before its sum could leave PostgreSQL's bigint
MAX_ROWS = 1000  # rows per message
MAX_BYTES = 512 * 1024  # about; well below the broker's 1 MB message limit

Shape = tuple[str, tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]
# What a checked call shape resolves to: row key, model, filters, the key's partition.
Checked = tuple[str, str, dict[str, Any], int]
# Models whose further rows may go packed (every filter a bigint).
_PACKABLE = frozenset(
    name for name, spec in MODELS.items() if all(k is Kind.BIGINT for k in spec.filters.values())
)


class _Row:
    __slots__ = (
        "columns",
        "count",
        "event_time_ms",
        "extra",
        "filters",
        "key",
        "model",
        "partition",
    )

    def __init__(self, key: str, model: str, filters: dict[str, Any], partition: int) -> None:
        self.key = key
        self.model = model
        self.filters = filters
        self.partition = partition
        self.columns: dict[str, int] = {}
        self.extra: dict[str, Any] | None = None
        self.event_time_ms = 0
        self.count = 0

    def size(self) -> int:
        """About the bytes this row takes in a message (texts are what can be large)."""
        if not self.extra:
            return 64 + len(self.key)
        texts = sum(len(v) for v in self.extra.values() if isinstance(v, str))
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
        self._shapes: dict[Shape, Checked] = {}
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None
        self._partitions = catalogue.lookup(TOPIC).partitions
        publisher.before_flush.append(self.flush)

    def add(
        self, model: str, columns: Mapping[str, int], filters: Mapping[str, Any], extra: Any
    ) -> None:
        """Validate, then hold the increment (or send the held ones, if the window is over)."""
        (key, name, flt, partition), wire_extra = self._checked(model, columns, filters, extra)
        now = time.time()
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                # A row's first call in the window (most calls, when rows outnumber them).
                row = self._rows[key] = _Row(key, name, flt, partition)
                row.columns = dict(columns)
                if wire_extra:
                    row.extra = wire_extra
                row.event_time_ms = int(now * 1000)
                row.count = 1
                due = now - self._last_flush >= self.window
                if not due and self._timer is None:
                    self._start_timer()
            else:
                due = self._add_to(row, columns, wire_extra, now)
        if due:
            self.flush()

    def _start_timer(self) -> None:
        self._timer = threading.Timer(self.window, self.flush)
        self._timer.daemon = True
        self._timer.start()

    def _add_to(
        self, row: _Row, columns: Mapping[str, int], wire_extra: dict[str, Any] | None, now: float
    ) -> bool:
        """Sum a call into the row it holds (under ``_lock``); whether the window is over."""
        sums = row.columns
        for col, delta in columns.items():  # checked before any change
            total = sums.get(col, 0) + delta
            if not -_BIGINT < total < _BIGINT:
                # Keep every sum exact: what the row holds goes first, then it starts
                # again from this call.
                self._send([self._rows.pop(row.key)])
                row = self._rows[row.key] = _Row(row.key, row.model, row.filters, row.partition)
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
            self._start_timer()
        return due

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
            value.update(_columns(batch[1:]))
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
    ) -> tuple[Checked, dict[str, Any] | None]:
        """((row key, model, filters, partition), wire extra) of a valid increment; else
        ``NotAllowed``.

        Calls without ``extra`` whose values are plain ints and strings are validated
        once per distinct shape (the same arguments always get the same verdict)."""
        shape: Shape | None = None
        if not extra and _plain(columns) and _plain(filters):
            shape = (model, tuple(columns.items()), tuple(filters.items()))
            hit = self._shapes.get(shape)
            if hit is not None:
                return hit, None
        inc = check_increment(model, columns, filters, extra, False)
        key = inc.key
        checked = (key, inc.model.name, dict(inc.filters), partition_of(key, self._partitions))
        if shape is not None:
            if len(self._shapes) >= _CACHE_LIMIT:
                self._shapes.clear()
            self._shapes[shape] = checked
        return checked, dict(inc.extra) if inc.extra else None


def partition_of(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random: CRC-32 of the
    key) gives a keyed message; tests/test_incr_coalesce.py checks it on the broker."""
    return zlib.crc32(key.encode()) % partitions


def _batches(rows: list[_Row], partitions: int) -> list[list[_Row]]:
    """Rows of one model and one partition per message, so that every row still
    travels on its own key's partition (the worker's one-row-one-partition order);
    bounded in rows and (roughly) bytes."""
    groups: dict[tuple[str, int], list[_Row]] = {}
    for row in rows:
        at = (row.model, row.partition)
        group = groups.get(at)
        if group is None:
            groups[at] = [row]
        else:
            group.append(row)
    out: list[list[_Row]] = []
    for group in groups.values():
        if any(row.extra for row in group):  # texts can be large: bounded in bytes too
            out.extend(_chunks(group))
        else:  # about 100 bytes a row: MAX_ROWS binds first
            out.extend(group[i : i + MAX_ROWS] for i in range(0, len(group), MAX_ROWS))
    return out


def _chunks(rows: list[_Row]) -> list[list[_Row]]:
    """``rows`` in chunks of at most MAX_ROWS rows and (about) MAX_BYTES."""
    chunks: list[list[_Row]] = [[]]
    size = 0
    for row in rows:
        n = row.size()
        if len(chunks[-1]) >= MAX_ROWS or (chunks[-1] and size + n > MAX_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += n
    return chunks


def _columns(rows: list[_Row]) -> dict[str, Any]:
    """``rows`` (one model) column by column: ``packed`` (schema v3, int64 bytes) when
    the model's filters are bigints and no row sets ``extra``, else ``more`` (v2, Avro
    arrays); both far faster to encode and decode than a record per row."""
    if not rows:
        return {"more": None, "packed": None}
    counters = sorted({c for r in rows for c in r.columns})
    extras = [r.extra for r in rows]
    if rows[0].model in _PACKABLE and not any(extras):
        return {
            "more": None,
            "packed": {
                "filters": {f: pack([r.filters[f] for r in rows]) for f in rows[0].filters},
                # 0 where a row does not increment a counter: adding 0 changes nothing.
                "columns": {c: pack([r.columns.get(c, 0) for r in rows]) for c in counters},
                "event_time": pack([r.event_time_ms for r in rows]),
                "increments": pack([r.count for r in rows]),
            },
        }
    return {
        "more": {
            "filters": {f: [r.filters[f] for r in rows] for f in rows[0].filters},
            "columns": {c: [r.columns.get(c, 0) for r in rows] for c in counters},
            "extra": extras if any(extras) else [],
            "event_time": [r.event_time_ms for r in rows],
            "increments": [r.count for r in rows],
        },
        "packed": None,
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
