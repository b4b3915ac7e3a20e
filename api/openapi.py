"""`GET /openapi.json`: an OpenAPI 3.1 document of Layer's own routes — the contract.

Bodies are the pydantic models the handlers build (api/models.py), so the document
describes exactly what is sent; parameters are declared with the bounds and patterns the
handlers enforce (the same constants), and every status a route can answer is listed with
turbopuffer's error body. tests/integration/test_openapi_contract.py runs schemathesis,
all its checks, against a live worker with this document.

Conventions every route shares, and where they come from:
- `Authorization: Bearer <key>` on every route but the probes (api/auth.py): 401 without
  one, or with a key upstream (or `LAYER_API_KEYS`) refuses;
- 429 + `Retry-After` from the per-key rate limit (api/middleware.py) or passed through
  from upstream;
- 503 + `Retry-After` while the worker hands over at shutdown (api/shutdown.py) and, on
  the routes answered from Layer's tables, while the namespace's partition has no ready
  owner (api/replica.py, `not_ready`);
- routes that call upstream keep upstream's error status (401, 403, 404, 429, 5xx) and
  answer 502 when it is unreachable or answers nonsense, 504 when it is too slow;
- a method a route does not serve is a 405 with `Allow` (api/errors.py).
Not listed: routes passed through to turbopuffer (its own specification describes them),
and this document itself (it takes any bearer token in pass-through mode: it holds no
tenant data).
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web as aiohttp_web
from faust import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.http import model_response
from api.listing import (
    CURSOR_PATTERN,
    DEFAULT_PAGE_SIZE,
    MAX_CURSOR_CHARS,
    MAX_PAGE_SIZE,
    PREFIX_PATTERN,
)
from api.models import (
    ErrorBody,
    MetadataResponse,
    NamespaceListing,
    OperationAccepted,
    OperationFinished,
    OperationRunning,
    ProbeBody,
    SnapshotBody,
    SnapshotPage,
    WarmAccepted,
)
from api.snapshots import DEFAULT_PAGE, MAX_EPOCH_MS, MAX_PAGE
from layer.app import app
from layer.events import NAMESPACE_PATTERN
from layer.readiness import PartitionProgress, ReplaySummary

__all__ = ["EXAMPLE_NAMESPACE", "NotReadyBody", "OpenApi", "ReadyBody", "openapi_document"]

_REF = "#/components/schemas/{model}"


class ReadyBody(BaseModel):
    """`/readyz` 200 (api/health.py): every partition this worker holds is recovered."""

    status: Literal["ready"]
    ready_partitions: list[int]


class NotReadyBody(BaseModel):
    """`/readyz` 503 (api/health.py): turbopuffer's error shape, plus how far recovery got."""

    status: Literal["error"]
    error: str
    ready_partitions: list[int]
    recovering: list[PartitionProgress]
    replay: ReplaySummary


