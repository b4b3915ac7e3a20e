"""The watcher: a leader-only timer publishes poll ticks; the owner of each partition polls.

Polling happens where the state lives: the tick for partition p reaches the worker that
owns p, which polls that partition's *due* namespaces (tables.schedule) with bounded
concurrency and a global request-rate cap. Each poll result goes through the same
`apply_transition` as a write. Registrations (a namespace first seen on an HTTP read)
arrive on the same topic, keyed by namespace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from faust.types import TP, EventT, StreamT
from pydantic import ValidationError

from agents.dead_letters import dead_letter
from agents.transitions import Transition, apply_transition, reload_schedule
from layer.app import app, on, settings, topics
from layer.clock import now_ms
from layer.events import CacheActivity, PollTick, Registration, parse_tick_message
from layer.metrics import LayerMetrics
from layer.ratelimit import TokenBucket
from layer.upstream import Upstream, UpstreamError, UpstreamStatusError
from tables.faust_tables import freshness_table
from tables.freshness import (
    Freshness,
    WatcherPolicy,
    new_freshness,
    on_cache_activity,
    on_poll,
    on_poll_failure,
)
from tables.schedule import DueSchedule

__all__ = ["Poller", "poll_due_namespaces", "publish_poll_ticks"]

log = logging.getLogger(__name__)

#: Polls started per tick per partition at most: a backlog drains over several ticks
#: instead of flooding the concurrency slots in one go.
MAX_POLLS_PER_TICK = 1000


class Poller:
    """Polls upstream metadata for due namespaces; one poll per namespace at a time."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        schedule: DueSchedule,
        policy: WatcherPolicy,
        metrics: LayerMetrics,
        api_key: str,
        concurrency: int,
        max_rps: float,
    ):
        self.upstream = upstream
        self._schedule = schedule
        self._policy = policy
        self._metrics = metrics
        self._api_key = api_key
        self._slots = asyncio.Semaphore(concurrency)
        self._rate = TokenBucket(max_rps)
        self._in_flight: set[str] = set()
        self._tasks: dict[asyncio.Task[None], int] = {}  # poll → its namespace's partition

    def start_due(self, partition: int) -> int:
        """Start polls for the due namespaces of `partition`; return how many started."""
        if not self._schedule.has_partition(partition):
            reload_schedule()

        def current_next_poll(namespace: str) -> int | None:
            state = freshness_table.get(namespace)
            return state.next_poll_ms if state is not None else None

        due = self._schedule.pop_due(partition, now_ms(), current_next_poll, MAX_POLLS_PER_TICK)
        started = 0
        for namespace in due:
            if namespace in self._in_flight:
                continue
            self._in_flight.add(namespace)
            task = asyncio.create_task(self._poll(namespace, partition))
            self._tasks[task] = partition
            task.add_done_callback(self._forget)
            started += 1
        self._metrics.polls.inc(started)
        return started

    async def _poll(self, namespace: str, partition: int) -> None:
        try:
            async with self._slots:
                await self._rate.acquire()
                started_at, timer = now_ms(), time.perf_counter()
                transition = await self._observe(namespace, started_at)
            await apply_transition(namespace, partition, transition)
            self._metrics.poll_seconds.observe(time.perf_counter() - timer)
        except Exception:  # a poll must never take the agent down with it
            log.exception("poll of %s failed unexpectedly", namespace)
        finally:
            self._in_flight.discard(namespace)
            # The tick that started this poll consumed the namespace's schedule entry, and so
            # may ticks that met it in flight; the result may not have changed the row (a
            # stale answer), so put it back at whatever time the table now says.
            if (state := freshness_table.get(namespace)) is not None:
                self._schedule.schedule(partition, namespace, state.next_poll_ms)

    async def _observe(self, namespace: str, started_at: int) -> Transition:
        """Call upstream once; return the transition its answer (or failure) means."""
        try:
            _, observation = await self.upstream.metadata(namespace, api_key=self._api_key)
        except UpstreamError as exc:
            self._note_failure(exc)
            retry_after_ms = exc.retry_after_ms if isinstance(exc, UpstreamStatusError) else None
            return partial(
                on_poll_failure,
                namespace=namespace,
                error=str(exc),
                started_at_ms=started_at,
                policy=self._policy,
                retry_after_ms=retry_after_ms,
            )
        return partial(
            on_poll,
            namespace=namespace,
            observation=observation,
            started_at_ms=started_at,
            policy=self._policy,
        )

    def _note_failure(self, exc: UpstreamError) -> None:
        """Count a failed poll; upstream's 429 with `Retry-After` pauses every poll that long."""
        self._metrics.poll_failures.inc()
        if isinstance(exc, UpstreamStatusError) and exc.status_code == 429 and exc.retry_after_ms:
            self._rate.pause(exc.retry_after_ms / 1000)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def drain(self) -> None:
        """Wait for the polls in flight (used at shutdown and in tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel(self, partitions: set[int]) -> None:
        """Stop the polls of `partitions` and wait until they are gone.

        A partition handed to another worker must get no more writes from this one: a poll
        answering after the hand-over would append an outdated row to the changelog, behind
        the new owner's, and the next recovery would end on it.
        """
        doomed = [task for task, partition in self._tasks.items() if partition in partitions]
        for task in doomed:
            task.cancel()
        if doomed:
            await asyncio.gather(*doomed, return_exceptions=True)


def _registration(message: Registration, policy: WatcherPolicy) -> Transition:
    """Create the namespace's state if new; apply the read's upstream observation if any."""
    namespace = message.namespace
    observed = message.observation
    observation = observed.to_observation() if observed is not None else None

    def transition(prev: Freshness | None) -> Freshness:
        state = prev if prev is not None else new_freshness(namespace)
        if observed is None or observation is None:
            return state
        return on_poll(
            state, namespace, observation, started_at_ms=observed.started_at_ms, policy=policy
        )

    return transition


async def handle_tick_event(event: EventT[bytes]) -> None:
    """Apply one `ticks` message: a registration, or a tick for this event's partition."""
    try:
        message = parse_tick_message(event.message.value)
    except ValidationError as exc:
        await dead_letter(event.message, exc)
        return
    partition = event.message.partition
    services = app.services
    if isinstance(message, CacheActivity):
        namespace, at_ms = message.namespace, message.at_ms
        await apply_transition(
            namespace, partition, lambda prev: on_cache_activity(prev, namespace, at_ms)
        )
    elif isinstance(message, Registration):
        services.metrics.registrations.inc()
        await apply_transition(
            message.namespace, partition, _registration(message, services.policy)
        )
    else:
        services.poller.start_due(partition)
        services.follower.start_due(partition)  # asynchronous upstream writes


