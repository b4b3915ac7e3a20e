"""`LayerMetrics`: one registry per instance, every metric named and typed, read by name;
the route labels of upstream timings name the route, never the namespace."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from layer.metrics import LAG_BUCKETS_S, LATENCY_BUCKETS_S, LayerMetrics
from layer.upstream import Upstream, UpstreamTimeout, upstream_route
from tests.fake_upstream import json_response, serving

README = Path(__file__).resolve().parents[2] / "README.md"

#: Exported family name → type; counters are exported with `_total` (names the README, the
#: tests and bench/ read).
LAYER_METRICS = {
    "layer_write_notifications": "counter",
    "layer_write_notifications_forwarded": "counter",
    "layer_write_batches": "counter",
    "layer_dead_letters": "counter",
    "layer_table_writes": "counter",
    "layer_stability_events": "counter",
    "layer_polls": "counter",
    "layer_poll_failures": "counter",
    "layer_tick_send_failures": "counter",
    "layer_registrations": "counter",
    "layer_notify_sent": "counter",
    "layer_notify_retries": "counter",
    "layer_notify_dropped": "counter",
    "layer_notify_pending": "gauge",
    "layer_upstream_request_seconds": "histogram",
    "layer_poll_seconds": "histogram",
    "layer_confirmation_age_seconds": "histogram",
    "layer_notification_lag_seconds": "histogram",
    "layer_http_request_seconds": "histogram",
    "layer_write_batch_size": "histogram",
}


def exposed(fresh: LayerMetrics) -> dict[str, str]:
    """Family name → type, as a scraper reads the exposition."""
    text = fresh.exposition().decode()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def test_a_fresh_instance_exports_every_layer_metric_with_its_type() -> None:
    families = exposed(LayerMetrics())
    layer_families = {name: kind for name, kind in families.items() if name.startswith("layer_")}
    assert layer_families == LAYER_METRICS


def test_process_and_platform_metrics_share_the_registry() -> None:
    families = exposed(LayerMetrics())
    assert "process_cpu_seconds" in families, "ProcessCollector"
    assert "python_info" in families, "PlatformCollector"


def test_no_created_series_clutter_the_exposition() -> None:
    fresh = LayerMetrics()
    fresh.polls.inc()
    fresh.http_request_seconds.labels(route="/metrics", status="200").observe(0.01)
    assert b"_created" not in fresh.exposition()


def test_counters_keep_their_exported_total_names() -> None:
    fresh = LayerMetrics()
    fresh.write_notifications.inc(3)
    assert fresh.value("layer_write_notifications_total") == 3
    assert b"\nlayer_write_notifications_total 3.0\n" in fresh.exposition()


def test_two_instances_do_not_share_values() -> None:
    first, second = LayerMetrics(), LayerMetrics()
    first.polls.inc(2)
    first.notify_pending.set(7)
    assert (second.value("layer_polls_total"), second.value("layer_notify_pending")) == (0, 0)
    assert (first.value("layer_polls_total"), first.value("layer_notify_pending")) == (2, 7)


def test_value_reads_histogram_samples_by_labels_and_an_unseen_label_set_as_zero() -> None:
    fresh = LayerMetrics()
    route = "/v2/namespaces/{namespace}/metadata"
    fresh.http_request_seconds.labels(route=route, status="200").observe(0.003)
    assert fresh.value("layer_http_request_seconds_count", route=route, status="200") == 1
    assert fresh.value("layer_http_request_seconds_sum", route=route, status="200") == 0.003
    assert (
        fresh.value("layer_http_request_seconds_bucket", route=route, status="200", le="0.0025")
        == 0
    )
    assert (
        fresh.value("layer_http_request_seconds_bucket", route=route, status="200", le="0.005") == 1
    )
    assert fresh.value("layer_http_request_seconds_count", route=route, status="500") == 0


def test_value_of_a_name_no_metric_exports_raises_instead_of_reading_zero() -> None:
    with pytest.raises(KeyError, match="layer_pols_total"):
        LayerMetrics().value("layer_pols_total")


def test_latency_buckets_run_from_sub_millisecond_past_the_upstream_timeout() -> None:
    assert LATENCY_BUCKETS_S[0] < 0.001 and LATENCY_BUCKETS_S[-1] >= 10
    assert LAG_BUCKETS_S[0] <= 0.005 and LAG_BUCKETS_S[-1] >= 300
    for buckets in (LATENCY_BUCKETS_S, LAG_BUCKETS_S):
        assert list(buckets) == sorted(set(buckets))


def test_the_readme_metrics_section_lists_exactly_the_layer_metrics() -> None:
    section = README.read_text().split("### Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(layer_[a-z_]+)(?:\{[^`]*\})?` \|", section, re.MULTILINE))
    expected = {
        f"{name}_total" if kind == "counter" else name for name, kind in LAYER_METRICS.items()
    }
    assert documented == expected


# --- upstream route labels ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v2/namespaces/products/metadata", "metadata"),
        ("/v2/namespaces/a-b.c_d/metadata", "metadata"),
        ("/v1/namespaces", "list"),
        ("/v1/namespaces/products/hint_cache_warm", "hint_cache_warm"),
        ("/v2/namespaces/products/query", "query"),
        ("/v2/namespaces/products", "namespace"),
        ("/v2/namespaces/products/something-new", "other"),
        ("/v1/elsewhere", "other"),
    ],
)
def test_upstream_route_names_the_route_never_the_namespace(path: str, route: str) -> None:
    assert upstream_route(path) == route


async def test_an_upstream_call_is_timed_under_its_route_failures_included() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/metadata"):
            return json_response(200, {"index": {"status": "up-to-date"}})
        await asyncio.sleep(5)  # slower than the client waits
        return json_response(200, {"namespaces": []})

    metrics = LayerMetrics()
    count = "layer_upstream_request_seconds_count"
    async with serving(handler) as base_url:
        client = Upstream(base_url, timeout_ms=200, metrics=metrics)
        try:
            await client.metadata("products", api_key="k")
            with pytest.raises(UpstreamTimeout):
                await client.get_json("/v1/namespaces", api_key="k")
        finally:
            await client.aclose()

    assert metrics.value(count, route="metadata") == 1
    assert metrics.value(count, route="list") == 1
    assert metrics.value(count, route="products") == 0, "a namespace is never a label"
