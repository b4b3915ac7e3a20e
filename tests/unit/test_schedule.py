"""DueSchedule: the per-partition heap of poll times, re-checked against the table."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.schedule import DueSchedule


def table_lookup(table: dict[str, int]) -> Callable[[str], int | None]:
    """`current_next_poll_ms` over a plain dict standing in for the freshness table."""
    return table.get


def loaded(partition: int, table: dict[str, int]) -> DueSchedule:
    schedule = DueSchedule()
    schedule.load(partition, [(when, ns) for ns, when in table.items()])
    return schedule


def test_empty_schedule_has_no_partitions_and_nothing_due() -> None:
    schedule = DueSchedule()
    assert len(schedule) == 0
    assert not schedule.has_partition(0)
    assert schedule.pop_due(0, 10**13, lambda ns: 0, limit=10) == []


def test_loaded_partition_is_known_even_when_empty() -> None:
    schedule = DueSchedule()
    schedule.load(3, [])
    assert schedule.has_partition(3)
    assert not schedule.has_partition(0)


def test_pop_due_returns_due_namespaces_earliest_first() -> None:
    table = {"c": 300, "a": 100, "b": 200, "later": 5_000}
    schedule = loaded(0, table)
    assert schedule.pop_due(0, 300, table_lookup(table), limit=10) == ["a", "b", "c"]
    assert len(schedule) == 1


@pytest.mark.parametrize(("now_ms", "expected"), [(99, []), (100, ["a"]), (101, ["a"])])
def test_namespace_is_due_once_the_clock_reaches_its_poll_time(
    now_ms: int, expected: list[str]
) -> None:
    table = {"a": 100}
    assert loaded(0, table).pop_due(0, now_ms, table_lookup(table), limit=10) == expected


def test_pop_due_returns_at_most_limit_and_keeps_the_rest() -> None:
    table = {f"ns-{i}": i for i in range(5)}
    schedule = loaded(0, table)
    assert schedule.pop_due(0, 100, table_lookup(table), limit=2) == ["ns-0", "ns-1"]
    assert schedule.pop_due(0, 100, table_lookup(table), limit=2) == ["ns-2", "ns-3"]
    assert schedule.pop_due(0, 100, table_lookup(table), limit=2) == ["ns-4"]


def test_popped_namespace_is_not_due_again_until_rescheduled() -> None:
    table = {"a": 100}
    schedule = loaded(0, table)
    assert schedule.pop_due(0, 100, table_lookup(table), limit=10) == ["a"]
    assert schedule.pop_due(0, 200, table_lookup(table), limit=10) == []
    schedule.schedule(0, "a", 150)
    table["a"] = 150
    assert schedule.pop_due(0, 200, table_lookup(table), limit=10) == ["a"]


def test_entry_older_than_the_tables_poll_time_is_stale_and_dropped() -> None:
    table = {"a": 100}
    schedule = loaded(0, table)
    table["a"] = 500
    schedule.schedule(0, "a", 500)
    assert schedule.pop_due(0, 200, table_lookup(table), limit=10) == []
    assert len(schedule) == 1, "the stale entry is gone, the current one stays"
    assert schedule.pop_due(0, 500, table_lookup(table), limit=10) == ["a"]


def test_rescheduling_earlier_makes_the_namespace_due_at_the_earlier_time() -> None:
    table = {"a": 60_000}
    schedule = loaded(0, table)
    table["a"] = 0  # a write made it due at once
    schedule.schedule(0, "a", 0)
    assert schedule.pop_due(0, 10, table_lookup(table), limit=10) == ["a"]
    assert schedule.pop_due(0, 60_000, table_lookup(table), limit=10) == [], "old entry is stale"


def test_namespace_removed_from_the_table_is_dropped() -> None:
    table = {"a": 100, "b": 100}
    schedule = loaded(0, table)
    del table["a"]
    assert schedule.pop_due(0, 100, table_lookup(table), limit=10) == ["b"]
    assert len(schedule) == 0


def test_duplicate_entries_yield_the_namespace_once_per_pop() -> None:
    table = {"a": 100}
    schedule = loaded(0, table)
    schedule.schedule(0, "a", 100)
    assert schedule.pop_due(0, 100, table_lookup(table), limit=10) == ["a"]


def test_namespace_rescheduled_back_to_an_earlier_time_is_returned_once_across_pops() -> None:
    """Regression: 0 → 1 → 0 left two (0, ns) entries; past the limit, a later pop gave ns again."""
    table = {"a": 0, "b": 0}
    schedule = DueSchedule()
    schedule.load(0, [(0, "a"), (0, "b")])
    for next_poll_ms in (1, 0):
        table["a"] = next_poll_ms
        schedule.schedule(0, "a", next_poll_ms)
    assert schedule.pop_due(0, 0, table_lookup(table), limit=1) == ["a"]
    assert schedule.pop_due(0, 0, table_lookup(table), limit=1) == ["b"]
    assert schedule.pop_due(0, 0, table_lookup(table), limit=1) == []


def test_partitions_are_independent() -> None:
    schedule = DueSchedule()
    schedule.load(0, [(100, "a")])
    schedule.load(1, [(100, "b")])
    table = {"a": 100, "b": 100}
    assert schedule.pop_due(0, 100, table_lookup(table), limit=10) == ["a"]
    assert schedule.pop_due(1, 100, table_lookup(table), limit=10) == ["b"]


def test_scheduling_on_an_unloaded_partition_is_ignored() -> None:
    """The partition is rebuilt from the table when it is first needed."""
    schedule = DueSchedule()
    schedule.schedule(7, "a", 0)
    assert not schedule.has_partition(7)
    assert len(schedule) == 0


def test_load_replaces_a_partitions_entries() -> None:
    schedule = DueSchedule()
    schedule.load(0, [(100, "a"), (200, "b")])
    schedule.load(0, [(300, "c")])
    assert len(schedule) == 1
    assert schedule.pop_due(0, 1_000, lambda ns: 300, limit=10) == ["c"]


def test_clear_forgets_every_partition() -> None:
    schedule = DueSchedule()
    schedule.load(0, [(100, "a")])
    schedule.load(1, [(100, "b")])
    schedule.clear()
    assert len(schedule) == 0
    assert not schedule.has_partition(0) and not schedule.has_partition(1)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(min_value=0, max_value=1_000)),
        max_size=40,
    ),
    now_ms=st.integers(min_value=0, max_value=1_000),
    limit=st.integers(min_value=1, max_value=5),
)
def test_pop_due_agrees_with_scanning_the_table(
    events: list[tuple[str, int]], now_ms: int, limit: int
) -> None:
    """Every change of next_poll_ms is scheduled: popping equals a scan of the table."""
    table: dict[str, int] = {}
    schedule = DueSchedule()
    schedule.load(0, [])
    for namespace, next_poll_ms in events:
        if table.get(namespace) != next_poll_ms:  # as agents.transitions does: on change only
            table[namespace] = next_poll_ms
            schedule.schedule(0, namespace, next_poll_ms)
    due_by_scan = sorted((when, ns) for ns, when in table.items() if when <= now_ms)
    popped: list[str] = []
    while batch := schedule.pop_due(0, now_ms, table_lookup(table), limit=limit):
        assert len(batch) <= limit
        assert len(set(batch)) == len(batch)
        popped.extend(batch)
    assert sorted(popped) == sorted(ns for _, ns in due_by_scan)
    assert len(popped) == len(set(popped)), "a namespace is due once per change"


def test_the_written_lane_is_never_behind_an_overdue_confirmation_lane() -> None:
    """Stable namespaces overdue for re-confirmation do not delay a written one: it has a
    heap of its own, and confirmations come out of theirs oldest first, as asked."""
    table = {f"stable-{i}": i for i in range(1_000)} | {"written": 5_000}
    schedule = DueSchedule()
    schedule.load(
        0,
        [(table["written"], "written")],
        confirmations=[(when, ns) for ns, when in table.items() if ns != "written"],
    )
    lookup = table_lookup(table)
    assert schedule.pop_due(0, 5_000, lookup, limit=10) == ["written"]
    oldest = schedule.pop_due(0, 5_000, lookup, limit=3, confirmations=True)
    assert oldest == ["stable-0", "stable-1", "stable-2"]
    assert len(schedule) == 997, "the confirmations the budget did not take stay scheduled"


def test_a_namespace_moves_lanes_when_its_time_is_scheduled_again() -> None:
    table = {"a": 100}
    schedule = DueSchedule()
    schedule.load(0, [], confirmations=[(100, "a")])
    table["a"] = 150  # written: due again, in the written lane
    schedule.schedule(0, "a", 150)
    lookup = table_lookup(table)
    assert schedule.pop_due(0, 200, lookup, limit=10, confirmations=True) == [], "stale there"
    assert schedule.pop_due(0, 200, lookup, limit=10) == ["a"]
