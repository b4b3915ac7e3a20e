"""turbopuffer I/O: one aiohttp connection pool per upstream; its failures become
`UpstreamError`s here, and only here.

Errors (drawn once):

    LayerError
    └── UpstreamError              the upstream call did not give a usable answer
        ├── UpstreamUnavailable    connection failed (→ 502)
        ├── UpstreamTimeout        no answer in time (→ 504)
        ├── UpstreamStatusError    upstream answered with an error status (kept as is)
        └── UpstreamBadResponse    a 2xx body Layer cannot read (→ 502)

One `Upstream` per base URL serves every caller: the watcher's polls, the metadata, listing
and warm routes, the operations follower (`request`, `get_json`, `metadata`: bodies read
whole) and the proxy (`send`: the answer streamed back). aiohttp's client, not httpx:
bench/http_api.py part 3 measured httpx 0.28 over aiohttp's pool at 224-275 µs of CPU per
metadata GET and this client at 72-117 µs (BENCHMARKS.md, "Read path at its floor").

`parse_metadata` is pure and tested on literal upstream bodies.
"""

from __future__ import annotations

import json as jsonlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from layer.errors import LayerError
from layer.events import NAMESPACE_PATTERN
from layer.metrics import LayerMetrics
from tables.freshness import IndexObservation

__all__ = [
    "InvalidNamespace",
    "Upstream",
    "UpstreamBadResponse",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "mapped_error",
    "parse_metadata",
    "parse_retry_after_ms",
    "upstream_route",
    "validate_namespace",
]

#: Longest upstream error message carried into Layer's own errors and state (no body dumps).
MAX_ERROR_CHARS = 200
_namespace_re = re.compile(NAMESPACE_PATTERN)
#: `/v{n}/namespaces[/{namespace}[/{action}]]`: the route label is the action, never the name.
_ROUTE_RE = re.compile(r"^/v\d+/namespaces(?:/[^/]+(?:/(?P<action>[^/?]+))?)?/?$")
#: Actions a route label may name; anything else is `other` (labels must stay few).
_KNOWN_ACTIONS = frozenset(
    {"metadata", "hint_cache_warm", "query", "multi-query", "schema", "export", "explain_query"}
)
#: Headers aiohttp would otherwise add on its own: the proxy relays the caller's instead.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Content-Type")
#: Headers of Layer's own calls (`request`): small JSON, asked for uncompressed (the pool
#: does not decompress: the proxy relays bodies as they are).
_OWN_HEADERS = {"Accept": "application/json", "User-Agent": "layer", "Accept-Encoding": "identity"}


class UpstreamError(LayerError):
    """The upstream call did not give a usable answer."""


class UpstreamUnavailable(UpstreamError):
    """Upstream could not be reached."""


class UpstreamTimeout(UpstreamError):
    """Upstream did not answer in time."""


class UpstreamBadResponse(UpstreamError):
    """Upstream answered 2xx with a body Layer cannot read."""


class UpstreamStatusError(UpstreamError):
    """Upstream answered with an error status."""

    def __init__(self, status_code: int, message: str, retry_after_ms: int | None = None):
        super().__init__(f"upstream answered {status_code}: {message}")
        self.status_code = status_code
        self.upstream_message = message
        self.retry_after_ms = retry_after_ms


class InvalidNamespace(LayerError):
    """A namespace name turbopuffer would not accept."""


def validate_namespace(namespace: str) -> str:
    """Return `namespace` if it is a valid turbopuffer name; raise InvalidNamespace otherwise."""
    if not _namespace_re.fullmatch(namespace):
        raise InvalidNamespace(
            "invalid namespace name: use 1-128 characters from A-Z, a-z, 0-9, '-', '_' and '.'"
        )
    return namespace


def parse_retry_after_ms(headers: Mapping[str, str]) -> int | None:
    """`retry-after-ms` or `Retry-After` (seconds or an HTTP date) in ms; None if absent.

    `headers` is case-insensitive (an aiohttp `CIMultiDictProxy`)."""
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return max(0, int(float(value)))
        except ValueError:
            return None
    if (value := headers.get("retry-after")) is None:
        return None
    try:
        return max(0, int(float(value) * 1000))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((when - datetime.now(UTC)).total_seconds() * 1000))


def upstream_route(path: str) -> str:
    """A low-cardinality name for an upstream path (the `route` label of upstream timings):
    `list` for the namespace list, the action (`metadata`, `hint_cache_warm`, ...) for a
    namespace's route, `namespace` for the namespace itself (writes), `other` otherwise."""
    match = _ROUTE_RE.match(path)
    if match is None:
        return "other"
    action = match["action"]
    if action is None:
        return "list" if path.rstrip("/").endswith("/namespaces") else "namespace"
    return action if action in _KNOWN_ACTIONS else "other"


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """An upstream answer read whole: status, headers (case-insensitive) and body."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes
    reason_phrase: str

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not."""
        return jsonlib.loads(self.content)


def _error_message(response: UpstreamResponse) -> str:
    """The `error` of turbopuffer's error body, shortened; never the raw body."""
    try:
        body = response.json()
        message = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        message = None
    text = str(message) if message else response.reason_phrase or "error"
    return text[:MAX_ERROR_CHARS]


def _reason(status: int) -> str:
    """The standard reason phrase of `status` ("" for a code without one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def mapped_error(exc: BaseException) -> UpstreamError:
    """The UpstreamError an aiohttp failure (or a timeout) is: the one place they are mapped."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream did not answer in time ({type(exc).__name__})")
    return UpstreamUnavailable(f"upstream unreachable ({type(exc).__name__})")


