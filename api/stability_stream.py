"""`GET /v2/stability/events`: stability changes as server-sent events, for HTTP clients.

Every worker serves the whole stream: one plain aiokafka consumer per worker (no consumer
group, all partitions of `{prefix}.stability`, from the end when it starts) feeds every
connection of that worker. The rules:

- **Who**: the stream carries every namespace of the watched organisation, so it takes a key
  that is the watched organisation's for certain: in pass-through mode the key the watcher
  polls with (`TURBOPUFFER_API_KEY`), with `LAYER_API_KEYS` any of those. Any other key is a
  403: turbopuffer says nothing about which organisation a key belongs to except per
  namespace (api/access.py), and a stream is about namespaces nobody named yet.
- **What**: one event per record, `data:` the `docs/events.md` shape (one JSON line), in
  Kafka's order per partition, so per namespace. `?prefix=` keeps the namespaces that
  start with it. The first event is `event: ready` (how the resume went); a stream Layer
  ends says why in a last `event: error` with turbopuffer's error body.
- **Resume**: each event's `id:` is a position in the topic, the next offset of every
  partition (`7.0.12.3`), so `Last-Event-ID` resumes exactly: the records between it and
  the live stream are read again from Kafka (those the topic no longer holds are lost, and
  `ready` says `partial`); an id that does not fit the topic is ignored (`reset`).
- **Bounded**: each connection queues at most `LAYER_SSE_BUFFER_EVENTS` events; a client
  that falls further behind is sent the error and cut off, it never grows the worker's
  memory. At most `LAYER_SSE_MAX_CONNECTIONS_PER_KEY` streams per key and worker (429).
  A comment line every `LAYER_SSE_HEARTBEAT_MS` when idle.
- **Shutdown**: when the hand-over starts (api/shutdown.py) every stream is ended with the
  error event, at once: a stream would otherwise hold the worker for the whole grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web as aiohttp_web
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust import web
from pydantic import ValidationError

from api.auth import credential_of
from api.errors import ApiError
from api.listing import PREFIX_PATTERN
from layer.app import app, on, settings
from layer.clients import bootstrap_servers
from layer.embedded_broker import true_high_watermarks
from layer.events import StabilityChange
from layer.kafka_topics import require_topics, without_auto_creation
from layer.readiness import Readiness
from layer.settings import BrokerProfile, Settings

__all__ = [
    "HEARTBEAT",
    "Position",
    "ResumePlan",
    "StabilityEvents",
    "StabilityHub",
    "Subscribers",
    "Subscription",
    "TooManyStreams",
    "control_frame",
    "decode_position",
    "encode_position",
    "event_frame",
    "plan_resume",
]

log = logging.getLogger(__name__)

#: A comment line: ignored by every SSE parser, keeps the connection visibly alive.
HEARTBEAT = b": heartbeat\n\n"
#: What an EventSource waits before it reconnects after the stream ended (`retry:`).
RECONNECT_MS = 1000
#: How long a stream Layer ends gets to take its last event before the socket is cut.
CLOSE_FLUSH_S = 1.0
#: How long the consumer waits, after a fetch, for connections more than half full to take
#: their events before it fetches more (a stalled client costs everyone this, once or twice).
ROOM_WAIT_S = 0.1
#: How long the consumer waits for records per round; also how soon a shutdown is seen.
POLL_MS = 200
#: The embedded broker holds a fetch for its whole wait even when records arrive (see
#: layer/app.py, EMBEDDED_FETCH_MAX_WAIT_MS); Kafka answers at once, so its default stays.
EMBEDDED_FETCH_MAX_WAIT_MS = 50
#: Below this many unsent bytes a write cannot wait for the client (asyncio pauses a
#: transport above 64 KiB and resumes it below 16 KiB, its low-water mark).
UNBLOCKED_BUFFER_BYTES = 16 * 1024
#: A resume reads at most this much per partition and fetch (its consumer is short-lived).
RESUME_PARTITION_FETCH_BYTES = 256 * 1024

_prefix_re = re.compile(PREFIX_PATTERN)

#: The next offset to read of every partition of the topic, in partition order.
Position = tuple[int, ...]


# --- wire format (pure) ---------------------------------------------------------------------


def encode_position(position: Sequence[int]) -> str:
    """An event id: the next offset of every partition, dot-separated (`7.0.12.3`)."""
    return ".".join(str(offset) for offset in position)


def decode_position(text: str | None, partitions: int) -> Position | None:
    """The position an event id names, or None if it is not one of this topic's."""
    if not text:
        return None
    parts = text.strip().split(".")
    if len(parts) != partitions or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def event_frame(change: StabilityChange, event_id: str) -> bytes:
    """One stability change: `id:` and a single `data:` line (JSON has no raw newline)."""
    return f"id: {event_id}\ndata: {change.model_dump_json()}\n\n".encode()


