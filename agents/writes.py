"""The writes handler: write notifications → `on_write`, a whole fetch at a time, coalesced.

The `writes` topic is delivered a fetch at a time (layer.batch_consumer says why Faust's
per-message stream path is too slow for it), and many notifications for one namespace in a
batch are one state change and one table write: `on_write` with the batch's latest write
time gives the same state as applying them one by one (tested in tests/unit).

Layer's own notifications may carry asynchronous upstream writes accepted or ended
(`operations_started`, `operation_finished`): they are applied after the write time, with
`on_operations` (agents/operations.py follows the pending ones to their end).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

from faust.types import Message
from pydantic import ValidationError

from agents.dead_letters import dead_letter
from agents.transitions import apply_transition, partition_of
from layer.app import app, topics
from layer.clock import now_ms
from layer.events import parse_write_notification
from tables.freshness import Freshness, effective_write_ms, on_operations, on_write

__all__ = ["Coalesced", "apply_write_notifications", "coalesce_writes", "forward_to_owner"]


class OperationChanges(NamedTuple):
    """Asynchronous upstream writes of one namespace accepted and ended, in one batch."""

    started: dict[str, int]
    finished: set[str]


class Coalesced(NamedTuple):
    """One batch's valid notifications (on their own partition)."""

    #: Latest effective write time per namespace: `{namespace: (written_at_ms, partition)}`.
    latest: dict[str, tuple[int, int]]
    #: The effective write time of each notification (for the lag histogram).
    written_at_ms: list[int]
    #: Operations accepted or ended, per namespace (only Layer's own notifications have any).
    operations: dict[str, OperationChanges]


async def coalesce_writes(messages: list[Message]) -> Coalesced:
    """Coalesce a batch per namespace; invalid messages are dead-lettered and misrouted ones
    forwarded on the way."""
    latest: dict[str, tuple[int, int]] = {}
    written: list[int] = []
    operations: dict[str, OperationChanges] = {}
    for message in messages:
        try:
            note = parse_write_notification(message.value)
        except ValidationError as exc:
            await dead_letter(message, exc)
            continue
        if (partition := partition_of(note.namespace)) != message.partition:
            await forward_to_owner(message, note.namespace, partition)
            continue
        record_ms = int(message.timestamp * 1000) if message.timestamp else None
        written_at = effective_write_ms(note.written_at_ms, record_ms)
        written.append(written_at)
        seen = latest.get(note.namespace)
        if seen is None or written_at > seen[0]:
            latest[note.namespace] = (written_at, partition)
        if note.operations_started or note.operation_finished:
            changes = operations.setdefault(note.namespace, OperationChanges({}, set()))
            for started in note.operations_started or ():
                changes.started.setdefault(started.location, started.accepted_at_ms)
            if note.operation_finished:
                changes.finished.add(note.operation_finished)
    app.services.metrics.write_notifications.inc(len(written))
    return Coalesced(latest, written, operations)


async def forward_to_owner(message: Message, namespace: str, partition: int) -> None:
    """Re-send a notification that arrived on another partition than its namespace's.

    The namespace's row lives with the owner of its own partition (docs/events.md): applied
    here, the owner would never see the write and could call the namespace stable. A producer
    keying by something else, or using another partitioner (librdkafka's default), lands here;
    the copy keeps the value and the record time, so it means the same write.
    """
    app.services.metrics.write_notifications_forwarded.inc()
    await topics.writes.send(
        key=namespace.encode(),
        value=message.value,
        partition=partition,
        timestamp=message.timestamp or None,
    )


async def apply_write_notifications(messages: list[Message]) -> None:
    """Mark written namespaces unstable (and due) as soon as their notification arrives."""
    services = app.services
    services.metrics.write_batches.inc()
    services.metrics.write_batch_size.observe(len(messages))
    batch = await coalesce_writes(messages)
    for namespace, (written_at, partition) in batch.latest.items():
        changes = batch.operations.get(namespace)
        if changes is None:
            transition = partial(on_write, namespace=namespace, written_at_ms=written_at)
        else:
            transition = partial(_write_with_operations, namespace, written_at, changes)
        await apply_transition(namespace, partition, transition)
        if changes is not None:
            services.follower.watch(namespace, partition)
    # Lag as of the batch's application; a write time ahead of this clock (producer skew) is 0.
    applied_ms = now_ms()
    observe = services.metrics.notification_lag_seconds.observe
    for written_at in batch.written_at_ms:
        observe(max(0, applied_ms - written_at) / 1000)


def _write_with_operations(
    namespace: str, written_at: int, changes: OperationChanges, prev: Freshness | None
) -> Freshness:
    state = on_write(prev, namespace, written_at)
    return on_operations(state, namespace, started=changes.started, finished=changes.finished)
