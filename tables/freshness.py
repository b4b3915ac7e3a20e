"""The freshness state of a namespace and the pure transitions that change it.

Rules (DESIGN.md), one function each, the clock always a parameter:

- `on_write`: `last_write_ms` only grows; a write after `stable_as_of` makes the namespace
  `updating` and due at once (unless it is backing off after upstream errors). A write no
  newer than `last_write_ms` was seen already (redelivery) and changes nothing.
- `on_poll` with `up-to-date`, poll started at `t0`: `stable_as_of = max(stable_as_of,
  t0 - safety_margin)`; status `stable`, unless a write newer than `t0` is known: then the
  watermark may advance but the namespace stays `updating` and due.
  A stable namespace whose watermark is still below its latest write (a write within the
  margin) is due again at `last_write_ms + safety_margin`, so the watermark catches up.
- `on_poll` with `updating`: status `updating`, watermark held.
- `on_poll` with an answer older than the latest successful one applied (a read's
  observation arriving late): it may advance the watermark, nothing else.
- `on_poll_failure`: status and watermark held, error recorded, exponential backoff.
  No signal is never read as "caught up".
- `on_operations`: upstream accepted an asynchronous write of the namespace (a `202` copy):
  it is pending until Layer has seen it end. A namespace with a pending operation is never
  stable, and no poll moves its watermark to or past the operation's acceptance: its data
  is still on its way. Its end arrives as a write notification at the time it was seen.

Every transition is idempotent for a repeated input (delivery is at-least-once), and none
moves `stable_as_of` backwards. `stability_change` says which event a transition publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import faust

__all__ = [
    "CacheTemperature",
    "ChangeKind",
    "Freshness",
    "IndexObservation",
    "IndexStatus",
    "ReadEvidence",
    "WatcherPolicy",
    "answered_status",
    "effective_write_ms",
    "cache_temperature",
    "is_due",
    "new_freshness",
    "on_cache_activity",
    "on_operations",
    "on_poll",
    "on_poll_failure",
    "on_write",
    "read_observation_is_news",
    "stability_change",
]


class IndexStatus(StrEnum):
    """Where the upstream index stands, as far as Layer knows."""

    #: Entered at registration; left only by a successful poll. Never read as caught up.
    UNKNOWN = "unknown"
    #: A poll saw `updating`, or a write arrived after the watermark.
    UPDATING = "updating"
    #: The latest successful poll saw `up-to-date` and no write is known after it.
    STABLE = "stable"


ChangeKind = Literal["became_stable", "became_unstable", "advanced"]


@dataclass(frozen=True, slots=True)
class WatcherPolicy:
    """The watcher's timing knobs (from Settings), passed to every transition."""

    fast_poll_interval_ms: int
    slow_poll_interval_ms: int
    max_backoff_ms: int
    safety_margin_ms: int


@dataclass(frozen=True, slots=True)
class IndexObservation:
    """What one successful upstream metadata call said about a namespace."""

    #: `index.status` as upstream reported it; anything but these two is a failed poll.
    index_status: Literal["up-to-date", "updating"]
    #: The upstream `index` object, verbatim (carries `unindexed_bytes`/`unindexed_rows`).
    index: dict[str, Any]
    approx_row_count: int | None = None
    approx_logical_bytes: int | None = None
    updated_at: str | None = None
    #: When upstream created the namespace: with the name, what identifies *this* namespace
    #: (a name is per organisation; a deleted and recreated namespace gets a new one).
    created_at: str | None = None