def control_frame(
    event: str, data: dict[str, Any], *, event_id: str | None = None, retry_ms: int | None = None
) -> bytes:
    """A named event of the stream itself (`ready`, `error`)."""
    lines = []
    if retry_ms is not None:
        lines.append(f"retry: {retry_ms}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"event: {event}", f"data: {json.dumps(data, separators=(',', ':'))}", "", ""]
    return "\n".join(lines).encode()


def error_frame(message: str) -> bytes:
    return control_frame("error", {"status": "error", "error": message}, retry_ms=RECONNECT_MS)


ResumeKind = Literal["none", "exact", "partial", "reset"]


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """Where a connection's events start, and what it is told about it (`ready`)."""

    kind: ResumeKind
    #: Offsets to read again from Kafka before the live events (empty: none).
    start: Position
    #: The live stream's position when the connection joined it.
    live: Position

    @property
    def replays(self) -> bool:
        return any(s < e for s, e in zip(self.start, self.live, strict=True))


def plan_resume(last_event_id: str | None, live: Position, earliest: Position | None) -> ResumePlan:
    """How to honour `Last-Event-ID` given the live position and the oldest offsets kept
    (None: not asked yet; the caller asks only when the id is a position behind `live`)."""
    if last_event_id is None or not last_event_id.strip():
        return ResumePlan("none", live, live)
    wanted = decode_position(last_event_id, len(live))
    if wanted is None or any(w > e for w, e in zip(wanted, live, strict=True)):
        # Not an id of this topic (another deployment, a recreated topic): start live.
        return ResumePlan("reset", live, live)
    if earliest is None:
        return ResumePlan("exact", wanted, live)
    start = tuple(max(w, first) for w, first in zip(wanted, earliest, strict=True))
    return ResumePlan("exact" if start == wanted else "partial", start, live)


def matches(namespace: str, prefix: str) -> bool:
    return namespace.startswith(prefix)


# --- connections ------------------------------------------------------------------------------


class TooManyStreams(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            429,
            f"too many stability streams open for this API key on this worker (at most {limit})",
            {"Retry-After": "5"},
        )


class Subscription:
    """One connection's bounded queue of frames; closed (with a reason) at most once."""

    def __init__(self, identity: str, prefix: str, capacity: int) -> None:
        self.identity = identity
        self.prefix = prefix
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=capacity)
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        #: Set while the queue is at most half full (the hub waits a little for it).
        self.room = asyncio.Event()
        self.room.set()

    def offer(self, frame: bytes) -> None:
        """Queue a frame, or close the connection if its queue is full (never wait)."""
        if self.closed.is_set():
            return
        try:
            self._queue.put_nowait(frame)
            if self._queue.qsize() > self._queue.maxsize // 2:
                self.room.clear()
        except asyncio.QueueFull:
            self.close(
                f"this client fell more than {self._queue.maxsize} events behind and was "
                "disconnected; reconnect with Last-Event-ID to resume"
            )

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self.room.set()
        while not self._queue.empty():  # what it will never be sent is freed at once
            self._queue.get_nowait()
        self._queue.put_nowait(b"")  # wakes `take`

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def take(self, timeout_s: float) -> bytes:
        """Every frame queued (waiting up to `timeout_s` for one), as one write; empty if
        none came (time for a heartbeat). Taking all at once is what lets a client that
        reads keep up with a burst: one write per wake-up, not one per event."""
        try:
            frames = [await asyncio.wait_for(self._queue.get(), timeout_s)]
        except TimeoutError:
            return b""
        while not self._queue.empty():
            frames.append(self._queue.get_nowait())
        self.room.set()
        return b"".join(frames)


