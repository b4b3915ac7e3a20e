"""The chaos harness's independent observer: a client of Layer that judges only what clients see.

It talks to Layer's HTTP API, to the turbopuffer emulator's public and control API, and to
Kafka as any application would (a plain aiokafka producer of write notifications and a plain
consumer of `{prefix}.stability`). It imports nothing of Layer (no `layer.*`, `api.*`,
`tables.*`, `agents.*`; tests/integration/test_chaos.py checks this module's imports), so it
cannot share a bug with the code it judges. bench/chaos.py runs the processes and the chaos;
this module records every exchange (`Record`) and checks it, one function per category.

All times are epoch milliseconds from this machine's clock, the clock Layer's workers use
too (same machine), so they compare directly with `stable_as_of` and `last_write_ms`.

## What the observer knows

- A write is *acknowledged* at `ack_ms`: through Layer's proxy, when the 200 was received; a
  direct write, when the emulator's 200 was received (its notification's `written_at_ms` is
  taken right then, after the ack, per docs/events.md). A direct write is *notified* when
  Kafka acknowledged its notification (`notified_ms`).
- A write *covers* `covers_ms`: the earliest time Layer may legitimately record for it. A
  direct write: its `written_at_ms`. A proxied write: the time the request was *sent* (Layer
  stamps its notification after upstream acknowledged, which is after we sent and before we
  received the answer; the send time is the only bound a client can be sure of).
- A write is *known unindexed* from its ack until the probe asks the emulator to resume
  indexing, when it was written to a probe namespace after the emulator confirmed that the
  namespace's indexing was paused (the emulator's indexer is frozen, so the write is in its
  WAL and unindexed throughout). Only these clean windows are used for `false_stable`.

## Categories (exact definitions)

1. `false_stable`: a 200 metadata answer with `layer.is_stable == true` for a namespace with a
   known-unindexed write W, where the request was sent after W was acknowledged and the answer
   was received before resume was requested. Split by cause, each counted separately:
   - `false_stable_direct_unnotified`: W is a direct write whose notification Kafka had not
     acknowledged when the request was sent (no worker can know of W from Kafka yet);
   - `false_stable_broker_stalled`: otherwise, the exchange overlapped a broker SIGSTOP, or
     the second after its SIGCONT;
   - `false_stable`: every other case.
   (Any `true` is false here, whatever `stable_as_of` says: the index is frozen with W in it.)
2. `watermark_regression`: a 200 metadata answer A whose `stable_as_of` is lower than, or
   `null` after, the highest `stable_as_of` of any answer (any worker) *received before A's
   request was sent*.
3. `lost_write`: after chaos stopped and the settle phase ended, the last metadata answer of
   a live worker for a namespace shows `last_write_ms < covers_ms - tolerance` for some
   acknowledged write (proxied, or direct and notified) of that namespace (tolerance:
   `--lost-write-tolerance-ms`, default 0: Layer records `max(written_at_ms, record time)`).
4. `liveness`: (a) each completed probe cycle: after indexing was resumed (resume acknowledged
   at r), some answer (any worker) received by the deadline says `is_stable: true` with
   `stable_as_of >= covers_ms` of the probe's write. Deadline: r + fast poll interval + index
   delay + safety margin + 2 s, extended by every chaos window overlapping the wait: its
   duration plus an allowance (upstream fault: the poll backoff ceiling; broker stop: 3 s;
   worker kill/restart/join/leave, measured until every live worker is ready again: 5 s for
   the rebalance). A cycle whose reads stopped before its deadline without success is
   "undetermined" unless a later answer (the settle phase's) decides it. (b) at the end,
   every written namespace: a settle-phase answer received within settle start + the same
   base bound + 5 s says stable with `stable_as_of >=` the namespace's latest `covers_ms`.
5. `missing_event`: for every flip seen over HTTP (a 200 answer `is_stable: true` whose
   preceding answer for that namespace, by receive time and from any worker, said `false`),
   `{prefix}.stability` holds, by the end (bounded wait), an event for that namespace with
   `is_stable: true` and `stable_as_of >=` the answer's.
6. `layer_5xx`: an answer of Layer (metadata read or proxied write) with status >= 500 that
   is neither (a) a 503 carrying `Retry-After` (not ready: allowed), nor (b) upstream's error
   passed through (its body carries the marker of a fault the harness injected), nor (c) a
   502/504 while an upstream fault was active (within 1 s). A 500 made by Layer, a 503
   without `Retry-After`, a 502/504 with healthy upstream (e.g. "peer unreachable") are
   violations. Refused/reset connections and timeouts are counted (per worker, and whether
   the worker was being killed/stopped then), never violations.
7. `watermark_lag`: a 200 answer with `is_stable: true` and `stable_as_of < last_write_ms`
   (reported: invariant 2 allows it within the safety margin, for a moment);
   `watermark_lag_beyond_margin`: the same with `stable_as_of + safety_margin_ms <
   last_write_ms` (invariant 2, seen in an answer);
   `watermark_lag_at_end`: at the end, a namespace whose last answer on a live worker is
   stable with `stable_as_of < last_write_ms` (DESIGN.md rule 4: the watermark catches up).
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

__all__ = [
    "ALL_CATEGORIES",
    "DEFAULT_GATING",
    "Bounds",
    "ChaosWindow",
    "Exchange",
    "Observer",
    "ProbeCycle",
    "Record",
    "StabilityEvent",
    "Violation",
    "Write",
    "check_all",
    "now_ms",
]

FALSE_STABLE = "false_stable"
FALSE_STABLE_BROKER = "false_stable_broker_stalled"
FALSE_STABLE_DIRECT = "false_stable_direct_unnotified"
REGRESSION = "watermark_regression"
LOST_WRITE = "lost_write"
LIVENESS = "liveness"
MISSING_EVENT = "missing_event"
LAYER_5XX = "layer_5xx"
LAG = "watermark_lag"
LAG_BEYOND_MARGIN = "watermark_lag_beyond_margin"
LAG_AT_END = "watermark_lag_at_end"

ALL_CATEGORIES = (
    FALSE_STABLE,
    FALSE_STABLE_BROKER,
    FALSE_STABLE_DIRECT,
    REGRESSION,
    LOST_WRITE,
    LIVENESS,
    MISSING_EVENT,
    LAYER_5XX,
    LAG,
    LAG_BEYOND_MARGIN,
    LAG_AT_END,
)
#: Gating unless `--strict` (bench/chaos.py's docstring says why the others are not).
DEFAULT_GATING = (
    FALSE_STABLE,
    FALSE_STABLE_BROKER,
    REGRESSION,
    LOST_WRITE,
    LIVENESS,
    LAYER_5XX,
    LAG_BEYOND_MARGIN,
    LAG_AT_END,
)

#: Marker in the message of every fault the harness injects: a 5xx carrying it is upstream's.
FAULT_MARKER = "chaos-fault"
#: Chaos kinds that are upstream faults (a 502/504 meanwhile is upstream's doing).
UPSTREAM_KINDS = frozenset({"upstream_500", "upstream_429", "upstream_latency"})
MEMBERSHIP_KINDS = frozenset({"kill_restart", "join", "leave"})
BROKER_KIND = "broker_stall"
#: After SIGCONT the broker is still "stalled" for false_stable's split this long.
BROKER_AFTERMATH_MS = 1000
#: A 502/504 this long after an upstream fault ended is still upstream's.
UPSTREAM_GRACE_MS = 1000
#: Liveness allowances after a chaos window (see the module docstring).
BROKER_ALLOWANCE_MS = 3000
REBALANCE_ALLOWANCE_MS = 5000
SLACK_MS = 2000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------- what was seen


@dataclass(frozen=True)
class Exchange:
    """One HTTP exchange with Layer: a metadata read or a proxied write."""

    kind: str  # "read" | "write"
    namespace: str
    worker: str
    purpose: str  # "probe", "background", "writer", "burst", "settle"
    sent_ms: int
    received_ms: int
    status: int | None  # None: no HTTP answer (transport error)
    error: str | None = None  # transport error class, or the error body's message
    retry_after: str | None = None
    is_stable: bool | None = None
    stable_as_of: int | None = None
    last_write_ms: int | None = None

    @property
    def has_layer(self) -> bool:
        return self.kind == "read" and self.status == 200 and self.is_stable is not None


@dataclass
class Write:
    """A write the observer made: through Layer's proxy, or direct to upstream + notification."""

    namespace: str
    via: str  # "proxy:<worker>" | "direct"
    sent_ms: int
    ack_ms: int | None = None  # None: not acknowledged (failed or unknown outcome)
    notified_ms: int | None = None  # direct only: Kafka acknowledged the notification
    error: str | None = None

    @property
    def direct(self) -> bool:
        return self.via == "direct"

    @property
    def acknowledged(self) -> bool:
        """Acknowledged end to end: proxied 200, or direct 200 whose notification Kafka took."""
        return self.ack_ms is not None and (not self.direct or self.notified_ms is not None)

    @property
    def covers_ms(self) -> int:
        """The earliest time Layer may record for this write (module docstring)."""
        assert self.ack_ms is not None
        return self.ack_ms if self.direct else self.sent_ms


