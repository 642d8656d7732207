"""The gate: a due window waits for its partition's earlier requests to be read."""

from __future__ import annotations

from streams.projectconfigs.gate import PartitionGate

NOW = 1_700_000_000.0


def test_a_partition_read_to_its_end_starts_what_has_been_due_for_a_moment() -> None:
    gate = PartitionGate(lambda p: 10, settle=0.05)
    gate.decided(0, 9, NOW - 30, NOW)  # behind in request time, but nothing left to read
    # A request made just before now may still be on its way to the broker.
    assert gate.horizon(0, NOW) == NOW - 0.05
    gate.decided(0, 9, NOW - 0.01, NOW)  # a request made after a window's due time
    assert gate.horizon(0, NOW) == NOW - 0.01


def test_a_partition_with_unread_requests_waits_for_its_request_clock() -> None:
    gate = PartitionGate(lambda p: 1_000)
    gate.decided(0, 9, NOW - 30, NOW)
    assert gate.horizon(0, NOW) == NOW - 30
    gate.decided(0, 500, NOW - 2, NOW + 0.1)
    assert gate.horizon(0, NOW + 0.1) == NOW - 2


def test_an_idle_worker_or_an_unknown_end_does_not_hold_anything() -> None:
    gate = PartitionGate(lambda p: 1_000, idle=3.0)
    gate.decided(0, 9, NOW - 30, NOW)
    assert gate.horizon(0, NOW + 1.5) == NOW - 30  # still reading
    gate.decided(1, 5, NOW + 2, NOW + 2)  # busy on another partition: partition 0 waits
    assert gate.horizon(0, NOW + 4.0) == NOW - 30
    assert gate.horizon(0, NOW + 5.5) == NOW + 5.5  # nothing decided anywhere for 3 s
    assert gate.horizon(2, NOW) == NOW  # never read since start
    assert PartitionGate(lambda p: None).horizon(0, NOW) == NOW
