"""The stability stream's shaping: event ids as topic positions, resume plans, frames, and
the per-connection bounds (api/stability_stream.py), without Kafka or a server."""

from __future__ import annotations

import json

import pytest

from api.stability_stream import (
    HEARTBEAT,
    ResumePlan,
    Subscribers,
    Subscription,
    TooManyStreams,
    control_frame,
    decode_position,
    encode_position,
    event_frame,
    plan_resume,
)
from layer.events import StabilityChange

CHANGE = StabilityChange(
    namespace="products",
    change="became_stable",
    is_stable=True,
    stable_as_of=1715600400000,
    previous_is_stable=False,
    previous_stable_as_of=1715600100000,
    index={"status": "up-to-date", "note": "line one\nline two"},
    observed_at_ms=1715600400120,
)


def _parse(frame: bytes) -> dict[str, list[str]]:
    """A frame as the SSE spec reads it: field → values (comments dropped)."""
    text = frame.decode()
    assert text.endswith("\n\n") and text.count("\n\n") == 1, "exactly one event"
    fields: dict[str, list[str]] = {}
    for line in text[:-2].split("\n"):
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
    return fields


def test_a_position_round_trips_through_its_event_id() -> None:
    assert encode_position((7, 0, 12, 3)) == "7.0.12.3"
    assert decode_position("7.0.12.3", 4) == (7, 0, 12, 3)


@pytest.mark.parametrize(
    "text", [None, "", "7.0.12", "7.0.12.3.1", "7.0.x.3", "-1.0.0.0", "7..12.3", "٣.0.0.0"]
)
def test_an_id_that_is_not_a_position_of_this_topic_decodes_to_none(text: str | None) -> None:
    assert decode_position(text, 4) is None


def test_a_change_is_one_event_with_its_id_and_one_line_of_json() -> None:
    fields = _parse(event_frame(CHANGE, "1.2"))
    assert fields["id"] == ["1.2"] and "event" not in fields, "the default type: onmessage"
    assert len(fields["data"]) == 1, "a newline inside a value never splits the data"
    assert json.loads(fields["data"][0]) == json.loads(CHANGE.model_dump_json())


def test_control_frames_are_named_and_carry_retry_and_id_when_given() -> None:
    fields = _parse(control_frame("ready", {"resume": "none"}, event_id="0.0", retry_ms=1000))
    assert fields == {
        "retry": ["1000"],
        "id": ["0.0"],
        "event": ["ready"],
        "data": ['{"resume":"none"}'],
    }
    assert HEARTBEAT.startswith(b":") and HEARTBEAT.endswith(b"\n\n")


LIVE = (10, 20, 30)


@pytest.mark.parametrize(
    ("last_event_id", "earliest", "expected"),
    [
        (None, None, ResumePlan("none", LIVE, LIVE)),
        ("  ", None, ResumePlan("none", LIVE, LIVE)),
        ("garbage", None, ResumePlan("reset", LIVE, LIVE)),
        ("10.20", None, ResumePlan("reset", LIVE, LIVE)),  # another partition count
        ("11.20.30", None, ResumePlan("reset", LIVE, LIVE)),  # ahead of the topic
        ("10.20.30", None, ResumePlan("exact", LIVE, LIVE)),  # nothing missed
        ("4.20.25", None, ResumePlan("exact", (4, 20, 25), LIVE)),
        ("4.20.25", (0, 0, 0), ResumePlan("exact", (4, 20, 25), LIVE)),
        ("4.20.25", (6, 0, 0), ResumePlan("partial", (6, 20, 25), LIVE)),  # 4 and 5 are gone
    ],
)
def test_last_event_id_is_honoured_where_the_topic_allows(
    last_event_id: str | None, earliest: tuple[int, ...] | None, expected: ResumePlan
) -> None:
    assert plan_resume(last_event_id, LIVE, earliest) == expected


def test_a_plan_replays_only_when_it_starts_behind_the_live_stream() -> None:
    assert not ResumePlan("exact", LIVE, LIVE).replays
    assert ResumePlan("exact", (9, 20, 30), LIVE).replays


async def test_a_client_that_falls_a_whole_buffer_behind_is_closed_and_its_queue_freed() -> None:
    subscription = Subscription("key", "", capacity=4)
    for i in range(4):
        subscription.offer(b"event %d\n\n" % i)
    assert not subscription.closed.is_set() and not subscription.room.is_set()
    subscription.offer(b"one too many\n\n")
    assert subscription.closed.is_set()
    assert subscription.close_reason is not None and "Last-Event-ID" in subscription.close_reason
    assert subscription.queued == 1, "only the wake-up is left"
    assert await subscription.take(1.0) == b""
    subscription.offer(b"late\n\n")
    assert subscription.queued == 0, "nothing is queued for a closed connection"


async def test_take_hands_over_everything_queued_in_one_write_or_nothing_after_the_timeout() -> (
    None
):
    subscription = Subscription("key", "", capacity=10)
    assert await subscription.take(0.01) == b"", "time for a heartbeat"
    subscription.offer(b"a\n\n")
    subscription.offer(b"b\n\n")
    assert await subscription.take(1.0) == b"a\n\nb\n\n"
    assert subscription.room.is_set()


def test_streams_are_capped_per_key_and_fan_out_by_prefix() -> None:
    subscribers = Subscribers(max_per_key=2, capacity=10)
    products = subscribers.add("key-a", "prod")
    everything = subscribers.add("key-a", "")
    with pytest.raises(TooManyStreams) as refused:
        subscribers.add("key-a", "")
    assert refused.value.status == 429 and refused.value.headers["Retry-After"]
    other_key = subscribers.add("key-b", "orders")
    subscribers.publish("products-1", b"p\n\n")
    subscribers.publish("orders-1", b"o\n\n")
    assert (products.queued, everything.queued, other_key.queued) == (1, 2, 1)
    subscribers.remove(everything)
    subscribers.remove(everything)  # twice is harmless
    subscribers.add("key-a", "")  # a slot is free again
    assert len(subscribers) == 3


def test_closing_every_stream_says_why() -> None:
    subscribers = Subscribers(max_per_key=5, capacity=10)
    streams = [subscribers.add("key", "") for _ in range(3)]
    subscribers.close_all("shutting down")
    assert all(s.closed.is_set() and s.close_reason == "shutting down" for s in streams)
