"""Stable reads on the query path: which cut a query applies, and how it is applied.

`is_stable` decides whether to filter; `stable_as_of` is the cut. A query on an `updating`
namespace whose watermark is known sees only rows stamped at or before the watermark, plus
rows without a stamp (written before Layer, or straight to turbopuffer). A `stable` or
`unknown` namespace is queried as it is: there is nothing newer to hide, or no cut to
apply. If upstream throttles (429) an unfiltered query of a namespace with a known
watermark, it is sent once more with the cut: a filtered query is cheaper for upstream.
`plan_query` is that whole decision, pure; api/proxy.py only sends what it says.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from api.write_body import STAMP_ATTRIBUTE
from tables.freshness import Freshness, IndexStatus, ReadEvidence, answered_status

__all__ = ["QueryPlan", "plan_query", "stable_filter", "stable_read_cut", "with_stable_filter"]


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """What a query through Layer sends upstream, and what it does if upstream throttles it."""

    #: The body to send first: the client's own, or the same query with the cut.
    body: bytes | bytearray
    #: Whether `body` carries the cut.
    filtered: bool
    #: The body to send once more if upstream answers 429 to `body` (None: no retry).
    retry_body: bytes | None
    #: The watermark the answer reports (`X-Layer-Stable-As-Of`), None when unknown.
    stable_as_of: int | None
    #: The client's query, parsed (None: not a JSON object; upstream judges it).
    query: dict[str, Any] | None


def plan_query(
    raw: bytes | bytearray,
    state: Freshness | None,
    evidence: ReadEvidence,
    *,
    stable_reads: bool,
) -> QueryPlan:
    """The cut a query gets (`stable_read_cut`) and its retry on a 429."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    query = parsed if isinstance(parsed, dict) else None
    stable_as_of = state.stable_as_of if state is not None else None
    cut = stable_read_cut(state, evidence) if stable_reads else None
    if query is not None and cut is not None:
        body = json.dumps(with_stable_filter(query, cut)).encode()
        return QueryPlan(body, True, None, stable_as_of, query)
    retry = None
    if query is not None and stable_reads and stable_as_of is not None:
        retry = json.dumps(with_stable_filter(query, stable_as_of)).encode()
    return QueryPlan(raw, False, retry, stable_as_of, query)


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
