"""Layer's topics are Layer's: created and verified before anything produces, never auto-created.

DESIGN.md, "Answering truthfully while the system is operated", rule 1. Every Layer topic and
table changelog must have the same partition count (the tables are co-partitioned with the
topics that feed them), so a broker's default count must never decide it. Two halves:

**Checked before use.** `ensure_topics` runs when a worker starts, before Faust's worker exists
(`layer.cli.run_worker`): it creates the missing topics with `LAYER_TOPIC_PARTITIONS`
partitions and `LAYER_TOPIC_REPLICATION` replicas and verifies the existing ones (partition
count, replication, and the configs Faust gives them: changelogs are `cleanup.policy=compact`).
A mismatch is a `TopicMismatchError` whose message is one line naming the topic, what it has,
the setting and what to do. It uses aiokafka's `AIOKafkaAdminClient` (aiokafka is the Kafka
client Faust itself runs on, maintained by the aio-libs project), and checks on our side what
the embedded broker (Tansu) accepts silently: a replication factor larger than the cluster
(NOTES-kafka.md §3). Tansu has no CreatePartitions, and growing a topic would move keys between
partitions anyway, so a wrong count is never "fixed" here: the operator decides.

**Never auto-created.** Kafka creates a topic when a Metadata request names it and allows it,
and aiokafka 0.14 always allows it: `MetadataRequest(topics)` leaves `allow_auto_topic_creation`
unset, which its `build` turns into `True` for v4+ (v0-v3 cannot say no at all, and aiokafka
negotiates v5 with Kafka >= 1.0 and with Tansu). A producer sending to a missing topic thus
made Tansu create it with 4 partitions. aiokafka has no option for this, and its producer,
consumer and admin client each build their own `AIOKafkaClient` by the module-level name, so a
client subclass cannot be passed in (nor into the clients Faust builds). So, in one place:

- `MetadataRequest.build` is wrapped (once, `_install`) so that a request that did not choose
  `allow_auto_topic_creation` says `False` when it is sent *by a Layer client*; any other
  aiokafka client in the process keeps aiokafka's behaviour.
- "A Layer client" is either every client of a Layer process (`forbid_auto_creation_in_process`,
  called first by `layer worker`, `layer notify` and `layer watch`: it covers the clients Faust
  builds, in the worker's consumer thread too, and the high-watermark probe of
  `layer.embedded_broker`), or one client explicitly (`without_auto_creation`, used by
  `WriteNotifier` and `stability_changes`, which also run inside other applications).

A produce to a missing topic then fails after the producer's request timeout with
`UnknownTopicOrPartitionError` instead of creating it; `require_topics` says so at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaClient
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from mode.utils.times import want_seconds

from layer.errors import LayerError

__all__ = [
    "BrokerUnreachableError",
    "TopicMismatchError",
    "TopicMissingError",
    "TopicSpec",
    "TopicState",
    "describe_topics",
    "ensure_topics",
    "forbid_auto_creation_in_process",
    "layer_topic_specs",
    "require_topics",
    "require_topics_at",
    "without_auto_creation",
]

log = logging.getLogger(__name__)

#: Kafka's default `cleanup.policy`, assumed when a broker does not report the config (Tansu
#: reports only the configs a topic was created with).
DEFAULT_CLEANUP_POLICY = "delete"
#: Kafka error codes in CreateTopics / Metadata answers.
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3
#: Pause between attempts while the broker does not answer, or a topic just created is not
#: yet in its metadata.
RETRY_INTERVAL_S = 0.5


class BrokerUnreachableError(LayerError):
    """No broker of `LAYER_KAFKA_BROKER` answered within the allowed time."""


class TopicMissingError(LayerError):
    """A topic Layer needs does not exist (and Layer will not let a broker auto-create it)."""


class TopicMismatchError(LayerError):
    """An existing topic differs from what Layer is configured for (partitions, replication, …)."""


# --- no auto-creation ----------------------------------------------------------------------

_forbidden_in_process = False
_forbidden_here: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "layer_forbid_topic_auto_creation", default=False
)
_installed = False


def _install() -> None:
    """Wrap `MetadataRequest.build` once: unset `allow_auto_topic_creation` means False for
    Layer's clients (see the module docstring)."""
    global _installed
    if _installed:
        return
    original = MetadataRequest.build

    def build(self: MetadataRequest, request_struct_class: Any) -> Any:
        if self._allow_auto_topic_creation is None and (
            _forbidden_in_process or _forbidden_here.get()
        ):
            self = MetadataRequest(self._topics, allow_auto_topic_creation=False)
        return original(self, request_struct_class)

    MetadataRequest.build = build
    _installed = True


