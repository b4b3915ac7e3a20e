"""Table recovery a fetch at a time: changelog records applied to the store in bulk.

Faust replays a changelog one record at a time: each record is decoded into an event, handed
to the changelog channel through `Service.wait_first` (four tasks per message), queued, and
taken off the queue by the recovery loop, which buffers it for `apply_changelog_batch`. On
this machine that path, not the broker, bounds a recovery at ~9,000 records/s (BENCHMARKS.md,
"Scale: a million namespaces"): 1M namespaces would take two minutes.

`RecoveringConsumer` takes the records of an *active* changelog partition under recovery out
of the consumer's fetch before they become events, and applies each partition's records to
the table's store in one call. It then moves Faust's offset for the partition
(`active_offsets`, which `/readyz` reports) and, once nothing is left to replay, ends the
recovery as Faust's own loop does (`Recovery._slurp_changelogs`: flush its buffers, mark
the end, signal it), without waiting for that loop's 5-second idle timeout. Records of
standby partitions or of another generation are left to Faust, which skips what was applied
already (its offset check).

How the records reach the store (`apply_changelog_records`), cheapest first:

- Faust's RocksDB store writes the changelog's bytes as they are: it is given the records
  undecoded (Faust's channel would decode every key and value only for the store to ignore
  them).
- Layer's memory store (`tables.encoded_store`) keeps each value as JSON bytes: it is given
  the values undecoded too, and the keys decoded (`RawChangelogStore`).
- Faust's own memory store keeps decoded values: they are decoded here and written to its
  dict directly. A table of flat `faust.Record`s (every field a plain JSON value, as `Freshness`)
  is decoded with orjson and built without `Record.__init__` (`record_loader`): Faust's
  decoding (codec chain, namespace lookup, a descriptor call per field) was 60 % of a
  recovering worker's time.
- Any other store or value type gets Faust's own decoding and `apply_changelog_batch`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping
from time import monotonic
from typing import Any, Protocol, cast, runtime_checkable

import faust
import orjson
from faust.models import fields as faust_fields
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP, Message

from layer.batch_consumer import BatchingConsumer

__all__ = [
    "LayerRecovery",
    "LayerTableManager",
    "json_record_loader",
    "put_records",
    "ChangelogRecord",
    "RawChangelogStore",
    "RecoveringConsumer",
    "apply_changelog_records",
    "field_reader",
    "record_loader",
]


@runtime_checkable
class RawChangelogStore(Protocol):
    """A store that takes changelog values as the bytes they are (keys decoded)."""

    def apply_changelog_messages(
        self, messages: Iterable[Message], load_key: Callable[[Message], Any]
    ) -> None: ...


class ChangelogRecord:
    """The part of a Faust event a store's `apply_changelog_batch` reads."""

    __slots__ = ("key", "message", "value")

    def __init__(self, key: Any, value: Any, message: Message) -> None:
        self.key, self.value, self.message = key, value, message


#: Field descriptors whose `prepare_value` returns the value as given when not coercing.
_PLAIN_DESCRIPTORS = (
    faust_fields.FieldDescriptor,
    faust_fields.StringField,
    faust_fields.IntegerField,
    faust_fields.FloatField,
    faust_fields.BooleanField,
)


#: `__evaluated_fields__` of the flat records this module builds (frozen: a write would be a bug).
_NOTHING_EVALUATED: frozenset[str] = frozenset()


def record_loader(record_type: type[faust.Record]) -> Callable[[bytes], Any] | None:
    """A fast decoder of `record_type`'s JSON changelog values, or None if it has none.

    For a record whose fields are plain JSON values that Faust stores as given (no coercion,
    no date, no validation, no `__post_init__`) or fields Faust coerces lazily, on their
    first read (a list of records, as `SnapshotHistory.snapshots`: kept as parsed, as Faust
    keeps it). The object is the one `Record.from_data` builds: the same instance attributes
    in the same order (`__evaluated_fields__`, then the fields), `None` of an optional field
    replaced by its default, unknown keys kept. A value naming another record type or
    missing a required field is left to Faust. One thing differs for a record without lazy
    fields: the set of lazily coerced fields evaluated so far, which Faust reads only for
    such a field, is one shared empty frozenset instead of an empty set per record (216
    bytes per namespace in a 1M table).
    """
    if record_type not in _record_loaders:
        _record_loaders[record_type] = _build_record_loader(record_type)
    return _record_loaders[record_type]


