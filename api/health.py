"""Liveness: `GET /healthz` answers as soon as the web server runs (no auth, no I/O)."""

from __future__ import annotations

from faust import web

from layer.app import app

__all__ = ["Healthz"]


@app.page("/healthz")
class Healthz(web.View):
    """Liveness probe for process supervisors and load balancers."""

    async def get(self, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})
