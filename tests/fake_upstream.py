"""A real HTTP server standing in for turbopuffer, for unit tests of the upstream client.

`serving(handler)` runs a tiny aiohttp.web app on a free loopback port that answers every
request with `handler(request)`: the client under test goes through its real connection
pool, sockets and parser, and its failures are the real ones (a refused connection, a
server that hangs up or answers late, bytes that are not HTTP).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

__all__ = ["Handler", "json_response", "refused_url", "serving", "serving_raw"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(status: int, body: Any = None, **kwargs: Any) -> web.Response:
    """`status` with `body` as JSON (no body when None)."""
    if body is None:
        return web.Response(status=status, **kwargs)
    return web.json_response(body, status=status, **kwargs)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """The base URL (`http://127.0.0.1:port`) of a server answering with `handler`."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@asynccontextmanager
async def serving_raw(answer: bytes) -> AsyncIterator[str]:
    """The base URL of a server that reads a request and writes `answer` (raw bytes), then
    hangs up: for answers an HTTP server library would never send."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def refused_url() -> str:
    """A loopback URL nobody listens on (a port bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