_record_loaders: dict[type[faust.Record], Callable[[bytes], Any] | None] = {}


def _build_record_loader(record_type: type[faust.Record]) -> Callable[[bytes], Any] | None:
    options = record_type._options
    if (
        options.serializer != "json"
        or options.validation
        or hasattr(record_type, "__post_init__")
        or options.polymorphic_fields
        or options.isodates
        or options.coerce
    ):
        return None
    lazy = False
    descriptor: Any  # Faust's declared type lacks the attributes its fields all have
    for descriptor in options.descriptors.values():
        if type(descriptor) not in _PLAIN_DESCRIPTORS or descriptor.tag is not None:
            return None
        if descriptor.coerce:
            return None
        if descriptor._to_python is not None:
            if type(descriptor) is not faust_fields.FieldDescriptor or not descriptor.lazy_coercion:
                return None
            lazy = True  # Faust's __init__ keeps the value as given; its __get__ coerces it
    fields = list(options.fieldpos.values())
    required = [field for field in fields if field not in options.optionalset]
    defaults = {field: options.defaults.get(field) for field in fields}
    #: Fields a null must not reach as such (required, or defaulting to a value).
    never_null = [field for field in fields if defaults[field] is not None or field in required]
    namespace = options.namespace
    new = record_type.__new__
    slow = record_type.from_data

    def load(raw: bytes) -> Any:
        data = orjson.loads(raw)
        blessed = data.pop("__faust", None)
        if blessed is not None and blessed.get("ns") != namespace:
            data["__faust"] = blessed
            return slow(data)
        obj = new(record_type)
        attrs = obj.__dict__
        # A record with lazy fields records their first reads here, as Faust's does.
        attrs["__evaluated_fields__"] = set() if lazy else _NOTHING_EVALUATED
        if list(data) == fields and all(data[field] is not None for field in never_null):
            attrs.update(data)  # as this version writes it: every field, in order
            return obj
        if any(data.get(field) is None for field in required):
            if blessed is not None:
                data["__faust"] = blessed
            return slow(data)
        for field in fields:
            value = data.pop(field, None)
            attrs[field] = defaults[field] if value is None else value
        if data:
            attrs.update(data)
        return obj

    return load


def field_reader(
    record_type: type[faust.Record], fields: tuple[str, ...]
) -> Callable[[bytes], tuple[Any, ...]] | None:
    """A reader of `fields` out of `record_type`'s JSON, or None if it has no fast decoder.

    The values are those of the record `record_loader` builds, without building it: parsed
    JSON, read by name. A value that is missing or null where the field has a default other
    than None, or a value naming another record type, is read from the decoded record.
    """
    load = record_loader(record_type)
    if load is None:
        return None
    options = record_type._options
    for field in fields:
        if field not in options.fieldpos.values():
            raise ValueError(f"{record_type.__name__} has no field {field!r}")
    #: Where a null (or a missing key) is the value itself, not "take the default".
    nullable = frozenset(
        field
        for field in fields
        if field in options.optionalset and options.defaults.get(field) is None
    )
    namespace = options.namespace

    #: Positions of the fields whose null must be read from the decoded record.
    strict = [position for position, field in enumerate(fields) if field not in nullable]

    def read(raw: bytes) -> tuple[Any, ...]:
        data = orjson.loads(raw)
        values = tuple(map(data.get, fields))
        blessed = data.get("__faust")
        if (blessed is None or blessed.get("ns") == namespace) and None not in [
            values[position] for position in strict
        ]:
            return values
        record = load(raw)
        return tuple(getattr(record, field) for field in fields)

    return read


def _key_loader(app: Any, table: Any) -> Callable[[Message], Any]:
    """How `table`'s changelog keys are decoded (Faust's schema, short-cut for raw strings)."""
    schema = table.changelog_topic.schema
    if schema.key_serializer == "raw" and schema.key_type is str:
        return lambda message: (
            message.key.decode() if message.key is not None else schema.loads_key(app, message)
        )
    return lambda message: schema.loads_key(app, message)


def put_records(
    data: MutableMapping[Any, Any],
    key_partition: MutableMapping[Any, int],
    records: Iterable[tuple[Any, Any, int]],
) -> None:
    """Write `(key, value, partition)` changelog records, in offset order, into a memory
    store's dicts (its rows and its key → partition map); a None value deletes the key."""
    for key, value, partition in records:
        if value is None:
            data.pop(key, None)
            key_partition.pop(key, None)
        else:
            data[key] = value
            key_partition[key] = partition


