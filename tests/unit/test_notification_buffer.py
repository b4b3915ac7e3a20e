"""NotificationBuffer's buffering logic: merge, overflow, retry, nothing lost, `has_pending`.

`_send` is replaced by a fake that records what would go to Kafka (or fails on demand): this
is the pure buffering logic. Delivery through a real producer is covered by the integration
tests of the proxy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka.errors import KafkaConnectionError

import api.notifications as notifications
from api.notifications import NotificationBuffer
from layer.events import OperationStarted, WriteNotification
from layer.kafka_topics import TopicMissingError
from layer.metrics import LayerMetrics

#: Upper bound for the drain task to act on something it can do at once.
EFFECT_TIMEOUT_S = 5.0


class FakeKafka:
    """Stands in for `NotificationBuffer._send`: fails while `failures` has entries (raising
    them in order), else records the batch; `gate` can hold a send in flight."""

    def __init__(self) -> None:
        self.batches: list[list[WriteNotification]] = []
        self.failures: list[BaseException] = []
        self.attempts = 0
        self.gate: asyncio.Event | None = None

    async def send(self, *notes: WriteNotification) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(notes))

    @property
    def delivered(self) -> list[WriteNotification]:
        return [note for batch in self.batches for note in batch]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notifications, "RETRY_INITIAL_S", 0.001)
    monkeypatch.setattr(notifications, "RETRY_MAX_S", 0.004)


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def metrics() -> LayerMetrics:
    return LayerMetrics()


@pytest.fixture
async def buffer(kafka: FakeKafka, metrics: LayerMetrics) -> AsyncIterator[NotificationBuffer]:
    made = NotificationBuffer("127.0.0.1:1", topic_prefix="unit", max_namespaces=3, metrics=metrics)
    made._send = kafka.send  # type: ignore[method-assign]
    yield made
    if made._task is not None:
        made._task.cancel()
        await asyncio.gather(made._task, return_exceptions=True)


async def until(predicate: Callable[[], object], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + EFFECT_TIMEOUT_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {EFFECT_TIMEOUT_S} s waiting for {what}")
        await asyncio.sleep(0.001)


async def test_writes_to_one_namespace_merge_into_one_notification(
    buffer: NotificationBuffer, kafka: FakeKafka
) -> None:
    kafka.gate = asyncio.Event()  # nothing leaves until all three are in
    buffer.submit("a", rows=1, body_bytes=10)
    first_time = buffer._pending["a"].written_at_ms
    buffer.submit("a", rows=2, body_bytes=20)
    buffer.submit("b", rows=None, body_bytes=5)
    buffer.submit("a", rows=None, body_bytes=1)
    assert buffer.pending() == 2
    kafka.gate.set()
    await until(lambda: buffer.pending() == 0, "the buffer to drain")
    by_namespace = {note.namespace: note for note in kafka.delivered}
    assert sorted(by_namespace) == ["a", "b"] and len(kafka.delivered) == 2
    assert (by_namespace["a"].rows, by_namespace["a"].bytes) == (3, 31)
    assert by_namespace["a"].written_at_ms >= first_time  # the latest write's time
    assert by_namespace["a"].source == "proxy"


async def test_a_namespace_beyond_the_limit_is_unconfirmed_until_one_gets_through(
    buffer: NotificationBuffer, kafka: FakeKafka, metrics: LayerMetrics
) -> None:
    kafka.gate = asyncio.Event()
    for namespace in ("a", "b", "c"):
        buffer.submit(namespace, rows=1, body_bytes=1)
    buffer.submit("d", rows=1, body_bytes=1)  # the buffer holds 3 namespaces
    buffer.submit("a", rows=1, body_bytes=1)  # merging into a held one still fits
    assert buffer.pending() == 3
    assert buffer.unconfirmed("d") and not buffer.unconfirmed("a")
    assert not buffer.has_pending("d")
    assert metrics.value("layer_notify_dropped_total") == 1
    kafka.gate.set()
    await until(lambda: buffer.pending() == 0, "the buffer to drain")
    assert buffer.unconfirmed("d")  # nothing for d was delivered yet
    buffer.submit("d", rows=1, body_bytes=1)
    await until(lambda: not buffer.has_pending("d"), "d's notification to be delivered")
    assert not buffer.unconfirmed("d")
    assert [note.namespace for note in kafka.delivered].count("d") == 1


async def test_a_failed_send_is_retried_and_nothing_is_lost(
    buffer: NotificationBuffer, kafka: FakeKafka, metrics: LayerMetrics
) -> None:
    kafka.failures = [
        KafkaConnectionError("broker away"),
        TimeoutError(),
        TopicMissingError("topic unit.writes does not exist"),
        OSError("connection reset"),
        ValueError("unexpected"),  # even a bug in the send path loses nothing
    ]
    for namespace in ("a", "b"):
        buffer.submit(namespace, rows=1, body_bytes=1)
    await until(lambda: buffer.pending() == 0, "the buffer to drain after the failures")
    assert kafka.attempts == 6
    assert metrics.value("layer_notify_retries_total") == 5
    assert sorted(note.namespace for note in kafka.delivered) == ["a", "b"]
    assert buffer._task is not None and not buffer._task.done()  # still draining, not crashed


async def test_a_notification_accepted_before_the_producer_is_up_waits_and_is_sent(
    buffer: NotificationBuffer, kafka: FakeKafka
) -> None:
    kafka.failures = [KafkaConnectionError("not up yet")] * 3
    buffer.submit("a", rows=1, body_bytes=1)
    assert buffer.has_pending("a")
    await until(lambda: kafka.attempts >= 2, "a retry")
    assert buffer.has_pending("a")  # still waiting, not dropped
    await until(lambda: not buffer.has_pending("a"), "the notification to be delivered")
    assert [note.namespace for note in kafka.delivered] == ["a"]


async def test_has_pending_holds_until_kafka_acknowledged(
    buffer: NotificationBuffer, kafka: FakeKafka
) -> None:
    assert not buffer.has_pending("a")
    kafka.gate = asyncio.Event()
    buffer.submit("a", rows=1, body_bytes=1)
    await until(lambda: kafka.attempts == 1, "the send to start")
    assert buffer.has_pending("a")  # in flight, not yet acknowledged
    assert not buffer.has_pending("b")
    kafka.gate.set()
    await until(lambda: not buffer.has_pending("a"), "the acknowledgement")


async def test_a_write_during_a_send_stays_pending_after_that_send(
    buffer: NotificationBuffer, kafka: FakeKafka
) -> None:
    kafka.gate = asyncio.Event()
    buffer.submit("a", rows=1, body_bytes=1)
    await until(lambda: kafka.attempts == 1, "the first send to start")
    buffer.submit("a", rows=1, body_bytes=1)  # after the in-flight one was taken
    assert buffer.has_pending("a")
    kafka.gate.set()
    await until(lambda: not buffer.has_pending("a"), "the later write to be delivered too")
    assert len(kafka.batches) == 2
    assert kafka.batches[1][0].written_at_ms >= kafka.batches[0][0].written_at_ms


async def test_close_delivers_what_is_pending(buffer: NotificationBuffer, kafka: FakeKafka) -> None:
    kafka.gate = asyncio.Event()
    buffer.submit("a", rows=1, body_bytes=1)
    buffer.submit("b", rows=1, body_bytes=1)
    kafka.gate.set()
    await buffer.close()
    assert buffer.pending() == 0
    assert sorted({note.namespace for note in kafka.delivered}) == ["a", "b"]


async def test_accepted_operations_ride_the_notification_and_merge_with_later_writes(
    buffer: NotificationBuffer, kafka: FakeKafka
) -> None:
    kafka.gate = asyncio.Event()
    first = OperationStarted(location="/v1/namespaces/a/operations/t1", accepted_at_ms=5)
    second = OperationStarted(location="/v1/namespaces/a/operations/t2", accepted_at_ms=6)
    buffer.submit("a", rows=None, body_bytes=10, operation=first)
    buffer.submit("a", rows=2, body_bytes=20)
    buffer.submit("a", rows=None, body_bytes=1, operation=second)
    assert buffer.has_pending("a"), "reads on this worker cut until Kafka has it"
    kafka.gate.set()
    await until(lambda: buffer.pending() == 0, "the buffer to drain")
    [note] = kafka.delivered
    assert note.operations_started == (first, second)
    round_trip = WriteNotification.model_validate_json(note.model_dump_json(exclude_none=True))
    assert round_trip == note
