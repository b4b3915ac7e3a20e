"""Layer's own data only for keys that may see it (DESIGN.md, "Answering truthfully", rule 5).

In pass-through mode (no `LAYER_API_KEYS`) the caller's key is a turbopuffer key and
upstream is the judge of what it may see. Two questions follow, both answered here:

1. **May this key read namespace N at all?** Routes that call upstream with the key are
   judged there; routes served from Layer's own state (snapshots, and anything like them)
   would be judged by nobody, so Layer asks upstream: one metadata call with the caller's
   key, the cheapest call that names N. 401/403/404 from upstream are the answer.
2. **Is the N this key sees the N Layer watches?** Namespace names are per organisation, and
   Layer watches one (the organisation of `TURBOPUFFER_API_KEY`). A key of another
   organisation may have its own N; it must get none of the watched N's Layer data (the
   `layer` block, listing fields, snapshots): one Layer deployment serves one organisation.
   The check compares N's `created_at` as answered to the caller (from the upstream call the
   request makes anyway) with the watched N's (from the freshness state, or, when the state
   does not have it or disagrees, one metadata call with the watcher's key). Equal: the same
   namespace. The watcher's own key, and every caller with `LAYER_API_KEYS` (Layer calls
   upstream with the watcher's key then), skip it.

Verdicts are kept per (key digest, namespace) — positive ones for
`LAYER_ACCESS_ALLOW_TTL_MS`, refusals and "another organisation" for
`LAYER_ACCESS_DENY_TTL_MS` — in cachetools' bounded TTL maps; keys themselves are never kept
or logged. The added cost: for a key other than the watcher's, the first read of a namespace
within the TTL may cost one more upstream metadata call (with the watcher's key), and only if
the state does not already hold the watched namespace's `created_at`.

`/metrics` holds no tenant data but is an operator's route: it takes the key the watcher
polls with (`TURBOPUFFER_API_KEY`) or, with `LAYER_API_KEYS`, one of those.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache

from api.auth import Credential
from api.errors import ApiError
from layer.errors import LayerError
from layer.readiness import Readiness
from layer.settings import Settings
from layer.upstream import Upstream, UpstreamStatusError
from tables.faust_tables import freshness_table

__all__ = ["NamespaceAccess", "require_operator"]

#: Verdicts kept at most per kind; the oldest go first.
MAX_VERDICTS = 100_000
#: Upstream's answers that are a verdict on the key (anything else is upstream trouble).
REFUSALS = frozenset({401, 403, 404})


class NamespaceAccess:
    """Asks upstream (and remembers briefly) what a key may see of a namespace."""

    def __init__(
        self,
        client: Upstream,
        config: Settings,
        *,
        readiness: Readiness,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = client
        self._readiness = readiness
        self._enabled = not config.layer_api_keys
        watcher_key = config.turbopuffer_api_key
        self._watcher_key = watcher_key.get_secret_value() if watcher_key is not None else None
        allow_ms, deny_ms = config.access_allow_ttl_ms, config.access_deny_ttl_ms
        # "May read N" verdicts (snapshots) and "sees the watched N" verdicts (every route).
        self._allowed: TTLCache[tuple[str, str], bool] | None = _verdicts(allow_ms, clock)
        self._refused: TTLCache[tuple[str, str], ApiError] | None = _verdicts(deny_ms, clock)
        self._same: TTLCache[tuple[str, str], bool] | None = _verdicts(allow_ms, clock)
        self._foreign: TTLCache[tuple[str, str], bool] | None = _verdicts(deny_ms, clock)

    def trusted(self, credential: Credential) -> bool:
        """True if this caller's upstream calls are the watcher's own (nothing to check)."""
        return not self._enabled or (
            self._watcher_key is not None
            and hmac.compare_digest(credential.upstream_key, self._watcher_key)
        )

    async def require(self, credential: Credential, namespace: str) -> None:
        """Return if the caller may read Layer's data of `namespace`; raise 401/403/404."""
        if self.trusted(credential):
            return
        verdict_key = (credential.identity, namespace)
        if self._allowed is not None and verdict_key in self._allowed:
            return
        if self._refused is not None and (refusal := self._refused.get(verdict_key)):
            raise refusal
        try:
            body, _ = await self._upstream.get_json(
                f"/v2/namespaces/{namespace}/metadata", api_key=credential.upstream_key
            )
        except UpstreamStatusError as exc:
            if exc.status_code not in REFUSALS:
                raise  # upstream trouble (5xx, 429): no verdict, the caller sees it as such
            refusal = ApiError(exc.status_code, _refusal_message(exc.status_code, namespace))
            self._remember(self._refused, verdict_key, refusal)
            raise refusal from None
        if not await self.sees_watched(credential, namespace, _created_at(body)):
            refusal = ApiError(403, _FOREIGN.format(namespace=namespace))
            self._remember(self._refused, verdict_key, refusal)
            raise refusal
        self._remember(self._allowed, verdict_key, True)

    async def sees_watched(
        self, credential: Credential, namespace: str, caller_created_at: str | None
    ) -> bool:
        """Whether the `namespace` the caller sees (created at `caller_created_at`, as upstream
        answered the caller) is the one Layer watches."""
        if (known := self._known_verdict(credential, namespace)) is not None:
            return known
        same = caller_created_at is not None and caller_created_at == self._state_created_at(
            namespace
        )
        if caller_created_at is not None and not same:
            # The state may not know the namespace yet, or it was deleted and recreated since
            # the last poll: ask with the watcher's key before saying "another organisation".
            same = caller_created_at == await self._watched_created_at(namespace)
        verdicts = self._same if same else self._foreign
        self._remember(verdicts, (credential.identity, namespace), True)
        return same

    async def caller_sees_watched(self, credential: Credential, namespace: str) -> bool:
        """`sees_watched` for a request that fetched no metadata itself (a query): the
        caller's view is asked for once per verdict TTL. No answer: not the watched one."""
        if (known := self._known_verdict(credential, namespace)) is not None:
            return known
        try:
            body, _ = await self._upstream.get_json(
                f"/v2/namespaces/{namespace}/metadata", api_key=credential.upstream_key
            )
        except LayerError:
            return False
        return await self.sees_watched(credential, namespace, _created_at(body))

    def known_same(self, credential: Credential, namespace: str) -> bool:
        """True if the caller is known (trusted, or a remembered verdict) to see the watched
        namespace: Layer's state may then answer for it without an upstream call."""
        return self._known_verdict(credential, namespace) is True

    def _known_verdict(self, credential: Credential, namespace: str) -> bool | None:
        """Trusted, or a remembered "same"/"another organisation"; None: not known yet."""
        if self.trusted(credential):
            return True
        verdict_key = (credential.identity, namespace)
        if self._same is not None and verdict_key in self._same:
            return True
        if self._foreign is not None and verdict_key in self._foreign:
            return False
        return None

    def _state_created_at(self, namespace: str) -> str | None:
        """The watched namespace's `created_at` from this worker's table, if it answers for it."""
        if not self._readiness.answers(namespace):
            return None
        state = freshness_table.get(namespace)
        return state.created_at if state is not None else None

    async def _watched_created_at(self, namespace: str) -> str | None:
        """The watched namespace's `created_at`, asked with the watcher's key (None: it has no
        such namespace)."""
        if self._watcher_key is None:
            return None
        try:
            body, _ = await self._upstream.get_json(
                f"/v2/namespaces/{namespace}/metadata", api_key=self._watcher_key
            )
        except UpstreamStatusError as exc:
            if exc.status_code == 404:
                return None
            raise
        return _created_at(body)

    @staticmethod
    def _remember(
        verdicts: TTLCache[tuple[str, str], Any] | None, key: tuple[str, str], value: Any
    ) -> None:
        if verdicts is not None:
            verdicts[key] = value


