"""End to end: write notifications and polls through the real broker into the table."""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaProducer

from tests.integration.conftest import (
    EmulatorProcess,
    LayerCluster,
    eventually,
    read_topic,
    unique_namespace,
)

VECTOR_ROW = {"id": 1, "vector": [0.1, 0.2], "title": "hello"}


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
    await asyncio.sleep(1.0)
    held = worker.layer_state(namespace)
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
