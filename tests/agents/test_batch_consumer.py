"""Whole-fetch delivery (`layer.batch_consumer.BatchingConsumer`) on the app's own consumer.

The consumer is not started: a test feeds it a fetch (Faust's `getmany` replaced by a
generator of `(tp, message)` pairs) and checks what reaches the handler, what is acked
(so can be committed) and what is left to Faust's streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

from layer.app import app as layer_app
from layer.app import topics
from layer.batch_consumer import MAX_RECORDS_PER_FETCH, BatchingConsumer

from .support import write, writes_message

WRITES = topics.writes.get_topic_name()
OTHER = topics.ticks.get_topic_name()


@pytest.fixture
def consumer(app: faust.App, monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchingConsumer]:
    # Acks count for subscribed topics only; a running app subscribes in
    # `Conductor._update_indices`, which the unstarted app here never ran.
    monkeypatch.setattr(app.topics, "_acking_topics", {WRITES})
    consumer: BatchingConsumer = app.consumer
    consumer.flow_active = True
    app.consumer_generation_id = 3
    yield consumer
    consumer.flow_active = True
    consumer._read_offset.clear()
    consumer._acked.clear()
    consumer._acked_index.clear()
    consumer._unacked_messages.clear()
    consumer._committed_offset.clear()
    consumer._gap.clear()
    consumer._n_acked = 0


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[list[Message]]:
    """The batches handed to the writes handler (recorded instead of applied)."""
    batches: list[list[Message]] = []

    async def record(messages: list[Message]) -> None:
        batches.append(list(messages))

    monkeypatch.setitem(layer_app.batch_handlers, WRITES, record)
    return batches


def fetch(
    monkeypatch: pytest.MonkeyPatch, messages: list[Message], generation: int | None = None
) -> None:
    """Make Faust's `getmany` yield `messages` as one fetch, made in `generation` (default:
    the current one; Faust stamps each message with the generation it was fetched in)."""

    async def faust_getmany(
        self: BatchingConsumer, timeout: float
    ) -> AsyncIterator[tuple[TP, Message]]:
        for message in messages:
            message.generation_id = (
                self.app.consumer_generation_id if generation is None else generation
            )
            yield message.tp, message

    monkeypatch.setattr(faust_aiokafka.Consumer, "getmany", faust_getmany)


def other_message(offset: int) -> Message:
    return Message(OTHER, 0, offset, 1.0, 0, None, None, b"{}", None)


async def drain(consumer: BatchingConsumer) -> list[tuple[TP, Message]]:
    return [pair async for pair in consumer.getmany(timeout=0.1)]


def acked(consumer: BatchingConsumer, partition: int) -> list[int]:
    return list(consumer._acked[TP(WRITES, partition)])


async def test_a_fetch_reaches_the_handler_in_one_call_and_other_topics_go_to_faust(
    consumer: BatchingConsumer, received: list[list[Message]], monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = [writes_message(write("a", 1_000), b"a", partition=1, offset=i) for i in range(3)]
    tick = other_message(7)
    fetch(monkeypatch, [writes[0], tick, writes[1], writes[2]])

    passed_on = await drain(consumer)

    assert passed_on == [(tick.tp, tick)], "only other topics' messages are left to Faust"
    assert received == [writes]
    assert acked(consumer, 1) == [0, 1, 2], "acked after the handler returned"
    assert not consumer._unacked_messages


async def test_the_kafka_consumer_returns_a_bounded_number_of_records_per_fetch(
    app: faust.App,
) -> None:
    """A batch is applied before the next fetch: the bound is what lets ticks in between."""
    kafka_consumer = app.consumer._thread._create_worker_consumer(app.transport)  # not started
    try:
        assert kafka_consumer._max_poll_records == MAX_RECORDS_PER_FETCH
    finally:
        await kafka_consumer.stop()


async def test_messages_are_not_acked_when_the_handler_fails(
    consumer: BatchingConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(messages: list[Message]) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(layer_app.batch_handlers, WRITES, failing)
    fetch(monkeypatch, [writes_message(write("a", 1_000), b"a", partition=0, offset=0)])

    with pytest.raises(RuntimeError):
        await drain(consumer)

    assert acked(consumer, 0) == [], "never committed, so read again"
    assert len(consumer._unacked_messages) == 1


@pytest.fixture
def seeks(consumer: BatchingConsumer, monkeypatch: pytest.MonkeyPatch) -> list[tuple[TP, int]]:
    """Seeks the consumer makes; it holds partitions 0 and 1 of the writes topic."""
    made: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        made.append((tp, offset))

    monkeypatch.setattr(consumer, "assignment", lambda: {TP(WRITES, 0), TP(WRITES, 1)})
    monkeypatch.setattr(consumer, "seek", seek)
    return made


async def test_a_fetch_made_before_a_rebalance_is_dropped_unacked_and_read_again(
    consumer: BatchingConsumer,
    received: list[list[Message]],
    seeks: list[tuple[TP, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old_generation = consumer.app.consumer_generation_id - 1
    fetch(
        monkeypatch,
        [
            writes_message(write("a", 1_000), b"a", partition=0, offset=7),
            writes_message(write("a", 1_000), b"a", partition=0, offset=8),
            writes_message(write("b", 1_000), b"b", partition=5, offset=3),  # no longer ours
        ],
        generation=old_generation,
    )

    await drain(consumer)

    assert received == []
    assert acked(consumer, 0) == []
    assert seeks == [(TP(WRITES, 0), 7)], "held partitions go back to the first dropped offset"


async def test_a_fetch_that_arrives_while_flow_is_stopped_is_dropped_unacked(
    consumer: BatchingConsumer,
    received: list[list[Message]],
    seeks: list[tuple[TP, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer.flow_active = False  # a rebalance has begun
    fetch(monkeypatch, [writes_message(write("a", 1_000), b"a", partition=1, offset=4)])

    await drain(consumer)

    assert received == []
    assert acked(consumer, 1) == []
    assert seeks == [(TP(WRITES, 1), 4)]


async def test_messages_before_the_read_offset_are_skipped(
    consumer: BatchingConsumer, received: list[list[Message]], monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer._read_offset[TP(WRITES, 0)] = 5  # e.g. after a seek to the committed offset
    fetch(
        monkeypatch,
        [writes_message(write("a", 1_000), b"a", partition=0, offset=i) for i in (4, 5, 6)],
    )

    await drain(consumer)

    assert [m.offset for m in received[0]] == [5, 6]
    assert consumer._read_offset[TP(WRITES, 0)] == 6


async def test_a_recovery_ended_here_does_not_end_the_next_one_at_once(
    consumer: BatchingConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chaos harness caught it: the consumer ended a recovery by setting Faust's
    `signal_recovery_end`, which stayed set, so the next rebalance's recovery found it set and
    declared partitions it had not read a record of recovered (their rows answered null).
    A join test caught it again with the end set just as a new assignment was made: the
    signal is cleared when a recovery starts (`LayerRecovery`), not a fetch later."""
    from tables.faust_tables import freshness_table

    recovery = app_recovery(consumer)
    changelog = TP(freshness_table.changelog_topic.get_topic_name(), 0)
    record = Message(changelog.topic, 0, 0, 1.0, 0, None, b"ns", None, None)
    monkeypatch.setattr(recovery, "active_tps", {changelog})
    monkeypatch.setattr(recovery, "active_highwaters", {changelog: 0})
    monkeypatch.setattr(recovery, "active_offsets", {changelog: -1})
    monkeypatch.setattr(recovery, "tp_to_table", {changelog: freshness_table})
    recovery.in_recovery = True
    recovery.signal_recovery_end.clear()
    fetch(monkeypatch, [record])  # a tombstone: the whole changelog, read

    assert await drain(consumer) == [], "the changelog record was applied here"
    assert not recovery.in_recovery and recovery.signal_recovery_end.is_set(), "the end"

    recovery._set_recovery_started()  # what Faust's loop calls as the next recovery begins
    assert recovery.in_recovery
    assert not recovery.signal_recovery_end.is_set(), "nothing left for the next recovery"


def app_recovery(consumer: BatchingConsumer) -> Any:
    return consumer.app.tables.recovery  # type: ignore[attr-defined]
