"""The gap check of direct consumers (streams/agents/wrapper/gaps.py), on its own: a
record past the next expected offset stops its partition and asks for it to be read
again; a gap filled by that read is reported as refetched; one still there after the
patience is accepted and reported. The real-broker cases are in test_direct.py and
tests/chaos/test_fetch_gaps.py."""

from __future__ import annotations

from typing import NamedTuple

from streams.agents.wrapper.gaps import Gap, Gaps


class Rec(NamedTuple):
    partition: int
    offset: int


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recs(partition: int, *offsets: int) -> list[Rec]:
    return [Rec(partition, o) for o in offsets]


def test_contiguous_records_pass_and_the_first_record_sets_the_baseline() -> None:
    gaps = Gaps(patience=1.0, clock=Clock())
    batch = recs(0, 7, 8, 9) + recs(1, 0, 1)
    out = gaps.screen(batch)
    assert out.kept == batch
    assert not out.seeks and not out.refetched and not out.accepted


def test_a_gap_stops_its_partition_only_and_the_refetch_that_fills_it_is_reported() -> None:
    gaps = Gaps(patience=1.0, clock=Clock())
    gaps.expect(0, 10)
    out = gaps.screen(recs(0, 10, 11, 15, 16) + recs(1, 3, 4))
    # Partition 0 stops before 15; 15 and 16 come again with the refetch from 12.
    assert out.kept == recs(0, 10, 11) + recs(1, 3, 4)
    assert out.seeks == {0: 12}
    again = gaps.screen(recs(0, 12, 13, 14, 15, 16))
    assert again.kept == recs(0, 12, 13, 14, 15, 16)
    assert again.refetched == [Gap(0, 12, 15)]
    assert not again.seeks and not again.accepted


def test_a_gap_still_there_after_the_patience_is_accepted_and_reading_goes_on() -> None:
    clock = Clock()
    gaps = Gaps(patience=1.0, clock=clock)
    gaps.expect(2, 0)
    for _ in range(3):
        out = gaps.screen(recs(2, 0, 1, 2, 4, 5)) if _ == 0 else gaps.screen(recs(2, 4, 5))
        assert out.seeks == {2: 3}
        clock.now += 0.4
    # 1.2 s after it was first seen: a record no fetch returns (a commit marker).
    out = gaps.screen(recs(2, 4, 5))
    assert out.kept == recs(2, 4, 5)
    assert out.accepted == [Gap(2, 3, 4)]
    assert not out.seeks
    # The next gap is a new one, with its own patience.
    out = gaps.screen(recs(2, 6, 9))
    assert out.kept == recs(2, 6) and out.seeks == {2: 7}


def test_a_rewind_or_a_new_assignment_resets_the_expected_offset() -> None:
    gaps = Gaps(patience=1.0, clock=Clock())
    gaps.screen(recs(0, 0, 1, 2, 3))
    gaps.expect(0, 1)  # a failed batch is read again from 1
    assert gaps.screen(recs(0, 1, 2, 3)).kept == recs(0, 1, 2, 3)
    gaps.forget(0)  # revoked; a later owner's commit may be anywhere
    assert gaps.screen(recs(0, 50, 51)).kept == recs(0, 50, 51)
    gaps.screen(recs(0, 60))  # a gap is opened for 52 ...
    gaps.forget(0)  # ... and forgotten with the partition
    gaps.expect(0, 60)
    assert gaps.screen(recs(0, 60)).refetched == []
