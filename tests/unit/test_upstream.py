"""The upstream client: parsing on literal turbopuffer bodies, error mapping against a real
server on loopback (tests/fake_upstream.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

import layer.upstream as upstream_module
from layer.errors import LayerError
from layer.metrics import LayerMetrics
from layer.upstream import (
    MAX_ERROR_CHARS,
    InvalidNamespace,
    Upstream,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
    parse_metadata,
    parse_retry_after_ms,
    validate_namespace,
)
from tables.freshness import IndexObservation
from tests.fake_upstream import Handler, json_response, refused_url, serving, serving_raw

API_KEY = "tpuf_secret_key_for_tests"
BASE_URL = "https://gcp-us-central1.turbopuffer.com"

#: Matches a quiet namespace's live metadata response: caught up, no unindexed counts.
QUIET_BODY: dict[str, Any] = {
    "schema": {},
    "approx_row_count": 12500,
    "approx_logical_bytes": 48800000,
    "created_at": "2026-03-15T10:30:45Z",
    "updated_at": "2026-05-12T18:49:00Z",
    "index": {"status": "up-to-date"},
}

#: A namespace right after a write: the index is behind by two rows.
UPDATING_BODY: dict[str, Any] = {
    "schema": {
        "id": {"type": "uint"},
        "vector": {"type": "[768]f32", "ann": True},
        "text": {"type": "string", "full_text_search": True},
    },
    "approx_row_count": 12502,
    "approx_logical_bytes": 48800100,
    "created_at": "2026-03-15T10:30:45Z",
    "updated_at": "2026-05-12T18:50:00Z",
    "index": {"status": "updating", "unindexed_bytes": 100, "unindexed_rows": 2},
}


# --- parse_metadata ------------------------------------------------------------------------


def test_parse_metadata_reads_a_quiet_up_to_date_namespace() -> None:
    observation = parse_metadata(json.loads(json.dumps(QUIET_BODY)))
    assert observation == IndexObservation(
        index_status="up-to-date",
        index={"status": "up-to-date"},
        approx_row_count=12500,
        approx_logical_bytes=48800000,
        updated_at="2026-05-12T18:49:00Z",
        created_at=QUIET_BODY["created_at"],
    )


def test_parse_metadata_reads_an_updating_namespace_and_keeps_the_index_verbatim() -> None:
    observation = parse_metadata(json.loads(json.dumps(UPDATING_BODY)))
    assert observation.index_status == "updating"
    assert observation.index == {"status": "updating", "unindexed_bytes": 100, "unindexed_rows": 2}
    assert observation.approx_row_count == 12502
    assert observation.approx_logical_bytes == 48800100
    assert observation.updated_at == "2026-05-12T18:50:00Z"


def test_parse_metadata_keeps_unknown_index_fields_verbatim() -> None:
    body = {**QUIET_BODY, "index": {"status": "up-to-date", "future_field": [1, 2]}}
    assert parse_metadata(body).index == {"status": "up-to-date", "future_field": [1, 2]}


def test_parse_metadata_reads_an_empty_namespace_without_counts() -> None:
    observation = parse_metadata({"index": {"status": "up-to-date"}})
    assert observation.index_status == "up-to-date"
    assert (observation.approx_row_count, observation.approx_logical_bytes) == (None, None)
    assert observation.updated_at is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("approx_row_count", "12500"),
        ("approx_row_count", 12500.0),
        ("approx_row_count", True),
        ("approx_row_count", None),
        ("approx_logical_bytes", "big"),
        ("approx_logical_bytes", False),
    ],
)
def test_parse_metadata_reads_a_count_of_the_wrong_type_as_no_signal_not_zero(
    field: str, value: Any
) -> None:
    observation = parse_metadata({**QUIET_BODY, field: value})
    assert getattr(observation, field) is None


@pytest.mark.parametrize("value", [1747075740, None, {"at": "now"}])
def test_parse_metadata_reads_a_non_string_updated_at_as_none(value: Any) -> None:
    assert parse_metadata({**QUIET_BODY, "updated_at": value}).updated_at is None


@pytest.mark.parametrize(
    "body",
    [
        {k: v for k, v in QUIET_BODY.items() if k != "index"},
        {**QUIET_BODY, "index": None},
        {**QUIET_BODY, "index": "up-to-date"},
        {**QUIET_BODY, "index": ["up-to-date"]},
        {**QUIET_BODY, "index": {}},
        {**QUIET_BODY, "index": {"status": None}},
        {**QUIET_BODY, "index": {"status": "Up-To-Date"}},
        {**QUIET_BODY, "index": {"status": "stable"}},
        {**QUIET_BODY, "index": {"status": "building"}},
        {**QUIET_BODY, "index": {"status": ""}},
        {**QUIET_BODY, "index": {"status": True}},
        {"error": "namespace not found", "status": "error"},
        [],
        None,
        "up-to-date",
        12,
    ],
    ids=[
        "missing-index",
        "null-index",
        "string-index",
        "list-index",
        "index-without-status",
        "null-status",
        "status-wrong-case",
        "status-stable",
        "unknown-status",
        "empty-status",
        "boolean-status",
        "error-body",
        "list-body",
        "null-body",
        "string-body",
        "number-body",
    ],
)
def test_no_signal_is_never_stable_unknown_shapes_raise_bad_response(body: Any) -> None:
    with pytest.raises(UpstreamBadResponse):
        parse_metadata(body)


def test_unknown_status_message_is_short_even_for_a_huge_status() -> None:
    with pytest.raises(UpstreamBadResponse) as info:
        parse_metadata({"index": {"status": "x" * 10_000}})
    assert len(str(info.value)) < 100


# --- validate_namespace ----------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["products", "a", "my-ns_v2.1", "N" * 128])
def test_valid_namespace_is_returned_unchanged(namespace: str) -> None:
    assert validate_namespace(namespace) == namespace


@pytest.mark.parametrize(
    "namespace",
    [
        "",
        "N" * 129,
        "has space",
        "a/b",
        "../metadata",
        "ns?x=1",
        "ns#frag",
        "ns%2F",
        "ümlaut",
        "products\n",
    ],
    ids=[
        "empty",
        "too-long",
        "space",
        "slash",
        "path-traversal",
        "query",
        "fragment",
        "percent",
        "non-ascii",
        "trailing-newline",
    ],
)
def test_invalid_namespace_raises_invalid_namespace_with_advice(namespace: str) -> None:
    with pytest.raises(InvalidNamespace, match="1-128 characters"):
        validate_namespace(namespace)


def test_invalid_namespace_is_a_layer_error_not_an_upstream_error() -> None:
    assert issubclass(InvalidNamespace, LayerError)
    assert not issubclass(InvalidNamespace, UpstreamError)


# --- parse_retry_after_ms --------------------------------------------------------------------


class FrozenDatetime(datetime):
    """`datetime` whose now() is 2026-05-12T18:49:00Z."""

    @classmethod
    def now(cls, tz: Any = None) -> FrozenDatetime:
        return cls(2026, 5, 12, 18, 49, 0, tzinfo=UTC)


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "datetime", FrozenDatetime)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after-ms": "1500"}, 1500),
        ({"retry-after-ms": "1500.7"}, 1500),
        ({"retry-after-ms": "0"}, 0),
        ({"retry-after-ms": "-5"}, 0),
        ({"retry-after-ms": "soon"}, None),
        ({"Retry-After": "2"}, 2000),
        ({"Retry-After": "0.5"}, 500),
        ({"Retry-After": "-1"}, 0),
        ({"retry-after-ms": "250", "Retry-After": "30"}, 250),
        ({"Retry-After": "Tue, 12 May 2026 18:49:30 GMT"}, 30_000),
        ({"Retry-After": "Tue, 12 May 2026 18:48:00 GMT"}, 0),
        ({"Retry-After": "whenever"}, None),
        ({"Retry-After": ""}, None),
    ],
    ids=[
        "absent",
        "ms",
        "ms-fraction",
        "ms-zero",
        "ms-negative",
        "ms-garbage",
        "seconds",
        "seconds-fraction",
        "seconds-negative",
        "ms-wins-over-seconds",
        "http-date-future",
        "http-date-past",
        "garbage",
        "empty",
    ],
)
def test_retry_after_is_read_in_milliseconds(
    frozen_now: None, headers: dict[str, str], expected: int | None
) -> None:
    assert parse_retry_after_ms(CIMultiDict(headers)) == expected


# --- Upstream: a real server on loopback (tests/fake_upstream.py) ----------------------------


@pytest.fixture
async def make_upstream() -> AsyncIterator[Callable[..., Awaitable[Upstream]]]:
    """`await make(handler)`: an Upstream (base URL with a trailing slash) on a server that
    answers with `handler`; `make(url)` for a server already there, `make(raw=b"...")` for
    one that answers raw bytes."""
    servers = AsyncExitStack()
    clients: list[Upstream] = []

    async def make(
        handler: Handler | str | None = None,
        *,
        raw: bytes | None = None,
        timeout_ms: int = 1_000,
        max_connections: int = 512,
    ) -> Upstream:
        if isinstance(handler, str):
            base_url = handler
        elif raw is not None:
            base_url = await servers.enter_async_context(serving_raw(raw))
        else:
            assert handler is not None
            base_url = await servers.enter_async_context(serving(handler))
        client = Upstream(
            base_url + "/",
            timeout_ms=timeout_ms,
            metrics=LayerMetrics(),
            max_connections=max_connections,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    await servers.aclose()


def respond(status_code: int, body: Any = None, **kwargs: Any) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if "content" in kwargs:
            return web.Response(
                status=status_code, body=kwargs["content"], headers=kwargs.get("headers")
            )
        return json_response(status_code, body, **kwargs)

    return handler


def sleeping(seconds: float) -> Handler:
    """Answers only after `seconds`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return json_response(200, QUIET_BODY)

    return handler


