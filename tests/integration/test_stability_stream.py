"""`GET /v2/stability/events` with plain HTTP clients, against a real worker and broker."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from layer.events import StabilityChange
from tests.integration.conftest import (
    EMULATOR_KEY,
    FOREIGN_ORG_KEY,
    OTHER_EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    eventually,
    unique_namespace,
)

AUTH = {"Authorization": f"Bearer {EMULATOR_KEY}"}
ROUTE = "/v2/stability/events"
#: Per-connection queue of the module's worker: small, so a stalled client overflows soon.
BUFFER_EVENTS = 64


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster) -> Iterator[WorkerProcess]:
    running = module_cluster.worker(
        "stream",
        LAYER_SSE_BUFFER_EVENTS=str(BUFFER_EVENTS),
        LAYER_SSE_MAX_CONNECTIONS_PER_KEY="200",
        LAYER_SSE_HEARTBEAT_MS="300",
    ).start()
    yield running


@dataclass
class Event:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class Stream:
    """One SSE connection read with httpx: events in order, comments counted."""

    lines: AsyncIterator[str]
    comments: int = 0
    pending: dict[str, Any] = field(default_factory=dict)

    async def next(self, timeout_s: float = 20.0) -> Event:
        return await asyncio.wait_for(self._next(), timeout_s)

    async def _next(self) -> Event:
        event, data, event_id = "message", [], None
        async for line in self.lines:
            if line == "":
                if data or event != "message":
                    return Event(event, "\n".join(data), event_id)
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                event_id = value
        raise AssertionError("the stream ended")

    async def changes(self, count: int, timeout_s: float = 30.0) -> list[Event]:
        got: list[Event] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            event = await self.next(max(0.1, deadline - time.monotonic()))
            assert event.event == "message", event
            got.append(event)
        return got


@asynccontextmanager
async def stream(
    worker: WorkerProcess, prefix: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as http:
        async with http.stream(
            "GET", ROUTE, params={"prefix": prefix}, headers={**AUTH, **(headers or {})}
        ) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.headers["Cache-Control"] == "no-store"
            yield Stream(response.aiter_lines())


def change(
    namespace: str, stable_as_of: int, *, is_stable: bool = True, padding: int = 0
) -> StabilityChange:
    index: dict[str, Any] = {"status": "up-to-date"}
    if padding:
        index["padding"] = "x" * padding  # unknown fields of `index` pass through
    return StabilityChange(
        namespace=namespace,
        change="advanced",
        is_stable=is_stable,
        stable_as_of=stable_as_of,
        previous_is_stable=is_stable,
        previous_stable_as_of=stable_as_of - 1,
        index=index,
        observed_at_ms=stable_as_of,
    )


async def publish(
    producer: AIOKafkaProducer, cluster: LayerCluster, changes: list[StabilityChange]
) -> None:
    sent = [
        await producer.send(
            cluster.topic("stability"), key=c.namespace.encode(), value=c.model_dump_json().encode()
        )
        for c in changes
    ]
    await asyncio.gather(*sent)


async def test_events_arrive_in_order_with_positions_and_heartbeats(
    worker: WorkerProcess, module_cluster: LayerCluster, producer: AIOKafkaProducer
) -> None:
    prefix = unique_namespace("order")
    name, other = f"{prefix}-a", unique_namespace("elsewhere")
    async with stream(worker, prefix) as events:
        ready = await events.next()
        assert ready.event == "ready" and ready.json()["resume"] == "none"
        assert ready.json()["partitions"] == module_cluster.partitions
        sent = [change(name, 1_000 + i) for i in range(40)]
        await publish(producer, module_cluster, [change(other, 5), *sent, change(other, 6)])
        got = await events.changes(len(sent))
        assert [e.json() for e in got] == [json.loads(c.model_dump_json()) for c in sent]
        positions = [tuple(int(p) for p in e.id.split(".")) for e in got if e.id]
        assert len(positions) == len(got) and positions == sorted(positions)
        with pytest.raises(TimeoutError):
            await events.next(timeout_s=1.0)  # nothing to send: only comment lines come
        assert events.comments >= 2, "heartbeats while idle"


async def test_a_write_through_layer_is_an_event_then_indexing_another(
    worker: WorkerProcess, emulator: EmulatorProcess
) -> None:
    name = unique_namespace("live")
    emulator.write(name, {"upsert_rows": [{"id": 1}]})
    emulator.force_indexing(name)
    worker.metadata(name)  # registers it with the watcher
    await eventually(lambda: worker.layer_state(name)["is_stable"], 20, "stable")
    emulator.pause_indexing(name)
    async with stream(worker, name) as events:
        assert (await events.next()).event == "ready"
        written = worker.http.post(f"/v2/namespaces/{name}", json={"upsert_rows": [{"id": 2}]})
        assert written.status_code == 200, written.text
        unstable = (await events.changes(1))[0].json()
        assert unstable["namespace"] == name and unstable["change"] == "became_unstable"
        emulator.resume_indexing(name)
        emulator.force_indexing(name)
        while (later := (await events.changes(1))[0].json())["change"] != "became_stable":
            assert later["is_stable"] is False
        assert later["stable_as_of"] >= unstable["stable_as_of"]


async def test_last_event_id_resumes_exactly_and_a_foreign_id_starts_live(
    worker: WorkerProcess, module_cluster: LayerCluster, producer: AIOKafkaProducer
) -> None:
    prefix = unique_namespace("resume")
    names = [f"{prefix}-{i}" for i in range(6)]  # several partitions
    first = [change(n, 10) for n in names]
    missed = [change(n, 20) for n in names]
    async with stream(worker, prefix) as events:
        await events.next()
        await publish(producer, module_cluster, first)
        seen = await events.changes(len(first))
    last_id = seen[-1].id
    assert last_id is not None
    await publish(producer, module_cluster, missed)
    async with stream(worker, prefix, {"Last-Event-ID": last_id}) as events:
        ready = await events.next()
        assert ready.json()["resume"] == "exact" and ready.id == last_id
        replayed = await events.changes(len(missed))
        assert sorted(
            (e.json()["namespace"], e.json()["stable_as_of"]) for e in replayed
        ) == sorted((n, 20) for n in names), "exactly the events missed, none seen before"
        live = change(names[0], 30)
        await publish(producer, module_cluster, [live])
        assert (await events.changes(1))[0].json()["stable_as_of"] == 30
    for foreign in ("not-a-position", "1.2", "999999.0.0.0"):
        async with stream(worker, prefix, {"Last-Event-ID": foreign}) as events:
            assert (await events.next()).json()["resume"] == "reset"


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({}, "", 401),
        ({"Authorization": "Bearer"}, "", 401),
        ({"Authorization": f"Bearer {OTHER_EMULATOR_KEY}"}, "", 403),
        ({"Authorization": f"Bearer {FOREIGN_ORG_KEY}"}, "", 403),
        (AUTH, "?prefix=a/b", 400),
    ],
)
def test_wrong_keys_and_bad_prefixes_are_refused_in_turbopuffers_error_shape(
    worker: WorkerProcess, headers: dict[str, str], query: str, status: int
) -> None:
    response = httpx.get(f"{worker.url}{ROUTE}{query}", headers=headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["error"], body
    assert EMULATOR_KEY not in response.text


def _raw_stream(
    worker: WorkerProcess, prefix: str, *, receive_buffer: int | None = None
) -> socket.socket:
    """An SSE request on a plain socket, its answer left unread (a client that stalled)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", worker.port))
    sock.sendall(
        f"GET {ROUTE}?prefix={prefix} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {EMULATOR_KEY}\r\n\r\n".encode()
    )
    return sock


