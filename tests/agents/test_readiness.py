"""Per-partition readiness through Faust's rebalance sequence (layer/readiness.py).

The assignment is what Faust's assignor would say; the sequence of signals is Faust's:
revoked → assigned → (recovery) → recovered, possibly interrupted by another rebalance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import cast

import faust
import pytest
from faust.tables.manager import TableManager
from hypothesis import given
from hypothesis import strategies as st

import layer.readiness as readiness_module
from layer.app import app
from layer.changelog_apply import LayerRecovery
from layer.events import partition_for
from layer.readiness import (
    PartitionProgress,
    Readiness,
    ReplaySummary,
    log_recovery_progress,
    replay_summary,
)
from layer.services import Services

PARTITIONS = 4


class Assignment:
    """Stands in for `app.assignor.assigned_actives()`: the partitions held right now."""

    def __init__(self) -> None:
        self.partitions: frozenset[int] = frozenset()


@pytest.fixture
def assignment() -> Assignment:
    return Assignment()


def _readiness(assignment: Assignment, monkeypatch: pytest.MonkeyPatch) -> Readiness:
    readiness = Readiness(["t-freshness-changelog", "t-snapshots-changelog"], PARTITIONS)
    monkeypatch.setattr(readiness, "owned", lambda: assignment.partitions)
    return readiness


def _rebalance(readiness: Readiness, assignment: Assignment, held: set[int], gen: int) -> None:
    readiness.on_revoked()
    assignment.partitions = frozenset(held)
    readiness.on_assigned(gen)


def test_nothing_is_ready_before_the_first_recovery(
    assignment: Assignment, monkeypatch: pytest.MonkeyPatch
) -> None:
    readiness = _readiness(assignment, monkeypatch)
    assert not readiness.is_ready()  # no assignment at all: not "nobody else to ask"
    _rebalance(readiness, assignment, {0, 1, 2, 3}, gen=1)
    assert readiness.ready_partitions() == frozenset()
    assert not readiness.answers("products")
    readiness.on_recovered(1)
    assert readiness.is_ready()
    assert readiness.answers("products")


def test_a_kept_partition_answers_again_only_once_the_new_recovery_completed(
    assignment: Assignment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recovery replays a kept partition's changelog tail: its rows pass through older
    values meanwhile (the chaos harness caught a read answering one), so it waits too."""
    readiness = _readiness(assignment, monkeypatch)
    _rebalance(readiness, assignment, {0, 1}, gen=1)
    readiness.on_recovered(1)
    readiness.on_revoked()
    assert readiness.ready_partitions() == frozenset(), "nothing answers between the two halves"
    assignment.partitions = frozenset({1, 2})
    readiness.on_assigned(2)
    assert readiness.ready_partitions() == frozenset(), "kept partition 1 is being replayed"
    assert not readiness.answers("x") and not readiness.is_ready()
    readiness.on_recovered(2)
    assert readiness.ready_partitions() == {1, 2}


def test_a_recovery_of_an_older_generation_readies_nothing(
    assignment: Assignment, monkeypatch: pytest.MonkeyPatch
) -> None:
    readiness = _readiness(assignment, monkeypatch)
    _rebalance(readiness, assignment, {0, 1}, gen=1)
    readiness.on_revoked()  # another rebalance began while generation 1 recovered
    readiness.on_recovered(1)
    assert readiness.ready_partitions() == frozenset()
    assignment.partitions = frozenset({0, 1, 2, 3})
    readiness.on_assigned(2)
    readiness.on_recovered(1)
    assert readiness.ready_partitions() == frozenset()
    readiness.on_recovered(2)
    assert readiness.is_ready()


