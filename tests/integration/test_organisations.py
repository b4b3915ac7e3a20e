"""One organisation per Layer (api/access.py): another organisation's key gets upstream's
answers about its own namespaces, and none of the watched organisation's Layer data.

The emulator serves two organisations: the keys of the worker's (`EMULATOR_KEY`, the
watcher's, and `OTHER_EMULATOR_KEY`) and another one (`FOREIGN_ORG_KEY`). Each has a
namespace of the same name, written differently.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    EMULATOR_KEY,
    FOREIGN_ORG_KEY,
    OTHER_EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    eventually,
    unique_namespace,
)


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster) -> WorkerProcess:
    return module_cluster.worker("orgs").start()


def _get(worker: WorkerProcess, path: str, key: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{worker.url}{path}", params=params, headers={"Authorization": f"Bearer {key}"},
        timeout=15,
    )  # fmt: skip


@pytest.fixture
async def products(worker: WorkerProcess, emulator: EmulatorProcess) -> str:
    """A namespace of this name in both organisations: 3 rows in ours, 1 in theirs."""
    name = unique_namespace("products")
    emulator.write(name, {"upsert_rows": [{"id": i} for i in range(3)]})
    emulator.force_indexing(name)
    theirs = httpx.post(
        f"{emulator.url}/v2/namespaces/{name}", json={"upsert_rows": [{"id": 9}]},
        headers={"Authorization": f"Bearer {FOREIGN_ORG_KEY}"},
    )  # fmt: skip
    assert theirs.status_code == 200, theirs.text
    worker.metadata(name)

    def snapshot_recorded() -> Any:
        return _get(worker, f"/v2/namespaces/{name}/snapshots", EMULATOR_KEY).json()["snapshots"]

    await eventually(snapshot_recorded, 30, "the watched namespace's first snapshot")
    return name


def test_another_organisations_key_gets_its_own_metadata_and_no_layer_block(
    worker: WorkerProcess, products: str
) -> None:
    theirs = _get(worker, f"/v2/namespaces/{products}/metadata", FOREIGN_ORG_KEY)
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["approx_row_count"] == 1, "upstream's answer about *their* namespace"
    assert theirs.json()["layer"] is None
    for key in (EMULATOR_KEY, OTHER_EMULATOR_KEY):  # the watched organisation's keys
        ours = _get(worker, f"/v2/namespaces/{products}/metadata", key).json()
        assert ours["approx_row_count"] == 3
        assert ours["layer"]["is_stable"] is True and ours["layer"]["stable_as_of"] is not None


def test_another_organisations_key_gets_403_on_snapshots(
    worker: WorkerProcess, products: str
) -> None:
    refused = _get(worker, f"/v2/namespaces/{products}/snapshots", FOREIGN_ORG_KEY)
    assert refused.status_code == 403, refused.text
    assert refused.json()["status"] == "error"
    refused_as_of = _get(worker, f"/v2/namespaces/{products}/snapshots", FOREIGN_ORG_KEY,
                         as_of="9999999999999")  # fmt: skip
    assert refused_as_of.status_code == 403
    for key in (EMULATOR_KEY, OTHER_EMULATOR_KEY):
        assert _get(worker, f"/v2/namespaces/{products}/snapshots", key).json()["snapshots"]


def test_listing_rows_of_another_organisation_carry_no_layer_fields(
    worker: WorkerProcess, products: str
) -> None:
    theirs = _get(worker, "/v2/namespaces", FOREIGN_ORG_KEY, prefix=products).json()
    assert [row["name"] for row in theirs["namespaces"]] == [products]
    row = theirs["namespaces"][0]
    assert row["row_count"] == 1
    assert (row["is_stable"], row["stable_as_of_ms"], row["cache_state"]) == (None, None, None)
    ours = _get(worker, "/v2/namespaces", OTHER_EMULATOR_KEY, prefix=products).json()
    assert ours["namespaces"][0]["row_count"] == 3
    assert ours["namespaces"][0]["is_stable"] is True


def test_a_query_of_another_organisation_is_not_cut_by_the_watched_state(
    worker: WorkerProcess, products: str
) -> None:
    answer = httpx.post(
        f"{worker.url}/v2/namespaces/{products}/query",
        json={"rank_by": ["id", "asc"], "top_k": 10},
        headers={"Authorization": f"Bearer {FOREIGN_ORG_KEY}"}, timeout=15,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert [row["id"] for row in answer.json()["rows"]] == [9]
    assert answer.headers["X-Layer-Stable-As-Of"] == "", "the watched watermark is not theirs"
    assert answer.headers["X-Layer-Filtered"] == "false"
