"""Authentication: every route but the probes needs `Authorization: Bearer <key>`.

Two modes (`LAYER_API_KEYS`):
- unset (default): the caller's key *is* the turbopuffer key; it is used for the upstream
  calls of that request, so turbopuffer decides what the caller may see;
- set: callers present one of Layer's keys, and Layer calls upstream with its own
  `TURBOPUFFER_API_KEY`.
Keys are never logged or echoed; caches and rate limits see only `Credential.identity`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from api.dashboard_static import PUBLIC_PATHS as DASHBOARD_PATHS
from api.errors import ApiError
from layer.settings import Settings

__all__ = ["PUBLIC_PATHS", "Credential", "Credentials", "authenticate", "credential_of"]

#: Probes answer without a key (load balancers and supervisors have none), and so do the
#: dashboard's page and assets (they hold no data: the page asks for a key and calls the API).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"}) | DASHBOARD_PATHS


@dataclass(frozen=True, slots=True)
class Credential:
    """Who is calling, as far as Layer needs to know."""

    #: The key upstream calls made for this request use.
    upstream_key: str
    #: A one-way digest of the caller's key: safe to use in cache keys and logs.
    identity: str

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"Credential(identity={self.identity[:12]}…)"


_CREDENTIAL = web.RequestKey("layer.credential", Credential)


@functools.lru_cache(maxsize=4096)
def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def authenticate(authorization: str | None, settings: Settings) -> Credential:
    """The credential of an `Authorization` header value, or a 401 ApiError."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401, "missing or malformed Authorization header: expected 'Bearer <API key>'"
        )
    own_keys = settings.layer_api_keys
    if not own_keys:
        return Credential(upstream_key=token, identity=_digest(token))
    if not any(hmac.compare_digest(token, key) for key in own_keys):
        raise ApiError(401, "invalid API key")
    assert settings.turbopuffer_api_key is not None  # enforced by Settings
    return Credential(
        upstream_key=settings.turbopuffer_api_key.get_secret_value(), identity=_digest(token)
    )


def credential_of(request: web.Request) -> Credential:
    """The credential the middleware attached to `request`."""
    credential: Credential = request[_CREDENTIAL]
    return credential


#: Credentials remembered per `Authorization` value at most (as many as `_digest` keeps).
MAX_KNOWN_CREDENTIALS = 4096


class Credentials:
    """The credential of each request (api/middleware.py asks it for every route but the
    probes). `authenticate` is a pure function of the header value: its answer is
    remembered (a refusal is not), so a repeated caller costs one dict lookup."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._known: dict[str, Credential] = {}

    def attach(self, request: web.Request) -> Credential:
        """Authenticate `request` (a 401 ApiError if it cannot be) and attach its credential."""
        authorization = request.headers.get("Authorization", "")
        credential = self._known.get(authorization)
        if credential is None:
            credential = authenticate(authorization, self._settings)  # raises 401 if bad
            if len(self._known) >= MAX_KNOWN_CREDENTIALS:
                self._known.clear()
            self._known[authorization] = credential
        request[_CREDENTIAL] = credential
        return credential
