"""Asynchronous requests (`Prefer: respond-async`) and `GET /v2/operations/{id}`.

A route that may take long (the listing, fanning out one metadata call per row) can run in
the background: it answers `202`, `Preference-Applied: respond-async` and a same-origin
`Location: /v2/operations/{id}`. Polling that answers `{"status": "running", …}` until
`{"status": "finished", …, "result": {"success": <body>}}` or `{"result": {"error":
{"status_code": …, "detail": {"status": "error", "error": …}}}}`, the format the official
turbopuffer SDK's poller accepts. Operations live on the worker that started them (the id
names it, so any worker forwards a poll there), are visible only to the credential that
started them, and expire after `OPERATION_TTL_S` (404 then).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web as aiohttp_web
from cachetools import TTLCache
from faust import web
from pydantic import BaseModel

from api.auth import credential_of
from api.errors import ApiError, to_api_error
from api.http import model_response
from api.models import (
    ErrorBody,
    OperationAccepted,
    OperationError,
    OperationFinished,
    OperationRunning,
)
from api.replica import ROUTED_HEADER, forward_to_owner
from layer.app import app
from layer.errors import LayerError

__all__ = ["OperationStatus", "Operations", "accepted_response", "prefers_async"]

#: How long a finished (or abandoned) operation can still be polled.
OPERATION_TTL_S = 600.0
#: Operations kept at most per worker; the least recently polled go first.
MAX_OPERATIONS = 10_000


def prefers_async(request: aiohttp_web.Request) -> bool:
    """Whether the client sent `Prefer: respond-async` (the header may list several)."""
    prefer = request.headers.get("Prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Operation:
    id: str
    owner_identity: str
    started: datetime
    finished: datetime | None = None
    result: dict[str, object] | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def body(self) -> BaseModel:
        if self.finished is None or self.result is None:
            return OperationRunning(start_time=_rfc3339(self.started))
        return OperationFinished(
            start_time=_rfc3339(self.started),
            finish_time=_rfc3339(self.finished),
            result=self.result,
        )


def _origin_tag(url: str) -> str:
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def _origin_of(operation_id: str) -> str | None:
    tag, _, _ = operation_id.partition(".")
    try:
        return base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


class Operations:
    """This worker's asynchronous operations."""

    def __init__(self, origin_url: str) -> None:
        self._origin = origin_url
        self._operations: TTLCache[str, Operation] = TTLCache(
            maxsize=MAX_OPERATIONS, ttl=OPERATION_TTL_S
        )

    def start(self, run: Callable[[], Awaitable[BaseModel]], owner_identity: str) -> Operation:
        """Run `run()` in the background; its model (or error) becomes the operation's result."""
        operation = Operation(
            id=f"{_origin_tag(self._origin)}.{secrets.token_urlsafe(16)}",
            owner_identity=owner_identity,
            started=datetime.now(UTC),
        )

        async def execute() -> None:
            try:
                body = await run()
                operation.result = {"success": body.model_dump(mode="json")}
            except LayerError as exc:
                error = to_api_error(exc)
                operation.result = _error_result(error.status, error.message)
            except Exception:  # noqa: BLE001 — reported to the poller, never lost silently
                operation.result = _error_result(500, "internal error")
            operation.finished = datetime.now(UTC)

        operation.task = asyncio.create_task(execute())
        self._operations[operation.id] = operation
        return operation

    def get(self, operation_id: str, identity: str) -> Operation | None:
        """The operation, if it exists here, has not expired and belongs to `identity`."""
        operation = self._operations.get(operation_id)
        if operation is None or operation.owner_identity != identity:
            return None
        return operation

    def is_local(self, operation_id: str) -> bool:
        return _origin_of(operation_id) == self._origin


def _error_result(status: int, message: str) -> dict[str, object]:
    error = OperationError(status_code=status, detail=ErrorBody(error=message))
    return {"error": error.model_dump(mode="json")}


def accepted_response(operation: Operation) -> aiohttp_web.Response:
    """`202` pointing at the operation, on this origin."""
    return model_response(
        OperationAccepted(token=operation.id),
        status=202,
        headers={
            "Location": f"/v2/operations/{operation.id}",
            "Preference-Applied": "respond-async",
        },
    )


def _cluster_urls() -> set[str]:
    """Base URLs of the workers in this app's group (as the partition assignor knows them)."""
    return {str(url).rstrip("/") for url in app.router.tables_metadata()}


@app.page("/v2/operations/{operation_id}")
class OperationStatus(web.View):
    """Poll an asynchronous operation."""

    async def get(self, request: aiohttp_web.Request, operation_id: str) -> aiohttp_web.Response:
        operations = app.services.operations
        if not operations.is_local(operation_id) and ROUTED_HEADER not in request.headers:
            origin = _origin_of(operation_id)
            # Only ever forward to a member of this cluster: the id is client input.
            if origin is not None and origin in _cluster_urls():
                return await forward_to_owner(request, origin)
        operation = operations.get(operation_id, credential_of(request).identity)
        if operation is None:
            raise ApiError(404, "operation not found (unknown, expired, or not yours)")
        return model_response(operation.body())
