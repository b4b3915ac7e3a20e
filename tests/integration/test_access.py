"""Closed doors (DESIGN.md rule 5): Layer's own data needs a key upstream accepts.

In pass-through mode the caller's key is a turbopuffer key. Snapshots are served from
Layer's table, so Layer asks upstream whether the key may read the namespace: a key upstream
rejects gets 401, a key of another organisation (which cannot see the namespace) 404. The
metrics take the operator's key only.
"""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import (
    EMULATOR_KEY,
    FOREIGN_ORG_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    eventually,
    unique_namespace,
)


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster) -> WorkerProcess:
    return module_cluster.worker("access").start()


def _get(worker: WorkerProcess, path: str, key: str) -> httpx.Response:
    return httpx.get(f"{worker.url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=15)


def _assert_refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["status"] == "error"
    for key in (EMULATOR_KEY, FOREIGN_ORG_KEY, "anything"):
        assert key not in response.text, "keys are never echoed"


async def test_snapshots_need_a_key_upstream_accepts_for_that_namespace(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    name = unique_namespace("closed")
    emulator.write(name, {"upsert_rows": [{"id": 1}]})
    emulator.force_indexing(name)
    worker.metadata(name)

    await eventually(lambda: _get(worker, f"/v2/namespaces/{name}/snapshots", EMULATOR_KEY)
                     .json()["snapshots"], 30, "a snapshot")  # fmt: skip
    path = f"/v2/namespaces/{name}/snapshots"
    for _ in range(2):  # the second refusal comes from the cached verdict: the same answer
        _assert_refused(_get(worker, path, "anything"), 401)
        _assert_refused(_get(worker, path, FOREIGN_ORG_KEY), 404)
        _assert_refused(_get(worker, f"{path}?as_of=1", FOREIGN_ORG_KEY), 404)
    assert _get(worker, path, EMULATOR_KEY).json()["snapshots"], "the right key still reads it"


def test_metrics_take_the_operators_key_only(worker: WorkerProcess) -> None:
    _assert_refused(_get(worker, "/metrics", "anything"), 403)
    _assert_refused(_get(worker, "/metrics", FOREIGN_ORG_KEY), 403)
    answer = _get(worker, "/metrics", EMULATOR_KEY)  # the worker's TURBOPUFFER_API_KEY
    assert answer.status_code == 200 and "layer_" in answer.text


def test_operations_of_another_key_are_not_found(worker: WorkerProcess) -> None:
    started = httpx.get(
        f"{worker.url}/v2/namespaces?prefix={unique_namespace('ops')}",  # never cached yet
        headers={"Authorization": f"Bearer {EMULATOR_KEY}", "Prefer": "respond-async"},
        timeout=15,
    )
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    _assert_refused(_get(worker, location, "anything"), 404)
    _assert_refused(_get(worker, location, FOREIGN_ORG_KEY), 404)
    assert _get(worker, location, EMULATOR_KEY).status_code == 200
