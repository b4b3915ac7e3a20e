"""Chaos harness: Layer operated badly on purpose, judged from outside.

    .venv/bin/python bench/chaos.py --duration 300          # 5 minutes of chaos
    .venv/bin/python bench/chaos.py --duration 40 --short   # tests/integration/test_chaos.py
    .venv/bin/python bench/chaos.py --seed 7 --strict       # reproduce a plan; gate on everything

It starts the embedded broker, the turbopuffer emulator (`--index-delay-ms 300`) and two
workers (4 partitions, tick 100 ms, fast poll 300 ms, safety margin 200 ms, poll backoff
ceiling 2 s), with their own app id, topic prefix and run directory (logs there, printed at
the start). Then, for `--duration` seconds:

- writers: through Layer's proxy (`POST {worker}/v2/namespaces/{ns}`, alternating workers),
  and direct to the emulator followed by a plain aiokafka write notification on
  `{prefix}.writes` (`written_at_ms` taken after the emulator's ack);
- readers: `GET /v2/namespaces/{ns}/metadata` on every live worker;
- probe cycles (two loops): pause a probe namespace's indexing in the emulator, write (proxy
  or direct, alternately), read every 100 ms from every live worker, resume, read until
  stable again;
- chaos, one action at a time on a seeded random plan (printed): upstream 500s, 429s
  (`retry_after_ms` 200) and latency through the emulator's fault rules, for a few seconds;
  SIGKILL + restart of a worker, traffic sent to it as soon as its port accepts, before it is
  ready; SIGSTOP/SIGCONT of the broker for ~2 s; a third worker joining and later leaving
  (SIGTERM). Every action is logged with its time.

Then chaos and writers stop, everything settles (bounded), and the independent observer
(bench/chaos_observer.py: a pure client, no Layer imports) checks what clients saw. Its
module docstring defines the categories exactly: `false_stable` (and its splits
`false_stable_broker_stalled`, `false_stable_direct_unnotified`), `watermark_regression`,
`lost_write`, `liveness`, `missing_event`, `layer_5xx`, `watermark_lag`.

Exit status: 0 when no *gating* category has a violation, 1 otherwise (2: the harness could
not run). Gating by default: `false_stable`, `false_stable_broker_stalled`,
`watermark_regression`, `lost_write`, `liveness`, `layer_5xx`, `watermark_lag_beyond_margin`,
`watermark_lag_at_end`. `--strict` adds the other three, reported but not gating because
Layer does not promise them:
- `false_stable_direct_unnotified`: a direct producer's write whose notification has not
  reached Kafka is invisible to every worker; only the read's own upstream fetch can reveal
  it (and does, for a read of `/metadata`): this is what no single worker can decide;
- `watermark_lag`: invariant 2 allows a stable `stable_as_of` up to the safety margin below
  `last_write_ms` for a moment (rule 4 makes it catch up; beyond the margin, or left at the
  end, it gates);
- `missing_event`: stability events are published after the table write, at least once; a
  worker killed in between may lose one until the changelog-driven re-publication exists.
`--gate a,b,...` chooses the gating categories explicitly.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
for path in (str(ROOT), str(ROOT / "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)

from chaos_observer import (  # noqa: E402
    ALL_CATEGORIES,
    DEFAULT_GATING,
    FAULT_MARKER,
    Bounds,
    ChaosWindow,
    Observer,
    check_all,
    dump,
    http_flips,
    now_ms,
    print_violations,
    summary_counts,
    unmatched_flips,
)

from layer.embedded_broker import EmbeddedBroker  # noqa: E402
from tests.processes import EmulatorProcess, WorkerProcess, layer_env  # noqa: E402

API_KEY = "tpuf-chaos-key"
PARTITIONS = 4
INDEX_DELAY_MS = 300
FAST_POLL_MS = 300
SAFETY_MARGIN_MS = 200
POLL_MAX_BACKOFF_MS = 2000
REGULAR_NAMESPACES = 8
PROBE_LOOPS = 2
PROBE_NAMESPACES_PER_LOOP = 3
#: Upper bound of the settle phase (the checks' own bounds are tighter; this only stops waiting).
SETTLE_TIMEOUT_S = 40.0
READY_TIMEOUT_S = 60.0
#: How long an action waits for every live worker to be ready again before going on (a worker
#: stuck "not ready" is Layer's problem to report, not a reason to stop the chaos).
ALL_READY_TIMEOUT_S = 20.0
CHAOS_KINDS = (
    "upstream_500",
    "upstream_429",
    "upstream_latency",
    "kill_restart",
    "broker_stall",
    "join",
)


@dataclass(frozen=True)
class Options:
    duration_s: float
    seed: int
    short: bool
    gating: tuple[str, ...]
    limit: int
    lost_write_tolerance_ms: int
    run_dir: Path


@dataclass
class Timing:
    """The plan's pace: `--short` packs every kind of chaos into ~40 s."""

    gap_s: tuple[float, float]
    fault_s: tuple[float, float]
    stall_s: tuple[float, float]
    leave_after_actions: int
    probe_hold_s: tuple[float, float]
    probe_give_up_s: float

    @classmethod
    def for_options(cls, short: bool) -> Timing:
        if short:
            return cls((1.0, 2.5), (1.5, 3.0), (1.5, 2.5), 1, (0.5, 1.2), 20.0)
        return cls((3.0, 8.0), (2.0, 5.0), (1.5, 2.5), 3, (0.8, 2.0), 30.0)


