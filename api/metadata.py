"""`GET /v2/namespaces/{namespace}/metadata`: upstream's metadata plus the `layer` object.

Response: every field upstream sent, verbatim (unknown ones too), and `layer`:
`stable_as_of` (epoch ms of the watcher's watermark; null before the namespace was ever
observed stable), `is_stable` (false on cold start), `status`, `last_write_ms`,
`last_poll_ms` (null: not seen yet) and `cache_state`. Upstream errors keep their status
(404 stays 404). The read registers the namespace with the watcher (an event).
"""

from __future__ import annotations

from typing import Any

from faust import web

from api.auth import Credential, credential_of
from api.http import model_response
from api.models import LayerBlock
from api.notifications import notification_buffer
from api.replica import forward_to_owner, read_route
from api.shapes import layer_block, metadata_body
from api.watcher_events import register_read
from layer.app import app, settings
from layer.clock import now_ms
from layer.services import upstream
from layer.upstream import UpstreamBadResponse, parse_metadata, validate_namespace
from tables.faust_tables import freshness_table
from tables.freshness import cache_temperature

__all__ = ["NamespaceMetadata", "local_block", "observe_namespace"]


def local_block(namespace: str) -> LayerBlock:
    """The `layer` object from this worker's table (the owner's state).

    A namespace whose proxied-write notification could not even be buffered is reported as
    Layer has never seen it (`unknown`, not stable): a write is missing from its state.
    """
    state = None if notification_buffer.unconfirmed(namespace) else freshness_table.get(namespace)
    temperature = cache_temperature(state, now_ms=now_ms(), window_ms=settings.cache_warm_window_ms)
    return layer_block(state, temperature)


async def observe_namespace(
    namespace: str, credential: Credential
) -> tuple[dict[str, Any], LayerBlock]:
    """Fetch upstream metadata with the caller's key, tell the watcher, and pair it with `layer`."""
    started_at = now_ms()
    body, _ = await upstream.get_json(
        f"/v2/namespaces/{namespace}/metadata", api_key=credential.upstream_key
    )
    try:
        observation = parse_metadata(body)
    except UpstreamBadResponse:
        observation = None
    register_read(namespace, freshness_table.get(namespace), body, observation, started_at)
    return body, local_block(namespace)


@app.page("/v2/namespaces/{namespace}/metadata")
class NamespaceMetadata(web.View):
    """Upstream metadata proxied verbatim (upstream 404 stays 404), enriched with `layer`."""

    async def get(self, request: web.Request, namespace: str) -> web.Response:
        validate_namespace(namespace)
        if (owner := read_route(request, namespace)) is not None:
            return await forward_to_owner(request, owner)
        body, block = await observe_namespace(namespace, credential_of(request))
        return model_response(metadata_body(body, block))
