"""The table comes back from its changelog after a stop, and nothing sent meanwhile is lost.

This is the test that proves the embedded-broker workaround (layer/app.py, `_highwaters`,
NOTES-kafka.md §2 workaround B): without it, Tansu's ListOffsets answer makes Faust stop
recovery early and rows go missing. Many namespaces are written in bursts so that the
changelog holds multi-record batches that would expose it. It runs with both table stores:
`memory://` rebuilds the table from the changelog, `rocksdb://` reopens its local state and
reads the changelog from where it left off.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import EmulatorProcess, LayerCluster, eventually, unique_namespace

NAMESPACES = 200
SETTINGS = {
    # Once stable, a namespace's state changes only through a write notification.
    "LAYER_SLOW_POLL_INTERVAL_MS": "600000",
    "LAYER_POLL_MAX_BACKOFF_MS": "600000",
    # Lets the producer put many changelog records in one batch (without the workaround).
    "LAYER_PRODUCER_LINGER_MS": "50",
}


async def _notify(producer: AIOKafkaProducer, topic: str, written_at: dict[str, int]) -> None:
    """One notification per namespace, all in flight at once (so they share batches).

    The record timestamp is the notification's own time, so a notification for a write the
    watermark already covers stays covered (Layer uses the later of the two).
    """
    batch = [
        await producer.send(
            topic,
            key=ns.encode(),
            value=json.dumps({"namespace": ns, "written_at_ms": at_ms}).encode(),
            timestamp_ms=at_ms,
        )
        for ns, at_ms in written_at.items()
    ]
    for sent in batch:
        await sent


def _snapshot(worker, namespaces: list[str]) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {ns: worker.layer_state(ns) for ns in namespaces}


@pytest.mark.parametrize(
    ("stop_signal", "store"),
    [
        (signal.SIGTERM, "memory://"),
        (signal.SIGKILL, "memory://"),
        (signal.SIGKILL, "rocksdb://"),
    ],
    ids=["sigterm", "sigkill", "sigkill-rocksdb"],
)
async def test_table_is_rebuilt_from_the_changelog_and_no_notification_is_lost(
    cluster: LayerCluster,
    emulator: EmulatorProcess,
    producer: AIOKafkaProducer,
    stop_signal: signal.Signals,
    store: str,
) -> None:
    settings = {**SETTINGS, "LAYER_TABLE_STORE": store}
    prefix = unique_namespace("recovery")
    namespaces = [f"{prefix}-{i}" for i in range(NAMESPACES)]
    for ns in namespaces:
        emulator.write(ns, {"upsert_rows": [{"id": 1, "title": ns}]})
        emulator.force_indexing(ns)
    topic = cluster.topic("writes")
    worker = cluster.worker("w1", **settings).start()

    first_write = int(time.time() * 1000)
    await _notify(producer, topic, dict.fromkeys(namespaces, first_write))
    await eventually(
        lambda: all(
            (worker.layer_state(ns)["last_write_ms"] or 0) >= first_write for ns in namespaces[-5:]
        ),
        30,
        "the first burst to be applied",
    )
    stable = await eventually(
        lambda: (
            (s := _snapshot(worker, namespaces))
            and all((v["last_write_ms"] or 0) >= first_write and v["is_stable"] for v in s.values())
            and s
        ),
        30,
        "every namespace written and stable",
    )
    # End with a burst of table writes that need no poll (writes the watermark covers): the
    # changelog's last batches then hold many records, which is what Tansu's ListOffsets bug
    # truncates on recovery unless the workaround is in place.
    covered = {ns: state["stable_as_of"] for ns, state in stable.items()}
    await _notify(producer, topic, covered)
    before = await eventually(
        lambda: (
            (s := _snapshot(worker, namespaces))
            and all(
                s[ns]["last_write_ms"] == covered[ns] and s[ns]["is_stable"] for ns in namespaces
            )
            and s
        ),
        30,
        "the covered writes to be applied",
    )

    worker.stop(stop_signal)
    # Sent while no worker runs: must be applied after the restart.
    second_write = int(time.time() * 1000)
    late = namespaces[: NAMESPACES // 4]
    await _notify(producer, topic, dict.fromkeys(late, second_write))

    restarted = cluster.worker("w1", **settings).start()

    def caught_up() -> dict[str, dict] | None:
        states = _snapshot(restarted, namespaces)
        pending = [
            (ns, states[ns])
            for ns in late
            if (states[ns]["last_write_ms"] or 0) < second_write or not states[ns]["is_stable"]
        ]
        caught_up.pending = pending[:3]  # type: ignore[attr-defined]
        return None if pending else states

    try:
        after = await eventually(caught_up, 30, "the notifications sent while down to apply")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still pending: {caught_up.pending}") from None  # type: ignore[attr-defined]
    untouched = namespaces[NAMESPACES // 4 :]
    assert {ns: after[ns] for ns in untouched} == {ns: before[ns] for ns in untouched}
    for ns in late:
        assert after[ns]["stable_as_of"] >= second_write > before[ns]["stable_as_of"], ns
