"""`GET /v2/namespaces`: the enriched namespace listing, and `POST …/{namespace}/warm`.

The listing pages upstream's namespace list (`prefix`, `cursor`, `page_size` 1-1000,
default 100; anything else is a 400, never a silent clamp; one upstream call per page) and
enriches each row with the same `layer` block `/metadata` shows. A namespace Layer tracks
whose latest observation is not older than its latest known write is shown from the state
(no upstream call: the event-driven state already knows nothing changed); the others
(untracked, never observed, written since) are fetched with the caller's key,
`LAYER_LIST_METADATA_CONCURRENCY` in flight, and registered. Rows of partitions another
worker owns come from that worker, one request per owner (`/_layer/rows`). A row whose
metadata call fails keeps its place with a short `metadata_error` (a state row shows the
last poll's error while polls fail): the list stays complete. Answers are cached for
`NAMESPACE_LIST_CACHE_TTL_MS`, keyed by the query *and the caller's credential*, so one key
never sees a list fetched with another. With `Prefer: respond-async` an uncached listing
runs as an operation (202 + Location); a cached one is answered at once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web as aiohttp_web
from cachetools import TTLCache
from faust import web

from api.auth import Credential, credential_of
from api.errors import ApiError
from api.http import model_response, query_int
from api.metadata import local_block, observe_namespace, read_evidence
from api.models import (
    LayerBlock,
    NamespaceListing,
    NamespaceRow,
    RowsRequest,
    RowsResponse,
    WarmAccepted,
)
from api.operations import accepted_response, prefers_async
from api.replica import not_ready, owner_url, post_to_owner
from api.shapes import layer_block, listing_row, state_row
from layer.app import app, settings
from layer.errors import LayerError
from layer.events import NAMESPACE_PATTERN, Registration
from layer.upstream import MAX_ERROR_CHARS, validate_namespace
from tables.faust_tables import freshness_table
from tables.freshness import Freshness, ReadEvidence

__all__ = ["ListingState", "NamespaceList", "WarmNamespace"]

#: turbopuffer's list page limits (REFERENCE §4).
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
#: A cursor is opaque, but not unbounded: it goes into an upstream URL. Printable ASCII
#: only (upstream's cursors are), so even percent-encoded it fits a request line.
MAX_CURSOR_CHARS = 2048
CURSOR_PATTERN = r"^[!-~]*$"
_cursor_re = re.compile(CURSOR_PATTERN)
#: `prefix`: what a namespace name may hold, 0-128 of it (the OpenAPI document declares it).
PREFIX_PATTERN = NAMESPACE_PATTERN.replace("{1,128}", "{0,128}")
_prefix_re = re.compile(PREFIX_PATTERN)

#: Where a worker asks another for the rows of namespaces it owns (one request per owner).
ROWS_PATH = "/_layer/rows"


@dataclass(frozen=True, slots=True)
class ListingQuery:
    prefix: str
    cursor: str
    page_size: int

    @classmethod
    def from_request(cls, request: aiohttp_web.Request) -> ListingQuery:
        prefix = request.query.get("prefix", "")
        if not _prefix_re.fullmatch(prefix):
            raise ApiError(400, "query parameter prefix may only hold A-Z, a-z, 0-9, '-', '_', '.'")
        cursor = request.query.get("cursor", "")
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ApiError(400, "query parameter cursor is too long")
        if not _cursor_re.fullmatch(cursor):
            raise ApiError(400, "query parameter cursor may only hold printable ASCII characters")
        page_size = query_int(
            request, "page_size", default=DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE
        )
        assert page_size is not None
        return cls(prefix=prefix, cursor=cursor, page_size=page_size)

    def upstream_params(self) -> dict[str, str]:
        params = {"page_size": str(self.page_size)}
        if self.prefix:
            params["prefix"] = self.prefix
        if self.cursor:
            params["cursor"] = self.cursor
        return params


#: Encoded answers kept at most (the least recently stored go first).
LISTING_CACHE_ENTRIES = 1024


class ListingState:
    """What the listing keeps between requests: encoded pages, and the warms in flight."""

    def __init__(self, cache_ttl_ms: int) -> None:
        #: A cache hit is served without re-encoding a page of up to 1000 rows. Keyed by the
        #: caller's credential digest and the query; None when the TTL is 0 (off).
        self.pages: TTLCache[tuple[str, ListingQuery], bytes] | None = (
            TTLCache(maxsize=LISTING_CACHE_ENTRIES, ttl=cache_ttl_ms / 1000)
            if cache_ttl_ms > 0
            else None
        )
        #: Namespaces this worker is warming right now (the `warm_inflight` of their rows).
        self.warming: set[str] = set()


def _short(exc: Exception) -> str:
    """A row's metadata error: one line, bounded, never an upstream body."""
    return str(exc).splitlines()[0][:MAX_ERROR_CHARS] if str(exc) else type(exc).__name__


