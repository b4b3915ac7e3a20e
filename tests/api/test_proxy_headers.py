"""Pure pieces of the proxy: hop-by-hop headers and same-origin Locations."""

from __future__ import annotations

import pytest

from api.proxy import HOP_BY_HOP, LAYER_OWNED_PATHS, _same_origin
from layer.app import settings


def test_connection_specific_headers_are_never_forwarded() -> None:
    assert {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "host"} <= HOP_BY_HOP
    assert "authorization" not in HOP_BY_HOP and "prefer" not in HOP_BY_HOP


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/v1/namespaces/a/operations/t", "/v1/namespaces/a/operations/t"),
        ("{upstream}/v1/namespaces/a/operations/t", "/v1/namespaces/a/operations/t"),
        ("https://elsewhere.example/v1/x", "https://elsewhere.example/v1/x"),
    ],
)
def test_an_upstream_location_becomes_a_path_on_layers_own_origin(
    location: str, expected: str
) -> None:
    assert _same_origin(location.format(upstream=settings.upstream_url)) == expected


@pytest.mark.parametrize(
    ("path", "owned"),
    [
        ("/v2/namespaces/a/snapshots", True),
        ("/v2/operations/abc", True),
        ("/openapi.json", True),
        ("/v2/namespaces/a/query", False),
        ("/v2/namespaces/a", False),
        ("/v1/namespaces/a/schema", False),
    ],
)
def test_layers_own_paths_are_never_proxied(path: str, owned: bool) -> None:
    assert bool(LAYER_OWNED_PATHS.match(path)) is owned