def json_record_loader(value_type: Any, serializer: Any) -> Callable[[bytes], Any] | None:
    """`record_loader` of a table's values if they are JSON-serialised records, else None."""
    if (
        isinstance(value_type, type)
        and issubclass(value_type, faust.Record)
        and serializer in (None, "json")
    ):
        return record_loader(value_type)
    return None


def _value_loader(app: Any, table: Any) -> Callable[[Message], Any]:
    """How `table`'s changelog values are decoded (fast for a flat JSON record)."""
    schema = table.changelog_topic.schema
    loader = json_record_loader(schema.value_type, schema.value_serializer)
    if loader is not None:
        load = loader
        return lambda message: load(cast(bytes, message.value))  # tombstones never get here
    return lambda message: schema.loads_value(app, message)


def apply_changelog_records(app: Any, table: Any, messages: list[Message]) -> None:
    """Apply `messages` (one changelog partition, in offset order) to `table`'s store."""
    store = table.data
    if isinstance(store, faust_rocksdb.Store):
        # It writes `message.key`/`message.value` as they are and never reads key or value.
        table.apply_changelog_batch(ChangelogRecord(None, None, message) for message in messages)
        return
    if isinstance(store, RawChangelogStore):
        store.apply_changelog_messages(messages, _key_loader(app, table))
        return
    load_key, load_value = _key_loader(app, table), _value_loader(app, table)
    if type(store) is faust_memory.Store:
        # What its `apply_changelog_batch` does, without an event per record.
        put_records(
            store.data,
            store._key_partition,
            (
                (load_key(m), None if m.value is None else load_value(m), m.partition)
                for m in messages
            ),
        )
        return
    records: Iterable[ChangelogRecord] = (
        ChangelogRecord(
            load_key(message),
            None if message.value is None else load_value(message),
            message,
        )
        for message in messages
    )
    table.apply_changelog_batch(records)


class LayerRecovery(Recovery):
    """Faust's recovery, safe against a rebalance that lands while a recovery runs.

    Two things leaked from one recovery into the next (the join test of
    tests/integration/test_lifecycle.py caught both, in one run, as an older `stable_as_of`):

    - the end signal: a recovery that ended (here or in Faust's loop) leaves
      `signal_recovery_end` set, and the next one, waiting on it, "ends" before reading a
      record; so it is cleared whenever a recovery starts, before it starts reading;
    - the end itself: the recovery of an older assignment can complete after a newer one was
      made, and Faust's `on_rebalance_complete` does not say which one completed, so
      `completed_generation` does (`layer.readiness` reads it).
    """

    #: The generation whose recovery completed last (None: none yet).
    completed_generation: int | None = None

    def _set_recovery_started(self) -> None:
        super()._set_recovery_started()
        self.signal_recovery_end.clear()

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.completed_generation = generation_id
        await super().on_recovery_completed(generation_id)


class LayerTableManager(TableManager):
    """Faust's table manager, with `LayerRecovery` (Faust's `TableManager` setting)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = LayerRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class RecoveringConsumer(BatchingConsumer):
    """Layer's consumer, applying the changelog records of a recovery a fetch at a time."""

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        recovery = cast(Recovery, self.app.tables.recovery)  # type: ignore[attr-defined]
        diverted: dict[TP, list[Message]] = {}
        async for tp, message in super().getmany(timeout):
            if recovery.in_recovery and tp in recovery.active_tps and self._is_current(message):
                diverted.setdefault(tp, []).append(message)
            else:
                yield tp, message
        if diverted:
            self._apply(recovery, diverted)

    def _apply(self, recovery: Recovery, diverted: dict[TP, list[Message]]) -> None:
        """Apply what Faust has not applied yet, move its offsets; end the recovery if done."""
        if any(recovery.buffers.values()):
            recovery.flush_buffers()  # records Faust buffered come first
        now = monotonic()
        for tp, messages in diverted.items():
            seen = recovery.active_offsets.get(tp)
            fresh = messages if seen is None else [m for m in messages if m.offset > seen]
            if not fresh:
                continue
            apply_changelog_records(self.app, recovery.tp_to_table[tp], fresh)
            offset = fresh[-1].offset
            recovery.active_offsets[tp] = offset
            recovery._active_events_received_at[tp] = now
            self._read_offset[tp] = offset
        if recovery.in_recovery and not recovery.need_recovery():
            # What Recovery._slurp_changelogs does when it finds nothing left to replay.
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
