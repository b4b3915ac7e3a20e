"""Benchmark 1: end-to-end write-notification throughput into the freshness table, one worker.

Two modes, run both:

    .venv/bin/python bench/throughput.py prefill --count 300000      # consumption alone
    .venv/bin/python bench/throughput.py live --duration 60          # producer alongside

`prefill` produces N notifications over ~1,000 namespaces first, then starts the worker and
times until it has consumed N (`layer_write_notifications_total` from /metrics).
`live` runs a producer *process* at full speed (or `--rate`) for `--duration` s while the
worker consumes, then waits for the worker to drain.

Both then check nothing was lost: consumed == produced, and every namespace's table row
has `last_write_ms` ≥ the latest `written_at_ms` sent for it (read through the HTTP API).
The namespaces exist in the emulator, so the watcher polls them as it would in production
(`--no-poll` stops poll ticks to isolate consumption). `--profile S` records a py-spy
profile of the worker for S seconds mid-run and prints the top functions.
Target (the issue): ≥ 10,000 notifications/s sustained for 60 s, none lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import (
    EmbeddedBroker,
    EmulatorProcess,
    WorkerProcess,
    base_env,
    create_topics,
    dump_stacks,
    notification,
    print_header,
    profile_worker,
    run_dir,
    summarize_profile,
)

PARTITIONS = 8


def namespace_names(n: int) -> list[str]:
    return [f"tp-{i:05d}" for i in range(n)]


async def produce(
    bootstrap: str,
    topic: str,
    namespaces: list[str],
    *,
    count: int | None,
    duration_s: float | None,
    rate: float,
    linger_ms: int = 5,
) -> dict[str, object]:
    """Send notifications round-robin over `namespaces`; return counts and latest time per ns."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=linger_ms, max_batch_size=256 * 1024, acks=1
    )
    await producer.start()
    latest: dict[str, int] = {}
    sent = 0
    chunk = 1000
    started = time.monotonic()
    deadline = started + duration_s if duration_s else None
    try:
        while True:
            if count is not None and sent >= count:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            n = chunk if count is None else min(chunk, count - sent)
            written_at = int(time.time() * 1000)
            futures = []
            for i in range(n):
                ns = namespaces[(sent + i) % len(namespaces)]
                latest[ns] = written_at
                futures.append(
                    await producer.send(topic, key=ns.encode(), value=notification(ns, written_at))
                )
            await asyncio.gather(*futures)
            sent += n
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    elapsed = time.monotonic() - started
    return {
        "sent": sent,
        "elapsed_s": round(elapsed, 3),
        "rate_per_s": round(sent / elapsed, 1),
        "latest": latest,
    }


def producer_main(args: argparse.Namespace) -> None:
    result = asyncio.run(
        produce(
            args.bootstrap,
            args.topic,
            namespace_names(args.namespaces),
            count=None,
            duration_s=args.duration,
            rate=args.rate,
        )  # fmt: skip
    )
    print(json.dumps(result))


STALL_S = 5.0


class Sampler:
    """Counts consumed notifications from /metrics over time."""

    def __init__(self, worker: WorkerProcess, out: Path) -> None:
        self.worker = worker
        self.out = out
        self.expected = float("inf")
        self.last_progress = time.monotonic()
        self.stall_dumped = False
        self.stall_at_count: float | None = None
        self.series: list[
            tuple[float, float, float, float]
        ] = []  # t, consumed, batches, table writes
        self.polls: list[tuple[float, float]] = []  # t, polls started

    def sample(self) -> float:
        try:
            m = self.worker.metrics()
        except Exception:  # noqa: BLE001 (web server not up yet)
            return -1
        t = time.monotonic()
        self.polls.append((t, m.get("polls_total", 0)))
        consumed = m.get("write_notifications_total", 0)
        if not self.series or consumed <= 0 or consumed - self.series[-1][1] > 50:
            self.last_progress = t
        elif (
            not self.stall_dumped and t - self.last_progress > STALL_S and consumed < self.expected
        ):
            # Less than 50 notifications in STALL_S: dump the worker's stacks once.
            self.stall_dumped = True
            self.stall_at_count = consumed
            dump = dump_stacks(self.worker.pid)
            (self.out / "stall-dump.txt").write_text(dump)
        self.series.append(
            (
                t,
                m.get("write_notifications_total", 0),
                m.get("write_batches_total", 0),
                m.get("table_writes_total", 0),
            )
        )
        return m.get("write_notifications_total", 0)

    def rate_between(self, lo: float, hi: float) -> dict[str, float] | None:
        """Rate over the samples where the consumed count is in [lo, hi]."""
        points = [s for s in self.series if lo <= s[1] <= hi]
        if len(points) < 2 or points[-1][0] == points[0][0]:
            return None
        (t0, c0, b0, w0), (t1, c1, b1, w1) = points[0], points[-1]
        dt = t1 - t0
        return {
            "notifications_per_s": round((c1 - c0) / dt, 1),
            "batches_per_s": round((b1 - b0) / dt, 1),
            "table_writes_per_s": round((w1 - w0) / dt, 1),
            "mean_batch": round((c1 - c0) / max(1, b1 - b0), 1),
            "over_s": round(dt, 2),
        }

    def window_rates(self, width_s: float = 5.0) -> list[float]:
        """Consumption rate per `width_s` window (for the median/min of the sustained rate)."""
        rates = []
        if not self.series:
            return rates
        start = self.series[0][0]
        i = 0
        for j, s in enumerate(self.series):
            if s[0] - self.series[i][0] >= width_s:
                rates.append((s[1] - self.series[i][1]) / (s[0] - self.series[i][0]))
                i = j
        del start
        return [round(r, 1) for r in rates]