_MODELS: list[type[BaseModel]] = [
    ErrorBody, MetadataResponse, NamespaceListing, NotReadyBody, OperationAccepted,
    OperationFinished, OperationRunning, ProbeBody, ReadyBody, SnapshotBody, SnapshotPage,
    WarmAccepted,
]  # fmt: skip


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(
    model: type[BaseModel] | dict[str, Any],
    description: str,
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    schema = _ref(model) if isinstance(model, type) else model
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _param(
    name: str, where: str, description: str, schema: dict[str, Any], *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


#: Present on every 503 Layer itself answers; on a 429 or 503 passed through from upstream
#: only if upstream sent one (hence not `required`).
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

#: Why each error status is answered, by status.
_WHY = {
    400: "A parameter is invalid (wrong type, out of bounds, not matching its pattern).",
    401: "No `Authorization: Bearer <key>`, or a key that is refused.",
    403: "The key may not do this.",
    404: "Not found.",
    429: "Rate limited: Layer's per-key limit, or upstream's (passed through).",
    502: "Upstream is unreachable or answered something unexpected.",
    503: "Not available right now: the worker is shutting down, or the namespace's partition "
    "has no ready owner yet. Retry after `Retry-After`.",
    504: "Upstream did not answer in time.",
    "5XX": "Upstream's own server error, passed through.",
}

#: Every authenticated route: the key check, the rate limit, the shutdown hand-over.
_ANY_ROUTE = (401, 429, 503)
#: Routes that call upstream with the caller's key (its verdicts and failures).
_UPSTREAM = (401, 403, 404, 429, 502, 503, 504, "5XX")


def _errors(*statuses: int | str, why: dict[int | str, str] | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status in sorted(set(statuses), key=str):
        description = (why or {}).get(status, _WHY[status])
        headers = _RETRY_AFTER if status in (429, 503) else None
        responses[str(status)] = _json(ErrorBody, description, headers)
    return responses


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Any],
    parameters: list[dict[str, Any]] | None = None,
    *,
    description: str | None = None,
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": responses,
    }
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if public:
        operation["security"] = []
    return operation


#: The name the document's examples use (the contract test creates it upstream).
EXAMPLE_NAMESPACE = "products"
_NAMESPACE = {
    **_param(
        "namespace",
        "path",
        "turbopuffer namespace name",
        {"type": "string", "minLength": 1, "maxLength": 128, "pattern": NAMESPACE_PATTERN},
    ),
    "example": EXAMPLE_NAMESPACE,
}
_EPOCH_MS = {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MS}


def _paths() -> dict[str, Any]:
    accepted = {
        "description": "Running in the background (`Prefer: respond-async`): poll `Location`.",
        "headers": {
            "Location": {
                "required": True,
                "description": "`/v2/operations/{operation_id}`, on this origin.",
                "schema": {"type": "string"},
            },
            "Preference-Applied": {"schema": {"type": "string", "const": "respond-async"}},
        },
        "content": {"application/json": {"schema": _ref(OperationAccepted)}},
    }
    return {
        "/v2/namespaces": {
            "get": _operation(
                "listNamespaces",
                "Enriched namespace listing",
                {
                    "200": _json(NamespaceListing, "One page of namespaces"),
                    "202": accepted,
                    **_errors(400, *_UPSTREAM),
                },
                [
                    _param(
                        "prefix",
                        "query",
                        "Only names starting with this",
                        {"type": "string", "maxLength": 128, "pattern": PREFIX_PATTERN},
                    ),
                    _param(
                        "cursor",
                        "query",
                        "`next_cursor` of the previous page",
                        {
                            "type": "string",
                            "maxLength": MAX_CURSOR_CHARS,
                            "pattern": CURSOR_PATTERN,
                        },
                    ),
                    _param(
                        "page_size",
                        "query",
                        "Rows per page",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_PAGE_SIZE,
                            "default": DEFAULT_PAGE_SIZE,
                        },
                    ),
                    {
                        **_param(
                            "Prefer",
                            "header",
                            "`respond-async`: answer 202 and run in the background (unless "
                            "the page is cached); other preferences are ignored",
                            {"type": "string"},
                        ),
                        "example": "respond-async",
                    },
                ],
                description="A page that has a row whose partition has no ready owner is a "
                "503 as a whole; a row whose metadata call failed keeps its place with "
                "`metadata_error`.",
            )
        },
        "/v2/namespaces/{namespace}/metadata": {
            "get": _operation(
                "getNamespaceMetadata",
                "Upstream metadata, verbatim, plus the `layer` object",
                {"200": _json(MetadataResponse, "Namespace metadata"), **_errors(400, *_UPSTREAM)},
                [_NAMESPACE],
            )
        },
        "/v2/namespaces/{namespace}/snapshots": {
            "get": _operation(
                "listNamespaceSnapshots",
                "Snapshot history, newest first (or the one in force at `as_of`)",
                {
                    "200": _json({"oneOf": [_ref(SnapshotPage), _ref(SnapshotBody)]}, "Snapshots"),
                    **_errors(
                        400,
                        *_UPSTREAM,
                        why={
                            401: "No key, or a key upstream refuses for this namespace.",
                            403: "Upstream refuses this key for this namespace.",
                            404: "Upstream knows no such namespace for this key, or (with "
                            "`as_of`) the history holds no snapshot that old.",
                        },
                    ),
                },
                [
                    _NAMESPACE,
                    _param(
                        "limit",
                        "query",
                        "Snapshots per page",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_PAGE,
                            "default": DEFAULT_PAGE,
                        },
                    ),
                    _param(
                        "before", "query", "Only snapshots older than this (epoch ms)", _EPOCH_MS
                    ),
                    _param(
                        "as_of", "query", "Answer the snapshot in force at this time", _EPOCH_MS
                    ),
                ],
                description="Served from Layer's own table, to a key upstream accepts for the "
                "namespace (one metadata call, verdicts cached briefly).",
            )  # fmt: skip
        },
        "/v2/namespaces/{namespace}/warm": {
            "post": _operation(
                "warmNamespace",
                "Ask upstream to warm the namespace's cache",
                {"202": _json(WarmAccepted, "Hint accepted"), **_errors(400, *_UPSTREAM)},
                [_NAMESPACE],
            )
        },
        "/v2/operations/{operation_id}": {
            "get": _operation(
                "getOperation",
                "Poll an asynchronous operation",
                {
                    "200": _json(
                        {"oneOf": [_ref(OperationRunning), _ref(OperationFinished)]}, "State"
                    ),
                    **_errors(
                        *_ANY_ROUTE,
                        404,
                        why={404: "Unknown, expired, or started with another key."},
                    ),
                },
                [_param("operation_id", "path", "From the `Location` header", {"type": "string"})],
            )
        },
        "/v2/stability/events": {
            "get": _operation(
                "followStabilityEvents",
                "Stability changes as server-sent events",
                {
                    "200": {
                        "description": "`text/event-stream`, open until the client leaves or "
                        'the worker ends it: first `event: ready` (`{"version": 1, '
                        '"resume": "none|exact|partial|reset", "partitions": N}`), '
                        "then one event per stability change, `data:` the `layer.stability` "
                        "shape of docs/events.md and `id:` its position in the topic; comment "
                        "lines as heartbeats; a stream Layer ends gets a last `event: error` "
                        "with an `ErrorBody` (too slow, shutting down).",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(
                        400,
                        *_ANY_ROUTE,
                        403,
                        why={
                            403: "Not a key of the watched organisation for certain: in "
                            "pass-through mode only `TURBOPUFFER_API_KEY` reads the stream.",
                            429: "Layer's per-key rate limit, or this key already holds "
                            "`LAYER_SSE_MAX_CONNECTIONS_PER_KEY` streams on this worker.",
                            503: "The worker is shutting down, or cannot read the stability "
                            "topic from Kafka right now.",
                        },
                    ),
                },
                [
                    _param(
                        "prefix",
                        "query",
                        "Only namespaces whose name starts with this",
                        {"type": "string", "maxLength": 128, "pattern": PREFIX_PATTERN},
                    ),
                    _param(
                        "Last-Event-ID",
                        "header",
                        "The `id` of the last event received: the stream resumes right after "
                        "it (what the topic still holds)",
                        {"type": "string"},
                    ),
                ],
                description="Any worker serves every change. With `LAYER_API_KEYS` any of "
                "those keys; in pass-through mode the key Layer polls with.",
            )
        },
        "/metrics": {
            "get": _operation(
                "getMetrics",
                "Worker counters (Prometheus text format)",
                {
                    "200": {
                        "description": "Counters",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(
                        *_ANY_ROUTE,
                        403,
                        why={403: "Not the operator's key."},
                    ),
                },
                description="Takes the operator's key: in pass-through mode only the key the "
                "watcher polls with (`TURBOPUFFER_API_KEY`), any other key is a 403; with "
                "`LAYER_API_KEYS`, any of those.",
            )
        },
        "/healthz": {
            "get": _operation(
                "healthz", "Liveness", {"200": _json(ProbeBody, "Alive")}, public=True
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "Readiness: partitions held, tables recovered, not shutting down",
                {
                    "200": _json(ReadyBody, "Ready"),
                    "503": _json(NotReadyBody, "Not ready: why, and how far recovery got"),
                },
                public=True,
            )
        },
    }


def openapi_document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "serialization") for model in _MODELS], ref_template=_REF
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Layer",
            "version": "1",
            "description": "Freshness signals for turbopuffer. Every other turbopuffer route "
            "is passed through unchanged. Errors are turbopuffer's shape (`ErrorBody`); a "
            "method a route does not serve is a 405 with `Allow`.",
        },
        "paths": _paths(),
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


class _Document(BaseModel):
    model_config = {"extra": "allow"}


@app.page("/openapi.json")
class OpenApi(web.View):
    """This document."""

    async def get(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
        return model_response(_Document(**openapi_document()))