async def test_the_completion_signal_readies_the_generation_whose_recovery_completed(
    services: Services, assignment: Assignment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Faust's `on_rebalance_complete` says no generation, and a recovery of an older
    assignment can complete after a newer one was made (a join test caught a worker answering
    partitions it had not replayed): the receiver asks the recovery which one completed."""
    readiness = _readiness(assignment, monkeypatch)
    app.use(dataclasses.replace(services, readiness=readiness))
    recovery = cast(LayerRecovery, cast(TableManager, app.tables).recovery)
    _rebalance(readiness, assignment, {2, 3}, gen=1)
    _rebalance(readiness, assignment, {0, 1, 2, 3}, gen=2)  # before generation 1 recovered
    monkeypatch.setattr(recovery, "completed_generation", 1)
    await readiness_module._recovery_complete(app)
    assert readiness.ready_partitions() == frozenset(), "generation 1 completed, not 2"
    monkeypatch.setattr(recovery, "completed_generation", 2)
    await readiness_module._recovery_complete(app)
    assert readiness.is_ready()


def test_shutting_down_answers_nothing(
    assignment: Assignment, monkeypatch: pytest.MonkeyPatch
) -> None:
    readiness = _readiness(assignment, monkeypatch)
    _rebalance(readiness, assignment, {0, 1, 2, 3}, gen=1)
    readiness.on_recovered(1)
    readiness.shutting_down = True
    assert not readiness.is_ready()
    assert not any(readiness.answers(f"ns-{i}") for i in range(20))


Step = st.one_of(
    st.tuples(st.just("rebalance"), st.frozensets(st.integers(0, PARTITIONS - 1))),
    st.tuples(st.just("recovered"), st.none()),
    st.tuples(st.just("stale_recovered"), st.none()),
)


@given(st.lists(Step, max_size=30))
def test_a_partition_answers_only_if_recovered_since_it_was_newly_assigned(
    steps: list[tuple[str, frozenset[int] | None]],
) -> None:
    """The rule behind every answer, over any sequence of rebalances and recoveries."""
    assignment = Assignment()
    readiness = Readiness(["t-freshness-changelog"], PARTITIONS)
    readiness.owned = lambda: assignment.partitions  # type: ignore[method-assign]
    generation = 0
    recovered: set[int] = set()  # model: partitions whose rows are complete on this worker
    for action, held in steps:
        if action == "rebalance":
            assert held is not None
            generation += 1
            readiness.on_revoked()
            recovered = set()  # every partition is replayed, kept ones included
            assignment.partitions = held
            readiness.on_assigned(generation)
        elif action == "recovered":
            readiness.on_recovered(generation)
            recovered = set(assignment.partitions)
        else:
            readiness.on_recovered(generation - 1)  # a late signal of an older generation
        assert readiness.ready_partitions() <= recovered
        assert readiness.ready_partitions() <= assignment.partitions
        for name in ("a", "b", "c", "products"):
            if readiness.answers(name):
                assert partition_for(name, PARTITIONS) in recovered


def test_the_replay_summary_counts_from_where_the_recovery_was_first_seen() -> None:
    starts: dict[tuple[str, int], int] = {}
    first = [
        PartitionProgress(
            table="t", partition=0, replayed_offset=-1, last_offset=999, remaining=1000
        ),
        PartitionProgress(
            table="t", partition=1, replayed_offset=99, last_offset=599, remaining=500
        ),
    ]
    assert replay_summary(first, starts, 0.0) == ReplaySummary(
        records_replayed=0, records_to_replay=1500, rate_per_s=None, eta_s=None
    )
    later = [
        PartitionProgress(
            table="t", partition=0, replayed_offset=499, last_offset=999, remaining=500
        ),
        PartitionProgress(
            table="t", partition=1, replayed_offset=349, last_offset=599, remaining=250
        ),
    ]
    summary = replay_summary(later, starts, 2.0)
    assert summary == ReplaySummary(
        records_replayed=750, records_to_replay=1500, rate_per_s=375.0, eta_s=2.0
    ), "750 of 1,500 in 2 s: 375 records/s, 2 s to go"


class _Recovering:
    """A readiness whose partitions 0 and 1 replay 100 records per sample."""

    def __init__(self) -> None:
        self.replayed = -1
        self.inner = Readiness(["t-freshness-changelog"], PARTITIONS)

    def recovery_progress(self) -> list[PartitionProgress]:
        self.replayed += 100
        return [
            PartitionProgress(
                table="t-freshness-changelog",
                partition=partition,
                replayed_offset=self.replayed,
                last_offset=99_999,
                remaining=99_999 - self.replayed,
            )
            for partition in (0, 1)
        ]

    def replay_summary(self, progress: list[PartitionProgress]) -> ReplaySummary:
        return self.inner.replay_summary(progress)


async def test_a_running_recovery_is_logged_every_few_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="layer.readiness")
    task = asyncio.create_task(
        log_recovery_progress(
            cast(Readiness, _Recovering()), sample_interval_s=0.01, log_interval_s=0.05
        )
    )
    await asyncio.sleep(0.3)
    task.cancel()
    lines = [r.getMessage() for r in caplog.records if r.name == "layer.readiness"]
    assert 2 <= len(lines) <= 6, "one line per log interval, not one per sample"
    assert lines[-1].startswith("recovering 2 table partitions: ")
    assert "records replayed" in lines[-1] and "records/s" in lines[-1] and "ETA" in lines[-1]


async def test_the_progress_log_starts_with_an_assignment_and_stops_with_its_recovery(
    app: faust.App,
) -> None:
    """Faust starts timers only after the first recovery: the log is a task of its own."""
    readiness_module._start_progress_log()
    task = readiness_module._progress_log
    assert task is not None and not task.done(), "running while the partitions recover"
    readiness_module._start_progress_log()
    assert readiness_module._progress_log is task, "a second assignment keeps the one task"
    readiness_module._stop_progress_log()
    await asyncio.sleep(0)
    assert task.cancelled() or task.done()
    assert readiness_module._progress_log is None
