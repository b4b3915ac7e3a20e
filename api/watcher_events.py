"""What an HTTP read tells the watcher: views never write tables, they send events.

A read of a namespace Layer does not track registers it; a read whose upstream answer
contradicts the tracked status carries that answer as an observation, applied by the
owning agent with the same transition as a poll.
"""

from __future__ import annotations

import time
from typing import Any

from layer.app import settings, topics
from layer.clock import now_ms
from layer.events import CacheActivity, ObservedIndex, Registration
from tables.freshness import Freshness, IndexObservation, read_observation_is_news

__all__ = ["record_cache_activity", "register_read"]

#: (namespace, news) → monotonic time last sent. Reads polling a namespace that
#: is not yet registered would otherwise each send an event until the first one lands.
_recently_sent: dict[tuple[str, str | None], float] = {}
#: Entries kept at most; the map is a throttle, not state, so forgetting is harmless.
_RECENTLY_SENT_MAX = 10_000


def _send_soon(namespace: str, value: bytes) -> None:
    """Hand the event to the producer's buffer: a read never waits on Kafka for it."""
    topics.ticks.send_soon(key=namespace.encode(), value=value)


def _throttled(namespace: str, news: str | None, interval_ms: int) -> bool:
    """True if the same news about `namespace` was sent within `interval_ms`."""
    now = time.monotonic()
    key = (namespace, news)
    last = _recently_sent.get(key)
    if last is not None and now - last < interval_ms / 1000:
        return True
    if len(_recently_sent) >= _RECENTLY_SENT_MAX:
        _recently_sent.clear()
    _recently_sent[key] = now
    return False


def register_read(
    namespace: str,
    state: Freshness | None,
    body: dict[str, Any],
    observation: IndexObservation | None,
    started_at_ms: int,
) -> None:
    """Send a registration for `namespace` if the read is news to the watcher."""
    if observation is None:
        if state is not None:
            return
        observed = None
    elif read_observation_is_news(state, observation):
        observed = ObservedIndex(
            started_at_ms=started_at_ms,
            index=observation.index,
            approx_row_count=observation.approx_row_count,
            approx_logical_bytes=observation.approx_logical_bytes,
            updated_at=observation.updated_at,
        )
    else:
        return
    status = observation.index_status if observation else None
    if _throttled(namespace, status, settings.fast_poll_interval_ms):
        return
    message = Registration(namespace=namespace, observed_at_ms=now_ms(), observation=observed)
    _send_soon(namespace, message.model_dump_json().encode())


#: Cache activity is worth an event at most this often per namespace: the temperature window
#: is minutes long, a query-heavy namespace must not send an event per query.
CACHE_ACTIVITY_EVERY_MS = 5_000


def record_cache_activity(namespace: str) -> None:
    """Tell the watcher a cache warm or a query on `namespace` just succeeded upstream."""
    if _throttled(namespace, "cache", CACHE_ACTIVITY_EVERY_MS):
        return
    message = CacheActivity(namespace=namespace, at_ms=now_ms())
    _send_soon(namespace, message.model_dump_json().encode())
