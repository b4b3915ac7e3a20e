"""Benchmark 4: memory per tracked namespace, and table recovery time after a restart.

    .venv/bin/python bench/memory_recovery.py --namespaces 100000 [--profile] [--partitions 8]
        [--batch-stats] [--env LAYER_SETTING=value ...]

1. A fresh worker; its RSS (VmRSS, /proc/PID/status) once ready and idle. Then one write
   notification for each of N distinct namespaces (notifications create rows without the
   namespace existing upstream). RSS is sampled while it consumes; once all N are applied,
   RSS again. Per namespace = ΔRSS / N, and the slope of RSS against rows applied.
2. The worker is stopped (SIGTERM) and a new one started with the same app id: with the
   default memory store the freshness changelog is replayed; with `--store rocksdb://` it
   reopens the first worker's data directory. Time from spawn to `GET /readyz` = 200.
   `--profile` records the recovering worker with py-spy.
   `--replay` (with `rocksdb://`) then stops that worker and starts one more on an empty data
   directory: every partition replays its changelog into RocksDB, as when partitions move
   to another worker.
   `--batch-stats` first reads the freshness changelog with a plain consumer and counts its
   records and record batches (the embedded broker's fetch cost grows with the batches of a
   partition: BENCHMARKS.md, "Scale: a million namespaces").
3. A sample of namespaces that do exist in the emulator is read back through the restarted
   worker: each row's `last_write_ms` must cover the notification sent for it.

Poll ticks are off (`LAYER_TICK_INTERVAL_MS` = 1 h): all N namespaces are due at once and
do not exist upstream, so the watcher would otherwise spend the run polling them into 404
backoff (each failure one more changelog record); the measurement is the table alone.
Targets (the issue): ≤ 2 KB per namespace; recovery ≤ 30 s with 100,000 namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import time

from harness import (
    EmbeddedBroker,
    EmulatorProcess,
    WorkerProcess,
    base_env,
    count_batches,
    create_topics,
    notification,
    print_header,
    profile_worker,
    run_dir,
    summarize_profile,
)

PARTITIONS = 8
VERIFY_SAMPLE = 100


async def produce_all(bootstrap: str, topic: str, namespaces: list[str]) -> dict[str, int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    latest: dict[str, int] = {}
    try:
        for start in range(0, len(namespaces), 1000):
            written_at = int(time.time() * 1000)
            futures = []
            for ns in namespaces[start : start + 1000]:
                latest[ns] = written_at
                futures.append(
                    await producer.send(topic, key=ns.encode(), value=notification(ns, written_at))
                )
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return latest


def steady_rss(worker: WorkerProcess, n: int = 5, gap_s: float = 0.3) -> int:
    values = []
    for _ in range(n):
        values.append(worker.rss_kb())
        time.sleep(gap_s)
    return int(statistics.median(values))


def slope_bytes_per_row(points: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS (bytes) against rows applied."""
    if len(points) < 3:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] * 1024 for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespaces", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="py-spy the recovering worker")
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument(
        "--batch-stats", action="store_true", help="count the changelog's record batches"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for both workers (repeatable)",
    )
    parser.add_argument(
        "--store",
        default="memory://",
        choices=["memory://", "rocksdb://"],
        help="LAYER_TABLE_STORE; with rocksdb:// the restarted worker reopens the first one's "
        "data directory (local state) instead of replaying the changelog",
    )
    parser.add_argument(
        "--replay",
        action="store_true",
        help="with rocksdb://, also time a worker on an empty data directory (replay)",
    )
    args = parser.parse_args()
    out = run_dir("memory-recovery")
    overrides = {
        "LAYER_TOPIC_PARTITIONS": str(args.partitions),
        "LAYER_TICK_INTERVAL_MS": str(3_600_000),
        "LAYER_TABLE_STORE": args.store,
    } | dict(item.split("=", 1) for item in args.env)
    print_header(
        "memory per namespace and recovery",
        vars(args) | {"worker_env": overrides, "run_dir": str(out)},
    )
    namespaces = [f"mr-{i:06d}" for i in range(args.namespaces)]
    figures: dict[str, object] = {}
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        emulator = EmulatorProcess(out / "emulator.log")
        workers: list[WorkerProcess] = []
        try:
            sample = namespaces[:: max(1, len(namespaces) // VERIFY_SAMPLE)][:VERIFY_SAMPLE]
            asyncio.run(emulator.create_namespaces(sample))
            env = base_env(broker, emulator, **overrides)
            topic = f"{env['LAYER_TOPIC_PREFIX']}.writes"
            asyncio.run(create_topics(broker.bootstrap, [topic], args.partitions))

            first = WorkerProcess(env, out / "w1", out / "worker1.log")
            workers.append(first)
            figures["first_start_ready_s"] = round(first.start().ready_at - first.started_at, 2)
            time.sleep(3)
            rss0 = steady_rss(first)
            t0 = time.monotonic()
            latest = asyncio.run(produce_all(broker.bootstrap, topic, namespaces))
            figures["produce_s"] = round(time.monotonic() - t0, 2)
            points: list[tuple[float, int]] = []
            deadline = time.monotonic() + args.timeout
            applied = 0.0
            while time.monotonic() < deadline:
                m = first.metrics()
                applied = m.get("table_writes_total", 0)
                points.append((applied, first.rss_kb()))
                if m.get("write_notifications_total", 0) >= len(namespaces) and applied >= len(
                    namespaces
                ):
                    break
                time.sleep(0.5)
            figures["apply_s"] = round(time.monotonic() - t0, 2)
            time.sleep(2)
            rss1 = steady_rss(first)
            m = first.metrics()
            figures |= {
                "rows_applied": m.get("table_writes_total"),
                "notifications_consumed": m.get("write_notifications_total"),
                "rss_idle_kb": rss0,
                "rss_after_kb": rss1,
                "bytes_per_namespace": round((rss1 - rss0) * 1024 / len(namespaces), 1),
                "bytes_per_namespace_slope": round(s, 1)
                if (s := slope_bytes_per_row(points))
                else None,
            }
            if args.batch_stats:
                changelog = f"{env['LAYER_APP_ID']}-freshness-changelog"
                t_count = time.monotonic()
                figures["changelog"] = asyncio.run(
                    count_batches(broker.bootstrap, changelog, args.partitions, timeout_s=120)
                ) | {"read_s": round(time.monotonic() - t_count, 2)}
                print("changelog: " + json.dumps(figures["changelog"]), flush=True)
            t_stop = time.monotonic()
            first.stop(signal.SIGTERM)
            figures["stop_s"] = round(time.monotonic() - t_stop, 2)

            local_state = args.store.startswith("rocksdb")
            second = WorkerProcess(env, out / ("w1" if local_state else "w2"), out / "worker2.log")
            workers.append(second)
            second.spawn()
            profile = (
                profile_worker(second.pid, 60, out / "recovery-profile.txt")
                if args.profile
                else None
            )
            recovery_s = second.wait_ready(timeout_s=args.timeout)
            if profile is not None:
                profile.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
                profile.wait(30)
            time.sleep(1)
            rss2 = steady_rss(second)
            ok = behind = missing = 0
            for ns in sample:
                r = second.http.get(f"/v2/namespaces/{ns}/metadata")
                if r.status_code != 200:
                    missing += 1
                    continue
                last = r.json()["layer"].get("last_write_ms")
                if last is not None and last >= latest[ns]:
                    ok += 1
                else:
                    behind += 1
            figures |= {
                "recovery_spawn_to_ready_s": round(recovery_s, 2),
                "changelog_records_replayed_at_least": m.get("table_writes_total"),
                "replay_rate_records_per_s": round(
                    float(m.get("table_writes_total", 0)) / recovery_s, 0
                ),
                "rss_after_recovery_kb": rss2,
                "bytes_per_namespace_after_recovery_vs_idle": round(
                    (rss2 - rss0) * 1024 / len(namespaces), 1
                ),
                "recovered_sample_check": {
                    "checked": len(sample),
                    "ok": ok,
                    "behind": behind,
                    "missing": missing,
                },
                "targets": {"bytes_per_namespace_le": 2048, "recovery_s_le": 30},
            }
            if args.replay and local_state:
                second.stop(signal.SIGTERM)
                third = WorkerProcess(env, out / "w3", out / "worker3.log")
                workers.append(third)
                third.spawn()
                replay_s = third.wait_ready(timeout_s=args.timeout)
                time.sleep(1)
                rss3 = steady_rss(third)
                figures |= {
                    "replay_into_empty_datadir_spawn_to_ready_s": round(replay_s, 2),
                    "replay_rate_records_per_s_empty_datadir": round(
                        float(m.get("table_writes_total", 0)) / replay_s, 0
                    ),
                    "rss_after_replay_kb": rss3,
                }
            print("figures: " + json.dumps(figures))
            if profile is not None:
                print(
                    "profile of the recovering worker (spawn → ready), "
                    f"py-spy raw in {out / 'recovery-profile.txt'}:"
                )
                print(summarize_profile(out / "recovery-profile.txt"))
        finally:
            for worker in workers:
                worker.close()
            emulator.stop()


if __name__ == "__main__":
    main()
