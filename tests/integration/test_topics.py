"""Layer's topics against the real broker: created and verified at start, never auto-created.

The embedded broker (Tansu) auto-creates a topic, with 4 partitions, for any Metadata request
that allows it; the first test shows it does so for a plain client and not for Layer's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError

from layer.clients import WriteNotifier
from layer.embedded_broker import EmbeddedBroker, free_port
from layer.kafka_topics import TopicMissingError, without_auto_creation
from tests.integration.conftest import LayerCluster, unique_namespace

#: A worker that refuses its topics exits long before it could become ready (~3 s).
EXIT_TIMEOUT_S = 60.0
#: Short enough for a test, long enough for the broker to answer a metadata request.
PRODUCE_TIMEOUT_MS = 3000


@pytest.fixture
async def admin(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await client.start()
    yield client
    await client.close()


async def topic_partitions(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """Every topic of the broker and its partition count (one all-topics Metadata request,
    which cannot create anything)."""
    return {topic["topic"]: len(topic["partitions"]) for topic in await admin.describe_topics(None)}


def expected_topics(cluster: LayerCluster) -> set[str]:
    own = {cluster.topic(suffix) for suffix in ("writes", "ticks", "stability", "writes.dlq")}
    changelogs = {f"{cluster.app_id}-{table}-changelog" for table in ("freshness", "snapshots")}
    return own | changelogs


def wait_for_exit(cluster: LayerCluster, **overrides: str) -> tuple[int, str]:
    """Spawn a worker, wait for it to exit; its exit status and everything it printed."""
    worker = cluster.worker(**overrides).spawn()
    assert worker.process is not None
    try:
        status = worker.process.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the worker did not stop:\n{worker.log_path.read_text()[-3000:]}"
        ) from None
    return status, worker.log_path.read_text()


async def test_a_plain_client_auto_creates_a_topic_and_layers_clients_do_not(
    broker: EmbeddedBroker, admin: AIOKafkaAdminClient
) -> None:
    prefix = unique_namespace("noauto")
    # The control: aiokafka as it comes makes the broker create the topic it produces to.
    plain = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await plain.start()
    try:
        await plain.send_and_wait(f"{prefix}.plain", b"x")
    finally:
        await plain.stop()
    assert (await topic_partitions(admin)).get(f"{prefix}.plain") == 4  # Tansu's default

    with pytest.raises(TopicMissingError, match=r"start a Layer worker first"):
        async with WriteNotifier(broker.bootstrap, topic_prefix=prefix):
            pass
    # A send with a Layer client's settings fails cleanly instead of creating the topic.
    layer_producer = without_auto_creation(
        AIOKafkaProducer(bootstrap_servers=broker.bootstrap, request_timeout_ms=PRODUCE_TIMEOUT_MS)
    )
    await layer_producer.start()
    try:
        with pytest.raises((UnknownTopicOrPartitionError, KafkaTimeoutError)):
            await layer_producer.send_and_wait(f"{prefix}.writes", b"x")
    finally:
        await layer_producer.stop()
    assert not {name for name in await topic_partitions(admin) if name.startswith(f"{prefix}.w")}


async def test_a_fresh_worker_creates_every_topic_with_the_configured_count(
    cluster: LayerCluster, admin: AIOKafkaAdminClient
) -> None:
    cluster.worker().start()
    partitions = await topic_partitions(admin)
    mine = {name: count for name, count in partitions.items() if name.startswith(cluster.app_id)}
    # Faust's leader-election topic has one partition by design; every other one is Layer's.
    leader = f"{cluster.app_id}-__assignor-__leader"
    assert mine.pop(leader, 1) == 1
    assert mine == dict.fromkeys(expected_topics(cluster), cluster.partitions)
    changelogs = sorted(name for name in mine if name.endswith("-changelog"))
    answers = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, None) for name in changelogs]
    )
    policies = {
        resource[3]: dict((entry[0], entry[1]) for entry in resource[4])
        for answer in answers
        for resource in answer.resources
    }
    assert {name: policies[name].get("cleanup.policy") for name in changelogs} == dict.fromkeys(
        changelogs, "compact"
    )


@pytest.mark.parametrize("topic", ["writes", "freshness-changelog"])
async def test_a_worker_refuses_a_topic_with_another_partition_count(
    cluster: LayerCluster, admin: AIOKafkaAdminClient, topic: str
) -> None:
    name = cluster.topic(topic) if topic == "writes" else f"{cluster.app_id}-{topic}"
    answer = await admin.create_topics([NewTopic(name, 3, 1)])
    assert answer.topic_errors[0][1] == 0, answer

    status, printed = wait_for_exit(cluster)

    assert status != 0
    assert printed.strip() == (
        f"layer: topic {name} has 3 partitions, LAYER_TOPIC_PARTITIONS={cluster.partitions}: "
        "delete the topic or set LAYER_TOPIC_PARTITIONS=3 "
        "(every Layer topic and changelog must have the same count)"
    )
    # Verified before anything was created: the worker left the cluster as it was.
    partitions = await topic_partitions(admin)
    assert {n: c for n, c in partitions.items() if n.startswith(cluster.app_id)} == {name: 3}


async def test_a_worker_without_a_broker_stops_with_one_line(cluster: LayerCluster) -> None:
    broker_url = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    status, printed = wait_for_exit(
        cluster, LAYER_KAFKA_BROKER=broker_url, LAYER_KAFKA_START_TIMEOUT_MS="3000"
    )
    assert status != 0
    assert printed.strip().startswith(
        f"layer: no Kafka broker answered at {broker_url.removeprefix('kafka://')} within "
    )
    assert len(printed.strip().splitlines()) == 1


def test_layer_notify_without_the_topic_is_one_line_and_creates_nothing(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = unique_namespace("notify")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LAYER_", "TURBOPUFFER_"))},
        "LAYER_KAFKA_BROKER": broker.url,
        "LAYER_TOPIC_PREFIX": prefix,
    }
    notified = subprocess.run(
        [sys.executable, "-m", "layer", "notify", "products", "--rows", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert notified.returncode != 0
    assert notified.stdout == ""
    assert notified.stderr.strip() == (
        f"layer: topic {prefix}.writes does not exist: start a Layer worker first "
        "(it creates Layer's topics; Layer never lets a broker auto-create one)"
    )

    async def absent() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            return not any(name.startswith(prefix) for name in await topic_partitions(admin))
        finally:
            await admin.close()

    assert asyncio.run(absent())
