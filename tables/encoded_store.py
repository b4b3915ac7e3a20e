"""The memory store of Layer's tables: each row kept as its JSON bytes, decoded when read.

Why bytes and not the records themselves: CPython's cyclic garbage collector walks every
object it tracks on a full (generation 2) collection, and a `faust.Record` row is three
tracked objects (the record, its `__evaluated_fields__` set, the `index` dict; a
`SnapshotHistory` is seven). With 1,000,000 namespaces a full collection took 0.87 s for the
freshness rows and 3.65 s with their snapshot histories, stop the world, and steady
re-confirmation churn (every poll replaces a row) triggers one every few minutes
(BENCHMARKS.md, "Garbage collection at 1M rows"). `bytes` are never tracked, and a dict
whose keys and values are all untracked is not tracked either, so the table adds nothing
to a collection: a full one costs what the rest of the process costs.

The alternatives considered and not taken (not measured at 1M): `gc.freeze()` after
recovery only hides the rows present at that moment; every row replaced afterwards is a new
tracked object, so after one re-confirmation pass the pauses are back (and cyclic garbage
frozen with them is never freed); raising the thresholds makes the pauses rarer, not
shorter.

The cost is a decode on every read and an encode on every write:

- `Freshness` (a flat record) is written as `orjson.dumps` of its attributes (~1 µs) and read
  with `record_loader` (~2 µs), which builds the exact object Faust's decoding builds (the
  one recovery has always put in the table); values come back equal, not identical, and
  JSON-shaped (a `StrEnum` member reads back as its string, which compares equal).
- Any other value type (`SnapshotHistory`) uses Faust's own codec for the table (the
  encoding its RocksDB store uses), which decodes nested records lazily.
- Recovery stores the changelog's bytes as they are (`layer.changelog_apply`): nothing is
  decoded until a row is read.

Reads in bulk (`items()`, `values()`) decode row by row as they iterate.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, Iterator, ValuesView
from typing import Any

import faust
import orjson
from faust.stores import memory as faust_memory
from faust.types import EventT, Message

from layer.changelog_apply import field_reader, json_record_loader, put_records

__all__ = ["EncodedMemoryStore", "fields_of", "table_fields"]


def table_fields(table: Any, *fields: str) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """(key, the values of `fields`) of every row of `table`, whatever its store: `fields_of`
    over all its keys (bench/gc_pause.py times it over a million rows)."""
    return fields_of(table, list(table.keys()), *fields)


def fields_of(
    table: Any, keys: Iterable[Any], *fields: str
) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """`table_fields` for the rows of `keys` only, as they are now (absent keys skipped): for
    a scan that yields to the event loop between chunks, while the table keeps changing."""
    store = table.data
    if isinstance(store, EncodedMemoryStore) and store.flat_record is not None:
        read = field_reader(store.flat_record, fields)
        if read is not None:
            data = store.data
            for key in keys:
                if (raw := data.get(key)) is not None:
                    yield key, read(raw)
            return
    for key in keys:
        if (value := table.get(key)) is not None:
            yield key, tuple(getattr(value, field) for field in fields)


def _nested_record(value: Any) -> dict[str, Any]:
    """A record inside a row (a `Snapshot` of a history), as JSON: its attributes and type."""
    if not isinstance(value, faust.Record):
        raise TypeError(f"{type(value).__name__} is not JSON")
    attrs = dict(value.__dict__)
    attrs.pop("__evaluated_fields__", None)
    attrs["__faust"] = {"ns": value._options.namespace}
    return attrs


def _exact(raw: bytes | None) -> bytes | None:
    """`raw` in a buffer of its own size: orjson (also under Faust's JSON codec) returns bytes
    that keep their initial allocation, 4–8 KiB for a row of 400 bytes."""
    return None if raw is None else bytes(memoryview(raw))


class EncodedMemoryStore(faust_memory.Store[Any, Any]):
    """Faust's memory store, keeping each value as bytes (`self.data`: key → bytes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The value type when it is a flat JSON record (orjson and `record_loader`), else None.
        self.flat_record: type[faust.Record] | None = None
        self._dump, self._load = self._codec()

    def _codec(self) -> tuple[Callable[[Any], bytes | None], Callable[[bytes], Any]]:
        """How values become bytes and back: fast for a flat JSON record, else Faust's codec."""
        value_type: Any = self.value_type
        load = json_record_loader(value_type, self.value_serializer)
        encode_value = self._encode_value
        if load is None:
            return lambda value: _exact(encode_value(value)), self._decode_value
        self.flat_record = value_type

        def dump(value: Any) -> bytes | None:
            if type(value) is value_type:
                attrs = dict(value.__dict__)
                attrs.pop("__evaluated_fields__", None)
                try:
                    return _exact(orjson.dumps(attrs, default=_nested_record))
                except TypeError:  # a value orjson cannot encode: Faust's encoder may
                    pass
            return _exact(encode_value(value))

        return dump, load

    def __getitem__(self, key: Any) -> Any:
        raw = self.data[key]
        return None if raw is None else self._load(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = None if value is None else self._dump(value)

    def get(self, key: Any, default: Any = None) -> Any:
        raw = self.data.get(key)
        return default if raw is None else self._load(raw)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def items(self) -> _DecodedItems:
        return _DecodedItems(self)

    def values(self) -> _DecodedValues:
        return _DecodedValues(self)

    def copy(self) -> dict[Any, Any]:
        return dict(self.items())

    def __repr__(self) -> str:
        return repr(self.copy())

    def apply_changelog_messages(
        self, messages: Iterable[Message], load_key: Callable[[Message], Any]
    ) -> None:
        """Apply changelog records in offset order (recovery a fetch at a time), undecoded."""
        put_records(
            self.data, self._key_partition, ((load_key(m), m.value, m.partition) for m in messages)
        )

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        """Apply changelog events (Faust's path: standby partitions): their bytes, undecoded."""
        put_records(
            self.data,
            self._key_partition,
            ((to_key(e.key), e.message.value, e.message.partition) for e in batch),
        )


class _DecodedItems(ItemsView[Any, Any]):
    """`items()` of an `EncodedMemoryStore`: (key, decoded value), one row at a time."""

    _mapping: EncodedMemoryStore

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        load = self._mapping._load
        for key, raw in self._mapping.data.items():
            yield key, None if raw is None else load(raw)


class _DecodedValues(ValuesView[Any]):
    """`values()` of an `EncodedMemoryStore`: decoded values, one row at a time."""

    _mapping: EncodedMemoryStore

    def __iter__(self) -> Iterator[Any]:
        load = self._mapping._load
        for raw in self._mapping.data.values():
            yield None if raw is None else load(raw)
