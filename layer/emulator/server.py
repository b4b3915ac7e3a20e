"""The emulator's HTTP server: turbopuffer's routes, the control API, and the `Emulator` runner.

## turbopuffer routes (route name → paths)
- `list`: `GET /v1/namespaces` (`prefix`, `cursor`, `page_size` 1–1000, default 100)
- `metadata`: `GET /v1/namespaces/{ns}/metadata`, `GET /v2/namespaces/{ns}/metadata`
- `update_metadata`: `PATCH /v1/namespaces/{ns}/metadata` (`read_only`, `pinning`)
- `write`: `POST /v2/namespaces/{ns}`, also `copy_from_namespace` and
  `branch_from_namespace` (`?stainless_overload=copyFrom|branchFrom` is ignored, as any query).
  A copy takes `copy_duration_ms` (`--copy-duration-ms`, or the control API): with
  `Prefer: respond-async` and a duration above 0 it answers `202 Accepted`,
  `Preference-Applied: respond-async`, `Location: /v1/namespaces/{ns}/operations/{token}` and
  `{"token": …}`; otherwise it waits for the copy and answers its result (200 or its error).
  A branch is instant, always `200`.
- `start_copy_from`: `POST /v2/namespaces/{ns}/async`: a copy, always `202` with `Location`
  and `{"token"}`, never `Preference-Applied` (the SDK's `start_copy_from`)
- `operation`: `GET /v1/namespaces/{ns}/operations/{token}` (the poll; `layer.emulator.operations`)
- `delete`: `DELETE /v2/namespaces/{ns}`
- `query`: `POST /v2/namespaces/{ns}/query` (a `queries` body is a multi-query) and
  `POST /v2/namespaces/{ns}/multi-query`
- `explain_query`: `POST /v2/namespaces/{ns}/explain_query`
- `hint_cache_warm`: `GET /v1/namespaces/{ns}/hint_cache_warm` (202)
- `schema` / `update_schema`: `GET` / `POST /v1/namespaces/{ns}/schema`

Every request needs `Authorization: Bearer <key>` with one of the emulator's keys. Keys belong
to an organisation, and namespaces are per organisation, as in turbopuffer: the `--api-key`
keys share one, the `--other-org-key` keys another (its own namespaces, none of the first's;
the same name may exist in both). Every error has turbopuffer's body
`{"status": "error", "error": "..."}`. Requests to these routes are counted (before
authentication) and then subject to fault rules.

## Control API (same bearer auth; never counted, never faulted; acts on the first organisation)
- `POST /_emulator/indexing/{ns}/pause` | `/resume` | `/force` → `{"status": "OK", "index": ...}`
- `POST /_emulator/faults` with a FaultRule body → `{"id": n}`;
  `GET /_emulator/faults` → `{"faults": [...]}`; `DELETE /_emulator/faults` clears all;
  `DELETE /_emulator/faults/{id}` removes one
- `GET /_emulator/stats` → `{"total", "routes": {route: n}, "namespaces": {ns: {route: n}}}`;
  `POST /_emulator/stats/reset`
- `POST /_emulator/copy` with `{"duration_ms": N}`: how long copies take from now on
- `POST /_emulator/reset`: forget every namespace, pause, fault rule, counter and copy, and
  restore the copy duration the emulator started with
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Self

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_urldispatcher import AbstractRoute
from pydantic import ValidationError

from .faults import DEFAULT_RETRY_AFTER_MS, RATE_LIMITED, FaultRule, FaultSet
from .operations import CopyOperation, CopyOperations
from .stats import RequestStats
from .store import (
    DEFAULT_MAX_TOP_K,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    NAMESPACE_NAME,
    BadRequest,
    CopySpec,
    Forbidden,
    IndexingConfig,
    QueryOutcome,
    Store,
    StoreError,
    copy_spec,
)

__all__ = ["DEV_API_KEY", "Emulator", "create_app"]

log = logging.getLogger(__name__)

#: The public development key the CLI uses when no `--api-key` is given.
DEV_API_KEY = "tpuf-dev-key"
#: How long `stop()` lets in-flight handlers finish before cancelling them.
SHUTDOWN_TIMEOUT_S = 1.0
#: The performance fields the SDK's model requires but fills in itself (reference §5).
CLIENT_PERFORMANCE_FIELDS: dict[str, float | None] = {
    "client_total_ms": 0,
    "client_compress_ms": 0,
    "client_response_ms": None,
    "client_body_read_ms": None,
    "client_deserialize_ms": 0,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ROUTE_NAMES = web.AppKey("route_names", dict[AbstractRoute, str])


class EmulatorState:
    """What one emulator holds: the store, keys, fault rules, counters, and a stop signal."""

    def __init__(
        self,
        store: Store,
        api_keys: Iterable[str],
        *,
        other_org_store: Store | None = None,
        other_org_keys: Iterable[str] = (),
        copy_duration_ms: int = 0,
    ) -> None:
        #: The organisation of `api_keys`; the control API acts on it.
        self.store = store
        #: Each key's organisation: namespaces are per organisation, as in turbopuffer.
        self.store_by_key = {key: store for key in api_keys}
        if other_org_store is not None:
            self.store_by_key |= {key: other_org_store for key in other_org_keys}
        self.api_keys = frozenset(self.store_by_key)
        self.faults = FaultSet()
        self.stats = RequestStats()
        self.closing = asyncio.Event()
        self.copies = CopyOperations()
        #: How long a copy takes (`POST /_emulator/copy` changes it; reset restores this).
        self.initial_copy_duration_ms = copy_duration_ms
        self.copy_duration_ms = copy_duration_ms


_STATE = web.AppKey("state", EmulatorState)
#: The caller's (valid) key, set by `_auth`.
_KEY = web.RequestKey("emulator.api_key", str)


# --- responses ---------------------------------------------------------------------------


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """turbopuffer's error body, for every error the emulator returns."""
    return web.json_response({"status": "error", "error": message}, status=status, headers=headers)


