"""`GET /metrics`: this worker's counters in Prometheus' text format (authenticated)."""

from __future__ import annotations

from faust import web

from layer.app import app
from layer.metrics import prometheus_text

__all__ = ["Metrics"]


@app.page("/metrics")
class Metrics(web.View):
    """Counters of this worker process (see layer.metrics)."""

    async def get(self, request: web.Request) -> web.Response:
        return self.text(prometheus_text(), content_type="text/plain; version=0.0.4")
