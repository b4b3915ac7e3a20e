"""`GET /v2/namespaces/{namespace}/snapshots`: the namespace's stable points, newest first.

`?limit=` (1-1000, default 100) and `?before=<ms>` page through the history (`next_before`
in the answer is the next page's `before`); `?as_of=<ms>` answers the one snapshot in
force at that moment (404 if the history has none that old).
"""

from __future__ import annotations

from aiohttp import web as aiohttp_web
from faust import web

from api.auth import credential_of
from api.errors import ApiError
from api.http import model_response, query_int
from api.replica import forward_to_owner, read_route
from api.shapes import snapshot_body, snapshot_page
from layer.app import app
from layer.upstream import validate_namespace
from tables.faust_tables import snapshots_table
from tables.snapshots import snapshot_as_of

__all__ = ["NamespaceSnapshots"]

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_EPOCH_MS = 2**53


@app.page("/v2/namespaces/{namespace}/snapshots")
class NamespaceSnapshots(web.View):
    """Snapshot history from the changelog-backed snapshots table."""

    async def get(self, request: aiohttp_web.Request, namespace: str) -> aiohttp_web.Response:
        validate_namespace(namespace)
        limit = query_int(request, "limit", default=DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE)
        before = query_int(request, "before", default=None, minimum=0, maximum=MAX_EPOCH_MS)
        as_of = query_int(request, "as_of", default=None, minimum=0, maximum=MAX_EPOCH_MS)
        # Served from Layer's own table: upstream must accept the caller's key for it.
        await app.services.access.require(credential_of(request), namespace)
        if (owner := read_route(request, namespace)) is not None:
            return await forward_to_owner(request, owner)
        history = snapshots_table.get(namespace)
        if as_of is not None:
            snapshot = snapshot_as_of(history, as_of)
            if snapshot is None:
                raise ApiError(404, f"no snapshot of {namespace} at or before {as_of}")
            return model_response(snapshot_body(snapshot))
        assert limit is not None
        return model_response(snapshot_page(namespace, history, limit=limit, before=before))
