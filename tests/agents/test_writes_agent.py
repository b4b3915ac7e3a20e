"""The writes agent (`agents.writes.apply_write_notifications`) on faust's test channel."""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest

from agents.writes import apply_write_notifications
from layer.app import topics
from tables.faust_tables import freshness_table
from tables.freshness import Freshness, IndexStatus

from .support import EARLY_RECORD_TS, eventually, sent_values, write

pytestmark = pytest.mark.usefixtures("app")


def stable_products() -> Freshness:
    """`products`, stable as of 5000 after a write at 4000, next polled much later."""
    return Freshness(
        namespace="products",
        status=IndexStatus.STABLE.value,
        stable_as_of=5_000,
        last_write_ms=4_000,
        last_poll_ms=6_000,
        last_observed_ms=6_000,
        next_poll_ms=66_000,
        index={"status": "up-to-date"},
    )


async def test_a_write_notification_makes_a_new_namespace_updating_and_due() -> None:
    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=b'{"namespace":"products","written_at_ms":1000}', key=b"products")
        state = await eventually(lambda: freshness_table.get("products"), "the products row")

    assert state.status == IndexStatus.UPDATING
    assert state.last_write_ms is not None and state.last_write_ms >= 1_000
    assert state.stable_as_of is None, "a write alone never vouches for the index"
    assert state.next_poll_ms == 0, "a written namespace is due at once"


async def test_the_producers_written_at_is_the_write_time_when_the_record_is_older() -> None:
    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=write("products", 1_000), key=b"products", timestamp=EARLY_RECORD_TS)
        state = await eventually(lambda: freshness_table.get("products"), "the products row")

    assert state.last_write_ms == 1_000


async def test_a_record_timestamp_later_than_written_at_is_the_write_time() -> None:
    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=write("products", 1_000), key=b"products", timestamp=2.5)
        state = await eventually(lambda: freshness_table.get("products"), "the products row")

    assert state.last_write_ms == 2_500, "the later of written_at_ms and the Kafka timestamp"


async def test_several_writes_to_one_namespace_leave_the_latest_write_time() -> None:
    async with apply_write_notifications.test_context() as agent:
        for written_at in (1_000, 3_000, 2_000):
            await agent.put(
                value=write("products", written_at),
                key=b"products",
                timestamp=EARLY_RECORD_TS,
                wait=False,
            )
        state = await eventually(
            lambda: (s := freshness_table.get("products")) and s.last_write_ms == 3_000 and s,
            "last_write_ms 3000",
        )
        await agent.put(value=write("sentinel", 1_000), key=b"sentinel", timestamp=EARLY_RECORD_TS)
        await eventually(lambda: freshness_table.get("sentinel"), "the sentinel row")

    assert freshness_table["products"].last_write_ms == 3_000, "an older write never lowers it"
    assert state.status == IndexStatus.UPDATING


async def test_writes_to_different_namespaces_update_each_row(stability_send: AsyncMock) -> None:
    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=write("a", 1_000), key=b"a", timestamp=EARLY_RECORD_TS, wait=False)
        await agent.put(value=write("b", 2_000), key=b"b", timestamp=EARLY_RECORD_TS, wait=False)
        await eventually(lambda: "a" in freshness_table and "b" in freshness_table, "rows a and b")

    assert freshness_table["a"].last_write_ms == 1_000
    assert freshness_table["b"].last_write_ms == 2_000
    stability_send.assert_not_awaited()  # unknown -> updating is no stability change


