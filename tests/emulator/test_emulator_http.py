"""The emulator over HTTP, in process: auth, error shapes, gzip, indexing, faults, counters."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import turbopuffer
from emulator_support import API_KEY, auth
from turbopuffer.lib.namespace import AsyncNamespace

from layer.emulator import Emulator, FaultRule

#: Upper bound for anything that should happen "soon" in a real-time test.
DEADLINE_S = 5.0


async def seed(http: httpx.AsyncClient, ns: str = "docs", n: int = 3) -> None:
    response = await http.post(
        f"/v2/namespaces/{ns}", json={"upsert_rows": [{"id": i} for i in range(n)]}
    )
    response.raise_for_status()


def strict_namespace(client: turbopuffer.AsyncTurbopuffer, name: str) -> AsyncNamespace:
    scoped = client.with_options(
        default_namespace=name, _extra_kwargs={"_strict_response_validation": True}
    )
    return AsyncNamespace(scoped)


@pytest.fixture
async def sdk(emulator: Emulator) -> AsyncIterator[turbopuffer.AsyncTurbopuffer]:
    client = turbopuffer.AsyncTurbopuffer(
        api_key=API_KEY, base_url=emulator.url, max_retries=2, _strict_response_validation=True
    )
    yield client
    await client.close()


# --- auth and error bodies ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": API_KEY},
        {"Authorization": "Basic x"},
    ],
)
async def test_missing_or_invalid_keys_get_401_with_turbopuffer_error_body(
    emulator: Emulator, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=emulator.url, headers=headers) as client:
        for path in ("/v1/namespaces", "/_emulator/stats", "/v2/namespaces/x/metadata"):
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.json()["status"] == "error"
            assert response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v2/namespaces/nope/metadata", None, 404),
        ("GET", "/v1/namespaces/nope/schema", None, 404),
        ("DELETE", "/v2/namespaces/nope", None, 404),
        ("POST", "/v2/namespaces/nope/query", {"rank_by": ["id", "asc"]}, 404),
        ("GET", "/v1/namespaces/nope/hint_cache_warm", None, 404),
        ("GET", "/v1/not-a-route", None, 404),
        ("PUT", "/v1/namespaces", None, 405),
        ("GET", "/v1/namespaces?page_size=0", None, 400),
        ("GET", "/v1/namespaces?page_size=1001", None, 400),
        ("GET", "/v1/namespaces?page_size=ten", None, 400),
        ("GET", "/v1/namespaces?cursor=%25%25", None, 400),
        ("GET", "/v2/namespaces/bad!name/metadata", None, 400),
        ("GET", "/v2/namespaces/" + "x" * 129 + "/metadata", None, 400),
        ("POST", "/v2/namespaces/docs", [1, 2], 400),
        (
            "POST",
            "/v2/namespaces/docs",
            {"upsert_rows": [{"id": 1}], "copy_from_namespace": "a"},
            400,
        ),
    ],
)
async def test_errors_use_turbopuffer_error_body(
    http: httpx.AsyncClient, method: str, path: str, body: object, status: int
) -> None:
    response = await http.request(method, path, json=body)

    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert set(response.json()) == {"status", "error"}
    assert response.json()["status"] == "error"


async def test_a_body_that_is_not_json_is_a_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.post("/v2/namespaces/docs", content=b"{not json")

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


async def test_gzip_request_bodies_are_inflated(http: httpx.AsyncClient) -> None:
    body = json.dumps({"upsert_rows": [{"id": i, "text": "x" * 50} for i in range(40)]}).encode()

    response = await http.post(
        "/v2/namespaces/zipped", content=gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )
    broken = await http.post(
        "/v2/namespaces/zipped", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )

    assert response.status_code == 200
    assert response.json()["rows_upserted"] == 40
    assert broken.status_code == 400


async def test_the_sdk_with_compression_writes_gzip_bodies(emulator: Emulator) -> None:
    client = turbopuffer.AsyncTurbopuffer(
        api_key=API_KEY, base_url=emulator.url, compression=True, _strict_response_validation=True
    )
    async with client:
        ns = strict_namespace(client, "compressed")
        result = await ns.write(upsert_rows=[{"id": i, "text": "y" * 100} for i in range(50)])

    assert result.rows_upserted == 50


async def test_hint_cache_warm_is_a_plain_202(http: httpx.AsyncClient) -> None:
    await seed(http)

    response = await http.get("/v1/namespaces/docs/hint_cache_warm")

    assert response.status_code == 202
    assert response.json()["status"] == "ACCEPTED"
    assert "preference-applied" not in response.headers


async def test_the_multi_query_alias_route_answers_like_query(http: httpx.AsyncClient) -> None:
    await seed(http)
    body = {"queries": [{"rank_by": ["id", "desc"], "top_k": 1}]}

    response = await http.post("/v2/namespaces/docs/multi-query", json=body)

    assert response.json()["results"] == [{"rows": [{"id": 2}]}]


# --- asynchronous indexing ---------------------------------------------------------------


async def index_status(http: httpx.AsyncClient, ns: str = "docs") -> dict[str, object]:
    response = await http.get(f"/v2/namespaces/{ns}/metadata")
    response.raise_for_status()
    index: dict[str, object] = response.json()["index"]
    return index


async def test_metadata_goes_from_updating_to_up_to_date_after_the_delay() -> None:
    async with Emulator(api_keys=[API_KEY], index_delay_ms=300) as emu:
        async with httpx.AsyncClient(base_url=emu.url, headers=auth()) as http:
            written_at = time.monotonic()
            await seed(http, n=5)
            first = await index_status(http)
            while (status := await index_status(http))["status"] == "updating":
                assert time.monotonic() - written_at < DEADLINE_S, "indexing never finished"
                await asyncio.sleep(0.05)

    assert first["status"] == "updating"
    assert first["unindexed_rows"] == 5
    assert isinstance(first["unindexed_bytes"], int) and first["unindexed_bytes"] > 0
    assert status == {"status": "up-to-date"}
    assert time.monotonic() - written_at >= 0.3


async def test_pause_resume_and_force_over_the_control_api() -> None:
    async with Emulator(api_keys=[API_KEY], index_delay_ms=50) as emu:
        async with httpx.AsyncClient(base_url=emu.url, headers=auth()) as http:
            paused = await http.post("/_emulator/indexing/docs/pause")
            await seed(http)
            await asyncio.sleep(0.2)
            still_updating = await index_status(http)
            forced = await http.post("/_emulator/indexing/docs/force")
            after_force = await index_status(http)
            await seed(http, n=1)
            resumed = await http.post("/_emulator/indexing/docs/resume")
            await asyncio.sleep(0.2)
            after_resume = await index_status(http)

    assert paused.json() == {"status": "OK", "index": None}
    assert still_updating["status"] == "updating"
    assert forced.json()["index"] == {"status": "up-to-date"}
    assert after_force == {"status": "up-to-date"}
    assert resumed.status_code == 200
    assert after_resume == {"status": "up-to-date"}


async def test_forcing_an_unknown_namespace_is_not_found(http: httpx.AsyncClient) -> None:
    response = await http.post("/_emulator/indexing/nope/force")

    assert response.status_code == 404


async def test_python_indexing_controls_match_the_control_api(emulator: Emulator) -> None:
    emulator.pause_indexing("docs")
    emulator.store.write("docs", {"upsert_rows": [{"id": 1}]})

    assert emulator.store.index_status("docs")["status"] == "updating"
    emulator.force_indexing("docs")
    assert emulator.store.index_status("docs") == {"status": "up-to-date"}


# --- faults ------------------------------------------------------------------------------


async def test_a_status_fault_fails_matching_requests_without_retry(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    await seed(http)
    emulator.add_fault(FaultRule(route="metadata", namespace="docs", status=500, message="boom"))

    failed = await http.get("/v2/namespaces/docs/metadata")
    other_route = await http.get("/v1/namespaces/docs/schema")

    assert failed.status_code == 500
    assert failed.json() == {"status": "error", "error": "boom"}
    assert failed.headers["x-should-retry"] == "false"
    assert other_route.status_code == 200


async def test_the_sdk_does_not_retry_a_purposely_failing_response(
    emulator: Emulator, sdk: turbopuffer.AsyncTurbopuffer
) -> None:
    emulator.store.write("docs", {"upsert_rows": [{"id": 1}]})
    emulator.add_fault(FaultRule(route="metadata", status=503))

    with pytest.raises(turbopuffer.InternalServerError):
        await strict_namespace(sdk, "docs").metadata()

    assert emulator.request_count("metadata", "docs") == 1


async def test_a_fault_limited_to_n_times_stops_after_n_matches(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    await seed(http)
    emulator.add_fault(FaultRule(route="query", status=400, times=2))
    body = {"rank_by": ["id", "asc"]}

    statuses = [
        (await http.post("/v2/namespaces/docs/query", json=body)).status_code for _ in range(3)
    ]

    assert statuses == [400, 400, 200]


async def test_a_namespace_fault_leaves_other_namespaces_alone(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    await seed(http, "a")
    await seed(http, "b")
    emulator.add_fault(FaultRule(namespace="a", status=403))

    assert (await http.get("/v2/namespaces/a/metadata")).status_code == 403
    assert (await http.get("/v2/namespaces/b/metadata")).status_code == 200


async def test_latency_delays_the_answer(emulator: Emulator, http: httpx.AsyncClient) -> None:
    emulator.add_fault(FaultRule(route="list", latency_ms=200, times=1))

    started = time.monotonic()
    response = await http.get("/v1/namespaces")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


async def test_429_carries_retry_after_and_the_sdk_retries_it(
    emulator: Emulator, http: httpx.AsyncClient, sdk: turbopuffer.AsyncTurbopuffer
) -> None:
    await seed(http)
    rule_id = emulator.add_fault(FaultRule(route="write", status=429, retry_after_ms=20))

    raw = await http.post("/v2/namespaces/docs", json={"upsert_rows": [{"id": 9}]})
    emulator.remove_fault(rule_id)
    emulator.add_fault(FaultRule(route="write", status=429, retry_after_ms=20, times=1))
    emulator.reset_stats()
    result = await strict_namespace(sdk, "docs").write(upsert_rows=[{"id": 9}])

    assert raw.status_code == 429
    assert raw.headers["Retry-After"] == "1"
    assert raw.headers["retry-after-ms"] == "20"
    assert "x-should-retry" not in raw.headers
    assert result.rows_upserted == 1
    assert emulator.request_count("write") == 2, "one 429, then the retry"


async def test_a_hanging_request_times_the_client_out(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    emulator.add_fault(FaultRule(route="list", hang=True))

    with pytest.raises(httpx.ReadTimeout):
        await http.get("/v1/namespaces", timeout=0.2)

    started = time.monotonic()
    await emulator.stop()
    assert time.monotonic() - started < 2.0, "stop() releases hanging requests"


async def test_fault_rules_over_the_control_api(http: httpx.AsyncClient) -> None:
    await seed(http)

    added = await http.post("/_emulator/faults", json={"route": "schema", "status": 502})
    listed = await http.get("/_emulator/faults")
    failing = await http.get("/v1/namespaces/docs/schema")
    removed = await http.delete(f"/_emulator/faults/{added.json()['id']}")
    healthy = await http.get("/v1/namespaces/docs/schema")
    await http.post("/_emulator/faults", json={"status": 500})
    cleared = await http.delete("/_emulator/faults")
    invalid = await http.post("/_emulator/faults", json={"route": "nope", "status": 500})

    assert added.status_code == 200 and isinstance(added.json()["id"], int)
    assert listed.json()["faults"][0]["rule"] == {
        "route": "schema",
        "status": 502,
        "message": "fault injected by the turbopuffer emulator",
        "latency_ms": 0,
        "hang": False,
    }
    assert failing.status_code == 502
    assert removed.status_code == 200
    assert healthy.status_code == 200
    assert cleared.status_code == 200
    assert (await http.get("/_emulator/faults")).json() == {"faults": []}
    assert invalid.status_code == 400 and "unknown route" in invalid.json()["error"]


@pytest.mark.parametrize(
    "rule",
    [{}, {"status": 200}, {"status": 500, "retry_after_ms": 5}, {"status": 500, "times": 0}],
)
def test_invalid_fault_rules_are_rejected(rule: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultRule.model_validate(rule)


# --- request counters --------------------------------------------------------------------


async def test_requests_are_counted_per_route_and_namespace(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    await seed(http, "a")
    await http.get("/v2/namespaces/a/metadata")
    await http.get("/v1/namespaces/a/metadata")
    await http.get("/v2/namespaces/b/metadata")
    await http.get("/v1/namespaces")
    await http.get("/_emulator/stats")

    stats = (await http.get("/_emulator/stats")).json()

    assert stats == {
        "total": 5,
        "routes": {"write": 1, "metadata": 3, "list": 1},
        "namespaces": {"a": {"write": 1, "metadata": 2}, "b": {"metadata": 1}},
    }
    assert emulator.request_count("metadata", "a") == 2
    assert emulator.request_count(namespace="a") == 3
    assert emulator.request_count("query") == 0


async def test_unauthenticated_requests_are_counted_too(emulator: Emulator) -> None:
    async with httpx.AsyncClient(base_url=emulator.url) as client:
        await client.get("/v1/namespaces")

    assert emulator.request_count("list") == 1


async def test_resetting_counters_starts_from_zero(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    await seed(http)

    reset = await http.post("/_emulator/stats/reset")
    after_http_reset = emulator.request_count()
    await http.get("/v1/namespaces")
    emulator.reset_stats()

    assert reset.status_code == 200
    assert after_http_reset == 0
    assert emulator.stats() == {"total": 0, "routes": {}, "namespaces": {}}


async def test_reset_forgets_namespaces_faults_and_counters(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    await seed(http)
    emulator.add_fault(FaultRule(route="query", status=500))

    response = await http.post("/_emulator/reset")

    assert response.status_code == 200
    assert (await http.get("/v1/namespaces")).json() == {"namespaces": []}
    assert (await http.get("/_emulator/faults")).json() == {"faults": []}
    assert emulator.request_count() == 1


async def test_namespaces_are_per_organisation() -> None:
    """A key of another organisation sees none of the first's namespaces, and may have its
    own with the same name (turbopuffer's namespaces are per organisation)."""
    other = "tpuf-other-org"
    async with Emulator(api_keys=[API_KEY], other_org_keys=[other]) as emu:
        async with (
            httpx.AsyncClient(base_url=emu.url, headers=auth()) as ours,
            httpx.AsyncClient(base_url=emu.url, headers=auth(other)) as theirs,
        ):
            await seed(ours, "shared", n=3)
            assert (await theirs.get("/v2/namespaces/shared/metadata")).status_code == 404
            listed = (await theirs.get("/v1/namespaces")).json()["namespaces"]
            assert listed == []
            await seed(theirs, "shared", n=1)
            mine = (await ours.get("/v2/namespaces/shared/metadata")).json()
            yours = (await theirs.get("/v2/namespaces/shared/metadata")).json()
            assert (mine["approx_row_count"], yours["approx_row_count"]) == (3, 1)
