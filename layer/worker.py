"""The worker's composition: importing this registers every agent, table, timer and view."""

from __future__ import annotations

import faust

import agents.ticks  # noqa: F401  (registers the watcher)
import agents.writes  # noqa: F401  (registers the writes agent)
import api.dashboard  # noqa: F401  (the page and its assets)
import api.health  # noqa: F401
import api.listing  # noqa: F401
import api.metadata  # noqa: F401
import api.metrics  # noqa: F401
import api.openapi  # noqa: F401
import api.operations  # noqa: F401
import api.server  # noqa: F401  (middlewares: shutdown, errors, compression, auth, rate limit)
import api.snapshots  # noqa: F401
import api.stability_stream  # noqa: F401  (GET /v2/stability/events)
from agents.handover import stop_writing_tables
from api.shutdown import hand_over
from layer.app import app, settings

__all__ = ["LayerWorker", "app"]


class LayerWorker(faust.Worker):
    """Faust's worker, whose stop begins with the hand-over.

    The worker stops itself before its children (the app: consumer, web server, producer),
    so while all of those still run: requests are drained and notifications delivered
    (`api.shutdown`), then the tables stop being written and every write is flushed
    (`agents.handover`), before Faust leaves the group and the next owner replays them.
    """

    async def on_stop(self) -> None:
        await hand_over(settings.shutdown_grace_ms / 1000)
        await stop_writing_tables()
        await super().on_stop()
