"""Probes, without auth or upstream I/O: `/healthz` (alive) and `/readyz` (serving).

A worker is ready once it holds partitions, every one of them is recovered from the
changelog, and it is not shutting down (`layer.readiness`). Not ready, the body says why
and, while tables recover, how far each partition's replay got, so an operator can see a
long recovery advance.
"""

from __future__ import annotations

from faust import web

from layer.app import app

__all__ = ["Healthz", "Readyz"]


@app.page("/healthz")
class Healthz(web.View):
    """Liveness probe for process supervisors and load balancers."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})


@app.page("/readyz")
class Readyz(web.View):
    """Readiness probe: 200 when serving from recovered tables, 503 until then."""

    async def get(self, request: web.Request) -> web.Response:
        readiness = app.services.readiness
        ready = sorted(readiness.ready_partitions())
        if readiness.is_ready():
            return self.json({"status": "ready", "ready_partitions": ready})
        if readiness.shutting_down:
            reason = "shutting down"
        elif not readiness.owned():
            reason = "no partitions assigned yet"
        else:
            reason = "recovering tables"
        progress = readiness.recovery_progress()
        return self.json(
            {
                "status": "error",
                "error": f"worker not ready: {reason}",
                "ready_partitions": ready,
                "recovering": [p.model_dump() for p in progress],
                "replay": readiness.replay_summary(progress).model_dump(),
            },
            status=503,
        )
