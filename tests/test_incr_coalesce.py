"""incr() increments summed per row in the client (streams/incr_coalesce.py): one
message per row per window with the exact sum and the latest extra columns; the first
increment after a quiet window goes at once; a bad call raises before anything is
held; a flush sends everything held. End to end (exact totals, kill -9 of the worker)
in tests/agents/test_buffers.py, which goes through incr()."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from streams import catalogue
from streams.buffers.models import NotAllowed
from streams.buffers.wire import more_rows, read_rows, unpack
from streams.client import incr
from streams.incr_coalesce import MAX_ROWS, IncrCoalescer, partition_of
from streams.publisher import Publisher
from streams.settings import Settings
from tests.buffers import support as s

PARTITIONS = catalogue.lookup("buffer-increments").partitions


class FakePublisher:
    def __init__(self) -> None:
        self.before_flush: list[Callable[[], None]] = []
        self.sent: list[tuple[str, dict[str, Any], str]] = []

    def send(
        self, topic: str, value: Any, *, key: str, on_delivery: Callable[[Any, Any], None]
    ) -> None:
        self.sent.append((topic, value, key))

    def flush(self) -> None:
        for hook in self.before_flush:
            hook()


def test_a_window_of_increments_is_one_message_per_row_with_the_exact_sum() -> None:
    pub = FakePublisher()
    c = IncrCoalescer(pub, window=60.0)
    c.add("issue_group", {"times_seen": 1}, {"id": 1}, None)
    assert len(pub.sent) == 1  # the first after a quiet window: at once
    seen = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for n in range(1000):
        c.add("issue_group", {"times_seen": 2}, {"id": 1 + n % 3}, None)
    c.add("issue_group", {"times_seen": 1}, {"id": 2}, {"last_seen": seen})
    assert len(pub.sent) == 1  # held: the window is not over
    pub.flush()
    rows = {v["filters"]["id"]: v for v in sent_rows(pub.sent[1:])}
    assert {i: v["columns"]["times_seen"] for i, v in rows.items()} == {1: 668, 2: 667, 3: 666}
    assert rows[2]["extra"] == {"last_seen": int(seen.timestamp() * 1000)}
    assert rows[1]["extra"] is None
    assert sum(v["columns"]["times_seen"] for v in sent_rows(pub.sent)) == 1 + 2000 + 1
    assert {i: v["increments"] for i, v in rows.items()} == {1: 334, 2: 334, 3: 333}
    # Each row rides on its own key's partition, with the rows of that partition.
    for _, v, key in pub.sent:
        part = partition_of(key, PARTITIONS)
        for r in rows_of(v):
            assert partition_of(f'issue_group:{{"id":{r["filters"]["id"]}}}', PARTITIONS) == part


def rows_of(value: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of a message: the top-level one, then those in ``more`` or ``packed``."""
    more = value.get("more") or (unpack(value["packed"]) if value.get("packed") else None)
    return [value, *(more_rows(more) if more else [])]


def sent_rows(sent: list[tuple[str, dict[str, Any], str]]) -> list[dict[str, Any]]:
    """Every row of the sent messages."""
    return [r for _, v, _ in sent for r in rows_of(v)]


def test_thousands_of_rows_in_a_window_are_a_few_messages_per_partition() -> None:
    pub = FakePublisher()
    c = IncrCoalescer(pub, window=60.0)
    for n in range(5001):
        c.add("issue_group", {"times_seen": 1}, {"id": n}, {"culprit": "x" * (n % 100)})
    pub.flush()
    assert len(pub.sent) <= 1 + 2 * PARTITIONS + 5000 // MAX_ROWS
    ids = sorted(r["filters"]["id"] for r in sent_rows(pub.sent))
    assert ids == list(range(5001))


def test_plain_rows_go_packed_and_rows_that_set_extra_go_as_arrays() -> None:
    """What the worker reads back from each form: the same rows, the same sums."""
    pub = FakePublisher()
    c = IncrCoalescer(pub, window=60.0)
    c.add("issue_group", {"times_seen": 1}, {"id": 0}, None)
    for n in range(3000):
        c.add("issue_group", {"times_seen": 1, "num_comments": n % 2}, {"id": n % 1000}, None)
    pub.flush()
    packed = [v for _, v, _ in pub.sent if v.get("packed")]
    assert packed and not any(v.get("more") for _, v, _ in pub.sent)
    assert all(len(v["packed"]["increments"]) % 8 == 0 for v in packed)
    totals: dict[int, int] = {}
    for _, v, _ in pub.sent[1:]:
        rows, plain = read_rows(v)
        assert plain is not None or not v.get("packed")  # read column by column
        for inc in [*rows, *(plain.increments() if plain else [])]:
            ((_, i),) = inc.filters
            totals[int(i)] = totals.get(int(i), 0) + inc.columns["times_seen"]
    assert totals == {i: 3 for i in range(1000)}

    seen = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    c.add("issue_group", {"times_seen": 1}, {"id": 1}, None)
    for n in range(200):
        c.add("issue_group", {"times_seen": 1}, {"id": n}, {"last_seen": seen})
    pub.flush()
    assert any(v.get("more") for _, v, _ in pub.sent[-PARTITIONS:])


