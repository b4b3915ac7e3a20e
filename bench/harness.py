"""Shared pieces of the pipeline benchmarks: broker, emulator and worker processes, Kafka
helpers, statistics, machine info and py-spy profiles.

Every benchmark prints the machine, its settings and its figures. Nothing here asserts on
time: these are measurements, not tests.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from layer.embedded_broker import EmbeddedBroker, free_port  # noqa: E402
from tests.processes import EmulatorProcess as _EmulatorProcess  # noqa: E402
from tests.processes import WorkerProcess as _WorkerProcess  # noqa: E402
from tests.processes import layer_env, wait_until  # noqa: E402

__all__ = [
    "API_KEY",
    "profile_stacks",
    "share_lines",
    "EmbeddedBroker",
    "free_port",
    "wait_until",
    "EmulatorProcess",
    "WorkerProcess",
    "base_env",
    "count_batches",
    "create_topics",
    "machine_info",
    "percentiles",
    "print_header",
    "profile_worker",
    "run_dir",
]

API_KEY = "tpuf-bench-key"
#: py-spy from the venv (`make install` installs the `bench` extra), unless PY_SPY says where.
PY_SPY = os.environ.get("PY_SPY", str(Path(sys.executable).parent / "py-spy"))


# ---------------------------------------------------------------- machine and output


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_info() -> dict[str, Any]:
    versions = {}
    for package in (
        "faust-streaming",
        "aiokafka",
        "mode-streaming",
        "aiohttp",
        "httpx",
        "pydantic",
        "orjson",
    ):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_total = line.split(":", 1)[1].strip()
    except OSError:
        pass
    dirty = _git("status", "--porcelain", "--", "agents", "tables", "layer", "api")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "mem_total": mem_total,
        "loadavg_1_5_15": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "app_code_dirty": bool(dirty),
    }


def print_header(title: str, settings: dict[str, Any]) -> None:
    print(f"=== {title} ===")
    print("machine: " + json.dumps(machine_info()))
    print("settings: " + json.dumps(settings, default=str))
    sys.stdout.flush()


def percentiles(values: Sequence[float], points: Iterable[int] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus min/max/mean/n (empty input: n=0 only)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    out: dict[str, float] = {"n": len(ordered), "min": ordered[0]}
    for p in points:
        rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n), nearest rank
        out[f"p{p}"] = ordered[min(len(ordered), rank) - 1]
    out["max"] = ordered[-1]
    out["mean"] = statistics.fmean(ordered)
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def run_dir(name: str) -> Path:
    path = (
        Path(os.environ.get("BENCH_RUN_ROOT", "/tmp/layer-bench"))
        / f"{name}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:4]}"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- processes


class EmulatorProcess(_EmulatorProcess):
    """The turbopuffer emulator (tests/processes.py) with the benchmarks' key."""

    def __init__(self, log_path: Path, *extra_args: str) -> None:
        super().__init__(log_path, *extra_args, api_keys=(API_KEY,))


class WorkerProcess(_WorkerProcess):
    """A `python -m layer worker` (tests/processes.py) with the benchmarks' key."""

    def __init__(self, env: dict[str, str], data_dir: Path, log_path: Path) -> None:
        super().__init__(env, data_dir, log_path, api_key=API_KEY)


def base_env(
    broker: EmbeddedBroker, emulator: EmulatorProcess | None, **overrides: str
) -> dict[str, str]:
    """Environment of a worker: a fresh app id/topic prefix, the embedded profile, overrides."""
    return layer_env(
        app_id=f"layer-bench-{uuid.uuid4().hex[:8]}",
        broker_url=broker.url,
        upstream_url=emulator.url if emulator else "http://127.0.0.1:9",
        api_key=API_KEY,
        **overrides,
    )


# ---------------------------------------------------------------- Kafka


