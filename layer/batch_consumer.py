"""Whole-fetch delivery for a topic whose handler takes a batch (the writes).

Faust hands every message to its stream through `Service.wait_first`, which starts four
tasks per message: on this machine that caps a worker at ~5,700 messages/s before any work
is done (NOTES-kafka.md §5), below the 10,000 notifications/s one worker must apply. A
handler registered here is instead given all of its topic's messages from one fetch in one
call, so the per-message cost is the handler's own (decode, coalesce) and the rest is paid
once per namespace or once per fetch.

Everything else stays Faust's: the messages come from Faust's consumer, in its group, with
its assignment (the topic is subscribed like an agent's, so its partitions stay
co-partitioned with the tables) and its flow control. A batch is tracked before the
handler runs and acked after it returns, and Faust commits an offset only after flushing
the producer (the changelog writes), so a committed offset only ever covers applied
messages: at-least-once, as for the agents. Messages fetched before a rebalance (another
generation, or flow stopped) are dropped unacked, as Faust's streams drop them, and read
again from the committed offset by the partition's owner. A handler that raises crashes
the fetcher and with it the worker (as an agent's unhandled error would): nothing of that
batch was acked, so the restarted worker reads it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from time import monotonic
from typing import TYPE_CHECKING, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

if TYPE_CHECKING:
    from layer.app import LayerApp

__all__ = ["MAX_RECORDS_PER_FETCH", "BatchHandler", "BatchingConsumer", "subscribe_batch_topic"]

BatchHandler = Callable[[list[Message]], Awaitable[None]]

#: Records one fetch may return (all topics; Faust's `broker_max_poll_records`). A batch is
#: applied before the consumer fetches again, so without a bound a fetch from a backlog
#: (~100,000 messages, ~5 s of work) would hold back the poll ticks behind it and the memory
#: of the whole batch; 5,000 is ~0.1–0.3 s of work (BENCHMARKS.md) and still coalesces many
#: notifications per namespace.
MAX_RECORDS_PER_FETCH = 5000


def subscribe_batch_topic(app: LayerApp, topic: faust.TopicT, handler: BatchHandler) -> None:
    """Deliver `topic`'s messages to `handler` in batches (one call per fetch).

    The topic is added to the app's subscriptions as an agent's would be; its messages never
    reach a stream.
    """
    for name in topic.topics:
        app.batch_handlers[name] = handler
    app.topics.add(topic)


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, diverting the messages of batch topics to their handler."""

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        handlers = cast("LayerApp", self.app).batch_handlers
        batches: dict[str, list[Message]] = {}
        async for tp, message in super().getmany(timeout):
            if tp.topic in handlers:
                batches.setdefault(tp.topic, []).append(message)
            else:
                yield tp, message
        for topic, messages in batches.items():
            current = [m for m in messages if self._is_current(m)]
            if len(current) < len(messages):
                await self._read_again([m for m in messages if not self._is_current(m)])
            await self._deliver(handlers[topic], current)

    def _is_current(self, message: Message) -> bool:
        """Fetched in this generation, with flow on (Faust's streams skip the others too)."""
        return self.flow_active and message.generation_id == self.app.consumer_generation_id

    async def _read_again(self, stale: list[Message]) -> None:
        """Drop messages fetched before a rebalance, unacked, and make sure they are read again.

        The rebalance seeks every partition it assigns to its committed offset after the new
        generation starts, which covers them; seeking the partitions still held back to the
        first dropped offset makes that independent of the order of fetch and seek.
        """
        first: dict[TP, int] = {}
        for message in stale:
            first[message.tp] = min(message.offset, first.get(message.tp, message.offset))
        assigned = self.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                await self.seek(tp, offset)

    async def _deliver(self, handler: BatchHandler, messages: list[Message]) -> None:
        """Faust's per-message bookkeeping (read offsets, gaps, tracking), then one call."""
        read_offset = self._read_offset
        fresh: list[Message] = []
        for message in messages:
            tp, offset = message.tp, message.offset
            last_read = read_offset[tp]
            if last_read is not None and offset < last_read:
                continue  # read before a seek back, and applied then
            if last_read and offset - last_read > 1:
                await self._add_gap(tp, last_read + 1, offset)
            read_offset[tp] = offset
            self.track_message(message)
            fresh.append(message)
        if not fresh:
            return
        inbound = self.app.monitor.stream_inbound_time  # Faust's livelock check reads it
        for tp in {message.tp for message in fresh}:
            inbound[tp] = monotonic()
        await handler(fresh)
        message_out = self.app.sensors.on_message_out
        for message in fresh:
            self.ack(message)
            message_out(message.tp, message.offset, message)
        # Table writes are queued in Faust's producer buffer (`table[key] = …` cannot await).
        # Faust's stream path waits for it to ebb before each message; a batch waits for it to
        # drain, or a fast producer grows it without bound and every other agent waits behind.
        await self.app.producer.buffer.flush()