class Subscribers:
    """This worker's open streams: the per-key cap, the fan-out."""

    def __init__(self, *, max_per_key: int, capacity: int) -> None:
        self.max_per_key = max_per_key
        self.capacity = capacity
        self._all: set[Subscription] = set()
        self._per_key: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._all)

    def add(self, identity: str, prefix: str) -> Subscription:
        if self._per_key.get(identity, 0) >= self.max_per_key:
            raise TooManyStreams(self.max_per_key)
        subscription = Subscription(identity, prefix, self.capacity)
        self._all.add(subscription)
        self._per_key[identity] = self._per_key.get(identity, 0) + 1
        return subscription

    def remove(self, subscription: Subscription) -> None:
        if subscription not in self._all:
            return
        self._all.discard(subscription)
        left = self._per_key[subscription.identity] - 1
        if left:
            self._per_key[subscription.identity] = left
        else:
            del self._per_key[subscription.identity]

    def publish(self, namespace: str, frame: bytes) -> None:
        for subscription in list(self._all):
            if matches(namespace, subscription.prefix):
                subscription.offer(frame)

    async def wait_for_room(self, timeout_s: float) -> None:
        """Give connections more than half full up to `timeout_s` to take their events:
        a client that reads keeps up with a burst, one that does not is cut off soon after."""
        crowded = [s.room.wait() for s in self._all if not s.room.is_set()]
        if crowded:
            waiters = [asyncio.ensure_future(c) for c in crowded]
            _, pending = await asyncio.wait(waiters, timeout=timeout_s)
            for waiter in pending:
                waiter.cancel()

    def close_all(self, reason: str) -> None:
        for subscription in list(self._all):
            subscription.close(reason)


# --- the worker's consumer ------------------------------------------------------------------


class StreamUnavailable(ApiError):
    def __init__(self, why: str) -> None:
        super().__init__(
            503, f"the stability stream is not available right now: {why}", {"Retry-After": "2"}
        )


