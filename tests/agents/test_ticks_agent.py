"""The ticks agent (`agents.ticks.poll_due_namespaces`): registrations and poll ticks.

Polls run in background tasks (`Poller.start_due`); a test waits for the upstream call,
then `services.poller.drain()`, inside the `test_context` block (leaving it cancels the agent).
"""

from __future__ import annotations

import json
from unittest.mock import AsyncMock

import pytest
from faust.types import TP

import agents.ticks
from agents.ticks import poll_due_namespaces, stop_polls_of_revoked_partitions
from agents.writes import apply_write_notifications
from layer.app import app as layer_app
from layer.app import settings, topics
from layer.clock import now_ms
from layer.events import partition_for
from layer.services import Services
from layer.upstream import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tables.faust_tables import freshness_table, snapshots_table
from tables.freshness import Freshness, IndexStatus, new_freshness

from .support import (
    eventually,
    hold_upstream_answers,
    metadata_answer,
    namespace_in_partition,
    registration,
    sent_values,
    tick,
    write,
    writes_message,
)

pytestmark = pytest.mark.usefixtures("app")

MARGIN = settings.safety_margin_ms
#: The partition the tests tick, and a namespace that lives there.
PARTITION = settings.topic_partitions - 1
NS = namespace_in_partition(PARTITION)


async def test_a_registration_creates_an_unknown_row(stability_send: AsyncMock) -> None:
    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=registration("products"), key=b"products")
        state = await eventually(lambda: freshness_table.get("products"), "the products row")

    assert state == new_freshness("products")
    assert state.status == IndexStatus.UNKNOWN and state.stable_as_of is None
    assert state.next_poll_ms == 0, "a registered namespace is due at once"
    stability_send.assert_not_awaited()


async def test_a_registration_of_a_known_namespace_changes_nothing() -> None:
    known = Freshness(namespace="products", status="stable", stable_as_of=5_000, next_poll_ms=9)
    freshness_table.data["products"] = known

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=registration("products"), key=b"products")
        await agent.put(value=registration("sentinel"), key=b"sentinel")
        await eventually(lambda: freshness_table.get("sentinel"), "the sentinel row")

    assert freshness_table["products"] == known


async def test_a_registration_with_an_up_to_date_observation_makes_the_namespace_stable(
    stability_send: AsyncMock,
) -> None:
    observed = {
        "started_at_ms": 50_000,
        "index": {"status": "up-to-date"},
        "approx_row_count": 10,
        "updated_at": "2025-01-01T00:00:00Z",
    }

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=registration("products", 51_000, observed), key=b"products")
        await eventually(lambda: stability_send.await_count, "a stability event")

    state = freshness_table["products"]
    assert state.status == IndexStatus.STABLE
    assert state.stable_as_of == 50_000 - MARGIN, "poll start minus the safety margin"
    assert (state.last_observed_ms, state.approx_row_count) == (50_000, 10)
    [event] = sent_values(stability_send)
    assert (event["change"], event["namespace"], event["is_stable"]) == (
        "became_stable",
        "products",
        True,
    )
    assert (event["stable_as_of"], event["previous_is_stable"]) == (50_000 - MARGIN, False)
    [snapshot] = snapshots_table["products"].snapshots
    assert (snapshot.stable_as_of, snapshot.approx_row_count) == (50_000 - MARGIN, 10)


async def test_a_registration_with_an_updating_observation_is_not_stable(
    stability_send: AsyncMock,
) -> None:
    observed = {"started_at_ms": 50_000, "index": {"status": "updating", "unindexed_bytes": 7}}

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=registration("products", 51_000, observed), key=b"products")
        state = await eventually(lambda: freshness_table.get("products"), "the products row")

    assert state.status == IndexStatus.UPDATING
    assert state.stable_as_of is None
    assert state.index == {"status": "updating", "unindexed_bytes": 7}
    stability_send.assert_awaited_once()  # it appears to consumers: became_unstable


async def test_a_registration_whose_observation_is_unreadable_only_registers(
    stability_send: AsyncMock,
) -> None:
    observed = {"started_at_ms": 50_000, "index": {"status": "rebuilding"}}

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=registration("products", 51_000, observed), key=b"products")
        state = await eventually(lambda: freshness_table.get("products"), "the products row")

    assert state == new_freshness("products"), "an unknown status is no signal, never stable"
    stability_send.assert_not_awaited()