def fault_response(rule: FaultRule, status: int) -> web.Response:
    """A purposely failing answer: 429 invites a retry after a known wait, the rest forbid one."""
    if status == RATE_LIMITED:
        retry_ms = DEFAULT_RETRY_AFTER_MS if rule.retry_after_ms is None else rule.retry_after_ms
        headers = {
            "Retry-After": str(math.ceil(retry_ms / 1000)),
            "retry-after-ms": str(retry_ms),
        }
    else:
        headers = {"x-should-retry": "false"}
    return error_response(status, rule.message, headers=headers)


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _query_envelope(outcome: QueryOutcome, started: float) -> dict[str, object]:
    """The `billing` and `performance` objects every query response carries."""
    server_ms = _elapsed_ms(started)
    return {
        "billing": {
            "billable_logical_bytes_queried": outcome.bytes_queried,
            "billable_logical_bytes_returned": outcome.bytes_returned,
        },
        "performance": {
            "approx_namespace_size": outcome.namespace_size,
            "cache_hit_ratio": 1.0,
            "cache_temperature": "hot",
            "exhaustive_search_count": outcome.exhaustive_search_count,
            "query_execution_ms": server_ms,
            "server_total_ms": server_ms,
            **CLIENT_PERFORMANCE_FIELDS,
        },
    }


