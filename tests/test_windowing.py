"""Tests for streams.windowing: windows of H events and the stream position each covers."""

from __future__ import annotations

import json

import pytest

from streams.records import EventBatch, parse_values
from streams.windowing import Window, WindowBuffer, partition_key, select

P0 = partition_key("interactions", 0)
P1 = partition_key("interactions", 1)
NOW = 1_700_000_000.0


class FakeClock:
    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def events(tag: str, positions: list[int], event_type: str = "purchase") -> EventBatch:
    """Valid events at `positions` of a batch, named "<tag><position>"."""
    return EventBatch(
        user_ids=[f"u-{tag}{p}" for p in positions],
        item_ids=[f"i-{tag}{p}" for p in positions],
        timestamps=[NOW + p for p in positions],
        event_types=[event_type] * len(positions),
        quantities=[None] * len(positions),
        prices=[None] * len(positions),
        positions=list(positions),
    )


def all_valid(tag: str, n: int) -> EventBatch:
    return events(tag, list(range(n)))


# ---- partition_key ---------------------------------------------------------------------


def test_partition_key_is_topic_slash_partition() -> None:
    assert partition_key("interactions", 3) == "interactions/3"


# ---- windows in arrival order ----------------------------------------------------------


def test_windows_have_exactly_size_events_in_arrival_order_across_feeds() -> None:
    buffer = WindowBuffer(4)
    fed = [all_valid("a", 3), all_valid("b", 6), all_valid("c", 2)]
    windows: list[Window] = []
    next_offset = 0
    for batch in fed:
        offsets = list(range(next_offset, next_offset + len(batch)))
        next_offset += len(batch)
        windows += buffer.feed(P0, offsets, batch)

    arrived = [u for batch in fed for u in batch.user_ids]
    assert [len(w) for w in windows] == [4, 4]
    assert [u for w in windows for u in w.user_ids] == arrived[:8]
    items = [u.replace("u-", "i-") for u in arrived[:8]]
    assert [i for w in windows for i in w.item_ids] == items
    assert windows[0].timestamps == [NOW + 0, NOW + 1, NOW + 2, NOW + 0]
    assert len(buffer) == 3  # b5, c0, c1 wait for the next window
    rest = buffer.flush()
    assert rest is not None and rest.user_ids == arrived[8:]


def test_window_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window size"):
        WindowBuffer(0)


def test_window_cut_mid_batch_covers_up_to_its_last_event() -> None:
    buffer = WindowBuffer(3)
    assert buffer.feed(P1, [40, 41], all_valid("p1-", 2)) == []
    windows = buffer.feed(P0, [100, 101, 102], all_valid("p0-", 3))

    assert len(windows) == 1
    assert windows[0].user_ids == ["u-p1-0", "u-p1-1", "u-p0-0"]
    # P0: the window's last event is at offset 100 -> next offset 101; P1: all consumed
    assert windows[0].offsets == {P0: 101, P1: 42}
    assert buffer.consumed == {P0: 103, P1: 42}
    assert len(buffer) == 2

    windows = buffer.feed(P0, [103], all_valid("p0-late", 1))
    assert [(w.user_ids, w.offsets) for w in windows] == [
        (["u-p0-1", "u-p0-2", "u-p0-late0"], {P0: 104, P1: 42})
    ]


def test_several_windows_from_one_batch_each_carry_their_own_offsets() -> None:
    buffer = WindowBuffer(2)
    windows = buffer.feed(P0, list(range(10, 17)), all_valid("a", 7))
    assert [w.offsets for w in windows] == [{P0: 12}, {P0: 14}, {P0: 16}]
    assert buffer.consumed == {P0: 17}
    rest = buffer.flush()
    assert rest is not None and rest.offsets == {P0: 17} and rest.user_ids == ["u-a6"]


