"""Pure response shaping: one function per body, shared by every view that shows it.

`layer_block` is the only place a namespace's freshness signals are read off its record,
so the metadata route and the listing can never disagree about "since when" a namespace is
stable (they both show the watcher's watermark, never the time of this request).
"""

from __future__ import annotations

from typing import Any

from api.models import (
    CacheState,
    LayerBlock,
    NamespaceRow,
    SnapshotBody,
    SnapshotPage,
)
from api.write_body import schema_without_layer
from layer.upstream import UpstreamBadResponse
from tables.freshness import (
    CacheTemperature,
    Freshness,
    IndexStatus,
    ReadEvidence,
    answered_status,
)
from tables.snapshots import Snapshot, SnapshotHistory

__all__ = [
    "layer_block",
    "listing_row",
    "metadata_body",
    "snapshot_body",
    "snapshot_page",
    "state_row",
    "with_evidence",
]

#: A read that fetched nothing upstream and holds no pending write: the table's word.
NO_EVIDENCE = ReadEvidence()


def layer_block(
    state: Freshness | None,
    temperature: CacheTemperature,
    evidence: ReadEvidence = NO_EVIDENCE,
) -> LayerBlock:
    """The `layer` object of a namespace (`None`: Layer has not seen it yet, a cold start),
    as this read may state it (`answered_status`: the read's own evidence can only take
    stability away)."""
    if state is None:
        return LayerBlock(
            stable_as_of=None,
            is_stable=False,
            status=IndexStatus.UNKNOWN.value,
            last_write_ms=None,
            last_poll_ms=None,
            cache_state=temperature,
        )
    status = answered_status(state.status, evidence)
    return LayerBlock(
        stable_as_of=state.stable_as_of,
        is_stable=status == IndexStatus.STABLE.value,
        status=status,  # type: ignore[arg-type]
        last_write_ms=state.last_write_ms,
        last_poll_ms=state.last_poll_ms,
        cache_state=temperature,
    )


def with_evidence(block: LayerBlock, evidence: ReadEvidence) -> LayerBlock:
    """Another worker's `layer` object, with what this worker knows applied (its pending
    notifications: the owner cannot have seen them)."""
    status = answered_status(block.status, evidence)
    if status == block.status:
        return block
    return block.model_copy(
        update={"status": status, "is_stable": status == IndexStatus.STABLE.value}
    )


def metadata_body(upstream_body: Any, block: LayerBlock | None) -> dict[str, Any]:
    """Upstream's metadata verbatim (unknown fields too) plus the `layer` object; Layer's own
    attributes (`_layer_*`, api/write_body.py) are left out of `schema`. The shape is
    `MetadataResponse`'s (the OpenAPI document's), built as a plain dict: upstream's body is
    not validated again on every read."""
    if not isinstance(upstream_body, dict):
        raise UpstreamBadResponse("metadata that is not a JSON object")
    body = {**upstream_body, "layer": None if block is None else block.model_dump()}
    if "schema" in body:
        body["schema"] = schema_without_layer(body["schema"])
    return body


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def listing_row(
    name: str,
    upstream_body: dict[str, Any] | None,
    block: LayerBlock | None,
    *,
    warm_inflight: bool,
    metadata_error: str | None = None,
) -> NamespaceRow:
    """One listing row. Counts come from this request's upstream metadata (None when that
    call failed); freshness is the same `layer` block `/metadata` shows (none: another
    organisation's namespace, so Layer's fields are null).
    `shadow` and `labels` pass through from upstream metadata when it has them."""
    body = upstream_body or {}
    labels = body.get("labels")
    return NamespaceRow(
        name=name,
        row_count=_int_or_none(body.get("approx_row_count")),
        size_bytes=_int_or_none(body.get("approx_logical_bytes")),
        stable_as_of_ms=block.stable_as_of if block else None,
        is_stable=block.is_stable if block else None,
        cache_state=(
            CacheState(state=block.cache_state, warm_inflight=warm_inflight) if block else None
        ),
        last_write_ms=block.last_write_ms if block else None,
        index=body.get("index") if isinstance(body.get("index"), dict) else None,
        updated_at=body.get("updated_at") if isinstance(body.get("updated_at"), str) else None,
        shadow=body.get("shadow") is True,
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        metadata_error=metadata_error,
    )


def state_row(
    name: str, state: Freshness, block: LayerBlock, *, warm_inflight: bool
) -> NamespaceRow:
    """A listing row from Layer's state alone: counts, size and `index` as of the latest
    successful poll, freshness as `/metadata` shows it, and the last poll's error if the
    polls are failing (the row is then as old as the last success)."""
    observed: dict[str, Any] = {
        "approx_row_count": state.approx_row_count,
        "approx_logical_bytes": state.approx_logical_bytes,
        "index": state.index,
        "updated_at": state.updated_at,
    }
    error = state.last_error if state.consecutive_errors else None
    return listing_row(name, observed, block, warm_inflight=warm_inflight, metadata_error=error)


def snapshot_body(snapshot: Snapshot) -> SnapshotBody:
    return SnapshotBody(
        stable_as_of=snapshot.stable_as_of,
        approx_row_count=snapshot.approx_row_count,
        approx_logical_bytes=snapshot.approx_logical_bytes,
        updated_at=snapshot.updated_at,
    )


def snapshot_page(
    namespace: str, history: SnapshotHistory | None, *, limit: int, before: int | None
) -> SnapshotPage:
    """Snapshots newest first, those strictly older than `before` when given."""
    snapshots = list(history.snapshots) if history is not None else []
    if before is not None:
        snapshots = [s for s in snapshots if s.stable_as_of < before]
    page = snapshots[:limit]
    more = len(snapshots) > limit
    return SnapshotPage(
        namespace=namespace,
        snapshots=[snapshot_body(s) for s in page],
        next_before=page[-1].stable_as_of if more and page else None,
    )
