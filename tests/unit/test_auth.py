"""`api.auth.authenticate`: the two modes, malformed headers, and keys never shown."""

from __future__ import annotations

import pytest

from api.auth import authenticate
from api.errors import ApiError
from layer.settings import Settings, load_settings


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.delenv("LAYER_API_KEYS", raising=False)
    monkeypatch.setenv("TURBOPUFFER_API_KEY", "watcher-key")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "token abc"])
def test_a_missing_or_malformed_header_is_401(
    monkeypatch: pytest.MonkeyPatch, header: str | None
) -> None:
    with pytest.raises(ApiError) as refused:
        authenticate(header, _settings(monkeypatch))
    assert refused.value.status == 401 and "Bearer" in refused.value.message


def test_pass_through_mode_forwards_the_callers_key(monkeypatch: pytest.MonkeyPatch) -> None:
    credential = authenticate("bearer caller-key", _settings(monkeypatch))
    assert credential.upstream_key == "caller-key"
    other = authenticate("Bearer other-key", _settings(monkeypatch))
    assert credential.identity != other.identity, "each key is its own identity"
    assert "caller-key" not in credential.identity and "caller-key" not in repr(credential)


def test_with_layer_api_keys_callers_use_layers_keys_and_upstream_gets_the_watchers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = _settings(monkeypatch, LAYER_API_KEYS="team-a,team-b")
    credential = authenticate("Bearer team-b", settings)
    assert credential.upstream_key == "watcher-key"
    assert credential.identity != authenticate("Bearer team-a", settings).identity
    with pytest.raises(ApiError) as refused:
        authenticate("Bearer watcher-key", settings)  # a turbopuffer key is not a Layer key
    assert refused.value.status == 401
    assert "watcher-key" not in refused.value.message
