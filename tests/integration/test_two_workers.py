"""With two workers, every route answers correctly on every worker, and nothing is lost when
workers join or leave under load.

A worker forwards a read of a partition it does not own to the owner (api/replica.py);
with standby replicas configured or not, every worker must give the same answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from layer.events import partition_for
from tests.integration.conftest import (
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    eventually,
    unique_namespace,
    wait_until,
)

NAMESPACES = 12
#: Notifications flow to this many namespaces, in bursts, while workers join and leave.
CHURN_NAMESPACES = 200
CHURN_BURST = 500


def _both_ready(cluster: LayerCluster, replicas: str) -> tuple[WorkerProcess, WorkerProcess]:
    first = cluster.worker("w1", LAYER_TABLE_STANDBY_REPLICAS=replicas)
    second = cluster.worker("w2", LAYER_TABLE_STANDBY_REPLICAS=replicas)
    first.start()
    second.start()
    # The second join rebalances the first: wait until both hold partitions again.
    wait_until(lambda: all(w.http.get("/readyz").status_code == 200 for w in (first, second)),
               60, "both workers ready after the rebalance")  # fmt: skip
    return first, second


@pytest.mark.parametrize("replicas", ["0", "1"], ids=["no-standbys", "with-standbys"])
def test_every_route_answers_the_same_on_every_worker(
    cluster: LayerCluster, emulator: EmulatorProcess, replicas: str
) -> None:
    prefix = unique_namespace("pair")
    names = [f"{prefix}-{i}" for i in range(NAMESPACES)]
    partitions = {partition_for(name, cluster.partitions) for name in names}
    assert len(partitions) > 1, "the namespaces must spread over several partitions"
    for name in names:
        emulator.write(name, {"upsert_rows": [{"id": 1, "title": name}]})
        emulator.force_indexing(name)
    workers = _both_ready(cluster, replicas)

    for name in names:  # register half through each worker
        workers[hash(name) % 2].metadata(name)

    def layer_blocks(worker: WorkerProcess) -> dict[str, Any]:
        return {name: worker.layer_state(name) for name in names}

    def agreed() -> dict[str, Any] | None:
        views = [layer_blocks(worker) for worker in workers]
        agreed.views = views  # type: ignore[attr-defined]
        settled = all(block["is_stable"] for block in views[0].values())
        return views[0] if settled and views[0] == views[1] else None

    try:
        blocks = wait_until(agreed, 30, "both workers to show every namespace stable, identically")
    except AssertionError:
        a, b = agreed.views  # type: ignore[attr-defined]
        diff = {n: (a[n], b[n]) for n in names if a[n] != b[n] or not a[n]["is_stable"]}
        raise AssertionError(f"workers disagree: {diff}") from None
    assert all(block["stable_as_of"] is not None for block in blocks.values())

    listings = [
        w.http.get("/v2/namespaces", params={"prefix": prefix}).json()["namespaces"]
        for w in workers
    ]
    assert [row["name"] for row in listings[0]] == sorted(names)
    for one, other in zip(*listings, strict=True):
        assert (
            one["stable_as_of_ms"]
            == other["stable_as_of_ms"]
            == blocks[one["name"]]["stable_as_of"]
        )
        assert one["is_stable"] is other["is_stable"] is True

    snapshots = [w.http.get(f"/v2/namespaces/{names[0]}/snapshots").json() for w in workers]
    assert snapshots[0] == snapshots[1] and snapshots[0]["snapshots"]

    accepted = workers[0].http.get(
        "/v2/namespaces", params={"prefix": names[1]}, headers={"Prefer": "respond-async"}
    )
    assert accepted.status_code == 202
    done = wait_until(
        lambda: (
            (b := workers[1].http.get(accepted.headers["Location"]).json())["status"] == "finished"
            and b
        ),
        20,
        "the operation, polled on the other worker",
    )
    assert done["result"]["success"]["namespaces"][0]["name"] == names[1]


async def test_no_notification_is_lost_while_workers_join_and_leave_under_load(
    cluster: LayerCluster, emulator: EmulatorProcess, producer: AIOKafkaProducer
) -> None:
    """Notifications keep flowing while a second worker joins (a rebalance) and the first
    leaves (another): every namespace ends with the latest write sent for it.

    Batches fetched before a rebalance are dropped unacked and must be read again by the
    partition's new owner (layer/batch_consumer.py); a loss shows as a stale row.
    """
    prefix = unique_namespace("churn")
    names = [f"{prefix}-{i}" for i in range(CHURN_NAMESPACES)]
    await asyncio.to_thread(
        lambda: [emulator.write(n, {"upsert_rows": [{"id": 1}]}) for n in names]
    )
    first = await asyncio.to_thread(cluster.worker("w1").start)
    latest: dict[str, int] = {}
    sent = 0

    async def send_for(seconds: float) -> None:
        nonlocal sent
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            futures = []
            for _ in range(CHURN_BURST):
                name = names[sent % CHURN_NAMESPACES]
                written_at = int(time.time() * 1000) + sent  # strictly increasing per name
                latest[name] = written_at
                note = json.dumps({"namespace": name, "written_at_ms": written_at}).encode()
                futures.append(await producer.send(topic, key=name.encode(), value=note))
                sent += 1
            await asyncio.gather(*futures)
            await asyncio.sleep(0.01)

    topic = cluster.topic("writes")
    second = cluster.worker("w2")
    await asyncio.gather(send_for(6.0), asyncio.to_thread(second.start))
    await asyncio.gather(send_for(4.0), asyncio.to_thread(first.stop))  # SIGTERM: hand-over
    await send_for(1.0)

    def rows_current() -> list[str] | None:
        stale = [n for n in names if second.layer_state(n)["last_write_ms"] != latest[n]]
        rows_current.stale = stale[:5]  # type: ignore[attr-defined]
        return None if stale else names

    try:
        await eventually(rows_current, 60, f"all {CHURN_NAMESPACES} rows to show their last write")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; stale: {rows_current.stale}") from None  # type: ignore[attr-defined]
    assert sent > CHURN_NAMESPACES * 10, "enough notifications for batches to span the rebalances"