@pytest.mark.parametrize("huge", [False, True])
def test_random_calls_arrive_as_exact_sums_whatever_form_each_row_was_held_in(huge: bool) -> None:
    """Rows held column by column, rows that set ``extra`` (a row can move from the
    first form to the second within a window), sums sent early to stay inside bigint,
    and flushes at random: every row's sums and call counts arrive exactly, each row at
    most once per window, and every message reads back."""
    import random

    rng = random.Random(7)
    pub = FakePublisher()
    c = IncrCoalescer(pub, window=60.0)
    expected: dict[int, dict[str, int]] = {}
    calls: dict[int, int] = {}
    windows = []
    for _ in range(40):
        before = len(pub.sent)
        for _ in range(rng.randrange(1, 200)):
            gid = rng.randrange(30)
            cols = {
                c: rng.choice([1, 2, -1, 2**61] if huge else [1, 2, -1])
                for c in rng.sample(["times_seen", "num_comments"], rng.randint(1, 2))
            }
            extra = {"level": rng.choice(["a", "b"])} if rng.random() < 0.1 else None
            c.add("issue_group", cols, {"id": gid}, extra)
            for col, delta in cols.items():
                expected.setdefault(gid, {}).setdefault(col, 0)
                expected[gid][col] += delta
            calls[gid] = calls.get(gid, 0) + 1
        pub.flush()
        windows.append(pub.sent[before:])
    got: dict[int, dict[str, int]] = {}
    got_calls: dict[int, int] = {}
    for _, value, _ in pub.sent:
        rows, plain = read_rows(value)  # what the worker reads: checked, so in bigint
        for inc in [*rows, *(plain.increments() if plain else [])]:
            ((_, rid),) = inc.filters
            for col, delta in inc.columns.items():
                got.setdefault(int(rid), {}).setdefault(col, 0)
                got[int(rid)][col] += delta
            got_calls[int(rid)] = got_calls.get(int(rid), 0) + inc.count
    nonzero = {g: {k: v for k, v in cols.items() if v} for g, cols in got.items()}
    assert nonzero == {g: {k: v for k, v in cols.items() if v} for g, cols in expected.items()}
    assert got_calls == calls
    if not huge:  # no sum sent early: a row is in one message per window
        windows[0] = windows[0][1:]  # (the very first call went at once)
        for sent in windows:
            ids = [r["filters"]["id"] for r in sent_rows(sent)]
            assert len(ids) == len(set(ids))


def test_bad_calls_raise_before_anything_is_held() -> None:
    pub = FakePublisher()
    c = IncrCoalescer(pub, window=60.0)
    c.add("issue_group", {"times_seen": 1}, {"id": 1}, None)
    for bad in ({"id": True}, {"id": "x" * 10_000}, {"nope": 1}):
        with pytest.raises((NotAllowed, TypeError)):
            c.add("issue_group", {"times_seen": 1}, bad, None)
    with pytest.raises(NotAllowed):
        c.add("issue_group", {"not_a_counter": 1}, {"id": 1}, None)
    with pytest.raises(NotAllowed):  # a cached shape with a bool value is checked again
        c.add("issue_group", {"times_seen": True}, {"id": 1}, None)
    pub.flush()
    assert len(pub.sent) == 1


def test_a_sum_that_would_leave_bigint_is_sent_in_two_messages() -> None:
    pub = FakePublisher()
    c = IncrCoalescer(pub, window=60.0)
    c.add("issue_group", {"times_seen": 1}, {"id": 1}, None)
    big = 2**62 - 10
    c.add("issue_group", {"times_seen": big}, {"id": 9}, None)
    c.add("issue_group", {"times_seen": big}, {"id": 9}, None)
    pub.flush()
    sums = [v["columns"]["times_seen"] for v in sent_rows(pub.sent) if v["filters"]["id"] == 9]
    assert sums == [big, big]


def test_incr_sums_by_default_and_keeps_each_rows_order_with_unbatched_calls(
    settings: Settings, publisher: Publisher
) -> None:
    """A user's view: 3,000 quick incr() calls reach the topic as far fewer messages
    with the same totals and call counts; wait=True and signal_only are sent as they
    are, after what was held for their row."""
    with s.client_publisher(publisher):
        for n in range(3000):
            incr("issue_group", {"times_seen": 1 + n % 2}, {"id": 1 + n % 3})
        incr("issue_group", {"times_seen": 100}, {"id": 1}, signal_only=True)
        incr("issue_group", {"times_seen": 1}, {"id": 2}, wait=True)
        incr("issue_group", {"times_seen": 1}, {"id": 3})
        publisher.flush()
    messages = [v for _, v, _ in s.read_topic(settings, "buffer-increments")]
    assert len(messages) < 3000 / 10
    values = [{**r, "signal_only": v["signal_only"]} for v in messages for r in rows_of(v)]
    assert sum(v["increments"] for v in values) == 3003
    by_row: dict[int, list[dict[str, Any]]] = {}
    for v in values:
        by_row.setdefault(v["filters"]["id"], []).append(v)
    totals = {i: sum(v["columns"]["times_seen"] for v in vs) for i, vs in by_row.items()}
    assert totals == {1: 1500 + 100, 2: 1500 + 1, 3: 1500 + 1}
    assert by_row[1][-1]["signal_only"] and by_row[1][-1]["increments"] == 1
    assert [v["signal_only"] for v in by_row[1][:-1]] == [False] * (len(by_row[1]) - 1)
    assert by_row[2][-1]["columns"] == {"times_seen": 1} and by_row[2][-1]["increments"] == 1


def test_rows_are_grouped_by_the_partition_the_producer_gives_their_key(
    settings: Settings, publisher: Publisher
) -> None:
    got: dict[str, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None
        got[msg.key().decode()] = msg.partition()

    keys = [f'issue_group:{{"id":{n}}}' for n in range(200)] + ["é", "k" * 300]
    value = {
        "model": "issue_group",
        "filters": {"id": 1},
        "columns": {"times_seen": 1},
        "event_time": 0,
    }
    for key in keys:
        publisher.send("buffer-increments", value, key=key, on_delivery=delivered)
    publisher.flush()
    assert got == {key: partition_of(key, PARTITIONS) for key in keys}
