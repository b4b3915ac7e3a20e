"""Copy operations: `copy_from_namespace` that takes time, answered at once or polled.

A copy starts with a snapshot of its source (`Store.copy_snapshot`) and lands in its
destination `copy_duration_ms` later (`Store.finish_copy`), in a background task, whether or
not anybody polls. The operation is then `finished` with `{"success": WriteResult}`, or with
`{"error": {"status_code", "detail": {"status": "error", "error"}}}` when it could not land
(the destination was written meanwhile). Operations belong to an organisation (its store)
and are kept `OPERATION_TTL_S` after they finish.

The poll body is turbopuffer's CopyFromNamespaceOperation (reference §3.11): `{"status":
"running", "start_time", "progress"}` or `{"status": "finished", "start_time",
"finish_time", "result"}`, which both the SDK's generic respond-async poller and
`poll_copy_from` accept.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .store import CopySnapshot, Store, StoreError

__all__ = ["CopyOperation", "CopyOperations", "operation_location"]

#: How long a finished operation can still be polled.
OPERATION_TTL_S = 3600.0


class _Conflict(StoreError):
    status = 400


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def operation_location(namespace: str, token: str) -> str:
    """The operation's URL path, as turbopuffer's `Location` gives it (reference §2)."""
    return f"/v1/namespaces/{namespace}/operations/{token}"


@dataclass
class CopyOperation:
    token: str
    namespace: str
    store: Store
    started: datetime
    finished: datetime | None = None
    result: dict[str, object] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    finished_monotonic: float | None = None

    @property
    def location(self) -> str:
        return operation_location(self.namespace, self.token)

    def body(self) -> dict[str, object]:
        if self.finished is None or self.result is None:
            return {"status": "running", "start_time": _iso(self.started), "progress": "copying"}
        return {
            "status": "finished",
            "start_time": _iso(self.started),
            "finish_time": _iso(self.finished),
            "result": self.result,
        }

    def answer(self) -> tuple[int, dict[str, object]]:
        """A finished operation as a synchronous answer: (status, body)."""
        assert self.result is not None
        if "success" in self.result:
            return 200, self.result["success"]  # type: ignore[return-value]
        error = self.result["error"]
        assert isinstance(error, dict)
        return error["status_code"], error["detail"]


class CopyOperations:
    """The copies of one emulator (every organisation), by token."""

    def __init__(self) -> None:
        self._operations: dict[str, CopyOperation] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(
        self,
        store: Store,
        namespace: str,
        snapshot: CopySnapshot,
        *,
        encryption: dict[str, object] | None,
        duration_s: float,
    ) -> CopyOperation:
        """Start copying `snapshot` into `namespace`; it lands `duration_s` from now."""
        self._expire()
        if self.running_into(store, namespace):
            raise _Conflict(f"a copy into namespace '{namespace}' is already running")
        operation = CopyOperation(
            token=f"op_{secrets.token_urlsafe(12)}",
            namespace=namespace,
            store=store,
            started=store.wall_clock(),
        )
        self._operations[operation.token] = operation

        async def land() -> None:
            if duration_s > 0:
                await asyncio.sleep(duration_s)
            try:
                success = store.finish_copy(namespace, snapshot, encryption=encryption)
                operation.result = {"success": success}
            except StoreError as exc:
                operation.result = {
                    "error": {
                        "status_code": exc.status,
                        "detail": {"status": "error", "error": str(exc)},
                    }
                }
            operation.finished = store.wall_clock()
            operation.finished_monotonic = time.monotonic()
            operation.done.set()

        task = asyncio.create_task(land())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return operation

    def running_into(self, store: Store, namespace: str) -> bool:
        return any(
            op.store is store and op.namespace == namespace and op.finished is None
            for op in self._operations.values()
        )

    def get(self, store: Store, namespace: str, token: str) -> CopyOperation | None:
        """The operation, if it is this organisation's and this namespace's."""
        self._expire()
        operation = self._operations.get(token)
        if operation is None or operation.store is not store or operation.namespace != namespace:
            return None
        return operation

    def clear(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._operations.clear()

    async def close(self) -> None:
        tasks = list(self._tasks)
        self.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [
            token
            for token, op in self._operations.items()
            if op.finished_monotonic is not None and now - op.finished_monotonic > OPERATION_TTL_S
        ]:
            del self._operations[token]
