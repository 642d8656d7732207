"""The debounce rule on a dict-backed state: what is skipped, what is scheduled, and when."""

from __future__ import annotations

import random

from streams.projectconfigs.debounce import Decision, DueWork, MemoryState, Request, fold, offer
from streams.projectconfigs.scopes import Scope, ScopeKind

T0 = 1_700_000_001.0

ORG = Scope(ScopeKind.ORGANIZATION, organization_id=1)
PROJECT = Scope(ScopeKind.PROJECT, organization_id=1, project_id=10)
OTHER_PROJECT = Scope(ScopeKind.PROJECT, organization_id=1, project_id=11)
KEY = Scope(ScopeKind.PUBLIC_KEY, organization_id=1, project_id=10, public_key="abc")


def ask(state: MemoryState, scope: Scope, at: float, countdown: float = 5.0) -> Decision:
    return offer(state, Request(scope, "test", countdown, at), partition=0)


def test_requests_within_the_countdown_schedule_one_recompute() -> None:
    state = MemoryState()
    decisions = [ask(state, PROJECT, T0 + i * 0.004) for i in range(1000)]
    assert sum(d.scheduled for d in decisions) == 1
    assert {d.reason for d in decisions[1:]} == {"pending_project"}
    (work,) = state.due.values()
    assert (work.requested_at, work.due) == (T0, T0 + 5.0)


def test_the_countdown_window_is_anchored_at_the_first_request() -> None:
    state = MemoryState()
    assert ask(state, PROJECT, T0 + 3.0).scheduled
    assert not ask(state, PROJECT, T0 + 7.5).scheduled


def test_a_request_at_or_after_the_due_time_opens_a_new_window() -> None:
    """The recompute starts at its due time: a request made then is not covered by it."""
    state = MemoryState()
    assert ask(state, PROJECT, T0).scheduled
    assert not ask(state, PROJECT, T0 + 4.99).scheduled
    second = ask(state, PROJECT, T0 + 5.0)
    assert second.scheduled and second.work is not None
    assert second.work.due == T0 + 10.0
    assert len(state.due) == 2


def test_a_started_recompute_covers_nothing_whatever_the_request_time_says() -> None:
    """Pending ends when the recompute starts, not when the producer's clock says so."""
    state = MemoryState()
    first = ask(state, PROJECT, T0)
    assert first.work is not None
    state.start([first.work], now=T0 + 5.0)
    late = ask(state, PROJECT, T0 + 1.0)  # made "before" the due time by its own clock
    assert late.scheduled and late.work is not None
    # A late window: due when the started one was, so it runs at once, and it covers
    # only what the started window covered.
    assert (late.reason, late.work.due) == ("project_late", T0 + 5.0)
    assert not ask(state, PROJECT, T0 + 2.0).scheduled
    after = ask(state, PROJECT, T0 + 5.0)
    assert after.reason == "project" and after.work is not None
    assert after.work.due == T0 + 10.0


def test_a_started_organization_makes_its_projects_late_too() -> None:
    state = MemoryState()
    org = ask(state, ORG, T0)
    assert org.work is not None
    state.start([org.work], now=T0 + 5.0)
    late = ask(state, KEY, T0 + 1.0)
    assert late.reason == "public_key_late" and late.work is not None
    assert late.work.due == T0 + 5.0


def test_started_windows_are_forgotten_after_a_while() -> None:
    state = MemoryState()
    state.pending.keep_started = 60.0
    first = ask(state, PROJECT, T0)
    assert first.work is not None
    state.start([first.work], now=T0 + 5.0)
    state.start([], now=T0 + 66.0)
    assert state.started_due(PROJECT.key) is None
    late = ask(state, PROJECT, T0 + 1.0)  # an ordinary window now: later, never lost
    assert late.reason == "project" and late.work is not None


def test_starting_an_earlier_window_leaves_a_later_one_pending() -> None:
    state = MemoryState()
    first = ask(state, PROJECT, T0)
    second = ask(state, PROJECT, T0 + 5.0)
    assert first.work is not None and second.work is not None
    state.start([first.work])
    assert not ask(state, PROJECT, T0 + 6.0).scheduled  # the second window still pends


def test_a_pending_organization_covers_its_projects_and_keys_not_the_reverse() -> None:
    state = MemoryState()
    assert ask(state, ORG, T0).scheduled
    assert ask(state, PROJECT, T0 + 1).reason == "pending_organization"
    assert ask(state, KEY, T0 + 1).reason == "pending_organization"

    state = MemoryState()
    assert ask(state, PROJECT, T0).scheduled
    assert ask(state, KEY, T0 + 1).reason == "pending_project"
    assert ask(state, OTHER_PROJECT, T0 + 1).scheduled
    assert ask(state, ORG, T0 + 1).scheduled  # a project does not cover its organization


def test_a_replayed_request_is_skipped_and_writes_nothing() -> None:
    state = MemoryState()
    first = ask(state, PROJECT, T0)
    assert not ask(state, PROJECT, T0).scheduled
    assert first.work is not None and list(state.due) == [first.work.key]


