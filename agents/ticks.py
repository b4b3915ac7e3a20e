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
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from faust.types import TP, EventT, StreamT
from pydantic import ValidationError

from agents.dead_letters import dead_letter
from agents.transitions import Transition, apply_transition, partition_of, schedule_rows
from layer.app import app, on, settings, topics
from layer.clock import now_ms
from layer.events import (
    CacheActivity,
    PollTick,
    Registration,
    Registrations,
    parse_tick_message,
)
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

#: Rows read per step of a schedule rebuild before the event loop gets a turn (~10-20 ms).
RELOAD_CHUNK_ROWS = 10_000
#: Polls of written namespaces started per tick per partition at most: a backlog drains over
#: several ticks instead of flooding the concurrency slots in one go.
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
        tick_interval_ms: int,
        owned_partitions: Callable[[], int],
    ):
        self.upstream = upstream
        self._schedule = schedule
        self._policy = policy
        self._metrics = metrics
        self._api_key = api_key
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._rate = TokenBucket(max_rps)
        #: Tokens one tick interval brings; a partition's tick may spend its share of them on
        #: re-confirmations, so that every partition gets its share, not the first ticked.
        self._tokens_per_tick = max_rps * tick_interval_ms / 1000
        self._owned_partitions = owned_partitions
        self._in_flight: set[str] = set()
        self._tasks: dict[asyncio.Task[None], int] = {}  # poll → its namespace's partition
        #: Polls of written namespaces started and still waiting for a slot or a token.
        self._written_waiting = 0
        #: The rest of a schedule rebuild, read in chunks (see `_rebuild_schedule`).
        self._rebuild: asyncio.Task[None] | None = None

    def start_due(self, partition: int) -> int:
        """Start polls for the due namespaces of `partition`; return how many started.

        Written namespaces first, all that are due (up to `MAX_POLLS_PER_TICK`); then stable
        ones to re-confirm, oldest first, only as many as can start at once with a free slot
        and a rate token in hand: re-confirmations never queue, so a written namespace never
        waits behind them, and those the budget cannot take stay in the schedule.
        """
        if not self._schedule.has_partition(partition):
            self._rebuild_schedule()
        now = now_ms()
        due = self._schedule.pop_due(partition, now, _current_next_poll, MAX_POLLS_PER_TICK)
        started = sum(self._start(namespace, partition, confirmation=False) for namespace in due)
        budget = self._confirmation_budget()
        if budget:
            confirm = self._schedule.pop_due(
                partition, now, _current_next_poll, budget, confirmations=True
            )
            started += sum(self._start(ns, partition, confirmation=True) for ns in confirm)
        self._metrics.polls.inc(started)
        return started

    def _rebuild_schedule(self) -> None:
        """Rebuild the due schedule from the table (after a rebalance, for the partitions held).

        At a million rows the scan takes seconds (a murmur2 hash per key, a row parse), which
        must not stall the reads this worker answers meanwhile: the first chunk is read at
        once (a small table is scheduled before this returns), the rest in a task that yields
        between chunks. The heaps exist from the start, so a transition applied meanwhile is
        scheduled into them; a row read after it is scheduled twice, which `pop_due` handles
        (stale and identical entries are dropped). A reassignment (`clear`) ends the task.
        """
        schedule = self._schedule
        generation = schedule.begin(range(settings.topic_partitions))
        keys = list(freshness_table.keys())
        schedule_rows(schedule, keys[:RELOAD_CHUNK_ROWS])
        if len(keys) > RELOAD_CHUNK_ROWS:
            self._rebuild = asyncio.create_task(self._schedule_rest(generation, keys))

    async def _schedule_rest(self, generation: int, keys: list[str]) -> None:
        for start in range(RELOAD_CHUNK_ROWS, len(keys), RELOAD_CHUNK_ROWS):
            await asyncio.sleep(0)
            if self._schedule.generation != generation:
                return  # reassigned meanwhile: the next rebuild reads the table again
            schedule_rows(self._schedule, keys[start : start + RELOAD_CHUNK_ROWS])

    def _confirmation_budget(self) -> int:
        """How many stable namespaces of the ticked partition may be re-confirmed now."""
        # Polls of written namespaces not started yet will take a slot (counted in _tasks)
        # and a token each before any confirmation may.
        free_slots = self._concurrency - len(self._tasks)
        spare_tokens = self._rate.available() - self._written_waiting
        share = math.ceil(self._tokens_per_tick / max(1, self._owned_partitions()))
        return max(0, min(free_slots, spare_tokens, share))

    def _start(self, namespace: str, partition: int, *, confirmation: bool) -> bool:
        if namespace in self._in_flight:
            return False
        if confirmation:
            self._rate.try_acquire()  # available: the budget counted it
            self._observe_confirmation_age(namespace)
        else:
            self._written_waiting += 1
        self._in_flight.add(namespace)
        task = asyncio.create_task(self._poll(namespace, partition, confirmation))
        self._tasks[task] = partition
        task.add_done_callback(self._forget)
        return True

    def _observe_confirmation_age(self, namespace: str) -> None:
        state = freshness_table.get(namespace)
        if state is not None and state.last_observed_ms is not None:
            age_ms = max(0, now_ms() - state.last_observed_ms)
            self._metrics.confirmation_age_seconds.observe(age_ms / 1000)

    async def _poll(self, namespace: str, partition: int, confirmation: bool) -> None:
        waiting = not confirmation  # a written namespace's poll waits for a slot and a token
        try:
            async with self._slots:
                if waiting:
                    await self._rate.acquire()
                    waiting = False
                    self._written_waiting -= 1
                started_at, timer = now_ms(), time.perf_counter()
                transition = await self._observe(namespace, started_at)
            await apply_transition(namespace, partition, transition)
            self._metrics.poll_seconds.observe(time.perf_counter() - timer)
        except Exception:  # a poll must never take the agent down with it
            log.exception("poll of %s failed unexpectedly", namespace)
        finally:
            if waiting:  # cancelled before it got its slot and token
                self._written_waiting -= 1
            self._in_flight.discard(namespace)
            # The tick that started this poll consumed the namespace's schedule entry, and so
            # may ticks that met it in flight; the result may not have changed the row (a
            # stale answer), so put it back at whatever time the table now says.
            if (state := freshness_table.get(namespace)) is not None:
                self._schedule.schedule(
                    partition, namespace, state.next_poll_ms, confirmation=state.is_stable
                )

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


def _current_next_poll(namespace: str) -> int | None:
    """The table's `next_poll_ms` of `namespace` (None: gone), for the schedule's re-check."""
    state = freshness_table.get(namespace)
    return state.next_poll_ms if state is not None else None


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
    elif isinstance(message, Registrations):
        for registration in message.registrations:
            if partition_of(registration.namespace) != partition:
                log.warning(
                    "registration of %s on another partition: ignored", registration.namespace
                )
                continue  # its namespace's owner would never see it; the next read registers it
            services.metrics.registrations.inc()
            await apply_transition(
                registration.namespace, partition, _registration(registration, services.policy)
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
