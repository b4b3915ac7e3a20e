"""The composition root: every long-lived object of a worker, built here and nowhere else.

Faust's own objects (the app, topics, tables, agents, timers, pages) are declared at import,
as Faust intends. What else lives as long as the worker is built by `build_services` from the
settings and installed with `app.use(...)` (layer.worker does it once; each agent test does
it with fresh instances). Agents and views reach them through `app.services` when they run,
so nothing is created, or has to be reset, at import.

Who uses what:

- `metrics`: everything that counts or times (exposed by `GET /metrics`).
- `upstream`: the one turbopuffer client (metadata reads, listing, warm, polls, operations,
  the proxy).
- `peers`: the same client stack towards the other workers (forwarded reads, listing rows,
  relayed queries).
- `readiness`: which partitions answer (Faust's rebalance signals write it; views read it).
- `policy`, `due_schedule`, `poller`, `follower`: the watcher (agents.ticks,
  agents.transitions, agents.operations; stopped by agents.handover).
- `notifications`: write notifications of proxied writes (api.proxy, the read paths that
  check for a pending write, api.shutdown delivers what is left).
- `operations`: asynchronous upstream writes this worker accepted (api.operations).
- `access`: what a key may read (every read route, api.access).
- `listing`: the listing's page cache and the warms in flight (api.listing).
- `read_events`: the throttle of what reads tell the watcher (api.watcher_events).
- `in_flight`: requests being handled, drained at shutdown (api.shutdown).
- `stability_hub`: the stability stream's subscribers (api.stability_stream).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.operations import OperationFollower
from agents.ticks import Poller
from api.access import NamespaceAccess
from api.listing import ListingState
from api.notifications import NotificationBuffer
from api.operations import Operations
from api.shutdown import InFlight
from api.stability_stream import StabilityHub
from api.watcher_events import ReadEvents
from layer.metrics import LayerMetrics
from layer.readiness import Readiness
from layer.settings import Settings
from layer.upstream import Upstream
from tables.faust_tables import freshness_table, snapshots_table
from tables.freshness import WatcherPolicy
from tables.schedule import DueSchedule

__all__ = ["Services", "build_services"]


@dataclass(frozen=True, slots=True)
class Services:
    """A worker's long-lived objects (see the module docstring for who uses each)."""

    settings: Settings
    metrics: LayerMetrics
    upstream: Upstream
    peers: Upstream
    readiness: Readiness
    policy: WatcherPolicy
    due_schedule: DueSchedule
    poller: Poller
    follower: OperationFollower
    notifications: NotificationBuffer
    operations: Operations
    access: NamespaceAccess
    listing: ListingState
    read_events: ReadEvents
    in_flight: InFlight
    stability_hub: StabilityHub


def build_services(settings: Settings) -> Services:
    """Build every long-lived object from `settings` (no I/O: clients connect on first use)."""
    metrics = LayerMetrics()
    upstream = Upstream(
        settings.upstream_url, timeout_ms=settings.upstream_timeout_ms, metrics=metrics
    )
    watcher_key = (
        settings.turbopuffer_api_key.get_secret_value() if settings.turbopuffer_api_key else ""
    )
    readiness = Readiness(
        (table.changelog_topic.get_topic_name() for table in (freshness_table, snapshots_table)),
        settings.topic_partitions,
    )
    policy = WatcherPolicy(
        fast_poll_interval_ms=settings.fast_poll_interval_ms,
        slow_poll_interval_ms=settings.slow_poll_interval_ms,
        max_backoff_ms=settings.max_backoff_ms,
        safety_margin_ms=settings.safety_margin_ms,
    )
    due_schedule = DueSchedule()
    return Services(
        settings=settings,
        metrics=metrics,
        upstream=upstream,
        # No base URL: owners' URLs are whole; not timed as upstream calls.
        peers=Upstream(
            "", timeout_ms=settings.upstream_timeout_ms, metrics=None, max_connections=64
        ),
        readiness=readiness,
        policy=policy,
        due_schedule=due_schedule,
        poller=Poller(
            upstream,
            schedule=due_schedule,
            policy=policy,
            metrics=metrics,
            api_key=watcher_key,
            concurrency=settings.poll_concurrency,
            max_rps=settings.upstream_max_rps,
            tick_interval_ms=settings.tick_interval_ms,
            owned_partitions=lambda: len(readiness.owned()),
        ),
        follower=OperationFollower(
            upstream, api_key=watcher_key, interval_ms=settings.fast_poll_interval_ms
        ),
        notifications=NotificationBuffer(
            settings.kafka_broker,
            topic_prefix=settings.topic_prefix,
            max_namespaces=settings.notify_buffer_namespaces,
            metrics=metrics,
        ),
        operations=Operations(settings.web_url.rstrip("/")),
        access=NamespaceAccess(upstream, settings, readiness=readiness),
        listing=ListingState(settings.namespace_list_cache_ttl_ms),
        read_events=ReadEvents(
            registration_every_ms=settings.fast_poll_interval_ms,
            partitions=settings.topic_partitions,
        ),
        in_flight=InFlight(),
        stability_hub=StabilityHub(settings, readiness=readiness),
    )
