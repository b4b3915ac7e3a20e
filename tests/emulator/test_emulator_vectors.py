"""Vector decoding: both wire encodings the SDK uses, and what is rejected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from turbopuffer.lib.vector import b64encode_vector

from layer.emulator.vectors import (
    VectorError,
    decode_vector,
    encode_vector_base64,
    is_vector_type,
)

f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(st.lists(f32, max_size=64))
def test_base64_from_the_sdk_decodes_to_the_same_floats(vector: list[float]) -> None:
    assert decode_vector(b64encode_vector(vector)) == vector


@given(st.lists(f32, max_size=64))
def test_encoding_round_trips(vector: list[float]) -> None:
    assert decode_vector(encode_vector_base64(vector)) == vector


def test_json_arrays_of_ints_and_floats_decode_to_floats() -> None:
    assert decode_vector([1, 2.5, -3]) == [1.0, 2.5, -3.0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not base64!", "not valid base64"),
        ("AAAA", "not a multiple of 4"),
        ([1.0, "x"], "array of numbers"),
        ([True, 1.0], "array of numbers"),
        ({"a": 1}, "array of numbers"),
    ],
)
def test_non_vectors_are_rejected_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(VectorError, match=reason):
        decode_vector(value)


@pytest.mark.parametrize(
    ("attribute_type", "expected"),
    [
        ("[3]f32", True),
        ("[1536]f16", True),
        ("[]float", False),
        ("[][3]f32", False),
        ("string", False),
    ],
)
def test_dense_vector_types_are_recognised(attribute_type: str, expected: bool) -> None:
    assert is_vector_type(attribute_type) is expected
