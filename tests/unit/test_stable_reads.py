"""The query path's cut: when it applies and how it composes with the caller's filters."""

from __future__ import annotations

import json

import pytest

from api.stable_reads import plan_query, stable_filter, stable_read_cut, with_stable_filter
from tables.freshness import Freshness, IndexStatus, ReadEvidence


@pytest.mark.parametrize(
    ("status", "stable_as_of", "cut"),
    [
        (IndexStatus.UPDATING, 1000, 1000),
        (IndexStatus.UPDATING, None, None),
        (IndexStatus.STABLE, 1000, None),
        (IndexStatus.UNKNOWN, None, None),
    ],
)
def test_only_an_updating_namespace_with_a_known_watermark_is_cut(
    status: IndexStatus, stable_as_of: int | None, cut: int | None
) -> None:
    state = Freshness(namespace="n", status=status.value, stable_as_of=stable_as_of)
    assert stable_read_cut(state, ReadEvidence()) == cut


def test_a_namespace_layer_has_never_seen_is_not_cut() -> None:
    assert stable_read_cut(None, ReadEvidence()) is None
    assert stable_read_cut(None, ReadEvidence(write_pending=True)) is None


def test_a_pending_write_cuts_a_stable_namespace_at_its_watermark() -> None:
    state = Freshness(namespace="n", status=IndexStatus.STABLE.value, stable_as_of=1000)
    assert stable_read_cut(state, ReadEvidence(write_pending=True)) == 1000


def test_a_write_missing_from_the_state_is_never_cut() -> None:
    state = Freshness(namespace="n", status=IndexStatus.UPDATING.value, stable_as_of=1000)
    assert stable_read_cut(state, ReadEvidence(write_unconfirmed=True)) is None


def test_the_cut_keeps_unstamped_rows_visible() -> None:
    assert stable_filter(5) == [
        "Or",
        [["_layer_upserted_at", "Lte", 5], ["_layer_upserted_at", "Eq", None]],
    ]


def test_the_callers_filters_are_anded_with_the_cut() -> None:
    query = {"rank_by": ["id", "asc"], "filters": ["a", "Eq", 1]}
    assert with_stable_filter(query, 5) == {
        "rank_by": ["id", "asc"],
        "filters": ["And", [["a", "Eq", 1], stable_filter(5)]],
    }
    assert with_stable_filter({"top_k": 1}, 5) == {"top_k": 1, "filters": stable_filter(5)}


def test_every_sub_query_of_a_multi_query_is_cut() -> None:
    body = {"queries": [{"top_k": 1}, {"top_k": 2, "filters": ["b", "Gt", 0]}], "limit": 3}
    result = with_stable_filter(body, 7)
    assert result["limit"] == 3
    assert result["queries"][0]["filters"] == stable_filter(7)
    assert result["queries"][1]["filters"] == ["And", [["b", "Gt", 0], stable_filter(7)]]


# --- the whole decision of a query: plan_query ------------------------------------------------

QUERY = b'{"rank_by": ["id", "asc"], "top_k": 5}'


def _state(status: IndexStatus, stable_as_of: int | None = 1000) -> Freshness:
    return Freshness(namespace="n", status=status.value, stable_as_of=stable_as_of)


def test_an_updating_namespace_is_queried_with_the_cut_and_not_retried() -> None:
    plan = plan_query(QUERY, _state(IndexStatus.UPDATING), ReadEvidence(), stable_reads=True)
    assert plan.filtered and plan.retry_body() is None and plan.stable_as_of == 1000
    assert json.loads(plan.body)["filters"] == stable_filter(1000)


def test_a_stable_namespace_goes_as_it_is_and_a_429_is_retried_with_the_cut() -> None:
    plan = plan_query(QUERY, _state(IndexStatus.STABLE), ReadEvidence(), stable_reads=True)
    assert not plan.filtered and plan.body == QUERY
    retry = plan.retry_body()
    assert retry is not None
    assert json.loads(retry)["filters"] == stable_filter(1000)


def test_without_a_watermark_or_with_stable_reads_off_nothing_is_cut_or_retried() -> None:
    for plan in (
        plan_query(QUERY, None, ReadEvidence(), stable_reads=True),
        plan_query(QUERY, _state(IndexStatus.UPDATING, None), ReadEvidence(), stable_reads=True),
        plan_query(QUERY, _state(IndexStatus.UPDATING), ReadEvidence(), stable_reads=False),
    ):
        assert (plan.filtered, plan.retry_body(), plan.body) == (False, None, QUERY)


def test_a_body_that_is_not_a_json_object_goes_to_upstream_untouched() -> None:
    for raw in (b"not json", b"[1, 2]"):
        plan = plan_query(raw, _state(IndexStatus.UPDATING), ReadEvidence(), stable_reads=True)
        assert (plan.body, plan.filtered, plan.retry_body()) == (raw, False, None)
        assert plan.keep == frozenset()
    stable = plan_query(b"not json", _state(IndexStatus.STABLE), ReadEvidence(), stable_reads=True)
    assert stable.retry_body() is None, "a 429 to what is not a query is upstream's answer"


def test_the_layer_attributes_a_query_names_are_kept_whether_it_is_cut_or_not() -> None:
    raw = b'{"queries": [{"top_k": 1, "include_attributes": ["_layer_upserted_at", "t"]}]}'
    for status in (IndexStatus.UPDATING, IndexStatus.STABLE):
        plan = plan_query(raw, _state(status), ReadEvidence(), stable_reads=True)
        assert plan.keep == frozenset({"_layer_upserted_at"})
    assert plan_query(QUERY, None, ReadEvidence(), stable_reads=True).keep == frozenset()


def test_a_pending_write_makes_a_stable_namespace_cut() -> None:
    evidence = ReadEvidence(write_pending=True)
    plan = plan_query(QUERY, _state(IndexStatus.STABLE), evidence, stable_reads=True)
    assert plan.filtered and plan.retry_body() is None


def test_a_cut_query_says_what_the_client_s_did_beyond_what_orjson_reads() -> None:
    """An integer beyond 64 bits and NaN (orjson refuses both) survive the cut as sent."""
    raw = (
        b'{"rank_by": ["vector", "ANN", [0.1, NaN]], "filters": ["n", "Eq", 18446744073709551616]}'
    )
    plan = plan_query(raw, _state(IndexStatus.UPDATING), ReadEvidence(), stable_reads=True)
    assert plan.filtered
    assert b"18446744073709551616" in plan.body and b"NaN" in plan.body
    cut = json.loads(plan.body)["filters"]
    assert cut == ["And", [["n", "Eq", 18446744073709551616], stable_filter(1000)]]


def test_a_cut_vector_query_keeps_every_float_exactly() -> None:
    vector = [0.1, -1e-300, 1.7976931348623157e308, 0.30000000000000004, 5e-324]
    raw = json.dumps({"rank_by": ["vector", "ANN", vector], "top_k": 3}).encode()
    plan = plan_query(raw, _state(IndexStatus.UPDATING), ReadEvidence(), stable_reads=True)
    assert json.loads(plan.body)["rank_by"] == ["vector", "ANN", vector]
    retry = plan_query(raw, _state(IndexStatus.STABLE), ReadEvidence(), stable_reads=True)
    retry_body = retry.retry_body()
    assert retry_body is not None and json.loads(retry_body)["rank_by"][2] == vector
