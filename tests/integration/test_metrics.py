"""`/metrics` of a real worker: Prometheus' text format with Layer's histograms, whose route
labels are templates, never a namespace name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    unique_namespace,
    wait_until,
)

METADATA_ROUTE = "/v2/namespaces/{namespace}/metadata"


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster) -> Iterator[WorkerProcess]:
    yield module_cluster.worker("metrics").start()


def test_metrics_expose_the_histograms_labelled_by_route_template_never_by_namespace(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    namespace = unique_namespace("metrics")
    emulator.write(namespace, {"upsert_rows": [{"id": 1}]})
    emulator.force_indexing(namespace)
    before = worker.metrics()
    for _ in range(3):
        worker.metadata(namespace)
    written = worker.http.post(f"/v2/namespaces/{namespace}", json={"upsert_rows": [{"id": 2}]})
    assert written.status_code == 200, written.text
    # The write's notification goes through Kafka to the writes handler; the read registered
    # the namespace, so the watcher polls it.
    wait_until(
        lambda: (
            (now := worker.metrics()).get("notification_lag_seconds_count", 0)
            > before.get("notification_lag_seconds_count", 0)
            and now.get("poll_seconds_count", 0) > 0
        ),
        20,
        "the write's notification applied and a poll done",
    )

    response = worker.http.get("/metrics")
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    types = {f.name: f.type for f in text_string_to_metric_families(response.text)}
    for histogram in (
        "layer_http_request_seconds",
        "layer_upstream_request_seconds",
        "layer_poll_seconds",
        "layer_notification_lag_seconds",
        "layer_write_batch_size",
    ):
        assert types[histogram] == "histogram", histogram
    assert types["layer_notify_pending"] == "gauge"
    assert types["layer_polls"] == "counter"
    assert "process_cpu_seconds" in types and "python_info" in types
    assert namespace not in response.text, "a label never names a namespace"

    metrics = worker.metrics()
    count = 'http_request_seconds_count{{route="{route}",status="{status}"}}'
    metadata_reads = count.format(route=METADATA_ROUTE, status="200")
    assert metrics[metadata_reads] - before.get(metadata_reads, 0) == 3
    proxied = count.format(route="proxy", status="200")
    assert metrics[proxied] - before.get(proxied, 0) == 1, "the write went through the proxy"
    assert metrics['upstream_request_seconds_count{route="metadata"}'] >= 3
    assert metrics['http_request_seconds_bucket{le="+Inf",route="proxy",status="200"}'] >= 1
    assert metrics["write_batch_size_count"] >= 1
    assert metrics["write_notifications_total"] >= 1
