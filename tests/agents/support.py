"""Helpers shared by the agent tests (scenario builders and waits)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Literal
from unittest.mock import AsyncMock

from faust.types import Message

from layer.app import settings, topics
from layer.events import partition_for
from tables.freshness import IndexObservation

#: Upper bound for an effect the agent produces in well under a millisecond.
EFFECT_TIMEOUT_S = 2.0

#: A Kafka record timestamp (seconds) earlier than every `written_at_ms` the tests use, so
#: the producer's claim is the effective write time (`effective_write_ms`). `put()` replaces
#: a falsy timestamp with `time()`, hence not 0.
EARLY_RECORD_TS = 0.001


async def eventually(predicate: Callable[[], Any], what: str) -> Any:
    """Yield to the agent until `predicate()` is truthy; fail naming `what` on timeout.

    `test_context().put()` returns once the event entered the stream, before the agent body
    has handled it (the ticks agent handles it in its own task), so tests wait for
    the effect itself, inside the `test_context` block.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EFFECT_TIMEOUT_S
    while not (result := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {EFFECT_TIMEOUT_S} s waiting for {what}")
        await asyncio.sleep(0.001)
    return result


def sent_values(send: AsyncMock) -> list[dict[str, Any]]:
    """The JSON values a mocked `topic.send` was awaited with, in order."""
    return [json.loads(call.kwargs["value"]) for call in send.await_args_list]


def namespace_in_partition(partition: int, prefix: str = "ns") -> str:
    """A namespace name whose key falls in `partition` under the producers' partitioner."""
    for i in range(100_000):
        name = f"{prefix}-{i}"
        if partition_for(name, settings.topic_partitions) == partition:
            return name
    raise AssertionError(f"no namespace found for partition {partition}")


def write(namespace: str, written_at_ms: int) -> bytes:
    """A `writes` message value."""
    return json.dumps({"namespace": namespace, "written_at_ms": written_at_ms}).encode()


def writes_message(
    value: bytes,
    key: bytes | None = None,
    *,
    timestamp: float = EARLY_RECORD_TS,
    partition: int | None = None,
    offset: int = 0,
) -> Message:
    """A consumed `writes` message, as the consumer hands it to the writes handler; by
    default on the partition a producer's partitioner gives `key`."""
    if partition is None:
        partition = partition_for(key.decode(), settings.topic_partitions) if key else 0
    return Message(
        topic=topics.writes.get_topic_name(),
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=0,
        headers=None,
        key=key,
        value=value,
        checksum=None,
    )


def registration(namespace: str, observed_at_ms: int = 1_000, observation: Any = None) -> bytes:
    """A `ticks` registration value, with the read's upstream observation if given."""
    body: dict[str, Any] = {
        "kind": "register",
        "namespace": namespace,
        "observed_at_ms": observed_at_ms,
    }
    if observation is not None:
        body["observation"] = observation
    return json.dumps(body).encode()


def tick(partition: int, issued_at_ms: int = 1_000) -> bytes:
    """A `ticks` poll tick value for `partition`."""
    body = {"kind": "tick", "partition": partition, "issued_at_ms": issued_at_ms}
    return json.dumps(body).encode()


def metadata_answer(
    status: Literal["up-to-date", "updating"] = "up-to-date", **fields: Any
) -> tuple[dict[str, Any], IndexObservation]:
    """A return value for the mocked `Upstream.metadata`: `(body, observation)`."""
    index = {"status": status}
    return {"index": index, **fields}, IndexObservation(index_status=status, index=index, **fields)


def hold_upstream_answers(upstream_metadata: AsyncMock) -> asyncio.Event:
    """Make every poll wait upstream (answering `up-to-date`) until the returned event is set."""
    answer = asyncio.Event()

    async def held(namespace: str, **_: Any) -> Any:
        await answer.wait()
        return metadata_answer("up-to-date")

    upstream_metadata.side_effect = held
    return answer


#: `Freshness` rows as other versions of Layer wrote them to the changelog: what a decoder
#: must read as Faust's own decoding does.
FRESHNESS_ROWS_OF_OTHER_VERSIONS = [
    # Written before a field existed: missing fields take their defaults.
    b'{"namespace": "old", "status": "stable", "stable_as_of": 5, "next_poll_ms": 7,'
    b' "__faust": {"ns": "layer.Freshness"}}',
    # A null where the field has a default: the default, as Faust's replay gives.
    b'{"namespace": "n", "status": null, "next_poll_ms": null, "consecutive_errors": null,'
    b' "__faust": {"ns": "layer.Freshness"}}',
    # Written by a newer version with a field this one lacks: kept, as Faust keeps it.
    b'{"namespace": "new", "status": "updating", "future_field": [1, 2],'
    b' "__faust": {"ns": "layer.Freshness"}}',
    # No type tag at all.
    b'{"namespace": "bare", "status": "unknown"}',
]
