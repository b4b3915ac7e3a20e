"""What this worker did and how long it took, in Prometheus' client library; `GET /metrics`.

`LayerMetrics` owns its own `CollectorRegistry` (not prometheus_client's global one), so a
test can build a fresh instance, and every metric is a named attribute: a mistyped name is
an AttributeError, never a series that silently stays at zero. Values are per process and
reset at restart, as Prometheus expects of counters. Standard `process_*` and `python_*`
metrics (CPU, memory, file descriptors, GC, version) are registered on the same registry.

The `_created` series are turned off (`disable_created_metrics`, process-wide): the text
format `/metrics` serves has no slot for a creation time, so each counter and each
histogram label set would get a second `*_created` gauge next to it, doubling the series
for no use (`rate()` already handles restarts).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["CONTENT_TYPE_LATEST", "LayerMetrics"]

disable_created_metrics()  # type: ignore[no-untyped-call]

#: Request latencies (HTTP routes, upstream calls, one watcher poll): the emulator answers in
#: well under a millisecond, turbopuffer's metadata in tens of ms, a large query or write in
#: seconds; the top buckets reach the upstream (10 s) and proxy (60 s) timeouts.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip
#: Write time → applied: a few ms when the worker keeps up, seconds behind a backlog, minutes
#: for notifications sent while the worker was down (applied after its table is recovered).
LAG_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0
)  # fmt: skip
#: Age of a stable namespace's confirmation when it is re-confirmed: the slow interval (60 s)
#: when the upstream budget keeps up, more when there are more stable namespaces than it can
#: re-confirm per interval (tables/schedule.py: the confirmation lane falls behind).
CONFIRMATION_AGE_BUCKETS_S = (
    1.0, 5.0, 15.0, 30.0, 60.0, 65.0, 75.0, 90.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0
)  # fmt: skip
#: Messages per writes batch: one under light load, up to a whole fetch (5,000 at most,
#: layer.batch_consumer.MAX_RECORDS_PER_FETCH) behind a backlog.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class LayerMetrics:
    """Every metric of one worker, on one registry (`exposition()` is `/metrics`' body)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, registry=registry)

        # Counters: prometheus_client appends `_total` to the exported name.
        self.write_notifications = counter(
            "layer_write_notifications",
            "Valid write notifications applied (on their own partition).",
        )
        self.write_notifications_forwarded = counter(
            "layer_write_notifications_forwarded",
            "Write notifications that arrived on another partition than their namespace's, "
            "forwarded to it.",
        )
        self.write_batches = counter(
            "layer_write_batches", "Batches of write notifications processed."
        )
        self.dead_letters = counter(
            "layer_dead_letters", "Input messages sent to the dead-letter topic."
        )
        self.table_writes = counter("layer_table_writes", "Freshness-table writes (state changes).")
        self.stability_events = counter(
            "layer_stability_events", "Stability-change events published."
        )
        self.polls = counter("layer_polls", "Upstream metadata polls started by the watcher.")
        self.poll_failures = counter(
            "layer_poll_failures", "Watcher polls that failed (error status, timeout, bad body)."
        )
        self.tick_send_failures = counter(
            "layer_tick_send_failures", "Poll ticks the leader could not send (retried next tick)."
        )
        self.registrations = counter(
            "layer_registrations", "Registrations (namespaces first seen on reads) applied."
        )
        self.notify_sent = counter(
            "layer_notify_sent", "Proxied-write notifications delivered to Kafka."
        )
        self.notify_retries = counter(
            "layer_notify_retries",
            "Proxied-write notification sends that failed and were retried.",
        )
        self.notify_dropped = counter(
            "layer_notify_dropped", "Proxied-write notifications that did not fit the buffer."
        )

        self.notify_pending = Gauge(
            "layer_notify_pending",
            "Proxied-write notifications waiting for Kafka.",
            registry=registry,
        )

        self.upstream_request_seconds = Histogram(
            "layer_upstream_request_seconds",
            "Upstream (turbopuffer) calls of the watcher and the views, by route "
            "(metadata, list, hint_cache_warm, ...), failures included.",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.poll_seconds = Histogram(
            "layer_poll_seconds",
            "One watcher poll, from its start (concurrency slot and rate token taken) to its "
            "result applied to the table.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.confirmation_age_seconds = Histogram(
            "layer_confirmation_age_seconds",
            "Per re-confirmation poll of a stable namespace: how old its latest upstream "
            "observation was when the poll started.",
            buckets=CONFIRMATION_AGE_BUCKETS_S,
            registry=registry,
        )
        self.notification_lag_seconds = Histogram(
            "layer_notification_lag_seconds",
            "Per write notification applied: now minus its effective write time.",
            buckets=LAG_BUCKETS_S,
            registry=registry,
        )
        self.http_request_seconds = Histogram(
            "layer_http_request_seconds",
            "HTTP requests served, by route template (or `proxy`) and status.",
            ["route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.write_batch_size = Histogram(
            "layer_write_batch_size",
            "Messages per batch of write notifications.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format (`CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)

    def value(self, sample: str, **labels: str) -> float:
        """The current value of one exported sample, e.g. `value("layer_polls_total")` or
        `value("layer_http_request_seconds_count", route=..., status="200")`.

        A sample of a known metric that has not been observed yet (a label set never seen)
        is 0; a name no metric exports raises KeyError (for tests: a typo must fail).
        """
        found = self.registry.get_sample_value(sample, labels)
        if found is not None:
            return found
        families = {family.name for family in self.registry.collect()}
        for suffix in ("_total", "_bucket", "_count", "_sum", ""):
            if sample.endswith(suffix) and sample.removesuffix(suffix) in families:
                return 0.0
        raise KeyError(f"no metric exports {sample!r}")