def test_window_offsets_are_a_snapshot_not_the_live_consumed_map() -> None:
    buffer = WindowBuffer(1)
    (window,) = buffer.feed(P0, [5], all_valid("a", 1))
    buffer.feed(P0, [6, 7], events("b", []))
    assert window.offsets == {P0: 6}


# ---- rejected records between and after events ------------------------------------------


def test_rejects_between_events_are_covered_by_the_next_window() -> None:
    buffer = WindowBuffer(2)
    # positions 1, 2 and 4 were rejected (dead-lettered) or filtered out
    batch = events("a", [0, 3, 5])
    windows = buffer.feed(P0, [20, 21, 22, 23, 24, 25], batch)
    assert [w.offsets for w in windows] == [{P0: 24}]  # covers the rejects at 21 and 22
    more = buffer.feed(P0, [26], events("b", [0]))
    assert [w.offsets for w in more] == [{P0: 27}]  # covers the reject at 24 too


def test_trailing_rejects_are_covered_by_flush() -> None:
    buffer = WindowBuffer(4)
    buffer.feed(P0, [0, 1, 2, 3, 4], events("a", [0, 2]))  # 3 and 4 rejected
    window = buffer.flush()
    assert window is not None
    assert window.user_ids == ["u-a0", "u-a2"]
    assert window.offsets == {P0: 5}


def test_trailing_rejects_after_a_full_window_are_carried_by_the_next_window() -> None:
    buffer = WindowBuffer(2)
    windows = buffer.feed(P0, [0, 1, 2, 3], events("a", [0, 1]))  # 2 and 3 rejected
    assert [w.offsets for w in windows] == [{P0: 2}]
    assert buffer.flush() is None  # nothing to train ...
    assert buffer.consumed == {P0: 4}  # ... but the position moved past the rejects
    buffer.feed(P1, [0], events("b", [0]))
    window = buffer.flush()
    assert window is not None and window.offsets == {P0: 4, P1: 1}


def test_batch_of_only_rejects_moves_the_position() -> None:
    buffer = WindowBuffer(2)
    assert buffer.feed(P0, [7, 8, 9], events("a", [])) == []
    assert buffer.consumed == {P0: 10}
    assert buffer.flush() is None


def test_empty_feed_changes_nothing() -> None:
    buffer = WindowBuffer(2)
    assert buffer.feed(P0, [], events("a", [])) == []
    assert buffer.consumed == {}


def test_offsets_from_parse_values_cover_the_rejected_values() -> None:
    def value(user: str) -> bytes:
        return json.dumps({"user_id": user, "item_id": "i", "timestamp": NOW}).encode()

    raw = [value("u0"), b"not json", value("u2"), None, value("u4"), b"[]"]
    batch, rejections = parse_values(raw, now=NOW)
    assert batch.positions == [0, 2, 4] and len(rejections) == 3

    buffer = WindowBuffer(2)
    windows = buffer.feed(P0, [50, 51, 52, 53, 54, 55], batch)
    assert [(w.user_ids, w.offsets) for w in windows] == [(["u0", "u2"], {P0: 53})]
    rest = buffer.flush()
    assert rest is not None and (rest.user_ids, rest.offsets) == (["u4"], {P0: 56})


def test_flush_of_an_empty_buffer_is_none() -> None:
    assert WindowBuffer(3).flush() is None


# ---- two partitions --------------------------------------------------------------------


def test_two_partitions_interleaved() -> None:
    buffer = WindowBuffer(3)
    out: list[Window] = []
    out += buffer.feed(P0, [0, 1], events("x", [0, 1]))
    out += buffer.feed(P1, [0, 1, 2], events("y", [1, 2]))  # P1 offset 0 rejected
    out += buffer.feed(P0, [2, 3, 4], events("z", [0, 2]))  # P0 offset 3 rejected
    out += buffer.feed(P1, [3, 4], events("w", [0, 1]))

    assert [w.user_ids for w in out] == [
        ["u-x0", "u-x1", "u-y1"],
        ["u-y2", "u-z0", "u-z2"],
    ]
    assert [w.offsets for w in out] == [
        {P0: 2, P1: 2},  # P1 stops after its event at offset 1
        {P0: 5, P1: 3},  # P0 covers its reject at offset 3; P1 as consumed so far
    ]
    rest = buffer.flush()
    assert rest is not None
    assert rest.user_ids == ["u-w0", "u-w1"]
    assert rest.offsets == {P0: 5, P1: 5}


