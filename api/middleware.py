"""Conventions every route follows, in one aiohttp middleware (installed by api/server.py).

What it does for a request, outermost first (each step sees what the ones below it did):

1. metrics: times the request into `layer_http_request_seconds`, labelled with the route's
   template (never the raw path, which names a namespace) and the status, refusals
   included;
2. shutdown: once the hand-over began, a new request (but the probes) is refused with 503
   (api/shutdown.py); the others are counted in flight until answered;
3. errors: everything below answers in turbopuffer's error shape (api/errors.py);
4. compression: a response is gzip-compressed only when the client's `Accept-Encoding` asks
   for it (turbopuffer's clients turn compression off by default: they are CPU-bound, not
   bandwidth-bound) and the body is worth it;
5. auth: every route but the probes needs a key (api/auth.py);
6. rate limit: per-credential request rate (`LAYER_RATE_LIMIT_RPS`, off by default) → 429
   with `Retry-After`.

One middleware, not six: each aiohttp middleware is a coroutine and a `partial` per request,
and the read path is measured to the microsecond (BENCHMARKS.md, issue 15, second pass).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web import ContentCoding
from cachetools import LRUCache

from api.auth import PUBLIC_PATHS, Credentials
from api.errors import (
    ApiError,
    Handler,
    OwnRoutes,
    error_answer,
    method_not_allowed,
    refused_method,
)
from api.shutdown import refusal
from layer.metrics import LayerMetrics
from layer.ratelimit import TokenBucket
from layer.settings import Settings

if TYPE_CHECKING:
    from layer.services import Services

__all__ = [
    "PROXY_ROUTE_NAME",
    "RateLimit",
    "RequestTimer",
    "compress_if_asked",
    "layer_middleware",
    "route_label",
]

#: Bodies smaller than this are sent as they are: gzip would cost more than it saves.
MIN_COMPRESS_BYTES = 1024
#: Buckets kept at most (one per credential); the least recently used are forgotten first.
MAX_BUCKETS = 100_000
#: Name of the catch-all passthrough route (api/server.py); its `route` label is `proxy`.
PROXY_ROUTE_NAME = "proxy"
#: `route` label of a request no resource matched (aiohttp's own 404/405).
UNMATCHED_ROUTE = "unmatched"


def route_label(request: web.Request) -> str:
    """The matched resource's template (`/v2/namespaces/{namespace}/metadata`), `proxy` for the
    passthrough, `unmatched` if no resource matched: a label never holds a raw path."""
    resource = request.match_info.route.resource
    if resource is None:
        return UNMATCHED_ROUTE
    if resource.name == PROXY_ROUTE_NAME:
        return PROXY_ROUTE_NAME
    return resource.canonical


class RequestTimer:
    """`layer_http_request_seconds` by route template and status: the time until the
    handler returned (a proxied body has been relayed by then). A request cancelled by the
    client's disconnect has no status and is not recorded."""

    def __init__(self, metrics: LayerMetrics) -> None:
        self._histogram = metrics.http_request_seconds
        # One child per (route, status): `labels()` validates and locks on every call; the
        # routes are templates and the statuses few, so this stays small.
        self._children: dict[tuple[str, int], Any] = {}

    def observe(self, request: web.Request, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        key = (route_label(request), status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._histogram.labels(route=key[0], status=str(status))
        child.observe(elapsed)


class RateLimit:
    """A token bucket per credential; the least recently used bucket goes first, so a busy
    key keeps its bucket however many other keys come by."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._buckets: LRUCache[str, TokenBucket] = LRUCache(maxsize=MAX_BUCKETS)

    def take(self, identity: str) -> None:
        """One request of `identity`, or a 429 ApiError with `Retry-After`."""
        bucket = self._buckets.get(identity)
        if bucket is None:
            bucket = self._buckets[identity] = TokenBucket(self._rate)
        if (wait_s := bucket.try_acquire()) > 0:
            raise ApiError(
                429, "rate limit exceeded for this API key", {"Retry-After": str(math.ceil(wait_s))}
            )


def compress_if_asked(request: web.Request, response: web.StreamResponse) -> None:
    """gzip `response` if the client asks for it and the body is worth compressing."""
    if (
        isinstance(response, web.Response)
        and "gzip" in request.headers.get("Accept-Encoding", "").lower()
        and not response.prepared
        and "Content-Encoding" not in response.headers
        and response.body is not None
        and len(response.body) >= MIN_COMPRESS_BYTES  # type: ignore[arg-type]
    ):
        response.enable_compression(ContentCoding.gzip)


def layer_middleware(services: Services, settings: Settings, routes: OwnRoutes) -> Handler:
    """The middleware of every route (the steps of this module's docstring, in order)."""
    timer = RequestTimer(services.metrics)
    readiness = services.readiness
    in_flight = services.in_flight
    credentials = Credentials(settings)
    rate_limit = RateLimit(settings.rate_limit_rps) if settings.rate_limit_rps > 0 else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        public = request.path in PUBLIC_PATHS
        response: web.StreamResponse | None
        try:
            if readiness.shutting_down and not public:
                response = refusal()
            else:
                in_flight.enter()
                try:
                    if not public:
                        credential = credentials.attach(request)  # 401 if it cannot be
                        if rate_limit is not None:
                            rate_limit.take(credential.identity)  # 429 if over the rate
                    response = await handler(request)
                    compress_if_asked(request, response)
                    if refused_method(response, request):
                        response = await method_not_allowed(request, routes)
                except Exception as exc:
                    response = await error_answer(request, exc, routes)
                    if response is None:
                        raise  # a redirect: aiohttp answers it
                finally:
                    in_flight.leave()
        except web.HTTPException as exc:
            timer.observe(request, exc.status, started)
            raise
        except Exception:
            timer.observe(request, 500, started)  # aiohttp answers 500
            raise
        timer.observe(request, response.status, started)
        return response

    return middleware  # type: ignore[return-value]
