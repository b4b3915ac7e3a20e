"""Pure query evaluation: filters, ranking, projection, limits and aggregations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layer.emulator.query import (
    DEFAULT_TOP_K,
    Document,
    QueryError,
    distance,
    execute_query,
    matches,
    rank,
)
from layer.emulator.vectors import decode_vector

DOC: Document = {
    "id": 7,
    "name": "Alpha",
    "n": 3,
    "f": 2.5,
    "ok": True,
    "tags": ["a", "b"],
    "xs": [1, 5],
}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["name", "Eq", "Alpha"], True),
        (["name", "Eq", "alpha"], False),
        (["n", "Eq", 3.0], True),
        (["ok", "Eq", 1], False),
        (["missing", "Eq", None], True),
        (["name", "Eq", None], False),
        (["name", "NotEq", None], True),
        (["n", "NotEq", 4], True),
        (["n", "In", [1, 2, 3]], True),
        (["n", "NotIn", [1, 2, 3]], False),
        (["n", "Lt", 4], True),
        (["n", "Lte", 3], True),
        (["n", "Gt", 3], False),
        (["f", "Gte", 2.5], True),
        (["name", "Gt", "Aa"], True),
        (["name", "Lt", 5], False),
        (["missing", "Lt", 5], False),
        (["xs", "AnyGt", 4], True),
        (["xs", "AnyLt", 1], False),
        (["tags", "Contains", "a"], True),
        (["tags", "NotContains", "z"], True),
        (["tags", "ContainsAny", ["z", "b"]], True),
        (["tags", "NotContainsAny", ["z"]], True),
        (["name", "Glob", "Al*"], True),
        (["name", "Glob", "al*"], False),
        (["name", "IGlob", "al*"], True),
        (["name", "NotGlob", "B*"], True),
        (["name", "NotIGlob", "AL?HA"], False),
        (["name", "Regex", "^A.p"], True),
        (["id", "Eq", 7], True),
        (["And", [["n", "Eq", 3], ["name", "Glob", "A*"]]], True),
        (["And", [["n", "Eq", 3], ["name", "Glob", "B*"]]], False),
        (["Or", [["n", "Eq", 4], ["name", "Glob", "A*"]]], True),
        (["Not", ["n", "Eq", 3]], False),
        (["And", []], True),
        (["Or", []], False),
    ],
)
def test_filter_operators(filters: list[object], expected: bool) -> None:
    assert matches(filters, DOC) is expected


@pytest.mark.parametrize(
    ("filters", "reason"),
    [
        ([], "non-empty"),
        (["n", "Eq"], "malformed"),
        (["n", "Fuzzy", "x"], "not supported"),
        (["n", "In", 3], "array"),
        ({"n": 3}, "non-empty array"),
    ],
)
def test_malformed_filters_are_rejected(filters: object, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        matches(filters, DOC)


def test_cosine_distance_is_one_minus_cosine_similarity() -> None:
    assert distance("cosine_distance", [1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    assert distance("cosine_distance", [1.0, 1.0], [2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    assert distance("cosine_distance", [1.0, 0.0], [-1.0, 0.0]) == pytest.approx(2.0)
    assert distance("cosine_distance", [0.0, 0.0], [1.0, 0.0]) == 1.0


def test_euclidean_squared_sums_squared_differences() -> None:
    assert distance("euclidean_squared", [1.0, 2.0], [4.0, 6.0]) == 25.0


vectors = st.lists(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=3), min_size=1, max_size=20
)


@given(vectors, st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=3))
def test_vector_ranking_is_exact_and_ordered(
    points: list[list[float]], target: list[float]
) -> None:
    docs: list[Document] = [{"id": i, "vector": p} for i, p in enumerate(points)]

    ranked = rank(docs, ["vector", "ANN", target], metric="euclidean_squared")

    dists = [d for _, d in ranked]
    assert len(ranked) == len(points)
    assert dists == sorted(dists)  # type: ignore[type-var]
    best = min(distance("euclidean_squared", p, target) for p in points)
    assert dists[0] == best


def test_vector_ranking_skips_documents_without_the_vector() -> None:
    docs: list[Document] = [{"id": 1}, {"id": 2, "vector": [1.0, 0.0]}]

    assert [
        d["id"] for d, _ in rank(docs, ["vector", "kNN", [1, 0]], metric="cosine_distance")
    ] == [2]


def test_vector_ranking_rejects_a_dimension_mismatch() -> None:
    with pytest.raises(QueryError, match="dimensions"):
        rank([{"id": 1, "vector": [1.0]}], ["vector", "ANN", [1.0, 0.0]], metric="cosine_distance")


def test_attribute_order_keeps_missing_values_last_in_both_directions() -> None:
    docs: list[Document] = [{"id": 1, "p": 2}, {"id": 2}, {"id": 3, "p": 9}, {"id": 4, "p": 2}]

    asc = [d["id"] for d, _ in rank(docs, ["p", "asc"], metric="cosine_distance")]
    desc = [d["id"] for d, _ in rank(docs, ["p", "desc"], metric="cosine_distance")]

    assert asc == [1, 4, 3, 2]
    assert desc == [3, 1, 4, 2]


def test_multi_key_order_breaks_ties_with_later_keys() -> None:
    docs: list[Document] = [
        {"id": 1, "a": 1, "b": "x"},
        {"id": 2, "a": 1, "b": "y"},
        {"id": 3, "a": 0, "b": "z"},
    ]

    ranked = rank(docs, [["a", "desc"], ["b", "desc"]], metric="cosine_distance")

    assert [d["id"] for d, _ in ranked] == [2, 1, 3]


def test_unsupported_rank_by_is_rejected() -> None:
    with pytest.raises(QueryError, match="not supported"):
        rank([], ["text", "BM25", "hello"], metric="cosine_distance")


DOCS: list[Document] = [
    {"id": i, "vector": [float(i), 1.0], "kind": "even" if i % 2 == 0 else "odd", "n": i}
    for i in range(1, 31)
]


def run(**query: object) -> dict[str, object]:
    return execute_query(
        DOCS, query, metric="cosine_distance", vector_attrs=frozenset({"vector"}), max_top_k=100
    )


def row_ids(result: dict[str, object]) -> list[object]:
    rows = result["rows"]
    assert isinstance(rows, list)
    return [row["id"] for row in rows]


def test_rows_default_to_ten_and_carry_only_the_id() -> None:
    result = run(rank_by=["n", "asc"])

    assert row_ids(result) == list(range(1, DEFAULT_TOP_K + 1))
    assert result["rows"][0] == {"id": 1}  # type: ignore[index]


def test_include_attributes_list_true_and_exclude() -> None:
    listed = run(rank_by=["n", "asc"], top_k=1, include_attributes=["kind", "nope"])
    everything = run(rank_by=["n", "asc"], top_k=1, include_attributes=True)
    excluded = run(rank_by=["n", "asc"], top_k=1, exclude_attributes=["vector", "n"])

    assert listed["rows"] == [{"id": 1, "kind": "odd"}]
    assert everything["rows"] == [{"id": 1, "kind": "odd", "n": 1, "vector": [1.0, 1.0]}]
    assert excluded["rows"] == [{"id": 1, "kind": "odd"}]


def test_base64_encoding_applies_to_vector_attributes() -> None:
    result = run(
        rank_by=["n", "asc"], top_k=1, include_attributes=["vector"], vector_encoding="base64"
    )

    vector = result["rows"][0]["vector"]  # type: ignore[index]
    assert isinstance(vector, str)
    assert decode_vector(vector) == [1.0, 1.0]


def test_ann_rows_carry_dist() -> None:
    result = run(rank_by=["vector", "ANN", [1.0, 1.0]], top_k=2)

    assert row_ids(result) == [1, 2]
    assert result["rows"][0]["$dist"] == pytest.approx(0.0, abs=1e-12)  # type: ignore[index]
    assert 0 < result["rows"][1]["$dist"] < 1  # type: ignore[index]


def test_filters_offset_and_limit_object() -> None:
    result = run(rank_by=["n", "asc"], filters=["kind", "Eq", "even"], offset=2, limit={"total": 3})

    assert row_ids(result) == [6, 8, 10]


def test_limit_per_caps_rows_sharing_attribute_values() -> None:
    result = run(
        rank_by=["n", "desc"], limit={"total": 10, "per": {"attributes": ["kind"], "limit": 2}}
    )

    assert row_ids(result) == [30, 29, 28, 27]


def test_aggregations_with_and_without_group_by() -> None:
    flat = run(aggregate_by={"count": ["Count"], "total": ["Sum", "n"]}, filters=["n", "Lte", 4])
    grouped = run(aggregate_by={"count": ["Count"]}, group_by=["kind"])

    assert flat == {"aggregations": {"count": 4, "total": 10}}
    assert grouped == {
        "aggregation_groups": [{"kind": "even", "count": 15}, {"kind": "odd", "count": 15}]
    }


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({}, "rank_by or aggregate_by"),
        ({"rank_by": ["n", "asc"], "top_k": 1, "limit": 1}, "either top_k or limit"),
        ({"rank_by": ["n", "asc"], "top_k": 101}, "exceeds the maximum"),
        ({"rank_by": ["n", "asc"], "offset": -1}, "offset"),
        ({"rank_by": ["n", "asc"], "vector_encoding": "hex"}, "vector_encoding"),
        ({"rank_by": ["n", "asc"], "rerank_by": {}}, "not supported"),
        ({"rank_by": ["n", "asc"], "include_attributes": "yes"}, "include_attributes"),
    ],
)
def test_malformed_queries_are_rejected(query: dict[str, object], reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        run(**query)


def test_distance_metric_override_changes_the_ranking() -> None:
    docs: list[Document] = [{"id": 1, "vector": [10.0, 0.0]}, {"id": 2, "vector": [0.5, 0.5]}]
    query: dict[str, object] = {"rank_by": ["vector", "ANN", [1.0, 0.0]], "top_k": 2}

    cosine = execute_query(
        docs, query, metric="cosine_distance", vector_attrs=frozenset(), max_top_k=10
    )
    euclid = execute_query(
        docs,
        {**query, "distance_metric": "euclidean_squared"},
        metric="cosine_distance",
        vector_attrs=frozenset(),
        max_top_k=10,
    )

    assert row_ids(cosine) == [1, 2]
    assert row_ids(euclid) == [2, 1]
    assert math.isclose(euclid["rows"][0]["$dist"], 0.5)  # type: ignore[index]
