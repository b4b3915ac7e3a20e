"""Vector values on the wire: JSON number arrays or base64 of little-endian float32.

The SDK base64-encodes vectors in `upsert_rows`/`upsert_columns` and sends plain arrays
everywhere else (reference §3.3), so every vector value the emulator reads goes through
`decode_vector`.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

__all__ = ["VectorError", "decode_vector", "encode_vector_base64", "is_vector_type"]

_F32_BYTES = 4
#: `[N]f32` / `[N]f16`: the schema types of dense vector attributes.
_VECTOR_TYPE = re.compile(r"^\[(\d+)\]f(16|32)$")


class VectorError(ValueError):
    """A value that is not a vector in either wire encoding."""


def decode_vector(value: object) -> list[float]:
    """A vector from a JSON number array or a base64 string of f32 LE."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise VectorError(f"vector is not valid base64: {exc}") from None
        if len(raw) % _F32_BYTES:
            raise VectorError(f"base64 vector has {len(raw)} bytes, not a multiple of 4")
        return list(struct.unpack(f"<{len(raw) // _F32_BYTES}f", raw))
    if isinstance(value, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        return [float(x) for x in value]
    raise VectorError("a vector must be an array of numbers or a base64 string of f32 LE")


def encode_vector_base64(vector: list[float]) -> str:
    """The base64 f32 LE form, as returned for `vector_encoding: "base64"`."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def is_vector_type(attribute_type: str) -> bool:
    """Whether a schema type string names a dense vector (`[N]f32`, `[N]f16`)."""
    return _VECTOR_TYPE.match(attribute_type) is not None
