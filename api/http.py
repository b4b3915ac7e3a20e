"""Small HTTP helpers shared by the views: model responses and query-parameter parsing."""

from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel

from api.errors import ApiError

__all__ = ["model_response", "query_int"]

#: What `query_int` accepts: ASCII digits with an optional sign (Python's `int()` would also
#: take surrounding spaces, `_` separators and non-ASCII digits; a JSON Schema integer not).
_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")


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
