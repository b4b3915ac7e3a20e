"""The wire contracts: what producers send, what consumers read (docs/events.md).

Every message is JSON with a `version` field. Every topic that feeds the freshness table
(`writes`, `ticks`) is keyed by the namespace name as **plain UTF-8 bytes** and has the
table's partition count, and producers must use Kafka's default (murmur2) partitioner:
the table's changelog uses the same key bytes and partitioner, so one worker owns every
event, the state and the HTTP reads of a namespace (NOTES-kafka.md §4).

Agents receive raw bytes and validate them here, so a malformed message becomes a
dead letter with pydantic's reason instead of an exception inside Faust's deserializer.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal, cast

from aiokafka.partitioner import murmur2
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tables.freshness import IndexObservation

__all__ = [
    "MAX_REGISTRATIONS_PER_MESSAGE",
    "NAMESPACE_PATTERN",
    "CacheActivity",
    "DeadLetter",
    "Namespace",
    "ObservedIndex",
    "OperationStarted",
    "PollTick",
    "Registration",
    "Registrations",
    "StabilityChange",
    "TickMessage",
    "WriteNotification",
    "parse_tick_message",
    "parse_write_notification",
    "partition_for",
]

#: turbopuffer's namespace names (its limits page): validated before any name reaches a URL.
NAMESPACE_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
Namespace = Annotated[str, Field(pattern=NAMESPACE_PATTERN)]
EpochMs = Annotated[int, Field(ge=0)]


def partition_for(namespace: str, partitions: int) -> int:
    """The partition of a namespace key under Kafka's default (murmur2) partitioner."""
    return partition_for_key(namespace.encode(), partitions)


