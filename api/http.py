"""Small HTTP helpers shared by the views: JSON responses and query-parameter parsing."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from api.errors import ApiError

__all__ = ["encode_json", "json_response", "model_response", "query_int"]

#: The one header of a JSON answer, as aiohttp would set it from `content_type` (cheaper given).
_JSON_CONTENT_TYPE = "application/json"

#: What `query_int` accepts: ASCII digits with an optional sign (Python's `int()` would also
#: take surrounding spaces, `_` separators and non-ASCII digits; a JSON Schema integer not).
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


def encode_json(body: Any) -> bytes:
    """`body` as compact JSON, by orjson (3x faster than `json.dumps` on a metadata answer,
    BENCHMARKS.md); what orjson refuses (an integer beyond 64 bits from upstream, a key that
    is not a string) by the standard library, so nothing upstream sent is lost."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":")).encode()


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response whose body is `body` (plain dicts, lists and scalars)."""
    all_headers = {"Content-Type": _JSON_CONTENT_TYPE}
    if headers:
        all_headers.update(headers)
    return web.Response(body=encode_json(body), status=status, headers=all_headers)


def model_response(
    model: BaseModel, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response whose body is `model` (None fields kept: they carry meaning)."""
    return web.Response(
        body=model.model_dump_json().encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def query_int(
    request: web.Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    """An integer query parameter within [minimum, maximum], `default` if absent.

    A parameter that is given must be valid: empty (`?page_size=`), not a plain decimal
    integer (`1.0`, `1e3`, ` 1`, `１`, `1_000`) or out of range is a 400, never a default or
    a clamp.
    """
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise ApiError(400, f"query parameter {name} must be an integer")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise ApiError(400, f"query parameter {name} must be between {minimum} and {maximum}")
    return value
