"""The producer and consumer helpers, and `layer notify` / `layer watch`, against a worker."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from contextlib import aclosing
from pathlib import Path

from layer.clients import WriteNotifier, stability_changes
from tests.integration.conftest import (
    EmulatorProcess,
    LayerCluster,
    eventually,
    unique_namespace,
)


def _cli_env(cluster: LayerCluster) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LAYER_", "TURBOPUFFER_"))},
        "LAYER_KAFKA_BROKER": cluster.broker.url,
        "LAYER_TOPIC_PREFIX": cluster.topic_prefix,
    }


async def test_write_notifier_and_stability_iterator_round_trip_through_a_worker(
    cluster: LayerCluster, emulator: EmulatorProcess
) -> None:
    prefix = unique_namespace("client")
    name = f"{prefix}-a"
    emulator.write(name, {"upsert_rows": [{"id": 1}]})
    emulator.force_indexing(name)
    worker = cluster.worker().start()

    async def changes_until_stable() -> list[str]:
        # Closed when left (its consumer stops now, not when the generator is collected).
        async with aclosing(
            stability_changes(
                cluster.broker.bootstrap,
                topic_prefix=cluster.topic_prefix,
                prefix=prefix,
                from_beginning=True,
            )
        ) as changes:
            seen: list[str] = []
            async for change in changes:
                seen.append(f"{change.namespace}:{change.change}")
                if change.change == "became_stable":
                    return seen
        raise AssertionError("the iterator ended")

    watching = asyncio.create_task(changes_until_stable())
    async with WriteNotifier(
        cluster.broker.bootstrap, topic_prefix=cluster.topic_prefix, source="test"
    ) as notifier:
        note = await notifier.notify(name, rows=1)
    assert note.namespace == name and note.source == "test"
    await eventually(
        lambda: worker.layer_state(name)["last_write_ms"] is not None, 20, "the notification"
    )
    seen = await asyncio.wait_for(watching, 30)
    # New to Layer through the notification, it appears unstable, then a poll makes it stable;
    # or the test's own read (an up-to-date observation) was applied first: stable at once.
    assert seen[-1] == f"{name}:became_stable", seen
    assert set(seen[:-1]) <= {f"{name}:became_unstable", f"{name}:advanced"}, seen


def test_layer_notify_and_layer_watch_on_the_command_line(
    cluster: LayerCluster, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    name = unique_namespace("cli")
    emulator.write(name, {"upsert_rows": [{"id": 1}]})
    emulator.force_indexing(name)
    worker = cluster.worker().start()
    env = _cli_env(cluster)

    notified = subprocess.run(
        [sys.executable, "-m", "layer", "notify", name, "--rows", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert notified.returncode == 0, notified.stderr
    printed = json.loads(notified.stdout)
    assert printed["namespace"] == name and printed["rows"] == 3
    assert printed["source"] == "layer-cli"

    watch = subprocess.Popen(
        [sys.executable, "-m", "layer", "watch", "--prefix", name, "--from-beginning"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        worker.metadata(name)
        assert watch.stdout is not None
        # The watermark may advance before the flip (a poll that started before the write
        # vouches for an earlier moment): read until the flip, one line per change.
        deadline = time.monotonic() + 30
        while not any("became_stable" in line for line in lines) and len(lines) < 10:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no became_stable line within 30 s: {lines}"
            if select.select([watch.stdout], [], [], remaining)[0]:
                lines.append(watch.stdout.readline())
    finally:
        watch.terminate()
        watch.wait(10)
        if watch.stdout is not None:
            watch.stdout.close()
    flip = next(line for line in lines if "became_stable" in line)
    assert name in flip and "is_stable=true" in flip
    assert all(line.split()[1] == name for line in lines)


def test_an_invalid_setting_stops_the_worker_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYER_", "TURBOPUFFER_"))}
    result = subprocess.run(
        [sys.executable, "-m", "layer", "worker"],
        env={**env, "LAYER_PORT": "eighty", "TURBOPUFFER_API_KEY": "k"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "LAYER_PORT" in result.stderr and "Traceback" not in result.stderr