def forbid_auto_creation_in_process() -> None:
    """No Metadata request of this process may create a topic (Layer's own processes only)."""
    global _forbidden_in_process
    _install()
    _forbidden_in_process = True


ClientOwner = TypeVar("ClientOwner")


def without_auto_creation(owner: ClientOwner) -> ClientOwner:
    """Make the Metadata requests of one aiokafka producer, consumer or admin client (or of a
    bare `AIOKafkaClient`) forbid auto-creation; return it. Call before it starts.

    Every topic lookup of an aiokafka client goes through its `_metadata_update`, which builds
    the request and sends it in the same task; the wrapper marks that call as Layer's.
    """
    _install()
    client: AIOKafkaClient = (
        owner
        if isinstance(owner, AIOKafkaClient)
        else getattr(owner, "client", None) or owner._client  # type: ignore[attr-defined]
    )
    original = client._metadata_update

    async def metadata_update(cluster_metadata: Any, topics: Any) -> Any:
        token = _forbidden_here.set(True)
        try:
            return await original(cluster_metadata, topics)
        finally:
            _forbidden_here.reset(token)

    client._metadata_update = metadata_update
    return owner


# --- what the topics are -------------------------------------------------------------------


@dataclass(frozen=True)
class TopicSpec:
    """A topic as Layer wants it."""

    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)
    #: What the topic is, for messages: "a Layer topic" or "the changelog of table X".
    role: str = "a Layer topic"


@dataclass(frozen=True)
class TopicState:
    """A topic as the broker has it."""

    partitions: int
    replication: int


def layer_topic_specs(app: Any, topics: object) -> list[TopicSpec]:
    """Every topic a worker of `app` uses: the Faust topics held by `topics` (`layer.app.Topics`)
    and the changelog of every table registered with the app, with the partitions, replication
    and configs Faust would declare them with (`faust.topics.Topic.declare`).

    Taken from the Faust objects, not from names written here, so a new topic or table is
    covered without touching this function. Faust's own leader-election topic
    (`{app_id}-__assignor-__leader`, one partition by design) is left to Faust, which creates
    it explicitly at start.
    """
    import faust

    conf = app.conf
    channels: list[tuple[Any, str]] = [
        (topic, "a Layer topic")
        for topic in vars(topics).values()
        if isinstance(topic, faust.types.TopicT)
    ]
    channels += [
        (table.changelog_topic, f"the changelog of table {table.name}")
        for table in app.tables.values()
    ]
    specs: dict[str, TopicSpec] = {}
    for topic, role in channels:
        # As faust.transport.drivers.aiokafka.Producer.create_topic converts it.
        retention_ms = int(want_seconds(topic.retention) * 1000) if topic.retention else None
        config = dict(app.transport._topic_config(retention_ms, topic.compacting, topic.deleting))
        config.update(topic.config or {})
        for name in topic.topics:
            specs[name] = TopicSpec(
                name=name,
                partitions=topic.partitions or conf.topic_partitions,
                replication=topic.replicas or conf.topic_replication_factor or 1,
                config={key: str(value) for key, value in config.items()},
                role=role,
            )
    return list(specs.values())


# --- what the broker has -------------------------------------------------------------------


