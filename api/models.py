"""The bodies of Layer's own routes, as pydantic models: handlers build them, and
`/openapi.json` is generated from the same classes, so the document cannot drift."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CacheState",
    "ErrorBody",
    "LayerBlock",
    "MetadataResponse",
    "NamespaceListing",
    "NamespaceRow",
    "OperationAccepted",
    "OperationError",
    "OperationFinished",
    "OperationRunning",
    "ProbeBody",
    "SnapshotBody",
    "SnapshotPage",
    "WarmAccepted",
]


class ErrorBody(BaseModel):
    """Every error, on every route (turbopuffer's shape)."""

    status: Literal["error"] = "error"
    error: str


class LayerBlock(BaseModel):
    """Layer's freshness signals for one namespace."""

    stable_as_of: int | None = Field(
        description="Epoch-ms watermark from the most recent stable poll; null on cold start "
        "before the watcher has observed the namespace stable."
    )
    is_stable: bool = Field(
        description="Whether the most recent poll observed index.status == 'up-to-date' with "
        "no write known after it; false on cold start."
    )
    status: Literal["unknown", "updating", "stable"]
    last_write_ms: int | None = Field(description="Latest write notification seen; null: none.")
    last_poll_ms: int | None = Field(description="Start of the latest poll; null: not polled yet.")
    cache_state: Literal["warm", "cold", "unknown"] = Field(
        description="`warm` within LAYER_CACHE_WARM_WINDOW_MS of a successful cache warm or "
        "proxied query, `cold` after, `unknown` if never seen."
    )


class MetadataResponse(BaseModel):
    """turbopuffer's namespace metadata, every field verbatim, plus `layer`."""

    model_config = ConfigDict(extra="allow")

    layer: LayerBlock | None = Field(
        description="Layer's freshness of the namespace; null when the caller's API key "
        "belongs to another organisation than the one this Layer deployment watches (its "
        "namespace of this name is another namespace)."
    )


class CacheState(BaseModel):
    state: Literal["warm", "cold", "unknown"]
    warm_inflight: bool


class NamespaceRow(BaseModel):
    """One namespace of the enriched listing."""

    name: str
    row_count: int | None
    size_bytes: int | None
    #: Layer's fields (this and the next three) are null on the row of another organisation's
    #: namespace (the caller's key is not of the watched organisation: api/access.py).
    stable_as_of_ms: int | None
    is_stable: bool | None
    cache_state: CacheState | None
    last_write_ms: int | None
    index: dict[str, Any] | None = Field(
        default=None,
        description="Upstream's `index` object (`status`, and `unindexed_bytes`/`unindexed_rows` "
        "while updating) as of this row's metadata: this request's call, or the latest poll "
        "when the row is served from Layer's state.",
    )
    updated_at: str | None = Field(
        default=None, description="Upstream's `updated_at`, as of the same metadata."
    )
    shadow: bool
    labels: dict[str, str]
    metadata_error: str | None = Field(
        default=None,
        description="Set (short, no upstream body) when this row's metadata call failed; the "
        "row stays so the list stays complete.",
    )


class RowsRequest(BaseModel):
    """Worker to worker: the listing rows of these namespaces (`/_layer/rows`)."""

    names: list[str] = Field(max_length=1000)


class RowsResponse(BaseModel):
    rows: list[NamespaceRow]


class NamespaceListing(BaseModel):
    namespaces: list[NamespaceRow]
    next_cursor: str | None = None


class SnapshotBody(BaseModel):
    """A stable point: the content observed when the index was caught up at `stable_as_of`."""

    stable_as_of: int
    approx_row_count: int | None
    approx_logical_bytes: int | None
    updated_at: str | None


class SnapshotPage(BaseModel):
    namespace: str
    snapshots: list[SnapshotBody]
    next_before: int | None = Field(
        default=None, description="Pass as `before` for the next (older) page; null: last page."
    )


class OperationAccepted(BaseModel):
    """Body of a 202 answer to `Prefer: respond-async`; poll the `Location` header."""

    token: str


class OperationRunning(BaseModel):
    status: Literal["running"] = "running"
    start_time: str


class OperationError(BaseModel):
    status_code: int
    detail: ErrorBody


class OperationFinished(BaseModel):
    status: Literal["finished"] = "finished"
    start_time: str
    finish_time: str
    result: dict[str, Any] = Field(
        description='`{"success": <body>}` or `{"error": {"status_code": …, "detail": …}}`.'
    )


class WarmAccepted(BaseModel):
    status: Literal["ACCEPTED"] = "ACCEPTED"
    message: str


class ProbeBody(BaseModel):
    status: Literal["ok", "ready"]
