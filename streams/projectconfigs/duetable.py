"""The timer's view of the due windows: per-partition heaps, the index, and how they
are made durable.

``DueTable`` is the worker's ``DebounceState``. A window is durable in one of two ways:

- **held** (the direct consumer, ``entries=False``): a window remembers the offset of
  the request that opened it (``opened``), and ``holds`` gives each partition's
  oldest request whose window is not published yet. The request agent writes that
  offset to a topic of its own (``'held:<partition>'``) when a partition first holds one,
  before the batch is committed, and again as it moves forward; the next owner of the
  partition, after a crash or a rebalance, reads the requests again from there and
  opens the same windows. Nothing is written per window, and the group's commits (its
  lag) are as for any agent. A window published after its request, but within the
  replayed range, runs again (at least once, never lost). The entries below, a
  record and a tombstone per batch with every window's record in JSON, were about 7-10
  us of worker CPU per request at 100k projects (bench/README.md);
- **entries** (through Faust, ``entries=True``, where Faust commits the offsets): the
  windows a batch of requests opens on one partition are written as **one** changelog
  entry (a list of window records, under a key of its own) by a ``ChangelogSink``
  (librdkafka, batched) when the batch is decided (``seal``). The entry is deleted (a
  tombstone) once the last of its windows has been published. After a crash an entry
  comes back whole, so windows of it published before the crash run again. A
  partition handed over cleanly (``rewrite``) first writes its partly done entries
  again without their published windows, so the next owner runs each remaining
  window once.

A held table still reads entries (an older version wrote them, or the worker ran
through Faust before) and deletes each once its windows are published. Entries
written by a much older version (one record per window, keyed by the window) are read
as an entry of one window. The table object is duck-typed (a Faust ``Table`` in the
worker: its ``data`` dict, recovered from the changelog by Faust), so this module does
not import Faust.
"""

from __future__ import annotations

import bisect
import heapq
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, cast

from streams.projectconfigs.debounce import DueWork, PendingIndex

# A window's positional record (``DueWork.to_json``), as a tuple.
Record = tuple[str, int | None, int | None, str | None, str, float, float, int]
ENTRY_PREFIX = "windows:"  # entry keys: 'windows:<partition>:<random hex>'
HELD = ""  # the entry of a held window (durable through its request's offset)


class ChangelogSink(Protocol):
    def send(self, partition: int, key: str, value: Any) -> None:
        """Queue one changelog record (``value`` None: a tombstone)."""


def entry_records(raw: Any) -> list[Record]:
    """The window records of a table value: an entry (a list of records), or one record
    as an older version wrote it (positional, or named: a dict)."""
    if isinstance(raw, dict):
        return [_record(DueWork.from_json(raw))]
    if not isinstance(raw, (list, tuple)):  # not a window (a direct worker's hold): none
        return []
    if raw and isinstance(raw[0], str):
        return [_record(raw)]
    return [_record(r) for r in raw]


def _record(fields: Sequence[Any]) -> Record:
    return cast(Record, tuple(fields[:8]))