async def test_a_tick_polls_a_due_namespace_and_an_up_to_date_answer_makes_it_stable(
    upstream_metadata: AsyncMock, stability_send: AsyncMock, services: Services
) -> None:
    freshness_table.data[NS] = new_freshness(NS)
    upstream_metadata.return_value = metadata_answer("up-to-date", approx_row_count=3)

    async with poll_due_namespaces.test_context() as agent:
        before = now_ms()
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_metadata.await_count, "the upstream metadata call")
        await services.poller.drain()
        after = now_ms()

    assert upstream_metadata.await_args.args == (NS,)
    state = freshness_table[NS]
    assert state.status == IndexStatus.STABLE
    assert before <= state.last_observed_ms <= after
    assert state.stable_as_of == state.last_observed_ms - MARGIN
    assert state.next_poll_ms == state.last_observed_ms + settings.slow_poll_interval_ms
    assert state.approx_row_count == 3
    [event] = sent_values(stability_send)
    assert (event["change"], event["stable_as_of"]) == ("became_stable", state.stable_as_of)


async def test_a_registered_namespace_is_polled_on_the_next_tick_of_its_partition(
    upstream_metadata: AsyncMock, services: Services
) -> None:
    upstream_metadata.return_value = metadata_answer("updating")

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=registration(NS), key=NS.encode(), partition=PARTITION)
        await eventually(lambda: freshness_table.get(NS), "the registered row")
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_metadata.await_count, "the upstream metadata call")
        await services.poller.drain()

    upstream_metadata.assert_awaited_once()
    state = freshness_table[NS]
    assert state.status == IndexStatus.UPDATING
    assert state.next_poll_ms == state.last_observed_ms + settings.fast_poll_interval_ms


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(UpstreamStatusError(503, "busy"), id="503"),
        pytest.param(UpstreamTimeout("upstream did not answer in time"), id="timeout"),
        pytest.param(UpstreamUnavailable("upstream unreachable"), id="unreachable"),
        pytest.param(UpstreamBadResponse("unknown index status 'weird'"), id="bad-response"),
    ],
)
@pytest.mark.parametrize("status", [IndexStatus.UNKNOWN, IndexStatus.UPDATING])
async def test_a_failed_poll_records_the_error_and_holds_status_and_watermark(
    upstream_metadata: AsyncMock,
    stability_send: AsyncMock,
    error: UpstreamError,
    status: IndexStatus,
    services: Services,
) -> None:
    freshness_table.data[NS] = Freshness(namespace=NS, status=status.value, last_write_ms=1_000)
    upstream_metadata.side_effect = error

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_metadata.await_count, "the upstream metadata call")
        await services.poller.drain()

    state = freshness_table[NS]
    assert state.consecutive_errors == 1
    assert state.last_error == str(error)
    assert state.status == status, "a failed poll is no signal"
    assert state.stable_as_of is None and not state.is_stable
    assert state.next_poll_ms > state.last_poll_ms, "backs off instead of polling at once"
    stability_send.assert_not_awaited()


async def test_a_tick_does_not_poll_namespaces_of_other_partitions_or_not_yet_due(
    upstream_metadata: AsyncMock, services: Services
) -> None:
    assert settings.topic_partitions >= 2, "needs two partitions (LAYER_TOPIC_PARTITIONS)"
    elsewhere = namespace_in_partition(0, prefix="other")
    later = namespace_in_partition(PARTITION, prefix="later")
    freshness_table.data[elsewhere] = new_freshness(elsewhere)
    freshness_table.data[later] = Freshness(namespace=later, next_poll_ms=now_ms() + 3_600_000)

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await agent.put(value=registration("sentinel"), key=b"sentinel")
        await eventually(lambda: freshness_table.get("sentinel"), "the sentinel row")
        await services.poller.drain()

    upstream_metadata.assert_not_awaited()


