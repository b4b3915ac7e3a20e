"""Installs Layer's middlewares on Faust's web server.

Order (outermost first): errors (everything below answers in turbopuffer's error shape),
compression, auth (every route but the probes), the per-key rate limit.
"""

from __future__ import annotations

from typing import Any

from api.auth import auth_middleware
from api.errors import error_middleware
from api.middleware import compression_middleware, rate_limit_middleware
from api.replica import close_peer_client
from layer.app import app, settings

__all__ = ["install_middlewares"]


def install_middlewares(web: Any) -> None:
    """Called by Faust when its web server is built, before any route is served."""
    web.web_app.middlewares.extend(
        [
            error_middleware,
            compression_middleware,
            auth_middleware(settings),
            rate_limit_middleware(settings),
        ]
    )


app.on_webserver_init = install_middlewares  # type: ignore[method-assign]


@app.on_before_shutdown.connect
async def close_peer_connections(sender: Any, *args: Any, **kwargs: Any) -> None:
    await close_peer_client()