async def create_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    """Create topics (the worker would create them at start; a pre-filled one must exist first)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def count_batches(
    bootstrap: str, topic: str, partitions: int, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Records and record batches of `topic`, read from the start with a plain consumer.

    The embedded broker stores one object per batch, and its fetch cost grows with the batch
    count of a partition (BENCHMARKS.md, issue 17), so this is what a recovery will cost it.
    Counts what was read within `timeout_s` (`complete` says whether that was everything).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.consumer import fetcher

    batches: collections.Counter[int] = collections.Counter()
    original_init = fetcher.PartitionRecords.__init__

    class CountingRecords:
        def __init__(self, partition: int, records: Any) -> None:
            self._partition, self._records = partition, records

        def has_next(self) -> bool:
            return bool(self._records.has_next())

        def next_batch(self) -> Any:
            batches[self._partition] += 1
            return self._records.next_batch()

    def counting_init(self: Any, tp: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, tp, CountingRecords(tp.partition, records), *args, **kwargs)

    fetcher.PartitionRecords.__init__ = counting_init  # type: ignore[method-assign]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    records: collections.Counter[int] = collections.Counter()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        complete = False
        while time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=500, max_records=50_000)
            for tp, messages in fetched.items():
                records[tp.partition] += len(messages)
            # ListOffsets on the embedded broker may stop short (NOTES-kafka.md §2): the
            # fetch high watermark is the truth.
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(
                consumer.highwater(tp) is not None
                and positions[tp] >= max(ends[tp], consumer.highwater(tp) or 0)
                for tp in tps
            ):
                complete = True
                break
    finally:
        await consumer.stop()
        fetcher.PartitionRecords.__init__ = original_init  # type: ignore[method-assign]
    n_records, n_batches = sum(records.values()), sum(batches.values())
    return {
        "records": n_records,
        "batches": n_batches,
        "records_per_batch": round(n_records / n_batches, 1) if n_batches else None,
        "max_batches_in_a_partition": max(batches.values(), default=0),
        "complete": complete,
    }


def notification(namespace: str, written_at_ms: int) -> bytes:
    return json.dumps(
        {"version": 1, "namespace": namespace, "written_at_ms": written_at_ms},
        separators=(",", ":"),
    ).encode()


# ---------------------------------------------------------------- profiles


def profile_worker(
    pid: int,
    seconds: float,
    out: Path,
    rate: int = 100,
    *,
    nonblocking: bool = True,
    threads: bool = True,
) -> subprocess.Popen[bytes] | None:
    """Start `py-spy record` on `pid` for `seconds` (raw collapsed stacks into `out`).

    `nonblocking=False` pauses the process at each sample: slower, but whole stacks.
    """
    if not Path(PY_SPY).exists():
        print(f"profile: {PY_SPY} not found, no profile")
        return None
    return subprocess.Popen(
        [
            PY_SPY,
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            str(rate),
            "--format",
            "raw",
            "-o",
            str(out),
            *(["--nonblocking"] if nonblocking else []),
            *(["--threads"] if threads else []),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


#: Buckets for a profile's samples, in priority order: a stack goes to the first bucket one of
#: whose patterns matches any of its frames ("event loop" is what is left: loop overhead,
#: callbacks and stacks py-spy could not unwind to a known frame).
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("logging (debug records built: root logger at DEBUG)", ("(logging/__init__.py)",)),
    (
        "table write → changelog produce (faust producer buffer, aiokafka sender/conn)",
        (
            "ProducerBuffer.",
            "Topic.publish_message",
            "Producer.send (faust",
            "AIOKafkaProducer.send",
            "Sender.",
            "SendProduceReqHandler",
            "MessageAccumulator",
            "_SelectorSocketTransport.write",
        ),
    ),
    ("changelog recovery (faust tables/recovery)", ("Recovery.", "(faust/tables/recovery.py)")),
    (
        "app: transitions / Freshness records / parsing",
        (
            "apply_transition",
            "on_write",
            "on_poll",
            "coalesce_writes",
            "parse_write_notification",
            "(faust/models/",
            "Record.",
            "_replace (tables/",
            "(tables/",
            "(pydantic",
        ),
    ),
    ("table get/set bookkeeping (faust Table/Collection)", ("(faust/tables/",)),
    (
        "consumer → stream delivery (fetcher, conductor, Stream, batch delivery)",
        (
            "(aiokafka/consumer/",
            "Conductor.",
            "(faust/streams.py)",
            "(layer/batch_consumer.py)",
            "(faust/transport/consumer.py)",
            "(faust/channels.py)",
            "(faust/topics.py)",
        ),
    ),
    (
        "watcher polls (httpx, upstream)",
        ("(httpx/", "(httpcore/", "(agents/ticks.py)", "(layer/upstream.py)"),
    ),
    ("web (aiohttp server)", ("(aiohttp/",)),
    ("event loop / mode services (scheduling, waits)", ("(asyncio/", "(mode/", "(selectors.py)")),
]


def bucket_of(frames: list[str]) -> str:
    for name, patterns in BUCKETS:
        for frame in reversed(frames):
            if any(p in frame for p in patterns):
                return name
    return "other"


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def short_frame(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def profile_stacks(path: Path) -> Iterator[tuple[str | None, list[str], int]]:
    """`(thread, frames from root to leaf, samples)` for each stack of a py-spy raw profile."""
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        frames = [short_frame(f) for f in stack.split(";")]
        thread = (
            frames.pop(0) if frames and frames[0].startswith(("thread (", "process ")) else None
        )
        yield thread, frames, int(count_s)


def share_lines(counts: Iterable[tuple[str, int]], total: int) -> list[str]:
    """`  12.3%  label` lines, in the order given."""
    return [f"  {100 * count / total:5.1f}%  {label}" for label, count in counts]


def summarize_profile(path: Path, top: int = 25) -> str:
    """Top functions by inclusive ('total') and exclusive ('self') share of samples."""
    if not path.exists():
        return f"(no profile at {path})"
    total = idle = 0
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    buckets: collections.Counter[str] = collections.Counter()
    for thread, frames, count in profile_stacks(path):
        total += count
        if thread is not None:
            threads[thread] += count
        if frames and (
            "select (selectors.py)" in frames[-1] or "_run_once" in frames[-1] and len(frames) < 4
        ):
            idle += count
        buckets[bucket_of(frames)] += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            exclusive[frames[-1]] += count
    if not total:
        return "(empty profile)"
    lines = [f"samples: {total}  idle in selector (event loop waiting): {100 * idle / total:.1f}%"]
    if threads:
        lines.append(
            "threads: " + ", ".join(f"{t} {100 * c / total:.1f}%" for t, c in threads.most_common())
        )
    lines.append(
        "by component (first bucket, in the order listed in harness.BUCKETS, with a frame in "
        "the stack; % of samples):"
    )
    lines += share_lines(buckets.most_common(), total)
    lines.append("top inclusive (% of samples):")
    lines += share_lines(inclusive.most_common(top), total)
    lines.append("top self (% of samples):")
    lines += share_lines(exclusive.most_common(15), total)
    return "\n".join(lines)


def dump_stacks(pid: int) -> str:
    """`py-spy dump` of a (possibly stalled) worker."""
    try:
        return subprocess.run(
            [PY_SPY, "dump", "-p", str(pid)], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(py-spy dump failed: {exc})"


def cleanup_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def out(line: str = "") -> None:
    print(line, flush=True)


def fmt(stats: dict[str, float], keys: tuple[str, ...] = ("p50", "p90", "p99", "max")) -> str:
    return "  ".join(f"{k}={stats[k]:.2f}" for k in keys if k in stats) + f"  (n={stats['n']})"


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_snapshot() -> dict[int, tuple[str, int, float]]:
    """pid → (command, parent pid, CPU seconds) of every process we can read."""
    snapshot: dict[int, tuple[str, int, float]] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        snapshot[int(entry.name)] = (
            cmd.strip()[:90] or stat.split("(", 1)[1].split(")", 1)[0],
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return snapshot