@pytest.mark.parametrize(
    ("value", "reason_mentions"),
    [
        pytest.param(b"{not json", "Invalid JSON", id="malformed-json"),
        pytest.param(b'{"kind":"tick","issued_at_ms":1}', "partition", id="tick-without-partition"),
        pytest.param(b'{"kind":"poll","partition":0,"issued_at_ms":1}', "kind", id="unknown-kind"),
        pytest.param(
            b'{"kind":"register","namespace":"","observed_at_ms":1}',
            "namespace",
            id="empty-namespace",
        ),
    ],
)
async def test_an_invalid_ticks_message_is_dead_lettered_and_the_agent_keeps_going(
    dead_letter_send: AsyncMock, upstream_metadata: AsyncMock, value: bytes, reason_mentions: str
) -> None:
    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=value, key=b"products")
        await eventually(lambda: dead_letter_send.await_count, "a dead letter")
        await agent.put(value=registration("products"), key=b"products")
        await eventually(lambda: freshness_table.get("products"), "the products row")

    dead_letter_send.assert_awaited_once()
    [letter] = sent_values(dead_letter_send)
    assert reason_mentions in letter["reason"]
    assert letter["topic"] == topics.ticks.get_topic_name()
    assert letter["value"] == value.decode()
    upstream_metadata.assert_not_awaited()


async def test_a_namespace_made_due_during_its_poll_is_polled_again_after_a_stale_answer(
    upstream_metadata: AsyncMock, services: Services
) -> None:
    freshness_table.data[NS] = new_freshness(NS)
    answer = hold_upstream_answers(upstream_metadata)
    async with poll_due_namespaces.test_context() as ticks:
        # Poll A starts (at s1) and waits for upstream.
        await ticks.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_metadata.await_count, "poll A to start")
        # An HTTP read's observation that started after s1 is applied...
        s2 = now_ms() + 1_000
        observed = {"started_at_ms": s2, "index": {"status": "up-to-date"}}
        await ticks.put(value=registration(NS, s2, observed), key=NS.encode(), partition=PARTITION)
        await eventually(lambda: freshness_table[NS].last_observed_ms == s2, "the observation")
        # ...then a write makes the namespace updating and due at once.
        await apply_write_notifications(
            [writes_message(write(NS, s2 + 5), NS.encode(), partition=PARTITION)]
        )
        assert freshness_table[NS].next_poll_ms == 0, "the write made it due"
        # A tick pops the namespace while poll A is in flight: skipped, entry consumed.
        await ticks.put(value=tick(PARTITION), partition=PARTITION)
        await ticks.put(value=registration("sentinel-1"), key=b"sentinel-1")
        await eventually(lambda: freshness_table.get("sentinel-1"), "the first sentinel")
        # Poll A answers; its answer is older than the observation: no state change.
        answer.set()
        await services.poller.drain()
        assert freshness_table[NS].status == IndexStatus.UPDATING
        assert freshness_table[NS].next_poll_ms == 0, "still due now"
        # The next tick must poll it.
        await ticks.put(value=tick(PARTITION), partition=PARTITION)
        await ticks.put(value=registration("sentinel-2"), key=b"sentinel-2")
        await eventually(lambda: freshness_table.get("sentinel-2"), "the second sentinel")
        await services.poller.drain()

    assert upstream_metadata.await_count == 2, "a due, updating namespace was never polled again"


async def test_polls_of_revoked_partitions_end_without_writing_the_table(
    upstream_metadata: AsyncMock,
    stability_send: AsyncMock,
    monkeypatch: pytest.MonkeyPatch,
    services: Services,
) -> None:
    """A poll answering after its partition was handed over must not write its row."""
    other_partition = (PARTITION + 1) % settings.topic_partitions
    other = namespace_in_partition(other_partition, prefix="other")
    freshness_table.data[NS] = new_freshness(NS)
    freshness_table.data[other] = new_freshness(other)
    answer = hold_upstream_answers(upstream_metadata)
    flushes = AsyncMock(name="producer.flush")
    monkeypatch.setattr(type(layer_app.producer), "flush", flushes)
    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await agent.put(value=tick(other_partition), partition=other_partition)
        await eventually(lambda: upstream_metadata.await_count == 2, "both polls to start")

        await stop_polls_of_revoked_partitions(
            layer_app, revoked={TP(topics.ticks.get_topic_name(), PARTITION)}
        )
        answer.set()
        await services.poller.drain()

    assert freshness_table[NS] == new_freshness(NS), "the revoked partition's poll wrote nothing"
    assert freshness_table[other].status == IndexStatus.STABLE, "the held partition's poll did"
    flushes.assert_awaited()
    [event] = sent_values(stability_send)
    assert event["namespace"] == other


