"""Stable reads on the query path: which cut a query applies, and how it is applied.

`is_stable` decides whether to filter; `stable_as_of` is the cut. A query on an `updating`
namespace whose watermark is known sees only rows stamped at or before the watermark, plus
rows without a stamp (written before Layer, or straight to turbopuffer). A `stable` or
`unknown` namespace is queried as it is: there is nothing newer to hide, or no cut to
apply.
"""

from __future__ import annotations

from typing import Any

from api.write_body import STAMP_ATTRIBUTE
from tables.freshness import Freshness, IndexStatus, ReadEvidence, answered_status

__all__ = ["stable_filter", "stable_read_cut", "with_stable_filter"]


def stable_read_cut(state: Freshness | None, evidence: ReadEvidence) -> int | None:
    """The `stable_as_of` a query must be cut at, or None to query unfiltered.

    The status is the one an answer would show (`answered_status`): a write this worker
    proxied whose notification is still on its way makes the query cut, too.
    """
    if state is None or answered_status(state.status, evidence) != IndexStatus.UPDATING.value:
        return None
    return state.stable_as_of


def stable_filter(cut_ms: int) -> list[Any]:
    """Rows stamped at or before the cut, and rows with no stamp at all."""
    return ["Or", [[STAMP_ATTRIBUTE, "Lte", cut_ms], [STAMP_ATTRIBUTE, "Eq", None]]]


def _filtered(query: dict[str, Any], cut_ms: int) -> dict[str, Any]:
    existing = query.get("filters")
    cut = stable_filter(cut_ms)
    return {**query, "filters": cut if existing is None else ["And", [existing, cut]]}


def with_stable_filter(body: dict[str, Any], cut_ms: int) -> dict[str, Any]:
    """The query (or each sub-query of a multi-query) ANDed with the stable filter."""
    queries = body.get("queries")
    if isinstance(queries, list):
        return {
            **body,
            "queries": [_filtered(q, cut_ms) if isinstance(q, dict) else q for q in queries],
        }
    return _filtered(body, cut_ms)
