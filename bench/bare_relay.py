"""The floor of a proxied metadata read on this machine: Layer's two HTTP stacks and nothing else.

An aiohttp server (uvloop, as the worker) that relays every GET to the upstream on one aiohttp
`ClientSession` configured as `layer.upstream.Upstream`'s, and answers with its body: no
Faust, no Kafka, no middlewares, no auth, no freshness state. `--shape` also parses the body
and answers it with a `layer` object added (orjson), as Layer's metadata read does.
`bench/http_api.py --relay-floor` measures it beside Layer and the emulator; the difference
between the two relays' CPU per read and Layer's is what Layer itself spends.

    python bench/bare_relay.py PORT UPSTREAM_URL [--shape]
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import orjson
import uvloop
from aiohttp import web

#: What the shaped relay adds: a `layer` object of the size Layer's metadata read adds.
LAYER_BLOCK = {
    "stable_as_of": 1_700_000_000_000,
    "is_stable": True,
    "status": "stable",
    "last_write_ms": None,
    "last_poll_ms": 1_700_000_000_000,
    "cache_state": "unknown",
}


async def serve(port: int, upstream: str, shape: bool) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=512),
        timeout=aiohttp.ClientTimeout(total=10),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        cookie_jar=aiohttp.DummyCookieJar(),
    )

    async def relay(request: web.Request) -> web.Response:
        headers = {
            "Accept": "application/json",
            "User-Agent": "layer",
            "Accept-Encoding": "identity",
            "Authorization": request.headers.get("Authorization", ""),
        }
        async with session.get(upstream + request.path_qs, headers=headers) as response:
            body = await response.read()
            status = response.status
        if shape and status == 200:
            body = orjson.dumps({**json.loads(body), "layer": LAYER_BLOCK})
        return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2].rstrip("/"), "--shape" in sys.argv[3:]))
