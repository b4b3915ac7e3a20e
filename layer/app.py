"""The Faust application, built here only: settings mapped onto Faust, topics declared.

Every other module imports `app` from here (`faust -A layer.app` finds it too). Faust
reads some of its own environment variables (`BROKER_URL`, `WEB_PORT`, …) and on 0.15.3
they would override the arguments below; `env={}` turns that off so `layer.settings` is
the only source of configuration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import TransportT

from layer.batch_consumer import MAX_RECORDS_PER_FETCH, BatchHandler
from layer.changelog_apply import LayerTableManager, RecoveringConsumer
from layer.clients import bootstrap_servers
from layer.embedded_broker import true_high_watermarks
from layer.settings import BrokerProfile, Settings, load_settings

if TYPE_CHECKING:
    from layer.services import Services

__all__ = ["LayerApp", "Topics", "app", "faust_settings", "on", "settings", "topics"]

#: Embedded (Tansu) profile, NOTES-kafka.md §1: Tansu holds a JoinGroup for half the session
#: timeout, so Faust's 60 s default means a ~31 s join; 2 s / 0.5 s gives a ~3 s start.
EMBEDDED_SESSION_TIMEOUT_S = 2.0
EMBEDDED_HEARTBEAT_INTERVAL_S = 0.5
#: Faust hard-codes the consumer's fetch wait to 1500 ms. Kafka answers a fetch as soon as a
#: record arrives, but Tansu holds it for the whole wait, so every hop through a topic cost
#: ~0.6 s (bench/broker_latency.py): a write notification took ~750 ms to show.
EMBEDDED_FETCH_MAX_WAIT_MS = 20
#: Tansu's memory storage keeps one object per record batch, and every fetch lists all the
#: batch objects of the partition: a replay costs (batches in the partition) per batch read,
#: quadratic in the partition's batch count. With no linger the worker's changelog batches
#: held 2.6 records on average (200,000 records, 76,915 batches) and a 1M-namespace changelog
#: never finished replaying; a linger fills batches (BENCHMARKS.md, "Scale: a million
#: namespaces"). It also delays stability events by up to this much.
EMBEDDED_PRODUCER_LINGER_MS = 10
#: Largest batch the producer builds: far below Tansu's 5 MB fetch ceiling, which a batch
#: must fit whole (Tansu never returns part of one).
EMBEDDED_PRODUCER_MAX_BATCH_BYTES = 256 * 1024


class _EmbeddedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = EMBEDDED_FETCH_MAX_WAIT_MS  # read when it starts
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        """NOTES-kafka.md §2 (workaround B): Tansu answers ListOffsets(LATEST) with the newest
        batch's base offset + 1, so Faust's changelog recovery would stop early and lose rows;
        the fetch high watermark is right, so ask for it."""
        reported = await super()._highwaters(partitions)
        return await true_high_watermarks(bootstrap_servers(settings.kafka_broker), reported)


class _EmbeddedBrokerConsumer(RecoveringConsumer):
    """Layer's consumer with a fetch wait the embedded broker can live with."""

    def _new_consumer_thread(self) -> _EmbeddedConsumerThread:
        return _EmbeddedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LayerApp(faust.App):
    """Faust's app, with Layer's consumer class and the worker's long-lived objects.

    Faust's objects (the app, its topics, tables, agents, timers and pages) are module-level,
    declared at import as Faust intends. Everything else that lives as long as the worker
    (upstream client, poller, schedule, buffers, caches, metrics) is built in one place,
    `layer.services.build_services`, and reached by agents and views through `app.services`
    when they run; a test installs fresh ones with `app.use(build_services(settings))`.
    """

    _services: Services | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Topic name → the handler its messages go to a fetch at a time (layer.batch_consumer).
        self.batch_handlers: dict[str, BatchHandler] = {}

    @property
    def services(self) -> Services:
        if self._services is None:
            raise RuntimeError("no services installed: layer.worker (or a test) calls app.use()")
        return self._services

    def use(self, services: Services) -> None:
        """Install the long-lived objects agents and views use from now on."""
        self._services = services

    def _new_transport(self) -> TransportT:
        """Faust's transport, with Layer's consumer (batched writes, embedded-broker fetches)."""
        transport = super()._new_transport()
        # Faust's stubs declare `Consumer` a class variable; setting it on the instance is
        # Faust's way to give one app's transport another consumer class.
        transport.Consumer = (  # type: ignore[misc]
            _EmbeddedBrokerConsumer
            if settings.broker_profile is BrokerProfile.EMBEDDED
            else RecoveringConsumer
        )
        return transport


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust's keyword arguments for `settings` (the embedded profile adds Tansu's tuning)."""
    conf: dict[str, Any] = {
        "env": {},
        "autodiscover": False,
        "broker": settings.kafka_broker,
        "store": settings.table_store,
        "datadir": settings.data_dir,
        "web_host": settings.host,
        "web_port": settings.port,
        "web_canonical_url": settings.web_url,
        "web_enabled": True,
        # Faust's own pages (table dumps, graphs, stats) would bypass Layer's auth.
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_metrics_enabled": False,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication,
        # Tansu cannot do transactions, and the transitions are idempotent anyway.
        "processing_guarantee": "at_least_once",
        "table_standby_replicas": settings.table_standby_replicas,
        "producer_linger": settings.producer_linger_ms / 1000,
        "broker_max_poll_records": MAX_RECORDS_PER_FETCH,
        # Its recovery is safe against a rebalance during a recovery (layer.changelog_apply).
        "TableManager": LayerTableManager,
        "logging_config": None,
    }
    if settings.broker_profile is BrokerProfile.EMBEDDED:
        conf |= {
            "broker_session_timeout": EMBEDDED_SESSION_TIMEOUT_S,
            "broker_heartbeat_interval": EMBEDDED_HEARTBEAT_INTERVAL_S,
            "producer_linger": max(settings.producer_linger_ms, EMBEDDED_PRODUCER_LINGER_MS) / 1000,
            "producer_max_batch_size": EMBEDDED_PRODUCER_MAX_BATCH_BYTES,
        }
    return conf


Receiver = Callable[..., Awaitable[None]]


def on(signal: Any) -> Callable[[Receiver], Receiver]:
    """`@on(app.on_partitions_assigned)`: connect an async receiver to a Faust signal.

    The same as `@signal.connect`, which mode annotates so that no receiver type-checks (one
    arm of its union wants `signal` as a keyword-only parameter, the other is unsatisfiable);
    this is the one place that looks past it. Receivers are called as
    `receiver(sender, *args, signal=..., **kwargs)`.
    """

    def connect(receiver: Receiver) -> Receiver:
        signal.connect(receiver)
        return receiver

    return connect


class Topics:
    """Layer's topics, all created by the app with the configured partition count."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        prefix = settings.topic_prefix

        def declare(suffix: str) -> faust.TopicT:
            # Raw bytes both ways: keys are plain UTF-8 namespace names (see layer.events),
            # values are validated by the agents so bad ones can be dead-lettered.
            return app.topic(
                f"{prefix}.{suffix}",
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=settings.topic_partitions,
                internal=True,
            )

        self.writes = declare("writes")
        self.ticks = declare("ticks")
        self.stability = declare("stability")
        self.dead_letters = declare("writes.dlq")


settings: Settings = load_settings()
app = LayerApp(settings.app_id, **faust_settings(settings))
topics = Topics(app, settings)
