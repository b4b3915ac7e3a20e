"""Installs Layer's middlewares on Faust's web server.

Order (outermost first): metrics (times every request, refusals included), shutdown
(refuses new requests once the hand-over began, counts those in flight), errors (everything
below answers in turbopuffer's error shape), compression, auth (every route but the probes),
the per-key rate limit. Then Layer's own routes, and last the catch-all proxy to turbopuffer
(api/proxy.py), named `proxy` (its `route` label in the metrics).
"""

from __future__ import annotations

from typing import Any

from api.auth import auth_middleware
from api.errors import error_middleware
from api.middleware import (
    PROXY_ROUTE_NAME,
    compression_middleware,
    http_metrics_middleware,
    rate_limit_middleware,
)
from api.proxy import proxy
from api.shutdown import shutdown_middleware
from layer.app import app, on, settings

__all__ = ["install_middlewares"]


def install_middlewares(web: Any) -> None:
    """Faust's `on_webserver_init` (layer.worker wires it): called when its web server is
    built, after every page is registered."""
    web.web_app.middlewares.extend(
        [
            http_metrics_middleware(app.services.metrics),
            shutdown_middleware,
            error_middleware,
            compression_middleware,
            auth_middleware(settings),
            rate_limit_middleware(settings),
        ]
    )
    # Writes can be as large as turbopuffer accepts (aiohttp's default limit is 1 MiB).
    web.web_app._client_max_size = settings.max_body_bytes
    # Last, so Layer's own routes match first: everything else goes upstream.
    web.web_app.router.add_route("*", "/{tail:.*}", proxy, name=PROXY_ROUTE_NAME)


@on(app.on_before_shutdown)
async def close_connections(sender: Any, *args: Any, **kwargs: Any) -> None:
    """Last: requests were drained and notifications delivered by `api.shutdown.hand_over`.
    (The upstream client, which the proxy shares, is closed by the watcher once its polls
    are drained: agents/ticks.py.)"""
    await app.services.notifications.close()
    await app.services.peers.aclose()