def poll_windows(polls: list[tuple[float, float]], width_s: float = 5.0) -> list[int]:
    """Polls started per `width_s` window: shows whether the watcher runs while consuming."""
    out, i = [], 0
    for j, (t, n) in enumerate(polls):
        if t - polls[i][0] >= width_s:
            out.append(int(n - polls[i][1]))
            i = j
    return out


def verify_table(worker: WorkerProcess, latest: dict[str, int]) -> dict[str, int]:
    """Every namespace's `last_write_ms` must cover the latest notification sent for it."""
    missing = behind = ok = 0
    for ns, written_at in latest.items():
        r = worker.http.get(f"/v2/namespaces/{ns}/metadata")
        if r.status_code != 200:
            missing += 1
            continue
        last = r.json()["layer"].get("last_write_ms")
        if last is None or last < written_at:
            behind += 1
        else:
            ok += 1
    return {"namespaces_checked": len(latest), "ok": ok, "behind": behind, "missing": missing}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("prefill", "live"):
        p = sub.add_parser(name)
        p.add_argument("--namespaces", type=int, default=1000)
        p.add_argument(
            "--no-poll", action="store_true", help="no poll ticks (isolates consumption)"
        )
        p.add_argument("--profile", type=float, default=0, help="py-spy the worker for S seconds")
        p.add_argument("--timeout", type=float, default=240)
        p.add_argument("--env", action="append", default=[], help="extra worker env KEY=VALUE")
    sub.choices["prefill"].add_argument("--count", type=int, default=300_000)
    sub.choices["live"].add_argument("--duration", type=float, default=60)
    sub.choices["live"].add_argument("--rate", type=float, default=0, help="0 = full speed")
    pr = sub.add_parser("_produce")
    pr.add_argument("--bootstrap")
    pr.add_argument("--topic")
    pr.add_argument("--namespaces", type=int)
    pr.add_argument("--duration", type=float)
    pr.add_argument("--rate", type=float, default=0)
    args = parser.parse_args()
    if args.mode == "_produce":
        producer_main(args)
        return

    out = run_dir(f"throughput-{args.mode}")
    extra = dict(kv.split("=", 1) for kv in args.env)
    overrides = {"LAYER_TOPIC_PARTITIONS": str(PARTITIONS), **extra}
    if args.no_poll:
        overrides["LAYER_TICK_INTERVAL_MS"] = str(3_600_000)
    settings = {k: v for k, v in vars(args).items()} | {
        "worker_env": overrides,
        "partitions": PARTITIONS,
        "run_dir": str(out),
    }
    print_header(f"throughput ({args.mode})", settings)
    namespaces = namespace_names(args.namespaces)

    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        emulator = EmulatorProcess(out / "emulator.log")
        worker: WorkerProcess | None = None
        try:
            asyncio.run(emulator.create_namespaces(namespaces))
            env = base_env(broker, emulator, **overrides)
            topic = f"{env['LAYER_TOPIC_PREFIX']}.writes"
            worker = WorkerProcess(env, out / "w1", out / "worker.log")
            sampler = Sampler(worker, out)
            figures: dict[str, object] = {}
            profile_proc = None
            if args.mode == "prefill":
                asyncio.run(create_topics(broker.bootstrap, [topic], PARTITIONS))
                result = asyncio.run(
                    produce(
                        broker.bootstrap,
                        topic,
                        namespaces,
                        count=args.count,
                        duration_s=None,
                        rate=0,
                    )
                )
                latest = result.pop("latest")
                expected = int(result["sent"])  # type: ignore[arg-type]
                sampler.expected = expected
                figures["producer"] = result
                worker.spawn()
                ready_s = None
                first_s = None
                done_s = None
                profile_at = None
                deadline = time.monotonic() + args.timeout
                cpu0 = None
                while time.monotonic() < deadline:
                    consumed = sampler.sample()
                    now = time.monotonic()
                    if ready_s is None and consumed >= 0 and worker.is_ready():
                        ready_s = now - worker.started_at
                    if first_s is None and consumed > 0:
                        first_s = now - worker.started_at
                        cpu0 = (now, worker.cpu_seconds())
                        profile_at = now + 5
                    if args.profile and profile_at and now >= profile_at and profile_proc is None:
                        profile_proc = profile_worker(worker.pid, args.profile, out / "profile.txt")
                    if consumed >= expected:
                        done_s = now - worker.started_at
                        break
                    time.sleep(0.2)
                cpu1 = (time.monotonic(), worker.cpu_seconds())
                consumed_final = sampler.sample()
                figures |= {
                    "produced": expected,
                    "consumed": consumed_final,
                    "ready_s_after_spawn": round(ready_s, 2) if ready_s else None,
                    "first_consumed_s_after_spawn": round(first_s, 2) if first_s else None,
                    "all_consumed_s_after_spawn": round(done_s, 2) if done_s else None,
                    "rate_first_to_all_per_s": round(expected / (done_s - first_s), 1)
                    if done_s and first_s
                    else None,
                    "rate_10_to_90_pct": sampler.rate_between(0.1 * expected, 0.9 * expected),
                    "rate_5s_windows": sampler.window_rates(),
                    "worker_cpu_util_while_consuming": round(
                        (cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]), 2
                    )
                    if cpu0
                    else None,
                }
            else:
                worker.start()
                sampler.sample()
                cpu0 = (time.monotonic(), worker.cpu_seconds())
                producer = subprocess.Popen(
                    [sys.executable, __file__, "_produce", "--bootstrap", broker.bootstrap,
                     "--topic", topic, "--namespaces", str(args.namespaces),
                     "--duration", str(args.duration), "--rate", str(args.rate)],
                    stdout=subprocess.PIPE, cwd=Path(__file__).parent,
                )  # fmt: skip
                t_start = time.monotonic()
                while producer.poll() is None:
                    sampler.sample()
                    if args.profile and profile_proc is None and time.monotonic() - t_start > 15:
                        profile_proc = profile_worker(worker.pid, args.profile, out / "profile.txt")
                    time.sleep(0.2)
                t_prod_end = time.monotonic()
                cpu1 = (t_prod_end, worker.cpu_seconds())
                at_producer_end = sampler.sample()
                result = json.loads(producer.stdout.read() or b"{}")  # type: ignore[union-attr]
                latest = result.pop("latest")
                expected = int(result["sent"])
                sampler.expected = expected
                figures["producer"] = result
                done = None
                deadline = time.monotonic() + args.timeout
                while time.monotonic() < deadline:
                    if sampler.sample() >= expected:
                        done = time.monotonic()
                        break
                    time.sleep(0.2)
                consumed_final = sampler.sample()
                window = [s for s in sampler.series if t_start <= s[0] <= t_prod_end]
                figures |= {
                    "produced": expected,
                    "consumed": consumed_final,
                    "consumed_during_producer_window": at_producer_end,
                    "consume_rate_during_window_per_s": round(
                        (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]), 1
                    )
                    if len(window) > 1
                    else None,
                    "backlog_at_producer_end": expected - at_producer_end,
                    "drain_s_after_producer_end": round(done - t_prod_end, 2) if done else None,
                    "end_to_end_rate_per_s": round(expected / (done - t_start), 1)
                    if done
                    else None,
                    "rate_5s_windows": sampler.window_rates(),
                    "worker_cpu_util_while_producing": round(
                        (cpu1[1] - cpu0[1]) / (cpu1[0] - cpu0[0]), 2
                    ),
                }
            m = worker.metrics()
            figures["worker_metrics"] = {k: v for k, v in m.items() if v}
            figures["lost"] = expected - consumed_final
            if sampler.stall_dumped:
                figures["stalled_at_consumed"] = sampler.stall_at_count
                print(
                    f"STALL: < 50 notifications consumed in {STALL_S:.0f} s at "
                    f"{sampler.stall_at_count:.0f}; py-spy dump in {out / 'stall-dump.txt'}"
                )
            figures["polls_started_per_5s_window"] = poll_windows(sampler.polls)
            figures["table_check"] = verify_table(worker, latest)
            print("figures: " + json.dumps(figures))
            if profile_proc is not None:
                profile_proc.wait(timeout=args.profile + 30)
                print(
                    f"profile of the worker ({args.profile:.0f} s, "
                    f"py-spy raw in {out / 'profile.txt'}):"
                )
                print(summarize_profile(out / "profile.txt"))
        finally:
            if worker is not None:
                worker.close()
            emulator.stop()


if __name__ == "__main__":
    main()
