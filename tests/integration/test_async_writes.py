"""copy_from and branch_from through Layer: writes of the destination, asynchronous ones
followed to their end (agents/operations.py), also across a worker restart."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
import turbopuffer
from turbopuffer.lib.namespace import Namespace

from tests.integration.conftest import (
    EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    unique_namespace,
    wait_until,
)

#: How long a copy takes in these tests: long enough to be seen running and outlive a kill.
COPY_MS = 1500


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster) -> Iterator[WorkerProcess]:
    yield module_cluster.worker("copies").start()


@pytest.fixture
def slow_copies(emulator: EmulatorProcess) -> Iterator[int]:
    emulator.control("POST", "/copy", {"duration_ms": COPY_MS})
    yield COPY_MS
    emulator.control("POST", "/copy", {"duration_ms": 0})


@pytest.fixture
def sdk(
    worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[turbopuffer.Turbopuffer]:
    monkeypatch.delenv("TURBOPUFFER_REGION", raising=False)
    client = turbopuffer.Turbopuffer(
        api_key=EMULATOR_KEY, base_url=worker.url, max_retries=0, _strict_response_validation=True
    )
    yield client
    client.close()


def strict_namespace(client: turbopuffer.Turbopuffer, name: str) -> Namespace:
    scoped = client.with_options(
        default_namespace=name, _extra_kwargs={"_strict_response_validation": True}
    )
    return Namespace(scoped)


def epoch_ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def seed_source(worker: WorkerProcess) -> str:
    source = unique_namespace("src")
    rows = [{"id": i, "title": f"t{i}"} for i in range(5)]
    assert worker.http.post(f"/v2/namespaces/{source}", json={"upsert_rows": rows}).is_success
    return source


def stable_after(worker: WorkerProcess, name: str, emulator: EmulatorProcess) -> dict[str, object]:
    """Let the destination index, and wait until Layer says stable."""
    emulator.resume_indexing(name)
    emulator.force_indexing(name)
    return wait_until(  # type: ignore[no-any-return]
        lambda: (state := worker.layer_state(name))["is_stable"] and state, 30, f"{name} stable"
    )


def test_sdk_copy_from_through_layer_is_a_followed_write_of_the_destination(
    sdk: turbopuffer.Turbopuffer,
    worker: WorkerProcess,
    emulator: EmulatorProcess,
    slow_copies: int,
) -> None:
    source, dest = seed_source(worker), unique_namespace("copy")
    emulator.pause_indexing(dest)
    started = int(time.time() * 1000)

    # The SDK sends Prefer: respond-async; Layer answers the 202 with a Location on its own
    # origin, and the SDK's own poller follows it through Layer until `finished`.
    result = strict_namespace(sdk, dest).copy_from(source_namespace=source)

    assert result.status == "OK" and result.rows_affected == 5
    state = wait_until(
        lambda: (s := worker.layer_state(dest))["last_write_ms"] and s, 30, "the write known"
    )
    assert state["last_write_ms"] >= started
    assert state["is_stable"] is False, "the copy is not indexed yet"
    state = stable_after(worker, dest, emulator)
    assert state["stable_as_of"] >= started + COPY_MS, "stable as of after the copy landed"
    assert strict_namespace(sdk, dest).metadata().approx_row_count == 5


def test_sdk_branch_from_through_layer_is_a_write_of_the_destination(
    sdk: turbopuffer.Turbopuffer, worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    source, dest = unique_namespace("src"), unique_namespace("branch")
    emulator.pause_indexing(source)  # a backlog the branch shares (copy-on-write)
    emulator.pause_indexing(dest)
    assert worker.http.post(
        f"/v2/namespaces/{source}", json={"upsert_rows": [{"id": i} for i in range(5)]}
    ).is_success
    started = int(time.time() * 1000)

    result = strict_namespace(sdk, dest).branch_from(source_namespace=source)
    emulator.resume_indexing(source)

    assert result.status == "OK" and result.rows_affected == 5
    state = wait_until(
        lambda: (s := worker.layer_state(dest))["last_write_ms"] and s, 30, "the write known"
    )
    assert state["last_write_ms"] >= started and state["is_stable"] is False
    assert stable_after(worker, dest, emulator)["stable_as_of"] >= state["last_write_ms"]


def test_raw_respond_async_copy_through_layer_202_location_on_layer_polled_to_finished(
    worker: WorkerProcess, emulator: EmulatorProcess, slow_copies: int
) -> None:
    source, dest = seed_source(worker), unique_namespace("raw")
    emulator.pause_indexing(dest)
    accepted = worker.http.post(
        f"/v2/namespaces/{dest}",
        json={"copy_from_namespace": {"source_namespace": source}},
        headers={"Prefer": "respond-async"},
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["Preference-Applied"] == "respond-async"
    location = accepted.headers["Location"]
    resolved = httpx.URL(worker.url).join(location)
    assert (resolved.host, resolved.port) == ("127.0.0.1", worker.port), "Layer's own origin"

    def poll() -> dict[str, object]:
        answer = worker.http.get(location)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    assert poll()["status"] == "running"
    finished = wait_until(lambda: (body := poll())["status"] == "finished" and body, 30, "done")
    assert finished["result"]["success"]["rows_affected"] == 5  # type: ignore[index]
    landed = epoch_ms(str(finished["finish_time"]))
    state = wait_until(
        lambda: (s := worker.layer_state(dest))["last_write_ms"] and s, 30, "the write known"
    )
    assert state["is_stable"] is False
    state = stable_after(worker, dest, emulator)
    assert state["stable_as_of"] >= landed, "stable as of the copy's completion or later"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"copy_from_namespace": "no-such-namespace-x"}, 404, "not found"),
        ({"copy_from_namespace": "SOURCE"}, 400, "not empty"),
        (
            {"copy_from_namespace": {"source_namespace": "SOURCE", "source_api_key": "wrong"}},
            403,
            "source_api_key",
        ),
    ],
)
def test_bad_copies_get_upstreams_error_unchanged(
    worker: WorkerProcess,
    emulator: EmulatorProcess,
    body: dict[str, object],
    status: int,
    error: str,
) -> None:
    source = seed_source(worker)
    dest = source if status == 400 else unique_namespace("bad")
    payload = _with_source(body, source)
    through_layer = worker.http.post(f"/v2/namespaces/{dest}", json=payload)
    direct = emulator.client.post(f"/v2/namespaces/{dest}", json=payload)
    assert (through_layer.status_code, through_layer.json()) == (status, direct.json())
    assert error in through_layer.json()["error"]


def _with_source(body: dict[str, object], source: str) -> dict[str, object]:
    value = body["copy_from_namespace"]
    if value == "SOURCE":
        return {"copy_from_namespace": source}
    if isinstance(value, dict) and value.get("source_namespace") == "SOURCE":
        return {"copy_from_namespace": {**value, "source_namespace": source}}
    return body


def test_a_worker_killed_while_following_finishes_following_after_restart(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    worker = cluster.worker("follower").start()
    source, dest = seed_source(worker), unique_namespace("restart")
    emulator.control("POST", "/copy", {"duration_ms": 4000})
    try:
        accepted = worker.http.post(
            f"/v2/namespaces/{dest}",
            json={"copy_from_namespace": source},
            headers={"Prefer": "respond-async"},
        )
    finally:
        emulator.control("POST", "/copy", {"duration_ms": 0})
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]
    time.sleep(1.0)  # the acceptance is in Kafka and applied; nobody polls through Layer
    worker.stop(signal.SIGKILL)

    finished = wait_until(
        lambda: (body := emulator.client.get(location).json())["status"] == "finished" and body,
        30,
        "the copy to finish upstream while the worker is down",
    )
    landed = epoch_ms(finished["finish_time"])
    time.sleep(0.5)
    worker.start()

    state = wait_until(
        lambda: (s := worker.layer_state(dest))["last_write_ms"] >= landed and s,
        60,
        "the restarted worker to follow the operation to its end",
    )
    assert state["last_write_ms"] >= landed
    state = wait_until(lambda: (s := worker.layer_state(dest))["is_stable"] and s, 60, "stable")
    assert state["stable_as_of"] >= landed
