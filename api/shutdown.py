"""Graceful shutdown as a hand-over (DESIGN.md, "Answering truthfully", rule 6).

On SIGTERM the worker, before Faust stops anything: stops taking requests (a new one is
answered 503 + `Retry-After` + `Connection: close`, so clients and load balancers go to
another worker; `/readyz` says not ready, `/healthz` still alive), waits for the requests in
flight to finish (at most `LAYER_SHUTDOWN_GRACE_MS`), and delivers the pending write
notifications. Only then does Faust leave the group and the clients close, so no request
ever meets a closed client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from api.errors import error_response
from api.replica import NOT_READY_RETRY_AFTER_S

if TYPE_CHECKING:
    from layer.services import Services

__all__ = ["SERVER_CLOSE_TIMEOUT_S", "InFlight", "hand_over", "refusal"]

log = logging.getLogger(__name__)

#: How long the web server, stopping after the hand-over, waits for its open connections.
#: No request is in flight by then. aiohttp (3.14) waits this long on an idle keep-alive
#: connection whose handler started just as the server began closing: it ignores that
#: connection's next request, so a client sending one would wait until this timeout (60 s
#: by default) instead of seeing the connection close.
SERVER_CLOSE_TIMEOUT_S = 1.0


class InFlight:
    """Counts requests being handled; wakes whoever waits for none."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """True if every request finished within `timeout_s`."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def refusal() -> web.Response:
    """What a new request gets once the hand-over began (api/middleware.py: every route but
    the probes): 503, go to another worker."""
    return error_response(
        503,
        "this Layer worker is shutting down; retry (another worker will answer)",
        {"Retry-After": str(NOT_READY_RETRY_AFTER_S), "Connection": "close"},
    )


async def hand_over(services: Services, grace_s: float) -> None:
    """Stop taking requests, let those in flight finish, deliver pending notifications."""
    services.readiness.shutting_down = True
    in_flight = services.in_flight
    log.info("shutting down: %d requests in flight, no new ones taken", in_flight.count)
    if not await in_flight.wait_idle(grace_s):
        log.warning("%d requests still in flight after %.0f s; stopping", in_flight.count, grace_s)
    await services.notifications.close()
