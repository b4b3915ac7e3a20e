"""Asynchronous upstream writes in the freshness state (`on_operations`), on random runs.

A run interleaves writes, polls (up-to-date, updating, failed; some late) and operations:
accepted (with a write notification at acceptance, as the proxy sends it), ended (the
follower's completion: a write at the time it saw the end, with `operation_finished`), and
redelivered. After every step:

- a namespace with a pending operation is never stable;
- a pending operation never lets the watermark reach its acceptance time;
- stable means every operation accepted has been seen to end, and an up-to-date poll
  started after the end: the copy's data is covered;
- `stable_as_of` never decreases, and `stability_change` names exactly the event due;
- every input applied twice gives the state of once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tables.freshness import (
    Freshness,
    IndexObservation,
    IndexStatus,
    WatcherPolicy,
    on_operations,
    on_poll,
    on_poll_failure,
    on_write,
    stability_change,
)

NS = "dest"
CI = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICY = WatcherPolicy(
    fast_poll_interval_ms=200,
    slow_poll_interval_ms=5_000,
    max_backoff_ms=10_000,
    safety_margin_ms=0,
)
UP = IndexObservation(index_status="up-to-date", index={"status": "up-to-date"})
UPDATING = IndexObservation(
    index_status="updating", index={"status": "updating", "unindexed_bytes": 1, "unindexed_rows": 1}
)


@dataclass(frozen=True)
class Write:
    advance: int


@dataclass(frozen=True)
class Poll:
    advance: int
    lag: int
    result: str


@dataclass(frozen=True)
class Accept:
    advance: int


@dataclass(frozen=True)
class End:
    advance: int
    pick: int


@dataclass(frozen=True)
class Redeliver:
    pick: int


Op = Write | Poll | Accept | End | Redeliver

advances = st.integers(min_value=0, max_value=2_000)
ops = st.lists(
    st.one_of(
        st.builds(Write, advance=advances),
        st.builds(
            Poll,
            advance=advances,
            lag=st.one_of(st.just(0), st.integers(min_value=0, max_value=3_000)),
            result=st.sampled_from(["up-to-date", "up-to-date", "updating", "failure"]),
        ),
        st.builds(Accept, advance=advances),
        st.builds(End, advance=advances, pick=st.integers(min_value=0, max_value=100)),
        st.builds(Redeliver, pick=st.integers(min_value=0, max_value=100)),
    ),
    max_size=50,
)


@dataclass
class Model:
    clock: int = 1_000_000
    accepted: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)
    up_to_date_starts: list[int] = field(default_factory=list)
    inputs: list[object] = field(default_factory=list)

    @property
    def pending(self) -> set[str]:
        return set(self.accepted) - set(self.ended)


def run(steps: list[Op]):  # type: ignore[no-untyped-def]
    model = Model()
    state: Freshness | None = None
    for op in steps:
        prev = state
        if isinstance(op, Write):
            model.clock += op.advance
            transition = partial(on_write, namespace=NS, written_at_ms=model.clock)
        elif isinstance(op, Poll):
            model.clock += op.advance
            started = model.clock - op.lag
            if op.result == "failure":
                transition = partial(
                    on_poll_failure, namespace=NS, error="503", started_at_ms=started, policy=POLICY
                )
            else:
                observation = UP if op.result == "up-to-date" else UPDATING
                if op.result == "up-to-date":
                    model.up_to_date_starts.append(started)
                transition = partial(
                    on_poll, namespace=NS, observation=observation, started_at_ms=started,
                    policy=POLICY,
                )  # fmt: skip
        elif isinstance(op, Accept):
            model.clock += op.advance
            location = f"/v1/namespaces/{NS}/operations/op{len(model.accepted)}"
            model.accepted[location] = model.clock
            transition = _accepted(location, model.clock)
        elif isinstance(op, End):
            pending = sorted(model.pending)
            if not pending:
                continue
            model.clock += op.advance
            location = pending[op.pick % len(pending)]
            model.ended[location] = model.clock
            transition = _ended(location, model.clock)
        else:
            if not model.inputs:
                continue
            transition = model.inputs[op.pick % len(model.inputs)]  # type: ignore[assignment]
            if getattr(transition, "accepts", None) in model.ended:
                continue  # documented: an acceptance redelivered after its end is re-followed
        if not isinstance(op, Redeliver):
            model.inputs.append(transition)
        state = transition(state)  # type: ignore[operator]
        yield op, prev, state, model, transition


class _accepted:  # noqa: N801 (used like the functions beside it)
    """The proxy's notification at a `202`: a write at acceptance, and the operation."""

    def __init__(self, location: str, at_ms: int) -> None:
        self.accepts, self.at_ms = location, at_ms

    def __call__(self, prev: Freshness | None) -> Freshness:
        state = on_write(prev, NS, self.at_ms)
        return on_operations(state, NS, started={self.accepts: self.at_ms})


def _ended(location: str, at_ms: int):  # type: ignore[no-untyped-def]
    def transition(prev: Freshness | None) -> Freshness:
        return on_operations(on_write(prev, NS, at_ms), NS, finished={location})

    return transition


@CI
@given(steps=ops)
def test_a_namespace_with_a_pending_operation_is_never_stable(steps: list[Op]) -> None:
    for op, _, state, model, _ in run(steps):
        assert set(state.operations or {}) == model.pending, f"after {op}"
        if model.pending:
            assert not state.is_stable, f"stable with {model.pending} pending after {op}"
            assert state.status == IndexStatus.UPDATING.value


@CI
@given(steps=ops)
def test_a_pending_operation_holds_the_watermark_below_its_acceptance(steps: list[Op]) -> None:
    for op, prev, state, model, _ in run(steps):
        for location in model.pending:
            accepted = model.accepted[location]
            before = prev.stable_as_of if prev is not None else None
            if before is None or before < accepted:
                assert state.stable_as_of is None or state.stable_as_of < accepted, f"{op}"


@CI
@given(steps=ops)
def test_stable_means_every_operation_ended_before_an_up_to_date_poll(steps: list[Op]) -> None:
    for op, _, state, model, _ in run(steps):
        if state.is_stable:
            assert not model.pending
            assert all(end <= max(model.up_to_date_starts) for end in model.ended.values()), op
            assert state.stable_as_of is not None
            assert all(end <= state.stable_as_of for end in model.ended.values()), op


@CI
@given(steps=ops)
def test_watermark_and_events_as_for_any_write(steps: list[Op]) -> None:
    for op, prev, state, _, transition in run(steps):
        before = prev.stable_as_of if prev is not None else None
        if before is not None:
            assert state.stable_as_of is not None and state.stable_as_of >= before, f"{op}"
        was = prev.is_stable if prev is not None else False
        advanced = state.stable_as_of is not None and (
            before is None or state.stable_as_of > before
        )
        appeared = prev is None and state.status == "updating"  # first heard of: it appears
        expected = (
            ("became_stable" if state.is_stable else "became_unstable")
            if was != state.is_stable or appeared
            else ("advanced" if advanced else None)
        )
        assert stability_change(prev, state) == expected
        if isinstance(op, Write | Accept | End):
            assert transition(state) == state, f"{op} applied twice"  # type: ignore[operator]


def test_an_ended_operation_redelivered_changes_nothing() -> None:
    location = "/v1/namespaces/dest/operations/t"
    state = on_operations(on_write(None, NS, 10), NS, started={location: 10})
    done = on_operations(on_write(state, NS, 20), NS, finished={location})
    assert done.operations is None and done.last_write_ms == 20
    assert on_operations(on_write(done, NS, 20), NS, finished={location}) == done
