"""What an HTTP read tells the watcher: views never write tables, they send events.

A read of a namespace Layer does not track registers it; a read whose upstream answer
contradicts the tracked status carries that answer as an observation, applied by the
owning agent with the same transition as a poll.
"""

from __future__ import annotations

from cachetools import TTLCache

from layer.app import topics
from layer.clock import now_ms
from layer.events import (
    MAX_REGISTRATIONS_PER_MESSAGE,
    CacheActivity,
    ObservedIndex,
    Registration,
    Registrations,
    partition_for,
)
from tables.freshness import Freshness, IndexObservation, read_observation_is_news

__all__ = ["CACHE_ACTIVITY_EVERY_MS", "ReadEvents"]

#: Entries each throttle keeps at most; a throttle is not state, so forgetting is harmless.
THROTTLE_ENTRIES = 10_000
#: Cache activity is worth an event at most this often per namespace: the temperature window
#: is minutes long, a query-heavy namespace must not send an event per query.
CACHE_ACTIVITY_EVERY_MS = 5_000


class ReadEvents:
    """Sends what reads tell the watcher, each piece of news at most once per interval.

    Reads polling a namespace that is not yet registered would otherwise each send an event
    until the first one lands; a registration with the same news (the index status read) is
    sent at most once per fast poll interval, cache activity once per `CACHE_ACTIVITY_EVERY_MS`.
    """

    def __init__(self, registration_every_ms: int, *, partitions: int) -> None:
        self._partitions = partitions
        self._registrations: TTLCache[tuple[str, str | None], bool] = TTLCache(
            maxsize=THROTTLE_ENTRIES, ttl=registration_every_ms / 1000
        )
        self._cache_activity: TTLCache[str, bool] = TTLCache(
            maxsize=THROTTLE_ENTRIES, ttl=CACHE_ACTIVITY_EVERY_MS / 1000
        )

    def register_read(
        self,
        namespace: str,
        state: Freshness | None,
        observation: IndexObservation | None,
        started_at_ms: int,
        *,
        batch: list[Registration] | None = None,
    ) -> None:
        """Register `namespace` with the watcher if the read is news to it: sent at once, or
        added to `batch` (a listing page's, sent by `send_registrations`)."""
        if observation is None:
            if state is not None:
                return
            observed = None
        elif read_observation_is_news(state, observation):
            observed = ObservedIndex.of(observation, started_at_ms=started_at_ms)
        else:
            return
        key = (namespace, observation.index_status if observation else None)
        if key in self._registrations:
            return
        self._registrations[key] = True
        message = Registration(namespace=namespace, observed_at_ms=now_ms(), observation=observed)
        if batch is not None:
            batch.append(message)
        else:
            _send_soon(message.model_dump_json().encode(), key=namespace.encode())

    def send_registrations(self, batch: list[Registration]) -> None:
        """Send a page's registrations as one `register_many` message per partition: a fresh
        organisation's listing must not put a thousand messages in front of the poll ticks."""
        by_partition: dict[int, list[Registration]] = {}
        for message in batch:
            partition = partition_for(message.namespace, self._partitions)
            by_partition.setdefault(partition, []).append(message)
        for partition, messages in by_partition.items():
            for start in range(0, len(messages), MAX_REGISTRATIONS_PER_MESSAGE):
                chunk = messages[start : start + MAX_REGISTRATIONS_PER_MESSAGE]
                value = Registrations(registrations=chunk).model_dump_json().encode()
                _send_soon(value, partition=partition)

    def record_cache_activity(self, namespace: str) -> None:
        """Tell the watcher a cache warm or a query on `namespace` just succeeded upstream."""
        if namespace in self._cache_activity:
            return
        self._cache_activity[namespace] = True
        message = CacheActivity(namespace=namespace, at_ms=now_ms())
        _send_soon(message.model_dump_json().encode(), key=namespace.encode())


def _send_soon(value: bytes, *, key: bytes | None = None, partition: int | None = None) -> None:
    """Hand the event to the producer's buffer: a read never waits on Kafka for it."""
    topics.ticks.send_soon(key=key, value=value, partition=partition)