class Freshness(faust.Record, serializer="json", namespace="layer.Freshness"):
    """All Layer knows about one namespace: one record per table key, nothing kept beside it."""

    namespace: str
    status: str = IndexStatus.UNKNOWN.value
    #: Epoch ms up to which the index was positively observed caught up; None: never observed.
    stable_as_of: int | None = None
    #: Latest write notification time seen; None: no write seen since registration.
    last_write_ms: int | None = None
    #: Start time of the latest poll that answered (successfully or not); None: never polled.
    last_poll_ms: int | None = None
    #: Start time of the latest *successful* poll (or read observation) applied; None: none yet.
    last_observed_ms: int | None = None
    #: Poll when the clock reaches this; 0 means due now.
    next_poll_ms: int = 0
    consecutive_errors: int = 0
    #: Short description of the latest failed poll; None after a successful one.
    last_error: str | None = None
    #: The latest upstream observation (None: not observed yet).
    index: dict[str, Any] | None = None
    approx_row_count: int | None = None
    approx_logical_bytes: int | None = None
    updated_at: str | None = None
    #: `created_at` of the namespace the watcher's key sees (its organisation's); None: unknown.
    created_at: str | None = None
    #: Latest successful cache warm or proxied query (upstream cache activity); None: never.
    last_cache_activity_ms: int | None = None
    #: Asynchronous upstream writes still running: their `Location` path → when upstream
    #: accepted them (epoch ms). None: none. Followed by the owner (agents/operations.py).
    operations: dict[str, int] | None = None

    @property
    def is_stable(self) -> bool:
        return self.status == IndexStatus.STABLE


def new_freshness(namespace: str) -> Freshness:
    """The state of a namespace Layer has just heard of: unknown and due at once."""
    return Freshness(namespace=namespace)


def _replace(state: Freshness, **changes: Any) -> Freshness:
    """A copy of `state` with `changes` (records are treated as immutable values)."""
    fields = state.asdict()
    fields.update(changes)
    return Freshness(**fields)


def effective_write_ms(written_at_ms: int, record_timestamp_ms: int | None) -> int:
    """The write time Layer trusts: the later of the producer's claim and the Kafka timestamp.

    The producer promises `written_at_ms` was taken after turbopuffer acknowledged the write;
    the record timestamp is later still, so the max can only widen the unstable window.
    """
    if record_timestamp_ms is None:
        return written_at_ms
    return max(written_at_ms, record_timestamp_ms)


def on_write(prev: Freshness | None, namespace: str, written_at_ms: int) -> Freshness:
    """Apply a write notification for a write acknowledged at `written_at_ms`."""
    state = prev if prev is not None else new_freshness(namespace)
    if state.last_write_ms is not None and written_at_ms <= state.last_write_ms:
        # Seen already (a redelivery) or older than one seen: whatever made the namespace
        # stable since then covered it, so it must not flip it back to unstable.
        return state
    covered = state.stable_as_of is not None and written_at_ms <= state.stable_as_of
    if covered:
        return _replace(state, last_write_ms=written_at_ms)
    # A backing-off namespace keeps its backoff: writes must not hammer a failing upstream.
    next_poll_ms = state.next_poll_ms if state.consecutive_errors else 0
    return _replace(
        state,
        status=IndexStatus.UPDATING.value,
        last_write_ms=written_at_ms,
        next_poll_ms=min(state.next_poll_ms, next_poll_ms),
    )