def _observed_since_last_write(state: Freshness | None, namespace: str) -> bool:
    """True if upstream's latest answer about `namespace` is as new as anything Layer knows:
    observed at least once, no write known after that observation started, and no write of
    this worker's still on its way to Kafka. Its row then needs no upstream call."""
    return (
        state is not None
        and state.last_observed_ms is not None
        and (state.last_write_ms is None or state.last_write_ms <= state.last_observed_ms)
        and not app.services.notifications.has_pending(namespace)
    )


async def rows_here(
    names: list[str], credential: Credential, slots: asyncio.Semaphore
) -> list[NamespaceRow]:
    """Rows of namespaces whose partitions this worker answers for (the caller checked).

    A tracked namespace whose latest observation is not older than its latest write is shown
    from the state (row count, size and `index` as of that observation; freshness as the
    metadata route shows it) with no upstream call, once the caller is known to see the
    watched namespace; the others are fetched with the caller's key (and registered).
    """

    services = app.services
    warming = services.listing.warming
    registrations: list[Registration] = []

    async def one(name: str) -> NamespaceRow:
        state = freshness_table.get(name)
        if _observed_since_last_write(state, name) and services.access.known_same(credential, name):
            assert state is not None
            return state_row(name, state, local_block(name), warm_inflight=name in warming)
        async with slots:
            try:
                body, block = await observe_namespace(name, credential, registrations=registrations)
            except (LayerError, ValueError, KeyError) as exc:
                if isinstance(exc, ApiError) and exc.status == 503:
                    raise
                return _failed_row(name, True, credential, exc)
        return listing_row(name, body, block, warm_inflight=name in warming)

    try:
        return list(await asyncio.gather(*(one(name) for name in names)))
    finally:
        services.read_events.send_registrations(registrations)


async def _rows_of_owner(owner: str, names: list[str], authorization: str) -> list[NamespaceRow]:
    """The owner's rows for `names`, in one request; this worker's evidence applied."""
    answer = await post_to_owner(owner, ROWS_PATH, {"names": names}, authorization)
    rows = [NamespaceRow.model_validate(row) for row in answer["rows"]]
    return [_with_local_evidence(row) for row in rows]


def _with_local_evidence(row: NamespaceRow) -> NamespaceRow:
    """An owner's row, with this worker's pending notifications (the owner cannot know)."""
    evidence = read_evidence(row.name)
    if row.is_stable is None or evidence == ReadEvidence() or not row.is_stable:
        return row
    return row.model_copy(update={"is_stable": False})


def _failed_row(name: str, local: bool, credential: Credential, exc: Exception) -> NamespaceRow:
    """A row whose metadata call failed: freshness from this worker's table if it owns the
    namespace and the caller is known to see the watched organisation; none otherwise (the
    owner's answer was the error, or nothing says the caller's namespace is the watched one)."""
    block: LayerBlock | None = None
    services = app.services
    if services.access.trusted(credential):
        block = local_block(name) if local else layer_block(None, "unknown")
    warm_inflight = name in services.listing.warming
    return listing_row(name, None, block, warm_inflight=warm_inflight, metadata_error=_short(exc))


