"""Pure query evaluation: filters, ranking, projection and aggregation over in-memory documents.

A document is a plain dict with an `id` key, its attributes, and (for vector attributes) a
`list[float]`. Nothing here knows about HTTP or namespaces; the store hands in the documents
and the namespace's distance metric and vector attributes.

Semantics the emulator chooses where turbopuffer's docs are silent:
- Ranking is exact (ANN is computed as kNN), ties broken by ascending id.
- Ordering by an attribute puts documents missing it last, in both directions.
- Values of different JSON types never compare equal or ordered (`1` is not `true`, `"1"` is
  not `1`); datetimes are compared as the strings they were written as.
"""

from __future__ import annotations

import fnmatch
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from .vectors import VectorError, decode_vector, encode_vector_base64

__all__ = [
    "DEFAULT_TOP_K",
    "DistanceMetric",
    "Document",
    "QueryError",
    "distance",
    "execute_query",
    "matches",
    "rank",
]

Document = dict[str, object]
DistanceMetric = Literal["cosine_distance", "euclidean_squared"]
Ranked = tuple[Document, float | None]

#: Rows returned when a query gives neither `top_k` nor `limit` (turbopuffer's documented default).
DEFAULT_TOP_K = 10
#: The query fields the emulator evaluates; `consistency` is accepted and ignored because the
#: emulator is always strongly consistent.
_QUERY_FIELDS = frozenset(
    {
        "rank_by",
        "top_k",
        "limit",
        "offset",
        "filters",
        "include_attributes",
        "exclude_attributes",
        "distance_metric",
        "consistency",
        "vector_encoding",
        "aggregate_by",
        "group_by",
    }
)
_VECTOR_RANKERS = frozenset({"ANN", "kNN"})
_DIRECTIONS = frozenset({"asc", "desc"})


class QueryError(ValueError):
    """A malformed or unsupported query; the server answers 400 with this message."""


# --- filters -----------------------------------------------------------------------------


def matches(filters: object, doc: Mapping[str, object]) -> bool:
    """Whether `doc` satisfies a turbopuffer filter (`[attr, Op, value]`, And/Or/Not)."""
    if not isinstance(filters, list) or not filters:
        raise QueryError(f"a filter must be a non-empty array, got {json.dumps(filters)}")
    head = filters[0]
    if head in ("And", "Or") and len(filters) == 2 and isinstance(filters[1], list):
        results = (matches(sub, doc) for sub in filters[1])
        return all(results) if head == "And" else any(results)
    if head == "Not" and len(filters) == 2 and isinstance(filters[1], list):
        return not matches(filters[1], doc)
    if len(filters) == 3 and isinstance(head, str) and isinstance(filters[1], str):
        return _leaf(filters[1], doc.get(head), filters[2])
    raise QueryError(f"malformed filter {json.dumps(filters)}")


