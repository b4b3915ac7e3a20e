"""Which worker answers a namespace read: this one, from its replica, or the owner.

Decision: every worker keeps a read replica of the tables (Faust standby partitions,
`LAYER_TABLE_STANDBY_REPLICAS` = workers - 1), so a read is answered locally, without a
network hop, and the listing, whose rows span every partition, needs no fan-out to other
workers. The replica trails the owner by the changelog's consume lag (milliseconds). A
worker that holds neither the active nor a standby copy of a namespace's partition (fewer
replicas than workers, or mid-rebalance) forwards the read to the owner instead, which Faust's
router finds by hashing the changelog key bytes (plain UTF-8, the same bytes as the source
topics', NOTES-kafka.md §4). A forwarded request carries `X-Layer-Routed` and is always
answered where it lands, so two workers can never bounce a request between them.
"""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import web
from faust.types import TP

from layer.app import app, settings
from layer.events import partition_for
from layer.upstream import MAX_ERROR_CHARS, UpstreamStatusError, UpstreamUnavailable
from tables.faust_tables import freshness_table

__all__ = [
    "ROUTED_HEADER",
    "close_peer_client",
    "forward_to_owner",
    "get_from_owner",
    "holds_namespace",
    "must_forward",
    "owner_url",
]

ROUTED_HEADER = "X-Layer-Routed"
#: Headers a forwarded read keeps: the credential (the owner authenticates again). Nothing
#: else of the client's request crosses to another worker; compression is negotiated here.
_FORWARDED_HEADERS = ("Authorization", "Accept")
#: Headers of the owner's answer passed back to the client.
_RETURNED_HEADERS = ("Content-Type", "Retry-After")

_peer_client = httpx.AsyncClient(timeout=httpx.Timeout(settings.upstream_timeout_ms / 1000))


def holds_namespace(namespace: str) -> bool:
    """True if this worker has the namespace's partition, as active or as a standby replica."""
    assignor = app.assignor
    actives, standbys = assignor.assigned_actives(), assignor.assigned_standbys()
    if not actives and not standbys:
        return True  # not part of a group (yet): nobody else to ask
    partition = partition_for(namespace, settings.topic_partitions)
    tp = TP(freshness_table.changelog_topic.get_topic_name(), partition)
    return tp in actives or tp in standbys


def owner_url(namespace: str) -> str | None:
    """Base URL of the worker owning `namespace`'s partition; None if it is this one or unknown."""
    try:
        url = str(app.router.key_store(freshness_table.name, namespace)).rstrip("/")
    except KeyError:
        return None
    return None if url == settings.web_url.rstrip("/") else url


async def forward_to_owner(request: web.Request, owner: str) -> web.Response:
    """Replay this GET on the owner and hand its answer back unchanged."""
    headers = {name: request.headers[name] for name in _FORWARDED_HEADERS if name in request.headers}
    headers[ROUTED_HEADER] = "1"
    response = await _peer_client.get(f"{owner}{request.rel_url}", headers=headers)
    return web.Response(
        status=response.status_code,
        body=response.content,
        headers={k: response.headers[k] for k in _RETURNED_HEADERS if k in response.headers},
    )


def must_forward(request: web.Request, namespace: str) -> str | None:
    """The owner to forward this read to, or None to answer it here."""
    if ROUTED_HEADER in request.headers or holds_namespace(namespace):
        return None
    return owner_url(namespace)


async def close_peer_client() -> None:
    await _peer_client.aclose()


async def get_from_owner(owner: str, path: str, authorization: str) -> Any:
    """GET `path` on the owner with the caller's credential; a JSON body or an UpstreamError."""
    headers = {"Authorization": authorization, ROUTED_HEADER: "1"}
    try:
        response = await _peer_client.get(f"{owner}{path}", headers=headers)
    except httpx.TransportError as exc:
        raise UpstreamUnavailable(f"worker {owner} unreachable ({type(exc).__name__})") from None
    if response.status_code >= 400:
        try:
            message = str(response.json().get("error", ""))
        except ValueError:
            message = response.reason_phrase
        raise UpstreamStatusError(response.status_code, message[:MAX_ERROR_CHARS])
    return response.json()
