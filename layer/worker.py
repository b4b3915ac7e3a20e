"""The worker's composition: importing this registers every agent, table, timer and view;
`wire` gives the app its long-lived objects and batch handlers before it starts."""

from __future__ import annotations

import faust

import agents.ticks  # noqa: F401  (registers the watcher)
import api.dashboard  # noqa: F401  (the page and its assets)
import api.health  # noqa: F401
import api.listing  # noqa: F401
import api.metadata  # noqa: F401
import api.metrics  # noqa: F401
import api.openapi  # noqa: F401
import api.operations  # noqa: F401
import api.snapshots  # noqa: F401
import api.stability_stream  # noqa: F401  (GET /v2/stability/events)
from agents.handover import stop_writing_tables
from agents.writes import apply_write_notifications
from api.server import install_middlewares
from api.shutdown import hand_over
from layer.app import LayerApp, app, topics
from layer.batch_consumer import subscribe_batch_topic
from layer.services import Services

__all__ = ["LayerWorker", "app", "wire"]


def wire(layer_app: LayerApp, services: Services) -> None:
    """Everything `layer worker` needs beyond the declarations: the long-lived objects, the
    writes topic delivered a fetch at a time to its handler, and the web server's
    middlewares (shutdown, errors, compression, auth, rate limit) and catch-all proxy."""
    layer_app.use(services)
    subscribe_batch_topic(layer_app, topics.writes, apply_write_notifications)
    layer_app.on_webserver_init = install_middlewares  # type: ignore[method-assign]


class LayerWorker(faust.Worker):
    """Faust's worker, whose stop begins with the hand-over.

    The worker stops itself before its children (the app: consumer, web server, producer),
    so while all of those still run: requests are drained and notifications delivered
    (`api.shutdown`), then the tables stop being written and every write is flushed
    (`agents.handover`), before Faust leaves the group and the next owner replays them.
    """

    async def on_stop(self) -> None:
        services = app.services
        await hand_over(services, services.settings.shutdown_grace_ms / 1000)
        await stop_writing_tables()
        await super().on_stop()