def _same(a: object, b: object) -> bool:
    """Equality without Python's `True == 1` and `1 == 1.0`-across-types surprises for bools."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "Lt": operator.lt,
    "Lte": operator.le,
    "Gt": operator.gt,
    "Gte": operator.ge,
}


def _compare(op: str, actual: object, expected: object) -> bool:
    """`Lt`/`Lte`/`Gt`/`Gte` on two numbers or two strings; anything else is false."""
    both_numbers = _is_number(actual) and _is_number(expected)
    both_strings = isinstance(actual, str) and isinstance(expected, str)
    if not (both_numbers or both_strings):
        return False
    return bool(_COMPARISONS[op](actual, expected))


def _glob(pattern: object, value: object, *, ignore_case: bool) -> bool:
    if not isinstance(pattern, str):
        raise QueryError("Glob filters take a string pattern")
    if not isinstance(value, str):
        return False
    if ignore_case:
        return fnmatch.fnmatchcase(value.lower(), pattern.lower())
    return fnmatch.fnmatchcase(value, pattern)


def _as_list(op: str, value: object) -> list[object]:
    if not isinstance(value, list):
        raise QueryError(f"{op} takes an array value")
    return value


def _leaf(op: str, actual: object, expected: object) -> bool:
    """One `[attr, op, value]` comparison; `actual` is None when the attribute is missing."""
    if op == "Eq":
        return actual is None if expected is None else _same(actual, expected)
    if op == "NotEq":
        return not _leaf("Eq", actual, expected)
    if op == "In":
        return any(_same(actual, e) for e in _as_list(op, expected))
    if op == "NotIn":
        return not _leaf("In", actual, expected)
    if op in ("Lt", "Lte", "Gt", "Gte"):
        return _compare(op, actual, expected)
    if op in ("AnyLt", "AnyLte", "AnyGt", "AnyGte"):
        elements = actual if isinstance(actual, list) else []
        return any(_compare(op.removeprefix("Any"), x, expected) for x in elements)
    if op == "Contains":
        return isinstance(actual, list) and any(_same(x, expected) for x in actual)
    if op == "NotContains":
        return not _leaf("Contains", actual, expected)
    if op == "ContainsAny":
        wanted = _as_list(op, expected)
        return isinstance(actual, list) and any(_same(x, w) for x in actual for w in wanted)
    if op == "NotContainsAny":
        return not _leaf("ContainsAny", actual, expected)
    if op == "Glob":
        return _glob(expected, actual, ignore_case=False)
    if op == "NotGlob":
        return not _glob(expected, actual, ignore_case=False)
    if op == "IGlob":
        return _glob(expected, actual, ignore_case=True)
    if op == "NotIGlob":
        return not _glob(expected, actual, ignore_case=True)
    if op == "Regex":
        if not isinstance(expected, str):
            raise QueryError("Regex filters take a string pattern")
        return isinstance(actual, str) and re.search(expected, actual) is not None
    raise QueryError(f"filter operator {op!r} is not supported by the emulator")


# --- ranking -----------------------------------------------------------------------------


def distance(metric: DistanceMetric, a: Sequence[float], b: Sequence[float]) -> float:
    """`cosine_distance` (1 − cosine similarity) or `euclidean_squared`; lower is closer."""
    if metric == "euclidean_squared":
        return math.fsum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    # A zero vector has no direction; treat it as orthogonal to everything.
    if not norms:
        return 1.0
    # Rounding can leave the result a hair outside the metric's range [0, 2].
    return min(2.0, max(0.0, 1.0 - dot / norms))


def _sort_key(value: object) -> tuple[int, object]:
    """A total order over JSON values: bools, then numbers, strings, arrays, objects."""
    if isinstance(value, bool):
        return (0, value)
    if _is_number(value):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, list):
        return (3, tuple(_sort_key(x) for x in value))
    return (4, json.dumps(value, sort_keys=True))


def _order_pairs(rank_by: list[object]) -> list[tuple[str, str]] | None:
    """`["attr","asc"]` or `[["a","asc"],["b","desc"]]` as pairs; None if not an ordering."""
    candidates: list[object] = rank_by if all(isinstance(p, list) for p in rank_by) else [rank_by]
    pairs: list[tuple[str, str]] = []
    for pair in candidates:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            return None
        if pair[1] not in _DIRECTIONS:
            return None
        pairs.append((pair[0], str(pair[1])))
    return pairs or None


def rank(docs: Iterable[Document], rank_by: object, *, metric: DistanceMetric) -> list[Ranked]:
    """Documents in rank order with their `$dist` (None when ranking by attributes)."""
    by_id = sorted(docs, key=lambda d: _sort_key(d.get("id")))
    if not isinstance(rank_by, list) or not rank_by:
        raise QueryError("rank_by must be a non-empty array")
    if len(rank_by) == 3 and isinstance(rank_by[0], str) and rank_by[1] in _VECTOR_RANKERS:
        attr = rank_by[0]
        try:
            target = decode_vector(rank_by[2])
        except VectorError as exc:
            raise QueryError(f"{rank_by[1]} query vector: {exc}") from None
        scored: list[Ranked] = []
        for doc in by_id:
            vector = doc.get(attr)
            if not isinstance(vector, list):
                continue
            if len(vector) != len(target):
                raise QueryError(
                    f"query vector has {len(target)} dimensions, {attr!r} has {len(vector)}"
                )
            scored.append((doc, distance(metric, vector, target)))
        scored.sort(key=lambda pair: pair[1] if pair[1] is not None else math.inf)
        return scored
    pairs = _order_pairs(rank_by)
    if pairs is None:
        raise QueryError(f"rank_by {json.dumps(rank_by)} is not supported by the emulator")
    ordered = by_id
    # Stable sorts from the last key to the first give a lexicographic multi-key order.
    for attr, direction in reversed(pairs):
        descending = direction == "desc"
        ordered.sort(key=_attribute_key(attr, descending=descending), reverse=descending)
    return [(doc, None) for doc in ordered]


def _attribute_key(
    attr: str, *, descending: bool
) -> Callable[[Document], tuple[bool, tuple[int, object]]]:
    """A sort key that keeps documents missing `attr` last, also under `reverse=True`."""

    def key(doc: Document) -> tuple[bool, tuple[int, object]]:
        value = doc.get(attr)
        if value is None:
            return (not descending, (0, 0))
        return (descending, _sort_key(value))

    return key


# --- projection, limits, aggregation -----------------------------------------------------


def _project(
    doc: Document,
    dist: float | None,
    *,
    include: object,
    exclude: object,
    base64_vectors: bool,
    vector_attrs: frozenset[str],
) -> dict[str, object]:
    """The response row: `id`, the requested attributes, `$dist` when ranked by a vector."""
    if include is True:
        names = {k for k in doc if k != "id"}
    elif include is None or include is False:
        names = set()
    elif isinstance(include, list) and all(isinstance(n, str) for n in include):
        names = {n for n in include if n != "id"}
    else:
        raise QueryError("include_attributes must be true, false or an array of names")
    if exclude is not None:
        if not (isinstance(exclude, list) and all(isinstance(n, str) for n in exclude)):
            raise QueryError("exclude_attributes must be an array of names")
        if include is None:
            names = {k for k in doc if k != "id"}
        names -= set(exclude)
    row: dict[str, object] = {"id": doc["id"]}
    for name in sorted(names):
        if name not in doc:
            continue
        value = doc[name]
        if base64_vectors and name in vector_attrs and isinstance(value, list):
            value = encode_vector_base64([float(x) for x in value])
        row[name] = value
    if dist is not None:
        row["$dist"] = dist
    return row


def _limits(query: Mapping[str, object]) -> tuple[int | None, tuple[list[str], int] | None]:
    """(total, per-group cap) from `top_k` or `limit`; total None when neither is given."""
    top_k, limit = query.get("top_k"), query.get("limit")
    if top_k is not None and limit is not None:
        raise QueryError("give either top_k or limit, not both")
    per: tuple[list[str], int] | None = None
    if isinstance(limit, dict):
        total = limit.get("total")
        raw_per = limit.get("per")
        if raw_per is not None:
            if not isinstance(raw_per, dict):
                raise QueryError("limit.per must be an object")
            attrs, cap = raw_per.get("attributes"), raw_per.get("limit")
            if not (isinstance(attrs, list) and all(isinstance(a, str) for a in attrs)):
                raise QueryError("limit.per.attributes must be an array of names")
            if not (isinstance(cap, int) and cap >= 1):
                raise QueryError("limit.per.limit must be a positive integer")
            per = (attrs, cap)
    else:
        total = limit if limit is not None else top_k
    if total is not None and not (isinstance(total, int) and not isinstance(total, bool)):
        raise QueryError("top_k / limit must be an integer")
    if total is not None and total < 0:
        raise QueryError("top_k / limit must not be negative")
    return total, per


def _hashable(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _aggregate(spec: object, docs: list[Document]) -> object:
    """`["Count"]`, `["Count", attr]` or `["Sum", attr]` over the matching documents."""
    if spec == ["Count"]:
        return len(docs)
    if isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], str):
        values = [d.get(spec[1]) for d in docs]
        if spec[0] == "Count":
            return sum(v is not None for v in values)
        if spec[0] == "Sum":
            return sum(v for v in values if _is_number(v))  # type: ignore[misc]
    raise QueryError(f"aggregate {json.dumps(spec)} is not supported by the emulator")


def _aggregations(
    aggregate_by: object, group_by: object, docs: list[Document], total: int | None
) -> dict[str, object]:
    if not isinstance(aggregate_by, dict) or not aggregate_by:
        raise QueryError("aggregate_by must be a non-empty object")
    if group_by is None:
        return {"aggregations": {label: _aggregate(s, docs) for label, s in aggregate_by.items()}}
    if not (isinstance(group_by, list) and all(isinstance(g, str) for g in group_by)):
        raise QueryError("the emulator supports group_by on plain attribute names only")
    groups: dict[str, tuple[dict[str, object], list[Document]]] = {}
    for doc in docs:
        key = {attr: doc.get(attr) for attr in group_by}
        groups.setdefault(_hashable(key), (key, []))[1].append(doc)
    rows = [
        {**key, **{label: _aggregate(s, members) for label, s in aggregate_by.items()}}
        for _, (key, members) in sorted(groups.items())
    ]
    return {"aggregation_groups": rows if total is None else rows[:total]}


def execute_query(
    docs: Iterable[Document],
    query: Mapping[str, object],
    *,
    metric: DistanceMetric,
    vector_attrs: frozenset[str],
    max_top_k: int,
) -> dict[str, object]:
    """One query's result object: `rows` when ranked, `aggregations`/`aggregation_groups`."""
    unknown = set(query) - _QUERY_FIELDS
    if unknown:
        raise QueryError(f"query fields not supported by the emulator: {sorted(unknown)}")
    rank_by, aggregate_by = query.get("rank_by"), query.get("aggregate_by")
    if rank_by is None and aggregate_by is None:
        raise QueryError("a query needs rank_by or aggregate_by")
    encoding = query.get("vector_encoding", "float")
    if encoding not in ("float", "base64"):
        raise QueryError('vector_encoding must be "float" or "base64"')
    override = query.get("distance_metric")
    if override is not None:
        if override not in ("cosine_distance", "euclidean_squared"):
            raise QueryError(f"unknown distance_metric {override!r}")
        metric = override
    total, per = _limits(query)
    if total is not None and total > max_top_k:
        raise QueryError(f"top_k / limit {total} exceeds the maximum of {max_top_k}")
    offset = query.get("offset", 0)
    if not (isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0):
        raise QueryError("offset must be a non-negative integer")

    filters = query.get("filters")
    matching = [d for d in docs if filters is None or matches(filters, d)]
    result: dict[str, object] = {}
    if aggregate_by is not None:
        result.update(_aggregations(aggregate_by, query.get("group_by"), matching, total))
    if rank_by is None:
        return result

    ranked = rank(matching, rank_by, metric=metric)
    if per is not None:
        attrs, cap = per
        seen: dict[str, int] = {}
        capped: list[Ranked] = []
        for doc, dist in ranked:
            key = _hashable([doc.get(a) for a in attrs])
            seen[key] = seen.get(key, 0) + 1
            if seen[key] <= cap:
                capped.append((doc, dist))
        ranked = capped
    count = DEFAULT_TOP_K if total is None else total
    window = ranked[offset : offset + count]
    result["rows"] = [
        _project(
            doc,
            dist,
            include=query.get("include_attributes"),
            exclude=query.get("exclude_attributes"),
            base64_vectors=encoding == "base64",
            vector_attrs=vector_attrs,
        )
        for doc, dist in window
    ]
    return result