async def stalling_body(request: web.Request) -> web.StreamResponse:
    """Sends the status line, the headers and half the body, then nothing more."""
    response = web.StreamResponse(status=200)
    response.content_length = 100
    await response.prepare(request)
    await response.write(b'{"index": {"status": "up-to-')
    await asyncio.sleep(5)
    return response


async def hanging_up(request: web.Request) -> web.StreamResponse:
    """Closes the connection without an answer."""
    assert request.transport is not None
    request.transport.close()
    await asyncio.sleep(1)
    return web.Response()


async def test_metadata_returns_the_body_verbatim_and_its_observation(make_upstream: Any) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, str(request.url), dict(request.headers)))
        return json_response(200, UPDATING_BODY)

    client = await make_upstream(handler)
    body, observation = await client.metadata("products", api_key=API_KEY)
    assert body == UPDATING_BODY
    assert observation.index_status == "updating"
    ((method, url, headers),) = seen
    assert method == "GET"
    assert url == f"{client.base_url}/v2/namespaces/products/metadata"
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Accept"] == "application/json"


async def test_metadata_of_an_invalid_namespace_never_reaches_upstream(make_upstream: Any) -> None:
    calls: list[web.Request] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        calls.append(request)
        return json_response(200, QUIET_BODY)

    with pytest.raises(InvalidNamespace):
        await (await make_upstream(handler)).metadata("../../v1/namespaces", api_key=API_KEY)
    assert calls == []


