"""The changelog-backed tables. Importing this module builds the app (pure code lives beside it).

Keys are namespace names serialised as plain UTF-8 bytes, the same bytes producers use as
the key of `writes` and `ticks`, and each changelog record goes to the partition Kafka's
default partitioner gives that key, which is the partition the namespace's events arrive
on. So the changelog partition of a key never depends on which event (or background
poll) changed it, and `table_route` finds its owner.
"""

from __future__ import annotations

from typing import Any

import faust
from faust import stores
from faust.stores import memory as faust_memory
from faust.stores import rocksdb as faust_rocksdb
from faust.types import StoreT
from yarl import URL

from layer.app import app, settings
from layer.events import partition_for, partition_for_key
from tables.encoded_store import EncodedMemoryStore
from tables.freshness import Freshness
from tables.snapshots import SnapshotHistory

__all__ = [
    "ROCKSDB_OPTIONS",
    "NamespaceRocksDBStore",
    "NamespaceTable",
    "freshness_table",
    "snapshots_table",
]

#: What bounds a `rocksdb://` worker's memory: Faust opens one database per table partition
#: (2 tables × `LAYER_TOPIC_PARTITIONS`), each with a block cache of its own and up to
#: `max_write_buffer_number` memtables. Faust's defaults, a 2 GiB cache and 3 × 64 MiB
#: memtables per database, bound nothing on one machine (16 databases: 35 GiB); these give
#: 16 × (16 + 2 × 16) MiB = 768 MiB at most beyond Python's heap, and far less while a table
#: is small (BENCHMARKS.md, "Scale: a million namespaces").
ROCKSDB_OPTIONS: dict[str, int] = {
    "block_cache_size": 16 * 1024**2,
    "write_buffer_size": 16 * 1024**2,
    "max_write_buffer_number": 2,
}


class NamespaceRocksDBStore(faust_rocksdb.Store):
    """Faust's RocksDB store (one database per partition), placing each key by its own partition.

    Faust's picks the database from the *current event's* partition, and asserts there is an
    event. Layer writes rows from poll tasks and from whole-fetch batches of write
    notifications, where there is none; the key's own partition is the one its changelog
    records go to (`NamespaceTable.partition_for_key`), so that is the database it lives in.
    """

    def _key_db(self, key: bytes) -> Any:
        partition = partition_for_key(key, settings.topic_partitions)
        self._key_index[key] = partition
        return self._db_for_partition(partition)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._key_db(key).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._key_db(key).get(key)
        return value

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None


class NamespaceTable(faust.Table[str, Any]):
    """A table keyed by namespace name, with plain UTF-8 key bytes.

    Faust serialises `str` keys as JSON (`b'"products"'`), which would not match the raw
    keys of the source topics (NOTES-kafka.md §4). The changelog topic is created after
    `__init__`, when the table is registered, so it inherits the serializer set here.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_serializer = "raw"

    def partition_for_key(self, key: Any) -> int:
        """The key's own partition, not the current event's: polls write from tasks."""
        return partition_for(key, settings.topic_partitions)

    def _new_store_by_url(self, url: str | URL) -> StoreT[Any, Any]:
        """Faust's store for `url`, with Layer's in place of its RocksDB and memory ones.

        `NamespaceRocksDBStore` places keys by their own partition; `EncodedMemoryStore`
        keeps rows as bytes, out of the garbage collector's sight.
        """
        store_class = stores.by_url(url)
        if issubclass(store_class, faust_rocksdb.Store):
            store_class = NamespaceRocksDBStore
        elif store_class is faust_memory.Store:
            store_class = EncodedMemoryStore
        return store_class(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )


def _namespace_table(name: str, value_type: type[faust.Record], help: str) -> NamespaceTable:
    table = NamespaceTable(
        app,
        name=name,
        key_type=str,
        value_type=value_type,
        partitions=settings.topic_partitions,
        beacon=app.tables.beacon,
        help=help,
        # A copy per table: Faust's RocksDB store pops its own keys out of this mapping.
        options=dict(ROCKSDB_OPTIONS),
    )
    app.tables.add(table)
    return table


freshness_table = _namespace_table(
    "freshness", Freshness, "Freshness state per namespace (tables.freshness.Freshness)."
)
snapshots_table = _namespace_table(
    "snapshots", SnapshotHistory, "Bounded snapshot history per namespace, newest first."
)