def _route_rows(names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Which rows this worker answers, and which each other owner does (one request each).

    A namespace whose partition has no ready owner makes the page a 503 (`not_ready`): a row
    with a missing or older watermark would contradict what the owner said a moment ago.
    """
    here: list[str] = []
    by_owner: dict[str, list[str]] = {}
    readiness = app.services.readiness
    for name in names:
        if readiness.answers(name):
            here.append(name)
        elif (owner := owner_url(name)) is not None:
            by_owner.setdefault(owner, []).append(name)
        else:
            raise not_ready(f"freshness of {name}", "its partition has no ready owner yet")
    return here, by_owner


async def fetch_page(query: ListingQuery, credential: Credential) -> dict[str, Any]:
    """One page of upstream's namespace list, fetched with the caller's key."""
    page, _ = await app.services.upstream.get_json(
        "/v1/namespaces", api_key=credential.upstream_key, params=query.upstream_params()
    )
    if not isinstance(page, dict) or not isinstance(page.get("namespaces"), list):
        raise ApiError(502, "upstream namespace list has an unexpected shape")
    return page


async def build_listing(
    query: ListingQuery,
    credential: Credential,
    authorization: str,
    page: dict[str, Any] | None = None,
) -> NamespaceListing:
    """Enrich every row of one upstream page (fetched here unless given), cache the answer."""
    if page is None:
        page = await fetch_page(query, credential)
    names = [str(row["id"]) for row in page["namespaces"] if isinstance(row, dict) and "id" in row]
    here, by_owner = _route_rows(names)
    slots = asyncio.Semaphore(settings.namespace_list_concurrency)
    parts = await asyncio.gather(
        rows_here(here, credential, slots),
        *(_rows_of_owner(owner, owned, authorization) for owner, owned in by_owner.items()),
    )
    found = {row.name: row for part in parts for row in part}
    next_cursor = page.get("next_cursor")
    listing = NamespaceListing(
        namespaces=[found[name] for name in names],
        next_cursor=next_cursor if isinstance(next_cursor, str) else None,
    )
    if (pages := app.services.listing.pages) is not None:
        pages[(credential.identity, query)] = listing.model_dump_json().encode()
    return listing


@app.page("/v2/namespaces")
class NamespaceList(web.View):
    """The dashboard's inventory: upstream's list, each row with freshness and cache signals."""

    async def get(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
        query = ListingQuery.from_request(request)
        credential = credential_of(request)
        pages = app.services.listing.pages
        cached = None if pages is None else pages.get((credential.identity, query))
        if cached is not None:
            return aiohttp_web.Response(body=cached, content_type="application/json")
        authorization = request.headers.get("Authorization", "")
        if prefers_async(request):
            # The page itself is fetched before the 202, so upstream judges the key (and the
            # cursor) now: a refused key is a 401 here, never an accepted operation that fails.
            # The per-row enrichment, the slow part, runs in the background.
            page = await fetch_page(query, credential)
            operation = app.services.operations.start(
                lambda: build_listing(query, credential, authorization, page), credential.identity
            )
            return accepted_response(operation)
        return model_response(await build_listing(query, credential, authorization))


@app.page("/v2/namespaces/{namespace}/warm")
class WarmNamespace(web.View):
    """Ask upstream to warm the namespace's cache (`hint_cache_warm`)."""

    async def post(self, request: aiohttp_web.Request, namespace: str) -> aiohttp_web.Response:
        validate_namespace(namespace)
        services = app.services
        services.listing.warming.add(namespace)
        try:
            body, _ = await services.upstream.get_json(
                f"/v1/namespaces/{namespace}/hint_cache_warm",
                api_key=credential_of(request).upstream_key,
            )
        finally:
            services.listing.warming.discard(namespace)
        services.read_events.record_cache_activity(namespace)
        message = body.get("message") if isinstance(body, dict) else None
        return model_response(
            WarmAccepted(message=str(message or "cache warm hint accepted")), status=202
        )


@app.page(ROWS_PATH)
class ListingRows(web.View):
    """Listing rows of namespaces this worker owns, for another worker's listing page.

    Authenticated like every route, with the caller's credential (the rows are what the
    listing would show that caller). A name this worker cannot answer for makes it a 503:
    the asking worker then answers 503 too, never a row from unready state.
    """

    async def post(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
        try:
            asked = RowsRequest.model_validate_json(await request.read())
        except ValueError as exc:
            raise ApiError(400, f"invalid rows request: {_short(exc)}") from None
        for name in asked.names:
            validate_namespace(name)
            if not app.services.readiness.answers(name):
                raise not_ready(f"freshness of {name}", "its partition moved or is recovering")
        slots = asyncio.Semaphore(settings.namespace_list_concurrency)
        rows = await rows_here(asked.names, credential_of(request), slots)
        return model_response(RowsResponse(rows=rows))
