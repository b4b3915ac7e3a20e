"""Conventions every route follows, as aiohttp middlewares (installed by api/server.py).

- `http_metrics_middleware`: times every request into `layer_http_request_seconds`, labelled
  with the route's template (never the raw path, which names a namespace) and the status.
- `rate_limit_middleware`: per-credential request rate (`LAYER_RATE_LIMIT_RPS`, off by
  default) → 429 with `Retry-After`.
- `compression_middleware`: a response is gzip-compressed only when the client's
  `Accept-Encoding` asks for it (turbopuffer's clients turn compression off by default:
  they are CPU-bound, not bandwidth-bound) and the body is worth it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web
from aiohttp.web import ContentCoding
from cachetools import LRUCache

from api.auth import PUBLIC_PATHS, credential_of
from api.errors import ApiError, Handler
from layer.metrics import LayerMetrics
from layer.ratelimit import TokenBucket
from layer.settings import Settings

__all__ = [
    "PROXY_ROUTE_NAME",
    "compression_middleware",
    "http_metrics_middleware",
    "rate_limit_middleware",
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


def http_metrics_middleware(metrics: LayerMetrics) -> Handler:
    """Outermost: the time until the handler returned (a proxied body has been relayed by
    then), with the status the client got. A request cancelled by the client's disconnect
    has no status and is not recorded."""
    histogram = metrics.http_request_seconds
    # One child per (route, status): `labels()` validates and locks on every call; the
    # routes are templates and the statuses few, so this stays small.
    children: dict[tuple[str, int], Any] = {}

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()

        def observe(status: int) -> None:
            elapsed = time.perf_counter() - started
            key = (route_label(request), status)
            child = children.get(key)
            if child is None:
                child = children[key] = histogram.labels(route=key[0], status=str(status))
            child.observe(elapsed)

        try:
            response = await handler(request)
        except web.HTTPException as exc:
            observe(exc.status)
            raise
        except Exception:
            observe(500)  # aiohttp answers 500 for what the error middleware let through
            raise
        observe(response.status)
        return response

    return middleware  # type: ignore[return-value]


def rate_limit_middleware(settings: Settings) -> Handler:
    # The least recently used bucket goes first: a busy key keeps its bucket however many
    # other keys come by.
    buckets: LRUCache[str, TokenBucket] = LRUCache(maxsize=MAX_BUCKETS)
    rate = settings.rate_limit_rps

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if rate <= 0 or request.path in PUBLIC_PATHS:
            return await handler(request)
        identity = credential_of(request).identity
        bucket = buckets.get(identity)
        if bucket is None:
            bucket = buckets[identity] = TokenBucket(rate)
        if (wait_s := bucket.try_acquire()) > 0:
            raise ApiError(
                429, "rate limit exceeded for this API key", {"Retry-After": str(math.ceil(wait_s))}
            )
        return await handler(request)

    return middleware  # type: ignore[return-value]


@web.middleware
async def compression_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
    if (
        accepts_gzip
        and isinstance(response, web.Response)
        and not response.prepared
        and "Content-Encoding" not in response.headers
        and response.body is not None
        and len(response.body) >= MIN_COMPRESS_BYTES  # type: ignore[arg-type]
    ):
        response.enable_compression(ContentCoding.gzip)
    return response