async def describe_topics(client: AIOKafkaClient, names: Iterable[str]) -> dict[str, TopicState]:
    """The topics among `names` that exist, as the broker reports them.

    One Metadata request naming them, with `allow_auto_topic_creation=False` said explicitly:
    asking whether a topic exists must not create it.
    """
    wanted = sorted(set(names))
    node_id = client.get_random_node()
    if node_id is None:
        raise KafkaConnectionError("no broker known")
    answer = await client.send(node_id, MetadataRequest(wanted, allow_auto_topic_creation=False))
    found: dict[str, TopicState] = {}
    for topic in answer.to_object()["topics"]:
        if topic["error_code"] == UNKNOWN_TOPIC_OR_PARTITION or not topic["partitions"]:
            continue
        if topic["error_code"]:
            raise KafkaError(f"metadata of topic {topic['topic']}: error {topic['error_code']}")
        found[topic["topic"]] = TopicState(
            partitions=len(topic["partitions"]),
            replication=min(len(p["replicas"]) for p in topic["partitions"]),
        )
    return found


async def require_topics(client: AIOKafkaClient, names: Iterable[str]) -> None:
    """Raise `TopicMissingError` unless every topic of `names` exists."""
    wanted = sorted(set(names))
    missing = [name for name in wanted if name not in await describe_topics(client, wanted)]
    if missing:
        raise TopicMissingError(
            f"topic {', '.join(missing)} does not exist: start a Layer worker first "
            "(it creates Layer's topics; Layer never lets a broker auto-create one)"
        )


async def require_topics_at(bootstrap: str, names: Iterable[str]) -> None:
    """`require_topics` through a short-lived client of its own (for a consumer, which would
    otherwise wait its whole request timeout for a missing topic at start)."""
    client = without_auto_creation(AIOKafkaClient(bootstrap_servers=bootstrap))
    try:
        await client.bootstrap()
        await require_topics(client, names)
    finally:
        await client.close()


# --- create and verify ---------------------------------------------------------------------


def _partitions_mismatch(spec: TopicSpec, state: TopicState) -> str:
    return (
        f"topic {spec.name} has {state.partitions} partitions, "
        f"LAYER_TOPIC_PARTITIONS={spec.partitions}: delete the topic or set "
        f"LAYER_TOPIC_PARTITIONS={state.partitions} "
        "(every Layer topic and changelog must have the same count)"
    )


def _replication_mismatch(spec: TopicSpec, state: TopicState) -> str:
    return (
        f"topic {spec.name} has replication factor {state.replication}, "
        f"LAYER_TOPIC_REPLICATION={spec.replication}: raise the topic's replication "
        f"(kafka-reassign-partitions) or set LAYER_TOPIC_REPLICATION={state.replication}"
    )


def _verify(spec: TopicSpec, state: TopicState) -> None:
    if state.partitions != spec.partitions:
        raise TopicMismatchError(_partitions_mismatch(spec, state))
    # More replicas than asked for is not a mismatch that matters: durability is the point.
    if state.replication < spec.replication:
        raise TopicMismatchError(_replication_mismatch(spec, state))


async def _verify_configs(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], existing: Mapping[str, TopicState]
) -> None:
    """The configs Layer creates a topic with (changelogs: `cleanup.policy=compact`) hold."""
    checked = [spec for spec in specs if spec.config and spec.name in existing]
    if not checked:
        return
    # Unfiltered (configs=None): Tansu drops the connection on a filtered DescribeConfigs.
    answers = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, spec.name, None) for spec in checked]
    )
    actual: dict[str, dict[str, str | None]] = {}
    for answer in answers:
        for resource in answer.resources:
            error_code, _message, _type, name, entries = resource[:5]
            if error_code:
                raise KafkaError(f"configs of topic {name}: error {error_code}")
            actual[name] = {entry[0]: entry[1] for entry in entries}
    for spec in checked:
        have = actual.get(spec.name, {})
        for key, wanted in spec.config.items():
            value = have.get(key)
            if value is None and key == "cleanup.policy":
                value = DEFAULT_CLEANUP_POLICY
            if value != wanted:
                raise TopicMismatchError(
                    f"topic {spec.name} ({spec.role}) has {key}={value}, Layer needs "
                    f"{key}={wanted}: set it (kafka-configs --alter --entity-type topics "
                    f"--entity-name {spec.name} --add-config {key}={wanted}) or delete the topic"
                )