async def test_a_write_on_a_stable_namespace_publishes_one_became_unstable(
    stability_send: AsyncMock,
) -> None:
    freshness_table.data["products"] = stable_products()

    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=write("products", 10_000), key=b"products", timestamp=EARLY_RECORD_TS)
        await eventually(lambda: stability_send.await_count, "a stability event")
        # A redelivery of the same write changes nothing and publishes nothing.
        await agent.put(value=write("products", 10_000), key=b"products", timestamp=EARLY_RECORD_TS)
        await agent.put(value=write("sentinel", 1_000), key=b"sentinel", timestamp=EARLY_RECORD_TS)
        await eventually(lambda: freshness_table.get("sentinel"), "the sentinel row")

    state = freshness_table["products"]
    assert (state.status, state.last_write_ms, state.next_poll_ms) == ("updating", 10_000, 0)
    assert state.stable_as_of == 5_000, "a write holds the watermark, never lowers it"
    stability_send.assert_awaited_once()
    assert stability_send.await_args.kwargs["key"] == b"products"
    [event] = sent_values(stability_send)
    assert event["change"] == "became_unstable"
    assert (event["namespace"], event["is_stable"]) == ("products", False)
    assert event["stable_as_of"] == 5_000
    assert (event["previous_is_stable"], event["previous_stable_as_of"]) == (True, 5_000)


async def test_a_write_covered_by_the_watermark_keeps_the_namespace_stable(
    stability_send: AsyncMock,
) -> None:
    freshness_table.data["products"] = stable_products()

    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=write("products", 4_500), key=b"products", timestamp=EARLY_RECORD_TS)
        await eventually(
            lambda: freshness_table["products"].last_write_ms == 4_500, "last_write_ms 4500"
        )

    assert freshness_table["products"].status == IndexStatus.STABLE
    stability_send.assert_not_awaited()


@pytest.mark.parametrize(
    ("value", "reason_mentions"),
    [
        pytest.param(b"{not json", "Invalid JSON", id="malformed-json"),
        pytest.param(b'{"namespace":"products"}', "written_at_ms", id="missing-written_at_ms"),
        pytest.param(
            b'{"namespace":"a/b","written_at_ms":1000}', "namespace", id="invalid-namespace-name"
        ),
        pytest.param(
            b'{"namespace":"products","written_at_ms":-1}', "written_at_ms", id="negative-time"
        ),
    ],
)
async def test_an_invalid_write_notification_is_dead_lettered_and_the_agent_keeps_going(
    dead_letter_send: AsyncMock, value: bytes, reason_mentions: str
) -> None:
    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=value, key=b"products")
        await eventually(lambda: dead_letter_send.await_count, "a dead letter")
        await agent.put(value=write("products", 1_000), key=b"products", timestamp=EARLY_RECORD_TS)
        state = await eventually(lambda: freshness_table.get("products"), "the products row")

    assert state.last_write_ms == 1_000, "the valid notification after it was applied"
    dead_letter_send.assert_awaited_once()
    assert dead_letter_send.await_args.kwargs["key"] == b"products"
    [letter] = sent_values(dead_letter_send)
    assert reason_mentions in letter["reason"]
    assert letter["topic"] == topics.writes.get_topic_name()
    assert (letter["key"], letter["value"], letter["value_encoding"]) == (
        "products",
        value.decode(),
        "utf-8",
    )


async def test_a_dead_letter_keeps_a_non_utf8_value_as_base64(dead_letter_send: AsyncMock) -> None:
    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=b"\xff\xfe", key=b"products")
        await eventually(lambda: dead_letter_send.await_count, "a dead letter")

    [letter] = sent_values(dead_letter_send)
    assert (letter["value"], letter["value_encoding"]) == ("//4=", "base64")


async def test_an_invalid_notification_in_a_batch_does_not_drop_the_valid_ones(
    dead_letter_send: AsyncMock,
) -> None:
    async with apply_write_notifications.test_context() as agent:
        await agent.put(value=write("a", 1_000), key=b"a", timestamp=EARLY_RECORD_TS, wait=False)
        await agent.put(value=b"{not json", key=b"x", wait=False)
        await agent.put(value=write("b", 2_000), key=b"b", timestamp=EARLY_RECORD_TS, wait=False)
        await eventually(lambda: "a" in freshness_table and "b" in freshness_table, "rows a and b")
        await eventually(lambda: dead_letter_send.await_count, "a dead letter")

    assert "x" not in freshness_table
    dead_letter_send.assert_awaited_once()
