"""turbopuffer I/O: one shared httpx client; httpx errors become `UpstreamError`s here.

Errors (drawn once):

    LayerError
    └── UpstreamError              the upstream call did not give a usable answer
        ├── UpstreamUnavailable    connection failed (→ 502)
        ├── UpstreamTimeout        no answer in time (→ 504)
        ├── UpstreamStatusError    upstream answered with an error status (kept as is)
        └── UpstreamBadResponse    a 2xx body Layer cannot read (→ 502)

`parse_metadata` is pure and tested on literal upstream bodies.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from layer.errors import LayerError
from layer.events import NAMESPACE_PATTERN
from layer.http_transport import AiohttpTransport
from layer.metrics import LayerMetrics
from tables.freshness import IndexObservation

__all__ = [
    "InvalidNamespace",
    "Upstream",
    "UpstreamBadResponse",
    "UpstreamError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
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


def parse_retry_after_ms(headers: httpx.Headers) -> int | None:
    """`retry-after-ms` or `Retry-After` (seconds or an HTTP date) in ms; None if absent."""
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


def _error_message(response: httpx.Response) -> str:
    """The `error` of turbopuffer's error body, shortened; never the raw body."""
    try:
        body = response.json()
        message = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        message = None
    text = str(message) if message else response.reason_phrase or "error"
    return text[:MAX_ERROR_CHARS]


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
    """The shared upstream client: base URL, timeouts, connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_ms: int,
        metrics: LayerMetrics,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._metrics = metrics
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_ms / 1000),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            # aiohttp's pool behind httpx's API (layer/http_transport.py); tests inject a mock.
            transport=transport or AiohttpTransport(limit=max_connections),
            headers={"Accept": "application/json", "User-Agent": "layer"},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        api_key: str,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; connection failures and timeouts become UpstreamErrors."""
        all_headers = {"Authorization": f"Bearer {api_key}", **(headers or {})}
        started = time.perf_counter()
        try:
            return await self.client.request(
                method, path, params=params, json=json, headers=all_headers
            )
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                f"upstream did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"upstream unreachable ({type(exc).__name__})") from None
        finally:
            self._metrics.upstream_request_seconds.labels(route=upstream_route(path)).observe(
                time.perf_counter() - started
            )

    async def get_json(
        self, path: str, *, api_key: str, params: dict[str, str] | None = None
    ) -> tuple[Any, httpx.Response]:
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