async def test_metadata_with_unknown_index_status_is_a_bad_response(make_upstream: Any) -> None:
    body = {**QUIET_BODY, "index": {"status": "rebuilding"}}
    with pytest.raises(UpstreamBadResponse):
        await (await make_upstream(respond(200, body))).metadata("products", api_key=API_KEY)


async def test_metadata_without_an_index_is_a_bad_response(make_upstream: Any) -> None:
    body = {k: v for k, v in QUIET_BODY.items() if k != "index"}
    with pytest.raises(UpstreamBadResponse):
        await (await make_upstream(respond(200, body))).metadata("products", api_key=API_KEY)


async def test_non_json_success_body_is_a_bad_response(make_upstream: Any) -> None:
    handler = respond(200, content=b"<html>gateway</html>", headers={"content-type": "text/html"})
    with pytest.raises(UpstreamBadResponse, match="not JSON"):
        await (await make_upstream(handler)).metadata("products", api_key=API_KEY)


@pytest.mark.parametrize(
    ("status_code", "body", "headers", "message", "retry_after_ms"),
    [
        (404, {"status": "error", "error": "namespace not found"}, {}, "namespace not found", None),
        (401, {"error": "invalid api key"}, {}, "invalid api key", None),
        (429, {"error": "rate limited"}, {"retry-after-ms": "1500"}, "rate limited", 1500),
        (429, {"error": "slow down"}, {"Retry-After": "3"}, "slow down", 3000),
        (500, None, {}, "Internal Server Error", None),
        (503, {"message": "no error key"}, {}, "Service Unavailable", None),
        (502, ["not", "an", "object"], {}, "Bad Gateway", None),
    ],
    ids=["404", "401", "429-ms", "429-seconds", "500-no-body", "503-other-shape", "502-list"],
)
async def test_error_status_becomes_upstream_status_error(
    make_upstream: Any,
    status_code: int,
    body: Any,
    headers: dict[str, str],
    message: str,
    retry_after_ms: int | None,
) -> None:
    client = await make_upstream(respond(status_code, body, headers=headers))
    with pytest.raises(UpstreamStatusError) as info:
        await client.metadata("products", api_key=API_KEY)
    error = info.value
    assert error.status_code == status_code
    assert error.upstream_message == message
    assert error.retry_after_ms == retry_after_ms
    assert str(error) == f"upstream answered {status_code}: {message}"