def on_poll(
    prev: Freshness | None,
    namespace: str,
    observation: IndexObservation,
    *,
    started_at_ms: int,
    policy: WatcherPolicy,
) -> Freshness:
    """Apply a successful poll that started (request sent) at `started_at_ms`."""
    state = prev if prev is not None else new_freshness(namespace)
    candidate = started_at_ms - policy.safety_margin_ms
    if state.operations:
        # An operation accepted before the poll may not have landed: never vouch for it.
        candidate = min(candidate, min(state.operations.values()) - 1)
    if state.last_observed_ms is not None and started_at_ms < state.last_observed_ms:
        # Older than the latest answer applied (a read's observation arriving late): it may
        # still vouch for an earlier watermark, but it says nothing about the status now.
        if observation.index_status == "up-to-date" and (
            state.stable_as_of is None or candidate > state.stable_as_of
        ):
            return _replace(state, stable_as_of=candidate)
        return state
    observed = {
        "last_poll_ms": max(state.last_poll_ms or started_at_ms, started_at_ms),
        "last_observed_ms": started_at_ms,
        "consecutive_errors": 0,
        "last_error": None,
        "index": observation.index,
        "approx_row_count": observation.approx_row_count,
        "approx_logical_bytes": observation.approx_logical_bytes,
        "updated_at": observation.updated_at,
        # A read's observation carries none: it keeps the watcher's own.
        "created_at": observation.created_at or state.created_at,
    }
    if observation.index_status == "updating":
        return _replace(
            state,
            status=IndexStatus.UPDATING.value,
            next_poll_ms=started_at_ms + policy.fast_poll_interval_ms,
            **observed,
        )
    stable_as_of = candidate if state.stable_as_of is None else max(state.stable_as_of, candidate)
    if state.operations:
        # Data still on its way: updating until each operation is seen to end, which is a
        # write (due at once then); meanwhile polling more often would tell nothing new.
        return _replace(
            state,
            status=IndexStatus.UPDATING.value,
            stable_as_of=stable_as_of,
            next_poll_ms=started_at_ms + policy.slow_poll_interval_ms,
            **observed,
        )
    write_after_poll = state.last_write_ms is not None and state.last_write_ms > started_at_ms
    if write_after_poll:
        # The poll cannot vouch for a write that landed after it started: stay due, from
        # the write time on. That is now for any write already made; a `written_at_ms` from a
        # producer's clock running ahead is not polled every tick until the clocks agree.
        return _replace(
            state,
            status=IndexStatus.UPDATING.value,
            stable_as_of=stable_as_of,
            next_poll_ms=state.last_write_ms,
            **observed,
        )
    return _replace(
        state,
        status=IndexStatus.STABLE.value,
        stable_as_of=stable_as_of,
        next_poll_ms=_next_stable_poll_ms(state.last_write_ms, stable_as_of, started_at_ms, policy),
        **observed,
    )


def _next_stable_poll_ms(
    last_write_ms: int | None, stable_as_of: int, started_at_ms: int, policy: WatcherPolicy
) -> int:
    """When a stable namespace is polled next: the slow interval, unless the watermark has a
    known write to catch up with.

    A write acknowledged within the safety margin before the poll started is covered by the
    status (stable) but not by the watermark (`t0 - margin < write`); a stable read cut there
    would hide indexed rows. A poll started at `write + margin` or later covers it, so that
    is when the namespace is due, not a slow interval later (DESIGN.md, rule 4).
    """
    slow = started_at_ms + policy.slow_poll_interval_ms
    if last_write_ms is not None and stable_as_of < last_write_ms:
        return min(slow, last_write_ms + policy.safety_margin_ms)
    return slow


def on_poll_failure(
    prev: Freshness | None,
    namespace: str,
    error: str,
    *,
    started_at_ms: int,
    policy: WatcherPolicy,
    retry_after_ms: int | None = None,
) -> Freshness:
    """Apply a failed poll: hold status and watermark, record the error, back off."""
    state = prev if prev is not None else new_freshness(namespace)
    errors = state.consecutive_errors + 1
    backoff_ms = min(policy.max_backoff_ms, policy.fast_poll_interval_ms * 2 ** min(errors, 30))
    if retry_after_ms is not None:
        backoff_ms = max(backoff_ms, retry_after_ms)
    return _replace(
        state,
        last_poll_ms=max(state.last_poll_ms or started_at_ms, started_at_ms),
        consecutive_errors=errors,
        last_error=error,
        next_poll_ms=started_at_ms + backoff_ms,
    )


def on_operations(
    prev: Freshness | None,
    namespace: str,
    *,
    started: dict[str, int] | None = None,
    finished: frozenset[str] | set[str] = frozenset(),
) -> Freshness:
    """Record asynchronous upstream writes accepted (`started`: location → accepted at, ms)
    and those seen to end (`finished`: locations), in that order.

    A pending operation makes a stable namespace `updating`: a poll cannot vouch for data
    that has not landed. The end itself is a write (apply `on_write` at the time it was
    seen), which is what makes the namespace due and, once polled, stable again. Applying
    the same input twice changes nothing.
    """
    state = prev if prev is not None else new_freshness(namespace)
    operations = dict(state.operations or {})
    for location, accepted_at_ms in (started or {}).items():
        operations.setdefault(location, accepted_at_ms)
    for location in finished:
        operations.pop(location, None)
    if operations == (state.operations or {}):
        return state
    changes: dict[str, Any] = {"operations": operations or None}
    if operations and state.status == IndexStatus.STABLE.value:
        changes["status"] = IndexStatus.UPDATING.value
    return _replace(state, **changes)