#: Why another organisation's key gets none of Layer's data for a namespace of the same name.
_FOREIGN = (
    "namespace {namespace} of this API key's organisation is not the one this Layer deployment "
    "watches: Layer serves its own data to keys of the watched organisation only"
)


def _created_at(body: Any) -> str | None:
    value = body.get("created_at") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def _verdicts(ttl_ms: int, clock: Callable[[], float]) -> TTLCache | None:  # type: ignore[type-arg]
    if ttl_ms <= 0:
        return None
    return TTLCache(maxsize=MAX_VERDICTS, ttl=ttl_ms / 1000, timer=clock)


def _refusal_message(status: int, namespace: str) -> str:
    if status == 404:
        return f"namespace {namespace} not found"
    if status == 401:
        return "invalid API key"
    return f"this API key may not read namespace {namespace}"


def require_operator(credential: Credential, config: Settings) -> None:
    """`/metrics`: with `LAYER_API_KEYS` any of them (checked already); in pass-through mode
    only the watcher's own key, `TURBOPUFFER_API_KEY`. 403 for any other key."""
    if config.layer_api_keys:
        return
    watcher_key = config.turbopuffer_api_key
    if watcher_key is None or not hmac.compare_digest(
        credential.upstream_key, watcher_key.get_secret_value()
    ):
        raise ApiError(403, "metrics need the operator's key (TURBOPUFFER_API_KEY)")
