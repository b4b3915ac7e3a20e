"""`GET /v2/namespaces/{namespace}/metadata`: upstream's metadata plus the `layer` object.

Response: every field upstream sent, verbatim (unknown ones too), and `layer`:
`stable_as_of` (epoch ms of the watcher's watermark; null before the namespace was ever
observed stable), `is_stable` (false on cold start), `status`, `last_write_ms`,
`last_poll_ms` (null: not seen yet) and `cache_state`. Upstream errors keep their status
(404 stays 404). The read registers the namespace with the watcher (an event). `layer` is
null when the caller's key sees another organisation's namespace of this name (one Layer
deployment serves one organisation: api/access.py).
"""

from __future__ import annotations

import json
from typing import Any, cast

from aiohttp import web as aiohttp_web
from faust.web.drivers.aiohttp import Web as FaustAiohttpWeb

from api.auth import Credential, credential_of
from api.http import json_response
from api.models import LayerBlock
from api.replica import forward_to_owner, read_route
from api.shapes import layer_block, metadata_body, with_evidence
from layer.app import app, settings
from layer.clock import now_ms
from layer.events import Registration
from layer.upstream import UpstreamBadResponse, parse_metadata, validate_namespace
from tables.faust_tables import freshness_table
from tables.freshness import ReadEvidence, cache_temperature

__all__ = [
    "METADATA_PATH",
    "forward_with_evidence",
    "local_block",
    "namespace_metadata",
    "observe_namespace",
    "read_evidence",
]


METADATA_PATH = "/v2/namespaces/{namespace}/metadata"


def read_evidence(namespace: str, *, upstream_up_to_date: bool | None = None) -> ReadEvidence:
    """What this worker knows of `namespace` beyond the owner's table: its own notifications
    not yet in Kafka, and the upstream answer fetched for this request, if any."""
    notifications = app.services.notifications
    return ReadEvidence(
        upstream_up_to_date=upstream_up_to_date,
        write_pending=notifications.has_pending(namespace),
        write_unconfirmed=notifications.unconfirmed(namespace),
    )


def local_block(namespace: str, *, upstream_up_to_date: bool | None = None) -> LayerBlock:
    """The `layer` object from this worker's table (the owner's state) and this read's evidence."""
    state = freshness_table.get(namespace)
    temperature = cache_temperature(state, now_ms=now_ms(), window_ms=settings.cache_warm_window_ms)
    evidence = read_evidence(namespace, upstream_up_to_date=upstream_up_to_date)
    return layer_block(state, temperature, evidence)


async def observe_namespace(
    namespace: str, credential: Credential, *, registrations: list[Registration] | None = None
) -> tuple[dict[str, Any], LayerBlock | None]:
    """Fetch upstream metadata with the caller's key, tell the watcher, and pair it with `layer`.

    The watcher is told at once, or through `registrations` (a listing page's batch).

    The answer fetched here is evidence for this very answer: `updating` upstream means not
    stable here, whatever the table says (the watcher hears of it as an event). A caller
    whose key sees another organisation's namespace of this name gets upstream's answer and
    no `layer` (None), and its answer is not the watcher's business (api/access.py).
    """
    services = app.services
    started_at = now_ms()
    body, _ = await services.upstream.get_json(
        f"/v2/namespaces/{namespace}/metadata", api_key=credential.upstream_key
    )
    caller_created_at = body.get("created_at") if isinstance(body, dict) else None
    if not await services.access.sees_watched(
        credential, namespace, caller_created_at if isinstance(caller_created_at, str) else None
    ):
        return body, None
    try:
        observation = parse_metadata(body)
    except UpstreamBadResponse:
        observation = None
    services.read_events.register_read(
        namespace, freshness_table.get(namespace), observation, started_at, batch=registrations
    )
    up_to_date = observation is not None and observation.index_status == "up-to-date"
    return body, local_block(namespace, upstream_up_to_date=up_to_date)


async def forward_with_evidence(
    request: aiohttp_web.Request, namespace: str, owner: str
) -> aiohttp_web.Response:
    """The owner's answer, with this worker's pending notifications applied to its `layer`."""
    response = await forward_to_owner(request, owner)
    evidence = read_evidence(namespace)
    if response.status != 200 or evidence == ReadEvidence():
        return response
    body = json.loads(response.body)  # type: ignore[arg-type]
    if body.get("layer") is None:
        return response  # another organisation's namespace: no Layer data to amend
    body["layer"] = with_evidence(LayerBlock.model_validate(body["layer"]), evidence).model_dump()
    return json_response(body)


async def namespace_metadata(request: aiohttp_web.Request) -> aiohttp_web.Response:
    """Upstream metadata proxied verbatim (upstream 404 stays 404), enriched with `layer`.

    A plain aiohttp handler (for GET and HEAD, as Faust registers a view with a `get`), not
    a Faust view: the hottest read does without Faust's view dispatch and sensors. Added
    where `@app.page` would add it (on import), so the router tries it as early as before."""
    namespace = validate_namespace(request.match_info["namespace"])
    if (owner := read_route(request, namespace)) is not None:
        return await forward_with_evidence(request, namespace, owner)
    body, block = await observe_namespace(namespace, credential_of(request))
    return json_response(metadata_body(body, block))


cast(FaustAiohttpWeb, app.web).web_app.router.add_get(METADATA_PATH, namespace_metadata)
