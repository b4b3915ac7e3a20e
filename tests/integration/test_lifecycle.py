"""Start, rebalance and stop, judged as a client sees them (DESIGN.md, "Answering truthfully").

- Traffic sent the moment a worker's port accepts never crashes it and loses no write.
- Reads while a second worker joins (a rebalance, a recovery) get a correct answer or a 503
  with `Retry-After`: never a lower watermark, never `null` after a value, never a 500.
- SIGTERM during a burst: requests in flight finish; later ones get a 503 or a closed
  connection; no 500, no "client has been closed".
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from dataclasses import dataclass, field

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.conftest import (
    EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    eventually,
    unique_namespace,
)

AUTH = {"Authorization": f"Bearer {EMULATOR_KEY}"}
#: Transport failures a client may see while a worker stops: a clean close, not an answer.
CLEAN_CLOSES = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.05)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(worker: WorkerProcess, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not _accepts(worker.port):
        assert worker.process is not None and worker.process.poll() is None, "worker exited"
        assert time.monotonic() < deadline, "the worker's port never accepted"
        time.sleep(0.005)


async def _topic_partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {entry["topic"]: len(entry["partitions"]) for entry in described}


def _assert_not_ready_shape(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers.get("Retry-After"), "a 503 says when to retry"
    assert response.json()["status"] == "error"


async def test_traffic_from_the_first_moment_the_port_accepts(cluster: LayerCluster) -> None:
    """Three starts in a row, each hit with a write and reads as soon as the port accepts."""
    for attempt in range(3):
        namespace = unique_namespace(f"early{attempt}")
        worker = cluster.worker(f"early{attempt}")
        worker.spawn()
        _wait_port(worker)
        async with httpx.AsyncClient(base_url=worker.url, headers=AUTH, timeout=30) as http:
            sent_at = int(time.time() * 1000)  # Layer stamps the write later than this
            written = await http.post(
                f"/v2/namespaces/{namespace}", json={"upsert_rows": [{"id": 1, "t": "x"}]}
            )
            assert written.status_code == 200, written.text
            for _ in range(5):
                read = await http.get(f"/v2/namespaces/{namespace}/metadata")
                if read.status_code != 200:
                    _assert_not_ready_shape(read)
        await asyncio.to_thread(worker.wait_ready)

        def write_applied(
            ns: str = namespace, w: WorkerProcess = worker, sent: int = sent_at
        ) -> bool:
            last_write = w.layer_state(ns)["last_write_ms"]
            return last_write is not None and last_write >= sent

        await eventually(write_applied, 30, f"the early write to {namespace} to be applied")
        assert worker.process is not None and worker.process.poll() is None, "worker alive"
        worker.stop()
        assert "shutting down: " in worker.log_path.read_text(errors="replace")
        assert worker.process.returncode == 0, f"clean exit, got {worker.process.returncode}"

    topics = [cluster.topic(s) for s in ("writes", "ticks", "stability", "writes.dlq")]
    counts = await _topic_partition_counts(cluster.broker.bootstrap, topics)
    assert counts == {topic: cluster.partitions for topic in topics}


@dataclass
class WatermarkJudge:
    """What an outside client may assert of a sequence of answers about one namespace."""

    highest: dict[str, int] = field(default_factory=dict)
    answers: int = 0
    not_ready: int = 0
    violations: list[str] = field(default_factory=list)

    def judge(self, worker: str, namespace: str, response: httpx.Response) -> None:
        if response.status_code == 503:
            _assert_not_ready_shape(response)
            self.not_ready += 1
            return
        if response.status_code != 200:
            self.violations.append(f"{worker} {namespace}: {response.status_code} {response.text}")
            return
        self.answers += 1
        seen = response.json()["layer"]["stable_as_of"]
        best = self.highest.get(namespace)
        if best is not None and (seen is None or seen < best):
            self.violations.append(f"{worker} {namespace}: stable_as_of {seen} after {best}")
        elif seen is not None:
            self.highest[namespace] = seen


async def _read_all(
    judge: WatermarkJudge, workers: list[WorkerProcess], names: list[str], until: asyncio.Event
) -> None:
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http:
        while not until.is_set():
            for worker in workers:
                for name in names:
                    try:
                        response = await http.get(f"{worker.url}/v2/namespaces/{name}/metadata")
                    except CLEAN_CLOSES:
                        continue  # a worker still starting its web server
                    judge.judge(worker.url, name, response)
            await asyncio.sleep(0.02)


async def test_reads_during_a_join_and_its_recovery_never_go_back(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    names = [unique_namespace("join") for _ in range(8)]
    for name in names:
        emulator.write(name, {"upsert_rows": [{"id": 1}]})
        emulator.force_indexing(name)
    first = cluster.worker("w1").start()

    def all_stable() -> bool:
        return all(first.layer_state(name)["is_stable"] for name in names)

    await eventually(all_stable, 30, "every namespace stable on the first worker")
    judge = WatermarkJudge()
    done = asyncio.Event()
    second = cluster.worker("w2")
    reader = asyncio.create_task(_read_all(judge, [first, second], names, done))
    await asyncio.sleep(0.5)
    second.spawn()
    await asyncio.to_thread(second.wait_ready)
    await asyncio.sleep(2.0)  # the rebalance settles; both keep answering
    second.stop()  # and a leave: the partitions move back
    await asyncio.sleep(3.0)
    done.set()
    await reader
    assert not judge.violations, "\n".join(judge.violations)
    assert judge.answers > len(names) * 4, "the readers got real answers throughout"
    assert set(judge.highest) == set(names)


async def test_sigterm_during_a_burst_answers_or_closes_cleanly(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    slow = unique_namespace("slow")
    emulator.write(slow, {"upsert_rows": [{"id": 1}]})
    worker = cluster.worker("w1").start()
    assert worker.metadata(slow)["layer"] is not None
    fault = emulator.add_fault(route="metadata", namespace=slow, latency_ms=1500)
    statuses: list[int] = []
    closes: list[str] = []

    async def hammer(http: httpx.AsyncClient) -> None:
        while worker.process is not None and worker.process.poll() is None:
            try:
                response = await http.get(f"/v2/namespaces/{unique_namespace('b')}/metadata")
            except CLEAN_CLOSES as exc:
                closes.append(type(exc).__name__)
                await asyncio.sleep(0.01)
                continue
            statuses.append(response.status_code)
            if response.status_code == 503:
                _assert_not_ready_shape(response)

    try:
        async with httpx.AsyncClient(base_url=worker.url, headers=AUTH, timeout=30) as http:
            in_flight = asyncio.create_task(http.get(f"/v2/namespaces/{slow}/metadata"))
            hammers = [asyncio.create_task(hammer(http)) for _ in range(4)]
            await asyncio.sleep(0.5)
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
            slow_answer = await in_flight
            await asyncio.gather(*hammers)
    finally:
        emulator.control("DELETE", f"/faults/{fault}")
    assert worker.process.wait(30) == 0, "a clean exit"
    assert slow_answer.status_code == 200, slow_answer.text  # started before: finished
    assert statuses, "the burst got answers"
    unexpected = sorted({s for s in statuses if s not in (200, 404, 503)})
    assert not unexpected, f"statuses other than 200/404/503 during shutdown: {unexpected}"
    log = worker.log_path.read_text(errors="replace")
    assert "client has been closed" not in log
    assert "unhandled error" not in log
