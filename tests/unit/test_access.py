"""The verdicts of api/access.py: who may see Layer's data of a namespace, cached briefly.

Upstream is a real server on loopback (tests/fake_upstream.py) answering metadata per key:
the watcher's key and another key of the watched organisation see the namespace created at
"A"; a key of another organisation sees its own namespace of the same name, created at "B";
a bad key gets 401.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from api.access import NamespaceAccess
from api.auth import Credential, authenticate
from api.errors import ApiError
from layer.metrics import LayerMetrics
from layer.readiness import Readiness
from layer.settings import Settings, load_settings
from layer.upstream import Upstream
from tests.fake_upstream import json_response, serving

WATCHER, SAME_ORG, OTHER_ORG, BAD = "watcher-key", "same-org-key", "other-org-key", "bad-key"
CREATED = {WATCHER: "2026-01-01T00:00:00Z", SAME_ORG: "2026-01-01T00:00:00Z",
           OTHER_ORG: "2026-06-01T00:00:00Z"}  # fmt: skip
ALLOW_TTL_S, DENY_TTL_S = 30.0, 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TURBOPUFFER_API_KEY", WATCHER)
    monkeypatch.setenv("TURBOPUFFER_BASE_URL", "http://upstream.test")
    monkeypatch.setenv("LAYER_ACCESS_ALLOW_TTL_MS", str(int(ALLOW_TTL_S * 1000)))
    monkeypatch.setenv("LAYER_ACCESS_DENY_TTL_MS", str(int(DENY_TTL_S * 1000)))
    monkeypatch.delenv("LAYER_API_KEYS", raising=False)
    return load_settings()


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def access(
    settings: Settings, calls: Counter[str], clock: Clock
) -> AsyncIterator[NamespaceAccess]:
    async def answer(request: web.Request) -> web.StreamResponse:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        calls[key] += 1
        if key not in CREATED:
            return json_response(401, {"status": "error", "error": "unauthorized"})
        body = {"index": {"status": "up-to-date"}, "created_at": CREATED[key]}
        return json_response(200, body)

    async with serving(answer) as base_url:
        upstream = Upstream(base_url, timeout_ms=1000, metrics=LayerMetrics())
        readiness = Readiness(["layer-freshness-changelog"], settings.topic_partitions)
        yield NamespaceAccess(upstream, settings, readiness=readiness, clock=clock)
        await upstream.aclose()


def _credential(key: str, settings: Settings) -> Credential:
    return authenticate(f"Bearer {key}", settings)


async def test_the_watchers_key_is_trusted_without_a_call(
    access: NamespaceAccess, settings: Settings, calls: Counter[str]
) -> None:
    watcher = _credential(WATCHER, settings)
    assert await access.caller_sees_watched(watcher, "products")
    await access.require(watcher, "products")
    assert not calls


async def test_another_organisation_sees_another_namespace_of_the_same_name(
    access: NamespaceAccess, settings: Settings
) -> None:
    assert await access.caller_sees_watched(_credential(SAME_ORG, settings), "products")
    assert not await access.caller_sees_watched(_credential(OTHER_ORG, settings), "products")
    with pytest.raises(ApiError) as refused:
        await access.require(_credential(OTHER_ORG, settings), "products")
    assert refused.value.status == 403
    with pytest.raises(ApiError) as unknown:
        await access.require(_credential(BAD, settings), "products")
    assert unknown.value.status == 401


async def test_verdicts_are_cached_per_key_and_namespace_until_they_expire(
    access: NamespaceAccess, settings: Settings, calls: Counter[str], clock: Clock
) -> None:
    same, other = _credential(SAME_ORG, settings), _credential(OTHER_ORG, settings)
    assert await access.caller_sees_watched(same, "products")
    assert not await access.caller_sees_watched(other, "products")
    asked = calls.copy()
    for _ in range(3):  # cached: no more upstream calls, and each key keeps its own verdict
        assert await access.caller_sees_watched(same, "products")
        assert not await access.caller_sees_watched(other, "products")
    assert calls == asked
    assert await access.caller_sees_watched(same, "orders")  # another namespace: asked anew
    assert calls[SAME_ORG] == asked[SAME_ORG] + 1

    clock.now += DENY_TTL_S + 0.1  # the refusal expires first, the acceptance later
    assert not await access.caller_sees_watched(other, "products")
    assert calls[OTHER_ORG] == asked[OTHER_ORG] + 1
    assert await access.caller_sees_watched(same, "products")
    assert calls[SAME_ORG] == asked[SAME_ORG] + 1, "acceptance still cached"
    clock.now += ALLOW_TTL_S
    assert await access.caller_sees_watched(same, "products")
    assert calls[SAME_ORG] == asked[SAME_ORG] + 2, "acceptance expired: asked again"