def is_due(state: Freshness, now_ms: int) -> bool:
    """Whether the watcher should poll this namespace now."""
    return now_ms >= state.next_poll_ms


def stability_change(prev: Freshness | None, new: Freshness) -> ChangeKind | None:
    """The stability event a transition from `prev` to `new` publishes, if any.

    One event per transition: a flip of `is_stable` wins over a watermark advance. A
    namespace Layer first hears of through a write (no state before, `updating` now) also
    publishes `became_unstable`, with `previous_is_stable: false`: without it, consumers
    (the dashboard's live rows) would learn of a new namespace only once it is stable.
    """
    was_stable = prev is not None and prev.is_stable
    if new.is_stable != was_stable:
        return "became_stable" if new.is_stable else "became_unstable"
    if prev is None and new.status == IndexStatus.UPDATING.value:
        return "became_unstable"
    prev_watermark = prev.stable_as_of if prev is not None else None
    if new.stable_as_of is not None and (
        prev_watermark is None or new.stable_as_of > prev_watermark
    ):
        return "advanced"
    return None


def read_observation_is_news(state: Freshness | None, observation: IndexObservation) -> bool:
    """Whether an upstream answer fetched for an HTTP read is worth sending to the watcher.

    It is when the namespace is new to Layer, or when it contradicts the current status;
    otherwise a read-heavy namespace would flood the ticks topic with no-op events.
    """
    if state is None:
        return True
    return state.is_stable != (observation.index_status == "up-to-date")


CacheTemperature = Literal["warm", "cold", "unknown"]


def on_cache_activity(prev: Freshness | None, namespace: str, at_ms: int) -> Freshness:
    """Record a successful cache warm or proxied query at `at_ms` (only moves forward)."""
    state = prev if prev is not None else new_freshness(namespace)
    if state.last_cache_activity_ms is not None and at_ms <= state.last_cache_activity_ms:
        return state
    return _replace(state, last_cache_activity_ms=at_ms)


def cache_temperature(state: Freshness | None, *, now_ms: int, window_ms: int) -> CacheTemperature:
    """`warm` within `window_ms` of the latest cache activity, `cold` after, `unknown` if none."""
    if state is None or state.last_cache_activity_ms is None:
        return "unknown"
    return "warm" if now_ms - state.last_cache_activity_ms <= window_ms else "cold"


@dataclass(frozen=True, slots=True)
class ReadEvidence:
    """What one read knows about a namespace beyond the table (DESIGN.md, rule 3)."""

    #: Whether an upstream answer fetched for this very request said `up-to-date`; None: no
    #: upstream answer was fetched. Anything but `up-to-date` (or no parseable status) is False.
    upstream_up_to_date: bool | None = None
    #: This worker accepted a write notification for the namespace that Kafka has not
    #: acknowledged yet: the owner's table cannot know the write.
    write_pending: bool = False
    #: A write's notification could not even be buffered: a write is missing from the state.
    write_unconfirmed: bool = False


def answered_status(status: str, evidence: ReadEvidence) -> str:
    """The status an answer shows: the table's, unless this read holds evidence against it.

    Evidence only ever takes stability away (`stable` → `updating`, or `unknown` when a
    write is missing altogether); it never makes a namespace stable, and it never touches
    the watermark, which stays true (`stable_as_of` is a past observation).
    """
    if evidence.write_unconfirmed:
        return IndexStatus.UNKNOWN.value
    contradicted = evidence.write_pending or evidence.upstream_up_to_date is False
    if contradicted and status == IndexStatus.STABLE.value:
        return IndexStatus.UPDATING.value
    return status
