"""Every error Layer answers is turbopuffer's shape: `{"status": "error", "error": "…"}`.

`ApiError` is raised by views; `error_answer` (called by api/middleware.py) turns it,
aiohttp's own HTTP errors (unknown route, wrong method) and upstream failures into that
body with the right status code.
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
    "OwnRoutes",
    "error_answer",
    "error_body",
    "error_response",
    "method_not_allowed",
    "refused_method",
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


class OwnRoutes:
    """Layer's own resources (every one but the catch-all proxy's), found for a path the way
    aiohttp's router finds them: by the path's prefixes, not by trying every resource.

    The index is built on first use, once the router is frozen (every route is added by
    then). The key is the router's own (`UrlDispatcher._get_resource_index_key`): a resource
    can only match a path that starts with its key, so the candidates of a path are the
    resources under each of its prefixes, and nothing else can answer it.
    """

    def __init__(self) -> None:
        self._index: dict[str, list[web.AbstractResource]] | None = None

    def _build(self, router: web.UrlDispatcher) -> dict[str, list[web.AbstractResource]]:
        index: dict[str, list[web.AbstractResource]] = {}
        for resource in router.resources():
            if any(route.method == hdrs.METH_ANY for route in resource):
                continue  # the catch-all proxy: not one of Layer's routes
            key = resource.canonical
            if "{" in key:
                key = key.partition("{")[0].rpartition("/")[0]
            index.setdefault(key.rstrip("/") or "/", []).append(resource)
        return index

    async def allowed_methods(self, request: web.Request) -> list[str]:
        """The methods Layer's own routes serve on this request's path, but the request's own.

        For a 405: `Allow` lists them. Faust registers HEAD with every view, so a view that
        has no GET answers HEAD with a 405 too, and HEAD is left out of its `Allow`.
        """
        index = self._index
        if index is None:
            index = self._index = self._build(request.app.router)
        allowed: set[str] = set()
        part = request.rel_url.path_safe
        while part:
            for resource in index.get(part, ()):
                _, methods = await resource.resolve(request)
                allowed |= methods
            if part == "/":
                break
            part = part.rpartition("/")[0] or "/"
        if not allowed:
            return []
        if hdrs.METH_GET not in allowed:
            allowed.discard(hdrs.METH_HEAD)
        allowed.discard(request.method)
        return sorted(allowed)


def _method_not_allowed(request: web.Request, allowed: list[str]) -> web.Response:
    return error_response(
        405, f"method {request.method} not allowed", {"Allow": ", ".join(allowed)}
    )


def refused_method(response: web.StreamResponse, request: web.Request) -> bool:
    """A Faust view refusing a method it was registered for (HEAD on a POST-only view): its
    own error body has neither turbopuffer's shape nor `Allow`."""
    return (
        response.status == 405
        and "Allow" not in response.headers
        and request.match_info.route.method != hdrs.METH_ANY
    )


async def method_not_allowed(request: web.Request, routes: OwnRoutes) -> web.Response:
    """405 in turbopuffer's shape, with `Allow` listing what Layer's routes serve there."""
    return _method_not_allowed(request, await routes.allowed_methods(request))


async def error_answer(
    request: web.Request, exc: Exception, routes: OwnRoutes
) -> web.Response | None:
    """What the client gets for `exc` raised while answering `request`, in turbopuffer's
    shape; None for a redirect (aiohttp answers it). Called inside the `except` block, so an
    unexpected error is logged with its traceback."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, exc.headers)
    if isinstance(exc, LayerError):
        mapped = to_api_error(exc)
        return error_response(mapped.status, mapped.message, mapped.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        if exc.status == 405:
            # aiohttp's or the proxy's refusal of a method on one of Layer's routes.
            return await method_not_allowed(request, routes)
        message = "not found" if exc.status == 404 else exc.reason
        return error_response(exc.status, message)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal error")
