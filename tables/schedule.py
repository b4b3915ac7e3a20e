"""Which namespaces of a partition are due for a poll, without scanning the table.

The table is the truth; this is a derived index (a heap per partition of
`(next_poll_ms, namespace)`) so a tick costs O(due · log n) instead of a scan of every key.
Every change of a namespace's `next_poll_ms` is scheduled, so older entries go stale;
`pop_due` re-checks each popped entry against the table and drops stale ones.
It is rebuilt from the table whenever partition ownership changes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

__all__ = ["DueSchedule"]


class DueSchedule:
    """Per-partition min-heaps of poll times."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}

    def clear(self) -> None:
        """Forget everything (partitions were reassigned)."""
        self._heaps.clear()

    def has_partition(self, partition: int) -> bool:
        return partition in self._heaps

    def load(self, partition: int, entries: Iterable[tuple[int, str]]) -> None:
        """Replace a partition's entries with `(next_poll_ms, namespace)` pairs."""
        heap = list(entries)
        heapq.heapify(heap)
        self._heaps[partition] = heap

    def schedule(self, partition: int, namespace: str, next_poll_ms: int) -> None:
        """Record that `namespace` is next due at `next_poll_ms` (older entries go stale)."""
        heap = self._heaps.get(partition)
        if heap is not None:
            heapq.heappush(heap, (next_poll_ms, namespace))

    def pop_due(
        self,
        partition: int,
        now_ms: int,
        current_next_poll_ms: Callable[[str], int | None],
        limit: int,
    ) -> list[str]:
        """Remove and return up to `limit` namespaces due at `now_ms`.

        `current_next_poll_ms(ns)` gives the table's present value (None: gone). Every change
        of `next_poll_ms` is scheduled, so an entry that disagrees with it is stale: the
        current time has an entry of its own. Stale entries are dropped.
        """
        heap = self._heaps.get(partition)
        due: list[str] = []
        while heap and heap[0][0] <= now_ms and len(due) < limit:
            entry = heapq.heappop(heap)
            # Identical entries (a time scheduled again after a round trip) sit next to
            # each other: drop them too, or a later pop would return the namespace again.
            while heap and heap[0] == entry:
                heapq.heappop(heap)
            when, namespace = entry
            if current_next_poll_ms(namespace) == when and namespace not in due:
                due.append(namespace)
        return due

    def __len__(self) -> int:
        return sum(len(heap) for heap in self._heaps.values())
