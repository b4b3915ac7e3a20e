"""The writes handler (`agents.writes.apply_write_notifications`) on consumed messages.

The consumer hands the handler a whole fetch (layer.batch_consumer), so a test builds the
messages of one fetch and awaits the handler: when it returns, the batch is applied.
"""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest

import agents.writes
from agents.writes import apply_write_notifications
from layer.app import settings, topics
from layer.events import partition_for
from layer.services import Services
from tables.faust_tables import freshness_table
from tables.freshness import Freshness, IndexStatus

from .support import sent_values, write, writes_message

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
    await apply_write_notifications(
        [writes_message(b'{"namespace":"products","written_at_ms":1000}', b"products")]
    )

    state = freshness_table["products"]
    assert state.status == IndexStatus.UPDATING
    assert state.last_write_ms == 1_000
    assert state.stable_as_of is None, "a write alone never vouches for the index"
    assert state.next_poll_ms == 0, "a written namespace is due at once"


async def test_a_record_timestamp_later_than_written_at_is_the_write_time() -> None:
    await apply_write_notifications(
        [writes_message(write("products", 1_000), b"products", timestamp=2.5)]
    )

    assert freshness_table["products"].last_write_ms == 2_500, (
        "the later of written_at_ms and the Kafka timestamp"
    )


async def test_several_writes_to_one_namespace_in_a_batch_are_one_table_write(
    services: Services,
) -> None:
    writes_before = services.metrics.value("layer_table_writes_total")
    await apply_write_notifications(
        [
            writes_message(write("products", written_at), b"products", offset=offset)
            for offset, written_at in enumerate((1_000, 3_000, 2_000))
        ]
    )

    state = freshness_table["products"]
    assert state.last_write_ms == 3_000, "the latest write time, whatever the order"
    assert state.status == IndexStatus.UPDATING
    assert services.metrics.value("layer_table_writes_total") - writes_before == 1


async def test_an_older_write_in_a_later_batch_never_lowers_the_write_time() -> None:
    await apply_write_notifications([writes_message(write("products", 3_000), b"products")])
    await apply_write_notifications([writes_message(write("products", 2_000), b"products")])

    assert freshness_table["products"].last_write_ms == 3_000


async def test_writes_to_different_namespaces_update_each_row(stability_send: AsyncMock) -> None:
    await apply_write_notifications(
        [
            writes_message(write("a", 1_000), b"a", offset=0),
            writes_message(write("b", 2_000), b"b", offset=1),
        ]
    )

    assert freshness_table["a"].last_write_ms == 1_000
    assert freshness_table["b"].last_write_ms == 2_000
    # A namespace first heard of through a write appears to consumers: became_unstable each.
    assert stability_send.await_count == 2


async def test_a_write_on_a_stable_namespace_publishes_one_became_unstable(
    stability_send: AsyncMock,
) -> None:
    freshness_table.data["products"] = stable_products()

    await apply_write_notifications([writes_message(write("products", 10_000), b"products")])
    # A redelivery of the same write (at-least-once) changes nothing and publishes nothing.
    await apply_write_notifications([writes_message(write("products", 10_000), b"products")])

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

    await apply_write_notifications([writes_message(write("products", 4_500), b"products")])

    assert freshness_table["products"].last_write_ms == 4_500
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
async def test_an_invalid_write_notification_is_dead_lettered_and_the_next_is_applied(
    dead_letter_send: AsyncMock, value: bytes, reason_mentions: str
) -> None:
    await apply_write_notifications(
        [
            writes_message(value, b"products", offset=41),
            writes_message(write("products", 1_000), b"products", offset=42),
        ]
    )

    assert freshness_table["products"].last_write_ms == 1_000, "the valid one after it applied"
    dead_letter_send.assert_awaited_once()
    assert dead_letter_send.await_args.kwargs["key"] == b"products"
    [letter] = sent_values(dead_letter_send)
    assert reason_mentions in letter["reason"]
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        topics.writes.get_topic_name(),
        partition_for("products", settings.topic_partitions),
        41,
    )
    assert (letter["key"], letter["value"], letter["value_encoding"]) == (
        "products",
        value.decode(),
        "utf-8",
    )


