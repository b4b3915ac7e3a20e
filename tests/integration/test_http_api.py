"""Layer's own HTTP routes against the real broker, the emulator and a worker process."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import turbopuffer

from tests.integration.conftest import (
    EMULATOR_KEY,
    OTHER_EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    unique_namespace,
    wait_until,
)

AUTH = {"Authorization": f"Bearer {EMULATOR_KEY}"}


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster) -> Iterator[WorkerProcess]:
    running = module_cluster.worker("api", NAMESPACE_LIST_CACHE_TTL_MS="60000").start()
    yield running


@pytest.fixture(autouse=True)
def no_faults(emulator: EmulatorProcess) -> Iterator[None]:
    yield
    emulator.clear_faults()


def _create(emulator: EmulatorProcess, *names: str) -> None:
    for name in names:
        emulator.write(name, {"upsert_rows": [{"id": 1, "title": name}]})
        emulator.force_indexing(name)


def _assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["status"] == "error" and isinstance(body["error"], str) and body["error"], body
    return body


# --- metadata ------------------------------------------------------------------------------


def test_metadata_is_upstream_verbatim_plus_layer_and_cold_start_is_null_then_stable(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    namespace = unique_namespace("meta")
    _create(emulator, namespace)
    upstream = emulator.client.get(f"/v2/namespaces/{namespace}/metadata").json()

    first = worker.metadata(namespace)
    layer = first.pop("layer")
    assert first == upstream, "every upstream field is passed through verbatim"
    assert layer["stable_as_of"] is None and layer["is_stable"] is False, "cold start"
    assert layer["status"] == "unknown" and layer["cache_state"] == "unknown"

    stable = wait_until(
        lambda: (s := worker.layer_state(namespace))["is_stable"] and s, 20, "the watcher"
    )
    assert stable["stable_as_of"] <= int(time.time() * 1000)


def test_upstream_404_stays_404_in_the_error_shape(worker: WorkerProcess) -> None:
    _assert_error(worker.http.get(f"/v2/namespaces/{unique_namespace('missing')}/metadata"), 404)


def test_upstream_429_passes_through_with_its_retry_after(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    namespace = unique_namespace("throttled")
    _create(emulator, namespace)
    emulator.add_fault(route="metadata", namespace=namespace, status=429, retry_after_ms=3000)
    response = worker.http.get(f"/v2/namespaces/{namespace}/metadata")
    _assert_error(response, 429)
    assert response.headers["Retry-After"] == "3"


# --- errors and auth -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v2/namespaces", {}, 401),
        ("GET", "/v2/namespaces", {"Authorization": "Basic abc"}, 401),
        ("GET", "/v2/namespaces", {"Authorization": "Bearer"}, 401),
        ("GET", "/v2/namespaces/x/metadata", {}, 401),
        ("GET", "/openapi.json", {}, 401),
        ("GET", "/metrics", {}, 401),
        ("GET", "/no/such/route", AUTH, 404),
        ("DELETE", "/v2/namespaces/x/snapshots", AUTH, 405),
        ("GET", "/v2/namespaces?page_size=1001", AUTH, 400),
        ("GET", "/v2/namespaces?page_size=0", AUTH, 400),
        ("GET", "/v2/namespaces?page_size=ten", AUTH, 400),
        ("GET", "/v2/namespaces?prefix=a/b", AUTH, 400),
        ("GET", "/v2/namespaces/bad%20name/metadata", AUTH, 400),
        ("GET", "/v2/namespaces/x/snapshots?limit=0", AUTH, 400),
        ("GET", "/v2/operations/nope", AUTH, 404),
    ],
)
def test_every_error_is_turbopuffers_error_shape(
    worker: WorkerProcess, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = httpx.request(method, f"{worker.url}{path}", headers=headers)
    body = _assert_error(response, status)
    assert EMULATOR_KEY not in response.text, "keys are never echoed"
    if status == 401:
        assert "Bearer" in body["error"]


def test_probes_answer_without_a_key(worker: WorkerProcess) -> None:
    assert httpx.get(f"{worker.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{worker.url}/readyz")
    assert ready.status_code == 200
    # A single worker owns and has recovered every partition.
    assert ready.json() == {"status": "ready", "ready_partitions": [0, 1, 2, 3]}


def test_upstream_unreachable_is_502_and_timeout_is_504(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    # Workers of their own cluster: in the shared one, a read would be routed to its owner.
    unreachable = cluster.worker("unreachable", TURBOPUFFER_BASE_URL="http://127.0.0.1:9").start()
    _assert_error(unreachable.http.get("/v2/namespaces/anything/metadata"), 502)
    unreachable.stop()

    namespace = unique_namespace("slow")
    _create(emulator, namespace)
    impatient = cluster.worker("impatient", LAYER_UPSTREAM_TIMEOUT_MS="300").start()
    emulator.add_fault(route="metadata", namespace=namespace, hang=True)
    body = _assert_error(impatient.http.get(f"/v2/namespaces/{namespace}/metadata"), 504)
    assert "time" in body["error"]
    impatient.stop()


def test_per_key_rate_limit_answers_429_with_retry_after(cluster: LayerCluster) -> None:
    limited = cluster.worker("limited", LAYER_RATE_LIMIT_RPS="1").start()
    statuses = [limited.http.get("/openapi.json").status_code for _ in range(3)]
    assert statuses[0] == 200 and 429 in statuses
    throttled = limited.http.get("/openapi.json")
    _assert_error(throttled, 429)
    assert int(throttled.headers["Retry-After"]) >= 1
    other = limited.http.get("/openapi.json", headers={"Authorization": "Bearer someone-else"})
    assert other.status_code == 200, "the limit is per key"
    limited.stop()


# --- listing -------------------------------------------------------------------------------


def test_listing_pages_upstream_and_enriches_every_row(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    prefix = unique_namespace("list")
    names = [f"{prefix}-{i}" for i in range(5)]
    _create(emulator, *names)
    for name in names:
        worker.metadata(name)  # registers them with the watcher
    wait_until(lambda: all(worker.layer_state(n)["is_stable"] for n in names), 20, "stable")

    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"prefix": prefix, "page_size": "2", **({"cursor": cursor} if cursor else {})}
        page = worker.http.get("/v2/namespaces", params=params).json()
        seen += page["namespaces"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert [row["name"] for row in seen] == names
    row = seen[0]
    assert set(row) >= {
        "name", "row_count", "size_bytes", "stable_as_of_ms", "is_stable", "cache_state",
        "last_write_ms", "shadow", "labels",
    }  # fmt: skip
    assert row["row_count"] == 1 and row["size_bytes"] > 0
    assert row["is_stable"] is True
    assert row["stable_as_of_ms"] == worker.layer_state(row["name"])["stable_as_of"], (
        "the listing and /metadata show the same watermark"
    )
    assert row["cache_state"] == {"state": "unknown", "warm_inflight": False}
    assert row["shadow"] is False and row["labels"] == {}


def test_a_failing_row_keeps_its_place_with_a_short_metadata_error(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    prefix = unique_namespace("degraded")
    names = [f"{prefix}-{i}" for i in range(3)]
    _create(emulator, *names)
    emulator.add_fault(route="metadata", namespace=names[1], status=500, message="disk on fire")
    page = worker.http.get("/v2/namespaces", params={"prefix": prefix}).json()
    rows = {row["name"]: row for row in page["namespaces"]}
    assert list(rows) == names, "the list stays complete"
    assert rows[names[1]]["metadata_error"] and len(rows[names[1]]["metadata_error"]) <= 200
    assert "500" in rows[names[1]]["metadata_error"]
    assert rows[names[1]]["row_count"] is None
    assert rows[names[0]].get("metadata_error") is None and rows[names[0]]["row_count"] == 1


def test_listing_cache_serves_a_repeat_without_upstream_calls_and_isolates_keys(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    prefix = unique_namespace("cached")
    _create(emulator, f"{prefix}-a", f"{prefix}-b")
    first = worker.http.get("/v2/namespaces", params={"prefix": prefix}).json()
    before = emulator.stats()["total"]
    again = worker.http.get("/v2/namespaces", params={"prefix": prefix}).json()
    assert again == first
    assert emulator.stats()["total"] == before, "served from the cache: no upstream call"

    other = worker.http.get(
        "/v2/namespaces",
        params={"prefix": prefix},
        headers={"Authorization": f"Bearer {OTHER_EMULATOR_KEY}"},
    )
    assert other.status_code == 200
    assert emulator.stats()["total"] > before, "another key never gets this key's cached list"
    stranger = worker.http.get(
        "/v2/namespaces", params={"prefix": prefix}, headers={"Authorization": "Bearer nobody"}
    )
    _assert_error(stranger, 401)


def test_listing_is_gzip_compressed_only_when_the_client_asks(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    prefix = unique_namespace("gz")
    _create(emulator, *[f"{prefix}-{i}" for i in range(8)])
    plain = httpx.get(
        f"{worker.url}/v2/namespaces", params={"prefix": prefix},
        headers={**AUTH, "Accept-Encoding": "identity"},
    )  # fmt: skip
    assert "Content-Encoding" not in plain.headers
    with (
        httpx.Client() as client,
        client.stream(
            "GET", f"{worker.url}/v2/namespaces", params={"prefix": prefix},
            headers={**AUTH, "Accept-Encoding": "gzip"},
        ) as raw,
    ):  # fmt: skip
        assert raw.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(b"".join(raw.iter_raw()))
    assert body == plain.content


def test_warm_marks_the_namespace_warm_in_the_listing(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    namespace = unique_namespace("warm")
    _create(emulator, namespace)
    response = worker.http.post(f"/v2/namespaces/{namespace}/warm")
    assert response.status_code == 202 and response.json()["status"] == "ACCEPTED"
    assert emulator.stats()["namespaces"][namespace].get("hint_cache_warm") == 1
    wait_until(lambda: worker.layer_state(namespace)["cache_state"] == "warm", 10, "cache activity")
    row = worker.http.get("/v2/namespaces", params={"prefix": namespace}).json()["namespaces"][0]
    assert row["cache_state"] == {"state": "warm", "warm_inflight": False}


# --- async operations --------------------------------------------------------------------------


def test_listing_with_prefer_respond_async_answers_202_and_the_operation_finishes(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    prefix = unique_namespace("async")
    _create(emulator, f"{prefix}-1")
    accepted = worker.http.get(
        "/v2/namespaces", params={"prefix": prefix}, headers={"Prefer": "respond-async"}
    )
    assert accepted.status_code == 202
    assert accepted.headers["Preference-Applied"] == "respond-async"
    location = accepted.headers["Location"]
    assert location.startswith("/v2/operations/"), "same origin, relative"

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = worker.http.get(location).json()
        assert body["status"] in ("running", "finished")
        return body if body["status"] == "finished" else None

    done = wait_until(finished, 20, "the operation")
    assert [r["name"] for r in done["result"]["success"]["namespaces"]] == [f"{prefix}-1"]
    assert done["start_time"] and done["finish_time"]
    stranger = worker.http.get(location, headers={"Authorization": f"Bearer {OTHER_EMULATOR_KEY}"})
    _assert_error(stranger, 404)

    cached = worker.http.get(
        "/v2/namespaces", params={"prefix": prefix}, headers={"Prefer": "respond-async"}
    )
    assert cached.status_code == 200, "a cached answer is given synchronously"


def test_the_turbopuffer_sdks_own_poller_drives_the_async_listing(
    worker: WorkerProcess, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TURBOPUFFER_REGION", raising=False)
    prefix = unique_namespace("sdkasync")
    _create(emulator, f"{prefix}-1", f"{prefix}-2")
    client = turbopuffer.Turbopuffer(
        api_key=EMULATOR_KEY, base_url=worker.url, _strict_response_validation=True
    )
    # The SDK stamps `Prefer: respond-async` on every request and polls the Location itself.
    result = client.get("/v2/namespaces", cast_to=object, options={"params": {"prefix": prefix}})
    assert [row["name"] for row in result["namespaces"]] == [f"{prefix}-1", f"{prefix}-2"]  # type: ignore[index]


def test_an_async_listing_is_judged_by_upstream_before_the_202(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    # Upstream's page is fetched before the 202: its verdict on the key and its failures are
    # the answer itself, never an accepted operation that fails later.
    emulator.add_fault(route="list", status=503, message="list unavailable")
    failed = worker.http.get(
        "/v2/namespaces",
        params={"prefix": unique_namespace("fails")},
        headers={"Prefer": "respond-async"},
    )
    assert _assert_error(failed, 503)["error"] == "list unavailable"
    emulator.clear_faults()
    refused = worker.http.get(
        "/v2/namespaces",
        params={"prefix": unique_namespace("refused")},
        headers={"Prefer": "respond-async", "Authorization": "Bearer not-a-key"},
    )
    _assert_error(refused, 401)


async def test_an_operation_failure_is_reported_in_the_pollers_error_format() -> None:
    # What fails in the background now (a row whose partition has no ready owner) is hard to
    # provoke on a live worker; the format is the operation's, checked here directly.
    from api.errors import ApiError
    from api.operations import Operations

    async def fails() -> Any:
        raise ApiError(503, "list unavailable")

    operation = Operations("http://127.0.0.1:1").start(fails, "identity")
    assert operation.task is not None
    await operation.task
    done = operation.body().model_dump(mode="json")
    assert done["status"] == "finished"
    error = done["result"]["error"]
    assert error["status_code"] == 503
    assert error["detail"] == {"status": "error", "error": "list unavailable"}


# --- snapshots and the document -------------------------------------------------------------


def test_snapshots_record_stable_points_newest_first_and_answer_as_of(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    namespace = unique_namespace("snap")
    _create(emulator, namespace)
    worker.metadata(namespace)
    first = wait_until(lambda: (s := worker.layer_state(namespace))["is_stable"] and s, 20, "1st")
    emulator.write(namespace, {"upsert_rows": [{"id": 2, "title": "more"}]})
    emulator.force_indexing(namespace)
    worker.metadata(namespace)  # the read observes the new content and tells the watcher

    def two_snapshots() -> dict[str, Any] | None:
        page: dict[str, Any] = worker.http.get(f"/v2/namespaces/{namespace}/snapshots").json()
        return page if len(page["snapshots"]) >= 2 else None

    page = wait_until(two_snapshots, 20, "a second snapshot")
    newest, older = page["snapshots"][0], page["snapshots"][1]
    assert newest["stable_as_of"] > older["stable_as_of"]
    assert older["stable_as_of"] <= first["stable_as_of"], "the first stable point came first"
    assert (newest["approx_row_count"], older["approx_row_count"]) == (2, 1)

    one = worker.http.get(f"/v2/namespaces/{namespace}/snapshots", params={"limit": 1}).json()
    assert one["snapshots"] == [newest] and one["next_before"] == newest["stable_as_of"]
    rest = worker.http.get(
        f"/v2/namespaces/{namespace}/snapshots", params={"before": one["next_before"]}
    ).json()
    assert rest["snapshots"][0] == older
    in_force = worker.http.get(
        f"/v2/namespaces/{namespace}/snapshots", params={"as_of": newest["stable_as_of"] - 1}
    ).json()
    assert in_force == older
    _assert_error(
        worker.http.get(f"/v2/namespaces/{namespace}/snapshots", params={"as_of": 1}), 404
    )


def test_openapi_document_describes_layers_routes(worker: WorkerProcess) -> None:
    document = worker.http.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert {
        "/v2/namespaces", "/v2/namespaces/{namespace}/metadata",
        "/v2/namespaces/{namespace}/snapshots", "/v2/operations/{operation_id}",
    } <= set(document["paths"])  # fmt: skip
    row = document["components"]["schemas"]["NamespaceRow"]
    assert {"name", "stable_as_of_ms", "is_stable", "cache_state", "metadata_error"} <= set(
        row["properties"]
    )


def test_with_layer_api_keys_callers_use_layers_keys_and_layer_calls_upstream_with_its_own(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    namespace = unique_namespace("ownkeys")
    _create(emulator, namespace)
    guarded = cluster.worker("guarded", LAYER_API_KEYS="layer-key-1, layer-key-2").start()
    allowed = guarded.http.get(
        f"/v2/namespaces/{namespace}/metadata", headers={"Authorization": "Bearer layer-key-2"}
    )
    assert allowed.status_code == 200 and "layer" in allowed.json()
    refused = guarded.http.get(f"/v2/namespaces/{namespace}/metadata")  # the upstream key
    _assert_error(refused, 401)
    guarded.stop()


def test_keys_never_reach_the_logs(worker: WorkerProcess, emulator: EmulatorProcess) -> None:
    namespace = unique_namespace("secret")
    _create(emulator, namespace)
    emulator.add_fault(route="metadata", namespace=namespace, status=500)
    worker.http.get(f"/v2/namespaces/{namespace}/metadata")
    worker.http.get("/v2/namespaces", headers={"Authorization": "Bearer not-a-real-key-123"})
    log = worker.log_path.read_text(errors="replace")
    assert EMULATOR_KEY not in log and "not-a-real-key-123" not in log
