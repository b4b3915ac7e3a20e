"""Which worker answers a namespace read: the one owning its partition.

Decision: route, don't replicate. The owner of a namespace's partition applies every event
of that namespace, so its table is the exact state; any other worker forwards the read to
it (one hop on the cluster network, ~1-3 ms), and the listing asks each row's owner. A read
replica (Faust standby partitions) would avoid the hop, but on faust-streaming 0.15.3 we
measured standby partitions that stopped following the changelog after the initial
recovery (a row written on the owner never appeared on the standby), so a replica would
answer stale or cold state; routing cannot. The owner is found from the partition
assignor's table map with the same partitioner producers use on the plain UTF-8 key bytes
(NOTES-kafka.md §4). A forwarded request carries `X-Layer-Routed` and is answered where it
lands or refused there, so two workers can never bounce a request between them.

Never an answer from state that is not there (DESIGN.md, "Answering truthfully", rule 2): a
worker answers only for partitions it owns *and* has recovered (`layer.readiness`); a read
it cannot answer goes to the owner, and is refused with 503 + `Retry-After` when the owner
is unknown, not ready, or unreachable: never stale state, never a 500 because a peer left.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.errors import ApiError
from layer.app import app, settings
from layer.events import partition_for
from layer.upstream import (
    MAX_ERROR_CHARS,
    UpstreamError,
    UpstreamResponse,
    UpstreamStatusError,
)
from tables.faust_tables import freshness_table

__all__ = [
    "ROUTED_HEADER",
    "forward_to_owner",
    "not_ready",
    "owner_url",
    "post_to_owner",
    "read_route",
]

ROUTED_HEADER = "X-Layer-Routed"
#: Headers a forwarded read keeps: the credential (the owner authenticates again). Nothing
#: else of the client's request crosses to another worker; compression is negotiated here.
_FORWARDED_HEADERS = ("Authorization", "Accept")
#: Headers of the owner's answer passed back to the client.
_RETURNED_HEADERS = ("Content-Type", "Retry-After")

#: What a read of a partition nobody can answer yet says (a rebalance or recovery takes seconds).
NOT_READY_RETRY_AFTER_S = 1


def not_ready(what: str, why: str) -> ApiError:
    """503 + Retry-After: the state to answer from is not there (yet)."""
    return ApiError(
        503,
        f"{what} is not available right now ({why}); retry shortly",
        {"Retry-After": str(NOT_READY_RETRY_AFTER_S)},
    )


def owner_url(namespace: str) -> str | None:
    """Base URL of the worker owning `namespace`'s partition; None if it is this one or unknown.

    Reads the assignor's table map directly: the partition comes from our own partitioner
    (Faust's `key_store` asks the producer, which may not have the topic's metadata yet).
    """
    topic = freshness_table.changelog_topic.get_topic_name()
    partition = partition_for(namespace, settings.topic_partitions)
    for url, topics in app.router.table_metadata(freshness_table.name).items():
        if partition in topics.get(topic, ()):
            owner = str(url).rstrip("/")
            return None if owner == settings.web_url.rstrip("/") else owner
    return None


async def forward_to_owner(request: web.Request, owner: str) -> web.Response:
    """Replay this GET on the owner and hand its answer back unchanged."""
    headers = {
        name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers
    }
    headers[ROUTED_HEADER] = "1"
    try:
        response = await app.services.peers.fetch(
            "GET", f"{owner}{request.rel_url}", headers=headers
        )
    except UpstreamError as exc:
        # The owner is gone or restarting: the partition has no ready answerer for now.
        raise not_ready(request.path, _unreachable(owner, exc)) from None
    return web.Response(
        status=response.status_code,
        body=response.content,
        headers={k: response.headers[k] for k in _RETURNED_HEADERS if k in response.headers},
    )


def read_route(request: web.Request, namespace: str) -> str | None:
    """Where a read of `namespace` is answered: None for here, or the owner to forward to.

    Here only if this worker owns the namespace's partition and has recovered it; otherwise
    the owner (which checks its own readiness), unless this read was forwarded already or
    the owner is unknown or this worker: then 503 (`not_ready`), never stale state.
    """
    if app.services.readiness.answers(namespace):
        return None
    if ROUTED_HEADER in request.headers:
        raise not_ready(f"freshness of {namespace}", "its partition is recovering or moving")
    owner = owner_url(namespace)
    if owner is None:
        raise not_ready(f"freshness of {namespace}", "its partition has no ready owner yet")
    return owner


async def post_to_owner(owner: str, path: str, body: Any, authorization: str) -> Any:
    """POST `body` to `path` on the owner with the caller's credential; its JSON answer.

    The owner gone or not ready is a 503 (`not_ready`); another error keeps its status."""
    headers = {
        "Authorization": authorization,
        ROUTED_HEADER: "1",
        "Content-Type": "application/json",
    }
    try:
        response = await app.services.peers.fetch(
            "POST", f"{owner}{path}", headers=headers, data=json.dumps(body).encode()
        )
    except UpstreamError as exc:
        raise not_ready(path, _unreachable(owner, exc)) from None
    if response.status_code == 503:
        raise ApiError(503, _error_message(response), {"Retry-After": str(NOT_READY_RETRY_AFTER_S)})
    if response.status_code >= 400:
        raise UpstreamStatusError(response.status_code, _error_message(response))
    return response.json()


def _unreachable(owner: str, exc: UpstreamError) -> str:
    """Why an owner did not answer (its connection failed, or it took too long)."""
    return f"worker {owner} did not answer: {exc}"


def _error_message(response: UpstreamResponse) -> str:
    try:
        message = str(response.json().get("error", ""))
    except (ValueError, AttributeError):
        message = response.reason_phrase
    return message[:MAX_ERROR_CHARS]