async def _start_admin(bootstrap: str, timeout_s: float) -> AIOKafkaAdminClient:
    """An admin client on `bootstrap`, retried until a broker answers or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        admin = without_auto_creation(
            AIOKafkaAdminClient(
                bootstrap_servers=bootstrap,
                client_id="layer-topics",
                request_timeout_ms=max(int(remaining * 1000), 1000),
            )
        )
        try:
            await asyncio.wait_for(admin.start(), max(remaining, 0.1))
            if admin._client.get_random_node() is not None:
                return admin
        except (KafkaError, OSError, asyncio.TimeoutError):
            pass
        await admin.close()
        if time.monotonic() + RETRY_INTERVAL_S >= deadline:
            raise BrokerUnreachableError(
                f"no Kafka broker answered at {bootstrap} within {timeout_s:g} s "
                "(LAYER_KAFKA_BROKER): start the broker or correct the setting"
            )
        await asyncio.sleep(RETRY_INTERVAL_S)


async def ensure_topics(bootstrap: str, specs: list[TopicSpec], *, timeout_s: float) -> list[str]:
    """Create the missing topics of `specs`, verify the others; return the names created.

    Everything existing is verified before anything is created, so a mismatch leaves the
    cluster as it was. Raises `BrokerUnreachableError` if no broker answers within
    `timeout_s`, `TopicMismatchError` (one-line message) if a topic differs from its spec.
    """
    names = [spec.name for spec in specs]
    admin = await _start_admin(bootstrap, timeout_s)
    try:
        client = admin._client
        existing = await describe_topics(client, names)
        for spec in specs:
            if spec.name in existing:
                _verify(spec, existing[spec.name])
        await _verify_configs(admin, specs, existing)
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return []
        brokers = len(client.cluster.brokers())
        if (replication := max(spec.replication for spec in missing)) > brokers:
            raise TopicMismatchError(
                f"LAYER_TOPIC_REPLICATION={replication} but the cluster has {brokers} "
                f"broker{'s' if brokers != 1 else ''}: set LAYER_TOPIC_REPLICATION to at most "
                f"{brokers}"
            )
        answer = await admin.create_topics(
            [
                NewTopic(
                    spec.name, spec.partitions, spec.replication, topic_configs=dict(spec.config)
                )
                for spec in missing
            ]
        )
        created: list[str] = []
        for name, error_code, message in answer.topic_errors:
            if error_code == 0:
                created.append(name)
            elif error_code != TOPIC_ALREADY_EXISTS:  # another worker just made it: verified below
                raise KafkaError(f"cannot create topic {name}: error {error_code} ({message})")
        for name in created:
            log.info("created topic %s", name)
        await _verify_created(admin, missing, time.monotonic() + timeout_s)
        return created
    finally:
        await admin.close()


async def _verify_created(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec], deadline: float
) -> None:
    """Wait until the brokers' metadata shows `specs` (Kafka creates asynchronously), then
    verify them like existing ones (a concurrent creator may have used other settings)."""
    names = [spec.name for spec in specs]
    while len(found := await describe_topics(admin._client, names)) < len(names):
        if time.monotonic() >= deadline:
            raise TopicMissingError(
                f"topic {', '.join(sorted(set(names) - set(found)))} was created but does not "
                "appear in the broker's metadata"
            )
        await asyncio.sleep(RETRY_INTERVAL_S)
    for spec in specs:
        _verify(spec, found[spec.name])
    await _verify_configs(admin, specs, found)