async def test_error_status_with_a_text_body_keeps_the_reason_not_the_body(
    make_upstream: Any,
) -> None:
    handler = respond(500, content=b"Traceback (most recent call last): ...")
    with pytest.raises(UpstreamStatusError) as info:
        await (await make_upstream(handler)).get_json("/v1/namespaces", api_key=API_KEY)
    assert info.value.upstream_message == "Internal Server Error"


async def test_long_upstream_error_message_is_shortened(make_upstream: Any) -> None:
    client = await make_upstream(respond(400, {"error": "x" * 5_000}))
    with pytest.raises(UpstreamStatusError) as info:
        await client.get_json("/v1/x", api_key=API_KEY)
    assert len(info.value.upstream_message) == MAX_ERROR_CHARS


#: Upstream too slow, each way it can be: (how the client is made, the failure it names).
TIMEOUTS: dict[str, tuple[Callable[[Any], Awaitable[Upstream]], str]] = {
    "no-answer": (lambda make: make(sleeping(5), timeout_ms=200), "TimeoutError"),
    "body-stalls": (lambda make: make(stalling_body, timeout_ms=200), "TimeoutError"),
}
#: Upstream unreachable, each way it can be: (how the client is made, the failure it names).
UNAVAILABLE: dict[str, tuple[Callable[[Any], Awaitable[Upstream]], str]] = {
    "refused": (lambda make: make(refused_url()), "ClientConnectorError"),
    "hangs-up": (lambda make: make(hanging_up), "ServerDisconnectedError"),
    "not-http": (lambda make: make(raw=b"garbage\r\n\r\n"), "ClientResponseError"),
    "truncated-body": (
        lambda make: make(raw=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"),
        "ClientPayloadError",
    ),
}


@pytest.mark.parametrize("scenario", list(TIMEOUTS))
async def test_timeouts_become_upstream_timeout(make_upstream: Any, scenario: str) -> None:
    make, failure = TIMEOUTS[scenario]
    with pytest.raises(UpstreamTimeout) as info:
        await (await make(make_upstream)).metadata("products", api_key=API_KEY)
    assert failure in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_waiting_for_a_connection_counts_towards_the_timeout(make_upstream: Any) -> None:
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return json_response(200, QUIET_BODY)

    client = await make_upstream(handler, timeout_ms=300, max_connections=1)
    first = asyncio.create_task(client.metadata("products", api_key=API_KEY))
    await asyncio.sleep(0.05)  # the one connection is taken
    try:
        with pytest.raises(UpstreamTimeout) as info:
            await client.metadata("other", api_key=API_KEY)
        assert "TimeoutError" in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__
    finally:
        release.set()
        await asyncio.gather(first, return_exceptions=True)


@pytest.mark.parametrize("scenario", list(UNAVAILABLE))
async def test_connection_failures_become_upstream_unavailable(
    make_upstream: Any, scenario: str
) -> None:
    make, failure = UNAVAILABLE[scenario]
    with pytest.raises(UpstreamUnavailable) as info:
        await (await make(make_upstream)).metadata("products", api_key=API_KEY)
    assert failure in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "make",
    [
        UNAVAILABLE["refused"][0],
        TIMEOUTS["no-answer"][0],
        lambda make: make(respond(500, {"error": "boom"})),
        lambda make: make(respond(200, content=b"nope")),
        lambda make: make(respond(200, {"index": {}})),
    ],
    ids=["unavailable", "timeout", "status", "not-json", "bad-shape"],
)
async def test_every_upstream_failure_is_an_upstream_error_without_the_api_key(
    make_upstream: Any, make: Callable[[Any], Awaitable[Upstream]]
) -> None:
    with pytest.raises(UpstreamError) as info:
        await (await make(make_upstream)).metadata("products", api_key=API_KEY)
    assert isinstance(info.value, LayerError)
    assert API_KEY not in str(info.value)


