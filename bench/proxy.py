"""Benchmark: the transparent proxy (api/proxy.py) against the same calls straight to the emulator.

    .venv/bin/python bench/proxy.py            # everything, ~2.5-3 minutes
    .venv/bin/python bench/proxy.py --quick    # smaller counts and a 10 MiB write, a smoke run

One embedded broker, one turbopuffer emulator and one Layer worker (default settings,
`LAYER_BROKER_PROFILE=embedded`), all on this machine. The emulator is `layer.emulator`'s
`Emulator` with its request-body limit raised (see EMULATOR_BOOT): `python -m
layer.emulator` keeps aiohttp's 1 MiB default and answers 413 to any larger write.

Part 1, latency and throughput. Queries: `POST /v2/namespaces/{ns}/query`, an ANN query
(`rank_by: ["vector", "ANN", q]`, top_k 10) on a namespace of 1000 rows of DIM-dim vectors,
seeded through Layer and stable before measuring (so the query goes upstream unfiltered;
`X-Layer-Filtered` is counted on every Layer answer). Writes: `POST /v2/namespaces/{ns}`
upserting 3 rows (the same ids each time, so the namespace does not grow); through Layer
they are stamped and each 2xx queues a write notification. One persistent aiohttp session
(keep-alive, `Accept-Encoding: identity`). Concurrency 1: the targets alternate request by
request (L,D then D,L) so machine noise hits both; added latency = Layer − direct (p50,
p99 and the median of per-pair differences). Concurrency 32: blocks of requests alternate
between the targets; throughput per target and their ratio (also the median of per-block-
pair ratios), per-request percentiles, and CPU per request of each process (/proc).
Target (the issue): <= 1 ms added at p50, concurrency 1. Then py-spy profiles of the worker
under each load (after the measurements, so they do not perturb them). `--baseline-env
PYTHONPATH=<an export of an older commit>` runs part 1 also through a second worker with
those settings, then through the first again: before/after in one run (run it outside the
repository, whose cwd would shadow the export).

Part 2, memory while proxying a ~100 MiB write (`upsert_rows` of 1536-dim JSON float
vectors), each on a fresh connection. The worker's peak RSS is read from VmHWM after
resetting it (`echo 5 > /proc/PID/clear_refs`), and VmRSS is sampled every ~1 ms in a
thread for the timeline. Growth = peak − idle RSS just before. Target: growth <= 2 × body.
Also: RSS 1 s after the answer (connection idle) and after closing the connection, the
worst `GET /healthz` latency meanwhile (event-loop stalls), the same body straight to the
emulator, a second write with py-spy attached, a body over LAYER_MAX_BODY_BYTES, and the
stamping scan (api/write_body.plan_stamps) run in this process (time; tracemalloc peak).

Part 3, the proxy's upstream call for a small write replayed in this process with httpx
(as api/proxy.py), httpx2 and aiohttp clients: client CPU per request and latency. It
tells what replacing the upstream client would save; no app code is touched.

Part 4, hiding Layer's `_layer_upserted_at` from a 1,000-row query answer (api/write_body.
hide_in_rows, which api/proxy.py applies to every 2xx query answer), in this process: the
answer as the emulator serialises it for `include_attributes: true` (every row stamped),
with and without 256-dim vectors; the same answer without stamps (the scan finds nothing:
one `bytes.find`); and, for scale, a json.loads + json.dumps of it. Median of 200 runs.
`--hidden-only` runs this part alone (no broker, no processes).

Nothing here asserts on time.
"""

from __future__ import annotations

import os
import sys

# bench/ holds http.py: it must not shadow the standard library's `http` (imported by
# asyncio's helpers, aiohttp and httpx). Move this directory to the end of sys.path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.append(_HERE)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
from harness import (  # noqa: E402
    API_KEY,
    ROOT,
    EmbeddedBroker,
    EmulatorProcess,
    WorkerProcess,
    base_env,
    fmt,
    out,
    percentiles,
    print_header,
    proc_cpu_s,
    process_cpu_snapshot,
    profile_stacks,
    profile_worker,
    run_dir,
    share_lines,
)

QUERY_NS = "bench-proxy-query"
WRITE_NS = "bench-proxy-write"
BIG_NS = "bench-proxy-big"
QUERY_ROWS = 1000
DIM = 8
BIG_DIM = 1536
BIG_TARGET_BYTES = 100 * 1024 * 1024
ADDED_P50_TARGET_MS = 1.0
MEMORY_FACTOR_TARGET = 2.0
MAX_BODY_BYTES_DEFAULT = 256 * 1024 * 1024

#: The emulator's aiohttp app keeps aiohttp's default `client_max_size` of 1 MiB, so
#: `python -m layer.emulator` answers 413 to any write body over 1 MiB (turbopuffer takes
#: 256 MiB). This runs the same `Emulator` (same routes, store and handlers) with only that
#: limit raised, so a 100 MiB write can reach it.
EMULATOR_BOOT = """
import asyncio, signal, sys
from layer.emulator.server import Emulator
async def main():
    emulator = Emulator([sys.argv[2]], port=int(sys.argv[1]))
    emulator.app._client_max_size = int(sys.argv[3])
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await emulator.start()
    print(
        f"emulator on {emulator.url}, "
        f"client_max_size {emulator.app._client_max_size}",
        flush=True,
    )
    await stop.wait()
    await emulator.stop()
asyncio.run(main())
"""
EMULATOR_MAX_BODY = 512 * 1024 * 1024

rng = random.Random(1234)


class BigBodyEmulator(EmulatorProcess):
    """harness.EmulatorProcess, started through EMULATOR_BOOT (body limit raised)."""

    def __init__(self, log_path: Path) -> None:
        import subprocess

        import httpx
        from harness import free_port, wait_until

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            sys.executable,
            "-c",
            EMULATOR_BOOT,
            str(self.port),
            API_KEY,
            str(EMULATOR_MAX_BODY),
        ]
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT
        )  # noqa: SIM115
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )
        wait_until(self._answers, 30, "the emulator to answer")


