"""The dashboard's page and assets, shipped inside the package: no CDN, nothing fetched.

Only names live here (no imports), so `api.auth` can declare the page public without
importing the views: the page and its assets hold no data and need no key; everything the
page shows comes from Layer's authenticated API, called with the key the user types in.
"""

from __future__ import annotations

__all__ = ["ASSET_PREFIX", "ASSET_TYPES", "PAGE_PATHS", "PUBLIC_PATHS"]

#: The page (the detail view is a hash route of it: `/dashboard#/namespaces/{name}`).
PAGE_PATHS = ("/dashboard", "/dashboard/")
#: Where the assets are served.
ASSET_PREFIX = "/dashboard/static/"
#: Every asset, with its media type.
ASSET_TYPES = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
#: Paths that answer without a key.
PUBLIC_PATHS = frozenset({*PAGE_PATHS, *(ASSET_PREFIX + name for name in ASSET_TYPES)})
