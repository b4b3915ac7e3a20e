"""Stamping write bodies with `_layer_upserted_at`, without parsing them into Python objects.

A turbopuffer write can be hundreds of megabytes, mostly vectors. Parsing it with `json`
would hold several times its size in float objects, so the body is *scanned* instead: one
regular expression finds strings, flat arrays (a vector is one token) and structural
characters, a small stack follows the structure, and the result is a list of insertions
(byte offset, bytes). The stamped body is then streamed as slices of the original bytes
with the insertions between them, so no second copy is ever made.

What is stamped, with Layer's clock (epoch ms):
- each object of `upsert_rows` and `patch_rows` gets `"_layer_upserted_at": T`;
- `upsert_columns` and `patch_columns` get a `_layer_upserted_at` column of T, as long as
  their `id` column;
- the `patch` of `patch_by_filter` gets `"_layer_upserted_at": T`.
A client that sets any `_layer_*` attribute (in rows, columns, `schema` or a patch) is
refused: those attributes are Layer's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from layer.errors import LayerError

__all__ = ["STAMP_ATTRIBUTE", "ReservedAttribute", "StampPlan", "plan_stamps"]

STAMP_ATTRIBUTE = "_layer_upserted_at"
RESERVED_PREFIX = "_layer_"

#: A JSON string, a flat array (no strings, objects or nested arrays: a vector), or one
#: structural character. Numbers, literals and whitespace are skipped by finditer.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|\[[^\[\]{}"]*\]|[{}\[\],:]', re.DOTALL)

_ROW_LISTS = {"upsert_rows", "patch_rows"}
_COLUMN_SETS = {"upsert_columns", "patch_columns"}


class ReservedAttribute(LayerError):
    """The client tried to write a `_layer_*` attribute."""


@dataclass
class _Frame:
    role: str
    is_object: bool
    keys: int = 0
    commas: int = 0
    has_value: bool = False
    expecting_key: bool = True
    key: str | None = None
    id_count: int = 0


@dataclass
class StampPlan:
    """Where to insert what: apply with `chunks()`; `length` is the stamped body's size."""

    body: bytes
    insertions: list[tuple[int, bytes]] = field(default_factory=list)
    rows_stamped: int = 0

    @property
    def length(self) -> int:
        return len(self.body) + sum(len(data) for _, data in self.insertions)

    def chunks(self) -> Iterator[bytes | memoryview]:
        """The stamped body, as slices of the original with the insertions between them."""
        view = memoryview(self.body)
        start = 0
        for offset, data in self.insertions:
            yield view[start:offset]
            yield data
            start = offset
        yield view[start:]


def _child_role(parent: _Frame, opening: bytes) -> str:
    """The role of a container opened inside `parent` (under `parent.key` if an object)."""
    key = parent.key if parent.is_object else None
    is_object = opening == b"{"
    if parent.role == "top":
        if key in _ROW_LISTS and not is_object:
            return "rows"
        if key in _COLUMN_SETS and is_object:
            return "columns"
        if key == "schema" and is_object:
            return "schema"
        if key == "patch_by_filter" and is_object:
            return "patch_by_filter"
    elif parent.role == "rows" and is_object:
        return "row"
    elif parent.role == "columns" and key == "id" and not is_object:
        return "id_column"
    elif parent.role == "patch_by_filter" and key == "patch" and is_object:
        return "patch"
    return "other"


#: Roles whose object keys are attribute names a client may not take from Layer.
_ATTRIBUTE_ROLES = {"row", "columns", "schema", "patch"}


def _flat_array_length(token: bytes) -> int:
    inner = token[1:-1].strip()
    return inner.count(b",") + 1 if inner else 0


def plan_stamps(body: bytes, stamp_ms: int) -> StampPlan:
    """Plan the stamping of a write body (raises ReservedAttribute for `_layer_*` writes).

    A body that is not well-formed JSON is left to upstream to reject: the plan is then
    whatever the scan found, and upstream answers 400 on the body as a whole.
    """
    plan = StampPlan(body)
    stamp = str(stamp_ms).encode()
    pair = b'"' + STAMP_ATTRIBUTE.encode() + b'":' + stamp
    stack: list[_Frame] = []
    for match in _TOKEN.finditer(body):
        token = match.group()
        first = token[:1]
        frame = stack[-1] if stack else None
        if first == b'"':
            if frame is not None and frame.is_object and frame.expecting_key:
                frame.key = json.loads(token)
                frame.keys += 1
                frame.expecting_key = False
                if frame.role in _ATTRIBUTE_ROLES and frame.key.startswith(RESERVED_PREFIX):
                    raise ReservedAttribute(
                        f"attribute {frame.key!r} is reserved: `{RESERVED_PREFIX}*` attributes "
                        "are written by Layer"
                    )
            elif frame is not None:
                frame.has_value = True
        elif first == b"[" and len(token) > 1:  # a flat array: one value
            if frame is not None:
                frame.has_value = True
                if frame.role == "columns" and frame.key == "id":
                    frame.id_count = _flat_array_length(token)
        elif token in (b"{", b"["):
            role = "top" if frame is None else _child_role(frame, token)
            if frame is not None:
                frame.has_value = True
            stack.append(_Frame(role=role, is_object=token == b"{"))
        elif token == b",":
            if frame is not None:
                frame.commas += 1
                frame.expecting_key = True
        elif token in (b"}", b"]") and stack:
            closed = stack.pop()
            offset = match.start()
            if closed.role in ("row", "patch"):
                plan.insertions.append((offset, (b"," if closed.keys else b"") + pair))
                plan.rows_stamped += closed.role == "row"
            elif closed.role == "columns" and closed.id_count:
                column = b",".join([stamp] * closed.id_count)
                insertion = b',"' + STAMP_ATTRIBUTE.encode() + b'":[' + column + b"]"
                plan.insertions.append((offset, insertion))
                plan.rows_stamped += closed.id_count
            elif closed.role == "id_column" and stack:
                stack[-1].id_count = closed.commas + 1 if closed.has_value else 0
    return plan
