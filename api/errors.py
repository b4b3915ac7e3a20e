"""Every error Layer answers is turbopuffer's shape: `{"status": "error", "error": "…"}`.

`ApiError` is raised by views; the middleware turns it, aiohttp's own HTTP errors (unknown
route, wrong method) and upstream failures into that body with the right status code.
Anything unexpected is logged and answered 500 with a message that reveals nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from layer.errors import LayerError
from layer.upstream import (
    InvalidNamespace,
    UpstreamBadResponse,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "ApiError",
    "allowed_methods",
    "error_body",
    "error_middleware",
    "error_response",
    "to_api_error",
]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(LayerError):
    """An error answered to the client with `status` and `message`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_body(message: str) -> bytes:
    return json.dumps({"status": "error", "error": message}).encode()


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=error_body(message), content_type="application/json", headers=headers
    )


def to_api_error(exc: LayerError) -> ApiError:
    """Map an upstream failure to what the client sees (status kept, body never dumped)."""
    if isinstance(exc, UpstreamStatusError):
        headers = {}
        if exc.retry_after_ms is not None:
            headers["Retry-After"] = str(max(1, -(-exc.retry_after_ms // 1000)))
        return ApiError(exc.status_code, exc.upstream_message, headers)
    if isinstance(exc, UpstreamTimeout):
        return ApiError(504, str(exc))
    if isinstance(exc, UpstreamUnavailable | UpstreamBadResponse):
        return ApiError(502, str(exc))
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidNamespace):
        return ApiError(400, str(exc))
    return ApiError(500, "internal error")


async def allowed_methods(request: web.Request) -> list[str]:
    """The methods Layer's own routes serve on this request's path, but the request's own.

    For a 405: `Allow` lists them. The catch-all proxy (it takes every method) is not one of
    Layer's routes; Faust registers HEAD with every view, so a view that has no GET answers
    HEAD with a 405 too, and HEAD is left out of its `Allow`.
    """
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        _, methods = await resource.resolve(request)
        if hdrs.METH_ANY not in methods:
            allowed |= methods
    if hdrs.METH_GET not in allowed:
        allowed.discard(hdrs.METH_HEAD)
    allowed.discard(request.method)
    return sorted(allowed)


def _method_not_allowed(request: web.Request, allowed: list[str]) -> web.Response:
    return error_response(
        405, f"method {request.method} not allowed", {"Allow": ", ".join(allowed)}
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
        if (
            response.status == 405
            and "Allow" not in response.headers
            and request.match_info.route.method != hdrs.METH_ANY
        ):
            # A Faust view refusing a method it was registered for (HEAD on a POST-only
            # view): its own error body has neither turbopuffer's shape nor `Allow`.
            return _method_not_allowed(request, await allowed_methods(request))
        return response
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except LayerError as exc:
        mapped = to_api_error(exc)
        return error_response(mapped.status, mapped.message, mapped.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 405:
            # aiohttp's or the proxy's refusal of a method on one of Layer's routes.
            return _method_not_allowed(request, await allowed_methods(request))
        message = "not found" if exc.status == 404 else exc.reason
        return error_response(exc.status, message)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error")
