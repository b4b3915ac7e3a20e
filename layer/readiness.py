"""Which table partitions this worker may answer from: owned *and* recovered, not shutting down.

Faust keeps readiness worker-wide (`app.rebalancing`, recovery `completed`), but an answer is
about one namespace, so it is decided per partition (all tables are co-partitioned, so a
partition number names the same slice of every table):

- a partition is *ready* once the recovery that followed its assignment completed (Faust's
  `on_rebalance_complete`: every changelog record of the assigned partitions is applied);
- a rebalance makes every partition unready at revocation (another worker may be about to
  own it and apply writes this one will never see) until the recovery of the new assignment
  completes, kept partitions included: that recovery replays each kept partition's changelog
  from where the last one ended, this worker's own writes since, and while it runs a row
  passes through its older values (a read then answered a `stable_as_of` seconds older than
  the one before it: the chaos harness saw it). Nor does "kept" prove nobody else wrote: a
  worker whose session expired rejoins with a partition another owned meanwhile;
- a worker that is shutting down answers nothing (it is handing its partitions over).

`recovery_progress` tells operators how far each unready partition's replay is (records
applied against the changelog's end), and `replay_summary` the whole recovery's: records
replayed of records to replay, the rate and the time left, for `/readyz` and the log line
`log_recovery_progress` writes every few seconds while a recovery runs. That is a plain task
started when partitions are assigned and cancelled when their recovery completes: Faust starts
the app's timers only once the first recovery has completed, so a timer would never report
the recovery an operator waits for, the one at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

from faust.tables.manager import TableManager
from faust.types import TP
from pydantic import BaseModel

from layer.app import app, on
from layer.changelog_apply import LayerRecovery
from layer.events import partition_for

__all__ = [
    "PartitionProgress",
    "Readiness",
    "ReplaySummary",
    "log_recovery_progress",
    "replay_summary",
]

log = logging.getLogger(__name__)

#: How often the log says how far a recovery got (while one runs).
RECOVERY_LOG_INTERVAL_S = 5.0
#: How often a running recovery's progress is sampled (its rate is measured from the first
#: sample of the assignment on).
RECOVERY_SAMPLE_INTERVAL_S = 1.0


class PartitionProgress(BaseModel):
    """How far the replay of one table partition's changelog got."""

    table: str
    partition: int
    #: Offset of the last changelog record applied (-1: none yet).
    replayed_offset: int | None
    #: Offset of the changelog's last record when the recovery started.
    last_offset: int | None
    remaining: int | None


class ReplaySummary(BaseModel):
    """How far the whole recovery of this worker's assignment got."""

    #: Changelog records applied since the recovery was first seen running.
    records_replayed: int
    #: Records the recovery had left to apply when first seen running (plus any written since).
    records_to_replay: int
    #: Records applied per second since then; None until measurable.
    rate_per_s: float | None
    #: Seconds left at that rate; None until measurable.
    eta_s: float | None


def replay_summary(
    progress: Iterable[PartitionProgress],
    start_offsets: dict[tuple[str, int], int],
    elapsed_s: float,
) -> ReplaySummary:
    """Sum the partitions' progress against the offsets they were first seen at.

    `start_offsets` holds, per `(table, partition)`, the replayed offset when the recovery was
    first observed; partitions not in it yet are added (that is their start).
    """
    replayed = to_replay = 0
    for p in progress:
        if p.replayed_offset is None or p.last_offset is None:
            continue
        start = start_offsets.setdefault((p.table, p.partition), p.replayed_offset)
        replayed += max(0, p.replayed_offset - start)
        to_replay += max(0, p.last_offset - start)
    rate = replayed / elapsed_s if elapsed_s > 0 and replayed > 0 else None
    remaining = max(0, to_replay - replayed)
    return ReplaySummary(
        records_replayed=replayed,
        records_to_replay=to_replay,
        rate_per_s=round(rate, 1) if rate is not None else None,
        eta_s=round(remaining / rate, 1) if rate is not None else None,
    )


