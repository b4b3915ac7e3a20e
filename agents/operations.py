"""Following asynchronous upstream writes (a `202` copy) to their end, where the state lives.

When upstream accepts a write asynchronously (`copy_from_namespace` with `Prefer:
respond-async`, or `POST …/async`), the proxy's notification says so
(`operations_started`), and the writes agent records the operation in the destination's
freshness state (`tables.freshness.on_operations`): the namespace is `updating` until the
operation has ended. The worker that owns the namespace's partition follows it: on each
poll tick of that partition it asks upstream for the operation's status (`GET <Location>`,
with the watcher's key, never the caller's), once per `LAYER_FAST_POLL_INTERVAL_MS` while it
runs. When upstream says `finished` (a success or an error), or that it does not know the
operation (404, 401/403: nothing will ever say more), or after `MAX_FOLLOW_MS`, the
follower publishes the completion: a write notification on `{prefix}.writes` with
`operation_finished` and `written_at_ms` = the time it saw the end. The writes agent applies
it like any write (due at once, stable after the next poll that sees the index caught up).

Nothing about an operation lives only here: the state is in the changelog-backed table, so
a worker that restarts (or the partition's next owner) follows on from the table. What this
module keeps in memory is only when to ask next, and which completions it has sent and not
yet seen applied (re-sent after `RESEND_AFTER_MS`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from faust.types import TP

from layer.app import app, on, settings, topics
from layer.clock import now_ms
from layer.events import WriteNotification
from layer.upstream import Upstream, UpstreamError, parse_retry_after_ms
from tables.encoded_store import fields_of
from tables.faust_tables import freshness_table

__all__ = ["OperationFollower"]

log = logging.getLogger(__name__)

#: After this long, an operation is given up on (and notified as ended): a copy runs at
#: ~72 MB/s, so a day is ~6 TB, far beyond a namespace's 2 TB.
MAX_FOLLOW_MS = 24 * 3600 * 1000
#: A completion sent but not applied by then is sent again.
RESEND_AFTER_MS = 10_000
#: Ceiling of the backoff after failed follow requests.
MAX_BACKOFF_MS = 60_000
#: Rows read per step of a load of the table before the event loop gets a turn.
LOAD_CHUNK_ROWS = 10_000
#: Upstream statuses that mean "nobody will ever tell more about this operation".
GONE = frozenset({401, 403, 404, 410})


class OperationFollower:
    """Follows the pending operations of the partitions this worker owns."""

    def __init__(self, upstream: Upstream, *, api_key: str, interval_ms: int) -> None:
        self.upstream = upstream
        self._api_key = api_key
        self._interval_ms = interval_ms
        #: Namespaces (per partition) that may have pending operations; None: not loaded
        #: since the last assignment (loaded from the table on the partition's next tick).
        self._watched: dict[int, set[str]] = {}
        #: (namespace, location) → when to ask next / consecutive failures / completion sent.
        self._next_ms: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._sent_ms: dict[tuple[str, str], int] = {}
        self._tasks: dict[asyncio.Task[None], int] = {}
        self._in_flight: set[tuple[str, str]] = set()
        #: Counts `clear`s; a load in progress (`_load_rest`) stops when it changed.
        self._generation = 0
        #: The rest of a load, read in chunks (held so the task is not garbage-collected).
        self._loading: asyncio.Task[None] | None = None

    def clear(self) -> None:
        """Ownership changed: everything is reloaded from the table on the next ticks."""
        self._generation += 1
        self._watched.clear()
        self._next_ms.clear()
        self._errors.clear()
        self._sent_ms.clear()

    def watch(self, namespace: str, partition: int) -> None:
        """A notification with operations was applied for `namespace`."""
        if partition in self._watched:
            self._watched[partition].add(namespace)

    def _load(self, partition: int) -> set[str]:
        """Find the namespaces with pending operations in the table: the first chunk of rows
        at once, the rest in a task that yields between chunks (a million rows take about a
        second to read, which must not stall the worker); a `clear` ends it."""
        for p in range(settings.topic_partitions):
            self._watched.setdefault(p, set())
        keys = list(freshness_table.keys())
        self._watch_rows(keys[:LOAD_CHUNK_ROWS])
        if len(keys) > LOAD_CHUNK_ROWS:
            self._loading = asyncio.create_task(self._load_rest(self._generation, keys))
        return self._watched[partition]

    async def _load_rest(self, generation: int, keys: list[str]) -> None:
        for start in range(LOAD_CHUNK_ROWS, len(keys), LOAD_CHUNK_ROWS):
            await asyncio.sleep(0)
            if self._generation != generation:
                return  # ownership changed: the next tick loads again
            self._watch_rows(keys[start : start + LOAD_CHUNK_ROWS])

    def _watch_rows(self, keys: list[str]) -> None:
        from agents.transitions import partition_of

        for namespace, (operations,) in fields_of(freshness_table, keys, "operations"):
            if operations:
                self._watched[partition_of(namespace)].add(namespace)

    def start_due(self, partition: int) -> int:
        """Ask upstream about the due operations of `partition`; return how many requests."""
        watched = self._watched.get(partition)
        if watched is None:
            watched = self._load(partition)
        now = now_ms()
        started = 0
        for namespace in list(watched):
            state = freshness_table.get(namespace)
            operations = state.operations if state is not None else None
            if not operations:
                watched.discard(namespace)
                self._forget(namespace, set())
                continue
            self._forget(namespace, set(operations))
            for location, accepted_at in operations.items():
                key = (namespace, location)
                if key in self._in_flight or now < self._next_ms.get(key, 0):
                    continue
                sent = self._sent_ms.get(key)
                if sent is not None and now - sent < RESEND_AFTER_MS:
                    continue
                self._in_flight.add(key)
                task = asyncio.create_task(self._follow(namespace, location, accepted_at))
                self._tasks[task] = partition
                task.add_done_callback(self._done)
                started += 1
        return started

    def _forget(self, namespace: str, keep: set[str]) -> None:
        """Drop the bookkeeping of `namespace`'s operations that are no longer pending."""
        for book in (self._next_ms, self._errors, self._sent_ms):
            for key in [k for k in book if k[0] == namespace and k[1] not in keep]:
                del book[key]

    async def _follow(self, namespace: str, location: str, accepted_at: int) -> None:
        key = (namespace, location)
        try:
            outcome = await self._ask(location)
            now = now_ms()
            if outcome is None and now - accepted_at > MAX_FOLLOW_MS:
                outcome = f"still running after {MAX_FOLLOW_MS // 3_600_000} h: given up"
            if outcome is None:
                self._errors.pop(key, None)
                self._next_ms[key] = now + self._interval_ms
                return
            await self._complete(namespace, location, outcome)
        except _FollowFailed as exc:
            errors = self._errors.get(key, 0) + 1
            self._errors[key] = errors
            backoff = min(MAX_BACKOFF_MS, self._interval_ms * 2 ** min(errors, 20))
            self._next_ms[key] = now_ms() + max(backoff, exc.retry_after_ms or 0)
            log.warning("following %s of %s: %s (retrying)", location, namespace, exc)
        except Exception:  # a follow must never take the agent down with it
            log.exception("following %s of %s failed unexpectedly", location, namespace)
            self._next_ms[key] = now_ms() + MAX_BACKOFF_MS
        finally:
            self._in_flight.discard(key)

    async def _ask(self, location: str) -> str | None:
        """None while the operation runs; how it ended otherwise (raises _FollowFailed)."""
        try:
            response = await self.upstream.request("GET", location, api_key=self._api_key)
        except UpstreamError as exc:
            raise _FollowFailed(str(exc)) from None
        if response.status_code in GONE:
            return f"upstream answered {response.status_code}: the operation is unknown"
        if response.status_code >= 400:
            raise _FollowFailed(
                f"upstream answered {response.status_code}",
                parse_retry_after_ms(response.headers),
            )
        try:
            body = response.json()
        except ValueError:
            raise _FollowFailed("upstream answered with a body that is not JSON") from None
        status = body.get("status") if isinstance(body, dict) else None
        if status == "running":
            return None
        if status == "finished":
            result = body.get("result")
            return "failed" if isinstance(result, dict) and "error" in result else "succeeded"
        raise _FollowFailed(f"unexpected operation status {status!r}")

    async def _complete(self, namespace: str, location: str, outcome: str) -> None:
        """Publish the completion notification (applied by the writes agent, the owner)."""
        note = WriteNotification(
            namespace=namespace,
            written_at_ms=now_ms(),
            source="operation",
            event_id=uuid.uuid4().hex,
            operation_finished=location,
        )
        await topics.writes.send(
            key=namespace.encode(), value=note.model_dump_json(exclude_none=True).encode()
        )
        self._sent_ms[(namespace, location)] = now_ms()
        log.info("operation %s of %s ended (%s)", location, namespace, outcome)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def cancel(self, partitions: set[int]) -> None:
        """Stop following in `partitions` (handed over: the next owner follows on)."""
        doomed = [task for task, partition in self._tasks.items() if partition in partitions]
        for task in doomed:
            task.cancel()
        if doomed:
            await asyncio.gather(*doomed, return_exceptions=True)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _FollowFailed(Exception):
    def __init__(self, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


@on(app.on_partitions_assigned)
async def reload_followed_operations(sender: Any, *args: Any, **kwargs: Any) -> None:
    app.services.follower.clear()


@on(app.on_partitions_revoked)
async def stop_following_revoked_partitions(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
    await app.services.follower.cancel({tp.partition for tp in revoked})


@on(app.on_before_shutdown)
async def stop_following(sender: Any, *args: Any, **kwargs: Any) -> None:
    await app.services.follower.cancel(set(range(settings.topic_partitions)))
