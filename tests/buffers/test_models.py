"""The allow-list: what incr() accepts, what it refuses (TypeError), the wire form."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from streams.avro.codec import build_codec
from streams.avro.store import default_store
from streams.buffers.models import NotAllowed, check_increment
from streams.buffers.wire import from_wire

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)


class Group:  # a model object, as an old caller would pass it
    objects = None
    id = 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("auth_user", {"times_seen": 1}, {"id": 1}), "not allow-listed"),
        ((Group, {"times_seen": 1}, {"id": 1}), "allow-listed name"),
        (("issue_group", {"title": 1}, {"id": 1}), "'title' is not an allow-listed counter"),
        (("issue_group", {}, {"id": 1}), "nothing to increment"),
        (("issue_group", {"times_seen": True}, {"id": 1}), "expected int, got bool"),
        (("issue_group", {"times_seen": 1.5}, {"id": 1}), "expected int, got float"),
        (("issue_group", {"times_seen": 2**63}, {"id": 1}), "does not fit"),
        (("issue_group", {"times_seen": 1}, {"project_id": 1}), "filters must be exactly"),
        (("issue_group", {"times_seen": 1}, {"id": 1, "status": 0}), "filters must be exactly"),
        (("issue_group", {"times_seen": 1}, {"id": "1"}), "expected int, got str"),
        (("issue_group", {"times_seen": 1}, {"id": Group()}), "expected int, got Group"),
        (("issue_group", {"times_seen": 1}, [("id", 1)]), "filters must be a dict"),
        (("issue_group", {"times_seen": 1}, {"id": 1}, {"title": "x"}), "'title' is not allow"),
        (("issue_group", {"times_seen": 1}, {"id": 1}, {"last_seen": 5}), "aware datetime"),
        (
            ("issue_group", {"times_seen": 1}, {"id": 1}, {"last_seen": dt.datetime(2025, 1, 1)}),
            "naive datetime",
        ),
        (("issue_group", {"times_seen": 1}, {"id": 1}, {"status": 1 << 20}), "smallint"),
        (("issue_group", {"times_seen": 1}, {"id": 1}, {"level": None}), "expected str"),
        (("issue_group", {"times_seen": 1}, {"id": 1}, None, "yes"), "signal_only"),
    ],
)
def test_outside_the_allow_list_is_a_type_error(args: tuple[Any, ...], needle: str) -> None:
    with pytest.raises(TypeError, match=needle) as info:
        check_increment(*args)
    assert isinstance(info.value, NotAllowed)


def test_a_valid_increment_fits_the_topic_schema_and_reads_back_the_same() -> None:
    inc = check_increment(
        "issue_group",
        {"times_seen": 2, "num_comments": -1},
        {"id": 42},
        {"last_seen": NOW, "level": "warning"},
        event_time_ms=1_000,
    )
    assert inc.key == 'issue_group:{"id":42}'
    assert inc.extra == {"last_seen": 1735787045678, "level": "warning"}
    codec = build_codec(default_store(), None)
    back = from_wire(
        codec.decode("buffer-increments", codec.encode("buffer-increments", inc.to_wire()))
    )
    assert back == inc


def test_the_agent_refuses_a_wire_value_outside_the_allow_list() -> None:
    value = {
        "model": "issue_group",
        "filters": {"id": 1},
        "columns": {"times_seen); DROP TABLE issue_group; --": 1},
        "extra": None,
        "signal_only": False,
        "event_time": 0,
    }
    with pytest.raises(NotAllowed, match="not an allow-listed counter"):
        from_wire(value)


def test_a_lone_surrogate_in_extra_is_a_type_error_before_anything_is_sent() -> None:
    from streams.client import incr

    # Before: UnicodeEncodeError from the encoder, not the documented TypeError.
    with pytest.raises(TypeError, match="not valid Unicode"):
        incr("issue_group", {"times_seen": 1}, {"id": 1}, {"level": "err\ud800or"})
    inc = check_increment("issue_group", {"times_seen": 1}, {"id": 1}, {"level": "erreur ✓"})
    assert inc.extra == {"level": "erreur ✓"}


def summed_message(**fields: Any) -> dict[str, Any]:
    """A decoded v2/v3 message whose top-level row (id 1) sums 3 calls, with ``fields``."""
    return {
        "model": "issue_group",
        "filters": {"id": 1},
        "columns": {"times_seen": 5},
        "extra": None,
        "signal_only": False,
        "event_time": 0,
        "increments": 3,
        **fields,
    }


def test_every_row_of_a_summed_message_is_read_and_one_bad_row_refuses_the_message() -> None:
    from streams.buffers.wire import rows_from_wire

    second: dict[str, Any] = {  # rows 2 and 3, column by column
        "filters": {"id": [2, 3]},
        "columns": {"times_seen": [1, 0], "num_comments": [0, 4]},
        "extra": [],
        "event_time": [9, 10],
        "increments": [1, 2],
    }
    value = summed_message(more=second)
    rows = rows_from_wire(value)
    assert [(r.filters, dict(r.columns), r.count) for r in rows] == [
        ((("id", 1),), {"times_seen": 5}, 3),
        ((("id", 2),), {"times_seen": 1, "num_comments": 0}, 1),
        ((("id", 3),), {"times_seen": 0, "num_comments": 4}, 2),
    ]
    value["more"] = {**second, "columns": {"title": [1, 1]}}
    with pytest.raises(NotAllowed, match="not an allow-listed counter"):
        rows_from_wire(value)
    value["more"] = {**second, "increments": [1, 0]}
    with pytest.raises(NotAllowed, match="increments must be an int >= 1"):
        rows_from_wire(value)
    value["more"] = {**second, "increments": [1]}
    with pytest.raises(NotAllowed, match="one value per row"):
        rows_from_wire(value)


def test_a_plain_row_read_the_fast_way_equals_the_checked_one() -> None:
    from streams.buffers.wire import rows_from_wire

    inc = check_increment(
        "issue_group", {"times_seen": 2, "num_comments": -1}, {"id": 42}, event_time_ms=7
    )
    codec = build_codec(default_store(), None)
    value = codec.decode("buffer-increments", codec.encode("buffer-increments", inc.to_wire()))
    assert rows_from_wire(value) == [inc]
    for bad in ({"id": True}, {"id": 2**63}, {"id": "1"}):
        with pytest.raises(NotAllowed):
            rows_from_wire({**value, "filters": bad})


def test_packed_rows_read_as_the_same_rows_and_bad_packing_refuses_the_message() -> None:
    from streams.buffers.wire import pack, rows_from_wire

    value = summed_message(more=None)
    packed = {
        "filters": {"id": pack([2, 2**62])},
        "columns": {"times_seen": pack([1, -7]), "num_comments": pack([0, 4])},
        "event_time": pack([9, 10]),
        "increments": pack([1, 2]),
    }
    codec = build_codec(default_store(), None)
    wired = codec.decode(
        "buffer-increments", codec.encode("buffer-increments", {**value, "packed": packed})
    )
    rows = rows_from_wire(wired)
    assert [(r.filters, dict(r.columns), r.count, r.event_time_ms) for r in rows] == [
        ((("id", 1),), {"times_seen": 5}, 3, 0),
        ((("id", 2),), {"times_seen": 1, "num_comments": 0}, 1, 9),
        ((("id", 2**62),), {"times_seen": -7, "num_comments": 4}, 2, 10),
    ]
    bad = [
        ({**packed, "increments": pack([1, 0])}, "increments must be an int >= 1"),
        ({**packed, "increments": pack([1])}, "one value per row"),
        ({**packed, "event_time": b"\x00" * 9}, "8 bytes a row"),
        ({**packed, "columns": {"title": pack([1, 1])}}, "not an allow-listed counter"),
    ]
    for wrong, message in bad:
        with pytest.raises(NotAllowed, match=message):
            rows_from_wire({**value, "packed": wrong})
    with pytest.raises(NotAllowed, match="not both"):
        rows_from_wire({**value, "packed": packed, "more": {"filters": {"id": [3]}}})
