"""Integration fixtures: the real embedded broker, the emulator, and Layer worker processes.

A fixture that cannot start its component fails the test run; nothing here skips.
Each test gets its own app id and topic prefix, so tests sharing the broker never see
each other's events or consumer groups.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from layer.embedded_broker import EmbeddedBroker
from tests.processes import EmulatorProcess, WorkerProcess, layer_env, wait_until

__all__ = [
    "EMULATOR_KEY",
    "FOREIGN_ORG_KEY",
    "OTHER_EMULATOR_KEY",
    "EmulatorProcess",
    "LayerCluster",
    "WorkerProcess",
    "eventually",
    "read_topic",
    "unique_namespace",
    "wait_until",
]

EMULATOR_KEY = "tpuf-test-key"
#: A second upstream key: another tenant, for cache and credential isolation tests.
OTHER_EMULATOR_KEY = "tpuf-test-key-2"
#: A key of another organisation: upstream accepts it, but it sees none of our namespaces.
FOREIGN_ORG_KEY = "tpuf-test-foreign-org"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    running = EmulatorProcess(
        tmp_path_factory.mktemp("emulator") / "emulator.log",
        "--other-org-key",
        FOREIGN_ORG_KEY,
        api_keys=(EMULATOR_KEY, OTHER_EMULATOR_KEY),
    )
    yield running
    running.stop()


def unique_namespace(prefix: str = "ns") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class LayerCluster:
    """The settings one test's workers share (app id, topics, broker, upstream)."""

    def __init__(self, broker: EmbeddedBroker, emulator: EmulatorProcess, tmp: Path) -> None:
        self.emulator = emulator
        self.broker = broker
        self.tmp = tmp
        self.app_id = f"layer-test-{uuid.uuid4().hex[:8]}"
        self.topic_prefix = self.app_id
        self.partitions = 4
        self.env = layer_env(
            app_id=self.app_id,
            broker_url=broker.url,
            upstream_url=emulator.url,
            api_key=EMULATOR_KEY,
            LAYER_TOPIC_PARTITIONS=str(self.partitions),
            LAYER_TICK_INTERVAL_MS="100",
            LAYER_FAST_POLL_INTERVAL_MS="200",
            LAYER_SLOW_POLL_INTERVAL_MS="5000",
            LAYER_SAFETY_MARGIN_MS="0",
        )
        self.workers: list[WorkerProcess] = []

    def worker(self, name: str = "w1", **overrides: str) -> WorkerProcess:
        """A worker (not started) with this cluster's settings; same name = same data dir."""
        data_dir = self.tmp / name
        data_dir.mkdir(exist_ok=True)
        worker = WorkerProcess(
            {**self.env, **overrides}, data_dir, self.tmp / f"{name}.log", api_key=EMULATOR_KEY
        )
        self.workers.append(worker)
        return worker

    def topic(self, suffix: str) -> str:
        return f"{self.topic_prefix}.{suffix}"

    def stop(self) -> None:
        for worker in self.workers:
            worker.close()


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
