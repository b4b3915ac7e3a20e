"""Recovery a fetch at a time (layer/changelog_apply.py): changelog records applied in bulk
give the table exactly what Faust's record-by-record replay gives."""

from __future__ import annotations

import faust
from faust.types import TP
from faust.types.tuples import Message

from layer.changelog_apply import apply_changelog_records
from tables.faust_tables import freshness_table
from tables.freshness import Freshness, new_freshness, on_write


def _changelog_message(offset: int, key: bytes, value: bytes | None) -> Message:
    topic = freshness_table.changelog_topic.get_topic_name()
    return Message(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0.0,
        timestamp_type=0,
        headers=[],
        key=key,
        value=value,
        checksum=None,
        tp=TP(topic, 0),
    )


def _encoded(state: Freshness) -> bytes:
    """The bytes Faust writes to the changelog for `state`."""
    return state.dumps(serializer=freshness_table.value_serializer)


async def test_a_bulk_apply_leaves_the_latest_record_of_each_key(app: faust.App) -> None:
    first = on_write(None, "a", 1_000)
    later = on_write(first, "a", 2_000)
    other = new_freshness("b")
    messages = [
        _changelog_message(0, b"a", _encoded(first)),
        _changelog_message(1, b"b", _encoded(other)),
        _changelog_message(2, b"a", _encoded(later)),
    ]

    apply_changelog_records(app, freshness_table, messages)

    assert freshness_table.get("a") == later, "the later record of a key wins, in offset order"
    assert freshness_table.get("b") == other


async def test_a_tombstone_in_a_bulk_apply_deletes_the_key(app: faust.App) -> None:
    state = on_write(None, "gone", 1_000)
    messages = [
        _changelog_message(0, b"gone", _encoded(state)),
        _changelog_message(1, b"gone", None),
    ]

    apply_changelog_records(app, freshness_table, messages)

    assert freshness_table.get("gone") is None
