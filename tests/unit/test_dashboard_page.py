"""The dashboard's page and assets (api/dashboard.py): shipped in the package, public, cached."""

from __future__ import annotations

import re

import pytest
from aiohttp.test_utils import make_mocked_request

from api.auth import PUBLIC_PATHS
from api.dashboard import (
    ASSETS,
    IMMUTABLE,
    PAGE,
    REVALIDATE,
    SHORT,
    DashboardAsset,
    DashboardPage,
    render_page,
)
from api.dashboard_static import ASSET_PREFIX, ASSET_TYPES
from api.errors import ApiError
from layer.app import app


def test_every_asset_ships_in_the_package_and_is_named_by_its_content() -> None:
    assert set(ASSETS) == set(ASSET_TYPES)
    for name, asset in ASSETS.items():
        assert asset.body, name
        assert asset.content_type == ASSET_TYPES[name]
        assert re.fullmatch(r"[0-9a-f]{16}", asset.version)


def test_the_page_links_each_asset_with_its_version_and_nothing_from_elsewhere() -> None:
    page = PAGE.body.decode()
    for name, asset in ASSETS.items():
        assert f'"{ASSET_PREFIX}{name}?v={asset.version}"' in page
    assert "{{" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "no CDN, no other origin"
    assert 'name="api_key"' in page and 'name="prefix"' in page


def test_a_template_naming_a_missing_asset_is_refused() -> None:
    with pytest.raises(ValueError):
        render_page("<script src='{{nope.js}}'></script>", ASSETS)


def test_the_page_and_its_assets_need_no_key_but_nothing_else_of_the_dashboard() -> None:
    assert {"/dashboard", "/dashboard/"} <= PUBLIC_PATHS
    assert {ASSET_PREFIX + name for name in ASSET_TYPES} <= PUBLIC_PATHS
    assert "/v2/stability/events" not in PUBLIC_PATHS
    assert ASSET_PREFIX + "other.js" not in PUBLIC_PATHS


async def test_the_page_revalidates_and_sends_a_strict_content_security_policy() -> None:
    response = await DashboardPage(app, app.web).get(make_mocked_request("GET", "/dashboard"))
    assert response.status == 200 and response.headers["Cache-Control"] == REVALIDATE
    assert response.content_type == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    again = await DashboardPage(app, app.web).get(
        make_mocked_request("GET", "/dashboard", headers={"If-None-Match": PAGE.etag})
    )
    assert again.status == 304 and again.body is None


@pytest.mark.parametrize(
    ("query", "cache_control"), [(f"?v={ASSETS['dashboard.js'].version}", IMMUTABLE), ("", SHORT)]
)
async def test_an_asset_of_this_release_is_cached_for_good_any_other_briefly(
    query: str, cache_control: str
) -> None:
    request = make_mocked_request("GET", f"{ASSET_PREFIX}dashboard.js{query}")
    response = await DashboardAsset(app, app.web).get(request, "dashboard.js")
    assert response.headers["Cache-Control"] == cache_control
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert response.headers["ETag"] == ASSETS["dashboard.js"].etag


async def test_an_unknown_asset_is_a_404() -> None:
    with pytest.raises(ApiError) as missing:
        await DashboardAsset(app, app.web).get(
            make_mocked_request("GET", f"{ASSET_PREFIX}x.js"), "x.js"
        )
    assert missing.value.status == 404
