"""End to end: write notifications and polls through the real broker into the table."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from layer.events import partition_for
from tests.integration.conftest import (
    EmulatorProcess,
    LayerCluster,
    eventually,
    read_topic,
    unique_namespace,
)

VECTOR_ROW = {"id": 1, "vector": [0.1, 0.2], "title": "hello"}
#: A burst large enough that fetches hold many notifications per namespace.
BURST_NOTIFICATIONS = 20_000
BURST_NAMESPACES = 50


async def test_write_notification_makes_namespace_unstable_until_the_index_catches_up(
    cluster: LayerCluster, emulator: EmulatorProcess, producer: AIOKafkaProducer
) -> None:
    namespace = unique_namespace("pipeline")
    emulator.write(namespace, {"upsert_rows": [VECTOR_ROW], "distance_metric": "cosine_distance"})
    emulator.force_indexing(namespace)
    worker = cluster.worker().start()

    cold = worker.layer_state(namespace)
    assert cold["is_stable"] is False and cold["stable_as_of"] is None, cold
    first_stable = await eventually(
        lambda: (s := worker.layer_state(namespace))["is_stable"] and s, 20, "first stable"
    )

    emulator.pause_indexing(namespace)
    emulator.write(namespace, {"upsert_rows": [{**VECTOR_ROW, "id": 2}]})
    written_at = int(time.time() * 1000)
    note = {"namespace": namespace, "written_at_ms": written_at, "rows": 1, "source": "test"}
    await producer.send_and_wait(
        cluster.topic("writes"), key=namespace.encode(), value=json.dumps(note).encode()
    )
    unstable = await eventually(
        lambda: (s := worker.layer_state(namespace))["is_stable"] is False and s,
        10,
        "is_stable false",
    )
    assert unstable["stable_as_of"] >= first_stable["stable_as_of"]
    assert unstable["stable_as_of"] < written_at
    # Indexing is paused: however often the watcher polls, the namespace stays unstable.
    # Wait for polls that started well after the write (two fast intervals) to have answered.
    polled_since = written_at + 2 * int(cluster.env["LAYER_FAST_POLL_INTERVAL_MS"])
    held = await eventually(
        lambda: (s := worker.layer_state(namespace))["last_poll_ms"] >= polled_since and s,
        10,
        "polls after the write",
    )
    assert held["is_stable"] is False
    assert held["stable_as_of"] == unstable["stable_as_of"], "watermark held while updating"

    emulator.resume_indexing(namespace)
    emulator.force_indexing(namespace)
    stable = await eventually(
        lambda: (s := worker.layer_state(namespace))["is_stable"] and s, 20, "stable again"
    )
    assert stable["stable_as_of"] >= written_at

    def flips(messages: list[dict]) -> list[str]:
        mine = [m["value"]["change"] for m in messages if m["value"]["namespace"] == namespace]
        return [change for change in mine if change != "advanced"]

    events = await read_topic(
        cluster.broker.bootstrap,
        cluster.topic("stability"),
        until=lambda ms: flips(ms) == ["became_stable", "became_unstable", "became_stable"],
    )
    last = [m for m in events if m["value"]["change"] == "became_stable"][-1]
    assert last["key"] == namespace.encode(), "stability events are keyed by the plain namespace"
    assert last["value"]["is_stable"] is True and last["value"]["previous_is_stable"] is False
    assert written_at <= last["value"]["stable_as_of"] <= stable["stable_as_of"]


async def test_malformed_write_notification_is_dead_lettered_and_the_next_one_still_applies(
    cluster: LayerCluster, emulator: EmulatorProcess, producer: AIOKafkaProducer
) -> None:
    namespace = unique_namespace("dlq")
    emulator.write(namespace, {"upsert_rows": [VECTOR_ROW]})
    worker = cluster.worker().start()
    topic = cluster.topic("writes")

    await producer.send_and_wait(topic, key=namespace.encode(), value=b"{not json")
    await producer.send_and_wait(
        topic, key=namespace.encode(), value=json.dumps({"namespace": namespace}).encode()
    )
    written_at = int(time.time() * 1000)
    valid = {"namespace": namespace, "written_at_ms": written_at}
    await producer.send_and_wait(topic, key=namespace.encode(), value=json.dumps(valid).encode())

    state = await eventually(
        lambda: (s := worker.layer_state(namespace))["last_write_ms"] and s, 15, "valid write"
    )
    assert state["last_write_ms"] >= written_at

    letters = await read_topic(
        cluster.broker.bootstrap, cluster.topic("writes.dlq"), until=lambda ms: len(ms) >= 2
    )
    reasons = [letter["value"]["reason"] for letter in letters]
    assert letters[0]["value"]["value"] == "{not json"
    assert "json" in reasons[0].lower()
    assert "written_at_ms" in reasons[1], "the reason names the missing field"
    assert all(letter["value"]["topic"] == topic for letter in letters)
    assert letters[0]["key"] == namespace.encode()


async def test_a_burst_of_notifications_is_applied_coalesced_and_its_offsets_committed(
    cluster: LayerCluster, emulator: EmulatorProcess, producer: AIOKafkaProducer
) -> None:
    """The writes topic is consumed a fetch at a time (layer.batch_consumer): every
    notification applied, one table write per namespace per batch, offsets committed."""
    worker = cluster.worker().start()
    namespaces = [unique_namespace("burst") for _ in range(BURST_NAMESPACES)]
    for namespace in namespaces:
        emulator.write(namespace, {"upsert_rows": [VECTOR_ROW]})
    topic = cluster.topic("writes")
    base = int(time.time() * 1000)
    latest: dict[str, int] = {}
    sends = []
    for i in range(BURST_NOTIFICATIONS):
        namespace = namespaces[i % BURST_NAMESPACES]
        latest[namespace] = written_at = base + i
        note = json.dumps({"namespace": namespace, "written_at_ms": written_at}).encode()
        sends.append(await producer.send(topic, key=namespace.encode(), value=note))
    await asyncio.gather(*sends)

    await eventually(
        # At least: delivery is at-least-once, a redelivered message counts again.
        lambda: worker.metrics().get("write_notifications_total", 0) >= BURST_NOTIFICATIONS,
        30,
        f"{BURST_NOTIFICATIONS} notifications consumed",
    )
    metrics = worker.metrics()  # before any read: reads register namespaces (more writes)
    assert metrics["write_batches_total"] < BURST_NOTIFICATIONS / 10, metrics
    # Poll results write rows too (each namespace is due after its write); the notifications
    # alone are at most one table write per namespace per batch.
    writes_bound = metrics["write_batches_total"] * BURST_NAMESPACES + metrics["polls_total"]
    assert metrics["table_writes_total"] <= writes_bound, metrics
    for namespace in namespaces:
        assert worker.layer_state(namespace)["last_write_ms"] == latest[namespace], namespace

    # A consumer in the worker's group that never subscribes reads the group's committed
    # offsets without joining it (no rebalance of the worker).
    offsets = AIOKafkaConsumer(bootstrap_servers=cluster.broker.bootstrap, group_id=cluster.app_id)
    await offsets.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(cluster.partitions)]

        async def committed_writes() -> int:
            return sum([await offsets.committed(tp) or 0 for tp in partitions])

        deadline = time.monotonic() + 15
        while (committed := await committed_writes()) < BURST_NOTIFICATIONS:
            assert time.monotonic() < deadline, f"committed {committed} of {BURST_NOTIFICATIONS}"
            await asyncio.sleep(0.2)
    finally:
        await offsets.stop()
    assert committed == BURST_NOTIFICATIONS


async def test_a_notification_on_the_wrong_partition_still_reaches_its_namespace(
    cluster: LayerCluster, emulator: EmulatorProcess, producer: AIOKafkaProducer
) -> None:
    """Keyed by something else and sent to another partition (e.g. librdkafka's default
    partitioner): forwarded to the namespace's own partition and applied there."""
    namespace = unique_namespace("misrouted")
    emulator.write(namespace, {"upsert_rows": [VECTOR_ROW]})
    worker = cluster.worker().start()
    wrong = (partition_for(namespace, cluster.partitions) + 1) % cluster.partitions
    written_at = int(time.time() * 1000)
    note = json.dumps({"namespace": namespace, "written_at_ms": written_at}).encode()

    await producer.send_and_wait(cluster.topic("writes"), key=b"app-1", value=note, partition=wrong)

    state = await eventually(
        lambda: (s := worker.layer_state(namespace))["last_write_ms"] and s, 15, "the write"
    )
    assert state["last_write_ms"] >= written_at
    assert worker.metrics()["write_notifications_forwarded_total"] == 1
