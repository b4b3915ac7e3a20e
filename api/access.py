"""Layer's own data needs a key upstream accepts (DESIGN.md, "Answering truthfully", rule 5).

In pass-through mode (no `LAYER_API_KEYS`) the caller's key is a turbopuffer key and
upstream is the judge of what it may see. Routes that call upstream with it are judged
there; routes served from Layer's own state (snapshots, and anything like them) would be
judged by nobody, so before serving them Layer asks upstream whether the key may read that
namespace: one metadata call with the caller's key, the cheapest call that names it.
Verdicts are kept per (key digest, namespace) — acceptance for `LAYER_ACCESS_ALLOW_TTL_MS`,
refusal for `LAYER_ACCESS_DENY_TTL_MS` — in cachetools' bounded TTL maps; keys themselves
are never kept or logged. With `LAYER_API_KEYS`, Layer's own keys are the check (api/auth.py).

`/metrics` holds no tenant data but is an operator's route: it takes the key the watcher
polls with (`TURBOPUFFER_API_KEY`) or, with `LAYER_API_KEYS`, one of those.
"""

from __future__ import annotations

import hmac

from cachetools import TTLCache

from api.auth import Credential
from api.errors import ApiError
from layer.app import settings
from layer.services import upstream
from layer.settings import Settings
from layer.upstream import Upstream, UpstreamStatusError

__all__ = ["NamespaceAccess", "namespace_access", "require_operator"]

#: Verdicts kept at most per kind; the oldest go first.
MAX_VERDICTS = 100_000
#: Upstream's answers that are a verdict on the key (anything else is upstream trouble).
REFUSALS = frozenset({401, 403, 404})


class NamespaceAccess:
    """Asks upstream (and remembers briefly) whether a key may read a namespace."""

    def __init__(self, client: Upstream, config: Settings) -> None:
        self._upstream = client
        self._enabled = not config.layer_api_keys
        self._allowed: TTLCache[tuple[str, str], bool] | None = _verdicts(
            config.access_allow_ttl_ms
        )
        self._refused: TTLCache[tuple[str, str], ApiError] | None = _verdicts(
            config.access_deny_ttl_ms
        )

    async def require(self, credential: Credential, namespace: str) -> None:
        """Return if the caller's key may read `namespace`; raise 401/403/404 otherwise."""
        if not self._enabled:
            return
        verdict_key = (credential.identity, namespace)
        if self._allowed is not None and verdict_key in self._allowed:
            return
        if self._refused is not None and (refusal := self._refused.get(verdict_key)):
            raise refusal
        try:
            await self._upstream.get_json(
                f"/v2/namespaces/{namespace}/metadata", api_key=credential.upstream_key
            )
        except UpstreamStatusError as exc:
            if exc.status_code not in REFUSALS:
                raise  # upstream trouble (5xx, 429): no verdict, the caller sees it as such
            refusal = ApiError(exc.status_code, _refusal_message(exc.status_code, namespace))
            if self._refused is not None:
                self._refused[verdict_key] = refusal
            raise refusal from None
        if self._allowed is not None:
            self._allowed[verdict_key] = True


def _verdicts(ttl_ms: int) -> TTLCache | None:  # type: ignore[type-arg]
    return TTLCache(maxsize=MAX_VERDICTS, ttl=ttl_ms / 1000) if ttl_ms > 0 else None


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


namespace_access = NamespaceAccess(upstream, settings)
