"""The freshness transitions, case by case (DESIGN.md "The freshness state of a namespace").

Every test builds a state, applies one pure transition with an explicit clock and checks
the fields the rule is about. The invariants over random interleavings live in
`test_freshness_invariants.py`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tables.freshness import (
    Freshness,
    IndexObservation,
    IndexStatus,
    WatcherPolicy,
    effective_write_ms,
    is_due,
    new_freshness,
    on_poll,
    on_poll_failure,
    on_write,
    stability_change,
)

NS = "products"
POLICY = WatcherPolicy(
    fast_poll_interval_ms=1_000,
    slow_poll_interval_ms=60_000,
    max_backoff_ms=30_000,
    safety_margin_ms=500,
)

UP_TO_DATE = IndexObservation(
    index_status="up-to-date",
    index={"status": "up-to-date"},
    approx_row_count=12_500,
    approx_logical_bytes=48_800_000,
    updated_at="2026-05-12T18:49:00Z",
)
UPDATING = IndexObservation(
    index_status="updating",
    index={"status": "updating", "unindexed_bytes": 100, "unindexed_rows": 2},
    approx_row_count=12_502,
    approx_logical_bytes=48_800_100,
    updated_at="2026-05-12T18:50:00Z",
)


def state(**fields: Any) -> Freshness:
    """A freshness record for NS with `fields` set (the rest at their defaults)."""
    return Freshness(namespace=NS, **fields)


def stable(stable_as_of: int = 10_000, **fields: Any) -> Freshness:
    """A namespace a poll found caught up as of `stable_as_of`."""
    defaults: dict[str, Any] = {
        "status": IndexStatus.STABLE.value,
        "stable_as_of": stable_as_of,
        "last_poll_ms": stable_as_of + POLICY.safety_margin_ms,
        "next_poll_ms": stable_as_of + POLICY.safety_margin_ms + POLICY.slow_poll_interval_ms,
        "index": {"status": "up-to-date"},
    }
    defaults.update(fields)
    return state(**defaults)


# --- the record ------------------------------------------------------------------------


def test_new_namespace_is_unknown_not_stable_and_due_at_once() -> None:
    fresh = new_freshness(NS)
    assert fresh.status == IndexStatus.UNKNOWN
    assert fresh.is_stable is False
    assert fresh.stable_as_of is None
    assert fresh.last_write_ms is None
    assert is_due(fresh, now_ms=0)


@pytest.mark.parametrize(
    ("status", "is_stable"),
    [
        (IndexStatus.UNKNOWN.value, False),
        (IndexStatus.UPDATING.value, False),
        (IndexStatus.STABLE.value, True),
    ],
)
def test_is_stable_is_true_only_for_the_stable_status(status: str, is_stable: bool) -> None:
    assert state(status=status).is_stable is is_stable


def test_index_status_values_are_the_wire_strings() -> None:
    assert [s.value for s in IndexStatus] == ["unknown", "updating", "stable"]


def test_freshness_round_trips_through_its_json_serializer() -> None:
    original = stable(last_write_ms=9_000, index={"status": "up-to-date"}, approx_row_count=3)
    assert Freshness.loads(original.dumps()) == original


# --- effective_write_ms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("written_at_ms", "record_timestamp_ms", "expected"),
    [
        (1_000, None, 1_000),
        (1_000, 900, 1_000),
        (1_000, 1_200, 1_200),
        (1_000, 1_000, 1_000),
    ],
    ids=["no-record-timestamp", "producer-later", "record-later", "equal"],
)
def test_effective_write_time_is_the_later_of_claim_and_record_timestamp(
    written_at_ms: int, record_timestamp_ms: int | None, expected: int
) -> None:
    assert effective_write_ms(written_at_ms, record_timestamp_ms) == expected


# --- on_write ----------------------------------------------------------------------------


def test_first_write_registers_the_namespace_as_updating_and_due() -> None:
    new = on_write(None, NS, 5_000)
    assert new.namespace == NS
    assert new.status == IndexStatus.UPDATING
    assert new.last_write_ms == 5_000
    assert new.stable_as_of is None
    assert new.next_poll_ms == 0


def test_write_after_the_watermark_makes_a_stable_namespace_updating_and_due_at_once() -> None:
    prev = stable(stable_as_of=10_000)
    new = on_write(prev, NS, 10_001)
    assert new.status == IndexStatus.UPDATING
    assert new.is_stable is False
    assert new.stable_as_of == 10_000, "a write never moves the watermark"
    assert new.last_write_ms == 10_001
    assert is_due(new, now_ms=10_001)


@pytest.mark.parametrize("written_at_ms", [0, 9_999, 10_000], ids=["long-ago", "just-before", "at"])
def test_write_at_or_before_the_watermark_keeps_the_namespace_stable(written_at_ms: int) -> None:
    prev = stable(stable_as_of=10_000)
    new = on_write(prev, NS, written_at_ms)
    assert new.is_stable
    assert new.next_poll_ms == prev.next_poll_ms, "a covered write does not make the poll due"


def test_covered_write_still_records_a_later_last_write_time() -> None:
    prev = stable(stable_as_of=10_000, last_write_ms=8_000)
    new = on_write(prev, NS, 9_000)
    assert new.is_stable
    assert new.last_write_ms == 9_000


def test_covered_write_older_than_the_last_write_returns_the_state_unchanged() -> None:
    prev = stable(stable_as_of=10_000, last_write_ms=9_000)
    assert on_write(prev, NS, 8_000) == prev


@pytest.mark.parametrize(
    ("last_write_ms", "written_at_ms", "expected"),
    [(None, 7, 7), (5, 7, 7), (7, 5, 7), (7, 7, 7), (0, 3, 3)],
)
def test_last_write_ms_only_grows(
    last_write_ms: int | None, written_at_ms: int, expected: int
) -> None:
    prev = state(status=IndexStatus.UPDATING.value, last_write_ms=last_write_ms)
    assert on_write(prev, NS, written_at_ms).last_write_ms == expected


def test_write_to_an_unknown_namespace_makes_it_updating_not_stable() -> None:
    new = on_write(new_freshness(NS), NS, 1)
    assert new.status == IndexStatus.UPDATING


def test_write_during_backoff_keeps_the_backoff() -> None:
    prev = stable(stable_as_of=10_000, consecutive_errors=3, next_poll_ms=50_000)
    new = on_write(prev, NS, 20_000)
    assert new.status == IndexStatus.UPDATING
    assert new.next_poll_ms == 50_000, "writes must not hammer a failing upstream"
    assert not is_due(new, now_ms=20_000)


def test_write_never_postpones_a_poll_that_is_already_due() -> None:
    prev = state(status=IndexStatus.UPDATING.value, consecutive_errors=1, next_poll_ms=100)
    assert on_write(prev, NS, 5_000).next_poll_ms == 100


@pytest.mark.parametrize(
    "prev",
    [
        None,
        new_freshness(NS),
        stable(stable_as_of=10_000),
        stable(stable_as_of=10_000, consecutive_errors=2, next_poll_ms=99_000),
        state(status=IndexStatus.UPDATING.value, last_write_ms=12_000),
    ],
    ids=["absent", "unknown", "stable", "backing-off", "updating"],
)
@pytest.mark.parametrize("written_at_ms", [9_000, 10_000, 11_000, 13_000])
def test_redelivered_write_gives_the_same_state_as_one_delivery(
    prev: Freshness | None, written_at_ms: int
) -> None:
    once = on_write(prev, NS, written_at_ms)
    assert on_write(once, NS, written_at_ms) == once


# --- on_poll: up-to-date -----------------------------------------------------------------


def test_up_to_date_poll_makes_an_unknown_namespace_stable_as_of_start_minus_margin() -> None:
    new = on_poll(new_freshness(NS), NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.status == IndexStatus.STABLE
    assert new.is_stable
    assert new.stable_as_of == 20_000 - POLICY.safety_margin_ms
    assert new.last_poll_ms == 20_000
    assert new.next_poll_ms == 20_000 + POLICY.slow_poll_interval_ms


def test_up_to_date_poll_on_an_absent_namespace_creates_it() -> None:
    new = on_poll(None, NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.namespace == NS
    assert new.is_stable


def test_up_to_date_poll_records_the_upstream_observation_verbatim() -> None:
    new = on_poll(new_freshness(NS), NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.index == {"status": "up-to-date"}
    assert new.approx_row_count == 12_500
    assert new.approx_logical_bytes == 48_800_000
    assert new.updated_at == "2026-05-12T18:49:00Z"


def test_up_to_date_poll_clears_the_error_streak() -> None:
    prev = state(consecutive_errors=4, last_error="upstream answered 500: boom", next_poll_ms=9)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.consecutive_errors == 0
    assert new.last_error is None


def test_up_to_date_poll_advances_the_watermark_of_a_stable_namespace() -> None:
    prev = stable(stable_as_of=10_000)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=30_000, policy=POLICY)
    assert new.stable_as_of == 30_000 - POLICY.safety_margin_ms


def test_up_to_date_poll_that_started_before_the_watermark_does_not_move_it_back() -> None:
    prev = stable(stable_as_of=10_000)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=5_000, policy=POLICY)
    assert new.stable_as_of == 10_000


def test_up_to_date_poll_covers_a_write_made_before_it_started() -> None:
    prev = on_write(None, NS, 19_999)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.is_stable


def test_up_to_date_poll_covers_a_write_made_at_its_start_time() -> None:
    prev = on_write(None, NS, 20_000)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.is_stable


def test_up_to_date_poll_that_started_before_a_known_write_keeps_the_namespace_updating() -> None:
    prev = on_write(stable(stable_as_of=10_000), NS, 25_000)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.status == IndexStatus.UPDATING
    assert new.stable_as_of == 20_000 - POLICY.safety_margin_ms, "the watermark may still advance"
    assert new.next_poll_ms == 25_000, "due as soon as a poll can cover the write"
    assert is_due(new, now_ms=25_000)
    assert not is_due(new, now_ms=24_999), "a poll before the write time cannot cover it"


def test_up_to_date_poll_before_a_write_on_an_unknown_namespace_is_not_stable() -> None:
    prev = on_write(None, NS, 25_000)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=20_000, policy=POLICY)
    assert new.status == IndexStatus.UPDATING
    assert new.stable_as_of == 20_000 - POLICY.safety_margin_ms


def test_zero_safety_margin_makes_the_watermark_the_poll_start() -> None:
    policy = WatcherPolicy(1_000, 60_000, 30_000, safety_margin_ms=0)
    new = on_poll(None, NS, UP_TO_DATE, started_at_ms=20_000, policy=policy)
    assert new.stable_as_of == 20_000


def test_last_poll_ms_does_not_move_back_for_a_late_answer() -> None:
    prev = stable(stable_as_of=10_000, last_poll_ms=40_000)
    new = on_poll(prev, NS, UP_TO_DATE, started_at_ms=30_000, policy=POLICY)
    assert new.last_poll_ms == 40_000


# --- on_poll: updating --------------------------------------------------------------------


def test_updating_poll_holds_the_watermark_of_a_stable_namespace() -> None:
    prev = stable(stable_as_of=10_000)
    new = on_poll(prev, NS, UPDATING, started_at_ms=30_000, policy=POLICY)
    assert new.status == IndexStatus.UPDATING
    assert new.is_stable is False
    assert new.stable_as_of == 10_000


def test_updating_poll_on_an_unknown_namespace_sets_no_watermark() -> None:
    new = on_poll(new_freshness(NS), NS, UPDATING, started_at_ms=30_000, policy=POLICY)
    assert new.status == IndexStatus.UPDATING
    assert new.stable_as_of is None


def test_updating_poll_schedules_the_next_poll_at_the_fast_interval() -> None:
    new = on_poll(new_freshness(NS), NS, UPDATING, started_at_ms=30_000, policy=POLICY)
    assert new.next_poll_ms == 30_000 + POLICY.fast_poll_interval_ms
    assert not is_due(new, now_ms=30_000 + POLICY.fast_poll_interval_ms - 1)
    assert is_due(new, now_ms=30_000 + POLICY.fast_poll_interval_ms)


def test_updating_poll_records_the_unindexed_counts() -> None:
    new = on_poll(new_freshness(NS), NS, UPDATING, started_at_ms=30_000, policy=POLICY)
    assert new.index == {"status": "updating", "unindexed_bytes": 100, "unindexed_rows": 2}
    assert new.approx_row_count == 12_502


def test_updating_poll_clears_the_error_streak() -> None:
    prev = state(consecutive_errors=2, last_error="timeout")
    new = on_poll(prev, NS, UPDATING, started_at_ms=30_000, policy=POLICY)
    assert (new.consecutive_errors, new.last_error) == (0, None)


# --- on_poll_failure --------------------------------------------------------------------


@pytest.mark.parametrize(
    "prev",
    [
        new_freshness(NS),
        stable(stable_as_of=10_000),
        state(status=IndexStatus.UPDATING.value, stable_as_of=7_000, last_write_ms=9_000),
    ],
    ids=["unknown", "stable", "updating"],
)
def test_failed_poll_holds_status_and_watermark(prev: Freshness) -> None:
    new = on_poll_failure(
        prev, NS, "upstream answered 503: busy", started_at_ms=30_000, policy=POLICY
    )
    assert new.status == prev.status
    assert new.stable_as_of == prev.stable_as_of
    assert new.is_stable == prev.is_stable
    assert new.index == prev.index


def test_failed_poll_on_an_unknown_namespace_never_makes_it_stable() -> None:
    new = on_poll_failure(None, NS, "upstream unreachable", started_at_ms=30_000, policy=POLICY)
    assert new.status == IndexStatus.UNKNOWN
    assert new.stable_as_of is None


def test_failed_poll_records_the_error_and_the_attempt() -> None:
    error = "upstream did not answer in time"
    new = on_poll_failure(new_freshness(NS), NS, error, started_at_ms=30_000, policy=POLICY)
    assert new.last_error == "upstream did not answer in time"
    assert new.consecutive_errors == 1
    assert new.last_poll_ms == 30_000


@pytest.mark.parametrize(
    ("errors_before", "expected_backoff_ms"),
    [
        (0, 2_000),
        (1, 4_000),
        (2, 8_000),
        (3, 16_000),
        (4, 30_000),
        (10, 30_000),
        (100, 30_000),
    ],
)
def test_failed_polls_back_off_exponentially_up_to_the_ceiling(
    errors_before: int, expected_backoff_ms: int
) -> None:
    prev = state(consecutive_errors=errors_before)
    new = on_poll_failure(prev, NS, "boom", started_at_ms=30_000, policy=POLICY)
    assert new.consecutive_errors == errors_before + 1
    assert new.next_poll_ms == 30_000 + expected_backoff_ms


@pytest.mark.parametrize(
    ("retry_after_ms", "expected_backoff_ms"),
    [(None, 2_000), (500, 2_000), (2_000, 2_000), (45_000, 45_000)],
    ids=["absent", "shorter", "equal", "longer-than-ceiling"],
)
def test_retry_after_extends_the_backoff_but_never_shortens_it(
    retry_after_ms: int | None, expected_backoff_ms: int
) -> None:
    new = on_poll_failure(
        None, NS, "429", started_at_ms=30_000, policy=POLICY, retry_after_ms=retry_after_ms
    )
    assert new.next_poll_ms == 30_000 + expected_backoff_ms


def test_successful_poll_after_failures_returns_to_the_normal_cadence() -> None:
    failing = on_poll_failure(None, NS, "boom", started_at_ms=1_000, policy=POLICY)
    failing = on_poll_failure(failing, NS, "boom", started_at_ms=3_000, policy=POLICY)
    new = on_poll(failing, NS, UP_TO_DATE, started_at_ms=7_000, policy=POLICY)
    assert new.consecutive_errors == 0
    assert new.next_poll_ms == 7_000 + POLICY.slow_poll_interval_ms


# --- is_due ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("next_poll_ms", "now_ms", "due"),
    [(0, 0, True), (0, 123, True), (100, 99, False), (100, 100, True), (100, 101, True)],
)
def test_a_namespace_is_due_once_the_clock_reaches_its_next_poll(
    next_poll_ms: int, now_ms: int, due: bool
) -> None:
    assert is_due(state(next_poll_ms=next_poll_ms), now_ms) is due


def test_stable_namespace_is_polled_at_the_slow_interval() -> None:
    new = on_poll(None, NS, UP_TO_DATE, started_at_ms=0, policy=POLICY)
    assert not is_due(new, POLICY.slow_poll_interval_ms - 1)
    assert is_due(new, POLICY.slow_poll_interval_ms)


# --- stability_change ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prev", "new", "expected"),
    [
        (None, new_freshness(NS), None),
        (None, on_write(None, NS, 5), "became_unstable"),
        (None, stable(stable_as_of=10), "became_stable"),
        (new_freshness(NS), stable(stable_as_of=10), "became_stable"),
        (state(status="updating", stable_as_of=10), stable(stable_as_of=10), "became_stable"),
        (state(status="updating", stable_as_of=5), stable(stable_as_of=10), "became_stable"),
        (stable(stable_as_of=10), state(status="updating", stable_as_of=10), "became_unstable"),
        (stable(stable_as_of=10), stable(stable_as_of=11), "advanced"),
        (stable(stable_as_of=10), stable(stable_as_of=10), None),
        (state(status="updating"), state(status="updating", stable_as_of=3), "advanced"),
        (
            state(status="updating", stable_as_of=3),
            state(status="updating", stable_as_of=9),
            "advanced",
        ),
        (state(status="updating", stable_as_of=3), state(status="updating", stable_as_of=3), None),
        (new_freshness(NS), state(status="updating"), None),
        (state(status="updating"), new_freshness(NS), None),
        (stable(stable_as_of=10, last_write_ms=1), stable(stable_as_of=10, last_write_ms=2), None),
    ],
    ids=[
        "registered",
        "first-write",
        "first-seen-stable",
        "unknown-to-stable",
        "updating-to-stable-same-watermark",
        "flip-and-advance-is-one-flip",
        "stable-to-updating",
        "watermark-advanced",
        "nothing-changed",
        "first-watermark-while-updating",
        "watermark-advanced-while-updating",
        "updating-held",
        "unknown-to-updating",
        "updating-to-unknown",
        "bookkeeping-only",
    ],
)
def test_stability_change_names_the_one_event_a_transition_publishes(
    prev: Freshness | None, new: Freshness, expected: str | None
) -> None:
    assert stability_change(prev, new) == expected


def test_write_after_the_watermark_publishes_became_unstable() -> None:
    prev = stable(stable_as_of=10_000)
    assert stability_change(prev, on_write(prev, NS, 10_001)) == "became_unstable"


def test_covered_write_publishes_nothing() -> None:
    prev = stable(stable_as_of=10_000)
    assert stability_change(prev, on_write(prev, NS, 9_000)) is None


def test_failed_poll_publishes_nothing() -> None:
    prev = stable(stable_as_of=10_000)
    new = on_poll_failure(prev, NS, "boom", started_at_ms=30_000, policy=POLICY)
    assert stability_change(prev, new) is None


def test_repeated_up_to_date_poll_with_the_same_start_publishes_nothing() -> None:
    once = on_poll(None, NS, UP_TO_DATE, started_at_ms=30_000, policy=POLICY)
    twice = on_poll(once, NS, UP_TO_DATE, started_at_ms=30_000, policy=POLICY)
    assert twice == once
    assert stability_change(once, twice) is None
