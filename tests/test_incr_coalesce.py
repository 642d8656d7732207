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

from streams.buffers.models import NotAllowed
from streams.client import incr
from streams.incr_coalesce import IncrCoalescer
from streams.publisher import Publisher
from streams.settings import Settings
from tests.buffers import support as s


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
    rows = {v["filters"]["id"]: v for _, v, _ in pub.sent[1:]}
    assert {i: v["columns"]["times_seen"] for i, v in rows.items()} == {1: 668, 2: 667, 3: 666}
    assert rows[2]["extra"] == {"last_seen": int(seen.timestamp() * 1000)}
    assert rows[1]["extra"] is None
    assert sum(v["columns"]["times_seen"] for _, v, _ in pub.sent) == 1 + 2000 + 1
    assert [v["increments"] for _, v, _ in pub.sent] == [1, 334, 334, 333]  # calls summed
    assert {k for _, _, k in pub.sent[1:]} == {
        'issue_group:{"id":1}',
        'issue_group:{"id":2}',
        'issue_group:{"id":3}',
    }


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
    sums = [v["columns"]["times_seen"] for _, v, _ in pub.sent if v["filters"]["id"] == 9]
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
    values = [v for _, v, _ in s.read_topic(settings, "buffer-increments")]
    assert len(values) < 3000 / 10
    assert sum(v["increments"] for v in values) == 3003
    by_row: dict[int, list[dict[str, Any]]] = {}
    for v in values:
        by_row.setdefault(v["filters"]["id"], []).append(v)
    totals = {i: sum(v["columns"]["times_seen"] for v in vs) for i, vs in by_row.items()}
    assert totals == {1: 1500 + 100, 2: 1500 + 1, 3: 1500 + 1}
    assert by_row[1][-1]["signal_only"] and by_row[1][-1]["increments"] == 1
    assert [v["signal_only"] for v in by_row[1][:-1]] == [False] * (len(by_row[1]) - 1)
    assert by_row[2][-1]["columns"] == {"times_seen": 1} and by_row[2][-1]["increments"] == 1
