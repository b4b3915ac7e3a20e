"""The listing from Layer's state: a tracked namespace with nothing written since its latest
observation is shown without an upstream metadata call; one written since is fetched.

Upstream's metadata route is made to fail for the page's namespaces: a row served from the
state shows no error (no call was made), a row that needed a call shows the failure.
Stable namespaces are polled only every 10 minutes here, so no poll meets the fault.
"""

from __future__ import annotations

import httpx

from tests.integration.conftest import (
    EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    eventually,
    unique_namespace,
)

AUTH = {"Authorization": f"Bearer {EMULATOR_KEY}"}


async def test_tracked_rows_come_from_state_and_written_ones_from_upstream(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    worker = cluster.worker("w1", LAYER_SLOW_POLL_INTERVAL_MS="600000").start()
    prefix = unique_namespace("state")
    names = [f"{prefix}-{i}" for i in range(6)]
    for i, name in enumerate(names):
        emulator.write(name, {"upsert_rows": [{"id": n} for n in range(i + 1)]})
        emulator.force_indexing(name)
        worker.metadata(name)  # tracked from now on
    await eventually(lambda: all(worker.layer_state(n)["is_stable"] for n in names), 30, "stable")

    faults = [emulator.add_fault(route="metadata", namespace=n, status=500) for n in names]
    try:
        listed = httpx.get(f"{worker.url}/v2/namespaces", params={"prefix": prefix},
                           headers=AUTH, timeout=15).json()["namespaces"]  # fmt: skip
        assert [row["name"] for row in listed] == names
        assert [row["metadata_error"] for row in listed] == [None] * len(names)
        assert [row["row_count"] for row in listed] == list(range(1, len(names) + 1))
        assert all(row["is_stable"] and row["index"] == {"status": "up-to-date"} for row in listed)

        written = names[2]
        applied = worker.metrics()["write_notifications_total"]
        assert worker.http.post(f"/v2/namespaces/{written}",
                                json={"upsert_rows": [{"id": 99}]}).status_code == 200  # fmt: skip
        # (Not read through /metadata: its upstream call fails here on purpose.)
        await eventually(
            lambda: worker.metrics()["write_notifications_total"] > applied, 20, "write applied"
        )
        again = httpx.get(f"{worker.url}/v2/namespaces",
                          params={"prefix": prefix, "page_size": "50"},  # another query: uncached
                          headers=AUTH, timeout=15).json()["namespaces"]  # fmt: skip
    finally:
        for fault in faults:
            emulator.control("DELETE", f"/faults/{fault}")
    errors = {row["name"]: row["metadata_error"] for row in again}
    assert errors.pop(written) is not None, "written since its last poll: fetched (and failed)"
    assert set(errors.values()) == {None}, "the others still come from the state"
    row = next(r for r in again if r["name"] == written)
    assert row["is_stable"] is False, "its freshness still says the write is not indexed"
