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

import orjson

from api.write_body import RESERVED_PREFIX, STAMP_ATTRIBUTE, requested_layer_attributes
from tables.freshness import Freshness, IndexStatus, ReadEvidence, answered_status

#: A query that names no `_layer_*` attribute (a substring test) asks to keep none.
_NAMES_LAYER = RESERVED_PREFIX.encode()

__all__ = ["QueryPlan", "plan_query", "stable_filter", "stable_read_cut", "with_stable_filter"]


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """What a query through Layer sends upstream, and what it does if upstream throttles it."""

    #: The body to send first: the client's own, or the same query with the cut.
    body: bytes | bytearray
    #: Whether `body` carries the cut.
    filtered: bool
    #: The cut to retry with if upstream answers 429 to `body` (None: no retry).
    retry_cut: int | None
    #: The watermark the answer reports (`X-Layer-Stable-As-Of`), None when unknown.
    stable_as_of: int | None
    #: The `_layer_*` attributes the query asks for by name: the answer keeps them.
    keep: frozenset[str]

    def retry_body(self) -> bytes | None:
        """`body` with the cut, to send once more after a 429; built only then, so a query
        that is not throttled is never parsed (None: no retry, or not a JSON object)."""
        return None if self.retry_cut is None else _cut_body(self.body, self.retry_cut)


def plan_query(
    raw: bytes | bytearray,
    state: Freshness | None,
    evidence: ReadEvidence,
    *,
    stable_reads: bool,
) -> QueryPlan:
    """The cut a query gets (`stable_read_cut`) and its retry on a 429.

    Only a query that is cut is parsed here: most go upstream as the client sent them.
    """
    stable_as_of = state.stable_as_of if state is not None else None
    keep = requested_layer_attributes(_json_object(raw)) if _NAMES_LAYER in raw else frozenset()
    cut = stable_read_cut(state, evidence) if stable_reads else None
    body = None if cut is None else _cut_body(raw, cut)
    if body is not None:
        return QueryPlan(body, True, None, stable_as_of, keep)
    retry_cut = stable_as_of if stable_reads and cut is None else None
    return QueryPlan(raw, False, retry_cut, stable_as_of, keep)


def _cut_body(raw: bytes | bytearray, cut_ms: int) -> bytes | None:
    """The query with the cut, or None if the body is not a JSON object (upstream judges it).

    By orjson (~5x the standard library on a 1,536-dim vector query, bench/query_plan.py);
    what it refuses (an integer beyond 64 bits, NaN) by the standard library, both ways, so
    the query upstream gets says what the client's did.
    """
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        query = _json_object(raw)
        return None if query is None else json.dumps(with_stable_filter(query, cut_ms)).encode()
    return orjson.dumps(with_stable_filter(parsed, cut_ms)) if isinstance(parsed, dict) else None


def _json_object(raw: bytes | bytearray) -> dict[str, Any] | None:
    """The body parsed, if it is a JSON object."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


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
