"""`GET /dashboard`: the operator's page, served by every worker from the package itself.

The page is vanilla HTML, CSS and JavaScript in `api/dashboard_static/` (no CDN, nothing
fetched at run time). It needs no key: it asks for one, keeps it in the tab's
`sessionStorage`, and reads Layer's public HTTP API with it like any client (the listing,
metadata, snapshots, and `/v2/stability/events` for live rows).

Caching: the page says `no-cache` (revalidated with its ETag, so a new release shows at
once); it names its assets with their content hash (`?v=`), and an asset fetched with the
current hash is cached for a year (`immutable`), with any other `v` for five minutes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web as aiohttp_web
from faust import web

from api.dashboard_static import ASSET_PREFIX, ASSET_TYPES
from api.errors import ApiError
from layer.app import app

__all__ = ["Asset", "DashboardAsset", "DashboardPage", "load_assets", "render_page"]

#: The content security policy of the page: its own origin only, no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
REVALIDATE = "no-cache"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    #: First 16 hex digits of the body's SHA-256: the `?v=` of its URL, and its ETag.
    version: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])


def load_assets() -> dict[str, Asset]:
    """Every asset of the package, read once."""
    files = resources.files("api.dashboard_static")
    return {
        name: _asset(files.joinpath(name).read_bytes(), kind) for name, kind in ASSET_TYPES.items()
    }


def render_page(template: str, assets: dict[str, Asset]) -> Asset:
    """The page, every `{{name}}` of the template replaced by that asset's versioned URL."""
    page = template
    for name, asset in assets.items():
        page = page.replace("{{" + name + "}}", f"{ASSET_PREFIX}{name}?v={asset.version}")
    if "{{" in page:
        raise ValueError("the dashboard template names an asset that does not exist")
    return _asset(page.encode(), "text/html; charset=utf-8")


ASSETS = load_assets()
PAGE = render_page(
    resources.files("api.dashboard_static").joinpath("index.html").read_text(), ASSETS
)


def _answer(
    request: aiohttp_web.Request, asset: Asset, cache_control: str, extra: dict[str, str]
) -> aiohttp_web.Response:
    headers = {
        "Cache-Control": cache_control,
        "ETag": asset.etag,
        "X-Content-Type-Options": "nosniff",
        **extra,
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return aiohttp_web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return aiohttp_web.Response(body=asset.body, headers=headers)


@app.page("/dashboard")
class DashboardPage(web.View):
    """The page (no key needed: it holds no data)."""

    async def get(self, request: aiohttp_web.Request) -> aiohttp_web.Response:
        return _answer(
            request,
            PAGE,
            REVALIDATE,
            {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Referrer-Policy": "no-referrer"},
        )


@app.page("/dashboard/")
class DashboardPageSlash(DashboardPage):
    """The same page at `/dashboard/`."""


@app.page(ASSET_PREFIX + "{name}")
class DashboardAsset(web.View):
    """A script, style sheet or icon of the page."""

    async def get(self, request: aiohttp_web.Request, name: str) -> aiohttp_web.Response:
        asset = ASSETS.get(name)
        if asset is None:
            raise ApiError(404, f"no dashboard asset {name}")
        fresh = request.query.get("v") == asset.version
        return _answer(request, asset, IMMUTABLE if fresh else SHORT, {})