async def test_written_namespaces_are_polled_first_and_confirmations_oldest_first_within_budget(
    upstream_metadata: AsyncMock, services: Services
) -> None:
    """More stable namespaces overdue than the budget can re-confirm: the written one is polled
    at once, and only as many confirmations start as have a free slot and a token, oldest
    first; the rest stay in the schedule (tables/schedule.py, the confirmation lane)."""
    now = now_ms()
    stable = _names_in_partition(PARTITION, "stable", 200)
    for age, namespace in enumerate(stable):  # stable[0] is the oldest confirmation
        observed = now - 10 * settings.slow_poll_interval_ms + age
        freshness_table.data[namespace] = Freshness(
            namespace=namespace,
            status=IndexStatus.STABLE.value,
            stable_as_of=observed - MARGIN,
            last_observed_ms=observed,
            last_poll_ms=observed,
            next_poll_ms=observed + settings.slow_poll_interval_ms,
        )
    written = namespace_in_partition(PARTITION, "written")
    freshness_table.data[written] = Freshness(
        namespace=written, status=IndexStatus.UPDATING.value, last_write_ms=now, next_poll_ms=now
    )
    answer = hold_upstream_answers(upstream_metadata)

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_metadata.await_count, "the first poll")
        first_polled = upstream_metadata.await_args_list[0].args[0]
        polled = {call.args[0] for call in upstream_metadata.await_args_list}
        answer.set()
        await services.poller.drain()

    assert first_polled == written, "the written namespace goes before every confirmation"
    budget = settings.poll_concurrency - 1  # the written namespace's poll holds one slot
    assert polled - {written} == set(stable[:budget]), "the oldest confirmations, no more"
    assert services.metrics.value("layer_confirmation_age_seconds_count") == budget
    assert services.metrics.value("layer_polls_total") == budget + 1


def _names_in_partition(partition: int, prefix: str, count: int) -> list[str]:
    names = []
    i = 0
    while len(names) < count:
        name = f"{prefix}-{i}"
        if partition_for(name, settings.topic_partitions) == partition:
            names.append(name)
        i += 1
    return names


async def test_a_register_many_message_registers_each_namespace_of_its_partition(
    stability_send: AsyncMock, services: Services
) -> None:
    """A listing page's registrations arrive as one message per partition; an entry whose
    namespace belongs elsewhere is ignored (its owner would never see the row)."""
    here = _names_in_partition(PARTITION, "page", 3)
    elsewhere = namespace_in_partition(0 if PARTITION else 1, "page-elsewhere")
    entries = [json.loads(registration(name)) for name in [*here, elsewhere]]
    entries[0]["observation"] = {"started_at_ms": 900, "index": {"status": "up-to-date"}}
    value = json.dumps({"kind": "register_many", "registrations": entries}).encode()

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=value, partition=PARTITION)

    assert freshness_table[here[0]].status == IndexStatus.STABLE, "its observation applied"
    assert [freshness_table[name] for name in here[1:]] == [new_freshness(n) for n in here[1:]]
    assert elsewhere not in freshness_table
    assert services.metrics.value("layer_registrations_total") == 3


async def test_a_schedule_rebuild_reads_the_table_in_chunks_and_misses_no_due_namespace(
    upstream_metadata: AsyncMock, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a rebalance the schedule is rebuilt from the table a chunk at a time (a million
    rows must not stall the worker); every due namespace is polled once it is read, and a
    namespace written during the rebuild is polled too."""
    monkeypatch.setattr(agents.ticks, "RELOAD_CHUNK_ROWS", 2)
    due = _names_in_partition(PARTITION, "due", 7)
    for namespace in due:
        freshness_table.data[namespace] = new_freshness(namespace)
    upstream_metadata.return_value = metadata_answer("updating")
    services.poller.start_due(PARTITION)  # the rebuild: 2 rows now, 5 in a task
    late = namespace_in_partition(PARTITION, "written-during-rebuild")
    await apply_write_notifications([writes_message(write(late, now_ms()), late.encode())])
    await eventually(
        lambda: services.poller._rebuild and services.poller._rebuild.done(), "rebuild"
    )

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_metadata.await_count >= 6, "the polls")
        await services.poller.drain()

    polled = {call.args[0] for call in upstream_metadata.await_args_list}
    assert polled == set(due) | {late}