# ---- flush timing ----------------------------------------------------------------------


def test_due_after_flush_seconds_since_the_first_buffered_event() -> None:
    clock = FakeClock(100.0)
    buffer = WindowBuffer(10, clock=clock)
    assert not buffer.due(5.0)  # nothing buffered
    assert buffer.opened_at is None

    buffer.feed(P0, [0], all_valid("a", 1))
    assert buffer.opened_at == 100.0
    clock.now = 103.0
    buffer.feed(P0, [1], events("b", [0]))  # later events do not restart the timer
    clock.now = 104.9
    assert not buffer.due(5.0)
    clock.now = 105.0
    assert buffer.due(5.0)

    window = buffer.flush()
    assert window is not None and window.opened_at == 100.0
    assert not buffer.due(5.0)
    assert buffer.opened_at is None


def test_timer_restarts_with_the_first_event_after_a_cut() -> None:
    clock = FakeClock(10.0)
    buffer = WindowBuffer(2, clock=clock)
    buffer.feed(P0, [0, 1, 2], all_valid("a", 3))  # one full window, one event left
    assert buffer.opened_at == 10.0
    buffer.flush()
    clock.now = 20.0
    buffer.feed(P0, [3], events("b", [0]))
    assert buffer.opened_at == 20.0
    clock.now = 20.5
    assert not buffer.due(1.0)


def test_window_opened_at_survives_a_clock_at_zero() -> None:
    clock = FakeClock(0.0)
    buffer = WindowBuffer(2, clock=clock)
    buffer.feed(P0, [0], all_valid("a", 1))
    clock.now = 7.0
    window = buffer.flush()
    assert window is not None and window.opened_at == 0.0


# ---- select ----------------------------------------------------------------------------


def test_select_keeps_positions_of_the_kept_events() -> None:
    batch = events("a", [0, 2, 3, 5])
    batch.event_types = ["purchase", "pv", "purchase", "cart"]
    picked = select(batch, lambda t: t == "purchase")
    assert picked.positions == [0, 3]
    assert picked.user_ids == ["u-a0", "u-a3"]
    assert picked.item_ids == ["i-a0", "i-a3"]
    assert picked.timestamps == [NOW + 0, NOW + 3]
    assert picked.event_types == ["purchase", "purchase"]
    assert len(picked.quantities) == len(picked.prices) == 2

    buffer = WindowBuffer(2)
    (window,) = buffer.feed(P0, [10, 11, 12, 13, 14, 15], picked)
    assert window.offsets == {P0: 14}  # the skipped pv at 12 and the reject at 11 are covered
    assert buffer.consumed == {P0: 16}


def test_select_of_everything_or_nothing() -> None:
    batch = events("a", [0, 1])
    assert select(batch, lambda t: True) is batch
    none = select(batch, lambda t: False)
    assert len(none) == 0 and none.user_ids == [] and none.positions == []


def test_postpone_moves_the_flush_deadline_by_busy_time() -> None:
    now = [100.0]
    buf = WindowBuffer(4, clock=lambda: now[0])
    assert buf.feed("t/0", [0], EventBatch(["u"], ["i"], [1.0], ["purchase"], [None], [None], [0])) == []
    now[0] = 101.5
    buf.postpone(1.0)  # a second spent training another window
    assert not buf.due(1.0)
    now[0] = 102.0
    assert buf.due(1.0)
