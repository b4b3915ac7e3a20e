"""Following asynchronous upstream writes (agents/operations.py) on the real app's agents.

The proxy's notification of a `202` is applied by the writes handler; a poll tick of the
namespace's partition makes the owner ask upstream about the operation (upstream `request`
mocked); its end is published as a write notification, applied like any write.
"""

from __future__ import annotations

import json
from unittest.mock import AsyncMock

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from agents.ticks import poll_due_namespaces
from agents.writes import apply_write_notifications
from layer.app import settings
from layer.clock import now_ms
from layer.services import Services
from layer.upstream import UpstreamResponse
from tables.faust_tables import freshness_table
from tables.freshness import Freshness, IndexStatus

from .support import eventually, namespace_in_partition, sent_values, tick, writes_message

pytestmark = pytest.mark.usefixtures("app")

PARTITION = 0
NS = namespace_in_partition(PARTITION, "copy")
LOCATION = f"/v1/namespaces/{NS}/operations/op_1"


@pytest.fixture(autouse=True)
def upstream_request(services: Services, monkeypatch: pytest.MonkeyPatch) -> AsyncMock:
    mock = AsyncMock(name="upstream.request")
    monkeypatch.setattr(services.upstream, "request", mock)
    return mock


def answer(status: int, body: object) -> UpstreamResponse:
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
    return UpstreamResponse(status, headers, json.dumps(body).encode(), reason_phrase="")


def accepted(at_ms: int | None = None) -> bytes:
    at_ms = now_ms() if at_ms is None else at_ms
    return json.dumps(
        {
            "namespace": NS,
            "written_at_ms": at_ms,
            "source": "proxy",
            "operations_started": [{"location": LOCATION, "accepted_at_ms": at_ms}],
        }
    ).encode()


async def test_a_202_notification_records_the_operation_and_keeps_the_namespace_updating() -> None:
    freshness_table.data[NS] = Freshness(
        namespace=NS, status=IndexStatus.STABLE.value, stable_as_of=900, next_poll_ms=10**13
    )

    await apply_write_notifications([writes_message(accepted(1_000), NS.encode())])

    state = freshness_table[NS]
    assert state.operations == {LOCATION: 1_000}
    assert state.status == IndexStatus.UPDATING and state.last_write_ms == 1_000


async def test_the_owner_follows_a_running_operation_then_publishes_its_end(
    upstream_request: AsyncMock, writes_send: AsyncMock, services: Services
) -> None:
    await apply_write_notifications([writes_message(accepted(), NS.encode())])
    upstream_request.return_value = answer(200, {"status": "running", "start_time": "x"})

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_request.await_count, "the operation poll")
        await services.follower.drain()
        assert writes_send.await_count == 0, "running: nothing to say yet"
        assert upstream_request.await_args.args == ("GET", LOCATION)

        services.follower._next_ms.clear()  # due again at once
        upstream_request.return_value = answer(
            200, {"status": "finished", "result": {"success": {"status": "OK"}}}
        )
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: writes_send.await_count, "the completion notification")
        await services.follower.drain()

    [note] = sent_values(writes_send)
    assert note["namespace"] == NS and note["operation_finished"] == LOCATION
    assert note["source"] == "operation"
    assert writes_send.await_args.kwargs["key"] == NS.encode()

    await apply_write_notifications(
        [writes_message(writes_send.await_args.kwargs["value"], NS.encode())]
    )
    state = freshness_table[NS]
    assert state.operations is None
    assert state.last_write_ms == note["written_at_ms"] and state.status == IndexStatus.UPDATING
    assert state.next_poll_ms <= note["written_at_ms"], "due at once: the copy has landed"


@pytest.mark.parametrize("status", [404, 403])
async def test_an_operation_upstream_does_not_know_is_ended_conservatively(
    status: int, upstream_request: AsyncMock, writes_send: AsyncMock, services: Services
) -> None:
    await apply_write_notifications([writes_message(accepted(), NS.encode())])
    upstream_request.return_value = answer(status, {"status": "error", "error": "no"})

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: writes_send.await_count, "the completion notification")
        await services.follower.drain()

    assert sent_values(writes_send)[0]["operation_finished"] == LOCATION


async def test_a_failing_upstream_is_retried_with_backoff_never_ended(
    upstream_request: AsyncMock, writes_send: AsyncMock, services: Services
) -> None:
    await apply_write_notifications([writes_message(accepted(), NS.encode())])
    upstream_request.return_value = answer(503, {"status": "error", "error": "busy"})

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: upstream_request.await_count, "the operation poll")
        await services.follower.drain()
        await agent.put(value=tick(PARTITION), partition=PARTITION)  # backing off: not asked

    assert upstream_request.await_count == 1
    assert writes_send.await_count == 0
    assert list(freshness_table[NS].operations or {}) == [LOCATION]
    key = (NS, LOCATION)
    assert services.follower._next_ms[key] >= now_ms() + settings.fast_poll_interval_ms


async def test_after_a_restart_the_follower_takes_its_operations_from_the_table(
    upstream_request: AsyncMock, writes_send: AsyncMock, services: Services
) -> None:
    """The table is what survives (its changelog); the services.follower starts from it."""
    freshness_table.data[NS] = Freshness(
        namespace=NS, status=IndexStatus.UPDATING.value, operations={LOCATION: now_ms()}
    )
    services.follower.clear()  # as after a restart or a rebalance: nothing in memory
    upstream_request.return_value = answer(200, {"status": "finished", "result": {"error": {}}})

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: writes_send.await_count, "the completion notification")
        await services.follower.drain()

    assert sent_values(writes_send)[0]["operation_finished"] == LOCATION


async def test_an_operation_older_than_the_limit_is_given_up_and_ended(
    upstream_request: AsyncMock, writes_send: AsyncMock, services: Services
) -> None:
    await apply_write_notifications([writes_message(accepted(1_000), NS.encode())])
    upstream_request.return_value = answer(200, {"status": "running", "start_time": "x"})

    async with poll_due_namespaces.test_context() as agent:
        await agent.put(value=tick(PARTITION), partition=PARTITION)
        await eventually(lambda: writes_send.await_count, "the completion notification")
        await services.follower.drain()

    assert sent_values(writes_send)[0]["operation_finished"] == LOCATION
