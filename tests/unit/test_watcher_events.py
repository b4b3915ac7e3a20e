"""What reads tell the watcher (api/watcher_events.py): throttled, and batched per partition
for a listing page. `topics.ticks.send_soon` is recorded instead of produced."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.watcher_events import ReadEvents
from layer.app import settings, topics
from layer.events import MAX_REGISTRATIONS_PER_MESSAGE, Registration, partition_for
from tables.freshness import IndexObservation

Sent = list[dict[str, Any]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    recorded: Sent = []

    def send_soon(*, key: bytes | None, value: bytes, partition: int | None) -> None:
        recorded.append({"key": key, "partition": partition, "value": json.loads(value)})

    monkeypatch.setattr(topics.ticks, "send_soon", send_soon)
    return recorded


def events() -> ReadEvents:
    return ReadEvents(registration_every_ms=1_000, partitions=settings.topic_partitions)


def test_a_page_of_registrations_is_one_message_per_partition(sent: Sent) -> None:
    read_events = events()
    batch: list[Registration] = []
    names = [f"tenant-{i}" for i in range(2_500)]
    for name in names:
        read_events.register_read(name, None, None, 1_000, batch=batch)
    assert sent == [], "nothing leaves before the page is done"

    read_events.send_registrations(batch)

    partitions = {partition_for(name, settings.topic_partitions) for name in names}
    assert len(sent) >= len(partitions)
    assert all(message["key"] is None for message in sent)
    registered: list[str] = []
    for message in sent:
        entries = message["value"]["registrations"]
        assert message["value"]["kind"] == "register_many"
        assert 1 <= len(entries) <= MAX_REGISTRATIONS_PER_MESSAGE
        for entry in entries:
            assert (
                partition_for(entry["namespace"], settings.topic_partitions)
                == (message["partition"])
            )
            registered.append(entry["namespace"])
    assert sorted(registered) == sorted(names), "every namespace once"


def test_a_single_read_registers_at_once_keyed_by_namespace_and_only_once(sent: Sent) -> None:
    read_events = events()
    observation = IndexObservation(index_status="updating", index={"status": "updating"})
    for _ in range(3):
        read_events.register_read("products", None, observation, 1_000)
    [message] = sent
    assert message["key"] == b"products" and message["partition"] is None
    assert message["value"]["kind"] == "register"
    assert message["value"]["observation"]["index"] == {"status": "updating"}


def test_an_empty_page_sends_nothing(sent: Sent) -> None:
    events().send_registrations([])
    assert sent == []
