"""An answer never says stable against evidence the worker holds (DESIGN.md, rule 3).

The broker is stalled (SIGSTOP) right after a write through Layer, so the write's
notification waits in the worker's buffer and the owner's table has not heard of it: the
metadata answer, and the stable-read cut of a query, must still reflect the write.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from tests.integration.conftest import (
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    eventually,
    unique_namespace,
)

#: The stall: long enough to read and query, short of the embedded group session (2 s).
STALL_S = 1.5


@contextmanager
def broker_stalled(cluster: LayerCluster) -> Iterator[None]:
    pid = cluster.broker._process.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def _stable(worker: WorkerProcess, name: str) -> None:
    await eventually(lambda: worker.layer_state(name)["is_stable"], 30, f"{name} stable")


async def _stable_namespace(worker: WorkerProcess, emulator: EmulatorProcess, prefix: str) -> str:
    """A namespace with one indexed row, registered and stable, its indexing then paused."""
    name = unique_namespace(prefix)
    emulator.write(name, {"upsert_rows": [{"id": 1}]})
    emulator.force_indexing(name)
    worker.metadata(name)  # registers it
    await _stable(worker, name)
    emulator.pause_indexing(name)
    return name


async def test_a_write_whose_notification_is_pending_is_not_answered_stable(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    worker = cluster.worker("w1").start()
    name = await _stable_namespace(worker, emulator, "stall")
    try:
        with broker_stalled(cluster):
            written = worker.http.post(f"/v2/namespaces/{name}", json={"upsert_rows": [{"id": 2}]})
            assert written.status_code == 200, written.text
            answer = worker.metadata(name)
            query = worker.http.post(
                f"/v2/namespaces/{name}/query", json={"rank_by": ["id", "asc"], "top_k": 10}
            )
    finally:
        emulator.resume_indexing(name)
    assert answer["index"]["status"] == "updating"  # upstream's own word, verbatim
    assert answer["layer"]["is_stable"] is False, answer["layer"]
    assert answer["layer"]["stable_as_of"] is not None, "the watermark stays"
    assert query.status_code == 200, query.text
    assert query.headers["X-Layer-Filtered"] == "true", "the pending write makes the query cut"
    assert [row["id"] for row in query.json()["rows"]] == [1], "the unindexed row is hidden"
    await _stable(worker, name)  # and it recovers once the broker and the index move on


async def test_an_upstream_answer_saying_updating_wins_over_a_stable_table(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    """A direct writer's notification is not there yet; upstream already says `updating`."""
    worker = cluster.worker("w1").start()
    name = await _stable_namespace(worker, emulator, "direct")
    try:
        emulator.write(name, {"upsert_rows": [{"id": 2}]})  # no notification at all
        answer = worker.metadata(name)
    finally:
        emulator.resume_indexing(name)
    assert answer["index"]["status"] == "updating"
    assert answer["layer"]["is_stable"] is False, answer["layer"]