def test_a_zero_countdown_covers_nothing() -> None:
    state = MemoryState()
    assert ask(state, PROJECT, T0, countdown=0).scheduled
    assert ask(state, PROJECT, T0 + 0.001, countdown=0).scheduled


def test_a_long_countdown_covers_its_whole_window() -> None:
    state = MemoryState()
    assert ask(state, PROJECT, T0, countdown=3600).scheduled
    assert not ask(state, PROJECT, T0 + 3599, countdown=3600).scheduled
    assert ask(state, PROJECT, T0 + 3600, countdown=3600).scheduled


def test_out_of_order_requests_are_skipped_only_when_the_recompute_starts_after_them() -> None:
    state = MemoryState()
    assert ask(state, PROJECT, T0 + 2).scheduled  # due at T0 + 7
    assert not ask(state, PROJECT, T0 + 1).scheduled  # made earlier: still covered


def reference_count(times: list[float], countdown: float) -> int:
    """Distinct countdown windows, each opened by the first request not inside one."""
    count, end = 0, float("-inf")
    for t in sorted(times):
        if t >= end:
            count, end = count + 1, t + countdown
    return count


def test_recomputes_equal_distinct_scope_and_countdown_window_pairs() -> None:
    rng = random.Random(7)
    state = MemoryState()
    times: dict[int, list[float]] = {p: [] for p in range(50)}
    requests = sorted((T0 + rng.uniform(0, 60), rng.randrange(50)) for _ in range(5000))
    scheduled = 0
    for at, project in requests:
        times[project].append(at)
        scope = Scope(ScopeKind.PROJECT, organization_id=1, project_id=project)
        scheduled += ask(state, scope, at).scheduled
    assert scheduled == sum(reference_count(ts, 5.0) for ts in times.values())


def test_windows_due_together_fold_into_one_recompute_per_scope() -> None:
    state = MemoryState()
    for at in (T0, T0 + 5, T0 + 10):  # three windows of one project, none started
        assert ask(state, PROJECT, at).scheduled
    assert ask(state, OTHER_PROJECT, T0).scheduled
    latest, folded = fold(state.due.values())
    assert folded == 2
    assert sorted((w.scope_key, w.due) for w in latest) == [("p:10", T0 + 15), ("p:11", T0 + 5)]


def test_due_work_round_trips_and_keys_by_scope_and_window_start() -> None:
    work = DueWork("public_key", 1, 10, "abc", "test", T0 + 0.0004, T0 + 5, 3)
    assert DueWork.from_json(work.to_json()) == work
    named = work._asdict()
    assert DueWork.from_json(named) == work  # records written before 0.x
    assert work.key == f"k:abc@{round((T0 + 0.0004) * 1000)}"
    assert work.scope == KEY and work.scope_key == KEY.key


def test_changelog_records_are_the_json_that_json_dumps_writes() -> None:
    """The due record written directly must be what Faust's JSON serializer (and an
    older worker) reads: json.dumps's bytes, for every field type and odd text."""
    import json
    import random

    from streams.projectconfigs.debounce import DueWork, record_json

    rng = random.Random(3)
    texts = ["", "plain", 'quo"te', "back\\slash", "tab\tnew\nline", "é ünï", "\u2028", "\x00"]
    for _ in range(2_000):
        work = DueWork(
            rng.choice(["organization", "project", "key"]),
            rng.choice([None, 0, 1, 2**40, -3]),
            rng.choice([None, 7, 2**62]),
            rng.choice([None, "abc123", *texts]),
            rng.choice(texts),
            rng.choice([1_764_523_456.123456, 0.1, 1e22, 5e-324, 1_700_000_000.0]),
            rng.uniform(0, 2e9),
            rng.randrange(64),
        )
        assert work.encode() == json.dumps(work.to_json()).encode()
        assert DueWork.from_json(json.loads(work.encode())) == work
    odd: list[object] = [
        ["project", True, 1, None, "t", 1.0, 2.0, 3],  # a bool is not an int here
        ["project", 1, 1, None, "t", float("nan"), 2.0, 3],
        ["project", 1, 1, None, "t", 1, 2, 3],  # ints where floats belong
        ["too", "short"],
        {"a": 1},
        "text",
    ]
    for value in odd:
        assert record_json(value) == json.dumps(value).encode()


def test_a_window_that_carries_its_key_answers_as_one_that_computes_it() -> None:
    """``offer`` and the due table set ``ident``; a key scope's key may hold an '@'."""
    work = DueWork("public_key", 1, 10, "a@b", "test", T0 + 0.0004, T0 + 5, 3)
    keyed = work._replace(ident=work.key)
    assert keyed.key == work.key == f"k:a@b@{round((T0 + 0.0004) * 1000)}"
    assert keyed.scope_key == work.scope_key == "k:a@b"
    assert keyed.to_json() == work.to_json()  # the record does not carry it
