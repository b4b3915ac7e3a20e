"""Probes, without auth or upstream I/O: `/healthz` (alive) and `/readyz` (serving).

A worker is ready once it holds partitions and its tables are recovered from the
changelog: before that, its table reads would answer from partial state.
"""

from __future__ import annotations

from faust import web

from layer.app import app

__all__ = ["Healthz", "Readyz", "worker_is_ready"]


def worker_is_ready() -> bool:
    """Partitions assigned, no rebalance in progress, table recovery complete."""
    if app.rebalancing or not app.tables.recovery.completed.is_set():
        return False
    return bool(app.consumer.assignment())


@app.page("/healthz")
class Healthz(web.View):
    """Liveness probe for process supervisors and load balancers."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})


@app.page("/readyz")
class Readyz(web.View):
    """Readiness probe: 200 when serving from recovered tables, 503 until then."""

    async def get(self, request: web.Request) -> web.Response:
        if worker_is_ready():
            return self.json({"status": "ready"})
        return self.json(
            {"status": "error", "error": "worker not ready: recovering tables"}, status=503
        )
