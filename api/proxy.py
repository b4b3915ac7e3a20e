"""The transparent proxy: every turbopuffer route Layer does not serve itself.

Method, path, query string, body and end-to-end headers go upstream; hop-by-hop headers do
not; upstream's status, headers and body come back unchanged and streamed. Three routes
get more than a relay:

- writes (`POST /v2/namespaces/{ns}`, and `…/async`, the SDK's `start_copy_from`): rows are
  stamped with `_layer_upserted_at` (api/write_body.py, without parsing the body into
  objects), and a 2xx answer queues a write notification that is retried until Kafka has it
  (api/notifications.py). `copy_from_namespace` and `branch_from_namespace` are writes of
  the destination like any other; a `202` with a `Location` (a copy upstream runs
  asynchronously) queues a notification that says so, and the owner of the namespace follows
  the operation to its end (agents/operations.py);
- queries (`POST /v2/namespaces/{ns}/query`, multi-queries too): on an `updating`
  namespace the caller's filters are ANDed with the stable cut (api/stable_reads.py); a 429
  on an unfiltered query is retried once with the cut; every answer says
  `X-Layer-Stable-As-Of` and `X-Layer-Filtered`. A query on a namespace another worker owns
  is relayed to that worker, which holds its state;
- `hint_cache_warm` and queries count as cache activity for `cache_state`.
Layer's own attributes (`_layer_*`) are hidden from what comes back (api/write_body.py):
rows of queries, multi-queries, export and recall (unless asked for by name), schema
answers, and the `schema` of v1 metadata answers. Those answers are read whole (and asked
for uncompressed: compression is the compression middleware's) instead of streamed.
An absolute `Location` on upstream's origin becomes a path on Layer's own, which Layer then
proxies: the official SDK refuses a `Location` on another origin.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from api.auth import credential_of
from api.errors import ApiError, OwnRoutes
from api.replica import ROUTED_HEADER, not_ready, owner_url
from api.stable_reads import plan_query
from api.write_body import (
    ReservedAttribute,
    hide_in_metadata,
    hide_in_rows,
    hide_in_schema,
    plan_stamps,
)
from layer.app import app, settings
from layer.clock import now_ms
from layer.events import OperationStarted
from layer.upstream import UpstreamUnavailable, mapped_error, validate_namespace
from tables.faust_tables import freshness_table
from tables.freshness import ReadEvidence

__all__ = ["LAYER_OWNED_PATHS", "proxy", "proxy_handler"]

log = logging.getLogger(__name__)

#: Sent by a worker relaying a query to the owner while it holds a notification for the
#: namespace that Kafka has not acknowledged: the owner applies the cut as for its own.
PENDING_WRITE_HEADER = "X-Layer-Pending-Write"
#: RFC 9110 §7.6.1 connection-specific headers, plus those the HTTP clients set themselves.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip
#: Paths only Layer serves: a method they do not have is a 405, never proxied.
LAYER_OWNED_PATHS = re.compile(
    r"^/(v2/namespaces/[^/]+/(snapshots|warm)|v2/operations/.*|openapi\.json|metrics|healthz|readyz)$"
)
_NAMESPACE_PATH = re.compile(r"^/v[12]/namespaces/(?P<ns>[^/]+)(?P<rest>/.*)?$")
_QUERY_SUFFIXES = ("/query", "/multi-query")
#: Namespace routes whose POST is a write of the namespace (`/async`: start_copy_from).
_WRITE_SUFFIXES = ("", "/async")
_OPERATION_LOCATION = re.compile(r"^/\S*$")
STREAM_CHUNK_BYTES = 64 * 1024
#: A stamped body goes upstream in pieces at least this large (one socket write per piece).
SEND_PIECE_BYTES = 256 * 1024
#: Bodies larger than this are stamped off the event loop, so other requests keep flowing.
STAMP_IN_THREAD_BYTES = 1024 * 1024


def _proxy_timeout() -> aiohttp.ClientTimeout:
    """A proxied request may take as long as the SDK waits (`LAYER_PROXY_TIMEOUT_MS`)."""
    return aiohttp.ClientTimeout(total=settings.proxy_timeout_ms / 1000, connect=5.0)


#: aiohttp inflates a gzip request body as it reads it, so what goes upstream is plain.
_INFLATED = frozenset({"content-encoding"})
#: Request headers never forwarded.
_NOT_FORWARDED = HOP_BY_HOP | _INFLATED


def _forward_headers(request: web.Request, upstream_key: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    headers["Authorization"] = f"Bearer {upstream_key}"
    return headers


def _response_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in upstream.headers.items():
        if key.lower() in HOP_BY_HOP:
            continue
        if key.lower() == "location":
            value = _same_origin(value)
        headers.add(key, value)
    return headers


def _same_origin(location: str) -> str:
    """An absolute Location on upstream's origin, as a path on Layer's (which proxies it)."""
    base = URL(settings.upstream_url)
    target = URL(location)
    if target.is_absolute() and (target.scheme, target.host, target.port) == (
        base.scheme, base.host, base.port,
    ):  # fmt: skip
        path = target.raw_path_qs
        prefix = base.raw_path.rstrip("/")
        return path[len(prefix) :] if prefix and path.startswith(prefix) else path
    return location


async def _send(
    method: str, url: str, headers: dict[str, str], content: Any = None
) -> aiohttp.ClientResponse:
    """Send upstream on the shared pool (layer/upstream.py: failures become 502/504 there);
    the answer is read by the caller."""
    return await app.services.upstream.send(
        method, url, headers=headers, data=content, timeout=_proxy_timeout()
    )


async def _stream_back(
    request: web.Request, upstream: aiohttp.ClientResponse, extra: dict[str, str] | None = None
) -> web.StreamResponse:
    """Relay upstream's answer as it arrives, without holding it whole."""
    response = web.StreamResponse(status=upstream.status, headers=_response_headers(upstream))
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    for key, value in (extra or {}).items():
        response.headers[key] = value
    try:
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(STREAM_CHUNK_BYTES):
            await response.write(chunk)
        await response.write_eof()
    except TimeoutError as exc:
        raise mapped_error(exc) from None
    finally:
        upstream.release()
    return response


