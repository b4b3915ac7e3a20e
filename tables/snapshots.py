"""Snapshot history: the stable points of a namespace, newest first, bounded.

A snapshot is appended when a transition advances `stable_as_of` *and* the observed content
(row count, logical bytes or `updated_at`) differs from the newest snapshot, so a quiet
namespace polled every minute does not fill its history with copies of itself.
"""

from __future__ import annotations

import faust

from tables.freshness import Freshness

__all__ = [
    "Snapshot",
    "SnapshotHistory",
    "record_snapshot",
    "snapshot_as_of",
    "watermark_advanced",
]


class Snapshot(faust.Record, serializer="json", namespace="layer.Snapshot"):
    """The namespace's content as observed when the index was caught up at `stable_as_of`."""

    stable_as_of: int
    approx_row_count: int | None = None
    approx_logical_bytes: int | None = None
    updated_at: str | None = None

    def same_content(self, other: Snapshot) -> bool:
        return (self.approx_row_count, self.approx_logical_bytes, self.updated_at) == (
            other.approx_row_count,
            other.approx_logical_bytes,
            other.updated_at,
        )


class SnapshotHistory(faust.Record, serializer="json", namespace="layer.SnapshotHistory"):
    """A namespace's snapshots, newest first."""

    snapshots: list[Snapshot]


def watermark_advanced(prev: Freshness | None, new: Freshness) -> bool:
    """Whether `prev` → `new` moved `stable_as_of` forward: the only transitions that may
    add a snapshot (the history need not even be read for the others)."""
    if new.stable_as_of is None:
        return False
    return prev is None or prev.stable_as_of is None or new.stable_as_of > prev.stable_as_of


def record_snapshot(
    history: SnapshotHistory | None, prev: Freshness | None, new: Freshness, *, limit: int
) -> SnapshotHistory | None:
    """The history after the transition `prev` → `new`, or None when it does not change."""
    if new.stable_as_of is None or not watermark_advanced(prev, new):
        return None
    candidate = Snapshot(
        stable_as_of=new.stable_as_of,
        approx_row_count=new.approx_row_count,
        approx_logical_bytes=new.approx_logical_bytes,
        updated_at=new.updated_at,
    )
    snapshots = list(history.snapshots) if history is not None else []
    if snapshots and snapshots[0].same_content(candidate):
        return None
    return SnapshotHistory(snapshots=[candidate, *snapshots][:limit])


def snapshot_as_of(history: SnapshotHistory | None, as_of_ms: int) -> Snapshot | None:
    """The snapshot in force at `as_of_ms`: the newest one taken at or before it."""
    if history is None:
        return None
    for snapshot in history.snapshots:
        if snapshot.stable_as_of <= as_of_ms:
            return snapshot
    return None
