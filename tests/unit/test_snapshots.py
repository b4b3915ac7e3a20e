"""Snapshot history: appended when the watermark advances and the content changed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.freshness import Freshness, IndexStatus
from tables.snapshots import (
    Snapshot,
    SnapshotHistory,
    record_snapshot,
    snapshot_as_of,
    watermark_advanced,
)

NS = "products"
LIMIT = 5


def state(stable_as_of: int | None, rows: int | None = 100, **fields: Any) -> Freshness:
    defaults: dict[str, Any] = {
        "namespace": NS,
        "status": IndexStatus.STABLE.value if stable_as_of is not None else "unknown",
        "stable_as_of": stable_as_of,
        "approx_row_count": rows,
        "approx_logical_bytes": 4_000,
        "updated_at": "2026-05-12T18:49:00Z",
    }
    defaults.update(fields)
    return Freshness(**defaults)


def history(*snapshots: tuple[int, int]) -> SnapshotHistory:
    """A history from `(stable_as_of, rows)` pairs, newest first."""
    return SnapshotHistory(
        snapshots=[
            Snapshot(
                stable_as_of=at,
                approx_row_count=rows,
                approx_logical_bytes=4_000,
                updated_at="2026-05-12T18:49:00Z",
            )
            for at, rows in snapshots
        ]
    )


# --- record_snapshot ---------------------------------------------------------------------


def test_first_watermark_records_the_first_snapshot() -> None:
    new = record_snapshot(None, None, state(1_000), limit=LIMIT)
    assert new is not None
    assert new.snapshots == [
        Snapshot(
            stable_as_of=1_000,
            approx_row_count=100,
            approx_logical_bytes=4_000,
            updated_at="2026-05-12T18:49:00Z",
        )
    ]


def test_first_watermark_after_registration_records_a_snapshot() -> None:
    new = record_snapshot(None, state(None), state(1_000), limit=LIMIT)
    assert new is not None
    assert [s.stable_as_of for s in new.snapshots] == [1_000]


def test_no_watermark_records_nothing() -> None:
    assert record_snapshot(None, None, state(None), limit=LIMIT) is None


@pytest.mark.parametrize("new_watermark", [1_000, 999], ids=["held", "older"])
def test_watermark_that_did_not_advance_records_nothing(new_watermark: int) -> None:
    prev = state(1_000, rows=100)
    new = state(new_watermark, rows=200)
    assert record_snapshot(history((1_000, 100)), prev, new, limit=LIMIT) is None


def test_advance_with_the_same_content_records_nothing() -> None:
    """A quiet namespace polled every minute must not fill its history with copies."""
    prev = state(1_000, rows=100)
    new = state(61_000, rows=100)
    assert record_snapshot(history((1_000, 100)), prev, new, limit=LIMIT) is None


@pytest.mark.parametrize(
    "changed",
    [
        {"approx_row_count": 101},
        {"approx_logical_bytes": 4_001},
        {"updated_at": "2026-05-12T18:50:00Z"},
        {"approx_row_count": None},
    ],
    ids=["rows", "bytes", "updated_at", "rows-lost"],
)
def test_advance_with_changed_content_prepends_a_snapshot(changed: dict[str, Any]) -> None:
    prev = state(1_000, rows=100)
    new_state = Freshness(**{**state(61_000, rows=100).asdict(), **changed})
    new = record_snapshot(history((1_000, 100)), prev, new_state, limit=LIMIT)
    assert new is not None
    assert [s.stable_as_of for s in new.snapshots] == [61_000, 1_000]


def test_advance_without_a_history_records_a_snapshot_even_with_old_content() -> None:
    new = record_snapshot(None, state(1_000), state(2_000), limit=LIMIT)
    assert new is not None and [s.stable_as_of for s in new.snapshots] == [2_000]


def test_watermark_advance_while_updating_still_records_the_observed_content() -> None:
    prev = state(1_000, rows=100)
    new_state = state(2_000, rows=150, status=IndexStatus.UPDATING.value)
    new = record_snapshot(history((1_000, 100)), prev, new_state, limit=LIMIT)
    assert new is not None and new.snapshots[0].approx_row_count == 150


def test_history_is_bounded_by_the_limit_dropping_the_oldest() -> None:
    full = history(*[(5_000 - 1_000 * i, 50 - i) for i in range(LIMIT)])
    prev = state(5_000, rows=50)
    new = record_snapshot(full, prev, state(6_000, rows=51), limit=LIMIT)
    assert new is not None
    assert [s.stable_as_of for s in new.snapshots] == [6_000, 5_000, 4_000, 3_000, 2_000]


def test_record_snapshot_does_not_mutate_the_given_history() -> None:
    old = history((1_000, 100))
    record_snapshot(old, state(1_000), state(2_000, rows=200), limit=LIMIT)
    assert [s.stable_as_of for s in old.snapshots] == [1_000]


def test_snapshot_history_round_trips_through_its_json_serializer() -> None:
    original = history((2_000, 200), (1_000, 100))
    assert SnapshotHistory.loads(original.dumps()) == original


# --- snapshot_as_of ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("as_of_ms", "expected"),
    [
        (999, None),
        (1_000, 1_000),
        (1_500, 1_000),
        (2_000, 2_000),
        (2_999, 2_000),
        (3_000, 3_000),
        (10**13, 3_000),
    ],
)
def test_snapshot_as_of_is_the_newest_taken_at_or_before_the_time(
    as_of_ms: int, expected: int | None
) -> None:
    found = snapshot_as_of(history((3_000, 3), (2_000, 2), (1_000, 1)), as_of_ms)
    assert (found.stable_as_of if found is not None else None) == expected


def test_snapshot_as_of_without_history_is_none() -> None:
    assert snapshot_as_of(None, 10**13) is None
    assert snapshot_as_of(SnapshotHistory(snapshots=[]), 10**13) is None


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=-50, max_value=1_000), st.integers(min_value=0, max_value=3)
        ),
        max_size=40,
    ),
    limit=st.integers(min_value=1, max_value=8),
)
def test_history_stays_newest_first_bounded_and_free_of_repeated_content(
    steps: list[tuple[int, int]], limit: int
) -> None:
    """Feed watermark moves (never backwards, as the transitions guarantee) and contents."""
    hist: SnapshotHistory | None = None
    prev: Freshness | None = None
    watermark: int | None = None
    for delta, rows in steps:
        watermark = delta if watermark is None else max(watermark, watermark + delta)
        new = state(watermark, rows=rows)
        updated = record_snapshot(hist, prev, new, limit=limit)
        advanced = prev is None or prev.stable_as_of is None or watermark > prev.stable_as_of
        if not advanced:
            assert updated is None
        if updated is not None:
            hist = updated
            assert hist.snapshots[0].stable_as_of == watermark
            assert hist.snapshots[0].approx_row_count == rows
        prev = new
        if hist is None:
            continue
        snaps = hist.snapshots
        assert 1 <= len(snaps) <= limit
        assert all(a.stable_as_of > b.stable_as_of for a, b in zip(snaps, snaps[1:], strict=False))
        assert all(not a.same_content(b) for a, b in zip(snaps, snaps[1:], strict=False))
        for snap in snaps:
            assert snapshot_as_of(hist, snap.stable_as_of) == snap


@pytest.mark.parametrize(
    ("prev", "new", "advanced"),
    [(None, 1_000, True), (None, None, False), (1_000, 2_000, True), (2_000, 2_000, False),
     (2_000, 1_000, False), ("none", 1_000, True)],
)  # fmt: skip
def test_only_a_watermark_that_moved_forward_can_add_a_snapshot(
    prev: int | str | None, new: int | None, advanced: bool
) -> None:
    before = None if prev is None else state(None if prev == "none" else int(prev))
    after = state(new)
    assert watermark_advanced(before, after) is advanced
    if not advanced:
        assert record_snapshot(history((1_000, 100)), before, after, limit=LIMIT) is None
