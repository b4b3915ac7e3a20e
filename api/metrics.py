"""`GET /metrics`: this worker's counters in Prometheus' text format.

Authenticated with the operator's key (api/access.py, `require_operator`): the watcher's
`TURBOPUFFER_API_KEY`, or one of `LAYER_API_KEYS`. Scrape it with a bearer token.
"""

from __future__ import annotations

from faust import web

from api.access import require_operator
from api.auth import credential_of
from layer.app import app, settings
from layer.metrics import prometheus_text

__all__ = ["Metrics"]


@app.page("/metrics")
class Metrics(web.View):
    """Counters of this worker process (see layer.metrics)."""

    async def get(self, request: web.Request) -> web.Response:
        require_operator(credential_of(request), settings)
        return self.text(prometheus_text(), content_type="text/plain; version=0.0.4")
