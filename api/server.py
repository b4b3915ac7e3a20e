"""Installs Layer's middleware and the catch-all proxy on Faust's web server.

The middleware (api/middleware.py) does, outermost first: metrics (times every request,
refusals included), shutdown (refuses new requests once the hand-over began, counts those
in flight), errors (everything below answers in turbopuffer's error shape), compression,
auth (every route but the probes), the per-key rate limit. Then Layer's own routes, and
last the catch-all proxy to turbopuffer (api/proxy.py), named `proxy` (its `route` label in
the metrics). The proxy and the metadata read (api/metadata.py) are plain aiohttp handlers,
not Faust views: Faust's view dispatch and its sensors cost a read more than the rest of
Layer's routing (BENCHMARKS.md, issue 15, second pass).
"""

from __future__ import annotations

from typing import Any

from aiohttp.web import AppRunner

from api.errors import OwnRoutes
from api.middleware import PROXY_ROUTE_NAME, layer_middleware
from api.proxy import proxy_handler
from api.shutdown import SERVER_CLOSE_TIMEOUT_S
from layer.app import app, on, settings

__all__ = ["install_middlewares"]


def install_middlewares(web: Any) -> None:
    """Faust's `on_webserver_init` (layer.worker wires it): called when its web server is
    built, after every page is registered."""
    routes = OwnRoutes()
    web.web_app.middlewares.append(layer_middleware(app.services, settings, routes))
    # Writes can be as large as turbopuffer accepts (aiohttp's default limit is 1 MiB).
    web.web_app._client_max_size = settings.max_body_bytes
    # Last, so Layer's own routes match first: everything else goes upstream.
    web.web_app.router.add_route("*", "/{tail:.*}", proxy_handler(routes), name=PROXY_ROUTE_NAME)
    # Faust builds its runner with aiohttp's 60 s shutdown timeout; by the time the server
    # stops, the hand-over has drained every request (api/shutdown.py), so only idle and
    # refused connections are left and a short wait is enough.
    web._runner = AppRunner(web.web_app, access_log=None, shutdown_timeout=SERVER_CLOSE_TIMEOUT_S)


@on(app.on_before_shutdown)
async def close_connections(sender: Any, *args: Any, **kwargs: Any) -> None:
    """Last: requests were drained and notifications delivered by `api.shutdown.hand_over`.
    (The upstream client, which the proxy shares, is closed by the watcher once its polls
    are drained: agents/ticks.py.)"""
    await app.services.notifications.close()
    await app.services.peers.aclose()
