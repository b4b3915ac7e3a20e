"""`GET /openapi.json`: an OpenAPI 3.1 document of Layer's own routes.

Bodies are the pydantic models the handlers build (api/models.py), so the document
describes exactly what is sent. Routes passed through to turbopuffer are not listed:
turbopuffer's own specification describes them.
"""

from __future__ import annotations

from typing import Any

from faust import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.http import model_response
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
from layer.app import app

__all__ = ["OpenApi", "openapi_document"]

_REF = "#/components/schemas/{model}"
_ERRORS = (400, 401, 404, 429, 502, 504)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel] | dict[str, Any], description: str) -> dict[str, Any]:
    schema = _ref(model) if isinstance(model, type) else model
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


_NAMESPACE = _param(
    "namespace", "path", "turbopuffer namespace name",
    {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
)  # fmt: skip


def _operation(
    summary: str,
    ok: dict[str, dict[str, Any]],
    parameters: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    responses: dict[str, Any] = dict(ok)
    for status in _ERRORS if not public else ():
        responses[str(status)] = _json(ErrorBody, "turbopuffer's error shape")
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if public:
        operation["security"] = []
    return operation


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        ErrorBody, MetadataResponse, NamespaceListing, OperationAccepted, OperationFinished,
        OperationRunning, ProbeBody, SnapshotBody, SnapshotPage, WarmAccepted,
    ]  # fmt: skip
    _, definitions = models_json_schema(
        [(model, "serialization") for model in models], ref_template=_REF
    )
    ms = {"type": "integer", "minimum": 0}
    accepted = {
        "description": "Running in the background: poll the `Location` header.",
        "headers": {"Location": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": _ref(OperationAccepted)}},
    }
    paths = {
        "/v2/namespaces": {
            "get": _operation(
                "Enriched namespace listing",
                {"200": _json(NamespaceListing, "One page of namespaces"), "202": accepted},
                [
                    _param("prefix", "query", "Only names starting with this", {"type": "string"}),
                    _param(
                        "cursor", "query", "`next_cursor` of the previous page", {"type": "string"}
                    ),
                    _param(
                        "page_size",
                        "query",
                        "Rows per page",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    ),
                ],
            )  # fmt: skip
        },
        "/v2/namespaces/{namespace}/metadata": {
            "get": _operation(
                "Upstream metadata, verbatim, plus the `layer` object",
                {"200": _json(MetadataResponse, "Namespace metadata")},
                [_NAMESPACE],
            )
        },
        "/v2/namespaces/{namespace}/snapshots": {
            "get": _operation(
                "Snapshot history, newest first (or the one in force at `as_of`)",
                {"200": _json({"oneOf": [_ref(SnapshotPage), _ref(SnapshotBody)]}, "Snapshots")},
                [
                    _NAMESPACE,
                    _param(
                        "limit",
                        "query",
                        "Snapshots per page",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    ),
                    _param("before", "query", "Only snapshots older than this (epoch ms)", ms),
                    _param("as_of", "query", "Answer the snapshot in force at this time", ms),
                ],
            )  # fmt: skip
        },
        "/v2/namespaces/{namespace}/warm": {
            "post": _operation(
                "Ask upstream to warm the namespace's cache",
                {"202": _json(WarmAccepted, "Hint accepted")},
                [_NAMESPACE],
            )
        },
        "/v2/operations/{operation_id}": {
            "get": _operation(
                "Poll an asynchronous operation",
                {
                    "200": _json(
                        {"oneOf": [_ref(OperationRunning), _ref(OperationFinished)]}, "State"
                    )
                },
                [_param("operation_id", "path", "From the `Location` header", {"type": "string"})],
            )
        },
        "/healthz": {
            "get": _operation("Liveness", {"200": _json(ProbeBody, "Alive")}, public=True)
        },
        "/readyz": {
            "get": _operation(
                "Readiness: tables recovered, partitions held",
                {"200": _json(ProbeBody, "Ready"), "503": _json(ErrorBody, "Not ready")},
                public=True,
            )
        },
        "/metrics": {
            "get": {
                "summary": "Worker counters (Prometheus text format)",
                "responses": {
                    "200": {
                        "description": "Counters",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }  # fmt: skip
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Layer",
            "version": "1",
            "description": "Freshness signals for turbopuffer. Every other turbopuffer route "
            "is passed through unchanged.",
        },
        "paths": paths,
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

    async def get(self, request: web.Request) -> web.Response:
        return model_response(_Document(**openapi_document()))