def plan(rng: random.Random, count: int) -> list[str]:
    """Every kind once (shuffled), then random kinds; `join` is followed by `leave` later."""
    first = list(CHAOS_KINDS)
    rng.shuffle(first)
    kinds = first + [rng.choice(CHAOS_KINDS) for _ in range(max(0, count - len(first)))]
    return kinds


class Harness:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.timing = Timing.for_options(options.short)
        self.chaos_rng = random.Random(options.seed)
        self.traffic_rng = random.Random(options.seed + 1)
        self.dir = options.run_dir
        self.app_id = f"chaos-{uuid.uuid4().hex[:8]}"
        self.started = time.monotonic()
        self.started_ms = now_ms()  # the origin of every "+N s" the harness and observer print
        self.broker: EmbeddedBroker | None = None
        self.emulator: EmulatorProcess | None = None
        self.workers: dict[str, WorkerProcess] = {}
        self.observer: Observer | None = None
        self.busy: set[str] = set()  # workers a chaos action is operating on
        self.actions = 0
        self.crashes = 0
        self.stuck_not_ready = 0
        self.stop_traffic = asyncio.Event()
        self.fault_ids = 0
        self.regular = [f"chaos-ns-{i}" for i in range(REGULAR_NAMESPACES)]
        self.probe_pools = [
            [f"chaos-probe-{loop}-{i}" for i in range(PROBE_NAMESPACES_PER_LOOP)]
            for loop in range(PROBE_LOOPS)
        ]
        self.paused: set[str] = set()  # probe namespaces whose indexing is paused now
        self.admin: httpx.AsyncClient | None = None  # readiness probes (not judged)

    # ------------------------------------------------------------ output

    def log(self, line: str) -> None:
        print(f"[+{time.monotonic() - self.started:7.3f}s] {line}", flush=True)

    # ------------------------------------------------------------ processes

    def start_processes(self) -> None:
        self.broker = EmbeddedBroker(log_path=self.dir / "broker.log")
        self.broker.start()
        self.emulator = EmulatorProcess(
            self.dir / "emulator.log",
            "--index-delay-ms",
            str(INDEX_DELAY_MS),
            api_keys=(API_KEY,),
        )
        self.env = layer_env(
            app_id=self.app_id,
            broker_url=self.broker.url,
            upstream_url=self.emulator.url,
            api_key=API_KEY,
            LAYER_TOPIC_PARTITIONS=str(PARTITIONS),
            LAYER_TICK_INTERVAL_MS="100",
            LAYER_FAST_POLL_INTERVAL_MS=str(FAST_POLL_MS),
            LAYER_SLOW_POLL_INTERVAL_MS="5000",
            LAYER_SAFETY_MARGIN_MS=str(SAFETY_MARGIN_MS),
            LAYER_POLL_MAX_BACKOFF_MS=str(POLL_MAX_BACKOFF_MS),
        )
        for name in ("w1", "w2", "w3"):
            self.workers[name] = WorkerProcess(
                self.env, self.dir / name, self.dir / f"{name}.log", api_key=API_KEY
            )
        print(f"run dir: {self.dir}  (broker.log, emulator.log, w1.log, w2.log, w3.log)")
        print(f"seed: {self.options.seed}  app id / topic prefix: {self.app_id}")
        print(
            f"broker: {self.broker.bootstrap} (pid {self.broker_pid()})  "
            f"emulator: {self.emulator.url} (--index-delay-ms {INDEX_DELAY_MS})"
        )
        for name, worker in self.workers.items():
            print(f"{name}: {worker.url}")
        print(
            f"workers: {PARTITIONS} partitions, tick 100 ms, fast poll {FAST_POLL_MS} ms, "
            f"safety margin {SAFETY_MARGIN_MS} ms, poll backoff ceiling {POLL_MAX_BACKOFF_MS} ms"
        )
        sys.stdout.flush()
        self.workers["w1"].start()
        self.workers["w2"].start()

    def broker_pid(self) -> int:
        assert self.broker is not None and self.broker._process is not None
        return self.broker._process.pid  # started in its own session: pid == process group

    def stop_processes(self) -> None:
        if self.broker is not None and self.broker.running:
            os.killpg(self.broker_pid(), signal.SIGCONT)  # never leave it stopped
        for worker in self.workers.values():
            worker.close()
        if self.emulator is not None:
            self.emulator.stop()
        if self.broker is not None:
            self.broker.stop()

    async def ready(self, name: str) -> bool:
        assert self.admin is not None
        try:
            response = await self.admin.get(f"{self.workers[name].url}/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def all_live_ready(self, timeout_s: float = ALL_READY_TIMEOUT_S) -> str:
        """Wait until every live worker's /readyz is 200; say how it ended."""
        assert self.observer is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            live = list(self.observer.live)
            if all(await asyncio.gather(*(self.ready(n) for n in live))):
                return "all live workers ready"
            await asyncio.sleep(0.1)
        not_ready = [n for n in self.observer.live if not await self.ready(n)]
        self.stuck_not_ready += 1
        self.log(f"WARNING: {not_ready} still not ready (503) after {timeout_s:.0f} s; going on")
        return f"{not_ready} NOT ready after {timeout_s:.0f} s"

    async def port_accepts(self, name: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        worker = self.workers[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", worker.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return

    async def bring_up(self, name: str) -> None:
        """Spawn `name`; from the moment its port accepts, send it traffic; return when ready."""
        assert self.observer is not None
        worker = self.workers[name]
        worker.spawn()
        await self.port_accepts(name)
        self.log(f"chaos: {name} port accepts (pid {worker.pid}); traffic to it before ready")
        stop = asyncio.Event()
        burst = asyncio.create_task(self.burst(name, stop))
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not await self.ready(name):
                if worker.process is not None and worker.process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {worker.process.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_S} s")
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await burst
        self.log(f"chaos: {name} ready {time.monotonic() - worker.started_at:.1f} s after spawn")
        self.observer.live.append(name)

    async def burst(self, name: str, stop: asyncio.Event) -> None:
        """Reads and writes to one (not yet ready) worker, every 50 ms."""
        assert self.observer is not None
        i = 0
        while not stop.is_set():
            ns = self.regular[i % len(self.regular)]
            jobs = [self.observer.read(name, ns, "burst")]
            jobs += [self.observer.read(name, p, "burst") for p in list(self.paused)]
            if i % 2 == 0:
                jobs.append(self.observer.write_proxy(name, ns, "burst"))
            await asyncio.gather(*jobs)
            i += 1
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------ traffic

    async def every(self, interval_s: float, step: Callable[[int], Awaitable[Any]]) -> None:
        i = 0
        while not self.stop_traffic.is_set():
            try:
                await step(i)
            except Exception as exc:  # noqa: BLE001 - a client-side failure is logged, not fatal
                self.log(f"traffic error: {type(exc).__name__}: {exc}")
            i += 1
            await asyncio.sleep(interval_s)

    async def proxy_write(self, i: int) -> None:
        assert self.observer is not None
        live = self.observer.live
        if live:
            ns = self.traffic_rng.choice(self.regular)
            await self.observer.write_proxy(live[i % len(live)], ns, "writer")

    async def direct_write(self, i: int) -> None:
        assert self.observer is not None
        await self.observer.write_direct(self.traffic_rng.choice(self.regular))

    async def background_read(self, i: int) -> None:
        assert self.observer is not None
        ns = self.regular[i % len(self.regular)]
        await asyncio.gather(*(self.observer.read(w, ns, "background") for w in self.observer.live))

    async def probe_loop(self, loop: int) -> None:
        assert self.observer is not None
        pool = self.probe_pools[loop]
        i = 0
        while not self.stop_traffic.is_set():
            ns = pool[i % len(pool)]
            via = "proxy" if (i + loop) % 2 == 0 else "direct"
            self.paused.add(ns)
            try:
                cycle = await self.observer.probe(
                    ns,
                    via=via,
                    hold_s=self.traffic_rng.uniform(*self.timing.probe_hold_s),
                    give_up_s=self.timing.probe_give_up_s,
                )
            except Exception as exc:  # noqa: BLE001
                self.log(f"probe {ns} failed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)
            else:
                if cycle.aborted:
                    self.log(f"probe {ns} aborted: {cycle.aborted}")
            finally:
                self.paused.discard(ns)
            i += 1
            await asyncio.sleep(0.2)

    async def supervise(self) -> None:
        """A worker that exits on its own (not by chaos) is logged, counted and restarted."""
        assert self.observer is not None
        while not self.stop_traffic.is_set():
            for name in list(self.observer.live):
                process = self.workers[name].process
                if name in self.busy or process is None or process.poll() is None:
                    continue
                self.crashes += 1
                self.observer.live.remove(name)
                window = self.window("crash", name, f"exited with {process.returncode}")
                self.log(f"CRASH: {name} exited with {process.returncode} on its own; restarting")
                self.busy.add(name)
                try:
                    await self.bring_up(name)
                    await self.all_live_ready()
                finally:
                    self.busy.discard(name)
                    window.end_ms = now_ms()
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------ chaos

    def window(self, kind: str, target: str, detail: str) -> ChaosWindow:
        assert self.observer is not None
        window = ChaosWindow(kind, target, now_ms(), detail=detail)
        self.observer.record.chaos.append(window)
        return window

    async def upstream_fault(self, kind: str) -> None:
        assert self.observer is not None
        self.fault_ids += 1
        rule: dict[str, Any] = {"message": f"{FAULT_MARKER}-{self.fault_ids}"}
        if kind == "upstream_500":
            rule |= {"status": 500, "route": self.chaos_rng.choice([None, "metadata", "write"])}
        elif kind == "upstream_429":
            rule |= {
                "status": 429,
                "retry_after_ms": 200,
                "route": self.chaos_rng.choice([None, "metadata", "write"]),
            }
        else:
            rule |= {
                "latency_ms": self.chaos_rng.choice([300, 1500, 3000]),
                "route": self.chaos_rng.choice([None, "metadata"]),
            }
        rule = {k: v for k, v in rule.items() if v is not None}
        seconds = self.chaos_rng.uniform(*self.timing.fault_s)
        detail = json.dumps(rule, sort_keys=True) + f" for {seconds:.1f} s"
        fault = await self.observer.control("POST", "/faults", rule)
        window = self.window(kind, "emulator", detail)
        self.log(f"chaos: {kind} {detail}")
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.observer.control("DELETE", f"/faults/{fault['id']}")
            window.end_ms = now_ms()
            self.log(f"chaos: {kind} fault {fault['id']} removed")

    async def kill_restart(self) -> None:
        assert self.observer is not None
        candidates = [n for n in ("w1", "w2") if n in self.observer.live and n not in self.busy]
        if not candidates:
            self.log("chaos: kill_restart skipped (no worker free)")
            return
        name = self.chaos_rng.choice(candidates)
        worker = self.workers[name]
        self.busy.add(name)
        window = self.window("kill_restart", name, f"SIGKILL pid {worker.pid}")
        self.log(f"chaos: kill_restart SIGKILL {name} (pid {worker.pid})")
        try:
            self.observer.live.remove(name)
            await asyncio.to_thread(worker.stop, signal.SIGKILL)
            await self.bring_up(name)
            readiness = await self.all_live_ready()
        finally:
            self.busy.discard(name)
            window.end_ms = now_ms()
        self.log(f"chaos: kill_restart {name} done; {readiness}")

    async def broker_stall(self) -> None:
        seconds = self.chaos_rng.uniform(*self.timing.stall_s)
        pid = self.broker_pid()
        window = self.window("broker_stall", "broker", f"SIGSTOP pid {pid} for {seconds:.1f} s")
        self.log(f"chaos: broker_stall SIGSTOP broker (pid {pid}) for {seconds:.1f} s")
        os.killpg(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.killpg(pid, signal.SIGCONT)
            window.end_ms = now_ms()
            self.log("chaos: broker_stall SIGCONT broker")

    async def join(self) -> None:
        assert self.observer is not None
        self.busy.add("w3")
        window = self.window("join", "w3", "third worker joins")
        self.log("chaos: join w3 (spawn)")
        try:
            await self.bring_up("w3")
            readiness = await self.all_live_ready()
        finally:
            self.busy.discard("w3")
            window.end_ms = now_ms()
        self.log(f"chaos: join w3 done; {readiness}")

    async def leave(self) -> None:
        assert self.observer is not None
        worker = self.workers["w3"]
        self.busy.add("w3")
        window = self.window("leave", "w3", f"SIGTERM pid {worker.pid}")
        self.log(f"chaos: leave SIGTERM w3 (pid {worker.pid})")
        try:
            if "w3" in self.observer.live:
                self.observer.live.remove("w3")
            await asyncio.to_thread(worker.stop, signal.SIGTERM)
            self.log(
                f"chaos: w3 exited with {worker.process.returncode if worker.process else '?'}"
            )
            readiness = await self.all_live_ready()
        finally:
            self.busy.discard("w3")
            window.end_ms = now_ms()
        self.log(f"chaos: leave w3 done; {readiness}")

    async def run_chaos(self) -> None:
        assert self.observer is not None
        kinds = plan(self.chaos_rng, 200)
        gaps = [self.chaos_rng.uniform(*self.timing.gap_s) for _ in kinds]
        print(
            "chaos plan (seeded; actions run one at a time, each after its gap): "
            + ", ".join(f"+{g:.1f}s {k}" for k, g in zip(kinds[:12], gaps[:12], strict=True))
            + ", …",
            flush=True,
        )
        end = time.monotonic() + self.options.duration_s
        joined_at: int | None = None
        for i, (kind, gap) in enumerate(zip(kinds, gaps, strict=True)):
            await asyncio.sleep(gap)
            if time.monotonic() >= end:
                break
            if kind == "join" and joined_at is not None:
                kind = "upstream_500"  # w3 is already in; membership changes stay paired
            self.actions += 1
            await self.action(kind)
            if kind == "join":
                joined_at = i
            elif joined_at is not None and i - joined_at >= self.timing.leave_after_actions:
                await asyncio.sleep(self.chaos_rng.uniform(*self.timing.gap_s))
                self.actions += 1
                await self.action("leave")
                joined_at = None
        if joined_at is not None:
            self.actions += 1
            await self.action("leave")

    async def action(self, kind: str) -> None:
        if kind.startswith("upstream_"):
            await self.upstream_fault(kind)
        elif kind == "kill_restart":
            await self.kill_restart()
        elif kind == "broker_stall":
            await self.broker_stall()
        elif kind == "join":
            await self.join()
        elif kind == "leave":
            await self.leave()
        else:
            raise ValueError(kind)

    # ------------------------------------------------------------ settle

    async def settle(self) -> None:
        """Read every written namespace from every live worker until it has settled (bounded)."""
        observer = self.observer
        assert observer is not None
        record = observer.record
        await self.all_live_ready(READY_TIMEOUT_S)
        record.settle_started_ms = now_ms()
        self.log("settle: reading every written namespace until stable and covering its writes")
        latest: dict[str, int] = {}
        for write in record.writes:
            if write.acknowledged:
                latest[write.namespace] = max(latest.get(write.namespace, 0), write.covers_ms)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        pending = set(latest)
        while pending and time.monotonic() < deadline:
            for ns in sorted(pending):
                answers = await asyncio.gather(
                    *(observer.read(w, ns, "settle") for w in observer.live)
                )
                if all(
                    a.is_stable
                    and (a.stable_as_of or 0) >= latest[ns]
                    and (a.last_write_ms or 0) >= latest[ns]
                    for a in answers
                ):
                    pending.discard(ns)
            await asyncio.sleep(0.3)
        if pending:
            self.log(f"settle: {len(pending)} namespaces not settled after {SETTLE_TIMEOUT_S} s")
        # One more round, so every namespace's last answer per worker is from the very end.
        for ns in sorted(latest):
            await asyncio.gather(*(observer.read(w, ns, "settle") for w in observer.live))
        flips_deadline = time.monotonic() + 10
        while unmatched_flips(record) and time.monotonic() < flips_deadline:
            await asyncio.sleep(0.2)
        record.settle_ended_ms = now_ms()
        record.live_at_end = tuple(observer.live)
        self.log(
            f"settle: done ({len(latest)} namespaces, {len(http_flips(record))} HTTP flips, "
            f"{len(record.events)} stability events)"
        )

    # ------------------------------------------------------------ main

    async def run(self) -> int:
        self.observer = Observer(
            workers={n: w.url for n, w in self.workers.items()},
            emulator_url=self.emulator.url if self.emulator else "",
            api_key=API_KEY,
            bootstrap=self.broker.bootstrap if self.broker else "",
            topic_prefix=self.app_id,
            origin_ms=self.started_ms,
        )
        observer = self.observer
        observer.live = ["w1", "w2"]
        self.admin = httpx.AsyncClient(timeout=5.0)
        await observer.start()
        await self.all_live_ready(READY_TIMEOUT_S)
        stop_events = asyncio.Event()
        follower = asyncio.create_task(observer.follow_stability(stop_events))
        self.log(f"chaos: start ({self.options.duration_s:.0f} s)")
        chaos_started = time.monotonic()
        traffic = [
            asyncio.create_task(self.every(0.15, self.proxy_write)),
            asyncio.create_task(self.every(0.2, self.direct_write)),
            asyncio.create_task(self.every(0.1, self.background_read)),
            asyncio.create_task(self.supervise()),
            *(asyncio.create_task(self.probe_loop(k)) for k in range(PROBE_LOOPS)),
        ]
        try:
            await self.run_chaos()
        finally:
            chaos_s = time.monotonic() - chaos_started
            self.log("chaos: stop; writers and probes finishing")
            self.stop_traffic.set()
            await asyncio.gather(*traffic)
            await observer.control("DELETE", "/faults")
            await observer.drain_notifications()
        await self.settle()
        stop_events.set()
        await follower
        await observer.close()
        await self.admin.aclose()
        return self.report(chaos_s)

    def report(self, chaos_s: float) -> int:
        assert self.observer is not None
        record = self.observer.record
        bounds = Bounds(
            fast_poll_ms=FAST_POLL_MS,
            index_delay_ms=INDEX_DELAY_MS,
            safety_margin_ms=SAFETY_MARGIN_MS,
            poll_max_backoff_ms=POLL_MAX_BACKOFF_MS,
            lost_write_tolerance_ms=self.options.lost_write_tolerance_ms,
        )
        verdict = check_all(record, bounds)
        print_violations(record, verdict, self.options.limit)
        writes = [w for w in record.writes if w.acknowledged]
        reads = [e for e in record.exchanges if e.kind == "read"]
        probes = [p for p in record.probes if p.write is not None and not p.aborted]
        counts = dict(sorted(verdict.counts.items()))
        proxied = sum(1 for w in writes if not w.direct)
        print(
            f"counts: acknowledged writes {len(writes)} (proxy {proxied}, "
            f"direct {len(writes) - proxied}), unacknowledged {len(record.writes) - len(writes)}; "
            f"reads {len(reads)} (200 with layer: {sum(1 for e in reads if e.has_layer)}); "
            f"probe cycles {len(probes)} (undetermined {verdict.undetermined_probes}); "
            f"stability events {len(record.events)}; worker crashes {self.crashes}; "
            f"waits for all-ready that timed out after {ALL_READY_TIMEOUT_S:.0f} s: "
            f"{self.stuck_not_ready}; {counts}"
        )
        gating_failed = [c for c in self.options.gating if verdict.violations[c]]
        outcome = "FAIL (gating: " + ",".join(gating_failed) + ")" if gating_failed else "PASS"
        summary = (
            f"chaos: {chaos_s:.0f} s, {len(writes):,} writes, {len(reads):,} reads, "
            f"{self.actions} chaos actions — violations: {summary_counts(verdict)} — "
            f"gating [{','.join(self.options.gating)}]: {outcome}"
        )
        print(summary, flush=True)
        report = {
            "summary": summary,
            "seed": self.options.seed,
            "violations": {
                c: [dataclasses.asdict(v) for v in vs] for c, vs in verdict.violations.items()
            },
            "counts": counts,
            "chaos": [dataclasses.asdict(w) for w in record.chaos],
        }
        (self.dir / "report.json").write_text(json.dumps(report, indent=1))
        dump(record, self.dir)
        print(
            f"report: {self.dir / 'report.json'} (raw: exchanges/writes/probes/chaos/events.jsonl)"
        )
        return 1 if gating_failed else 0


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of chaos")
    parser.add_argument("--short", action="store_true", help="tight plan for a ~40 s test run")
    parser.add_argument("--seed", type=int, default=None, help="chaos plan seed (printed)")
    parser.add_argument("--strict", action="store_true", help="every category gates")
    parser.add_argument("--gate", default=None, help="comma-separated gating categories")
    parser.add_argument("--limit", type=int, default=10, help="violations printed per category")
    parser.add_argument("--lost-write-tolerance-ms", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.gate is not None:
        gating = tuple(c for c in args.gate.split(",") if c)
        unknown = set(gating) - set(ALL_CATEGORIES)
        if unknown:
            parser.error(
                f"unknown categories {sorted(unknown)}; known: {', '.join(ALL_CATEGORIES)}"
            )
    else:
        gating = ALL_CATEGORIES if args.strict else DEFAULT_GATING
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    run_dir = args.run_dir or Path(
        os.environ.get("BENCH_RUN_ROOT", "/tmp/layer-bench"),
        f"chaos-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    return Options(
        args.duration, seed, args.short, gating, args.limit, args.lost_write_tolerance_ms, run_dir
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    print(f"=== chaos harness (git {_git_head()}) ===", flush=True)
    harness = Harness(options)
    try:
        try:
            harness.start_processes()
        except BaseException as exc:
            print(f"chaos: could not start the cluster: {type(exc).__name__}: {exc}", flush=True)
            return 2
        return asyncio.run(harness.run())
    finally:
        harness.stop_processes()


def _git_head() -> str:
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "agents", "tables", "layer", "api"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return head + (" + uncommitted changes in agents/tables/layer/api" if dirty else "")


if __name__ == "__main__":
    sys.exit(main())
