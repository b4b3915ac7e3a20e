"""The tables' memory store (tables/encoded_store.py): rows kept as bytes the garbage
collector never walks, read back as the records Faust's decoding builds, whichever way they
arrived (a write, the changelog replay, Faust's standby path)."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import faust
import pytest
from hypothesis import HealthCheck, given, settings

from layer.changelog_apply import apply_changelog_records, field_reader
from tables.encoded_store import EncodedMemoryStore, table_fields
from tables.faust_tables import freshness_table, snapshots_table
from tables.freshness import Freshness, IndexStatus, new_freshness, on_operations, on_write
from tables.snapshots import Snapshot, SnapshotHistory
from tests.agents.support import FRESHNESS_ROWS_OF_OTHER_VERSIONS
from tests.agents.test_changelog_apply import (
    _changelog_message,
    _encoded,
    _faust_decoded,
    _same_record,
    freshness_states,
)


def test_both_tables_keep_their_rows_as_bytes_out_of_the_collectors_sight(app: faust.App) -> None:
    assert isinstance(freshness_table.data, EncodedMemoryStore)
    assert isinstance(snapshots_table.data, EncodedMemoryStore)
    freshness_table.data["a"] = on_write(None, "a", 1_000)
    snapshots_table.data["a"] = SnapshotHistory(snapshots=[Snapshot(stable_as_of=1)])

    for store in (freshness_table.data, snapshots_table.data):
        assert isinstance(store.data["a"], bytes)
        assert not gc.is_tracked(store.data), "a dict of str → bytes is never walked by the GC"


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=freshness_states)
async def test_a_row_reads_back_as_the_record_written(app: faust.App, state: Freshness) -> None:
    freshness_table.data["k"] = state

    read = freshness_table.get("k")

    assert read == state
    assert read.dumps() == state.dumps(), "the same changelog bytes"
    assert [(k, v) for k, v in read.__dict__.items() if k != "__evaluated_fields__"] == [
        (k, v) for k, v in state.__dict__.items() if k != "__evaluated_fields__"
    ]
    assert list(read.__dict__) == list(state.__dict__), "same attributes, same order"


def test_an_enum_status_reads_back_as_its_string_which_compares_equal(app: faust.App) -> None:
    freshness_table.data["k"] = Freshness(namespace="k", status=IndexStatus.STABLE)

    read = freshness_table.get("k")

    assert read.status == IndexStatus.STABLE and read.is_stable
    assert read == Freshness(namespace="k", status=IndexStatus.STABLE)


@pytest.mark.parametrize("value", FRESHNESS_ROWS_OF_OTHER_VERSIONS)
async def test_a_replayed_row_is_stored_undecoded_and_reads_as_faust_decodes_it(
    app: faust.App, value: bytes
) -> None:
    apply_changelog_records(app, freshness_table, [_changelog_message(0, b"k", value)])

    assert freshness_table.data.data["k"] == value, "the changelog's bytes, as they are"
    _same_record(freshness_table.get("k"), _faust_decoded(app, value))


def test_faust_standby_path_stores_the_changelog_bytes(app: faust.App) -> None:
    state = on_write(None, "a", 1_000)
    events = [
        SimpleNamespace(key="a", message=_changelog_message(0, b"a", _encoded(state))),
        SimpleNamespace(key="b", message=_changelog_message(1, b"b", _encoded(state))),
        SimpleNamespace(key="b", message=_changelog_message(2, b"b", None)),
    ]

    freshness_table.data.apply_changelog_batch(events, lambda key: key, lambda value: value)

    assert freshness_table.get("a") == state
    assert "b" not in freshness_table.data, "the tombstone deleted it"
    assert freshness_table.data._key_partition.get("a") == 0
    assert "b" not in freshness_table.data._key_partition


def test_snapshot_histories_round_trip_through_fausts_codec(app: faust.App) -> None:
    history = SnapshotHistory(
        snapshots=[Snapshot(stable_as_of=2, approx_row_count=3), Snapshot(stable_as_of=1)]
    )
    snapshots_table.data["s"] = history

    read = snapshots_table.get("s")

    assert read == history
    assert read.snapshots[0].approx_row_count == 3
    assert all(isinstance(snapshot, Snapshot) for snapshot in read.snapshots)


def test_bulk_reads_and_writes_decode_and_encode(app: faust.App) -> None:
    rows = {name: new_freshness(name) for name in ("a", "b", "c")}

    freshness_table.data.update(rows)

    assert dict(freshness_table.items()) == rows
    assert list(freshness_table.values()) == list(rows.values())
    assert freshness_table.data.copy() == rows
    assert sorted(freshness_table) == ["a", "b", "c"] and len(freshness_table) == 3
    assert ("a", rows["a"]) in freshness_table.items()
    assert freshness_table.data.get("missing", "default") == "default"


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=freshness_states)
async def test_the_field_reader_reads_what_the_decoded_record_holds(
    app: faust.App, state: Freshness
) -> None:
    fields = tuple(Freshness._options.fieldpos.values())
    read = field_reader(Freshness, fields)
    assert read is not None

    for value in (_encoded(state), freshness_table.data._dump(state)):
        decoded = _faust_decoded(app, value)
        assert read(value) == tuple(getattr(decoded, field) for field in fields)


@pytest.mark.parametrize("value", FRESHNESS_ROWS_OF_OTHER_VERSIONS)
async def test_the_field_reader_reads_rows_of_other_versions_as_faust_decodes_them(
    app: faust.App, value: bytes
) -> None:
    fields = ("namespace", "status", "next_poll_ms", "consecutive_errors", "operations")
    read = field_reader(Freshness, fields)
    assert read is not None

    decoded = _faust_decoded(app, value)
    assert read(value) == tuple(getattr(decoded, field) for field in fields)


def test_table_fields_reads_every_row(app: faust.App) -> None:
    freshness_table.data["a"] = new_freshness("a")
    freshness_table.data["b"] = on_operations(
        Freshness(namespace="b", status=IndexStatus.STABLE.value, next_poll_ms=9),
        "b",
        started={"/v1/ops/1": 5},
    )
    older_row = FRESHNESS_ROWS_OF_OTHER_VERSIONS[1]
    apply_changelog_records(app, freshness_table, [_changelog_message(0, b"c", older_row)])

    rows = dict(table_fields(freshness_table, "status", "next_poll_ms", "operations"))

    assert rows == {
        name: (state.status, state.next_poll_ms, state.operations)
        for name, state in freshness_table.items()
    }
    assert rows["c"] == ("unknown", 0, None), "nulls where a default applies: the default"


def test_a_field_the_record_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="no field 'nope'"):
        field_reader(Freshness, ("nope",))
