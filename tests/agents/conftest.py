"""Fixtures for the agent tests: faust's `test_context()` on the real app, with outbound I/O mocked.

The app, its topics and tables are module-level objects (declared at import, as Faust
intends), so every test gets the tables emptied; everything else the agents use (poller,
schedule, follower, metrics…) is built fresh for each test by the composition root,
`layer.services.build_services`, and installed on the app. Nothing here talks to Kafka or
turbopuffer: `send` of the output topics and upstream `metadata` are `AsyncMock`s
(faust:docs/userguide/testing.rst, "Testing with pytest").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from unittest.mock import AsyncMock

import faust
import pytest

import layer.worker  # noqa: F401  (every agent, as `layer worker` registers them)
from layer.app import app as layer_app
from layer.app import settings, topics
from layer.services import Services, build_services
from tables.faust_tables import freshness_table, snapshots_table


@pytest.fixture
def services() -> Services:
    """This test's long-lived objects, installed on the app (no test sees another's)."""
    fresh = build_services(settings)
    layer_app.use(fresh)
    return fresh


@pytest.fixture
async def app(
    services: Services,
    stability_send: AsyncMock,
    dead_letter_send: AsyncMock,
    writes_send: AsyncMock,
    upstream_metadata: AsyncMock,
) -> AsyncIterator[faust.App]:
    """The Layer app, ready for `agent.test_context()` on this test's event loop.

    Depends on the I/O mocks so no test can reach Kafka or upstream by forgetting one.
    """
    layer_app.loop = asyncio.get_running_loop()
    layer_app.finalize()
    if not str(layer_app.conf.store).startswith("memory:"):  # LAYER_TABLE_STORE may say rocksdb
        layer_app.conf.store = "memory://"
    layer_app.flow_control.resume()
    freshness_table.data.clear()
    snapshots_table.data.clear()
    yield layer_app
    await services.poller.drain()
    await services.follower.drain()
    freshness_table.data.clear()
    snapshots_table.data.clear()


def _record_sends(monkeypatch: pytest.MonkeyPatch, topic: faust.TopicT, name: str) -> AsyncMock:
    """Replace `topic.send` by a mock that records what would have been produced."""
    mock = AsyncMock(name=f"{name}.send")
    monkeypatch.setattr(topic, "send", mock)
    return mock


@pytest.fixture
def stability_send(monkeypatch: pytest.MonkeyPatch) -> AsyncMock:
    """`topics.stability.send`, recorded instead of produced."""
    return _record_sends(monkeypatch, topics.stability, "stability")


@pytest.fixture
def writes_send(monkeypatch: pytest.MonkeyPatch) -> AsyncMock:
    """`topics.writes.send` (misrouted notifications are forwarded), recorded."""
    return _record_sends(monkeypatch, topics.writes, "writes")


@pytest.fixture
def dead_letter_send(monkeypatch: pytest.MonkeyPatch) -> AsyncMock:
    """`topics.dead_letters.send`, recorded instead of produced."""
    return _record_sends(monkeypatch, topics.dead_letters, "dead_letters")


@pytest.fixture
def upstream_metadata(services: Services, monkeypatch: pytest.MonkeyPatch) -> AsyncMock:
    """The poller's upstream `metadata` call; set `return_value` or `side_effect` per test."""
    mock = AsyncMock(name="upstream.metadata")
    monkeypatch.setattr(services.upstream, "metadata", mock)
    return mock
