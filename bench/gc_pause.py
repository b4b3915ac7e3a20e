"""Garbage-collection pauses of a worker's tables at scale (issue 17), in this process.

    .venv/bin/python bench/gc_pause.py [--namespaces 1000000] [--store encoded|objects]
        [--churn 1000000] [--snapshots 1]

Fills the two tables' memory stores as a worker holding `--namespaces` polled, stable
namespaces has them (a `Freshness` row with an upstream observation and a `SnapshotHistory`
of `--snapshots` snapshots each), then:

1. three full collections (`gc.collect()`, generation 2), timed, and the objects the
   collector tracks;
2. RSS per namespace (VmRSS before and after filling, both tables);
3. the hot table operations at that size: a read (`get`), a re-confirmation (read,
   `on_poll`, write), iterating every row (`items()`), and with `encoded` reading two
   fields of every row (`table_fields`, what `reload_schedule` does after a rebalance);
4. steady churn: `--churn` re-confirmations of random namespaces as fast as the process
   can (each replaces a row, as a poll does), with every automatic collection the
   interpreter runs timed through `gc.callbacks`: count and longest pause per generation.
   Each re-confirmation also leaves one small reference cycle behind, as a worker's poll
   does (its task, future and callbacks): only objects that outlive their allocation make
   the interpreter collect, and what survives a young collection is promoted.

`--store encoded` is Layer's table store (`tables.encoded_store.EncodedMemoryStore`, rows as
bytes); `--store objects` keeps the records themselves, as Faust's memory store does (the
store before this change). `--freeze` calls `gc.freeze()` after filling (the alternative of
freezing the rows recovery loaded), to see how churn brings the pauses back.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tables.encoded_store import table_fields  # noqa: E402
from tables.faust_tables import freshness_table, snapshots_table  # noqa: E402  (builds the app)
from tables.freshness import Freshness, IndexObservation, WatcherPolicy, on_poll  # noqa: E402
from tables.snapshots import Snapshot, SnapshotHistory  # noqa: E402

POLICY = WatcherPolicy(
    fast_poll_interval_ms=1_000,
    slow_poll_interval_ms=60_000,
    max_backoff_ms=60_000,
    safety_margin_ms=1_000,
)
T0 = 1_715_600_400_000


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def observation(i: int) -> IndexObservation:
    return IndexObservation(
        index_status="up-to-date",
        index={"status": "up-to-date"},
        approx_row_count=12_500 + i % 1000,
        approx_logical_bytes=3_000_000 + i,
        updated_at="2024-05-13T12:00:00Z",
        created_at="2024-05-01T12:00:00Z",
    )


def row(i: int, name: str) -> Freshness:
    return on_poll(None, name, observation(i), started_at_ms=T0 + i, policy=POLICY)


def history(i: int, state: Freshness, count: int) -> SnapshotHistory:
    return SnapshotHistory(
        snapshots=[
            Snapshot(
                stable_as_of=(state.stable_as_of or 0) - k * 60_000,
                approx_row_count=state.approx_row_count,
                approx_logical_bytes=state.approx_logical_bytes,
                updated_at=state.updated_at,
            )
            for k in range(count)
        ]
    )


class Pauses:
    """Every automatic collection, timed through `gc.callbacks`."""

    def __init__(self) -> None:
        self.by_generation: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.by_generation[info["generation"]].append(time.perf_counter() - self._started)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespaces", type=int, default=1_000_000)
    parser.add_argument("--store", choices=["encoded", "objects"], default="encoded")
    parser.add_argument("--snapshots", type=int, default=1)
    parser.add_argument("--churn", type=int, default=1_000_000)
    parser.add_argument("--freeze", action="store_true")
    args = parser.parse_args()

    fresh: Any = freshness_table.data if args.store == "encoded" else {}
    snaps: Any = snapshots_table.data if args.store == "encoded" else {}
    names = [f"tenant-{i:07d}" for i in range(args.namespaces)]
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    for i, name in enumerate(names):
        state = row(i, name)
        fresh[name] = state
        if args.snapshots:
            snaps[name] = history(i, state, args.snapshots)
    filled = time.perf_counter() - started
    gc.collect()
    per_row = (rss_bytes() - before) / args.namespaces
    if args.freeze:
        gc.freeze()
    print(
        f"store={args.store} namespaces={args.namespaces:,} snapshots/row={args.snapshots}"
        f" freeze={args.freeze} python={sys.version.split()[0]}"
    )
    print(f"filled in {filled:.1f} s; RSS per namespace (both tables): {per_row:,.0f} B")
    print(f"objects tracked by the collector: {len(gc.get_objects()):,}")
    full = []
    for _ in range(3):
        t = time.perf_counter()
        gc.collect()
        full.append(time.perf_counter() - t)
    print("full collection (gc.collect()): " + ", ".join(ms(s) for s in full))

    sample = random.Random(1).sample(names, 10_000)
    t = time.perf_counter()
    for name in sample:
        fresh.get(name)
    get_us = (time.perf_counter() - t) / len(sample) * 1e6
    t = time.perf_counter()
    for i, name in enumerate(sample):
        fresh[name] = on_poll(
            fresh.get(name), name, observation(i), started_at_ms=T0 + 10**7, policy=POLICY
        )
    poll_us = (time.perf_counter() - t) / len(sample) * 1e6
    t = time.perf_counter()
    stable = sum(1 for _, state in fresh.items() if state.is_stable)
    iterate = time.perf_counter() - t
    print(
        f"get {get_us:.2f} µs; re-confirmation (get, on_poll, set) {poll_us:.2f} µs;"
        f" items() over {stable:,} stable rows {iterate:.2f} s"
    )
    if args.store == "encoded":
        t = time.perf_counter()
        stable = sum(
            1
            for _, (status, _next) in table_fields(freshness_table, "status", "next_poll_ms")
            if status == "stable"
        )
        print(
            f"table_fields(status, next_poll_ms) over {stable:,} stable rows"
            f" (reload_schedule's read): {time.perf_counter() - t:.2f} s"
        )

    pauses = Pauses()
    rng = random.Random(2)
    gc.callbacks.append(pauses)
    t = time.perf_counter()
    for k in range(args.churn):
        i = rng.randrange(args.namespaces)
        name = names[i]
        cycle: list[Any] = []
        cycle.append(cycle)
        fresh[name] = on_poll(
            fresh.get(name), name, observation(i), started_at_ms=T0 + 2 * 10**7 + k, policy=POLICY
        )
    churned = time.perf_counter() - t
    gc.callbacks.remove(pauses)
    print(f"churn: {args.churn:,} re-confirmations in {churned:.1f} s")
    for generation, times in pauses.by_generation.items():
        if times:
            print(
                f"  generation {generation}: {len(times):,} collections,"
                f" median {ms(statistics.median(times))}, longest {ms(max(times))}"
            )
        else:
            print(f"  generation {generation}: none")
    print(f"objects tracked after churn: {len(gc.get_objects()):,}")


if __name__ == "__main__":
    main()