@app.agent(topics.ticks, name="poll_due_namespaces")
async def poll_due_namespaces(stream: StreamT[bytes]) -> None:
    """Poll the due namespaces of each ticked partition; register namespaces seen on reads."""
    async for event in stream.events():
        await handle_tick_event(event)


class _TickFailures:
    """Failed tick rounds in a row: the first is logged as a warning, the rest quietly (one
    a tick interval would flood the log during a broker outage), the recovery once."""

    streak = 0


@app.timer(interval=settings.tick_interval_ms / 1000, on_leader=True)
async def publish_poll_ticks() -> None:
    """One tick per partition: the owner of each partition polls what is due there.

    A failed send must not stop the worker (an exception here would crash Faust's timer and
    with it the app): it is logged and counted (`tick_send_failures_total`), and the round ends
    there; the next tick, one interval later, tries again. A lost tick only delays polls.
    """
    issued_at = now_ms()
    for partition in range(settings.topic_partitions):
        tick = PollTick(partition=partition, issued_at_ms=issued_at)
        try:
            await topics.ticks.send(partition=partition, value=tick.model_dump_json().encode())
        except Exception as exc:  # whatever the producer raised: the next tick retries
            app.services.metrics.tick_send_failures.inc()
            _TickFailures.streak += 1
            level = logging.WARNING if _TickFailures.streak == 1 else logging.DEBUG
            log.log(
                level, "poll tick for partition %d not sent (%r); next tick retries", partition, exc
            )
            return
    if _TickFailures.streak:
        log.info("poll ticks sent again after %d failed rounds", _TickFailures.streak)
        _TickFailures.streak = 0


@on(app.on_partitions_assigned)
async def forget_due_schedule(sender: Any, *args: Any, **kwargs: Any) -> None:
    """Ownership changed: the schedule is rebuilt from the table on the next tick."""
    app.services.due_schedule.clear()


@on(app.on_partitions_revoked)
async def stop_polls_of_revoked_partitions(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
    """Before a partition is handed over, its polls in flight end (see `Poller.cancel`).

    Faust has flushed the producer before this signal; a poll that wrote its row while being
    cancelled is flushed here, still before the hand-over.
    """
    await app.services.poller.cancel({tp.partition for tp in revoked})
    await app.producer.flush()


@on(app.on_before_shutdown)
async def close_upstream(sender: Any, *args: Any, **kwargs: Any) -> None:
    await app.services.poller.drain()
    await app.services.upstream.aclose()
