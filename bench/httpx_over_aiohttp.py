"""An httpx transport that sends over aiohttp's connection pool: Layer's upstream client
stack before issue 15 (was `layer/http_transport.py`), kept as the comparison of
bench/http_api.py part 3. Layer now uses aiohttp's client directly (layer/upstream.py).

Layer talked to turbopuffer through httpx (its API, its errors, `MockTransport` in tests),
but httpcore 1.0's connection pool costs ~1 ms of CPU per request, most of it in an
O(connections²) scan of idle connections (encode/httpcore#1035): bench/http_api.py measured
916 µs per request through httpx against 258 µs through aiohttp, on the metadata read
path. This transport keeps httpx in front and aiohttp's pool behind it.

Requests ask for an uncompressed answer (Layer's upstream calls are small JSON), so the
body handed back to httpx is the body as sent.
"""

from __future__ import annotations

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

#: Headers aiohttp would otherwise add on its own.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Content-Type")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=AiohttpTransport(limit=256))`."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _pool(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running event loop (aiohttp requires it)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "host"]
        headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
        headers.append(("Accept-Encoding", "identity"))
        try:
            async with self._pool().request(
                request.method,
                str(request.url),
                headers=headers,
                data=await request.aread() or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    connect=timeouts.get("connect"), sock_read=timeouts.get("read")
                ),
            ) as response:
                content = await response.read()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out", request=request) from exc
        except aiohttp.ClientConnectionError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=[
                (k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"
            ],
            content=content,
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
