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

from layer.app import app, settings
from layer.events import partition_for
from tables.freshness import Freshness
from tables.snapshots import SnapshotHistory

__all__ = ["NamespaceTable", "freshness_table", "snapshots_table"]


class NamespaceTable(faust.Table):  # type: ignore[misc]
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
        return partition_for(key, self.partitions)


def _namespace_table(name: str, value_type: type[faust.Record], help: str) -> NamespaceTable:
    table = NamespaceTable(
        app,
        name=name,
        key_type=str,
        value_type=value_type,
        partitions=settings.topic_partitions,
        beacon=app.tables.beacon,
        help=help,
    )
    app.tables.add(table)
    return table


freshness_table = _namespace_table(
    "freshness", Freshness, "Freshness state per namespace (tables.freshness.Freshness)."
)
snapshots_table = _namespace_table(
    "snapshots", SnapshotHistory, "Bounded snapshot history per namespace, newest first."
)