@dataclass
class ProbeCycle:
    """Pause indexing, write, read while paused, resume, read until stable."""

    namespace: str
    paused_ms: int  # pause acknowledged by the emulator
    write: Write | None = None
    resume_sent_ms: int | None = None
    resume_done_ms: int | None = None
    reads_until_ms: int | None = None  # the probe's last read was received then
    aborted: str | None = None


@dataclass
class ChaosWindow:
    kind: str
    target: str
    start_ms: int
    end_ms: int | None = None  # None: still active
    detail: str = ""

    def end_or(self, default_ms: int) -> int:
        return self.end_ms if self.end_ms is not None else default_ms

    def overlaps(self, start_ms: int, end_ms: int, after_ms: int = 0) -> bool:
        return self.start_ms <= end_ms and self.end_or(end_ms) + after_ms >= start_ms

    def describe(self, origin_ms: int) -> str:
        end = "…" if self.end_ms is None else f"{(self.end_ms - origin_ms) / 1000:.1f}s"
        return f"{self.kind}({self.target}) {(self.start_ms - origin_ms) / 1000:.1f}s–{end}"


@dataclass(frozen=True)
class StabilityEvent:
    namespace: str
    change: str
    is_stable: bool
    stable_as_of: int | None
    observed_at_ms: int | None
    received_ms: int


