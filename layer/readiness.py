"""Which table partitions this worker may answer from: owned *and* recovered, not shutting down.

Faust keeps readiness worker-wide (`app.rebalancing`, recovery `completed`), but an answer is
about one namespace, so it is decided per partition (all tables are co-partitioned, so a
partition number names the same slice of every table):

- a partition is *ready* once the recovery that followed its assignment completed (Faust's
  `on_rebalance_complete`: every changelog record of the assigned partitions is applied);
- a rebalance makes every partition unready at revocation (another worker may be about to
  own it and apply writes this one will never see), and at assignment gives back those that
  were ready before and are assigned again: their rows are exactly what this worker wrote
  last, nobody else owned them in between, so they answer while the new ones recover;
- a worker that is shutting down answers nothing (it is handing its partitions over).

`recovery_progress` tells operators how far each unready partition's replay is (records
applied against the changelog's end), for `/readyz` and the periodic log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.types import TP
from pydantic import BaseModel

from layer.app import app, on
from layer.events import partition_for

__all__ = ["PartitionProgress", "Readiness"]

log = logging.getLogger(__name__)

#: How often the log says how far a recovery got (while one runs).
RECOVERY_LOG_INTERVAL_S = 5.0


class PartitionProgress(BaseModel):
    """How far the replay of one table partition's changelog got."""

    table: str
    partition: int
    #: Offset of the last changelog record applied (-1: none yet).
    replayed_offset: int | None
    #: Offset of the changelog's last record when the recovery started.
    last_offset: int | None
    remaining: int | None


class Readiness:
    """Per-partition readiness of this worker, driven by Faust's rebalance signals."""

    def __init__(self, changelog_topics: Iterable[str], partitions: int) -> None:
        self._changelog_topics = frozenset(changelog_topics)
        self._ownership_topic = sorted(self._changelog_topics)[0]
        self._partitions = partitions
        self._ready: frozenset[int] = frozenset()
        self._ready_before_rebalance: frozenset[int] = frozenset()
        self._assigned_generation: int | None = None
        self.shutting_down = False

    def owned(self) -> frozenset[int]:
        """Partitions this worker actively owns in the current assignment (standbys excluded)."""
        return frozenset(
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == self._ownership_topic
        )

    def ready_partitions(self) -> frozenset[int]:
        if self.shutting_down:
            return frozenset()
        return self._ready & self.owned()

    def answers(self, namespace: str) -> bool:
        """True if this worker may answer `namespace` from its tables right now."""
        return partition_for(namespace, self._partitions) in self.ready_partitions()

    def is_ready(self) -> bool:
        """`/readyz`: holds partitions and every one of them is ready."""
        owned = self.owned()
        return bool(owned) and not self.shutting_down and owned <= self._ready

    # Faust's rebalance, in its order: revoked → assigned → (recovery) → complete.
    def on_revoked(self) -> None:
        self._ready_before_rebalance = self._ready
        self._ready = frozenset()
        self._assigned_generation = None

    def on_assigned(self, generation_id: int) -> None:
        self._ready = self._ready_before_rebalance & self.owned()
        self._ready_before_rebalance = frozenset()
        self._assigned_generation = generation_id

    def on_recovered(self, generation_id: int) -> None:
        """The recovery of the assignment made in `generation_id` applied every record."""
        if self._assigned_generation is not None and generation_id == self._assigned_generation:
            self._ready = self.owned()

    def recovery_progress(self) -> list[PartitionProgress]:
        """Replay progress of every owned partition that is not ready yet."""
        unready = self.owned() - self.ready_partitions()
        recovery = cast(TableManager, app.tables).recovery  # the app builds a TableManager
        progress = []
        for topic in sorted(self._changelog_topics):
            for partition in sorted(unready):
                tp = TP(topic, partition)
                last = recovery.active_highwaters.get(tp)
                replayed = recovery.active_offsets.get(tp)
                remaining = None
                if last is not None and replayed is not None:
                    remaining = max(0, last - replayed)
                progress.append(
                    PartitionProgress(
                        table=topic,
                        partition=partition,
                        replayed_offset=replayed,
                        last_offset=last,
                        remaining=remaining,
                    )
                )
        return progress


@on(app.on_partitions_revoked)
async def _partitions_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
    app.services.readiness.on_revoked()


@on(app.on_partitions_assigned)
async def _partitions_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
    app.services.readiness.on_assigned(app.consumer_generation_id)


@on(app.on_rebalance_complete)
async def _recovery_complete(sender: Any, *args: Any, **kwargs: Any) -> None:
    app.services.readiness.on_recovered(app.consumer_generation_id)


@app.timer(interval=RECOVERY_LOG_INTERVAL_S)
async def log_recovery_progress() -> None:
    """While partitions recover, say how far (a long recovery must be seen to advance)."""
    progress = [p for p in app.services.readiness.recovery_progress() if p.remaining]
    if progress:
        log.info(
            "recovering %d table partitions, %d records to go: %s",
            len(progress),
            sum(p.remaining or 0 for p in progress),
            ", ".join(
                f"{p.table}[{p.partition}] {p.replayed_offset}/{p.last_offset}" for p in progress
            ),
        )