async def test_get_json_passes_query_parameters_and_returns_the_response(
    make_upstream: Any,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.query["prefix"] == "prod"
        return json_response(200, {"namespaces": [{"id": "products"}]})

    body, response = await (await make_upstream(handler)).get_json(
        "/v1/namespaces", api_key=API_KEY, params={"prefix": "prod"}
    )
    assert body == {"namespaces": [{"id": "products"}]}
    assert response.status_code == 200


async def test_own_calls_and_relayed_calls_send_only_their_headers_on_one_pool(
    make_upstream: Any,
) -> None:
    """Layer's own calls send exactly their headers (aiohttp adds only `Host`, and the
    body's length and type); a relayed call gets no header it was not given but aiohttp's
    `Accept: */*` (no `User-Agent`, no `Accept-Encoding`: the pool decompresses nothing)."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        return json_response(200, QUIET_BODY)

    client = await make_upstream(handler)
    await client.metadata("products", api_key=API_KEY)
    await client.request("POST", "/v2/namespaces/products", api_key=API_KEY, json={})
    await client.fetch("GET", "/v2/namespaces/products/metadata", headers={"X-Layer-Routed": "1"})
    own_get, own_post, relayed = seen
    own = {
        "accept": "application/json",
        "user-agent": "layer",
        "accept-encoding": "identity",
        "authorization": f"Bearer {API_KEY}",
    }
    assert own_get == {**own, "host": own_get["host"]}
    assert own_post == {
        **own,
        "host": own_get["host"],
        "content-type": "application/json",
        "content-length": "2",
    }
    assert relayed == {"x-layer-routed": "1", "host": own_get["host"], "accept": "*/*"}
    assert client.own_session().connector is client.session().connector


async def test_request_passes_extra_headers_and_keeps_its_own_authorization(
    make_upstream: Any,
) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.headers["x-extra"] == "1"
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        assert json.loads(await request.read()) == {"upsert_rows": []}
        return web.Response(status=202)

    response = await (await make_upstream(handler)).request(
        "POST",
        "/v2/namespaces/products",
        api_key=API_KEY,
        json={"upsert_rows": []},
        headers={"x-extra": "1"},
    )
    assert response.status_code == 202


def test_base_url_trailing_slash_is_dropped() -> None:
    client = Upstream(
        "https://gcp-us-central1.turbopuffer.com///", timeout_ms=1_000, metrics=LayerMetrics()
    )
    assert client.base_url == "https://gcp-us-central1.turbopuffer.com"


PURE_MODULES = [
    "layer.upstream",
    "layer.events",
    "layer.settings",
    "layer.ratelimit",
    "tables.freshness",
    "tables.snapshots",
    "tables.schedule",
]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_without_building_the_faust_app(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "built = [m for m in ('layer.app', 'tables.faust_tables') if m in sys.modules] "
        "+ [m for m in sys.modules if m.startswith('agents')]; "
        "assert not built, built"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
