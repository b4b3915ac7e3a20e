"""Table recovery a fetch at a time: changelog records applied to the store in bulk.

Faust replays a changelog one record at a time: each record is decoded into an event, handed
to the changelog channel through `Service.wait_first` (four tasks per message), queued, and
taken off the queue by the recovery loop, which buffers it for `apply_changelog_batch`. On
this machine that path, not the broker, bounds a recovery at ~9,000 records/s (BENCHMARKS.md,
"Scale: a million namespaces"): 1M namespaces would take two minutes.

`RecoveringConsumer` takes the records of an *active* changelog partition under recovery out
of the consumer's fetch before they become events, and applies each partition's records to
the table's store in one call (a store that keeps the changelog's bytes,
`tables.compact_store`, takes them as they are; any other store gets them decoded as Faust's
channel would). It then moves Faust's offset for the partition (`active_offsets`, which
`/readyz` reports) and, once nothing is left to replay, ends the recovery as Faust's own
loop does (`Recovery._slurp_changelogs`: flush its buffers, mark the end, signal it), without
waiting for that loop's 5-second idle timeout. Records of standby partitions or of another
generation are left to Faust, which skips what was applied already (its offset check).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from time import monotonic
from typing import Any, cast

from faust.tables.recovery import Recovery
from faust.types import TP, Message

from layer.batch_consumer import BatchingConsumer

__all__ = ["ChangelogRecord", "RecoveringConsumer", "apply_changelog_records"]


class ChangelogRecord:
    """The part of a Faust event a store's `apply_changelog_batch` reads."""

    __slots__ = ("key", "message", "value")

    def __init__(self, key: Any, value: Any, message: Message) -> None:
        self.key, self.value, self.message = key, value, message


def apply_changelog_records(app: Any, table: Any, messages: list[Message]) -> None:
    """Apply `messages` (one changelog partition, in offset order) to `table`'s store."""
    store = table.data
    apply_raw = getattr(store, "apply_changelog_messages", None)
    if apply_raw is not None:
        apply_raw(messages)
        return
    schema = table.changelog_topic.schema
    records: Iterable[ChangelogRecord] = (
        ChangelogRecord(
            schema.loads_key(app, message),
            None if message.value is None else schema.loads_value(app, message),
            message,
        )
        for message in messages
    )
    table.apply_changelog_batch(records)


class RecoveringConsumer(BatchingConsumer):
    """Layer's consumer, applying the changelog records of a recovery a fetch at a time."""

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        recovery = cast(Recovery, self.app.tables.recovery)  # type: ignore[attr-defined]
        diverted: dict[TP, list[Message]] = {}
        async for tp, message in super().getmany(timeout):
            if recovery.in_recovery and tp in recovery.active_tps and self._is_current(message):
                diverted.setdefault(tp, []).append(message)
            else:
                yield tp, message
        if diverted:
            self._apply(recovery, diverted)

    def _apply(self, recovery: Recovery, diverted: dict[TP, list[Message]]) -> None:
        """Apply what Faust has not applied yet, move its offsets; end the recovery if done."""
        if any(recovery.buffers.values()):
            recovery.flush_buffers()  # records Faust buffered come first
        now = monotonic()
        for tp, messages in diverted.items():
            seen = recovery.active_offsets.get(tp)
            fresh = messages if seen is None else [m for m in messages if m.offset > seen]
            if not fresh:
                continue
            apply_changelog_records(self.app, recovery.tp_to_table[tp], fresh)
            offset = fresh[-1].offset
            recovery.active_offsets[tp] = offset
            recovery._active_events_received_at[tp] = now
            self._read_offset[tp] = offset
        if recovery.in_recovery and not recovery.need_recovery():
            # What Recovery._slurp_changelogs does when it finds nothing left to replay.
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
