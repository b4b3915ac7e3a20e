"""Polling budget at scale (issue 17, items 3 and 4): written namespaces keep their lag while
more stable namespaces are tracked than `LAYER_UPSTREAM_MAX_RPS` can re-confirm.

    .venv/bin/python bench/polling_budget.py [--namespaces 1000000] [--e2e-namespaces 100000]

Part 1, in this process (no I/O): the due schedule (tables/schedule.py) holding
`--namespaces` entries over 8 partitions, every stable one overdue: its memory (tracemalloc),
the time to build it from the table (`reload_schedule`'s work), and the cost of one tick's
pops (all due written namespaces, then a budget's share of confirmations, oldest first).

Part 2, end to end (embedded broker, emulator, one worker): the emulator is seeded with
`--e2e-namespaces` namespaces; Layer learns them all as stable through `register_many`
messages carrying an up-to-date observation (what a first listing sends: part 2 also times
producing them). Every stable namespace is then due for re-confirmation each slow interval,
`N / slow interval` polls a second against a budget of `LAYER_UPSTREAM_MAX_RPS`. Meanwhile
`--written-per-min` percent of the namespaces get a write notification per minute. A Kafka
consumer of `{prefix}.stability` times, per written namespace, the notification → its
`became_unstable` (target p99 ≤ 250 ms) and → `became_stable` (target: the namespace is
drained at once here, so ≤ fast interval + 250 ms; a poll can only cover a write from
`LAYER_SAFETY_MARGIN_MS` after it, so the floor is the margin plus one poll). The worker's
`layer_confirmation_age_seconds` histogram gives the confirmation ages. The same write load
runs first with `--baseline-namespaces` tracked (the budget to spare), so a noisy machine's
figures can be compared side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import tracemalloc
from typing import Any

from harness import (
    EmbeddedBroker,
    EmulatorProcess,
    WorkerProcess,
    base_env,
    create_topics,
    notification,
    percentiles,
    print_header,
    run_dir,
)

from layer.events import partition_for
from tables.schedule import DueSchedule

PARTITIONS = 8
SEED_PREFIX = "pb-"


# ---------------------------------------------------------------- part 1: the schedule alone


def schedule_at_scale(namespaces: int, max_rps: float, tick_ms: int) -> dict[str, Any]:
    names = [f"{SEED_PREFIX}{i:07d}" for i in range(namespaces)]
    partition_of = {name: partition_for(name, PARTITIONS) for name in names}
    now = 10**12
    # Every namespace stable, overdue by up to an hour (oldest first = smallest time).
    table = {name: now - 3_600_000 + i * 3_600_000 // namespaces for i, name in enumerate(names)}
    written = random.Random(1).sample(names, 100)
    for name in written:
        table[name] = now  # written: due now, in the written lane

    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    started = time.perf_counter()
    schedule = DueSchedule()
    lanes: dict[int, tuple[list[tuple[int, str]], list[tuple[int, str]]]] = {
        p: ([], []) for p in range(PARTITIONS)
    }
    written_set = set(written)
    for name in names:
        lane = lanes[partition_of[name]][0 if name in written_set else 1]
        lane.append((table[name], name))
    for partition, (w, c) in lanes.items():
        schedule.load(partition, w, c)
    del lanes
    load_s = time.perf_counter() - started
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    share = max(1, -(-int(max_rps * tick_ms / 1000) // PARTITIONS))
    tick_costs_us = []
    popped_written = 0
    for round_ in range(200):
        partition = round_ % PARTITIONS
        t = time.perf_counter()
        due = schedule.pop_due(partition, now, table.get, 1000)
        confirm = schedule.pop_due(partition, now, table.get, share, confirmations=True)
        tick_costs_us.append((time.perf_counter() - t) * 1e6)
        popped_written += len(due)
        for name in confirm:  # re-confirmed: next due a slow interval later
            table[name] = now + 60_000
            schedule.schedule(partition, name, table[name], confirmation=True)
    return {
        "namespaces": namespaces,
        "schedule_bytes_per_namespace": round((after - before) / namespaces, 1),
        "schedule_mib": round((after - before) / 2**20, 1),
        "load_s": round(load_s, 2),
        "tick_pop_us": percentiles(tick_costs_us),
        "confirmations_per_tick_per_partition": share,
        "written_popped_in_first_ticks": popped_written,
    }


# ---------------------------------------------------------------- part 2: end to end


async def register_all(bootstrap: str, topic: str, names: list[str]) -> float:
    """Layer learns every namespace as stable: `register_many` per partition, up-to-date."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for start in range(0, len(names), 1000):
            now_ms = int(time.time() * 1000)
            by_partition: dict[int, list[dict[str, Any]]] = {}
            for name in names[start : start + 1000]:
                by_partition.setdefault(partition_for(name, PARTITIONS), []).append(
                    {
                        "kind": "register",
                        "namespace": name,
                        "observed_at_ms": now_ms,
                        "observation": {
                            "started_at_ms": now_ms,
                            "index": {"status": "up-to-date"},
                            "approx_row_count": 0,
                        },
                    }
                )
            sends = [
                await producer.send(
                    topic,
                    json.dumps({"kind": "register_many", "registrations": entries}).encode(),
                    partition=partition,
                )
                for partition, entries in by_partition.items()
            ]
            await asyncio.gather(*sends)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def write_and_observe(
    bootstrap: str,
    prefix: str,
    names: list[str],
    per_second: float,
    duration_s: float,
) -> dict[str, Any]:
    """Send write notifications at `per_second`; time each one's stability events."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    written: dict[str, int] = {}
    unstable: dict[str, int] = {}
    stable: dict[str, int] = {}
    consumer = AIOKafkaConsumer(
        f"{prefix}.stability", bootstrap_servers=bootstrap, auto_offset_reset="latest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await consumer.start()
    await producer.start()
    stop = asyncio.Event()

    async def consume() -> None:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    ns, at = event["namespace"], event["observed_at_ms"]
                    if ns not in written:
                        continue
                    if event["change"] == "became_unstable" and ns not in unstable:
                        unstable[ns] = at
                    elif event["is_stable"] and ns in unstable and ns not in stable:
                        stable[ns] = at

    reader = asyncio.create_task(consume())
    await asyncio.sleep(2)  # the consumer has its assignment and position
    rng = random.Random(7)
    deadline = time.monotonic() + duration_s
    interval = 1 / per_second
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        ns = rng.choice(names)
        if ns not in written:
            written[ns] = int(time.time() * 1000)
            await producer.send(f"{prefix}.writes", notification(ns, written[ns]), key=ns.encode())
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.sleep(10)  # the last writes settle
    stop.set()
    await reader
    await producer.stop()
    await consumer.stop()
    to_unstable = [unstable[ns] - written[ns] for ns in written if ns in unstable]
    to_stable = [stable[ns] - written[ns] for ns in written if ns in stable]
    return {
        "writes": len(written),
        "notification_to_unstable_ms": percentiles(to_unstable, (50, 90, 99)),
        "notification_to_stable_ms": percentiles(to_stable, (50, 90, 99)),
        "never_unstable": len(written) - len(to_unstable),
        "never_stable_again": len(written) - len(to_stable),
    }


def histogram_quantiles(metrics: dict[str, float], name: str) -> dict[str, Any]:
    """Quantiles (bucket upper bounds) of a Prometheus histogram scraped as a dict."""
    buckets = sorted(
        (float(key.split('le="')[1].rstrip('"}')), value)
        for key, value in metrics.items()
        if key.startswith(f"{name}_bucket{{")
    )
    total = metrics.get(f"{name}_count", 0.0)
    if not total:
        return {"n": 0}
    out: dict[str, Any] = {"n": int(total), "mean_s": round(metrics[f"{name}_sum"] / total, 1)}
    for q in (0.5, 0.9, 0.99):
        out[f"p{int(q * 100)}_le_s"] = next(le for le, count in buckets if count >= q * total)
    return out


def end_to_end(args: argparse.Namespace, namespaces: int) -> dict[str, Any]:
    out = run_dir("polling-budget")
    names = [f"{SEED_PREFIX}{i:07d}" for i in range(namespaces)]
    overrides = {
        "LAYER_TOPIC_PARTITIONS": str(PARTITIONS),
        "LAYER_UPSTREAM_MAX_RPS": str(args.max_rps),
        "LAYER_SLOW_POLL_INTERVAL_MS": str(args.slow_ms),
    }
    figures: dict[str, Any] = {"worker_env": overrides, "run_dir": str(out)}
    with EmbeddedBroker(log_path=out / "broker.log") as broker:
        emulator = EmulatorProcess(
            out / "emulator.log",
            "--seed-namespaces",
            str(namespaces),
            "--seed-prefix",
            SEED_PREFIX,
        )
        worker: WorkerProcess | None = None
        try:
            env = base_env(broker, emulator, **overrides)
            prefix = env["LAYER_TOPIC_PREFIX"]
            asyncio.run(create_topics(broker.bootstrap, [f"{prefix}.ticks"], PARTITIONS))
            worker = WorkerProcess(env, out / "w1", out / "worker.log")
            worker.start()
            figures["register_produce_s"] = round(
                asyncio.run(register_all(broker.bootstrap, f"{prefix}.ticks", names)), 2
            )
            t0 = time.monotonic()
            while worker.metrics().get("registrations_total", 0) < len(names):
                if time.monotonic() - t0 > 600:
                    raise RuntimeError("registrations not applied in 10 minutes")
                time.sleep(0.5)
            figures["registrations_applied_s"] = round(time.monotonic() - t0, 2)
            before = worker.metrics()
            cpu0, t1 = worker.cpu_seconds(), time.monotonic()
            per_second = args.e2e_namespaces * args.written_per_min / 100 / 60  # same both runs
            figures["writes_per_s"] = round(per_second, 1)
            figures["confirmation_demand_per_s"] = round(namespaces / (args.slow_ms / 1000), 1)
            figures |= asyncio.run(
                write_and_observe(broker.bootstrap, prefix, names, per_second, args.duration)
            )
            after = worker.metrics()
            elapsed = time.monotonic() - t1
            figures["polls_per_s"] = round(
                (after.get("polls_total", 0) - before.get("polls_total", 0)) / elapsed, 1
            )
            figures["worker_cpu_share"] = round((worker.cpu_seconds() - cpu0) / elapsed, 2)
            figures["confirmation_age"] = histogram_quantiles(after, "confirmation_age_seconds")
            figures["worker_rss_mib"] = round(worker.rss_kb() / 1024, 1)
        finally:
            if worker is not None:
                worker.close()
            emulator.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespaces", type=int, default=1_000_000, help="part 1")
    parser.add_argument("--e2e-namespaces", type=int, default=100_000, help="part 2 (0: skip)")
    parser.add_argument(
        "--baseline-namespaces", type=int, default=5_000, help="part 2's first run, same writes"
    )
    parser.add_argument("--max-rps", type=float, default=200.0)
    parser.add_argument("--slow-ms", type=int, default=60_000)
    parser.add_argument("--written-per-min", type=float, default=1.0, help="percent per minute")
    parser.add_argument("--duration", type=float, default=120.0, help="part 2's write phase, s")
    args = parser.parse_args()
    print_header("polling budget at scale", vars(args))
    part1 = schedule_at_scale(args.namespaces, args.max_rps, 100)
    print("part 1 (due schedule): " + json.dumps(part1))
    if args.e2e_namespaces:
        # The same write load with few namespaces tracked, then with all: side by side.
        for label, namespaces in (
            ("baseline", args.baseline_namespaces),
            ("at scale", args.e2e_namespaces),
        ):
            part2 = end_to_end(args, namespaces)
            print(f"part 2 (end to end, {label}, {namespaces} namespaces): " + json.dumps(part2))


if __name__ == "__main__":
    main()