@dataclass(frozen=True)
class Violation:
    category: str
    namespace: str | None
    worker: str | None
    at_ms: int
    message: str
    chaos: str


@dataclass(frozen=True)
class Bounds:
    """The worker and emulator settings the checks' time bounds derive from."""

    fast_poll_ms: int
    index_delay_ms: int
    safety_margin_ms: int
    poll_max_backoff_ms: int
    lost_write_tolerance_ms: int = 0

    @property
    def base_liveness_ms(self) -> int:
        return self.fast_poll_ms + self.index_delay_ms + self.safety_margin_ms + SLACK_MS


@dataclass
class Record:
    """Everything the observer saw; the checks are pure functions of it."""

    origin_ms: int
    exchanges: list[Exchange] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    probes: list[ProbeCycle] = field(default_factory=list)
    chaos: list[ChaosWindow] = field(default_factory=list)
    events: list[StabilityEvent] = field(default_factory=list)
    settle_started_ms: int | None = None
    settle_ended_ms: int | None = None
    live_at_end: tuple[str, ...] = ()

    def rel(self, at_ms: int) -> str:
        return f"+{(at_ms - self.origin_ms) / 1000:.3f}s"

    def chaos_during(self, start_ms: int, end_ms: int) -> str:
        """Chaos active during [start, end], or ended less than a second before it."""
        active = [
            w.describe(self.origin_ms) for w in self.chaos if w.overlaps(start_ms, end_ms, 1000)
        ]
        return ", ".join(active) or "none"

    def windows(self, kinds: Iterable[str]) -> list[ChaosWindow]:
        wanted = set(kinds)
        return [w for w in self.chaos if w.kind in wanted]


# ---------------------------------------------------------------- the client