class Readiness:
    """Per-partition readiness of this worker, driven by Faust's rebalance signals."""

    def __init__(self, changelog_topics: Iterable[str], partitions: int) -> None:
        self._changelog_topics = frozenset(changelog_topics)
        self._ownership_topic = sorted(self._changelog_topics)[0]
        self._partitions = partitions
        self._ready: frozenset[int] = frozenset()
        self._owned: frozenset[int] | None = None
        self._assigned_generation: int | None = None
        self.shutting_down = False
        self._replay_start_offsets: dict[tuple[str, int], int] = {}
        self._replay_first_seen_at: float | None = None

    def owned(self) -> frozenset[int]:
        """Partitions this worker actively owns in the current assignment (standbys excluded).

        Kept until the next rebalance signal (every read asks: rebuilding it from Faust's
        assignor cost ~25 µs a read, bench/http_api.py's profile)."""
        if self._owned is None:
            self._owned = frozenset(
                tp.partition
                for tp in app.assignor.assigned_actives()
                if tp.topic == self._ownership_topic
            )
        return self._owned

    def ready_partitions(self) -> frozenset[int]:
        if self.shutting_down:
            return frozenset()
        return self._ready & self.owned()

    def answers(self, namespace: str) -> bool:
        """True if this worker may answer `namespace` from its tables right now."""
        if self.shutting_down:
            return False
        partition = partition_for(namespace, self._partitions)
        return partition in self._ready and partition in self.owned()

    def is_ready(self) -> bool:
        """`/readyz`: holds partitions and every one of them is ready."""
        owned = self.owned()
        return bool(owned) and not self.shutting_down and owned <= self._ready

    # Faust's rebalance, in its order: revoked → assigned → (recovery) → complete.
    def on_revoked(self) -> None:
        self._owned = None
        self._ready = frozenset()
        self._assigned_generation = None

    def on_assigned(self, generation_id: int) -> None:
        self._owned = None
        self._ready = frozenset()
        self._assigned_generation = generation_id
        self._replay_start_offsets = {}
        self._replay_first_seen_at = None

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

    def replay_summary(self, progress: list[PartitionProgress] | None = None) -> ReplaySummary:
        """The recovery as a whole: records replayed of records to replay, rate, ETA."""
        if progress is None:
            progress = self.recovery_progress()
        now = time.monotonic()
        if self._replay_first_seen_at is None and any(
            p.replayed_offset is not None for p in progress
        ):
            self._replay_first_seen_at = now
        started = self._replay_first_seen_at
        return replay_summary(
            progress, self._replay_start_offsets, now - started if started is not None else 0.0
        )


@on(app.on_partitions_revoked)
async def _partitions_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
    app.services.readiness.on_revoked()


@on(app.on_partitions_assigned)
async def _partitions_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
    app.services.readiness.on_assigned(app.consumer_generation_id)
    _start_progress_log()


@on(app.on_rebalance_complete)
async def _recovery_complete(sender: Any, *args: Any, **kwargs: Any) -> None:
    """A recovery completed: the one of the latest assignment, or of an older one that a
    newer assignment overtook (which makes nothing ready)."""
    completed = cast(LayerRecovery, cast(TableManager, app.tables).recovery).completed_generation
    if completed is not None:
        app.services.readiness.on_recovered(completed)
    _stop_progress_log()


#: The running `log_recovery_progress` task, if a recovery is being reported.
_progress_log: asyncio.Task[None] | None = None


def _start_progress_log() -> None:
    """Report the recovery that follows this assignment (the task of the last one goes on).

    A task of its own, not one of the app's futures: it may be cancelled before it ever ran
    (a recovery with nothing to replay), which a task built on the coroutine itself allows.
    The worker cancels every task left when it stops, mid-recovery included.
    """
    global _progress_log
    if _progress_log is None or _progress_log.done():
        _progress_log = asyncio.ensure_future(
            log_recovery_progress(app.services.readiness), loop=app.loop
        )


def _stop_progress_log() -> None:
    global _progress_log
    if _progress_log is not None:
        _progress_log.cancel()
        _progress_log = None


async def log_recovery_progress(
    readiness: Readiness,
    *,
    sample_interval_s: float = RECOVERY_SAMPLE_INTERVAL_S,
    log_interval_s: float = RECOVERY_LOG_INTERVAL_S,
) -> None:
    """While partitions recover, say how far every `log_interval_s` (until cancelled)."""
    last_logged_at = time.monotonic()
    while True:
        await asyncio.sleep(sample_interval_s)
        try:
            all_progress = readiness.recovery_progress()
            summary = readiness.replay_summary(all_progress)  # also samples the start offsets
        except Exception:  # a log line is not worth the worker: say so and stop reporting
            log.exception("cannot report the recovery's progress")
            return
        progress = [p for p in all_progress if p.remaining]
        now = time.monotonic()
        if not progress or now - last_logged_at < log_interval_s:
            continue
        last_logged_at = now
        log.info(
            "recovering %d table partitions: %d of %d records replayed, %s records/s, "
            "ETA %s s, %d records to go: %s",
            len(progress),
            summary.records_replayed,
            summary.records_to_replay,
            summary.rate_per_s if summary.rate_per_s is not None else "?",
            summary.eta_s if summary.eta_s is not None else "?",
            sum(p.remaining or 0 for p in progress),
            ", ".join(
                f"{p.table}[{p.partition}] {p.replayed_offset}/{p.last_offset}" for p in progress
            ),
        )