class DueTable:
    """Due windows by key, heaps of (due, key) per partition, and the pending index."""

    def __init__(self, table: Any, changelog: ChangelogSink, *, entries: bool = True) -> None:
        """``entries`` False: new windows are held (see the module docstring), and the
        caller names each one's request offset (``opened``)."""
        self.table = table
        self.changelog = changelog
        self.entries_written = entries
        self.pending = PendingIndex()
        self.heaps: dict[int, list[tuple[float, str]]] = {}
        self.running: set[str] = set()  # keys started and not yet removed
        # Window key -> (its record, its entry's key). The records are plain tuples:
        # once one survives a collection the garbage collector stops tracking it (a
        # dataclass or list is traversed by every full collection, and under backlog
        # the table holds a window per scope).
        self.windows: dict[str, tuple[Record, str]] = {}
        self.entries: dict[str, int] = {}  # entry key -> its windows not yet removed
        self._open: dict[int, tuple[str, list[Record]]] = {}  # partition -> unsealed entry
        # partition -> (request offset, window key) of held windows in offset order
        # (lazily cleaned from the front: a key no longer in ``windows`` is published).
        # Requests are decided in offset order, so a window is appended; only a batch
        # read again after a failure inserts (a heap cost a pop of log n per window).
        self.offsets: dict[int, deque[tuple[int, str]]] = {}
        self._added = (-1, "")  # (partition, key) of the last window added

    # -- DebounceState ----------------------------------------------------------------

    def pending_due(self, scope_key: str) -> float | None:
        return self.pending.due.get(scope_key)

    def started_due(self, scope_key: str) -> float | None:
        return self.pending.started.get(scope_key)

    def add_due(self, work: DueWork) -> None:
        """A new window; durable once ``seal`` has written its entry, or held from its
        request's offset (``opened``)."""
        key = work.key
        if key in self.running:
            # The same (scope, ms) is running: its removal must not take this one with it.
            work = work._replace(
                requested_at=work.requested_at + 0.001, due=work.due + 0.001, ident=""
            )
            key = work.key
        partition = work.partition
        record: Record = work[:8]  # a plain tuple: the fields without the key
        if self.entries_written:
            opened = self._open.get(partition)
            if opened is None:
                opened = self._open[partition] = (_entry_key(partition), [])
            opened[1].append(record)
            self._attach(key, record, opened[0])
        else:
            replaced = self.windows.get(key)
            self.windows[key] = (record, HELD)
            if replaced is not None and replaced[1]:  # it was in an entry: no longer
                self._detach(replaced[1], partition)
        heapq.heappush(self.heaps.setdefault(partition, []), (work.due, key))
        self.pending.add(work.scope_key, work.due)
        self._added = (partition, key)

    def opened(self, offset: int) -> None:
        """The window ``add_due`` just added was opened by the request at ``offset`` (of
        the window's partition): that request is not committed before it is published."""
        partition, key = self._added
        held = self.offsets.get(partition)
        if held is None:
            held = self.offsets[partition] = deque()
        if held and offset < held[-1][0]:  # a batch read again: keep the order
            bisect.insort(held, (offset, key))
        else:
            held.append((offset, key))

    def holds(self) -> dict[int, int]:
        """partition -> the offset of the oldest request whose held window is not published
        yet (the consumer commits no further); partitions with none are left out."""
        out: dict[int, int] = {}
        windows = self.windows
        for partition, held in self.offsets.items():
            while held and held[0][1] not in windows:
                held.popleft()
            if held:
                out[partition] = held[0][0]
        return out

    def seal(self) -> None:
        """Write an entry per partition for the windows added since the last ``seal`` (the
        caller flushes the changelog before the requests are acknowledged)."""
        if not self._open:
            return
        data, send = self.table.data, self.changelog.send
        for partition, (entry, records) in self._open.items():
            if entry not in self.entries:  # every window of it is gone already
                continue
            value = tuple(records)
            data[entry] = value
            send(partition, entry, value)
        self._open = {}

    def _attach(self, key: str, record: Record, entry: str) -> None:
        entries = self.entries
        replaced = self.windows.get(key)
        self.windows[key] = (record, entry)
        entries[entry] = entries.get(entry, 0) + 1
        if replaced is not None:  # the same window again: the newer entry holds it
            self._detach(replaced[1], record[7])

    def _detach(self, entry: str, partition: int) -> None:
        if not entry:  # held: nothing written
            return
        left = self.entries[entry] - 1
        if left:
            self.entries[entry] = left
            return
        del self.entries[entry]
        if self.table.data.pop(entry, None) is not None:
            self.changelog.send(partition, entry, None)

    # -- timer ------------------------------------------------------------------------

    def take(self, horizons: dict[int, float]) -> Iterator[DueWork]:
        """Pop the windows due at or before their partition's horizon, earliest first
        across the partitions (lazily: what the caller does not take stays queued).

        Earliest first, not partition by partition: under a backlog, a pass that took
        partition 0's windows first filled every batch from the lowest partitions, and
        the windows of the others waited until the backlog was gone (p99 27 s at 100k
        projects, with p50 2 s; bench/README.md)."""
        heaps, windows, running = self.heaps, self.windows, self.running
        frontier = [
            (heap[0][0], p)
            for p, horizon in horizons.items()
            if (heap := heaps.get(p)) and heap[0][0] <= horizon
        ]
        heapq.heapify(frontier)
        while frontier:
            partition = frontier[0][1]
            heap = heaps[partition]
            _, key = heapq.heappop(heap)
            if heap and heap[0][0] <= horizons[partition]:
                heapq.heapreplace(frontier, (heap[0][0], partition))
            else:
                heapq.heappop(frontier)
            item = windows.get(key)
            if item is None or key in running:
                continue  # published already, or a duplicate heap entry
            yield DueWork(*item[0], key)

    def next_due(self, partition: int) -> float | None:
        heap = self.heaps.get(partition)
        return heap[0][0] if heap else None

    def start(self, works: Iterable[DueWork]) -> None:
        """``works`` start now: they cover no request from here on."""
        works = list(works)
        self.running.update(w.key for w in works)
        self.pending.start(works)

    def requeue(self, work: DueWork, at: float) -> None:
        """Run ``work`` again at ``at`` (a retry); it stays started."""
        self.running.discard(work.key)
        heapq.heappush(self.heaps.setdefault(work.partition, []), (at, work.key))

    def remove(self, works: Iterable[DueWork]) -> None:
        """Published (or dead-lettered): forget ``works``, and durably so the entries
        whose windows are all gone."""
        windows, running, detach = self.windows, self.running, self._detach
        for w in works:
            key = w.key
            running.discard(key)
            item = windows.pop(key, None)
            if item is not None:
                detach(item[1], w.partition)

    def count(self, partitions: set[int]) -> int:
        """Windows waiting on ``partitions`` (heap entries may include stale keys)."""
        return sum(len(h) for p, h in self.heaps.items() if p in partitions)

    # -- partitions come and go --------------------------------------------------------

    def rewrite(self, partitions: set[int]) -> None:
        """Write the partly done entries of ``partitions`` again with only their windows
        not yet published (before the partitions are handed over, so the next owner
        runs each of those once, and no published one again)."""
        left: dict[str, list[Record]] = {}
        for record, entry in self.windows.values():
            if entry and record[7] in partitions:
                left.setdefault(entry, []).append(record)
        data, send = self.table.data, self.changelog.send
        for entry, records in left.items():
            raw = data.get(entry)
            if raw is not None and len(entry_records(raw)) != len(records):
                value = tuple(records)
                data[entry] = value
                send(records[0][7], entry, value)

    def drop(self, partitions: set[int]) -> None:
        """Forget the windows of ``partitions`` (handed over) and index what is left."""
        data = self.table.data
        for entry in [e for e, raw in data.items() if _partition(raw) in partitions]:
            del data[entry]
        for partition in partitions:
            self.offsets.pop(partition, None)
        self.rebuild()

    def rebuild(self) -> None:
        """After recovery: index everything the table holds, and the held windows of the
        partitions still owned; nothing is running."""
        held = [
            (key, record)
            for key, (record, entry) in self.windows.items()
            if not entry and record[7] in self.offsets
        ]
        self.heaps = {}
        self.pending.due = {}  # what this worker saw start stays known
        self.running = set()
        self.windows = {}
        self.entries = {}
        self._open = {}
        data = self.table.data
        for entry, raw in list(data.items()):
            records = entry_records(raw)
            if not records:
                del data[entry]
                continue
            if isinstance(raw, list):  # recovered from JSON: kept as tuples, as add_due
                data[entry] = tuple(records)
            for record in records:
                work = DueWork(*record)
                key = work.key
                self._attach(key, record, entry)
                self.heaps.setdefault(work.partition, []).append((work.due, key))
                self.pending.add(work.scope_key, work.due)
        for key, record in held:
            if key not in self.windows:  # an entry read meanwhile holds it: that one counts
                work = DueWork(*record, key)
                self.windows[key] = (record, HELD)
                self.heaps.setdefault(work.partition, []).append((work.due, key))
                self.pending.add(work.scope_key, work.due)
        for heap in self.heaps.values():
            heapq.heapify(heap)


def _entry_key(partition: int) -> str:
    # Random, never derived from offsets or windows: a replayed batch must not overwrite
    # an entry that still holds windows the replay skips (they are pending already).
    return f"{ENTRY_PREFIX}{partition}:{os.urandom(8).hex()}"


def _partition(raw: Sequence[Any] | dict[str, Any]) -> int:
    records = entry_records(raw)
    return int(records[0][7]) if records else -1