class StabilityHub:
    """Reads `{prefix}.stability` once for the worker and fans it out (started on first use)."""

    def __init__(self, config: Settings, *, readiness: Readiness) -> None:
        self.topic = f"{config.topic_prefix}.stability"
        self._readiness = readiness
        self._bootstrap = bootstrap_servers(config.kafka_broker)
        self._embedded = config.broker_profile is BrokerProfile.EMBEDDED
        self.subscribers = Subscribers(
            max_per_key=config.sse_max_connections_per_key, capacity=config.sse_buffer_events
        )
        #: Records per fetch: a healthy client drains its queue between two fetches, so a
        #: burst never fills a queue on its own.
        self._max_records = max(1, min(500, config.sse_buffer_events // 2))
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self.position: Position = ()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def _new_consumer(self, **options: Any) -> AIOKafkaConsumer:
        if self._embedded:
            options.setdefault("fetch_max_wait_ms", EMBEDDED_FETCH_MAX_WAIT_MS)
        return without_auto_creation(
            AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                **options,
            )
        )

    async def _end_offsets(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(self._partitions)
        if self._embedded:  # NOTES-kafka.md §2: Tansu's ListOffsets(LATEST) can be short
            ends = await true_high_watermarks(self._bootstrap, ends)
        return ends

    async def started(self) -> StabilityHub:
        """The hub, its consumer positioned at the end of the topic; 503 if Kafka fails."""
        async with self._lock:
            if self._task is not None and not self._task.done():
                return self
            consumer = self._new_consumer()
            try:
                await consumer.start()
                await require_topics(consumer._client, [self.topic])
                partitions = consumer.partitions_for_topic(self.topic) or set()
                self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(self._partitions)
                ends = await self._end_offsets(consumer)
                for tp in self._partitions:
                    consumer.seek(tp, ends[tp])
            except Exception as exc:
                await consumer.stop()
                log.warning("stability stream: cannot read %s: %s", self.topic, exc)
                raise StreamUnavailable(f"cannot read {self.topic} from Kafka") from None
            self._consumer = consumer
            self.position = tuple(ends[tp] for tp in self._partitions)
            self._task = asyncio.create_task(self._run(consumer), name="stability-stream")
            return self

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        offsets = list(self.position)
        try:
            while True:
                if self._readiness.shutting_down:
                    self.subscribers.close_all(
                        "this Layer worker is shutting down; reconnect with Last-Event-ID "
                        "(another worker will answer)"
                    )
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=self._max_records)
                for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                    for record in records:
                        offsets[tp.partition] = record.offset + 1
                        self.position = tuple(offsets)
                        change = _parse(record.value)
                        if change is not None:
                            frame = event_frame(change, encode_position(self.position))
                            self.subscribers.publish(change.namespace, frame)
                # Let every connection write what it was given before the next fetch.
                await asyncio.sleep(0)
                await self.subscribers.wait_for_room(ROOM_WAIT_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("stability stream: the consumer of %s failed", self.topic)
            self.subscribers.close_all("the stability stream failed on this worker; reconnect")
        finally:
            await consumer.stop()

    async def replay(
        self, plan: ResumePlan, prefix: str
    ) -> AsyncIterator[tuple[str, StabilityChange | None]]:
        """The records from `plan.start` up to `plan.live`, as (event id, change or None for a
        record that is not one); read with a consumer of its own, closed at the end."""
        consumer = self._new_consumer(max_partition_fetch_bytes=RESUME_PARTITION_FETCH_BYTES)
        await consumer.start()
        try:
            offsets = list(plan.start)
            pending = [
                tp for tp in self._partitions if plan.start[tp.partition] < plan.live[tp.partition]
            ]
            consumer.assign(pending)
            for tp in pending:
                consumer.seek(tp, plan.start[tp.partition])
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=POLL_MS, max_records=100)
                for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                    end = plan.live[tp.partition]
                    for record in records:
                        if record.offset >= end:
                            break
                        offsets[tp.partition] = record.offset + 1
                        change = _parse(record.value)
                        if change is not None and not matches(change.namespace, prefix):
                            change = None
                        yield encode_position(offsets), change
                    if offsets[tp.partition] >= end or await consumer.position(tp) >= end:
                        offsets[tp.partition] = max(offsets[tp.partition], end)
                        pending.remove(tp)
        finally:
            await consumer.stop()

    async def earliest(self) -> Position:
        """The oldest offset the topic still holds, per partition."""
        consumer = self._new_consumer()
        await consumer.start()
        try:
            firsts = await consumer.beginning_offsets(self._partitions)
        finally:
            await consumer.stop()
        return tuple(firsts[tp] for tp in self._partitions)

    async def stop(self) -> None:
        self.subscribers.close_all("this Layer worker is stopping; reconnect")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _parse(raw: bytes | None) -> StabilityChange | None:
    """A record of the topic as a change; None for one that is not (never from a worker)."""
    try:
        return StabilityChange.model_validate_json(raw or b"")
    except ValidationError:
        return None


@on(app.on_before_shutdown)
async def stop_stability_hub(sender: Any, *args: Any, **kwargs: Any) -> None:
    await app.services.stability_hub.stop()


# --- the route ----------------------------------------------------------------------------------


def _require_stream_key(request: aiohttp_web.Request) -> str:
    credential = credential_of(request)
    if not app.services.access.trusted(credential):
        raise ApiError(
            403,
            "the stability stream carries every namespace of the organisation Layer watches: "
            "it takes the key Layer polls with (TURBOPUFFER_API_KEY), or one of LAYER_API_KEYS",
        )
    return credential.identity


def _prefix(request: aiohttp_web.Request) -> str:
    prefix = request.query.get("prefix", "")
    if not _prefix_re.fullmatch(prefix):
        raise ApiError(400, "query parameter prefix may only hold A-Z, a-z, 0-9, '-', '_', '.'")
    return prefix


async def _write_with_close(
    request: aiohttp_web.Request,
    response: aiohttp_web.StreamResponse,
    subscription: Subscription,
    frame: bytes,
) -> bool:
    """Write `frame` unless the connection is closed first; False if it was."""
    if subscription.closed.is_set():
        return False
    transport = request.transport
    if transport is not None and transport.get_write_buffer_size() < UNBLOCKED_BUFFER_BYTES:
        await response.write(frame)  # cannot wait for the client: nothing to race against
        return True
    write = asyncio.ensure_future(response.write(frame))
    closed = asyncio.ensure_future(subscription.closed.wait())
    done, _ = await asyncio.wait({write, closed}, return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    if write in done:
        write.result()  # a client that left raises here
        return True
    write.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await write
    return False


async def _pump(
    request: aiohttp_web.Request,
    response: aiohttp_web.StreamResponse,
    subscription: Subscription,
    plan: ResumePlan,
    hub: StabilityHub,
) -> None:
    ready = {"version": 1, "resume": plan.kind, "partitions": len(plan.live)}
    if not await _write_with_close(
        request,
        response,
        subscription,
        control_frame("ready", ready, event_id=encode_position(plan.start), retry_ms=RECONNECT_MS),
    ):
        return
    if plan.replays:
        async for event_id, change in hub.replay(plan, subscription.prefix):
            if change is not None and not await _write_with_close(
                request, response, subscription, event_frame(change, event_id)
            ):
                return
    heartbeat_s = settings.sse_heartbeat_ms / 1000
    while not subscription.closed.is_set():
        frames = await subscription.take(heartbeat_s)
        if not await _write_with_close(request, response, subscription, frames or HEARTBEAT):
            return


async def _end(
    request: aiohttp_web.Request, response: aiohttp_web.StreamResponse, reason: str
) -> None:
    """Tell the client why (if it takes it within CLOSE_FLUSH_S), then cut the connection."""
    transport = request.transport
    try:
        await asyncio.wait_for(response.write(error_frame(reason)), CLOSE_FLUSH_S)
    except (TimeoutError, ConnectionError):
        pass
    if transport is not None and transport.get_write_buffer_size() > 0:
        transport.abort()  # a client that does not read: nothing more will reach it


@app.page("/v2/stability/events")
class StabilityEvents(web.View):
    """Server-sent events: one per stability change of the watched organisation."""

    async def get(self, request: aiohttp_web.Request) -> aiohttp_web.StreamResponse:
        identity = _require_stream_key(request)
        prefix = _prefix(request)
        hub = await app.services.stability_hub.started()
        subscription = hub.subscribers.add(identity, prefix)
        try:
            live = hub.position  # the subscription gets every record after this one
            last_event_id = request.headers.get("Last-Event-ID")
            plan = plan_resume(last_event_id, live, None)
            if plan.replays:
                plan = plan_resume(last_event_id, live, await hub.earliest())
            response = aiohttp_web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",  # nginx would buffer the stream otherwise
                }
            )
            response.force_close()
            await response.prepare(request)
            try:
                await _pump(request, response, subscription, plan, hub)
            except ConnectionError:
                return response  # the client left
            if subscription.close_reason is not None:
                await _end(request, response, subscription.close_reason)
            return response
        finally:
            hub.subscribers.remove(subscription)