class Observer:
    """Layer's client: reads, writes, probes and the stability topic, all recorded."""

    def __init__(
        self,
        *,
        workers: dict[str, str],
        emulator_url: str,
        api_key: str,
        bootstrap: str,
        topic_prefix: str,
        origin_ms: int | None = None,
    ) -> None:
        self.record = Record(origin_ms=origin_ms if origin_ms is not None else now_ms())
        self.workers = dict(workers)  # name → base URL (every worker ever started)
        self.live: list[str] = []  # workers the steady traffic goes to
        self.emulator_url = emulator_url
        self.bootstrap = bootstrap
        self.writes_topic = f"{topic_prefix}.writes"
        self.stability_topic = f"{topic_prefix}.stability"
        headers = {"Authorization": f"Bearer {api_key}"}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        self.http = httpx.AsyncClient(headers=headers, timeout=10.0, limits=limits)
        self.producer: AIOKafkaProducer | None = None
        self._row_id = 0
        self._notify_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await self.producer.start()

    async def close(self) -> None:
        if self._notify_tasks:
            await asyncio.wait(self._notify_tasks, timeout=30)
        if self.producer is not None:
            await self.producer.stop()
        await self.http.aclose()

    def _rows(self, n: int) -> list[dict[str, Any]]:
        rows = []
        for _ in range(n):
            self._row_id += 1
            rows.append({"id": self._row_id, "payload": f"row-{self._row_id}"})
        return rows

    # -- Layer

    async def read(self, worker: str, namespace: str, purpose: str) -> Exchange:
        url = f"{self.workers[worker]}/v2/namespaces/{namespace}/metadata"
        sent = now_ms()
        try:
            response = await self.http.get(url)
        except httpx.HTTPError as exc:
            return self._keep(
                Exchange(
                    "read", namespace, worker, purpose, sent, now_ms(), None, type(exc).__name__
                )
            )
        received = now_ms()
        body = _json(response)
        layer = body.get("layer") if isinstance(body, dict) else None
        if response.status_code == 200 and isinstance(layer, dict):
            exchange = Exchange(
                "read",
                namespace,
                worker,
                purpose,
                sent,
                received,
                200,
                is_stable=_bool(layer.get("is_stable")),
                stable_as_of=_int(layer.get("stable_as_of")),
                last_write_ms=_int(layer.get("last_write_ms")),
            )
        else:
            exchange = self._failed("read", namespace, worker, purpose, sent, received, response)
        return self._keep(exchange)

    async def write_proxy(self, worker: str, namespace: str, purpose: str, rows: int = 2) -> Write:
        url = f"{self.workers[worker]}/v2/namespaces/{namespace}"
        write = Write(namespace, f"proxy:{worker}", now_ms())
        self.record.writes.append(write)
        try:
            response = await self.http.post(url, json={"upsert_rows": self._rows(rows)})
        except httpx.HTTPError as exc:
            write.error = type(exc).__name__
            self._keep(
                Exchange(
                    "write", namespace, worker, purpose, write.sent_ms, now_ms(), None, write.error
                )
            )
            return write
        received = now_ms()
        if response.status_code == 200:
            write.ack_ms = received
            self._keep(Exchange("write", namespace, worker, purpose, write.sent_ms, received, 200))
        else:
            failed = self._failed(
                "write", namespace, worker, purpose, write.sent_ms, received, response
            )
            write.error = f"{response.status_code} {failed.error}"
            self._keep(failed)
        return write

    # -- direct writer: upstream, then a plain Kafka notification

    async def write_direct(self, namespace: str, rows: int = 2) -> Write:
        write = Write(namespace, "direct", now_ms())
        self.record.writes.append(write)
        try:
            response = await self.http.post(
                f"{self.emulator_url}/v2/namespaces/{namespace}",
                json={"upsert_rows": self._rows(rows)},
            )
        except httpx.HTTPError as exc:
            write.error = type(exc).__name__
            return write
        if response.status_code != 200:
            write.error = f"upstream {response.status_code}"
            return write
        write.ack_ms = now_ms()  # taken after the ack: docs/events.md's contract
        task = asyncio.create_task(self._notify(write))
        self._notify_tasks.add(task)
        task.add_done_callback(self._notify_tasks.discard)
        return write

    async def _notify(self, write: Write) -> None:
        assert self.producer is not None and write.ack_ms is not None
        value = json.dumps(
            {
                "version": 1,
                "namespace": write.namespace,
                "written_at_ms": write.ack_ms,
                "rows": 2,
                "source": "chaos-direct",
            }
        ).encode()
        try:
            await self.producer.send_and_wait(
                self.writes_topic, value, key=write.namespace.encode()
            )
        except Exception as exc:  # noqa: BLE001 - recorded: the write stays unacknowledged
            write.error = f"notification failed: {type(exc).__name__}"
            return
        write.notified_ms = now_ms()

    async def drain_notifications(self, timeout_s: float = 30.0) -> None:
        if self._notify_tasks:
            await asyncio.wait(set(self._notify_tasks), timeout=timeout_s)

    # -- emulator control (never counted, never faulted)

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(
            method, f"{self.emulator_url}/_emulator{path}", json=body, timeout=10
        )
        response.raise_for_status()
        return response.json()

    # -- probe cycle

    async def probe(
        self, namespace: str, *, via: str, hold_s: float, give_up_s: float, interval_s: float = 0.1
    ) -> ProbeCycle:
        """Pause, write (retried a few times), read every `interval_s` from every live worker
        for `hold_s`, resume, read until stable covering the write or `give_up_s` passed."""
        await self.control("POST", f"/indexing/{namespace}/pause")
        cycle = ProbeCycle(namespace, paused_ms=now_ms())
        self.record.probes.append(cycle)
        try:
            cycle.write = await self._probe_write(namespace, via)
            if cycle.write is None:
                cycle.aborted = "no write acknowledged"
                return cycle
            hold_until = time.monotonic() + hold_s
            while time.monotonic() < hold_until:
                await self._read_all(namespace, "probe")
                await asyncio.sleep(interval_s)
        finally:
            cycle.resume_sent_ms = now_ms()
            await self.control("POST", f"/indexing/{namespace}/resume")
            cycle.resume_done_ms = now_ms()
        covers = cycle.write.covers_ms
        give_up = time.monotonic() + give_up_s
        while time.monotonic() < give_up:
            answers = await self._read_all(namespace, "probe")
            cycle.reads_until_ms = now_ms()
            if any(a.is_stable and (a.stable_as_of or 0) >= covers for a in answers):
                break
            await asyncio.sleep(interval_s)
        return cycle

    async def _probe_write(self, namespace: str, via: str) -> Write | None:
        for attempt in range(12):
            if via == "direct":
                write = await self.write_direct(namespace)
            else:
                live = self.live or list(self.workers)
                write = await self.write_proxy(live[attempt % len(live)], namespace, "probe")
            if write.ack_ms is not None:
                return write
            await asyncio.sleep(0.5)
        return None

    async def _read_all(self, namespace: str, purpose: str) -> list[Exchange]:
        return await asyncio.gather(*(self.read(w, namespace, purpose) for w in list(self.live)))

    # -- the stability topic

    async def follow_stability(self, stop: asyncio.Event) -> None:
        """Consume `{prefix}.stability` from the beginning until `stop` is set."""
        consumer = AIOKafkaConsumer(
            self.stability_topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                received = now_ms()
                for records in batch.values():
                    for message in records:
                        event = _stability_event(message.value, received)
                        if event is not None:
                            self.record.events.append(event)
        finally:
            await consumer.stop()

    # -- helpers

    def _keep(self, exchange: Exchange) -> Exchange:
        self.record.exchanges.append(exchange)
        return exchange

    @staticmethod
    def _failed(
        kind: str,
        namespace: str,
        worker: str,
        purpose: str,
        sent: int,
        received: int,
        response: httpx.Response,
    ) -> Exchange:
        body = _json(response)
        message = body.get("error") if isinstance(body, dict) else None
        return Exchange(
            kind,
            namespace,
            worker,
            purpose,
            sent,
            received,
            response.status_code,
            error=str(message if message is not None else response.text[:200]),
            retry_after=response.headers.get("Retry-After"),
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _stability_event(raw: bytes | None, received_ms: int) -> StabilityEvent | None:
    try:
        value = json.loads(raw or b"")
        return StabilityEvent(
            namespace=str(value["namespace"]),
            change=str(value.get("change")),
            is_stable=bool(value["is_stable"]),
            stable_as_of=_int(value.get("stable_as_of")),
            observed_at_ms=_int(value.get("observed_at_ms")),
            received_ms=received_ms,
        )
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- the checks


def _answers_by_namespace(record: Record) -> dict[str, list[Exchange]]:
    by_ns: dict[str, list[Exchange]] = defaultdict(list)
    for exchange in record.exchanges:
        if exchange.has_layer:
            by_ns[exchange.namespace].append(exchange)
    for answers in by_ns.values():
        answers.sort(key=lambda a: a.received_ms)
    return by_ns


def _fmt_answer(record: Record, a: Exchange) -> str:
    return (
        f"{a.worker} {a.purpose} read sent {record.rel(a.sent_ms)} received "
        f"{record.rel(a.received_ms)}: is_stable={a.is_stable} stable_as_of={a.stable_as_of} "
        f"last_write_ms={a.last_write_ms}"
    )


def check_false_stable(record: Record) -> list[Violation]:
    """Category 1 (and its two splits): `is_stable: true` while a known write is unindexed."""
    violations = []
    by_ns = _answers_by_namespace(record)
    stalls = record.windows({BROKER_KIND})
    for cycle in record.probes:
        write = cycle.write
        if write is None or write.ack_ms is None:
            continue
        until = cycle.resume_sent_ms if cycle.resume_sent_ms is not None else 2**62
        for a in by_ns.get(cycle.namespace, []):
            if not (a.is_stable and a.sent_ms >= write.ack_ms and a.received_ms <= until):
                continue
            if write.direct and (write.notified_ms is None or write.notified_ms > a.sent_ms):
                category = FALSE_STABLE_DIRECT
            elif any(w.overlaps(a.sent_ms, a.received_ms, BROKER_AFTERMATH_MS) for w in stalls):
                category = FALSE_STABLE_BROKER
            else:
                category = FALSE_STABLE
            if not write.direct:
                notified = "by Layer"
            elif write.notified_ms is None:
                notified = "not yet"
            else:
                notified = record.rel(write.notified_ms)
            resumed = "never" if cycle.resume_sent_ms is None else record.rel(cycle.resume_sent_ms)
            violations.append(
                Violation(
                    category,
                    a.namespace,
                    a.worker,
                    a.received_ms,
                    f"{_fmt_answer(record, a)}; unindexed {write.via} write acked "
                    f"{record.rel(write.ack_ms)} (ack_ms={write.ack_ms}, "
                    f"notification acked {notified}), "
                    f"indexing paused {record.rel(cycle.paused_ms)}, resume requested "
                    f"{resumed}",
                    record.chaos_during(a.sent_ms, a.received_ms),
                )
            )
    return violations


def check_watermark_regression(record: Record) -> list[Violation]:
    """Category 2: `stable_as_of` below (or null after) one seen before the request was sent."""
    violations = []
    for answers in _answers_by_namespace(record).values():
        received = [a.received_ms for a in answers]
        best: list[Exchange | None] = []  # best[i]: highest stable_as_of among answers[: i + 1]
        current: Exchange | None = None
        for a in answers:
            if a.stable_as_of is not None and (
                current is None or a.stable_as_of > (current.stable_as_of or 0)
            ):
                current = a
            best.append(current)
        for a in answers:
            i = bisect.bisect_left(received, a.sent_ms) - 1  # answers received before a was sent
            earlier = best[i] if i >= 0 else None
            if earlier is None or earlier.stable_as_of is None:
                continue
            if a.stable_as_of is None or a.stable_as_of < earlier.stable_as_of:
                drop = (
                    "null"
                    if a.stable_as_of is None
                    else f"-{earlier.stable_as_of - a.stable_as_of} ms"
                )
                violations.append(
                    Violation(
                        REGRESSION,
                        a.namespace,
                        a.worker,
                        a.received_ms,
                        f"{_fmt_answer(record, a)} ({drop}); "
                        f"earlier: {_fmt_answer(record, earlier)}",
                        record.chaos_during(earlier.received_ms, a.received_ms),
                    )
                )
    return violations


def _last_settle_answers(record: Record) -> dict[str, dict[str, Exchange]]:
    """namespace → worker → that worker's last settle-phase answer."""
    last: dict[str, dict[str, Exchange]] = defaultdict(dict)
    for a in record.exchanges:
        if a.purpose == "settle" and a.has_layer and a.worker in record.live_at_end:
            previous = last[a.namespace].get(a.worker)
            if previous is None or a.received_ms >= previous.received_ms:
                last[a.namespace][a.worker] = a
    return last


def _acknowledged_by_namespace(record: Record) -> dict[str, list[Write]]:
    by_ns: dict[str, list[Write]] = defaultdict(list)
    for write in record.writes:
        if write.acknowledged:
            by_ns[write.namespace].append(write)
    return by_ns


def check_lost_write(record: Record, bounds: Bounds) -> list[Violation]:
    """Category 3: every acknowledged write ends in `last_write_ms` (every live worker's view)."""
    violations = []
    last = _last_settle_answers(record)
    at = record.settle_ended_ms or now_ms()
    for namespace, writes in _acknowledged_by_namespace(record).items():
        latest = max(writes, key=lambda w: w.covers_ms)
        required = latest.covers_ms - bounds.lost_write_tolerance_ms
        for worker in record.live_at_end:
            a = last.get(namespace, {}).get(worker)
            if a is None:
                violations.append(
                    Violation(
                        LOST_WRITE,
                        namespace,
                        worker,
                        at,
                        f"no metadata answer in the settle phase; latest write {latest.via} covers "
                        f"{latest.covers_ms}",
                        "none (settle phase)",
                    )
                )
            elif a.last_write_ms is None or a.last_write_ms < required:
                missing = sum(1 for w in writes if (a.last_write_ms or 0) < w.covers_ms)
                violations.append(
                    Violation(
                        LOST_WRITE,
                        namespace,
                        worker,
                        a.received_ms,
                        f"{_fmt_answer(record, a)} < {required} (latest acknowledged write "
                        f"{latest.via} sent {record.rel(latest.sent_ms)}, "
                        f"covers {latest.covers_ms}); "
                        f"{missing} of {len(writes)} acknowledged writes not reflected",
                        "none (settle phase)",
                    )
                )
    return violations


def liveness_deadline(record: Record, bounds: Bounds, start_ms: int) -> int:
    """`start_ms` + the base bound, extended by every chaos window overlapping the wait."""
    deadline = start_ms + bounds.base_liveness_ms
    end_of_run = record.settle_ended_ms or now_ms()
    for window in sorted(record.chaos, key=lambda w: w.start_ms):
        if window.start_ms > deadline:
            break
        allowance = _allowance(window.kind, bounds)
        end = window.end_or(end_of_run)
        if end + allowance < start_ms:
            continue
        deadline += max(0, end - max(window.start_ms, start_ms)) + allowance
    return deadline


def _allowance(kind: str, bounds: Bounds) -> int:
    if kind in UPSTREAM_KINDS:
        return bounds.poll_max_backoff_ms
    if kind == BROKER_KIND:
        return BROKER_ALLOWANCE_MS
    return REBALANCE_ALLOWANCE_MS


def _state_by(
    record: Record, namespace: str, start_ms: int, deadline: int, answers: list[Exchange]
) -> str:
    """The last answer received by `deadline`, and the failed exchanges since `start_ms`."""
    before = [a for a in answers if a.received_ms <= deadline]
    last = _fmt_answer(record, before[-1]) if before else "no 200 answer"
    failed = Counter(
        str(e.status or e.error)
        for e in record.exchanges
        if e.namespace == namespace
        and e.kind == "read"
        and not e.has_layer
        and start_ms <= e.sent_ms <= deadline
    )
    return f"last by the deadline: {last}; failed reads meanwhile: {dict(failed) or 'none'}"


def check_liveness(record: Record, bounds: Bounds) -> tuple[list[Violation], int]:
    """Category 4; also returns how many probe cycles were undetermined."""
    violations = []
    undetermined = 0
    by_ns = _answers_by_namespace(record)
    for cycle in record.probes:
        if cycle.write is None or cycle.resume_done_ms is None or cycle.aborted:
            continue
        covers = cycle.write.covers_ms
        deadline = liveness_deadline(record, bounds, cycle.resume_done_ms)
        answers = [a for a in by_ns.get(cycle.namespace, []) if a.sent_ms >= cycle.resume_sent_ms]
        first = next((a for a in answers if a.is_stable and (a.stable_as_of or 0) >= covers), None)
        if first is not None and first.received_ms <= deadline:
            continue
        last_read = answers[-1].received_ms if answers else None
        if first is None and (last_read is None or last_read < deadline):
            undetermined += 1
            continue
        late = "never" if first is None else f"only at {record.rel(first.received_ms)}"
        seen = _state_by(record, cycle.namespace, cycle.resume_sent_ms, deadline, answers)
        violations.append(
            Violation(
                LIVENESS,
                cycle.namespace,
                None,
                deadline,
                f"probe ({cycle.write.via} write covers {covers}, resumed "
                f"{record.rel(cycle.resume_done_ms)}): stable covering it by "
                f"{record.rel(deadline)} "
                f"expected, {late}; {seen}",
                record.chaos_during(cycle.resume_done_ms, deadline),
            )
        )
    if record.settle_started_ms is not None:
        deadline = record.settle_started_ms + bounds.base_liveness_ms + REBALANCE_ALLOWANCE_MS
        for namespace, writes in _acknowledged_by_namespace(record).items():
            covers = max(w.covers_ms for w in writes)
            settle = [a for a in by_ns.get(namespace, []) if a.purpose == "settle"]
            first = next(
                (a for a in settle if a.is_stable and (a.stable_as_of or 0) >= covers), None
            )
            if first is not None and first.received_ms <= deadline:
                continue
            late = "never" if first is None else f"only at {record.rel(first.received_ms)}"
            seen = _state_by(record, namespace, record.settle_started_ms, deadline, settle)
            violations.append(
                Violation(
                    LIVENESS,
                    namespace,
                    None,
                    deadline,
                    f"settle: stable covering the latest write ({covers}) by "
                    f"{record.rel(deadline)} "
                    f"expected, {late}; {seen}",
                    "none (settle phase)",
                )
            )
    return violations, undetermined


def http_flips(record: Record) -> list[Exchange]:
    """Answers `is_stable: true` whose preceding answer (any worker) said `false`."""
    flips = []
    for answers in _answers_by_namespace(record).values():
        for previous, a in zip(answers, answers[1:], strict=False):
            if a.is_stable and previous.is_stable is False:
                flips.append(a)
    return flips


def unmatched_flips(record: Record) -> list[Exchange]:
    events: dict[str, list[int]] = defaultdict(list)
    for event in record.events:
        if event.is_stable and event.stable_as_of is not None:
            events[event.namespace].append(event.stable_as_of)
    return [
        a
        for a in http_flips(record)
        if not any(v >= (a.stable_as_of or 0) for v in events.get(a.namespace, ()))
    ]


def check_missing_event(record: Record) -> list[Violation]:
    """Category 5: every false→true flip seen over HTTP is an event on `{prefix}.stability`."""
    return [
        Violation(
            MISSING_EVENT,
            a.namespace,
            a.worker,
            a.received_ms,
            f"flip to stable: {_fmt_answer(record, a)}; no event is_stable=true with "
            f"stable_as_of >= {a.stable_as_of} among "
            f"{sum(1 for e in record.events if e.namespace == a.namespace)} events of it",
            record.chaos_during(a.sent_ms, a.received_ms),
        )
        for a in unmatched_flips(record)
    ]


def classify_5xx(record: Record, exchange: Exchange) -> str:
    """`not_ready` | `upstream` | `layer` (category 6)."""
    assert exchange.status is not None and exchange.status >= 500
    if exchange.status == 503 and exchange.retry_after:
        return "not_ready"
    if FAULT_MARKER in (exchange.error or ""):
        return "upstream"
    if exchange.status in (502, 504) and any(
        w.overlaps(exchange.sent_ms, exchange.received_ms, UPSTREAM_GRACE_MS)
        for w in record.windows(UPSTREAM_KINDS)
    ):
        return "upstream"
    return "layer"


def check_layer_5xx(record: Record) -> tuple[list[Violation], Counter[str]]:
    """Category 6; also returns the counts of every 5xx class and of transport errors."""
    violations = []
    counts: Counter[str] = Counter()
    down = record.windows(MEMBERSHIP_KINDS)
    for e in record.exchanges:
        if e.status is None:
            during = any(
                w.target == e.worker and w.overlaps(e.sent_ms, e.received_ms, 1000) for w in down
            )
            counts[f"transport_{'while_down' if during else 'other'}"] += 1
            continue
        if e.status < 500:
            continue
        kind = classify_5xx(record, e)
        counts[f"5xx_{kind}"] += 1
        if kind == "layer":
            violations.append(
                Violation(
                    LAYER_5XX,
                    e.namespace,
                    e.worker,
                    e.received_ms,
                    f"{e.kind} ({e.purpose}) sent {record.rel(e.sent_ms)} answered {e.status} "
                    f"(Retry-After={e.retry_after}): {e.error!r}",
                    record.chaos_during(e.sent_ms, e.received_ms),
                )
            )
    return violations, counts


def check_watermark_lag(record: Record, bounds: Bounds) -> list[Violation]:
    """Category 7: stable answers whose watermark is below the namespace's last write (all of
    them as `watermark_lag`; beyond the safety margin also as `watermark_lag_beyond_margin`),
    and namespaces left like that at the end (`watermark_lag_at_end`)."""
    violations = []
    for a in record.exchanges:
        if a.has_layer and a.is_stable and a.stable_as_of is not None and a.last_write_ms:
            behind = a.last_write_ms - a.stable_as_of
            if behind <= 0:
                continue
            for category in (LAG, LAG_BEYOND_MARGIN):
                if category == LAG_BEYOND_MARGIN and behind <= bounds.safety_margin_ms:
                    continue
                violations.append(
                    Violation(
                        category,
                        a.namespace,
                        a.worker,
                        a.received_ms,
                        f"{_fmt_answer(record, a)}: {behind} ms behind",
                        record.chaos_during(a.sent_ms, a.received_ms),
                    )
                )
    ends = _last_settle_answers(record)
    for namespace, per_worker in ends.items():
        for worker, a in per_worker.items():
            if a.is_stable and a.stable_as_of is not None and a.last_write_ms:
                if a.stable_as_of < a.last_write_ms:
                    violations.append(
                        Violation(
                            LAG_AT_END,
                            namespace,
                            worker,
                            a.received_ms,
                            f"at the end: {_fmt_answer(record, a)}",
                            "none (settle phase)",
                        )
                    )
    return violations


def dump(record: Record, directory: Path) -> None:
    """The raw record as JSON lines (one file per kind), for post-mortems."""
    kinds: dict[str, list[Any]] = {
        "exchanges": record.exchanges,
        "writes": record.writes,
        "probes": record.probes,
        "chaos": record.chaos,
        "events": record.events,
    }
    for name, items in kinds.items():
        with open(directory / f"{name}.jsonl", "w") as out:
            for item in items:
                out.write(json.dumps(asdict(item)) + "\n")


@dataclass
class Verdict:
    violations: dict[str, list[Violation]]
    counts: Counter[str]
    undetermined_probes: int


def check_all(record: Record, bounds: Bounds) -> Verdict:
    found: dict[str, list[Violation]] = {c: [] for c in ALL_CATEGORIES}
    for v in check_false_stable(record):
        found[v.category].append(v)
    found[REGRESSION] = check_watermark_regression(record)
    found[LOST_WRITE] = check_lost_write(record, bounds)
    found[LIVENESS], undetermined = check_liveness(record, bounds)
    found[MISSING_EVENT] = check_missing_event(record)
    found[LAYER_5XX], counts = check_layer_5xx(record)
    for v in check_watermark_lag(record, bounds):
        found[v.category].append(v)
    return Verdict(found, counts, undetermined)


def print_violations(
    record: Record, verdict: Verdict, limit: int, out: Callable[[str], None] = print
) -> None:
    for category in ALL_CATEGORIES:
        found = sorted(verdict.violations[category], key=lambda v: v.at_ms)
        if not found:
            continue
        out(f"--- {category}: {len(found)}")
        for v in found[:limit]:
            where = f"ns={v.namespace}" + (f" worker={v.worker}" if v.worker else "")
            out(f"  [{record.rel(v.at_ms)}] {where}: {v.message} | chaos: {v.chaos}")
        if len(found) > limit:
            out(f"  … and {len(found) - limit} more {category}")


def summary_counts(verdict: Verdict, categories: Sequence[str] = ALL_CATEGORIES) -> str:
    return " ".join(f"{c}={len(verdict.violations[c])}" for c in categories)