async def test_a_dead_letter_keeps_a_non_utf8_value_as_base64(dead_letter_send: AsyncMock) -> None:
    await apply_write_notifications([writes_message(b"\xff\xfe", b"products")])

    [letter] = sent_values(dead_letter_send)
    assert (letter["value"], letter["value_encoding"]) == ("//4=", "base64")


async def test_an_invalid_notification_in_a_batch_does_not_drop_the_valid_ones(
    dead_letter_send: AsyncMock, services: Services
) -> None:
    notified_before = services.metrics.value("layer_write_notifications_total")
    await apply_write_notifications(
        [
            writes_message(write("a", 1_000), b"a", offset=0),
            writes_message(b"{not json", b"x", offset=1),
            writes_message(write("b", 2_000), b"b", offset=2),
        ]
    )

    assert (freshness_table["a"].last_write_ms, freshness_table["b"].last_write_ms) == (
        1_000,
        2_000,
    )
    assert "x" not in freshness_table
    dead_letter_send.assert_awaited_once()
    assert services.metrics.value("layer_write_notifications_total") - notified_before == 2, (
        "valid ones counted"
    )


async def test_a_notification_on_another_partition_is_forwarded_to_its_namespaces(
    writes_send: AsyncMock, services: Services
) -> None:
    """The row lives with the owner of the namespace's partition: applied here, the owner
    would never learn of the write."""
    forwarded_before = services.metrics.value("layer_write_notifications_forwarded_total")
    own = partition_for("products", settings.topic_partitions)
    elsewhere = (own + 1) % settings.topic_partitions
    value = write("products", 1_000)

    await apply_write_notifications(
        [writes_message(value, b"catalog-sync", partition=elsewhere, timestamp=2.5)]
    )

    assert "products" not in freshness_table, "not applied on the wrong partition"
    writes_send.assert_awaited_once_with(key=b"products", value=value, partition=own, timestamp=2.5)
    assert (
        services.metrics.value("layer_write_notifications_forwarded_total") - forwarded_before == 1
    )


async def test_a_batch_observes_its_size_and_each_applied_notifications_lag(
    monkeypatch: pytest.MonkeyPatch, dead_letter_send: AsyncMock, services: Services
) -> None:
    """Lag is applied time minus effective write time, per valid notification (coalesced or
    not); a write time ahead of Layer's clock is a lag of 0, never negative."""
    monkeypatch.setattr(agents.writes, "now_ms", lambda: 10_000)

    before = {
        "lag_count": services.metrics.value("layer_notification_lag_seconds_count"),
        "lag_sum": services.metrics.value("layer_notification_lag_seconds_sum"),
        "lag_fastest": services.metrics.value("layer_notification_lag_seconds_bucket", le="0.005"),
        "size_count": services.metrics.value("layer_write_batch_size_count"),
        "size_sum": services.metrics.value("layer_write_batch_size_sum"),
    }
    await apply_write_notifications(
        [
            writes_message(write("products", 4_000), b"products", offset=0),
            writes_message(write("products", 7_000), b"products", offset=1),
            writes_message(write("ahead", 12_000), b"ahead", offset=2),
            writes_message(b"{not json", b"x", offset=3),
        ]
    )

    assert services.metrics.value("layer_write_batch_size_count") - before["size_count"] == 1
    assert services.metrics.value("layer_write_batch_size_sum") - before["size_sum"] == 4, (
        "every message"
    )
    assert services.metrics.value("layer_notification_lag_seconds_count") - before["lag_count"] == 3
    assert services.metrics.value("layer_notification_lag_seconds_sum") - before[
        "lag_sum"
    ] == pytest.approx(6 + 3 + 0)
    assert (
        services.metrics.value("layer_notification_lag_seconds_bucket", le="0.005")
        - before["lag_fastest"]
        == 1
    ), "the write from the future counts as no lag"