def _drain(sock: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """What the server sent within `timeout_s`, and whether it closed the connection."""
    deadline = time.monotonic() + timeout_s
    received = bytearray()
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not (chunk := sock.recv(1 << 16)):
                return bytes(received), True
            received += chunk
    except TimeoutError:
        pass
    except ConnectionResetError:
        return bytes(received), True
    return bytes(received), False


async def test_stalled_clients_are_cut_off_and_idle_ones_cost_little_memory(
    worker: WorkerProcess, module_cluster: LayerCluster, producer: AIOKafkaProducer
) -> None:
    prefix = unique_namespace("flood")
    async with stream(worker, "warm-up-nothing") as warm:
        await warm.next()  # the worker's consumer runs
    baseline_kb = worker.rss_kb()
    idle = [_raw_stream(worker, unique_namespace("idle")) for _ in range(100)]
    stalled = [_raw_stream(worker, prefix, receive_buffer=4096) for _ in range(10)]
    try:
        async with stream(worker, prefix) as healthy:
            await healthy.next()
            await asyncio.sleep(0.5)  # every raw connection has subscribed
            with_connections_kb = worker.rss_kb()
            # ~6 MB: more than the kernel buffers of a stalled loopback socket hold (~3 MB),
            # so the worker's writes to them block and their queues fill.
            flood = [change(f"{prefix}-{i % 8}", 1_000 + i, padding=4_000) for i in range(1_500)]
            reading = asyncio.create_task(healthy.changes(len(flood), timeout_s=60))
            for start in range(0, len(flood), 500):
                await publish(producer, module_cluster, flood[start : start + 500])
            got = await reading
            assert sorted(e.json()["stable_as_of"] for e in got) == [
                c.stable_as_of for c in flood
            ], "a client that reads gets every event"
            after_flood_kb = worker.rss_kb()
        for sock in stalled:
            received, closed = await asyncio.to_thread(_drain, sock, 10)
            assert closed, "the server closed the stalled connection"
            assert len(received) < len(flood) * 4_000, "it was not sent everything"
        for sock in idle[:5]:
            received, closed = await asyncio.to_thread(_drain, sock, 0.5)
            assert not closed and b"event: ready" in received and b": heartbeat" in received
    finally:
        for sock in idle + stalled:
            sock.close()
    print(
        f"worker RSS: {baseline_kb} kB before, {with_connections_kb} kB with 100 idle + "
        f"10 stalled + 1 reading connection, {after_flood_kb} kB after 1,500 events of 4 kB"
    )
    assert with_connections_kb - baseline_kb < 20_000, "110 connections cost under 20 MB"
    assert after_flood_kb - baseline_kb < 40_000, "stalled clients do not grow the worker"


async def test_connections_per_key_are_capped(cluster: LayerCluster) -> None:
    capped = cluster.worker("capped", LAYER_SSE_MAX_CONNECTIONS_PER_KEY="2").start()
    async with stream(capped) as first, stream(capped) as second:
        await first.next()
        await second.next()
        refused = httpx.get(f"{capped.url}{ROUTE}", headers=AUTH)
        assert refused.status_code == 429 and refused.json()["status"] == "error"
        assert "Retry-After" in refused.headers
    capped.stop()


async def test_streams_end_when_the_worker_hands_over_not_after_the_grace_period(
    cluster: LayerCluster,
) -> None:
    leaving = cluster.worker("leaving", LAYER_SHUTDOWN_GRACE_MS="20000").start()
    async with stream(leaving) as events:
        await events.next()
        assert leaving.process is not None
        stopped_at = time.monotonic()
        leaving.process.send_signal(signal.SIGTERM)
        last = await events.next(timeout_s=10)
        assert last.event == "error" and "shutting down" in last.json()["error"]
    await asyncio.to_thread(leaving.process.wait, 15)
    took = time.monotonic() - stopped_at
    assert took < 10, f"the stream did not hold the worker for the grace period ({took:.1f} s)"
