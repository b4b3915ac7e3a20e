"""layer.kafka_topics without a broker: which topics, the Metadata requests' flag, the messages.

What a broker does with them is in tests/integration/test_topics.py.
"""

from __future__ import annotations

import inspect
import time
from unittest.mock import AsyncMock

import pytest
from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.protocol.metadata import MetadataRequest, MetadataRequest_v5

import agents.ticks  # noqa: F401  (registers the tables' users; the tables themselves below)
import layer.kafka_topics as kafka_topics
import tables.faust_tables  # noqa: F401  (registers the tables with the app)
from layer.app import app, settings, topics
from layer.embedded_broker import free_port
from layer.kafka_topics import (
    BrokerUnreachableError,
    TopicMismatchError,
    TopicSpec,
    TopicState,
    ensure_topics,
    layer_topic_specs,
    without_auto_creation,
)
from layer.services import build_services


def _built(request: MetadataRequest) -> MetadataRequest_v5:
    built = request.build(MetadataRequest_v5)
    assert isinstance(built, MetadataRequest_v5)
    return built


def test_specs_cover_every_layer_topic_and_every_table_changelog() -> None:
    specs = {spec.name: spec for spec in layer_topic_specs(app, topics)}
    prefix = settings.topic_prefix
    own = {f"{prefix}.{suffix}" for suffix in ("writes", "ticks", "stability", "writes.dlq")}
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    assert {f"{settings.app_id}-freshness-changelog"} <= changelogs
    assert set(specs) == own | changelogs
    assert all(spec.partitions == settings.topic_partitions for spec in specs.values())
    assert all(spec.replication == settings.topic_replication for spec in specs.values())
    assert all(specs[name].config == {"cleanup.policy": "compact"} for name in changelogs)
    assert all(specs[name].config == {} for name in own)


async def test_layer_clients_ask_for_no_auto_creation_and_others_keep_aiokafkas_default() -> None:
    """The flag of the Metadata requests a Layer client sends; a plain client is untouched."""
    seen: list[bool] = []

    async def fake_metadata_update(cluster_metadata: object, topics: object) -> bool:
        """Stands in for aiokafka's: builds the request the way it does (no flag chosen)."""
        seen.append(_built(MetadataRequest(["t"])).allow_auto_topic_creation)
        return True

    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1")
    plain = AIOKafkaClient(bootstrap_servers="127.0.0.1:1")
    client._metadata_update = fake_metadata_update  # type: ignore[method-assign]
    without_auto_creation(client)
    await client._metadata_update(None, {"t"})
    assert seen == [False]
    assert _built(MetadataRequest(["t"])).allow_auto_topic_creation is True  # outside: default
    assert plain._metadata_update.__func__ is AIOKafkaClient._metadata_update  # type: ignore[attr-defined]
    explicit = MetadataRequest(["t"], allow_auto_topic_creation=True)
    assert _built(explicit).allow_auto_topic_creation is True  # an explicit choice stands


async def test_without_auto_creation_finds_the_client_of_a_producer() -> None:
    producer = without_auto_creation(AIOKafkaProducer(bootstrap_servers="127.0.0.1:1"))
    assert producer.client._metadata_update.__name__ == "metadata_update"
    await producer.stop()


def test_a_layer_process_forbids_auto_creation_for_every_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_topics, "_forbidden_in_process", False)
    assert _built(MetadataRequest(["t"])).allow_auto_topic_creation is True
    kafka_topics.forbid_auto_creation_in_process()
    assert _built(MetadataRequest(["t"])).allow_auto_topic_creation is False
    assert _built(MetadataRequest(None)).topics is None  # "all topics" stays "all topics"


def test_a_partition_mismatch_is_one_line_naming_topic_counts_and_remedy() -> None:
    spec = TopicSpec("layer.writes", partitions=8, replication=1)
    with pytest.raises(TopicMismatchError) as raised:
        kafka_topics._verify(spec, TopicState(partitions=3, replication=1))
    assert str(raised.value) == (
        "topic layer.writes has 3 partitions, LAYER_TOPIC_PARTITIONS=8: delete the topic or set "
        "LAYER_TOPIC_PARTITIONS=3 (every Layer topic and changelog must have the same count)"
    )


def test_fewer_replicas_than_configured_is_a_mismatch_more_is_not() -> None:
    spec = TopicSpec("layer.ticks", partitions=4, replication=3)
    kafka_topics._verify(spec, TopicState(partitions=4, replication=5))
    with pytest.raises(TopicMismatchError, match=r"^topic layer.ticks has replication factor 1, "):
        kafka_topics._verify(spec, TopicState(partitions=4, replication=1))


async def test_an_unreachable_broker_is_one_error_after_the_bounded_wait() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(BrokerUnreachableError) as raised:
        await ensure_topics(bootstrap, [TopicSpec("t", 1, 1)], timeout_s=1.5)
    assert 1.0 <= time.monotonic() - started < 10
    assert str(raised.value) == (
        f"no Kafka broker answered at {bootstrap} within 1.5 s (LAYER_KAFKA_BROKER): "
        "start the broker or correct the setting"
    )
    assert "\n" not in str(raised.value)


async def test_a_failed_tick_send_is_counted_and_does_not_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The timer's body (what Faust's timer wrapper calls each interval)."""
    from agents.ticks import publish_poll_ticks

    services = build_services(settings)
    app.use(services)
    metrics = services.metrics
    tick_round = inspect.unwrap(publish_poll_ticks)

    send = AsyncMock(side_effect=[None, TimeoutError("broker away")])
    monkeypatch.setattr(topics.ticks, "send", send)
    await tick_round()
    assert metrics.value("layer_tick_send_failures_total") == 1
    assert send.await_count == 2  # the round stopped at the failure

    send.reset_mock(side_effect=True)
    await tick_round()
    assert send.await_count == settings.topic_partitions  # the next tick sends them all
    assert metrics.value("layer_tick_send_failures_total") == 1