def parse_metadata(body: Any) -> IndexObservation:
    """Read the index status out of a metadata body; an unknown shape is an error, not stable."""
    if not isinstance(body, dict) or not isinstance(body.get("index"), dict):
        raise UpstreamBadResponse("metadata without an `index` object")
    index: dict[str, Any] = body["index"]
    status = index.get("status")
    if status not in ("up-to-date", "updating"):
        raise UpstreamBadResponse(f"unknown index status {str(status)[:40]!r}")

    def optional_int(key: str) -> int | None:
        value = body.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def optional_str(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) else None

    return IndexObservation(
        index_status=status,
        index=index,
        approx_row_count=optional_int("approx_row_count"),
        approx_logical_bytes=optional_int("approx_logical_bytes"),
        updated_at=optional_str("updated_at"),
        created_at=optional_str("created_at"),
    )


class Upstream:
    """One upstream's client: base URL, timeout, and one aiohttp connection pool.

    `Upstream("https://gcp-us-central1.turbopuffer.com", timeout_ms=10_000)`; the pool is
    created on first use, inside the running event loop (aiohttp requires it). A `path`
    that is an absolute URL is used as it is (the peer client asks other workers).

    - `timeout_ms`: the whole of one call (connecting, waiting in the pool, the answer);
    - `metrics`: where Layer's own calls are timed (`request`; None: not timed, as the
      calls to other workers are not);
    - `max_connections`: connections open at once (callers beyond it wait for one).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_ms: int,
        metrics: LayerMetrics | None,
        max_connections: int = 512,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._own_session: aiohttp.ClientSession | None = None
        # The timing histogram's child per route label (`labels()` costs on every call).
        self._timers: dict[str, Any] = {}

    def session(self) -> aiohttp.ClientSession:
        """The connection pool. Nothing is decompressed (the proxy relays bodies as they
        are) and no cookie is kept (one pool serves every caller's credential)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def own_session(self) -> aiohttp.ClientSession:
        """The same pool for Layer's own calls (`request`), which give every header aiohttp
        would add (`_OWN_HEADERS`), so it skips none: aiohttp rebuilds the list of skipped
        headers on every request that has one (2.5 % of a metadata read's samples)."""
        session = self.session()
        own = self._own_session
        if own is None or own.closed or own.connector is not session.connector:
            self._own_session = own = aiohttp.ClientSession(
                connector=session.connector,
                connector_owner=False,
                timeout=self._timeout,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return own

    async def aclose(self) -> None:
        if self._own_session is not None:
            await self._own_session.close()
        if self._session is not None:
            await self._session.close()

    def url(self, path: str) -> str:
        """`path` on this upstream (an absolute URL is kept as it is)."""
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        data: Any = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        """Send one request as given; the caller reads the answer and releases it.

        No header is added (the proxy relays the caller's); a redirect is returned, not
        followed. A connection failure or timeout raises UpstreamUnavailable/UpstreamTimeout.
        """
        try:
            return await self.session().request(
                method,
                self.url(path),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=timeout or self._timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise mapped_error(exc) from None

    async def fetch(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        data: Any = None,
        timeout: aiohttp.ClientTimeout | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> UpstreamResponse:
        """`send`, with the answer read whole (any status); `session` is `own_session` for
        Layer's own calls (`request`), else the pool as it is."""
        session = session or self.session()
        try:
            async with session.request(
                method,
                self.url(path),
                headers=headers,
                params=params,
                data=data,
                allow_redirects=False,
                timeout=timeout or self._timeout,
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise mapped_error(exc) from None
        return UpstreamResponse(
            status_code=response.status,
            headers=response.headers,
            content=content,
            reason_phrase=_reason(response.status),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        api_key: str,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> UpstreamResponse:
        """One of Layer's own calls, read whole (any status), timed under its route.

        `api_key` becomes `Authorization: Bearer …`; `json` is sent as a JSON body.
        Connection failures and timeouts raise UpstreamErrors."""
        all_headers = {**_OWN_HEADERS, "Authorization": f"Bearer {api_key}"}
        if headers:
            all_headers.update(headers)
        data = None
        if json is not None:
            data = jsonlib.dumps(json).encode()
            all_headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            own = self.own_session()
            return await self.fetch(
                method, path, headers=all_headers, params=params, data=data, session=own
            )
        finally:
            if self._metrics is not None:
                elapsed = time.perf_counter() - started
                route = upstream_route(path)
                timer = self._timers.get(route)
                if timer is None:
                    histogram = self._metrics.upstream_request_seconds
                    timer = self._timers[route] = histogram.labels(route=route)
                timer.observe(elapsed)

    async def get_json(
        self, path: str, *, api_key: str, params: dict[str, str] | None = None
    ) -> tuple[Any, UpstreamResponse]:
        """GET a JSON body; an error status or a non-JSON body raises."""
        response = await self.request("GET", path, api_key=api_key, params=params)
        if response.status_code >= 400:
            raise UpstreamStatusError(
                response.status_code,
                _error_message(response),
                parse_retry_after_ms(response.headers),
            )
        try:
            return response.json(), response
        except ValueError:
            raise UpstreamBadResponse("upstream answered with a body that is not JSON") from None

    async def metadata(
        self, namespace: str, *, api_key: str
    ) -> tuple[dict[str, Any], IndexObservation]:
        """The namespace's metadata body, verbatim, and what it says about the index."""
        body, _ = await self.get_json(
            f"/v2/namespaces/{validate_namespace(namespace)}/metadata", api_key=api_key
        )
        return body, parse_metadata(body)
