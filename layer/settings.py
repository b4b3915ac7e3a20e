"""Layer's configuration: one pydantic-settings model, read from the environment and `.env`.

This is the only module that reads the environment. Every other module receives a
`Settings` (or values taken from it), so a test can build any configuration it needs.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BrokerProfile", "Settings", "SettingsError", "load_settings"]


class BrokerProfile(StrEnum):
    """Which family of Kafka client settings the worker uses."""

    #: A real Kafka cluster: Faust's own defaults (session timeouts Kafka accepts).
    KAFKA = "kafka"
    #: The embedded Tansu broker of `layer dev` and the tests: short group timeouts and the
    #: ListOffsets workaround (NOTES-kafka.md §1, §2). Never for production.
    EMBEDDED = "embedded"


def _env(name: str) -> AliasChoices:
    """The environment variable a field is read from (names are fixed by the README)."""
    return AliasChoices(name)


PositiveMs = Annotated[int, Field(ge=1)]


class Settings(BaseSettings):
    """Every knob Layer has. Field descriptions are the README's configuration table."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- Kafka -----------------------------------------------------------------------
    kafka_broker: str = Field(
        "kafka://127.0.0.1:9092",
        validation_alias=_env("LAYER_KAFKA_BROKER"),
        description="Kafka bootstrap servers (`kafka://host:port`, comma-separated for several). "
        "`layer dev` points it at the embedded broker it starts.",
    )
    broker_profile: BrokerProfile = Field(
        BrokerProfile.KAFKA,
        validation_alias=_env("LAYER_BROKER_PROFILE"),
        description="`kafka` (a real cluster, Faust defaults) or `embedded` (the Tansu broker of "
        "`layer dev` and the tests).",
    )
    app_id: str = Field(
        "layer",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        validation_alias=_env("LAYER_APP_ID"),
        description="Faust application id: the consumer group and the prefix of changelog topics.",
    )
    topic_prefix: str = Field(
        "layer",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        validation_alias=_env("LAYER_TOPIC_PREFIX"),
        description="Prefix of Layer's topics: `{prefix}.writes`, `.ticks`, `.stability`, "
        "`.writes.dlq`.",
    )
    topic_partitions: int = Field(
        8,
        ge=1,
        le=1024,
        validation_alias=_env("LAYER_TOPIC_PARTITIONS"),
        description="Partitions of every Layer topic and table (they must be co-partitioned).",
    )
    kafka_start_timeout_ms: PositiveMs = Field(
        30_000,
        validation_alias=_env("LAYER_KAFKA_START_TIMEOUT_MS"),
        description="How long a starting worker waits for Kafka to answer (to create and "
        "verify its topics) before it stops with one line.",
    )
    topic_replication: int = Field(
        1,
        ge=1,
        le=16,
        validation_alias=_env("LAYER_TOPIC_REPLICATION"),
        description="Replication factor of the topics Layer creates.",
    )
    producer_linger_ms: int = Field(
        0,
        ge=0,
        le=10_000,
        validation_alias=_env("LAYER_PRODUCER_LINGER_MS"),
        description="How long the worker's producer waits to fill a batch (changelog and "
        "stability events); more batching, more latency.",
    )
    table_store: str = Field(
        "memory://",
        pattern=r"^(memory|rocksdb)://.*$",
        validation_alias=_env("LAYER_TABLE_STORE"),
        description="Faust table store: `memory://` (rebuilt from the changelog at start) or "
        "`rocksdb://` (local state in `LAYER_DATA_DIR`; install the `rocksdb` extra: "
        "`pip install '.[rocksdb]'`).",
    )
    data_dir: str = Field(
        ".layer-data",
        validation_alias=_env("LAYER_DATA_DIR"),
        description="Directory for the worker's local state (one per worker).",
    )

    # --- upstream turbopuffer ---------------------------------------------------------
    turbopuffer_base_url: str | None = Field(
        None,
        validation_alias=_env("TURBOPUFFER_BASE_URL"),
        description="Upstream base URL. Wins over `TURBOPUFFER_REGION`.",
    )
    turbopuffer_region: str | None = Field(
        None,
        pattern=r"^[a-z0-9-]{1,64}$",
        validation_alias=_env("TURBOPUFFER_REGION"),
        description="turbopuffer region; the upstream is then `https://{region}.turbopuffer.com`.",
    )
    turbopuffer_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("TURBOPUFFER_API_KEY"),
        description="Upstream key the watcher polls with (and, with `LAYER_API_KEYS`, the key "
        "every upstream call uses). Never logged.",
    )
    api_keys: SecretStr | None = Field(
        None,
        validation_alias=_env("LAYER_API_KEYS"),
        description="Comma-separated keys Layer accepts itself. Unset (default): the caller's "
        "key is the turbopuffer key and is forwarded; set: callers use these keys and every "
        "upstream call uses `TURBOPUFFER_API_KEY`.",
    )
    upstream_timeout_ms: PositiveMs = Field(
        10_000,
        validation_alias=_env("LAYER_UPSTREAM_TIMEOUT_MS"),
        description="Timeout of one upstream call.",
    )

    # --- HTTP ---------------------------------------------------------------------------
    host: str = Field(
        "127.0.0.1",
        validation_alias=_env("LAYER_HOST"),
        description="Address the web server binds (`0.0.0.0` in containers).",
    )
    port: int = Field(
        8080,
        ge=1,
        le=65535,
        validation_alias=_env("LAYER_PORT"),
        description="Port of Layer's HTTP API (Faust's web server).",
    )
    advertised_url: str | None = Field(
        None,
        validation_alias=_env("LAYER_ADVERTISED_URL"),
        description="URL other workers reach this one at (default `http://{LAYER_HOST}:{LAYER_PORT}`).",
    )
    dev_emulator_port: int = Field(
        8787,
        ge=1,
        le=65535,
        validation_alias=_env("LAYER_DEV_EMULATOR_PORT"),
        description="`layer dev` only: port of the turbopuffer emulator it starts.",
    )
    cache_warm_window_ms: PositiveMs = Field(
        600_000,
        validation_alias=_env("LAYER_CACHE_WARM_WINDOW_MS"),
        description="A namespace's `cache_state` is `warm` this long after a successful warm "
        "or proxied query, `cold` after.",
    )
    namespace_list_concurrency: int = Field(
        16,
        ge=1,
        le=256,
        validation_alias=_env("LAYER_LIST_METADATA_CONCURRENCY"),
        description="Per-row upstream metadata calls in flight for one namespace listing.",
    )
    rate_limit_rps: float = Field(
        0.0,
        ge=0,
        validation_alias=_env("LAYER_RATE_LIMIT_RPS"),
        description="Requests per second allowed per API key (burst: one second's worth); "
        "0 disables the limit.",
    )
    table_standby_replicas: int = Field(
        0,
        ge=0,
        le=64,
        validation_alias=_env("LAYER_TABLE_STANDBY_REPLICAS"),
        description="Faust standby copies of each table partition on other workers. Reads "
        "never use them (they are routed to the owner, see api/replica.py).",
    )
    stable_reads: bool = Field(
        True,
        validation_alias=_env("LAYER_STABLE_READS"),
        description="Stamp proxied writes with `_layer_upserted_at` and filter queries on "
        "`updating` namespaces to rows at or before `stable_as_of`.",
    )
    proxy_timeout_ms: PositiveMs = Field(
        60_000,
        validation_alias=_env("LAYER_PROXY_TIMEOUT_MS"),
        description="Timeout of a proxied turbopuffer request (the SDK's own default is 60 s).",
    )
    shutdown_grace_ms: PositiveMs = Field(
        25_000,
        validation_alias=_env("LAYER_SHUTDOWN_GRACE_MS"),
        description="On SIGTERM, how long requests in flight may take to finish before the "
        "worker leaves its group anyway (below a typical 30 s orchestrator grace period).",
    )
    max_body_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        validation_alias=_env("LAYER_MAX_BODY_BYTES"),
        description="Largest request body accepted (turbopuffer's own write limit).",
    )
    notify_buffer_namespaces: int = Field(
        100_000,
        ge=1,
        validation_alias=_env("LAYER_NOTIFY_BUFFER_NAMESPACES"),
        description="Namespaces whose proxied-write notification may wait for Kafka at once; "
        "beyond it a namespace is reported `unknown`, never stable.",
    )
    access_allow_ttl_ms: int = Field(
        30_000,
        ge=0,
        validation_alias=_env("LAYER_ACCESS_ALLOW_TTL_MS"),
        description="Pass-through mode: how long upstream's acceptance of a key for a "
        "namespace is trusted before Layer's own data (snapshots) is served again without "
        "asking; 0 asks every time.",
    )
    access_deny_ttl_ms: int = Field(
        5_000,
        ge=0,
        validation_alias=_env("LAYER_ACCESS_DENY_TTL_MS"),
        description="Pass-through mode: how long upstream's refusal (401/403/404) of a key "
        "for a namespace is remembered; 0 asks every time.",
    )
    sse_max_connections_per_key: int = Field(
        16,
        ge=1,
        le=10_000,
        validation_alias=_env("LAYER_SSE_MAX_CONNECTIONS_PER_KEY"),
        description="Stability streams (`GET /v2/stability/events`) one API key may hold open "
        "on one worker at once; one more is a 429.",
    )
    sse_buffer_events: int = Field(
        1_000,
        ge=2,
        le=100_000,
        validation_alias=_env("LAYER_SSE_BUFFER_EVENTS"),
        description="Events queued for one stability stream at most; a client that falls this "
        "far behind is disconnected (it may resume with `Last-Event-ID`).",
    )
    sse_heartbeat_ms: int = Field(
        15_000,
        ge=100,
        le=600_000,
        validation_alias=_env("LAYER_SSE_HEARTBEAT_MS"),
        description="A stability stream with nothing to send sends a comment line this often "
        "(keeps proxies from closing it, and finds clients that left).",
    )
    namespace_list_cache_ttl_ms: int = Field(
        10_000,
        ge=0,
        validation_alias=_env("NAMESPACE_LIST_CACHE_TTL_MS"),
        description="TTL of the namespace-listing cache; 0 disables it.",
    )

    # --- the watcher --------------------------------------------------------------------
    tick_interval_ms: PositiveMs = Field(
        100,
        validation_alias=_env("LAYER_TICK_INTERVAL_MS"),
        description="How often the leader publishes a poll tick per partition.",
    )
    fast_poll_interval_ms: PositiveMs = Field(
        1_000,
        validation_alias=_env("LAYER_FAST_POLL_INTERVAL_MS"),
        description="Poll interval of a namespace that is `updating` or `unknown`.",
    )
    slow_poll_interval_ms: PositiveMs = Field(
        60_000,
        validation_alias=_env("LAYER_SLOW_POLL_INTERVAL_MS"),
        description="Poll interval of a `stable` namespace (writes make it due at once anyway).",
    )
    max_backoff_ms: PositiveMs = Field(
        60_000,
        validation_alias=_env("LAYER_POLL_MAX_BACKOFF_MS"),
        description="Ceiling of the exponential backoff after failed polls.",
    )
    safety_margin_ms: int = Field(
        1_000,
        ge=0,
        validation_alias=_env("LAYER_SAFETY_MARGIN_MS"),
        description="Subtracted from a poll's start time to form `stable_as_of` (clock skew "
        "between producers and Layer).",
    )
    poll_concurrency: int = Field(
        16,
        ge=1,
        le=1024,
        validation_alias=_env("LAYER_POLL_CONCURRENCY"),
        description="Upstream metadata polls in flight per worker.",
    )
    upstream_max_rps: float = Field(
        200.0,
        gt=0,
        validation_alias=_env("LAYER_UPSTREAM_MAX_RPS"),
        description="Global cap on the watcher's upstream requests per second, per worker.",
    )
    snapshot_history_limit: int = Field(
        100,
        ge=1,
        le=10_000,
        validation_alias=_env("LAYER_SNAPSHOT_HISTORY_LIMIT"),
        description="Snapshots kept per namespace (newest first).",
    )

    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        validation_alias=_env("LAYER_EVENT_LOOP"),
        description="The worker's event loop: `uvloop` (measured 15-25 % less CPU per "
        "metadata read than asyncio's, BENCHMARKS.md) or `asyncio`.",
    )
    log_level: str = Field(
        "info",
        pattern=r"^(?i:debug|info|warning|error|critical)$",
        validation_alias=_env("LAYER_LOG_LEVEL"),
        description="Log level of the worker.",
    )

    @model_validator(mode="after")
    def _check_upstream(self) -> Settings:
        url = self.turbopuffer_base_url
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("TURBOPUFFER_BASE_URL must start with http:// or https://")
        if self.api_keys is not None and self.turbopuffer_api_key is None:
            raise ValueError(
                "LAYER_API_KEYS needs TURBOPUFFER_API_KEY (the key Layer calls upstream with)"
            )
        if self.slow_poll_interval_ms < self.fast_poll_interval_ms:
            raise ValueError(
                "LAYER_SLOW_POLL_INTERVAL_MS must be at least LAYER_FAST_POLL_INTERVAL_MS"
            )
        return self

    @cached_property
    def layer_api_keys(self) -> frozenset[str]:
        """The keys of `LAYER_API_KEYS` (empty: pass-through mode); read on every request."""
        if self.api_keys is None:
            return frozenset()
        return frozenset(
            k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()
        )

    @cached_property
    def upstream_url(self) -> str:
        """The turbopuffer base URL, without a trailing slash."""
        if self.turbopuffer_base_url:
            return self.turbopuffer_base_url.rstrip("/")
        if self.turbopuffer_region:
            return f"https://{self.turbopuffer_region}.turbopuffer.com"
        return "https://gcp-us-central1.turbopuffer.com"

    @property
    def web_url(self) -> str:
        """This worker's canonical URL, used by other workers to route requests to it."""
        return self.advertised_url or f"http://{self.host}:{self.port}"


class SettingsError(Exception):
    """Invalid configuration, reported as one line naming the setting."""


def _field_env_name(loc: tuple[object, ...]) -> str:
    """Map a pydantic error location to the environment variable the user set."""
    if not loc:
        return "configuration"
    name = str(loc[0])
    field = Settings.model_fields.get(name)
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    return name


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into a one-line `SettingsError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"invalid setting {_field_env_name(first['loc'])}: {message}") from None
