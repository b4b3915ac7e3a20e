"""Layer's `_layer_*` attributes are hidden from answers (api/write_body.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from api.http import encode_json
from api.shapes import metadata_body
from api.write_body import (
    hide_in_metadata,
    hide_in_rows,
    hide_in_schema,
    requested_layer_attributes,
)

TRICKY_TEXT = st.sampled_from(
    ['a,"_layer_upserted_at":1', '{"_layer_x": 2}', "_layer_", ", ", "plain", ""]
)
keys = st.one_of(
    st.sampled_from(["id", "title", "_layer_upserted_at", "_layer_other", "$dist", "layer"]),
    st.text(max_size=5),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    TRICKY_TEXT, st.text(max_size=8),
)  # fmt: skip
numbers = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.none())


def with_layer_values(draw: Any, base: dict[str, Any]) -> dict[str, Any]:
    return {k: (draw(numbers) if k.startswith("_layer_") else v) for k, v in base.items()}


json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def answers(draw: st.DrawFn) -> Any:
    """JSON values whose `_layer_*` members hold numbers (as Layer writes them)."""

    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (draw(numbers) if k.startswith("_layer_") else fix(v)) for k, v in value.items()
            }
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return fix(draw(json_values))


def without_layer(value: Any, keep: frozenset[str] = frozenset()) -> Any:
    if isinstance(value, dict):
        return {
            k: without_layer(v, keep)
            for k, v in value.items()
            if not k.startswith("_layer_") or k in keep
        }
    if isinstance(value, list):
        return [without_layer(v, keep) for v in value]
    return value


@settings(max_examples=400)
@given(answer=answers(), compact=st.booleans(), indent=st.sampled_from([None, 2]))
def test_hide_in_rows_removes_every_layer_member_and_nothing_else(
    answer: Any, compact: bool, indent: int | None
) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    body = json.dumps(answer, separators=separators, indent=indent).encode()
    assert json.loads(hide_in_rows(body)) == without_layer(answer)


def test_an_answer_without_layer_attributes_is_the_same_object() -> None:
    body = json.dumps({"rows": [{"id": i, "t": "x"} for i in range(1000)]}).encode()
    assert hide_in_rows(body) is body


def test_names_asked_for_by_name_stay() -> None:
    body = b'{"rows":[{"id":1,"_layer_upserted_at":5,"_layer_other":6}]}'
    keep = requested_layer_attributes(
        {"queries": [{"include_attributes": ["_layer_upserted_at", "t"]}, {"top_k": 1}]}
    )
    assert keep == {"_layer_upserted_at"}
    assert json.loads(hide_in_rows(body, keep)) == {"rows": [{"id": 1, "_layer_upserted_at": 5}]}
    assert requested_layer_attributes({"include_attributes": True}) == frozenset()


def test_schema_and_metadata_answers_lose_layer_attributes() -> None:
    schema = {
        "id": {"type": "uint"},
        "_layer_upserted_at": {"type": "int"},
        "t": {"type": "string"},
    }
    assert json.loads(hide_in_schema(json.dumps(schema).encode())) == {
        "id": {"type": "uint"}, "t": {"type": "string"},
    }  # fmt: skip
    metadata = {"schema": schema, "approx_row_count": 1}
    assert json.loads(hide_in_metadata(json.dumps(metadata).encode()))["schema"] == {
        "id": {"type": "uint"}, "t": {"type": "string"},
    }  # fmt: skip
    plain = b'{"id": {"type": "uint"}}'
    assert hide_in_schema(plain) is plain
    assert hide_in_schema(b"not json _layer_") == b"not json _layer_"


def test_metadata_body_schema_has_no_layer_attributes() -> None:
    body = {
        "schema": {"id": {"type": "uint"}, "_layer_upserted_at": {"type": "int"}},
        "approx_row_count": 1,
        "approx_logical_bytes": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "encryption": {"mode": "default"},
        "index": {"status": "up-to-date"},
    }
    shown = json.loads(encode_json(metadata_body(body, None)))
    assert shown["schema"] == {"id": {"type": "uint"}}
