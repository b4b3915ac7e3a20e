"""Integration fixtures: the real embedded broker, the emulator, and Layer worker processes.

A fixture that cannot start its component fails the test run; nothing here skips.
Each test gets its own app id and topic prefix, so tests sharing the broker never see
each other's events or consumer groups.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from layer.embedded_broker import EmbeddedBroker, free_port

EMULATOR_KEY = "tpuf-test-key"
#: A second upstream key: another tenant, for cache and credential isolation tests.
OTHER_EMULATOR_KEY = "tpuf-test-key-2"
#: Upper bounds for things that normally take ~3 s (worker join) or less.
WORKER_READY_TIMEOUT_S = 60.0
EMULATOR_START_TIMEOUT_S = 30.0


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll `predicate()` until it returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


class EmulatorProcess:
    """The turbopuffer emulator in its own process, driven through its control API."""

    def __init__(self, log_path: Path, *extra_args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "layer.emulator", "--port", str(self.port),
                "--api-key", EMULATOR_KEY, "--api-key", OTHER_EMULATOR_KEY,
                *extra_args]  # fmt: skip
        self.process = subprocess.Popen(
            argv,
            stdout=open(log_path, "ab"),
            stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {EMULATOR_KEY}"}, timeout=10
        )
        wait_until(self._answers, EMULATOR_START_TIMEOUT_S, "the emulator to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the emulator exited with {self.process.returncode}")
        try:
            return self.client.get("/_emulator/stats").status_code == 200
        except httpx.TransportError:
            return False

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.client.request(method, f"/_emulator{path}", json=body)
        assert response.status_code < 300, response.text
        return response.json()

    def write(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(f"/v2/namespaces/{namespace}", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def pause_indexing(self, namespace: str) -> None:
        self.control("POST", f"/indexing/{namespace}/pause")

    def resume_indexing(self, namespace: str) -> None:
        self.control("POST", f"/indexing/{namespace}/resume")

    def force_indexing(self, namespace: str) -> None:
        self.control("POST", f"/indexing/{namespace}/force")

    def add_fault(self, **rule: Any) -> int:
        fault_id: int = self.control("POST", "/faults", rule)["id"]
        return fault_id

    def clear_faults(self) -> None:
        self.control("DELETE", "/faults")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "/stats")
        return result

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    running = EmulatorProcess(tmp_path_factory.mktemp("emulator") / "emulator.log")
    yield running
    running.stop()


def unique_namespace(prefix: str = "ns") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class WorkerProcess:
    """One `layer worker` process with its own web port and data directory."""

    def __init__(self, env: dict[str, str], data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "LAYER_PORT": str(self.port), "LAYER_DATA_DIR": str(data_dir)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {EMULATOR_KEY}"}, timeout=15
        )

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "layer", "worker"],
            env=self.env,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, WORKER_READY_TIMEOUT_S, f"worker on {self.url} to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{tail}")
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def metadata(self, namespace: str) -> dict[str, Any]:
        response = self.http.get(f"/v2/namespaces/{namespace}/metadata")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def metrics(self) -> dict[str, float]:
        """`GET /metrics` as `{name without the layer_ prefix: value}`."""
        response = self.http.get("/metrics")
        assert response.status_code == 200, response.text
        values: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name.removeprefix("layer_")] = float(value)
        return values

    def layer_state(self, namespace: str) -> dict[str, Any]:
        state: dict[str, Any] = self.metadata(namespace)["layer"]
        return state


class LayerCluster:
    """The settings one test's workers share (app id, topics, broker, upstream)."""

    def __init__(self, broker: EmbeddedBroker, emulator: EmulatorProcess, tmp: Path) -> None:
        self.emulator = emulator
        self.broker = broker
        self.tmp = tmp
        self.app_id = f"layer-test-{uuid.uuid4().hex[:8]}"
        self.topic_prefix = self.app_id
        self.partitions = 4
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LAYER_", "TURBOPUFFER_", "NAMESPACE_LIST"))
        }
        self.env.update(
            LAYER_APP_ID=self.app_id,
            LAYER_TOPIC_PREFIX=self.topic_prefix,
            LAYER_TOPIC_PARTITIONS=str(self.partitions),
            LAYER_KAFKA_BROKER=broker.url,
            LAYER_BROKER_PROFILE="embedded",
            TURBOPUFFER_BASE_URL=emulator.url,
            TURBOPUFFER_API_KEY=EMULATOR_KEY,
            LAYER_TICK_INTERVAL_MS="100",
            LAYER_FAST_POLL_INTERVAL_MS="200",
            LAYER_SLOW_POLL_INTERVAL_MS="5000",
            LAYER_SAFETY_MARGIN_MS="0",
            LAYER_LOG_LEVEL="info",
        )
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str = "w1", **overrides: str) -> WorkerProcess:
        """A worker (not started) with this cluster's settings; same name = same data dir."""
        data_dir = self.tmp / name
        data_dir.mkdir(exist_ok=True)
        worker = WorkerProcess({**self.env, **overrides}, data_dir, self.tmp / f"{name}.log")
        self.workers.append(worker)
        return worker

    def topic(self, suffix: str) -> str:
        return f"{self.topic_prefix}.{suffix}"

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(signal.SIGKILL)
            worker.http.close()


@pytest.fixture
def cluster(
    broker: EmbeddedBroker, emulator: EmulatorProcess, tmp_path: Path
) -> Iterator[LayerCluster]:
    running = LayerCluster(broker, emulator, tmp_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def module_cluster(
    broker: EmbeddedBroker, emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LayerCluster]:
    """A cluster shared by one module's tests (each worker start costs ~3 s)."""
    running = LayerCluster(broker, emulator, tmp_path_factory.mktemp("cluster"))
    yield running
    running.stop()


@pytest.fixture
async def producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    """A plain aiokafka producer, as any application would use."""
    running = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await running.start()
    yield running
    await running.stop()


async def read_topic(
    bootstrap: str, topic: str, *, until: Any, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Read `topic` from the beginning with a plain consumer until `until(messages)` holds."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    messages.append(
                        {"key": record.key, "value": json.loads(record.value), "raw": record.value}
                    )
            if until(messages):
                return messages
    finally:
        await consumer.stop()
    raise AssertionError(f"timed out reading {topic}; got {messages!r}")


async def eventually(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """`wait_until` off the event loop, so the test's own Kafka clients keep running."""
    return await asyncio.to_thread(wait_until, predicate, timeout_s, what, interval_s)