def proc_status_kb(pid: int, *keys: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in keys:
            values[name] = int(rest.split()[0])
    return values


def other_load(before: dict[int, tuple[str, int, float]], seconds: float) -> str:
    """CPU used during the run by processes that are not this benchmark or its children."""
    after = process_cpu_snapshot()
    me = os.getpid()
    ours = {me} | {pid for pid, (_, ppid, _) in after.items() if ppid == me}
    ours |= {pid for pid, (_, ppid, _) in before.items() if ppid == me}
    used = []
    for pid, (cmd, _, cpu) in after.items():
        if pid in ours:
            continue
        delta = cpu - before[pid][2] if pid in before else cpu
        if delta > 0.05:
            used.append((delta, pid, cmd))
    used.sort(reverse=True)
    total = sum(d for d, _, _ in used)
    top = "; ".join(f"{100 * d / seconds:.0f}% pid {pid} {cmd}" for d, pid, cmd in used[:4])
    return (
        f"other processes used {100 * total / seconds:.0f}% of a core during the run (top: {top})"
    )


# ---------------------------------------------------------------- bodies


def vec(dim: int) -> list[float]:
    return [round(rng.uniform(-1, 1), 6) for _ in range(dim)]


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def query_body() -> bytes:
    return dumps(
        {"rank_by": ["vector", "ANN", vec(DIM)], "top_k": 10, "include_attributes": ["title"]}
    )


def small_write_body() -> bytes:
    return dumps(
        {
            "upsert_rows": [
                {"id": i, "vector": vec(DIM), "title": f"row {i}", "n": rng.randint(0, 9)}
                for i in range(3)
            ],
            "distance_metric": "cosine_distance",
        }
    )


def big_write_body(target_bytes: int) -> tuple[bytes, int]:
    """`upsert_rows` of BIG_DIM-dim JSON float vectors, ~target_bytes long; (body, rows)."""
    pool = [
        ",".join(f"{rng.uniform(-1, 1):.6f}" for _ in range(BIG_DIM)).encode() for _ in range(48)
    ]
    head, tail = b'{"upsert_rows":[', b'],"distance_metric":"cosine_distance"}'
    rows: list[bytes] = []
    size = len(head) + len(tail)
    i = 0
    while size < target_bytes:
        row = b'{"id":%d,"vector":[%s],"title":"document %d","category":"c%d"}' % (
            i,
            pool[i % len(pool)],
            i,
            i % 7,
        )
        rows.append(row)
        size += len(row) + 1
        i += 1
    return head + b",".join(rows) + tail, i


# ---------------------------------------------------------------- client


class Client:
    """One persistent aiohttp session (keep-alive); `post` returns ms, status and headers."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=128, force_close=False),
            headers={
                "Authorization": f"Bearer {API_KEY}",
                "Accept-Encoding": "identity",
                "Content-Type": "application/json",
            },
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=300),
        )
        self.filtered: collections.Counter[str] = collections.Counter()
        self.stable_as_of_seen: collections.Counter[bool] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()

    async def post(self, url: str, body: bytes) -> float:
        started = time.perf_counter()
        async with self.session.post(url, data=body) as response:
            answer = await response.read()
            status = response.status
            filtered = response.headers.get("X-Layer-Filtered")
            stable_as_of = response.headers.get("X-Layer-Stable-As-Of")
        elapsed_ms = (time.perf_counter() - started) * 1000
        if status != 200:
            self.errors[f"{status} {answer[:120]!r}"] += 1
            if sum(self.errors.values()) > 20:
                raise RuntimeError(f"too many errors: {dict(self.errors)}")
        if filtered is not None:
            self.filtered[filtered] += 1
            self.stable_as_of_seen[bool(stable_as_of)] += 1
        return elapsed_ms

    async def close(self) -> None:
        await self.session.close()


# ---------------------------------------------------------------- part 1


async def run_c1(
    client: Client,
    layer: str,
    direct: str,
    bodies: list[bytes],
    n: int,
    warmup: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    for i in range(warmup):
        await client.post(layer, bodies[i % len(bodies)])
        await client.post(direct, bodies[i % len(bodies)])
    lat: dict[str, list[float]] = {"layer": [], "direct": []}
    diffs: list[float] = []
    cpu0 = {name: proc_cpu_s(pid) for name, pid in pids.items()}
    t0 = time.perf_counter()
    for i in range(n):
        body = bodies[i % len(bodies)]
        if i % 2 == 0:
            l_ms = await client.post(layer, body)
            d_ms = await client.post(direct, body)
        else:
            d_ms = await client.post(direct, body)
            l_ms = await client.post(layer, body)
        lat["layer"].append(l_ms)
        lat["direct"].append(d_ms)
        diffs.append(l_ms - d_ms)
    wall = time.perf_counter() - t0
    cpu = {name: proc_cpu_s(pid) - cpu0[name] for name, pid in pids.items()}
    return {**lat, "diffs": diffs, "wall_s": wall, "cpu": cpu}


async def run_block(
    client: Client, url: str, bodies: list[bytes], count: int, concurrency: int
) -> tuple[float, list[float]]:
    remaining = count
    latencies: list[float] = []

    async def loop() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latencies.append(await client.post(url, bodies[remaining % len(bodies)]))

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def run_c32(
    client: Client,
    layer: str,
    direct: str,
    bodies: list[bytes],
    per_target: int,
    block: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    concurrency = 32
    await run_block(client, layer, bodies, 4 * concurrency, concurrency)  # warm-up: connections
    await run_block(client, direct, bodies, 4 * concurrency, concurrency)
    result: dict[str, Any] = {
        t: {"wall_s": 0.0, "n": 0, "lat": [], "cpu": dict.fromkeys(pids, 0.0), "client_cpu": 0.0}
        for t in ("layer", "direct")
    }
    pair_ratios: list[float] = []
    for k in range(math.ceil(per_target / block)):
        order = ("layer", "direct") if k % 2 == 0 else ("direct", "layer")
        rates: dict[str, float] = {}
        for target in order:
            url = layer if target == "layer" else direct
            cpu0 = {name: proc_cpu_s(pid) for name, pid in pids.items()}
            c0 = time.process_time()
            wall, lat = await run_block(client, url, bodies, block, concurrency)
            r = result[target]
            for name, pid in pids.items():
                r["cpu"][name] += proc_cpu_s(pid) - cpu0[name]
            r["client_cpu"] += time.process_time() - c0
            r["wall_s"] += wall
            r["n"] += len(lat)
            r["lat"] += lat
            rates[target] = len(lat) / wall
        pair_ratios.append(rates["layer"] / rates["direct"])
    result["pair_ratios"] = pair_ratios
    return result


def report_c1(name: str, c1: dict[str, Any]) -> dict[str, float]:
    s_l, s_d, s_diff = percentiles(c1["layer"]), percentiles(c1["direct"]), percentiles(c1["diffs"])
    added_p50 = s_l["p50"] - s_d["p50"]
    out(f"{name}, concurrency 1 (alternating request by request), latency ms:")
    out(f"  layer   {fmt(s_l)}")
    out(f"  direct  {fmt(s_d)}")
    verdict = (
        "met"
        if added_p50 <= ADDED_P50_TARGET_MS
        else f"MISSED by {added_p50 - ADDED_P50_TARGET_MS:.3f} ms"
    )
    out(
        f"  added p50 (p50 layer - p50 direct) = {added_p50:.3f} ms   "
        f"[target <= {ADDED_P50_TARGET_MS} ms: {verdict}]"
    )
    out(f"  added p99 (p99 layer - p99 direct) = {s_l['p99'] - s_d['p99']:.3f} ms")
    out(
        f"  per-pair difference layer-direct: median={statistics.median(c1['diffs']):.3f}  "
        f"p90={s_diff['p90']:.3f}  p99={s_diff['p99']:.3f} ms"
    )
    thr_l = len(c1["layer"]) / (sum(c1["layer"]) / 1000)
    thr_d = len(c1["direct"]) / (sum(c1["direct"]) / 1000)
    out(
        f"  throughput (1/mean latency): layer {thr_l:.0f} req/s, direct {thr_d:.0f} req/s, "
        f"ratio layer/direct = {thr_l / thr_d:.3f}"
    )
    n = len(c1["layer"])
    cpu = c1["cpu"]
    out(
        f"  CPU per pair of requests (one each, µs): worker {1e6 * cpu['worker'] / n:.0f}  "
        f"emulator {1e6 * cpu['emulator'] / n:.0f}"
    )
    return {
        "added_p50": added_p50,
        "added_p99": s_l["p99"] - s_d["p99"],
        "pair_median": statistics.median(c1["diffs"]),
        "ratio": thr_l / thr_d,
        "layer_p50": s_l["p50"],
        "direct_p50": s_d["p50"],
        "layer_p99": s_l["p99"],
        "direct_p99": s_d["p99"],
    }


def report_c32(name: str, c32: dict[str, Any], block: int) -> dict[str, float]:
    out(f"{name}, concurrency 32 (alternating blocks of {block}), latency ms:")
    rates = {}
    for target in ("layer", "direct"):
        r = c32[target]
        rates[target] = r["n"] / r["wall_s"]
        out(f"  {target:<7} {fmt(percentiles(r['lat']))}  throughput {rates[target]:.0f} req/s")
    p_l, p_d = percentiles(c32["layer"]["lat"]), percentiles(c32["direct"]["lat"])
    ratio = rates["layer"] / rates["direct"]
    out(
        f"  added p50 = {p_l['p50'] - p_d['p50']:.3f} ms, "
        f"added p99 = {p_l['p99'] - p_d['p99']:.3f} ms"
    )
    out(
        f"  throughput ratio layer/direct = {ratio:.3f} "
        f"(median of per-block-pair ratios {statistics.median(c32['pair_ratios']):.3f}, "
        f"min {min(c32['pair_ratios']):.3f}, max {max(c32['pair_ratios']):.3f})"
    )
    out("  CPU per request (µs), by process, during each target's blocks:")
    for target in ("layer", "direct"):
        r = c32[target]
        out(
            f"    {target:<7} worker {1e6 * r['cpu']['worker'] / r['n']:.0f}  "
            f"emulator {1e6 * r['cpu']['emulator'] / r['n']:.0f}  "
            f"client {1e6 * r['client_cpu'] / r['n']:.0f}"
        )
    return {
        "ratio": ratio,
        "pair_ratio_median": statistics.median(c32["pair_ratios"]),
        "layer_rps": rates["layer"],
        "direct_rps": rates["direct"],
        "added_p50": p_l["p50"] - p_d["p50"],
        "added_p99": p_l["p99"] - p_d["p99"],
        "worker_cpu_us": 1e6 * c32["layer"]["cpu"]["worker"] / c32["layer"]["n"],
    }


# ---------------------------------------------------------------- part 2


class RssSampler(threading.Thread):
    """Samples VmRSS of `pid` every `interval_s` until stopped: (t, rss_kb)."""

    def __init__(self, pid: int, interval_s: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self.halt = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        path = f"/proc/{self.pid}/status"
        while not self.halt.is_set():
            try:
                with open(path, "rb") as f:
                    text = f.read()
            except OSError:
                return
            i = text.find(b"VmRSS:")
            if i < 0:  # no VmRSS: the process has exited (a zombie until reaped)
                return
            self.samples.append(
                (time.perf_counter() - self.t0, int(text[i + 6 : text.index(b"kB", i)]))
            )
            time.sleep(self.interval_s)

    def stop(self) -> None:
        self.halt.set()
        self.join(5)


def reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError as exc:
        out(f"  (cannot reset VmHWM of {pid}: {exc}; the peak is the sampled VmRSS max only)")
        return False


def idle_rss_kb(pid: int, seconds: float = 1.0) -> int:
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(proc_status_kb(pid, "VmRSS")["VmRSS"])
        time.sleep(0.02)
    return int(statistics.median(values))


#: A separate process that GETs /healthz on the worker every 10 ms until SIGINT, then prints
#: [[epoch_s, ms], ...]: its own process, so this benchmark's loop (busy sending the body)
#: cannot delay the pings.
PINGER = """
import http.client, json, sys, time
host, port = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection(host, port, timeout=30)
out = []
try:
    while True:
        t0 = time.time()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        out.append([t0, (time.time() - t0) * 1000])
        time.sleep(0.01)
except KeyboardInterrupt:
    pass
print(json.dumps(out))
"""


class Pinger:
    """`GET /healthz` on the worker every 10 ms from a subprocess: event-loop stalls."""

    def __init__(self, port: int) -> None:
        import subprocess

        self.process = subprocess.Popen(
            [sys.executable, "-c", PINGER, "127.0.0.1", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def stop(self, t_send_epoch: float) -> dict[str, Any]:
        import signal

        self.process.send_signal(signal.SIGINT)
        stdout, _ = self.process.communicate(timeout=30)
        try:
            pings = json.loads(stdout or b"[]")
        except ValueError:
            pings = []
        stats: dict[str, Any] = percentiles([ms for _, ms in pings], (50, 99))
        if pings:
            worst = max(pings, key=lambda p: p[1])
            stats["worst_at_s"] = worst[0] - t_send_epoch  # when the worst ping was sent
        return stats


async def big_write(
    url: str, body: bytes, worker: WorkerProcess, emulator_pid: int, label: str, baseline_kb: int
) -> dict[str, Any]:
    """POST `body` on a fresh connection; worker RSS before, during, after, and after closing it."""
    worker_pid = worker.pid
    gc.collect()
    idle_kb = idle_rss_kb(worker_pid)
    emu_idle_kb = proc_status_kb(emulator_pid, "VmRSS")["VmRSS"]
    hwm_reset = reset_hwm(worker_pid)
    reset_hwm(emulator_pid)
    pinger = Pinger(worker.port)
    await asyncio.sleep(0.5)
    sampler = RssSampler(worker_pid)
    sampler.start()
    w0, e0 = proc_cpu_s(worker_pid), proc_cpu_s(emulator_pid)
    session = aiohttp.ClientSession(
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
        },
        timeout=aiohttp.ClientTimeout(total=300),
    )
    t_send = time.perf_counter() - sampler.t0
    t_send_epoch = time.time()
    started = time.perf_counter()
    try:
        async with session.post(url, data=body) as response:
            answer = await response.read()
            status: int | str = response.status
    except (aiohttp.ClientError, OSError) as exc:
        answer, status = repr(exc).encode(), f"client error {type(exc).__name__}"
    wall = time.perf_counter() - started
    t_done = time.perf_counter() - sampler.t0
    stall = pinger.stop(t_send_epoch)
    await asyncio.sleep(1.0)  # what stays resident while the keep-alive connection is idle
    after_kb = proc_status_kb(worker_pid, "VmRSS")["VmRSS"]
    await session.close()  # closes the connection the write came on
    await asyncio.sleep(0.5)
    after_close_kb = proc_status_kb(worker_pid, "VmRSS")["VmRSS"]
    sampler.stop()
    worker_status = proc_status_kb(worker_pid, "VmRSS", "VmHWM")
    emu_status = proc_status_kb(emulator_pid, "VmRSS", "VmHWM")
    sampled_peak = max(kb for _, kb in sampler.samples)
    peak_kb = max(sampled_peak, worker_status["VmHWM"]) if hwm_reset else sampled_peak
    return {
        "label": label,
        "status": status,
        "answer": answer[:200].decode(errors="replace"),
        "wall_s": wall,
        "baseline_kb": baseline_kb,
        "idle_kb": idle_kb,
        "peak_kb": peak_kb,
        "sampled_peak_kb": sampled_peak,
        "hwm_kb": worker_status["VmHWM"],
        "after_kb": after_kb,
        "after_close_kb": after_close_kb,
        "growth_kb": peak_kb - idle_kb,
        "samples": sampler.samples,
        "n_samples": len(sampler.samples),
        "t_send": t_send,
        "t_done": t_done,
        "stall": stall,
        "worker_cpu_s": proc_cpu_s(worker_pid) - w0,
        "emulator_cpu_s": proc_cpu_s(emulator_pid) - e0,
        "emulator_growth_kb": emu_status["VmHWM"] - emu_idle_kb,
    }


def timeline(
    samples: list[tuple[float, int]],
    idle_kb: int,
    t_send: float,
    t_done: float,
    step_s: float = 0.25,
) -> str:
    """Max RSS above idle per `step_s` bucket from the send on; equal runs collapsed."""
    buckets: dict[int, int] = {}
    for t, kb in samples:
        if t >= t_send:
            k = int((t - t_send) / step_s)
            buckets[k] = max(buckets.get(k, 0), kb)
    runs: list[tuple[int, int, int]] = []  # (first bucket, last bucket, MiB)
    for k, kb in sorted(buckets.items()):
        mib = round((kb - idle_kb) / 1024)
        if runs and runs[-1][2] == mib and runs[-1][1] == k - 1:
            runs[-1] = (runs[-1][0], k, mib)
        else:
            runs.append((k, k, mib))
    parts = [
        f"{a * step_s:.2f}s:{m:+d}"
        if a == b
        else f"{a * step_s:.2f}-{(b + 1) * step_s:.2f}s:{m:+d}"
        for a, b, m in runs
    ]
    return " ".join(parts) + f"  (answer at {t_done - t_send:.2f}s; then 1 s idle, close, 0.5 s)"


def report_big(r: dict[str, Any], body_len: int, target: bool = True) -> None:
    mib = 1024 * 1024
    growth = r["growth_kb"] * 1024
    limit = MEMORY_FACTOR_TARGET * body_len
    verdict = "met" if growth <= limit else f"MISSED by {(growth - limit) / mib:.2f} MiB"
    if not target:
        verdict = f"no target; = {growth / MAX_BODY_BYTES_DEFAULT:.2f} x LAYER_MAX_BODY_BYTES"
    out(f"{r['label']}: status {r['status']}, wall {r['wall_s']:.2f} s, answer {r['answer'][:100]}")
    out(
        f"  worker RSS: idle {r['idle_kb'] / 1024:.1f} MiB "
        f"(first idle of part 2: {r['baseline_kb'] / 1024:.1f}), "
        f"peak {r['peak_kb'] / 1024:.1f} MiB (VmHWM {r['hwm_kb'] / 1024:.1f}, sampled max "
        f"{r['sampled_peak_kb'] / 1024:.1f}, {r['n_samples']} samples); 1 s after the answer "
        f"{r['after_kb'] / 1024:.1f} MiB; 0.5 s after closing the connection "
        f"{r['after_close_kb'] / 1024:.1f} MiB"
    )
    out(
        f"  worker growth (peak - idle) = {growth / mib:.2f} MiB = {growth / body_len:.3f} x body "
        f"({body_len / mib:.2f} MiB)  [target <= {MEMORY_FACTOR_TARGET:.0f} x body = "
        f"{limit / mib:.2f} MiB: {verdict}]"
    )
    out(
        "  RSS above idle (MiB, max per 0.25 s): "
        f"{timeline(r['samples'], r['idle_kb'], r['t_send'], r['t_done'])}"
    )
    st = r["stall"]
    if st.get("n"):
        out(
            "  GET /healthz on the worker every 10 ms meanwhile, from a subprocess "
            f"(n={st['n']}): p50 {st['p50']:.1f} ms, "
            f"p99 {st['p99']:.1f} ms, max {st['max']:.0f} ms "
            f"(sent {st['worst_at_s']:.2f} s after the write began)"
        )
    out(
        f"  CPU: worker {r['worker_cpu_s']:.2f} s, emulator {r['emulator_cpu_s']:.2f} s; "
        f"emulator RSS growth {r['emulator_growth_kb'] / 1024:.0f} MiB (not Layer's)"
    )


def stamp_scan_cost(body: bytes) -> str:
    """plan_stamps + chunks on the body in this process: time and traced peak allocation."""
    sys.path.insert(0, str(ROOT))
    from api.write_body import plan_stamps

    gc.collect()
    t0 = time.perf_counter()
    plan_stamps(body, int(time.time() * 1000))
    t_plan = time.perf_counter() - t0  # untraced: what it blocks the event loop for
    tracemalloc.start()
    plan = plan_stamps(body, int(time.time() * 1000))
    _, peak_plan = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    t1 = time.perf_counter()
    total = 0
    for part in plan.chunks():
        total += len(bytes(part))  # what api/proxy.py's _chunks() hands httpx
    t_chunks = time.perf_counter() - t1
    _, peak_chunks = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (
        f"plan_stamps: {t_plan:.2f} s (one synchronous call), {plan.rows_stamped} rows stamped, "
        f"{len(plan.insertions)} insertions, "
        f"traced peak {peak_plan / 1024 / 1024:.1f} MiB; chunks()+bytes(): {t_chunks:.2f} s, "
        f"{total / 1024 / 1024:.0f} MiB streamed, traced peak {peak_chunks / 1024 / 1024:.1f} MiB"
    )


# ---------------------------------------------------------------- profiles

PY_SPY = os.environ.get("PY_SPY", "/tmp/probe/bin/py-spy")

#: Components of a worker profile: (label, test on one sample's frames, leaf last). A sample
#: may count in several (indented rows are parts of the row above).
_COMPONENTS: list[tuple[str, Any]] = [
    (
        "proxy handler (api/proxy.py: proxy, _proxy_query, _proxy_write)",
        lambda fs: any("(api/proxy.py" in f for f in fs),
    ),
    (
        "  upstream HTTP client (httpx/httpcore/anyio/h11)",
        lambda fs: (
            any("(api/proxy.py" in f for f in fs)
            and any(m in f for f in fs for m in ("(httpx/", "(httpcore/", "(anyio/", "(h11/"))
        ),
    ),
    (
        "    httpcore pool bookkeeping (_assign_requests_to_connections)",
        lambda fs: any("_assign_requests_to_connections" in f for f in fs),
    ),
    (
        "      of which idle-socket probes (has_expired -> get_extra_info/is_socket_readable)",
        lambda fs: (
            any("_assign_requests_to_connections" in f for f in fs)
            and any("has_expired" in f for f in fs)
        ),
    ),
    (
        "    socket send syscalls from the upstream client (transport.write, leaf)",
        lambda fs: (
            bool(fs)
            and "_SelectorSocketTransport.write" in fs[-1]
            and any("(httpcore/" in f for f in fs)
        ),
    ),
    (
        "  request body read (BaseRequest.read)",
        lambda fs: any(f.startswith("BaseRequest.read ") for f in fs),
    ),
    (
        "  stamping (plan_stamps, StampPlan.chunks, _chunks)",
        lambda fs: any(
            m in f for f in fs for m in ("plan_stamps (", "StampPlan.chunks", "_chunks (api")
        ),
    ),
    (
        "  JSON in the handler (json.loads/dumps)",
        lambda fs: (
            any("(api/proxy.py" in f for f in fs)
            and any(m in f for f in fs for m in ("(json/", "json/__init__", "(json/decoder"))
        ),
    ),
    (
        "  write notification submit (NotificationBuffer.submit)",
        lambda fs: any("NotificationBuffer.submit" in f for f in fs),
    ),
    (
        "aiohttp server + Layer middlewares, outside the proxy handler",
        lambda fs: (
            any("(aiohttp/web_protocol" in f for f in fs)
            and not any("(api/proxy.py" in f for f in fs)
        ),
    ),
    (
        "notification delivery (NotificationBuffer._drain_forever, WriteNotifier)",
        lambda fs: any(m in f for f in fs for m in ("_drain_forever", "WriteNotifier")),
    ),
    (
        "Kafka/Faust machinery (aiokafka, faust: agents, tables, changelog, consumer)",
        lambda fs: any(m in f for f in fs for m in ("(aiokafka/", "(faust/")),
    ),
    (
        "Layer agents/tables code (agents/, tables/)",
        lambda fs: any(m in f for f in fs for m in ("(agents/", "(tables/")),
    ),
    (
        "event loop idle (selector wait, leaf)",
        lambda fs: bool(fs) and "select (selectors.py" in fs[-1],
    ),
]


def summarize(path: Path, top: int = 22) -> str:
    """Components, then top functions by inclusive and self share of samples."""
    if not path.exists():
        return f"(no profile at {path})"
    total = 0
    counts = dict.fromkeys((label for label, _ in _COMPONENTS), 0)
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    for _, frames, count in profile_stacks(path):
        total += count
        for label, test in _COMPONENTS:
            if test(frames):
                counts[label] += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            exclusive[frames[-1]] += count
    if not total:
        return "(empty profile)"
    lines = [
        f"samples: {total}",
        "components (% of samples; indented rows are parts of the row above):",
    ]
    lines += share_lines(counts.items(), total)
    skip = (
        "_run_module_as_main",
        "_run_code",
        "<module>",
        "main (",
        "run_worker",
        "execute_from_commandline",
        "run_until_complete",
        "run_forever",
        "_run_once",
    )
    lines.append("top inclusive (% of samples):")
    shown = 0
    for frame, count in inclusive.most_common():
        if frame.startswith(skip):
            continue
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break
    lines.append("top self (% of samples):")
    lines += share_lines(exclusive.most_common(12), total)
    return "\n".join(lines)


async def profile_during(name: str, pid: int, seconds: float, directory: Path, load: Any) -> None:
    path = directory / f"{name}.txt"
    recorder = profile_worker(pid, seconds, path, rate=200, nonblocking=False, threads=False)
    if recorder is None:
        return
    await asyncio.sleep(0.5)  # let py-spy attach
    runs = 0
    while recorder.poll() is None:
        await load()
        runs += 1
    out(
        f"--- profile: {name} (worker pid {pid}, {seconds:.0f} s, "
        f"{runs} load iterations, raw: {path})"
    )
    out(summarize(path))
    out()


# ---------------------------------------------------------------- part 3


async def client_cost(
    emulator_url: str, bodies: list[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    """The proxy's upstream call for a small write, replayed here with several HTTP clients.

    Each variant stamps the body with api/write_body.plan_stamps and POSTs it to the
    emulator's write route as api/proxy.py does (`Content-Length` set, answer read whole);
    "chunks" sends the stamped body as the async iterator of slices api/proxy.py uses,
    "joined" as one bytes object. Client CPU (this process) per request at concurrency 32,
    and latency at concurrency 1. Variants run in the order ABC…, then …CBA.
    """
    import httpx
    import httpx2

    sys.path.insert(0, str(ROOT))
    from api.write_body import plan_stamps

    url = f"{emulator_url}/v2/namespaces/{WRITE_NS}"
    headers = {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        "Accept-Encoding": "identity",
    }

    async def chunks(parts: Any) -> Any:
        for part in parts:
            yield bytes(part)

    def make_httpx(lib: Any, joined: bool) -> tuple[Any, Any]:
        client = lib.AsyncClient(
            timeout=lib.Timeout(60, connect=5.0),
            limits=lib.Limits(max_connections=512, max_keepalive_connections=512),
        )

        async def call(body: bytes) -> None:
            plan = plan_stamps(body, int(time.time() * 1000))
            content = b"".join(plan.chunks()) if joined else chunks(plan.chunks())
            request = client.build_request(
                "POST",
                url,
                headers={**headers, "Content-Length": str(plan.length)},
                content=content,
            )
            response = await client.send(request, stream=True)
            await response.aread()
            await response.aclose()
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}")

        return client, call

    def make_aiohttp() -> tuple[Any, Any]:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512), auto_decompress=False
        )

        async def call(body: bytes) -> None:
            plan = plan_stamps(body, int(time.time() * 1000))
            async with session.post(url, data=b"".join(plan.chunks()), headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}")

        return session, call

    variants: dict[str, Any] = {
        f"httpx {httpx.__version__} + httpcore, chunks (= api/proxy.py today)": lambda: make_httpx(
            httpx, False
        ),
        f"httpx {httpx.__version__} + httpcore, joined body": lambda: make_httpx(httpx, True),
        f"httpx2 {httpx2.__version__} + httpcore2, chunks": lambda: make_httpx(httpx2, False),
        f"httpx2 {httpx2.__version__} + httpcore2, joined body": lambda: make_httpx(httpx2, True),
        f"aiohttp {aiohttp.__version__} ClientSession, joined body": make_aiohttp,
    }
    results: dict[str, dict[str, list[float]]] = {
        name: {"cpu_us": [], "rps": [], "c1": []} for name in variants
    }
    order = list(variants) + list(reversed(variants))
    for name in order:
        client, call = variants[name]()
        try:
            remaining = 4 * 32

            async def loop(call: Any = call) -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    await call(bodies[remaining % len(bodies)])

            await asyncio.gather(*(loop() for _ in range(32)))  # warm-up: 32 connections
            for i in range(args.client_c1):
                t0 = time.perf_counter()
                await call(bodies[i % len(bodies)])
                results[name]["c1"].append((time.perf_counter() - t0) * 1000)
            remaining = args.client_c32
            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(loop() for _ in range(32)))
            results[name]["cpu_us"].append(1e6 * (time.process_time() - c0) / args.client_c32)
            results[name]["rps"].append(args.client_c32 / (time.perf_counter() - t0))
        finally:
            await (client.aclose() if hasattr(client, "aclose") else client.close())
    out(
        f"{args.client_c1} sequential + {args.client_c32} at concurrency 32 per pass, 2 passes; "
        "emulator write route; CPU = this process (client + plan_stamps + event loop)"
    )
    summary: dict[str, Any] = {}
    for name, r in results.items():
        c1 = percentiles(r["c1"])
        cpu = statistics.mean(r["cpu_us"])
        summary[name] = {
            "cpu_us_c32": cpu,
            "rps_c32": statistics.mean(r["rps"]),
            "c1_p50": c1["p50"],
        }
        out(
            f"  {name:<55} c32: {cpu:5.0f} µs CPU/request "
            f"({' / '.join(f'{x:.0f}' for x in r['cpu_us'])}), "
            f"{statistics.mean(r['rps']):5.0f} req/s;  "
            f"c1 p50 {c1['p50']:.2f} ms p99 {c1['p99']:.2f} ms"
        )
    return summary


# ---------------------------------------------------------------- main


async def wait_stable(
    client: Client, worker: WorkerProcess, namespace: str, timeout_s: float = 30
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with client.session.get(f"{worker.url}/v2/namespaces/{namespace}/metadata") as r:
            doc = await r.json()
        if r.status == 200 and doc.get("layer", {}).get("is_stable"):
            return True
        await asyncio.sleep(0.1)
    return False


async def main_async(args: argparse.Namespace) -> None:
    work = run_dir("proxy")
    settings = {
        "query_requests_per_target": (
            f"{args.query_requests} at concurrency 1, {args.query_requests} at 32"
        ),
        "write_requests_per_target": (
            f"{args.write_requests} at concurrency 1, {args.write_requests} at 32"
        ),
        "c32_block": args.block,
        "warmup_per_target": args.warmup,
        "query": (
            f"POST /v2/namespaces/{QUERY_NS}/query rank_by vector ANN {DIM}-dim, top_k 10, "
            f"include_attributes [title]; {QUERY_ROWS} rows"
        ),
        "write": (
            f"POST /v2/namespaces/{WRITE_NS} upsert_rows 3 rows "
            f"({DIM}-dim vector + 2 attributes), same ids"
        ),
        "big_write": (
            f"~{args.big_mib} MiB upsert_rows of {BIG_DIM}-dim JSON float vectors (6 decimals)"
        ),
        "client": (
            f"aiohttp {aiohttp.__version__} ClientSession, keep-alive, Accept-Encoding: identity"
        ),
        "LAYER_MAX_BODY_BYTES": f"{MAX_BODY_BYTES_DEFAULT} (default)",
        "LAYER_STABLE_READS": "true (default)",
        "profiles": not args.no_profile,
        "run_dir": str(work),
    }
    print_header("Proxy benchmark (bench/proxy.py)", settings)
    t_start = time.monotonic()
    cpu_before = process_cpu_snapshot()
    summary: dict[str, Any] = {}

    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        emulator = BigBodyEmulator(work / "emulator.log")
        worker = WorkerProcess(base_env(broker, emulator), work / "worker", work / "worker.log")
        client = Client()
        try:
            worker.start()
            out(
                f"worker ready in {worker.ready_at - worker.started_at:.1f} s (pid {worker.pid}), "
                f"emulator pid {emulator.process.pid}"
            )
            pids = {"worker": worker.pid, "emulator": emulator.process.pid}

            # Seed the query namespace through Layer (stamped rows), wait until it is stable.
            for start in range(0, QUERY_ROWS, 250):
                rows = [
                    {"id": i, "vector": vec(DIM), "title": f"doc {i}"}
                    for i in range(start, start + 250)
                ]
                await client.post(
                    f"{worker.url}/v2/namespaces/{QUERY_NS}",
                    dumps({"upsert_rows": rows, "distance_metric": "cosine_distance"}),
                )
            await client.post(f"{worker.url}/v2/namespaces/{WRITE_NS}", small_write_body())
            stable = await wait_stable(client, worker, QUERY_NS)
            out(f"seeded {QUERY_ROWS} rows into {QUERY_NS} through Layer; stable: {stable}")
            client.errors.clear()

            idle0, t_idle = worker.cpu_seconds(), time.perf_counter()
            await asyncio.sleep(2)
            idle_share = (worker.cpu_seconds() - idle0) / (time.perf_counter() - t_idle)
            out(
                f"worker idle CPU: {100 * idle_share:.1f}% of a core; "
                f"idle RSS {worker.rss_kb() / 1024:.0f} MiB"
            )

            queries = [query_body() for _ in range(64)]
            writes = [small_write_body() for _ in range(64)]
            targets = {
                "query": (
                    f"{worker.url}/v2/namespaces/{QUERY_NS}/query",
                    f"{emulator.url}/v2/namespaces/{QUERY_NS}/query",
                    queries,
                ),
                "write": (
                    f"{worker.url}/v2/namespaces/{WRITE_NS}",
                    f"{emulator.url}/v2/namespaces/{WRITE_NS}",
                    writes,
                ),
            }
            out(f"request bodies: query {len(queries[0])} B, write {len(writes[0])} B")

            async def part1(label: str, url: str, pids: dict[str, int]) -> None:
                out()
                out(f"## Part 1{label}: queries and writes, Layer vs direct")
                for op, (layer_url, direct_url, bodies) in targets.items():
                    if args.skip_latency:
                        break
                    layer_url = layer_url.replace(worker.url, url, 1)
                    client.filtered.clear()
                    client.stable_as_of_seen.clear()
                    n = args.query_requests if op == "query" else args.write_requests
                    if op != "query":
                        # Let the upstream pool's idle connections from the last
                        # concurrency-32 phase expire: concurrency 1 = a quiet worker.
                        await asyncio.sleep(6)
                    c1 = await run_c1(client, layer_url, direct_url, bodies, n, args.warmup, pids)
                    summary[f"{op}_c1{label}"] = report_c1(op, c1)
                    c32 = await run_c32(client, layer_url, direct_url, bodies, n, args.block, pids)
                    summary[f"{op}_c32{label}"] = report_c32(op, c32, args.block)
                    if op == "query":
                        out(
                            f"  X-Layer-Filtered on Layer's query answers: "
                            f"{dict(client.filtered)}; "
                            f"X-Layer-Stable-As-Of set: {dict(client.stable_as_of_seen)}"
                        )
                        summary[f"filtered{label}"] = dict(client.filtered)
                    out(f"  non-200 answers: {dict(client.errors) or 'none'}")
                    client.errors.clear()
                    out()

            await part1("", worker.url, pids)
            if args.baseline_env and not args.skip_latency:
                # The same calls through a second worker (e.g. an export of an older commit
                # on PYTHONPATH: before/after in one run), then through this one again.
                env_base = base_env(broker, emulator)
                env_base.update(dict(item.split("=", 1) for item in args.baseline_env))
                baseline = WorkerProcess(env_base, work / "worker-base", work / "worker-base.log")
                try:
                    baseline.start()
                    stable = await wait_stable(client, baseline, QUERY_NS)
                    out(f"baseline worker (pid {baseline.pid}, {' '.join(args.baseline_env)}) "
                        f"ready; {QUERY_NS} stable there: {stable}")  # fmt: skip
                    await part1(
                        " (baseline worker)", baseline.url, {**pids, "worker": baseline.pid}
                    )
                finally:
                    baseline.close()
                await part1(" (this worker, again)", worker.url, pids)

            metrics = worker.metrics()
            out(
                "worker metrics after part 1: "
                + ", ".join(
                    f"{k}={v:g}"
                    for k, v in metrics.items()
                    if k.startswith(("notify_", "proxy", "http"))
                )
            )

            # ------------------------------------------------ profiles of the small calls
            if not args.no_profile and not args.skip_latency:
                out()
                out("## Profiles of the small calls (recorded after the measurements)")
                q_layer, _, q_bodies = targets["query"]
                w_layer, _, w_bodies = targets["write"]
                await profile_during(
                    "query-c1",
                    worker.pid,
                    args.profile_seconds,
                    work,
                    lambda: run_block(client, q_layer, q_bodies, 50, 1),
                )
                await profile_during(
                    "query-c32",
                    worker.pid,
                    args.profile_seconds,
                    work,
                    lambda: run_block(client, q_layer, q_bodies, args.block, 32),
                )
                await profile_during(
                    "write-c1",
                    worker.pid,
                    args.profile_seconds,
                    work,
                    lambda: run_block(client, w_layer, w_bodies, 50, 1),
                )
                await profile_during(
                    "write-c32",
                    worker.pid,
                    args.profile_seconds,
                    work,
                    lambda: run_block(client, w_layer, w_bodies, args.block, 32),
                )

            # ------------------------------------------------ part 2: memory
            out()
            out("## Part 2: memory while proxying a large write")
            t0 = time.perf_counter()
            body, rows = big_write_body(args.big_mib * 1024 * 1024)
            out(
                f"body: {len(body)} bytes ({len(body) / 1024 / 1024:.1f} MiB), "
                f"{rows} rows of {BIG_DIM}-dim "
                f"vectors, built in {time.perf_counter() - t0:.1f} s"
            )
            out("in-process cost of the stamping scan on this body: " + stamp_scan_cost(body))
            gc.collect()
            baseline_kb = idle_rss_kb(worker.pid)
            layer_big = f"{worker.url}/v2/namespaces/{BIG_NS}"
            direct_big = f"{emulator.url}/v2/namespaces/{BIG_NS}"
            emu_pid = emulator.process.pid
            rd = await big_write(
                direct_big,
                body,
                worker,
                emu_pid,
                "direct to the emulator (worker idle)",
                baseline_kb,
            )
            out(
                f"direct to the emulator: status {rd['status']}, wall {rd['wall_s']:.2f} s, "
                f"emulator CPU {rd['emulator_cpu_s']:.2f} s, "
                f"emulator RSS growth {rd['emulator_growth_kb'] / 1024:.0f} MiB"
            )
            r1 = await big_write(layer_big, body, worker, emu_pid, "through Layer #1", baseline_kb)
            report_big(r1, len(body))
            summary["big"] = {"body": len(body), "direct": rd, "layer1": r1}
            if not args.no_profile:
                path = work / "big-write.txt"
                recorder = profile_worker(
                    worker.pid,
                    max(8, int(r1["wall_s"] + 4)),
                    path,
                    rate=100,
                    nonblocking=False,
                    threads=False,
                )
                await asyncio.sleep(0.5)
                r2 = await big_write(
                    layer_big,
                    body,
                    worker,
                    emu_pid,
                    "through Layer #2 (py-spy attached)",
                    baseline_kb,
                )
                report_big(r2, len(body))
                summary["big"]["layer2"] = r2
                if recorder is not None:
                    recorder.wait(60)
                    out(f"--- profile: big write #2 (worker pid {worker.pid}, raw: {path})")
                    out(summarize(path))
            # A body over LAYER_MAX_BODY_BYTES: how much does the worker hold before its 413?
            over = body * (MAX_BODY_BYTES_DEFAULT // len(body) + 1)
            r3 = await big_write(
                layer_big,
                over,
                worker,
                emu_pid,
                f"over the limit: {len(over)} bytes > "
                f"LAYER_MAX_BODY_BYTES {MAX_BODY_BYTES_DEFAULT}",
                baseline_kb,
            )
            report_big(r3, len(over), target=False)
            summary["big"]["over_limit"] = r3
            del over, body
            gc.collect()

            # ------------------------------------------------ part 3: upstream client cost
            out()
            out(
                "## Part 3: cost of the upstream HTTP client, in this process "
                "(no Layer code edited)"
            )
            summary["clients"] = await client_cost(emulator.url, writes, args)
        finally:
            await client.close()
            worker.close()
            emulator.stop()
    elapsed = time.monotonic() - t_start
    out()
    out(f"total runtime {elapsed:.0f} s; loadavg after: {os.getloadavg()}")
    out(other_load(cpu_before, elapsed))
    slim = json.loads(json.dumps(summary, default=str))
    for value in slim.get("big", {}).values():
        if isinstance(value, dict):
            value.pop("samples", None)
    out("summary: " + json.dumps(slim))


def hidden_attributes_cost(runs: int = 200) -> dict[str, Any]:
    """Part 4: the added cost of hiding `_layer_*` on a 1,000-row query answer."""
    from api.write_body import hide_in_rows

    def answer(stamped: bool, dim: int) -> bytes:
        rng = random.Random(7)
        rows = []
        for i in range(1000):
            row: dict[str, Any] = {"id": i, "$dist": rng.random()}
            if stamped:
                row["_layer_upserted_at"] = 1_767_000_000_000 + i
            row |= {"price": rng.randint(1, 500), "tags": ["a", "b"], "title": f"title {i} " * 3}
            if dim:
                row["vector"] = [round(rng.random(), 6) for _ in range(dim)]
            rows.append(row)
        envelope = {"billing": {"billable_logical_bytes_queried": 1}, "performance": {}}
        return json.dumps({"rows": rows, **envelope}).encode()  # the emulator's separators

    def median_us(work: Any) -> float:
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            work()
            samples.append((time.perf_counter() - started) * 1e6)
        return statistics.median(samples)

    results: dict[str, Any] = {}
    out("part 4: hiding _layer_upserted_at from a 1,000-row query answer (in process)")
    for dim in (0, 256):
        stamped, plain = answer(True, dim), answer(False, dim)
        assert b"_layer_" not in hide_in_rows(stamped)
        label = f"{dim}-dim vectors" if dim else "no vectors"
        entry = {
            "bytes": len(stamped),
            "hide_stamped_us": median_us(lambda b=stamped: hide_in_rows(b)),
            "hide_unstamped_us": median_us(lambda b=plain: hide_in_rows(b)),
            "json_roundtrip_us": median_us(lambda b=stamped: json.dumps(json.loads(b)).encode()),
        }
        results[label] = entry
        out(
            f"  {label}: answer {entry['bytes'] / 1024:.0f} KiB; hide (1,000 stamps) "
            f"{entry['hide_stamped_us']:.0f} us; hide (no stamp) "
            f"{entry['hide_unstamped_us']:.1f} us; "
            f"json loads+dumps {entry['json_roundtrip_us']:.0f} us"
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--query-requests", type=int, default=1000, help="query requests per target and concurrency"
    )
    parser.add_argument(
        "--write-requests", type=int, default=2000, help="write requests per target and concurrency"
    )
    parser.add_argument("--block", type=int, default=250, help="concurrency-32 block size")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--big-mib",
        type=int,
        default=None,
        help="size of the large write (default 100; --quick: 10)",
    )
    parser.add_argument("--profile-seconds", type=float, default=5.0)
    parser.add_argument(
        "--client-c1", type=int, default=200, help="part 3: sequential calls per variant and pass"
    )
    parser.add_argument(
        "--client-c32",
        type=int,
        default=600,
        help="part 3: concurrency-32 calls per variant and pass",
    )
    parser.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="part 1 also on a second worker with these settings (e.g. PYTHONPATH=<an older "
        "export> for before/after in one run), then again on the first; repeat for more",
    )
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--skip-latency", action="store_true", help="part 2 only (development)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--hidden-only", action="store_true", help="part 4 only: hiding _layer_* (in process)"
    )
    args = parser.parse_args()
    if args.hidden_only:
        hidden_attributes_cost()
        return
    if args.quick:
        args.query_requests, args.write_requests, args.block, args.warmup = 200, 256, 64, 20
        args.profile_seconds, args.client_c1, args.client_c32 = 3.0, 50, 200
    if args.big_mib is None:
        args.big_mib = 10 if args.quick else 100
    asyncio.run(main_async(args))
    hidden_attributes_cost()


if __name__ == "__main__":
    main()
