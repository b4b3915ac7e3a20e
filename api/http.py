"""Small HTTP helpers shared by the views: model responses and query-parameter parsing."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from api.errors import ApiError

__all__ = ["model_response", "query_int"]


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
    """An integer query parameter within [minimum, maximum]; a 400 otherwise (no clamping)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"query parameter {name} must be an integer") from None
    if not minimum <= value <= maximum:
        raise ApiError(400, f"query parameter {name} must be between {minimum} and {maximum}")
    return value
