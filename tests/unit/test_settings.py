"""load_settings: environment and `.env` in, one-line errors naming the variable out."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import AliasChoices

from layer.settings import BrokerProfile, Settings, SettingsError, load_settings

ENV_NAMES = [
    str(field.validation_alias.choices[0])
    for field in Settings.model_fields.values()
    if isinstance(field.validation_alias, AliasChoices)
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Layer variable set, and a cwd without a `.env` file."""
    monkeypatch.chdir(tmp_path)
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_every_setting_has_a_documented_environment_variable() -> None:
    assert len(ENV_NAMES) == len(Settings.model_fields)
    assert all(field.description for field in Settings.model_fields.values())


def test_defaults_load_without_any_environment() -> None:
    settings = load_settings()
    assert settings.kafka_broker == "kafka://127.0.0.1:9092"
    assert settings.broker_profile is BrokerProfile.KAFKA
    assert settings.port == 8080
    assert settings.safety_margin_ms == 1_000
    assert settings.turbopuffer_api_key is None
    assert settings.upstream_url == "https://gcp-us-central1.turbopuffer.com"
    assert settings.web_url == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("LAYER_PORT", "9090", "port", 9090),
        ("LAYER_KAFKA_BROKER", "kafka://k1:9092", "kafka_broker", "kafka://k1:9092"),
        ("LAYER_BROKER_PROFILE", "embedded", "broker_profile", BrokerProfile.EMBEDDED),
        ("LAYER_TOPIC_PARTITIONS", "16", "topic_partitions", 16),
        ("LAYER_SAFETY_MARGIN_MS", "0", "safety_margin_ms", 0),
        ("LAYER_UPSTREAM_MAX_RPS", "12.5", "upstream_max_rps", 12.5),
        ("LAYER_TABLE_STORE", "rocksdb://", "table_store", "rocksdb://"),
        ("LAYER_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("NAMESPACE_LIST_CACHE_TTL_MS", "0", "namespace_list_cache_ttl_ms", 0),
        ("LAYER_POLL_MAX_BACKOFF_MS", "5000", "max_backoff_ms", 5000),
    ],
)
def test_environment_variable_sets_its_setting(
    clean_env: pytest.MonkeyPatch, name: str, value: str, field: str, expected: object
) -> None:
    clean_env.setenv(name, value)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LAYER_PORT", "abc"),
        ("LAYER_PORT", "0"),
        ("LAYER_PORT", "70000"),
        ("LAYER_BROKER_PROFILE", "zookeeper"),
        ("LAYER_APP_ID", "has space"),
        ("LAYER_TOPIC_PREFIX", "a/b"),
        ("LAYER_TOPIC_PARTITIONS", "0"),
        ("LAYER_TABLE_STORE", "redis://"),
        ("TURBOPUFFER_REGION", "GCP US"),
        ("LAYER_UPSTREAM_TIMEOUT_MS", "0"),
        ("LAYER_FAST_POLL_INTERVAL_MS", "-1"),
        ("LAYER_SAFETY_MARGIN_MS", "-5"),
        ("LAYER_UPSTREAM_MAX_RPS", "0"),
        ("LAYER_POLL_CONCURRENCY", "many"),
        ("LAYER_SNAPSHOT_HISTORY_LIMIT", "0"),
        ("LAYER_LOG_LEVEL", "loud"),
        ("LAYER_TICK_INTERVAL_MS", "1.5"),
    ],
)
def test_invalid_value_is_a_one_line_error_naming_the_variable(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert name in message
    assert "\n" not in message
    assert message.startswith(f"invalid setting {name}: ")


def test_base_url_without_an_http_scheme_is_rejected_naming_the_variable(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("TURBOPUFFER_BASE_URL", "ftp://example.com")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "TURBOPUFFER_BASE_URL" in str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_port_message_names_layer_port(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LAYER_PORT", "abc")
    with pytest.raises(SettingsError, match="LAYER_PORT"):
        load_settings()


def test_settings_error_hides_pydantics_traceback_chain(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LAYER_PORT", "abc")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_slow_interval_shorter_than_fast_interval_is_rejected_naming_both(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("LAYER_FAST_POLL_INTERVAL_MS", "5000")
    clean_env.setenv("LAYER_SLOW_POLL_INTERVAL_MS", "1000")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "LAYER_SLOW_POLL_INTERVAL_MS" in str(info.value)
    assert "LAYER_FAST_POLL_INTERVAL_MS" in str(info.value)


def test_region_gives_the_regions_turbopuffer_url(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TURBOPUFFER_REGION", "aws-us-east-1")
    assert load_settings().upstream_url == "https://aws-us-east-1.turbopuffer.com"


def test_base_url_wins_over_region(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TURBOPUFFER_REGION", "aws-us-east-1")
    clean_env.setenv("TURBOPUFFER_BASE_URL", "http://127.0.0.1:9300/")
    assert load_settings().upstream_url == "http://127.0.0.1:9300"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://gcp-us-central1.turbopuffer.com", "https://gcp-us-central1.turbopuffer.com"),
        ("https://gcp-us-central1.turbopuffer.com/", "https://gcp-us-central1.turbopuffer.com"),
        ("http://emulator:9300//", "http://emulator:9300"),
    ],
)
def test_base_url_is_used_without_a_trailing_slash(
    clean_env: pytest.MonkeyPatch, base_url: str, expected: str
) -> None:
    clean_env.setenv("TURBOPUFFER_BASE_URL", base_url)
    assert load_settings().upstream_url == expected


def test_api_key_is_secret_and_never_shown(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TURBOPUFFER_API_KEY", "tpuf_very_secret")
    settings = load_settings()
    assert settings.turbopuffer_api_key is not None
    assert settings.turbopuffer_api_key.get_secret_value() == "tpuf_very_secret"
    assert "tpuf_very_secret" not in repr(settings)
    assert "tpuf_very_secret" not in str(settings)


def test_dotenv_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LAYER_PORT=9191\nTURBOPUFFER_REGION=aws-eu-central-1\n")
    settings = load_settings()
    assert settings.port == 9191
    assert settings.upstream_url == "https://aws-eu-central-1.turbopuffer.com"


def test_environment_wins_over_dotenv(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LAYER_PORT=9191\n")
    clean_env.setenv("LAYER_PORT", "9292")
    assert load_settings().port == 9292


def test_invalid_value_in_dotenv_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LAYER_PORT=abc\n")
    with pytest.raises(SettingsError, match="LAYER_PORT"):
        load_settings()


def test_unknown_variables_in_dotenv_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SOMETHING_ELSE=1\nLAYER_PORT=9191\n")
    assert load_settings().port == 9191


def test_overrides_win_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LAYER_PORT", "9292")
    assert load_settings(port=7000).port == 7000


def test_invalid_override_names_the_variable_too() -> None:
    with pytest.raises(SettingsError, match="LAYER_PORT"):
        load_settings(port="abc")


def test_advertised_url_wins_over_host_and_port(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LAYER_HOST", "0.0.0.0")
    clean_env.setenv("LAYER_PORT", "9000")
    assert load_settings().web_url == "http://0.0.0.0:9000"
    clean_env.setenv("LAYER_ADVERTISED_URL", "http://layer-1:9000")
    assert load_settings().web_url == "http://layer-1:9000"
