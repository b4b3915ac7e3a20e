"""Process-wide counters of what this worker did, exported by `GET /metrics`.

Plain integers bumped on the hot paths (no locks: one event loop per worker). They are
per-process and reset at restart, like any Prometheus counter.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["counters", "prometheus_text"]

#: name → value; names are Prometheus metric names without the `layer_` prefix.
counters: Counter[str] = Counter()

#: Gauges among the counters (everything else only grows).
GAUGES = {"notify_pending"}

HELP = {
    "write_notifications_total": "Valid write notifications applied (on their own partition).",
    "write_notifications_forwarded_total": "Write notifications that arrived on another "
    "partition than their namespace's, forwarded to it.",
    "write_batches_total": "Batches of write notifications processed.",
    "dead_letters_total": "Input messages sent to the dead-letter topic.",
    "table_writes_total": "Freshness-table writes (state changes).",
    "stability_events_total": "Stability-change events published.",
    "polls_total": "Upstream metadata polls started by the watcher.",
    "poll_failures_total": "Watcher polls that failed (error status, timeout, bad body).",
    "tick_send_failures_total": "Poll ticks the leader could not send (retried next tick).",
    "registrations_total": "Registrations (namespaces first seen on reads) applied.",
    "notify_sent_total": "Proxied-write notifications delivered to Kafka.",
    "notify_retries_total": "Proxied-write notification sends that failed and were retried.",
    "notify_dropped_total": "Proxied-write notifications that did not fit the buffer.",
    "notify_pending": "Proxied-write notifications waiting for Kafka.",
}


def prometheus_text() -> str:
    """The counters in Prometheus' text exposition format."""
    lines: list[str] = []
    for name, help_text in HELP.items():
        lines += [
            f"# HELP layer_{name} {help_text}",
            f"# TYPE layer_{name} {'gauge' if name in GAUGES else 'counter'}",
            f"layer_{name} {counters[name]}",
        ]
    return "\n".join(lines) + "\n"
