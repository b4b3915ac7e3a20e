"""`GET /v2/namespaces/{namespace}/metadata`: upstream's metadata plus the `layer` object."""

from __future__ import annotations

from faust import web

from api.auth import credential_of
from api.shapes import metadata_body
from api.watcher_events import register_read
from layer.app import app
from layer.clock import now_ms
from layer.services import upstream
from layer.upstream import UpstreamBadResponse, parse_metadata, validate_namespace
from tables.faust_tables import freshness_table

__all__ = ["NamespaceMetadata"]


@app.page("/v2/namespaces/{namespace}/metadata")
class NamespaceMetadata(web.View):
    """Upstream metadata proxied verbatim (upstream 404 stays 404), enriched with `layer`."""

    async def get(self, request: web.Request, namespace: str) -> web.Response:
        validate_namespace(namespace)
        started_at = now_ms()
        body, _ = await upstream.get_json(
            f"/v2/namespaces/{namespace}/metadata", api_key=credential_of(request).upstream_key
        )
        state = freshness_table.get(namespace)
        try:
            observation = parse_metadata(body)
        except UpstreamBadResponse:
            observation = None
        await register_read(namespace, state, body, observation, started_at)
        return self.json(metadata_body(body, state))
