"""Which namespaces of a partition are due for a poll, without scanning the table.

The table is the truth; this is a derived index (heaps per partition of
`(next_poll_ms, namespace)`) so a tick costs O(due · log n) instead of a scan of every key.
Every change of a namespace's `next_poll_ms` is scheduled, so older entries go stale;
`pop_due` re-checks each popped entry against the table and drops stale ones.
It is rebuilt from the table whenever partition ownership changes.

Each partition has two lanes. A namespace that is not stable (written, updating, unknown,
failing) is in the *written* lane: its poll is what makes it stable again, so it is polled
as soon as it is due. A stable namespace is in the *confirmation* lane: its next poll only
re-confirms it (a write would move it to the written lane at once). With more stable
namespaces than the upstream budget can re-confirm in a slow interval, the confirmation
lane falls behind, oldest first, while the written lane, a heap of its own, is never
behind it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

__all__ = ["DueSchedule"]


Entry = tuple[int, str]


class DueSchedule:
    """Per-partition min-heaps of poll times, one per lane."""

    def __init__(self) -> None:
        self._written: dict[int, list[Entry]] = {}
        self._confirm: dict[int, list[Entry]] = {}
        #: Counts `clear`s: a rebuild in progress (`begin`) belongs to one generation.
        self.generation = 0

    def clear(self) -> None:
        """Forget everything (partitions were reassigned)."""
        self._written.clear()
        self._confirm.clear()
        self.generation += 1

    def begin(self, partitions: Iterable[int]) -> int:
        """Start a rebuild: empty heaps for `partitions`, filled by `schedule` as the table is
        read (entries scheduled meanwhile land in them too); returns this rebuild's
        generation, which a `clear` ends (a filler stops when it changed)."""
        self.clear()
        for partition in partitions:
            self._written[partition] = []
            self._confirm[partition] = []
        return self.generation

    def has_partition(self, partition: int) -> bool:
        return partition in self._written

    def load(
        self,
        partition: int,
        entries: Iterable[Entry],
        confirmations: Iterable[Entry] = (),
    ) -> None:
        """Replace a partition's `(next_poll_ms, namespace)` entries: those of namespaces that
        are not stable, and the `confirmations` of stable ones."""
        written, confirm = list(entries), list(confirmations)
        heapq.heapify(written)
        heapq.heapify(confirm)
        self._written[partition] = written
        self._confirm[partition] = confirm

    def schedule(
        self, partition: int, namespace: str, next_poll_ms: int, *, confirmation: bool = False
    ) -> None:
        """Record that `namespace` is next due at `next_poll_ms` (older entries go stale);
        `confirmation`: the poll only re-confirms a stable namespace."""
        heap = (self._confirm if confirmation else self._written).get(partition)
        if heap is not None:
            heapq.heappush(heap, (next_poll_ms, namespace))

    def pop_due(
        self,
        partition: int,
        now_ms: int,
        current_next_poll_ms: Callable[[str], int | None],
        limit: int,
        *,
        confirmations: bool = False,
    ) -> list[str]:
        """Remove and return up to `limit` namespaces due at `now_ms`, earliest first, from the
        written lane (or the confirmation lane).

        `current_next_poll_ms(ns)` gives the table's present value (None: gone). Every change
        of `next_poll_ms` is scheduled, so an entry that disagrees with it is stale: the
        current time has an entry of its own. Stale entries are dropped.
        """
        heap = (self._confirm if confirmations else self._written).get(partition)
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
        lanes = (*self._written.values(), *self._confirm.values())
        return sum(len(heap) for heap in lanes)
