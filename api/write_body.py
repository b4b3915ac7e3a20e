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

And what is hidden again on the way back (the stamp is Layer's implementation detail):
- `hide_in_rows`: `"_layer_*": <number>` members removed from an answer that lists rows
  (queries, multi-queries, export, recall), by the same kind of byte scan: no parse, no
  re-serialisation, and an answer without `"_layer_` is returned as it is (one `find`).
  Names the client asked for by name (`include_attributes: ["_layer_upserted_at"]`) stay.
- `hide_in_schema` / `schema_without_layer`: `_layer_*` attributes removed from a schema
  answer and from the `schema` of a metadata answer (small bodies: parsed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from layer.errors import LayerError

__all__ = [
    "STAMP_ATTRIBUTE",
    "ReservedAttribute",
    "StampPlan",
    "hide_in_metadata",
    "hide_in_rows",
    "hide_in_schema",
    "plan_stamps",
    "requested_layer_attributes",
    "schema_without_layer",
]

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

    body: bytes | bytearray
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


def plan_stamps(body: bytes | bytearray, stamp_ms: int) -> StampPlan:
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


# --- hiding Layer's attributes in answers --------------------------------------------------

_RESERVED_KEY = b'"' + RESERVED_PREFIX.encode()
#: `"_layer_name": <number or null>` and the whitespace after it, at the start of a match.
_LAYER_MEMBER = re.compile(
    rb'"(_layer_[A-Za-z0-9_]*)"\s*:\s*(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|null)\s*'
)
_WHITESPACE = b" \t\r\n"


def hide_in_rows(body: bytes, keep: frozenset[str] = frozenset()) -> bytes:
    """`body` without its `"_layer_*": <number>` object members, except the names in `keep`.

    In well-formed JSON, `"_layer_` right after `{` or `,` (whitespace aside) opens an object
    key: inside a string a quote is escaped, and after a closing quote only `,` `:` `}` `]`
    may follow. The member goes with the comma before it (or, first in its object, the one
    after it). A body without `"_layer_` is returned as is: one `bytes.find`.
    """
    position = body.find(_RESERVED_KEY)
    if position < 0:
        return body
    pieces: list[bytes] = []
    start = 0
    while position >= 0:
        before = position - 1
        while before >= 0 and body[before] in _WHITESPACE:
            before -= 1
        member = _LAYER_MEMBER.match(body, position)
        if (
            before < 0
            or body[before] not in b"{,"
            or member is None
            or member.group(1).decode() in keep
        ):
            position = body.find(_RESERVED_KEY, position + 1)
            continue
        end = member.end()
        if body[before] == ord(",") and before >= start:
            cut_from, cut_to = before, end
        else:  # first in its object (now): take the comma after it instead, if any
            cut_from, cut_to = position, end
            if body[end : end + 1] == b",":
                cut_to = end + 1
                while cut_to < len(body) and body[cut_to] in _WHITESPACE:
                    cut_to += 1
        if cut_from > start:
            pieces.append(body[start:cut_from])
        start = max(start, cut_to)
        position = body.find(_RESERVED_KEY, start)
    pieces.append(body[start:])
    return b"".join(pieces)


def requested_layer_attributes(query: object) -> frozenset[str]:
    """The `_layer_*` names a query (or any sub-query of a multi-query) asks for by name in
    `include_attributes`: an explicit opt-in, which the answer keeps."""
    if not isinstance(query, dict):
        return frozenset()
    queries = query.get("queries")
    subqueries = [q for q in queries if isinstance(q, dict)] if isinstance(queries, list) else []
    names: set[str] = set()
    for each in (query, *subqueries):
        include = each.get("include_attributes")
        if isinstance(include, list):
            names.update(n for n in include if isinstance(n, str) and n.startswith(RESERVED_PREFIX))
    return frozenset(names)


def schema_without_layer(schema: object) -> object:
    """A schema object (attribute → config) without Layer's attributes."""
    if not isinstance(schema, dict):
        return schema
    return {k: v for k, v in schema.items() if not str(k).startswith(RESERVED_PREFIX)}


def _rewrite_json(body: bytes, change: object) -> bytes:
    if _RESERVED_KEY not in body:
        return body
    try:
        parsed = json.loads(body)
    except ValueError:
        return body  # not JSON: nothing Layer wrote can be in it
    return json.dumps(change(parsed), separators=(",", ":")).encode()  # type: ignore[operator]


def hide_in_schema(body: bytes) -> bytes:
    """A schema answer (`GET`/`POST …/schema`) without Layer's attributes."""
    return _rewrite_json(body, schema_without_layer)


def hide_in_metadata(body: bytes) -> bytes:
    """A metadata answer whose `schema` is without Layer's attributes."""

    def change(parsed: object) -> object:
        if isinstance(parsed, dict) and "schema" in parsed:
            return {**parsed, "schema": schema_without_layer(parsed["schema"])}
        return parsed

    return _rewrite_json(body, change)
