"""Applying a transition: the one place a namespace's state is written, with its consequences.

A transition is a pure function `Freshness | None -> Freshness` (tables.freshness). Applying
it writes the table only when the state changed (the changelog replays every write, so
no-op writes cost recovery time), reschedules the namespace's next poll, appends a
snapshot when the watermark advanced over new content, and publishes exactly one
stability change when `is_stable` flipped or `stable_as_of` advanced (invariant 4).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from layer.app import app, settings, topics
from layer.clock import now_ms
from layer.events import StabilityChange, partition_for
from tables.encoded_store import fields_of
from tables.faust_tables import freshness_table, snapshots_table
from tables.freshness import Freshness, IndexStatus, stability_change
from tables.schedule import DueSchedule
from tables.snapshots import record_snapshot, watermark_advanced

__all__ = ["Transition", "apply_transition", "partition_of", "schedule_rows"]

Transition = Callable[[Freshness | None], Freshness]

#: Namespaces whose partition is remembered (murmur2 in Python costs microseconds, and the
#: writes handler checks every notification's partition).
PARTITION_CACHE_SIZE = 100_000


@functools.lru_cache(maxsize=PARTITION_CACHE_SIZE)
def partition_of(namespace: str) -> int:
    """The partition Kafka's default partitioner gives a namespace key (as producers do)."""
    return partition_for(namespace, settings.topic_partitions)


def schedule_rows(schedule: DueSchedule, keys: list[str]) -> None:
    """Schedule the rows of `keys` as they are now: stable namespaces in the confirmation
    lane, the others in the written lane (two fields of each row, no record built)."""
    for namespace, (status, next_poll_ms) in fields_of(
        freshness_table, keys, "status", "next_poll_ms"
    ):
        schedule.schedule(
            partition_of(namespace),
            namespace,
            next_poll_ms,
            confirmation=status == IndexStatus.STABLE,
        )


def _stability_event(prev: Freshness | None, new: Freshness) -> StabilityChange | None:
    kind = stability_change(prev, new)
    if kind is None:
        return None
    return StabilityChange(
        namespace=new.namespace,
        change=kind,
        is_stable=new.is_stable,
        stable_as_of=new.stable_as_of,
        previous_is_stable=prev.is_stable if prev is not None else False,
        previous_stable_as_of=prev.stable_as_of if prev is not None else None,
        index=new.index,
        observed_at_ms=now_ms(),
    )


async def apply_transition(namespace: str, partition: int, transition: Transition) -> Freshness:
    """Apply `transition` to `namespace` (which lives in `partition`); return the new state."""
    prev: Freshness | None = freshness_table.get(namespace)
    new = transition(prev)
    if new == prev:
        return new
    freshness_table[namespace] = new
    services = app.services
    services.metrics.table_writes.inc()
    # Always, not only when next_poll_ms moved: a poll consumed the namespace's entry, and
    # its result may leave next_poll_ms where it was (stale entries are dropped on pop).
    services.due_schedule.schedule(
        partition, namespace, new.next_poll_ms, confirmation=new.is_stable
    )
    if watermark_advanced(prev, new):  # else no snapshot: the history is not even read
        history = record_snapshot(
            snapshots_table.get(namespace), prev, new, limit=settings.snapshot_history_limit
        )
        if history is not None:
            snapshots_table[namespace] = history
    if (event := _stability_event(prev, new)) is not None:
        services.metrics.stability_events.inc()
        await topics.stability.send(key=namespace.encode(), value=event.model_dump_json().encode())
    return new
