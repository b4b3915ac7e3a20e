"""Recovery a fetch at a time (layer/changelog_apply.py): changelog records applied in bulk
give the table exactly what Faust's record-by-record replay gives, and the fast decoder of a
flat record builds exactly the object Faust's decoding builds, for the records this version
writes and for those of older or newer ones."""

from __future__ import annotations

from types import SimpleNamespace

import faust
import pytest
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP
from faust.types.tuples import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layer.changelog_apply import ChangelogRecord, apply_changelog_records, record_loader
from tables.faust_tables import ROCKSDB_OPTIONS, freshness_table, snapshots_table
from tables.freshness import Freshness, IndexStatus, new_freshness, on_write
from tables.snapshots import Snapshot, SnapshotHistory
from tests.agents.support import FRESHNESS_ROWS_OF_OTHER_VERSIONS


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


_ms = st.one_of(st.none(), st.integers(min_value=0, max_value=2**53))
_text = st.one_of(st.none(), st.text(max_size=20))
freshness_states = st.builds(
    Freshness,
    namespace=st.text(min_size=1, max_size=64),
    status=st.sampled_from([s.value for s in IndexStatus]),
    stable_as_of=_ms,
    last_write_ms=_ms,
    last_poll_ms=_ms,
    last_observed_ms=_ms,
    next_poll_ms=st.integers(min_value=0, max_value=2**53),
    consecutive_errors=st.integers(min_value=0, max_value=100),
    last_error=_text,
    index=st.one_of(
        st.none(),
        st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=10), _ms)),
    ),
    approx_row_count=_ms,
    approx_logical_bytes=_ms,
    updated_at=_text,
    created_at=_text,
    last_cache_activity_ms=_ms,
    operations=st.one_of(st.none(), st.dictionaries(st.text(max_size=10), _ms.filter(bool))),
)


def _faust_decoded(app: faust.App, value: bytes) -> Freshness:
    """What Faust's own changelog replay makes of `value`."""
    decoded: Freshness = freshness_table.changelog_topic.schema.loads_value(
        app, _changelog_message(0, b"k", value)
    )
    return decoded


def _same_record(fast: Freshness, slow: Freshness) -> None:
    assert type(fast) is type(slow)
    assert fast == slow
    assert list(fast.__dict__.items()) == list(slow.__dict__.items()), "same attributes, order"
    assert fast.dumps() == slow.dumps()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=freshness_states)
async def test_the_fast_decoder_builds_what_faust_builds(app: faust.App, state: Freshness) -> None:
    value = _encoded(state)
    load = record_loader(Freshness)
    assert load is not None, "Freshness is a flat record"
    _same_record(load(value), _faust_decoded(app, value))


@pytest.mark.parametrize("value", FRESHNESS_ROWS_OF_OTHER_VERSIONS)
async def test_the_fast_decoder_reads_records_of_other_versions_as_faust_does(
    app: faust.App, value: bytes
) -> None:
    load = record_loader(Freshness)
    assert load is not None
    _same_record(load(value), _faust_decoded(app, value))


def test_a_record_faust_would_coerce_at_once_is_left_to_faust() -> None:
    class Dated(faust.Record, serializer="json", isodates=True, namespace="test.Dated"):
        at: str

    assert record_loader(Dated) is None


@pytest.mark.parametrize("count", [0, 1, 3])
async def test_nested_records_are_left_to_fausts_lazy_coercion_as_faust_leaves_them(
    app: faust.App, count: int
) -> None:
    history = SnapshotHistory(
        snapshots=[Snapshot(stable_as_of=k, approx_row_count=k + 1) for k in range(count)]
    )
    value = history.dumps()
    load = record_loader(SnapshotHistory)
    assert load is not None
    topic = snapshots_table.changelog_topic.get_topic_name()
    message = _changelog_message(0, b"s", value)
    message.topic, message.tp = topic, TP(topic, 0)
    slow = snapshots_table.changelog_topic.schema.loads_value(app, message)

    fast = load(value)

    unread = list(fast.__dict__.items())
    assert unread == list(slow.__dict__.items()), "the snapshots as parsed, not yet read"
    assert fast == slow == history
    assert list(fast.__dict__.items()) == list(slow.__dict__.items()), "and once read"
    assert all(type(snapshot) is Snapshot for snapshot in fast.snapshots)


async def test_the_snapshot_history_table_is_applied_through_faust(app: faust.App) -> None:
    history = SnapshotHistory(snapshots=[Snapshot(stable_as_of=1, approx_row_count=3)])
    topic = snapshots_table.changelog_topic.get_topic_name()
    message = _changelog_message(0, b"s", history.dumps())
    message.topic, message.tp = topic, TP(topic, 0)

    apply_changelog_records(app, snapshots_table, [message])

    assert snapshots_table.get("s") == history


def test_a_rocksdb_store_is_given_the_changelog_bytes_undecoded(app: faust.App) -> None:
    """Faust's RocksDB store writes `message.key`/`message.value` and reads nothing else."""
    store = object.__new__(faust_rocksdb.Store)  # never opened: only its type matters here
    applied: list[ChangelogRecord] = []
    table = SimpleNamespace(data=store, apply_changelog_batch=lambda batch: applied.extend(batch))
    messages = [_changelog_message(0, b"a", b"not json at all"), _changelog_message(1, b"a", None)]

    apply_changelog_records(app, table, messages)

    assert [record.message for record in applied] == messages
    assert all(record.key is None and record.value is None for record in applied)


def test_rocksdb_databases_get_layers_bounds_not_faust_defaults() -> None:
    options = faust_rocksdb.RocksDBOptions(**freshness_table.options)
    assert freshness_table.options == ROCKSDB_OPTIONS
    assert options.block_cache_size == 16 * 1024**2, "Faust's default is 2 GiB per database"
    assert options.write_buffer_size * options.max_write_buffer_number == 32 * 1024**2
