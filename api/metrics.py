"""`GET /metrics`: this worker's metrics (layer.metrics) in Prometheus' text format.

Authenticated with the operator's key (api/access.py, `require_operator`): the watcher's
`TURBOPUFFER_API_KEY`, or one of `LAYER_API_KEYS`. Scrape it with a bearer token.
"""

from __future__ import annotations

from aiohttp import web as aiohttp_web
from faust import web

from api.access import require_operator
from api.auth import credential_of
from layer.app import app, settings
from layer.metrics import CONTENT_TYPE_LATEST

__all__ = ["Metrics"]


@app.page("/metrics")
class Metrics(web.View):
    """Counters, gauges and histograms of this worker process (see layer.metrics)."""

    async def get(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
        require_operator(credential_of(request), settings)
        # Not `self.bytes(content_type=...)`: aiohttp refuses a charset inside content_type.
        return aiohttp_web.Response(
            body=app.services.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