# --- middlewares -------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure, including aiohttp's own 404/405, in turbopuffer's error shape."""
    try:
        response = await handler(request)
    except StoreError as exc:
        return error_response(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except Exception as exc:
        # An emulator bug: say so loudly, and keep the SDK from retrying it.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, f"emulator error: {exc!r}", headers={"x-should-retry": "false"})
    if isinstance(response, web.Response) and "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    return response


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts turbopuffer routes before auth, so rejected requests are visible to tests too."""
    route = request.app[_ROUTE_NAMES].get(request.match_info.route)
    if route is not None:
        request.app[_STATE].stats.record(route, request.match_info.get("ns"))
    return await handler(request)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer auth on every route, the control API included."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        return error_response(401, "missing API key: send `Authorization: Bearer <key>`")
    if key.strip() not in request.app[_STATE].api_keys:
        return error_response(401, "unauthorized: invalid API key")
    request[_KEY] = key.strip()
    return await handler(request)


@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Validates the namespace name, then applies the first matching fault rule."""
    route = request.app[_ROUTE_NAMES].get(request.match_info.route)
    if route is None:
        return await handler(request)
    namespace = request.match_info.get("ns")
    if namespace is not None and not NAMESPACE_NAME.match(namespace):
        return error_response(
            400, f"invalid namespace name {namespace!r}: use 1-128 of [A-Za-z0-9-_.]"
        )
    state = request.app[_STATE]
    rule = state.faults.take(route, namespace)
    if rule is None:
        return await handler(request)
    if rule.hang:
        await state.closing.wait()
        return error_response(503, "the emulator is stopping", headers={"x-should-retry": "false"})
    if rule.latency_ms:
        try:
            await asyncio.wait_for(state.closing.wait(), rule.latency_ms / 1000)
        except TimeoutError:
            pass
    if rule.status is not None:
        return fault_response(rule, rule.status)
    return await handler(request)


# --- turbopuffer handlers ----------------------------------------------------------------


async def _json_object(request: web.Request) -> dict[str, object]:
    """The request body as a JSON object (aiohttp has already inflated a gzip body)."""
    try:
        raw = await request.read()
    except RequestPayloadError as exc:
        raise BadRequest("cannot decode the request body (check Content-Encoding)") from exc
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _state(request: web.Request) -> EmulatorState:
    return request.app[_STATE]


def _store(request: web.Request) -> Store:
    """The store of the caller's organisation (turbopuffer routes)."""
    return request.app[_STATE].store_by_key[request[_KEY]]


async def list_namespaces(request: web.Request) -> web.Response:
    raw_size = request.query.get("page_size", str(DEFAULT_PAGE_SIZE))
    try:
        page_size = int(raw_size)
    except ValueError:
        page_size = 0
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise BadRequest(f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}")
    names, next_cursor = _store(request).list_page(
        prefix=request.query.get("prefix", ""),
        cursor=request.query.get("cursor") or None,
        page_size=page_size,
    )
    body: dict[str, object] = {"namespaces": [{"id": name} for name in names]}
    if next_cursor is not None:
        body["next_cursor"] = next_cursor
    return web.json_response(body)


async def get_metadata(request: web.Request) -> web.Response:
    return web.json_response(_store(request).metadata(request.match_info["ns"]))


async def patch_metadata(request: web.Request) -> web.Response:
    body = await _json_object(request)
    return web.json_response(_store(request).update_metadata(request.match_info["ns"], body))


def prefers_async(request: web.Request) -> bool:
    """Whether the request says `Prefer: respond-async` (the header may list several)."""
    prefer = request.headers.get("Prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


async def write(request: web.Request) -> web.Response:
    started = time.perf_counter()
    body = await _json_object(request)
    spec = copy_spec(body)
    if spec is not None:
        return await _copy_or_branch(request, spec)
    result = _store(request).write(request.match_info["ns"], body)
    result["performance"] = {"server_total_ms": _elapsed_ms(started)}
    return web.json_response(result)


def _source_store(request: web.Request, spec: CopySpec) -> Store:
    """The organisation the source lives in: the caller's, or `source_api_key`'s."""
    if spec.source_api_key is None:
        return _store(request)
    store = _state(request).store_by_key.get(spec.source_api_key.strip())
    if store is None:
        raise Forbidden(f"{spec.field}.source_api_key is not a valid API key")
    return store


def _start_copy(request: web.Request, spec: CopySpec) -> CopyOperation:
    """Validate a copy (source exists, destination empty) and start it."""
    state, store, namespace = _state(request), _store(request), request.match_info["ns"]
    if spec.is_branch:
        raise BadRequest("a branch is instant: use branch_from_namespace on the write route")
    snapshot = _source_store(request, spec).copy_snapshot(spec.source_namespace)
    store.require_empty(namespace)
    return state.copies.start(
        store,
        namespace,
        snapshot,
        encryption=spec.dest_encryption,
        duration_s=state.copy_duration_ms / 1000,
    )


def _operation_accepted(operation: CopyOperation, *, preference_applied: bool) -> web.Response:
    headers = {"Location": operation.location}
    if preference_applied:
        headers["Preference-Applied"] = "respond-async"
    return web.json_response({"token": operation.token}, status=202, headers=headers)


async def _copy_or_branch(request: web.Request, spec: CopySpec) -> web.Response:
    namespace = request.match_info["ns"]
    if spec.is_branch:
        if _state(request).copies.running_into(_store(request), namespace):
            raise BadRequest(f"a copy into namespace '{namespace}' is already running")
        source = _source_store(request, spec)
        return web.json_response(_store(request).branch(namespace, source, spec.source_namespace))
    operation = _start_copy(request, spec)
    if prefers_async(request) and _state(request).copy_duration_ms > 0:
        return _operation_accepted(operation, preference_applied=True)
    # The preference is a hint: a copy answered synchronously waits for its result.
    await operation.done.wait()
    status, answer = operation.answer()
    if status >= 400:
        return error_response(status, str(answer.get("error")))
    return web.json_response(answer, status=status)


async def start_copy_from(request: web.Request) -> web.Response:
    """`POST /v2/namespaces/{ns}/async`: 202 and a token, without Preference-Applied (the
    SDK would otherwise poll and look for `token` in the copy's result)."""
    spec = copy_spec(await _json_object(request))
    if spec is None or spec.is_branch:
        raise BadRequest("the async route takes copy_from_namespace")
    return _operation_accepted(_start_copy(request, spec), preference_applied=False)


async def get_operation(request: web.Request) -> web.Response:
    namespace, token = request.match_info["ns"], request.match_info["token"]
    operation = _state(request).copies.get(_store(request), namespace, token)
    if operation is None:
        return error_response(404, f"operation '{token}' not found in namespace '{namespace}'")
    return web.json_response(operation.body())


async def delete_namespace(request: web.Request) -> web.Response:
    _store(request).delete(request.match_info["ns"])
    return web.json_response({"status": "OK"})


async def query(request: web.Request) -> web.Response:
    started = time.perf_counter()
    body = await _json_object(request)
    store = _store(request)
    ns = request.match_info["ns"]
    if "queries" in body or request.path.endswith("/multi-query"):
        if "queries" not in body:
            raise BadRequest("a multi-query needs `queries`")
        outcome = store.multi_query(ns, body)
        return web.json_response({"results": outcome.results, **_query_envelope(outcome, started)})
    outcome = store.query(ns, body)
    return web.json_response({**outcome.results[0], **_query_envelope(outcome, started)})


async def explain_query(request: web.Request) -> web.Response:
    body = await _json_object(request)
    outcome = _store(request).query(request.match_info["ns"], body)
    plan = f"emulator: exhaustive scan of {outcome.namespace_size} documents"
    return web.json_response({"plan_text": plan})


async def hint_cache_warm(request: web.Request) -> web.Response:
    _store(request).require(request.match_info["ns"])
    return web.json_response(
        {"status": "ACCEPTED", "message": "cache warm hint accepted"}, status=202
    )


async def get_schema(request: web.Request) -> web.Response:
    return web.json_response(_store(request).schema(request.match_info["ns"]))


async def post_schema(request: web.Request) -> web.Response:
    body = await _json_object(request)
    return web.json_response(_store(request).update_schema(request.match_info["ns"], body))


# --- control handlers --------------------------------------------------------------------


async def control_indexing(request: web.Request) -> web.Response:
    store = _state(request).store
    ns, action = request.match_info["ns"], request.match_info["action"]
    if action == "pause":
        store.pause_indexing(ns)
    elif action == "resume":
        store.resume_indexing(ns)
    else:
        store.force_indexing(ns)
    index = store.index_status(ns) if store.exists(ns) else None
    return web.json_response({"status": "OK", "index": index})


async def control_add_fault(request: web.Request) -> web.Response:
    body = await _json_object(request)
    try:
        rule = FaultRule.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(f"invalid fault rule: {exc}") from None
    return web.json_response({"id": _state(request).faults.add(rule)})


async def control_list_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": _state(request).faults.describe()})


async def control_clear_faults(request: web.Request) -> web.Response:
    _state(request).faults.clear()
    return web.json_response({"status": "OK"})


async def control_remove_fault(request: web.Request) -> web.Response:
    try:
        rule_id = int(request.match_info["id"])
    except ValueError:
        raise BadRequest("fault ids are integers") from None
    if not _state(request).faults.remove(rule_id):
        return error_response(404, f"no fault rule with id {rule_id}")
    return web.json_response({"status": "OK"})


async def control_stats(request: web.Request) -> web.Response:
    return web.json_response(_state(request).stats.snapshot())


async def control_reset_stats(request: web.Request) -> web.Response:
    _state(request).stats.reset()
    return web.json_response({"status": "OK"})


async def control_copy(request: web.Request) -> web.Response:
    body = await _json_object(request)
    duration = body.get("duration_ms")
    if not (isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0):
        raise BadRequest("duration_ms must be an integer >= 0")
    _state(request).copy_duration_ms = duration
    return web.json_response({"status": "OK", "duration_ms": duration})


async def control_reset(request: web.Request) -> web.Response:
    _reset(_state(request))
    return web.json_response({"status": "OK"})


def _reset(state: EmulatorState) -> None:
    for store in {id(store): store for store in state.store_by_key.values()}.values():
        store.namespaces.clear()
        store.paused.clear()
    state.faults.clear()
    state.stats.reset()
    state.copies.clear()
    state.copy_duration_ms = state.initial_copy_duration_ms


# --- application -------------------------------------------------------------------------

_NS = "{ns}"
#: (method, path, route name, handler) of every turbopuffer route.
_TURBOPUFFER_ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("GET", "/v1/namespaces", "list", list_namespaces),
    ("GET", f"/v1/namespaces/{_NS}/metadata", "metadata", get_metadata),
    ("GET", f"/v2/namespaces/{_NS}/metadata", "metadata", get_metadata),
    ("PATCH", f"/v1/namespaces/{_NS}/metadata", "update_metadata", patch_metadata),
    ("POST", f"/v2/namespaces/{_NS}", "write", write),
    ("POST", f"/v2/namespaces/{_NS}/async", "start_copy_from", start_copy_from),
    ("GET", f"/v1/namespaces/{_NS}/operations/{{token}}", "operation", get_operation),
    ("DELETE", f"/v2/namespaces/{_NS}", "delete", delete_namespace),
    ("POST", f"/v2/namespaces/{_NS}/query", "query", query),
    ("POST", f"/v2/namespaces/{_NS}/multi-query", "query", query),
    ("POST", f"/v2/namespaces/{_NS}/explain_query", "explain_query", explain_query),
    ("GET", f"/v1/namespaces/{_NS}/hint_cache_warm", "hint_cache_warm", hint_cache_warm),
    ("GET", f"/v1/namespaces/{_NS}/schema", "schema", get_schema),
    ("POST", f"/v1/namespaces/{_NS}/schema", "update_schema", post_schema),
)


#: turbopuffer's own limit on one write request (REFERENCE §4).
MAX_WRITE_BYTES = 512 * 1024 * 1024


def create_app(state: EmulatorState) -> web.Application:
    """The aiohttp application serving `state` (usable with aiohttp's TestServer)."""
    # turbopuffer takes writes of up to 512 MB; aiohttp's default body limit is 1 MiB.
    app = web.Application(
        middlewares=[_errors, _count, _auth, _faults], client_max_size=MAX_WRITE_BYTES
    )
    app[_STATE] = state
    names: dict[AbstractRoute, str] = {}
    for method, path, name, handler in _TURBOPUFFER_ROUTES:
        names[app.router.add_route(method, path, handler)] = name
    app[_ROUTE_NAMES] = names
    app.router.add_post("/_emulator/indexing/{ns}/{action:pause|resume|force}", control_indexing)
    app.router.add_post("/_emulator/faults", control_add_fault)
    app.router.add_get("/_emulator/faults", control_list_faults)
    app.router.add_delete("/_emulator/faults", control_clear_faults)
    app.router.add_delete("/_emulator/faults/{id}", control_remove_fault)
    app.router.add_get("/_emulator/stats", control_stats)
    app.router.add_post("/_emulator/stats/reset", control_reset_stats)
    app.router.add_post("/_emulator/copy", control_copy)
    app.router.add_post("/_emulator/reset", control_reset)

    async def stop_copies(app: web.Application) -> None:
        await state.copies.close()

    app.on_shutdown.append(stop_copies)
    return app


class Emulator:
    """A turbopuffer emulator on a real socket; `port=0` picks a free port (see `.url`).

    The Python methods mirror the control API, for tests in the same process.
    """

    def __init__(
        self,
        api_keys: Sequence[str] = (DEV_API_KEY,),
        *,
        other_org_keys: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        index_delay_ms: int = 0,
        index_rate_rows_per_s: float | None = None,
        max_top_k: int = DEFAULT_MAX_TOP_K,
        copy_duration_ms: int = 0,
        faults: Iterable[FaultRule] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_keys:
            raise ValueError("the emulator needs at least one API key")
        if index_delay_ms < 0 or (index_rate_rows_per_s is not None and index_rate_rows_per_s <= 0):
            raise ValueError("index_delay_ms must be >= 0 and index_rate_rows_per_s > 0")
        if copy_duration_ms < 0:
            raise ValueError("copy_duration_ms must be >= 0")
        store = Store(
            indexing=IndexingConfig(index_delay_ms, index_rate_rows_per_s),
            max_top_k=max_top_k,
            clock=clock,
        )
        other_org_store = None
        if other_org_keys:
            other_org_store = Store(
                indexing=IndexingConfig(index_delay_ms, index_rate_rows_per_s),
                max_top_k=max_top_k,
                clock=clock,
            )
        self._state = EmulatorState(
            store,
            api_keys,
            other_org_store=other_org_store,
            other_org_keys=other_org_keys,
            copy_duration_ms=copy_duration_ms,
        )
        for rule in faults:
            self._state.faults.add(rule)
        self.app = create_app(self._state)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The base URL to give the SDK (`base_url=`); only valid after `start()`."""
        if self._runner is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return f"http://{self._host}:{self._port}"

    @property
    def store(self) -> Store:
        return self._state.store

    async def start(self) -> None:
        self._state.closing.clear()
        runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving; requests held by `hang` or `latency_ms` faults are released first."""
        self._state.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- indexing --

    def pause_indexing(self, namespace: str) -> None:
        self._state.store.pause_indexing(namespace)

    def resume_indexing(self, namespace: str) -> None:
        self._state.store.resume_indexing(namespace)

    def force_indexing(self, namespace: str) -> None:
        """Drain the namespace's WAL now (even when paused)."""
        self._state.store.force_indexing(namespace)

    # -- copies --

    def set_copy_duration(self, duration_ms: int) -> None:
        """How long copies started from now on take (`POST /_emulator/copy`)."""
        if duration_ms < 0:
            raise ValueError("duration_ms must be >= 0")
        self._state.copy_duration_ms = duration_ms

    # -- faults --

    def add_fault(self, rule: FaultRule) -> int:
        return self._state.faults.add(rule)

    def remove_fault(self, rule_id: int) -> bool:
        return self._state.faults.remove(rule_id)

    def clear_faults(self) -> None:
        self._state.faults.clear()

    # -- counters --

    def request_count(self, route: str | None = None, namespace: str | None = None) -> int:
        """Requests received on `route` (all routes when None), optionally for one namespace."""
        return self._state.stats.count(route, namespace)

    def stats(self) -> dict[str, object]:
        return self._state.stats.snapshot()

    def reset_stats(self) -> None:
        self._state.stats.reset()

    def reset(self) -> None:
        """Forget every namespace, pause, fault rule and counter."""
        _reset(self._state)