def partition_for_key(key: bytes, partitions: int) -> int:
    """`partition_for` of a key already encoded (plain UTF-8 bytes)."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


class _Event(BaseModel):
    """Base of every wire model: immutable; unknown fields ignored for forward compatibility."""

    model_config = ConfigDict(frozen=True, extra="ignore")


#: An upstream operation's URL path (and query), on upstream's origin: `/v1/namespaces/…`.
OperationLocation = Annotated[str, Field(pattern=r"^/\S*$", max_length=2048)]


class OperationStarted(_Event):
    """An asynchronous upstream write (a `202` copy) Layer accepted: it follows it to its end."""

    #: Where upstream answers the operation's status (its `Location`, a path on upstream).
    location: OperationLocation
    #: When upstream accepted it (Layer's clock, after the 202).
    accepted_at_ms: EpochMs


class WriteNotification(_Event):
    """`{prefix}.writes`: "namespace N was written at T". Key: the namespace (UTF-8).

    `written_at_ms` must be taken *after* turbopuffer acknowledged the write: a time taken
    before it could let a poll that ran before the commit mark the namespace stable.

    Layer's own notifications may also say that upstream accepted an asynchronous write
    (`operations_started`: the namespace stays updating until each has ended) or that one
    ended (`operation_finished`, sent by the worker that followed it; `written_at_ms` is
    when it saw the end). Other producers leave both out.
    """

    version: Literal[1] = 1
    namespace: Namespace
    written_at_ms: EpochMs
    rows: Annotated[int, Field(ge=0)] | None = None
    bytes: Annotated[int, Field(ge=0)] | None = None
    source: Annotated[str, Field(max_length=200)] | None = None
    event_id: Annotated[str, Field(max_length=200)] | None = None
    operations_started: tuple[OperationStarted, ...] | None = None
    operation_finished: OperationLocation | None = None


class PollTick(_Event):
    """`{prefix}.ticks`, kind `tick`: poll the due namespaces of `partition` (leader timer)."""

    version: Literal[1] = 1
    kind: Literal["tick"] = "tick"
    partition: Annotated[int, Field(ge=0)]
    issued_at_ms: EpochMs


class ObservedIndex(_Event):
    """An upstream metadata answer fetched by an HTTP read, applied like a poll result: the
    wire form of `tables.freshness.IndexObservation`, with when the read started."""

    started_at_ms: EpochMs
    index: dict[str, Any]
    approx_row_count: int | None = None
    approx_logical_bytes: int | None = None
    updated_at: str | None = None
    created_at: str | None = None

    @classmethod
    def of(cls, observation: IndexObservation, *, started_at_ms: int) -> ObservedIndex:
        return cls(
            started_at_ms=started_at_ms,
            index=observation.index,
            approx_row_count=observation.approx_row_count,
            approx_logical_bytes=observation.approx_logical_bytes,
            updated_at=observation.updated_at,
            created_at=observation.created_at,
        )

    def to_observation(self) -> IndexObservation | None:
        """What upstream said; None if the index status is none Layer knows (not evidence)."""
        status = self.index.get("status")
        if status not in ("up-to-date", "updating"):
            return None
        return IndexObservation(
            index_status=status,
            index=self.index,
            approx_row_count=self.approx_row_count,
            approx_logical_bytes=self.approx_logical_bytes,
            updated_at=self.updated_at,
            created_at=self.created_at,
        )


class Registration(_Event):
    """`{prefix}.ticks`, kind `register`: a namespace first seen on an HTTP read.

    Key: the namespace (UTF-8). Carries the read's upstream observation when it had one.
    """

    version: Literal[1] = 1
    kind: Literal["register"] = "register"
    namespace: Namespace
    observed_at_ms: EpochMs
    observation: ObservedIndex | None = None


#: Registrations one `register_many` message carries at most (a listing page holds ≤ 1000).
MAX_REGISTRATIONS_PER_MESSAGE = 1000


class Registrations(_Event):
    """`{prefix}.ticks`, kind `register_many`: namespaces first seen on one listing page.

    No key: sent to the partition every one of its namespaces belongs to (one message per
    partition per page, instead of one per namespace in front of the poll ticks).
    """

    version: Literal[1] = 1
    kind: Literal["register_many"] = "register_many"
    registrations: list[Registration] = Field(max_length=MAX_REGISTRATIONS_PER_MESSAGE)


class CacheActivity(_Event):
    """`{prefix}.ticks`, kind `cache`: a warm or a query succeeded upstream. Key: namespace."""

    version: Literal[1] = 1
    kind: Literal["cache"] = "cache"
    namespace: Namespace
    at_ms: EpochMs


TickMessage = Annotated[
    PollTick | Registration | Registrations | CacheActivity, Field(discriminator="kind")
]
#: mypy reads an `Annotated` union as a value, not a type (whether it says so depends on the
#: order it checks modules in), hence the cast; `parse_tick_message` declares the result.
_tick_adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, TickMessage))


class StabilityChange(_Event):
    """`{prefix}.stability`: `is_stable` flipped or `stable_as_of` advanced. Key: the namespace.

    Delivery is at-least-once: dedupe by `(namespace, stable_as_of, is_stable)`.
    """

    version: Literal[1] = 1
    namespace: Namespace
    change: Literal["became_stable", "became_unstable", "advanced"]
    is_stable: bool
    stable_as_of: int | None
    previous_is_stable: bool
    previous_stable_as_of: int | None
    index: dict[str, Any] | None
    observed_at_ms: EpochMs


class DeadLetter(_Event):
    """`{prefix}.writes.dlq`: an input message that failed validation, and why."""

    version: Literal[1] = 1
    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None
    #: The original value: UTF-8 text, or base64 when it was not valid UTF-8.
    value: str | None
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    dead_lettered_at_ms: EpochMs

    @staticmethod
    def text_or_base64(raw: bytes | None) -> tuple[str | None, Literal["utf-8", "base64"]]:
        """Keep a payload readable when possible, lossless always."""
        if raw is None:
            return None, "utf-8"
        try:
            return raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii"), "base64"


def parse_write_notification(raw: bytes | None) -> WriteNotification:
    """Validate a `writes` message (raises pydantic.ValidationError with the reason)."""
    return WriteNotification.model_validate_json(raw or b"")


def parse_tick_message(
    raw: bytes | None,
) -> PollTick | Registration | Registrations | CacheActivity:
    """Validate a `ticks` message (raises pydantic.ValidationError with the reason)."""
    message: PollTick | Registration | Registrations | CacheActivity = _tick_adapter.validate_json(
        raw or b""
    )
    return message
