"""Client helpers for Layer's two kinds of Kafka users, thin over aiokafka.

Producers tell Layer about writes they made to turbopuffer directly:

    async with WriteNotifier("127.0.0.1:9092") as notifier:
        await notifier.notify("products", rows=120)

Consumers follow stability changes:

    async for change in stability_changes("127.0.0.1:9092", prefix="prod"):
        print(change.namespace, change.change, change.stable_as_of)

Both need Layer's topics to exist (a worker creates them) and raise `TopicMissingError` at
start if they do not: their Kafka clients never let a broker auto-create a topic
(`layer.kafka_topics.without_auto_creation`; other aiokafka clients of the application keep
aiokafka's behaviour).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import ValidationError

from layer.clock import now_ms
from layer.events import StabilityChange, WriteNotification
from layer.kafka_topics import (
    TopicMissingError,
    require_topics,
    require_topics_at,
    without_auto_creation,
)

__all__ = ["TopicMissingError", "WriteNotifier", "bootstrap_servers", "stability_changes"]


def bootstrap_servers(broker_url: str) -> str:
    """`kafka://a:9092;kafka://b:9092` (Faust's form) → `a:9092,b:9092` (aiokafka's)."""
    hosts = [
        part.strip().removeprefix("kafka://") for part in broker_url.replace(";", ",").split(",")
    ]
    return ",".join(host for host in hosts if host)


class WriteNotifier:
    """Publishes write notifications to `{topic_prefix}.writes`, keyed by namespace.

    Call `notify` *after* turbopuffer acknowledged the write: the notification's time is
    taken then, and Layer relies on it being no earlier than the commit. `start` raises
    `TopicMissingError` if the topic does not exist; a send to a topic deleted since fails
    (after the producer's request timeout) rather than create it.
    """

    def __init__(
        self, bootstrap: str, *, topic_prefix: str = "layer", source: str | None = None
    ) -> None:
        self.topic = f"{topic_prefix}.writes"
        self.source = source
        self._producer = without_auto_creation(
            AIOKafkaProducer(bootstrap_servers=bootstrap_servers(bootstrap))
        )

    async def start(self) -> None:
        await self._producer.start()
        try:
            await require_topics(self._producer.client, [self.topic])
        except BaseException:
            await self._producer.stop()
            raise

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> WriteNotifier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def notify(
        self,
        namespace: str,
        *,
        rows: int | None = None,
        bytes: int | None = None,
        written_at_ms: int | None = None,
    ) -> WriteNotification:
        """Publish one notification and wait until the broker has it."""
        note = WriteNotification(
            namespace=namespace,
            written_at_ms=written_at_ms if written_at_ms is not None else now_ms(),
            rows=rows,
            bytes=bytes,
            source=self.source,
            event_id=uuid.uuid4().hex,
        )
        await self.send(note)
        return note

    async def send(self, *notes: WriteNotification) -> None:
        """Publish prepared notifications (batched together) and wait until the broker has them."""
        delivered = [
            await self._producer.send(
                self.topic,
                key=note.namespace.encode(),
                value=note.model_dump_json(exclude_none=True).encode(),
            )
            for note in notes
        ]
        await asyncio.gather(*delivered)


async def stability_changes(
    bootstrap: str,
    *,
    topic_prefix: str = "layer",
    namespace: str | None = None,
    prefix: str | None = None,
    from_beginning: bool = False,
    group_id: str | None = None,
) -> AsyncIterator[StabilityChange]:
    """Yield stability changes, optionally only for one namespace or a name prefix.

    Without `group_id` every iterator sees every change; events that do not parse are
    skipped (they cannot come from a Layer worker of this version). Raises
    `TopicMissingError` if `{topic_prefix}.stability` does not exist.
    """
    topic = f"{topic_prefix}.stability"
    await require_topics_at(bootstrap_servers(bootstrap), [topic])
    consumer = without_auto_creation(
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers(bootstrap),
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=group_id is not None,
        )
    )
    await consumer.start()
    try:
        async for record in consumer:
            try:
                change = StabilityChange.model_validate_json(record.value or b"")
            except ValidationError:
                continue
            if namespace is not None and change.namespace != namespace:
                continue
            if prefix is not None and not change.namespace.startswith(prefix):
                continue
            yield change
    finally:
        await consumer.stop()
