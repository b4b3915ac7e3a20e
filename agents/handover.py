"""Stop writing the tables before the partitions are handed over (a worker that stops).

At a rebalance Faust quiesces the worker before it gives partitions away: it stops the
flow, waits for the messages in progress, and flushes the producer, so the changelog holds
every table write before the next owner replays it. When the worker *stops*, Faust skips
that (its revoke handler returns early once the app is stopping) and leaves the group
before it flushes the producer: the next owner could recover a changelog that lacks this
worker's last writes and answer an older watermark than this worker did a moment before
(the chaos harness saw it when a worker left). So the stop does the same quiescing first,
while the worker still owns its partitions: no new events, polls and operation follow-ups
cancelled, the events in progress finished, every table write and stability event flushed.
"""

from __future__ import annotations

import asyncio
import logging

from layer.app import app, settings

__all__ = ["stop_writing_tables"]

log = logging.getLogger(__name__)


async def stop_writing_tables() -> None:
    """Quiesce: after this returns, nothing of this worker writes a table again."""
    consumer = app._consumer  # None if the worker is stopped before its consumer existed
    every_partition = set(range(settings.topic_partitions))
    if consumer is not None:
        consumer.stop_flow()
        app.flow_control.suspend()
        consumer.pause_partitions(consumer.assignment())
        app.flow_control.clear()
    await app.services.poller.cancel(every_partition)
    await app.services.follower.cancel(every_partition)
    if consumer is not None:
        try:
            await asyncio.wait_for(consumer.wait_empty(), settings.shutdown_grace_ms / 1000)
        except TimeoutError:
            log.warning("events still in progress after the grace period; flushing anyway")
    if app._producer is not None:
        await app.producer.flush()
    log.info("tables quiesced: every write flushed before the partitions are handed over")
