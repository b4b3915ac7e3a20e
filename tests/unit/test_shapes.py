"""The response shapes (api/shapes.py): one function per body, shared by every view."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.http import encode_json
from api.models import MetadataResponse
from api.shapes import layer_block, listing_row, metadata_body, snapshot_page
from layer.upstream import UpstreamBadResponse
from tables.freshness import Freshness, IndexStatus
from tables.snapshots import Snapshot, SnapshotHistory

STABLE = Freshness(
    namespace="products", status=IndexStatus.STABLE.value, stable_as_of=1000,
    last_write_ms=900, last_poll_ms=2000,
)  # fmt: skip


def test_a_namespace_layer_has_not_seen_is_unknown_and_never_stable() -> None:
    block = layer_block(None, "unknown")
    assert (block.status, block.is_stable, block.stable_as_of) == ("unknown", False, None)


def test_metadata_keeps_every_upstream_field_verbatim_and_adds_layer() -> None:
    upstream = {"approx_row_count": 3, "index": {"status": "up-to-date"}, "future": [1, {"a": 2}]}
    body = json.loads(encode_json(metadata_body(upstream, layer_block(STABLE, "warm"))))
    assert {k: v for k, v in body.items() if k != "layer"} == upstream
    assert body["layer"]["stable_as_of"] == 1000 and body["layer"]["is_stable"] is True
    assert json.loads(encode_json(metadata_body(upstream, None)))["layer"] is None


def test_metadata_is_the_documented_shape() -> None:
    upstream = {"approx_row_count": 3, "index": {"status": "up-to-date"}, "future": [1, {"a": 2}]}
    for block in (layer_block(STABLE, "warm"), layer_block(None, "unknown"), None):
        body = json.loads(encode_json(metadata_body(upstream, block)))
        assert MetadataResponse.model_validate(body).model_dump(mode="json") == body


def test_metadata_keeps_an_integer_beyond_64_bits_exactly() -> None:
    upstream = {"index": {"status": "up-to-date"}, "approx_logical_bytes": 2**70 + 1}
    body = json.loads(encode_json(metadata_body(upstream, None)))
    assert body["approx_logical_bytes"] == 2**70 + 1


@pytest.mark.parametrize("upstream", [[], "metadata", None, 12])
def test_metadata_that_is_not_an_object_is_a_bad_response(upstream: object) -> None:
    with pytest.raises(UpstreamBadResponse):
        metadata_body(upstream, None)


def test_a_listing_row_shows_the_same_freshness_as_metadata() -> None:
    block = layer_block(STABLE, "cold")
    upstream = {"approx_row_count": 7, "approx_logical_bytes": 70, "labels": {"team": "a"}}
    row = listing_row("products", upstream, block, warm_inflight=True)
    assert (row.stable_as_of_ms, row.is_stable, row.last_write_ms) == (1000, True, 900)
    assert (row.row_count, row.size_bytes, row.labels) == (7, 70, {"team": "a"})
    assert row.cache_state is not None and row.cache_state.warm_inflight
    failed = listing_row("products", None, block, warm_inflight=False, metadata_error="timeout")
    assert (failed.row_count, failed.metadata_error, failed.is_stable) == (None, "timeout", True)
    foreign = listing_row("products", upstream, None, warm_inflight=False)
    assert (foreign.is_stable, foreign.stable_as_of_ms, foreign.cache_state) == (None, None, None)


@given(
    watermarks=st.lists(st.integers(0, 10_000), unique=True, max_size=30),
    limit=st.integers(1, 10),
    before=st.one_of(st.none(), st.integers(0, 10_001)),
)
def test_snapshot_pages_walk_the_history_newest_first_without_gaps_or_repeats(
    watermarks: list[int], limit: int, before: int | None
) -> None:
    history = SnapshotHistory(
        snapshots=[Snapshot(stable_as_of=w) for w in sorted(watermarks, reverse=True)]
    )
    expected = [w for w in sorted(watermarks, reverse=True) if before is None or w < before]
    seen: list[int] = []
    cursor = before
    while True:
        page = snapshot_page("products", history, limit=limit, before=cursor)
        assert len(page.snapshots) <= limit
        seen += [s.stable_as_of for s in page.snapshots]
        if page.next_before is None:
            break
        cursor = page.next_before
    assert seen == expected
