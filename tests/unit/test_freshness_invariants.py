"""The four freshness invariants (DESIGN.md), checked on random interleavings of events.

A run is a sequence of operations applied through the pure transitions, the way the agents
apply them: write notifications (some arriving late, some redelivered), polls that answer
`up-to-date`, `updating` or fail (some started long before they are applied, some
redelivered as read observations). After every step the test checks the invariants
against a small model of what actually happened:

1. `stable_as_of` never decreases.
2. `is_stable` implies no known write after `stable_as_of + safety_margin_ms`.
3. `is_stable` is never true without a successful poll that saw `up-to-date`.
4. `stability_change` names exactly one event whenever `is_stable` flipped or
   `stable_as_of` advanced, and none otherwise.

plus idempotence under redelivery, write coalescing (the writes agent applies a batch as
one `on_write` with the batch's latest time), and "a failed poll changes neither status
nor watermark".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import reduce
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tables.freshness import (
    Freshness,
    IndexObservation,
    IndexStatus,
    WatcherPolicy,
    is_due,
    on_poll,
    on_poll_failure,
    on_write,
    stability_change,
)

NS = "products"
CI = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PollResult = Literal["up-to-date", "updating", "failure"]

OBSERVATIONS: dict[str, IndexObservation] = {
    "up-to-date": IndexObservation(
        index_status="up-to-date",
        index={"status": "up-to-date"},
        approx_row_count=12_500,
        approx_logical_bytes=48_800_000,
        updated_at="2026-05-12T18:49:00Z",
    ),
    "updating": IndexObservation(
        index_status="updating",
        index={"status": "updating", "unindexed_bytes": 100, "unindexed_rows": 2},
        approx_row_count=12_502,
        approx_logical_bytes=48_800_100,
        updated_at="2026-05-12T18:50:00Z",
    ),
}


# --- operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """A write notification; `lag` > 0: it reaches Layer after later events did."""

    advance: int
    lag: int


@dataclass(frozen=True)
class RedeliverWrite:
    """At-least-once delivery: an earlier write notification arrives again."""

    pick: int


@dataclass(frozen=True)
class Poll:
    """A poll applied now that started `lag` ms ago (a slow or late answer)."""

    advance: int
    lag: int
    result: PollResult
    retry_after_ms: int | None = None


@dataclass(frozen=True)
class ReplayPoll:
    """An earlier poll result applied again (a read observation redelivered via Kafka)."""

    pick: int


Op = Write | RedeliverWrite | Poll | ReplayPoll

advances = st.integers(min_value=0, max_value=3_000)
lags = st.one_of(st.just(0), st.just(0), st.integers(min_value=0, max_value=6_000))

write_ops = st.builds(Write, advance=advances, lag=lags)
redeliver_ops = st.builds(RedeliverWrite, pick=st.integers(min_value=0, max_value=1_000))
poll_ops = st.builds(
    Poll,
    advance=advances,
    lag=lags,
    result=st.sampled_from(["up-to-date", "up-to-date", "updating", "failure"]),
    retry_after_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=120_000)),
)
replay_ops = st.builds(ReplayPoll, pick=st.integers(min_value=0, max_value=1_000))

op_lists = st.lists(
    st.one_of(write_ops, write_ops, poll_ops, poll_ops, redeliver_ops, replay_ops),
    max_size=60,
)


@st.composite
def policies(draw: st.DrawFn) -> WatcherPolicy:
    fast = draw(st.integers(min_value=1, max_value=5_000))
    return WatcherPolicy(
        fast_poll_interval_ms=fast,
        slow_poll_interval_ms=draw(st.integers(min_value=fast, max_value=120_000)),
        max_backoff_ms=draw(st.integers(min_value=1, max_value=120_000)),
        safety_margin_ms=draw(st.integers(min_value=0, max_value=3_000)),
    )


start_clocks = st.integers(min_value=0, max_value=2_000_000_000_000)


# --- the model ---------------------------------------------------------------------------


@dataclass
class Model:
    """What really happened, kept beside the state the transitions compute."""

    clock: int
    writes: list[int] = field(default_factory=list)
    #: Every successful poll applied, as (started_at_ms, result); failures are not here.
    polls: list[tuple[int, PollResult]] = field(default_factory=list)
    errors_since_success: int = 0
    poll_starts: list[int] = field(default_factory=list)

    @property
    def up_to_date_starts(self) -> list[int]:
        return [start for start, result in self.polls if result == "up-to-date"]


@dataclass(frozen=True)
class Step:
    op: Op
    prev: Freshness | None
    new: Freshness
    model: Model
    #: The poll result or the write time this step applied (resolved from picks).
    applied: tuple[str, int, PollResult | None]


def run(ops: list[Op], policy: WatcherPolicy, start: int) -> Iterator[Step]:
    """Apply `ops` in order, yielding every transition with the model after it."""
    model = Model(clock=start)
    applied_polls: list[tuple[int, PollResult, int | None]] = []
    state: Freshness | None = None
    for op in ops:
        prev = state
        if isinstance(op, Write | RedeliverWrite):
            if isinstance(op, Write):
                model.clock += op.advance
                written_at = max(0, model.clock - op.lag)
            elif model.writes:
                written_at = model.writes[op.pick % len(model.writes)]
            else:
                continue
            state = on_write(state, NS, written_at)
            model.writes.append(written_at)
            applied: tuple[str, int, PollResult | None] = ("write", written_at, None)
        else:
            if isinstance(op, Poll):
                model.clock += op.advance
                started_at = max(0, model.clock - op.lag)
                result, retry_after = op.result, op.retry_after_ms
                applied_polls.append((started_at, result, retry_after))
            elif applied_polls:
                started_at, result, retry_after = applied_polls[op.pick % len(applied_polls)]
            else:
                continue
            if result == "failure":
                state = on_poll_failure(
                    state,
                    NS,
                    "upstream answered 503: busy",
                    started_at_ms=started_at,
                    policy=policy,
                    retry_after_ms=retry_after,
                )
                model.errors_since_success += 1
            else:
                stale = bool(model.polls) and started_at < max(t for t, _ in model.polls)
                state = on_poll(
                    state, NS, OBSERVATIONS[result], started_at_ms=started_at, policy=policy
                )
                model.polls.append((started_at, result))
                if not stale:  # an answer older than the latest one says nothing about now
                    model.errors_since_success = 0
            model.poll_starts.append(started_at)
            applied = ("poll", started_at, result)
        yield Step(op=op, prev=prev, new=state, model=model, applied=applied)


def watermark(state: Freshness | None) -> int | None:
    return state.stable_as_of if state is not None else None


def expected_change(prev: Freshness | None, new: Freshness) -> str | None:
    """The event DESIGN.md requires, computed independently of `stability_change`."""
    was_stable = prev.is_stable if prev is not None else False
    before, after = watermark(prev), new.stable_as_of
    flipped = was_stable != new.is_stable
    advanced = after is not None and (before is None or after > before)
    if flipped:
        return "became_stable" if new.is_stable else "became_unstable"
    if prev is None and new.status == IndexStatus.UPDATING.value:
        return "became_unstable"  # first heard of through a write: it appears, not stable
    if advanced:
        return "advanced"
    return None


# --- the four invariants -----------------------------------------------------------------


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_stable_as_of_never_decreases(ops: list[Op], policy: WatcherPolicy, start: int) -> None:
    for step in run(ops, policy, start):
        before, after = watermark(step.prev), step.new.stable_as_of
        if before is not None:
            assert after is not None, f"{step.op} erased the watermark {before}"
            assert after >= before, f"{step.op} moved the watermark back: {before} -> {after}"


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_stable_implies_no_known_write_after_stable_as_of_plus_margin(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        new = step.new
        if not new.is_stable:
            continue
        assert new.stable_as_of is not None, "stable without a watermark"
        assert new.last_write_ms is None or (
            new.last_write_ms <= new.stable_as_of + policy.safety_margin_ms
        ), f"stable as of {new.stable_as_of} with a write at {new.last_write_ms} after {step.op}"
        # The same, against every write the model knows (last_write_ms could lie).
        assert all(w <= new.stable_as_of + policy.safety_margin_ms for w in step.model.writes)


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_stable_requires_a_successful_up_to_date_poll(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        if step.new.is_stable:
            assert step.model.up_to_date_starts, (
                f"stable after {step.op} without an up-to-date poll"
            )


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_stable_means_every_known_write_started_before_some_up_to_date_poll(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    """Invariant 3, strengthened: the up-to-date poll must have started after the writes."""
    for step in run(ops, policy, start):
        if step.new.is_stable and step.model.writes:
            assert max(step.model.writes) <= max(step.model.up_to_date_starts), (
                f"stable after {step.op}, but no up-to-date poll started after the write at "
                f"{max(step.model.writes)}"
            )


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_stability_change_names_exactly_one_event_for_every_flip_or_advance(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        assert stability_change(step.prev, step.new) == expected_change(step.prev, step.new), (
            f"after {step.op}: {step.prev} -> {step.new}"
        )


# --- the model, exactly --------------------------------------------------------------------


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_state_bookkeeping_matches_what_happened(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        new, model = step.new, step.model
        ups = model.up_to_date_starts
        assert new.stable_as_of == (max(ups) - policy.safety_margin_ms if ups else None), (
            "stable_as_of is the latest up-to-date poll start minus the margin"
        )
        assert new.last_write_ms == (max(model.writes) if model.writes else None)
        assert new.last_poll_ms == (max(model.poll_starts) if model.poll_starts else None)
        assert new.consecutive_errors == model.errors_since_success
        if new.status == IndexStatus.UNKNOWN:
            assert not model.polls and not model.writes, "unknown is left by a write or a poll"
        assert new.status in {s.value for s in IndexStatus}


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_failed_poll_never_changes_status_watermark_or_observation(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        if step.applied[0] == "poll" and step.applied[2] == "failure" and step.prev is not None:
            prev, new = step.prev, step.new
            assert (new.status, new.stable_as_of, new.is_stable) == (
                prev.status,
                prev.stable_as_of,
                prev.is_stable,
            )
            assert (new.index, new.approx_row_count, new.updated_at) == (
                prev.index,
                prev.approx_row_count,
                prev.updated_at,
            )
            assert new.last_write_ms == prev.last_write_ms
            assert stability_change(prev, new) is None


@CI
@given(
    ops=st.lists(
        st.one_of(
            write_ops,
            redeliver_ops,
            poll_ops.filter(lambda op: op.result != "up-to-date"),
        ),
        max_size=40,
    ),
    policy=policies(),
    start=start_clocks,
)
def test_without_an_up_to_date_answer_a_namespace_is_never_stable(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        assert not step.new.is_stable
        assert step.new.stable_as_of is None, "no signal never sets a watermark"
        appeared = step.prev is None and step.new.status == IndexStatus.UPDATING.value
        expected = "became_unstable" if appeared else None  # a first write only: it appears
        assert stability_change(step.prev, step.new) == expected


@CI
@given(
    ops=st.lists(st.one_of(redeliver_ops, poll_ops.filter(lambda o: o.result == "failure"))),
    policy=policies(),
    start=start_clocks,
)
def test_only_failed_polls_leave_a_namespace_unknown(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        assert step.new.status == IndexStatus.UNKNOWN
        assert step.new.stable_as_of is None


# --- redelivery and coalescing ----------------------------------------------------------


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_write_applied_twice_gives_the_same_state_as_once(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        if step.applied[0] == "write":
            written_at = step.applied[1]
            assert on_write(step.new, NS, written_at) == step.new
            assert stability_change(step.new, on_write(step.new, NS, written_at)) is None


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_poll_result_applied_twice_gives_the_same_state_as_once(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        _, started_at, result = step.applied
        if step.applied[0] == "poll" and result != "failure":
            assert result is not None
            again = on_poll(
                step.new, NS, OBSERVATIONS[result], started_at_ms=started_at, policy=policy
            )
            assert again == step.new
            assert stability_change(step.new, again) is None


offsets = st.integers(min_value=-4_000, max_value=4_000)


def anchored(state: Freshness | None, clock: int, offset: int) -> int:
    """A write time near where it matters: the watermark if there is one, else the clock."""
    anchor = state.stable_as_of if state is not None and state.stable_as_of is not None else clock
    return max(0, anchor + offset)


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks, o1=offsets, o2=offsets)
def test_two_writes_coalesce_into_one_write_at_the_later_time(
    ops: list[Op], policy: WatcherPolicy, start: int, o1: int, o2: int
) -> None:
    def check(state: Freshness | None, clock: int) -> None:
        t1, t2 = anchored(state, clock, o1), anchored(state, clock, o2)
        assert on_write(on_write(state, NS, t1), NS, t2) == on_write(state, NS, max(t1, t2)), (
            f"writes at {t1} and {t2} on {state}"
        )

    check(None, start)
    for step in run(ops, policy, start):
        check(step.new, step.model.clock)


@CI
@given(
    ops=op_lists,
    policy=policies(),
    start=start_clocks,
    batch=st.lists(offsets, min_size=1, max_size=8),
)
def test_a_batch_of_writes_coalesces_into_one_write_at_its_latest_time(
    ops: list[Op], policy: WatcherPolicy, start: int, batch: list[int]
) -> None:
    def check(state: Freshness | None, clock: int) -> None:
        times = [anchored(state, clock, offset) for offset in batch]
        one_by_one = reduce(lambda s, t: on_write(s, NS, t), times, state)
        assert one_by_one == on_write(state, NS, max(times))

    check(None, start)
    for step in run(ops, policy, start):
        check(step.new, step.model.clock)


# --- cadence -----------------------------------------------------------------------------


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_an_uncovered_write_makes_the_namespace_due_unless_it_is_backing_off(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        if step.applied[0] != "write":
            continue
        prev, new, written_at = step.prev, step.new, step.applied[1]
        covered = (
            prev is not None and prev.stable_as_of is not None and (written_at <= prev.stable_as_of)
        )
        seen = (
            prev is not None
            and prev.last_write_ms is not None
            and (written_at <= prev.last_write_ms)
        )
        if seen:
            assert new == prev, "a write no newer than one already seen changes nothing"
        elif covered:
            assert new.next_poll_ms == prev.next_poll_ms  # type: ignore[union-attr]
        elif prev is None or prev.consecutive_errors == 0:
            assert is_due(new, now_ms=0), "a write after the watermark makes the poll due at once"
        else:
            assert new.next_poll_ms == prev.next_poll_ms, "a write keeps the error backoff"


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_stable_namespace_waits_the_slow_interval_and_updating_one_the_fast_interval(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    for step in run(ops, policy, start):
        kind, started_at, result = step.applied
        if kind != "poll":
            continue
        new, prev = step.new, step.prev
        stale = (
            prev is not None
            and prev.last_observed_ms is not None
            and (started_at < prev.last_observed_ms)
        )
        if stale and result != "failure":
            assert new.next_poll_ms == prev.next_poll_ms, "a stale answer keeps the cadence"
        elif result == "up-to-date" and new.is_stable:
            slow = started_at + policy.slow_poll_interval_ms
            behind = new.last_write_ms is not None and new.stable_as_of < new.last_write_ms
            if behind:  # the watermark has a write to catch up with: due when it can
                assert new.last_write_ms is not None
                assert new.next_poll_ms == min(slow, new.last_write_ms + policy.safety_margin_ms)
            else:
                assert new.next_poll_ms == slow
        elif result == "up-to-date":
            assert prev is not None and prev.last_write_ms is not None
            assert new.next_poll_ms == prev.last_write_ms, (
                "a write newer than the poll keeps it due, from the write time on"
            )
        elif result == "updating":
            assert new.next_poll_ms == started_at + policy.fast_poll_interval_ms
        else:
            assert new.next_poll_ms > started_at or policy.max_backoff_ms == 0
            assert new.next_poll_ms >= started_at + min(
                policy.max_backoff_ms, policy.fast_poll_interval_ms
            )


@CI
@given(ops=op_lists, policy=policies(), start=start_clocks)
def test_once_indexing_drains_the_watermark_covers_every_write_within_fast_plus_margin(
    ops: list[Op], policy: WatcherPolicy, start: int
) -> None:
    """DESIGN.md rule 4: after any history, with no further writes and upstream caught up,
    a watcher that polls whenever the namespace is due (on ticks of the fast interval) has
    `stable_as_of >= last_write_ms` within fast interval + safety margin of the last write
    (or of the moment polling resumes, whichever is later)."""
    state: Freshness | None = None
    clock = start
    for step in run(ops, policy, start):
        state, clock = step.new, step.model.clock
    if state is None or state.last_write_ms is None:
        return
    drained_at = max(clock, state.last_write_ms, state.next_poll_ms - policy.fast_poll_interval_ms)
    deadline = max(drained_at, state.last_write_ms) + policy.fast_poll_interval_ms
    deadline += policy.safety_margin_ms
    now = drained_at
    while now <= deadline:
        if is_due(state, now):
            state = on_poll(state, NS, OBSERVATIONS["up-to-date"], started_at_ms=now, policy=policy)
        now += policy.fast_poll_interval_ms
    assert state.stable_as_of is not None and state.stable_as_of >= state.last_write_ms
    assert state.is_stable
