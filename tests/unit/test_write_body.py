"""Stamping write bodies by scanning, checked against the same edit made on parsed JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.write_body import STAMP_ATTRIBUTE, ReservedAttribute, plan_stamps

STAMP = 1_715_600_400_000


def stamped(body: dict[str, Any], *, indent: int | None = None) -> tuple[Any, int]:
    raw = json.dumps(body, indent=indent).encode()
    plan = plan_stamps(raw, STAMP)
    out = b"".join(bytes(chunk) for chunk in plan.chunks())
    assert len(out) == plan.length, "the announced Content-Length is the body's"
    return json.loads(out), plan.rows_stamped


def expected(body: dict[str, Any]) -> dict[str, Any]:
    """The stamping rules applied to parsed JSON (the reference the scanner must match)."""
    out = json.loads(json.dumps(body))
    for key in ("upsert_rows", "patch_rows"):
        for row in out.get(key, []):
            row[STAMP_ATTRIBUTE] = STAMP
    for key in ("upsert_columns", "patch_columns"):
        if key in out and out[key].get("id"):
            out[key][STAMP_ATTRIBUTE] = [STAMP] * len(out[key]["id"])
    if "patch_by_filter" in out:
        out["patch_by_filter"]["patch"][STAMP_ATTRIBUTE] = STAMP
    return out


def test_rows_are_stamped_and_everything_else_is_untouched() -> None:
    body = {
        "upsert_rows": [{"id": 1, "vector": [0.1, 0.2], "title": 'tricky "}] text'}, {"id": 2}],
        "patch_rows": [{"id": 3, "nested": {"list": [1, {"deep": [2]}]}}],
        "deletes": [4, 5],
        "delete_by_filter": ["title", "Eq", "x"],
        "distance_metric": "cosine_distance",
    }
    result, rows = stamped(body)
    assert result == expected(body) and rows == 3


@pytest.mark.parametrize("ids", [[1, 2, 3], ["a", "b"], ['ü,"}', "x"]])
def test_columns_get_a_stamp_column_as_long_as_the_id_column(ids: list[Any]) -> None:
    body = {"upsert_columns": {"id": ids, "vector": [[0.5, 0.5]] * len(ids)}}
    result, rows = stamped(body)
    assert result["upsert_columns"][STAMP_ATTRIBUTE] == [STAMP] * len(ids)
    assert rows == len(ids)


def test_an_empty_row_object_gets_a_stamp_without_a_stray_comma() -> None:
    assert stamped({"upsert_rows": [{}]})[0] == {"upsert_rows": [{STAMP_ATTRIBUTE: STAMP}]}


def test_patch_by_filter_patches_carry_the_stamp() -> None:
    body = {"patch_by_filter": {"filters": ["a", "Eq", 1], "patch": {"b": 2}}}
    assert stamped(body)[0] == expected(body)


def test_pretty_printed_bodies_are_stamped_too() -> None:
    body = {"upsert_rows": [{"id": 1, "v": [1.5, 2.5]}]}
    assert stamped(body, indent=2)[0] == expected(body)


@pytest.mark.parametrize(
    "body",
    [
        {"upsert_rows": [{"id": 1, "_layer_upserted_at": 5}]},
        {"patch_rows": [{"id": 1, "_layer_anything": 5}]},
        {"upsert_columns": {"id": [1], "_layer_upserted_at": [5]}},
        {"schema": {"_layer_upserted_at": "uint"}},
        {"patch_by_filter": {"filters": ["a", "Eq", 1], "patch": {"_layer_x": 1}}},
    ],
)
def test_a_client_setting_a_layer_attribute_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ReservedAttribute, match="reserved"):
        plan_stamps(json.dumps(body).encode(), STAMP)


def test_layer_prefixed_keys_inside_attribute_values_are_the_clients_business() -> None:
    body = {"upsert_rows": [{"id": 1, "meta": {"_layer_note": 1}}]}
    assert stamped(body)[0] == expected(body)


scalars = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
attribute_names = st.text(min_size=1, max_size=6).filter(lambda k: not k.startswith("_layer_"))
rows = st.dictionaries(attribute_names, values, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    upserts=st.lists(rows, max_size=4),
    patches=st.lists(rows, max_size=3),
    ids=st.lists(st.one_of(st.integers(0, 99), st.text(max_size=4)), max_size=5),
    deletes=st.lists(st.integers(0, 99), max_size=3),
)
def test_scanning_matches_parsing_on_arbitrary_bodies(
    upserts: list[dict[str, Any]],
    patches: list[dict[str, Any]],
    ids: list[Any],
    deletes: list[int],
) -> None:
    body: dict[str, Any] = {"upsert_rows": upserts, "patch_rows": patches, "deletes": deletes}
    if ids:
        body["upsert_columns"] = {"id": ids, "v": [[1.0, 2.0]] * len(ids)}
    assert stamped(body)[0] == expected(body)