async def _body_stream(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(STREAM_CHUNK_BYTES):
        yield chunk


async def _read_body(request: web.Request) -> bytearray:
    """The whole request body in one buffer (aiohttp has inflated a gzip-encoded one).

    Read straight from the stream into a buffer sized from Content-Length when given, so a
    large write is held once (aiohttp's `read()` holds it twice, and keeps it referenced
    while the connection idles). A declared size over the limit is refused before reading.
    """
    declared = request.content_length
    limit = settings.max_body_bytes
    if declared is not None and declared > limit:
        raise ApiError(413, f"request body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(STREAM_CHUNK_BYTES):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")
    return body


async def _pieces(parts: Iterable[bytes | memoryview]) -> AsyncIterator[bytes]:
    """Coalesce slices into pieces of at least SEND_PIECE_BYTES (fewer socket writes)."""
    piece = bytearray()
    for part in parts:
        piece += part
        if len(piece) >= SEND_PIECE_BYTES:
            yield bytes(piece)
            piece.clear()
    if piece:
        yield bytes(piece)


async def _proxy_write(
    request: web.Request, namespace: str, url: str, headers: dict[str, str]
) -> web.StreamResponse:
    body = await _read_body(request)
    # The answer is read here (for rows_affected): ask for it plain, compression is ours.
    headers["Accept-Encoding"] = "identity"
    content: Any = body
    if settings.stable_reads:
        stamp_ms = now_ms()
        try:
            if len(body) > STAMP_IN_THREAD_BYTES:
                plan = await asyncio.to_thread(plan_stamps, body, stamp_ms)
            else:
                plan = plan_stamps(body, stamp_ms)
        except ReservedAttribute as exc:
            raise ApiError(400, str(exc)) from None
        headers["Content-Length"] = str(plan.length)
        # A small body goes as one buffer; a large one streams (never copied whole).
        small = plan.length <= SEND_PIECE_BYTES
        content = b"".join(plan.chunks()) if small else _pieces(plan.chunks())
    upstream = await _send(request.method, url, headers, content)
    try:
        answer = await upstream.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise mapped_error(exc) from None
    finally:
        upstream.release()
    location = upstream.headers.get("Location")
    if upstream.status == 202 and location:
        # Accepted, running upstream (a copy): the destination is updating from now until
        # the operation ends, which the namespace's owner follows (agents/operations.py).
        path = _operation_path(location, request.path)
        operation = (
            None if path is None else OperationStarted(location=path, accepted_at_ms=now_ms())
        )
        app.services.notifications.submit(
            namespace, rows=None, body_bytes=len(body), operation=operation
        )
    elif 200 <= upstream.status < 300:
        rows = None
        try:
            rows = int(orjson.loads(answer).get("rows_affected"))
        except (ValueError, TypeError, AttributeError):
            pass
        app.services.notifications.submit(namespace, rows=rows, body_bytes=len(body))
    return web.Response(status=upstream.status, body=answer, headers=_response_headers(upstream))


def _operation_path(location: str, request_path: str) -> str | None:
    """An upstream operation's `Location` as a path on upstream, for Layer to follow with
    the watcher's key; None for one on another origin (the key is never sent there)."""
    target = URL(_same_origin(location))
    if target.is_absolute():
        log.warning("not following an operation on another origin: %s", location)
        return None
    if not target.raw_path.startswith("/"):
        target = URL(request_path).join(target)
    path = target.raw_path_qs
    return path if _OPERATION_LOCATION.match(path) and len(path) <= 2048 else None


async def _proxy_query(
    request: web.Request, namespace: str, url: str, headers: dict[str, str]
) -> web.StreamResponse:
    raw = await _read_body(request)
    services = app.services
    notifications = services.notifications
    # State this worker has not recovered (or no longer owns) is no basis for a cut: such a
    # query goes unfiltered, as for a namespace Layer does not know.
    # Nor is the state of another organisation's namespace of this name (api/access.py).
    state = (
        freshness_table.get(namespace)
        if services.readiness.answers(namespace)
        and await services.access.caller_sees_watched(credential_of(request), namespace)
        else None
    )
    # This worker's own pending notification, or the relaying worker's (it says so).
    evidence = ReadEvidence(
        write_pending=notifications.has_pending(namespace)
        or (ROUTED_HEADER in request.headers and PENDING_WRITE_HEADER in request.headers),
        write_unconfirmed=notifications.unconfirmed(namespace),
    )
    plan = plan_query(raw, state, evidence, stable_reads=settings.stable_reads)
    headers["Accept-Encoding"] = "identity"  # the rows are read here; compression is ours
    upstream = await _send("POST", url, headers, plan.body)
    filtered = plan.filtered
    retry_body = plan.retry_body() if upstream.status == 429 else None
    if retry_body is not None:
        upstream.release()  # an unfiltered query was throttled: once more, with the cut
        filtered = True
        upstream = await _send("POST", url, headers, retry_body)
    if 200 <= upstream.status < 300:
        services.read_events.record_cache_activity(namespace)
    return await _read_back(
        upstream,
        lambda answer: hide_in_rows(answer, plan.keep),
        {
            "X-Layer-Stable-As-Of": "" if plan.stable_as_of is None else str(plan.stable_as_of),
            "X-Layer-Filtered": "true" if filtered else "false",
        },
    )


async def _read_back(
    upstream: aiohttp.ClientResponse,
    hide: Callable[[bytes], bytes],
    extra: dict[str, str] | None = None,
) -> web.Response:
    """Upstream's answer read whole, with Layer's attributes hidden from a 2xx one."""
    try:
        answer = await upstream.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise mapped_error(exc) from None
    finally:
        upstream.release()
    if 200 <= upstream.status < 300:
        answer = hide(answer)
    response = web.Response(
        status=upstream.status, body=answer, headers=_response_headers(upstream)
    )
    for key, value in (extra or {}).items():
        response.headers[key] = value
    return response


def _hiding(method: str, rest: str) -> Callable[[bytes], bytes] | None:
    """How an answer of a passed-through namespace route lists attributes, if it does."""
    if rest == "/schema" and method in ("GET", "POST"):
        return hide_in_schema
    if rest == "/metadata" and method in ("GET", "PATCH"):
        return hide_in_metadata
    if (rest == "" and method == "GET") or (rest == "/_debug/recall" and method == "POST"):
        return hide_in_rows  # export (v1), recall's ground truth
    return None


async def _relay_to_owner(request: web.Request, namespace: str, owner: str) -> web.StreamResponse:
    """A query on a namespace another worker owns: that worker holds the state to decide."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
    headers[ROUTED_HEADER] = "1"
    if app.services.notifications.has_pending(namespace):
        headers[PENDING_WRITE_HEADER] = "1"  # the owner cannot know it yet: it cuts
    try:
        upstream = await app.services.peers.send(
            request.method,
            f"{owner}{request.rel_url}",
            headers=headers,
            data=_body_stream(request),
            timeout=_proxy_timeout(),
        )
    except UpstreamUnavailable:
        # Not upstream's failure: the owning worker is gone (restarting, leaving).
        raise not_ready(f"freshness of {namespace}", f"worker {owner} unreachable") from None
    return await _stream_back(request, upstream)


def proxy_handler(routes: OwnRoutes) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The catch-all handler for turbopuffer's routes (registered last, after Layer's own)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await proxy(request, routes)

    return handler


async def proxy(request: web.Request, routes: OwnRoutes) -> web.StreamResponse:
    """A request none of Layer's own routes serves, relayed to turbopuffer."""
    path = request.path
    if allowed := await routes.allowed_methods(request):
        # One of Layer's own routes, with a method it does not serve (TRACE, OPTIONS, PUT…):
        # 405 listing what it serves, never upstream (turbopuffer's shape: api/errors.py).
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    if LAYER_OWNED_PATHS.match(path):
        raise web.HTTPNotFound()
    if not path.startswith(("/v1/", "/v2/")):
        raise web.HTTPNotFound()
    namespace: str | None = None
    rest = ""
    if (match := _NAMESPACE_PATH.match(path)) is not None:
        namespace = validate_namespace(match["ns"])
        rest = match["rest"] or ""
    credential = credential_of(request)
    headers = _forward_headers(request, credential.upstream_key)
    url = f"{settings.upstream_url}{request.rel_url}"

    if namespace is not None and request.method == "POST":
        if rest in _WRITE_SUFFIXES and path.startswith("/v2/"):
            return await _proxy_write(request, namespace, url, headers)
        if rest in _QUERY_SUFFIXES:
            if (
                not app.services.readiness.answers(namespace)
                and ROUTED_HEADER not in request.headers
                and (owner := owner_url(namespace)) is not None
            ):
                return await _relay_to_owner(request, namespace, owner)
            return await _proxy_query(request, namespace, url, headers)
    hide = _hiding(request.method, rest) if namespace is not None else None
    if hide is not None:
        headers["Accept-Encoding"] = "identity"  # read here; compression is ours
    body = _body_stream(request) if request.body_exists else None
    upstream = await _send(request.method, url, headers, body)
    if namespace is not None and rest == "/hint_cache_warm" and upstream.ok:
        app.services.read_events.record_cache_activity(namespace)
    if hide is not None:
        return await _read_back(upstream, hide)
    return await _stream_back(request, upstream)
