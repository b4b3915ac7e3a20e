"""The writes agent: write notifications → `on_write`, consumed in batches and coalesced.

Many notifications for one namespace in a batch are one state change and one table write:
`on_write` with the batch's latest write time gives the same state as applying them one
by one (tested in tests/unit), which is what lets one worker keep up with 10k/s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from faust.types import EventT
from pydantic import ValidationError

from agents.batching import take_events
from agents.dead_letters import dead_letter
from agents.transitions import apply_transition
from layer.app import app, topics
from layer.events import parse_write_notification
from layer.metrics import counters
from tables.freshness import effective_write_ms, on_write

__all__ = ["WRITE_BATCH_MAX", "WRITE_BATCH_WITHIN_S", "apply_write_notifications"]

#: Largest batch taken from the stream at once, and how long to wait to fill one: large
#: enough to coalesce a burst, short enough that a lone write is applied within ~10 ms.
WRITE_BATCH_MAX = 2000
WRITE_BATCH_WITHIN_S = 0.01


async def coalesce_batch(events: list[EventT]) -> dict[str, tuple[int, int]]:
    """Latest effective write time per namespace in `events`: `{ns: (written_at_ms, partition)}`.

    Invalid messages are dead-lettered on the way.
    """
    latest: dict[str, tuple[int, int]] = {}
    counters["write_batches_total"] += 1
    for event in events:
        message = event.message
        try:
            note = parse_write_notification(message.value)
        except ValidationError as exc:
            await dead_letter(event, exc)
            continue
        counters["write_notifications_total"] += 1
        record_ms = int(message.timestamp * 1000) if message.timestamp else None
        written_at = effective_write_ms(note.written_at_ms, record_ms)
        seen = latest.get(note.namespace)
        if seen is None or written_at > seen[0]:
            latest[note.namespace] = (written_at, message.partition)
    return latest


@app.agent(topics.writes, name="apply_write_notifications")
async def apply_write_notifications(stream: AsyncIterator[bytes]) -> None:
    """Mark written namespaces unstable (and due) as soon as their notification arrives."""
    async for events in take_events(stream, WRITE_BATCH_MAX, WRITE_BATCH_WITHIN_S):  # type: ignore[arg-type]
        for namespace, (written_at, partition) in (await coalesce_batch(events)).items():
            await apply_transition(
                namespace,
                partition,
                lambda prev, ns=namespace, t=written_at: on_write(prev, ns, t),
            )
