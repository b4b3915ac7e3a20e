"""Namespace state with a fake clock: the indexing simulation, writes, listing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layer.emulator.store import (
    BadRequest,
    Forbidden,
    IndexingConfig,
    NamespaceNotFound,
    Store,
    WriteAheadLog,
    decode_cursor,
    encode_cursor,
    page_namespaces,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rows(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"id": i, "v": "x" * 10} for i in range(start, start + n)]


# --- the write-ahead log -----------------------------------------------------------------


def test_a_write_is_unindexed_until_the_delay_passes() -> None:
    wal = WriteAheadLog(IndexingConfig(delay_ms=500))
    wal.append(3, 300, now=10.0)

    wal.advance(now=10.499)
    assert wal.index_status() == {"status": "updating", "unindexed_bytes": 300, "unindexed_rows": 3}
    wal.advance(now=10.5)
    assert wal.index_status() == {"status": "up-to-date"}


def test_the_rate_drains_rows_gradually_and_bytes_proportionally() -> None:
    wal = WriteAheadLog(IndexingConfig(rate_rows_per_s=10))
    wal.append(20, 2000, now=0.0)

    wal.advance(now=0.5)
    assert (wal.unindexed_rows, wal.unindexed_bytes) == (15, 1500)
    wal.advance(now=1.99)
    assert wal.unindexed_rows == 1
    wal.advance(now=2.0)
    assert wal.index_status() == {"status": "up-to-date"}


def test_entries_drain_in_order_each_after_its_own_delay() -> None:
    wal = WriteAheadLog(IndexingConfig(delay_ms=1000, rate_rows_per_s=1))
    wal.append(1, 10, now=0.0)
    wal.append(1, 10, now=0.1)

    wal.advance(now=2.0)  # first: eligible at 1.0, done at 2.0; second: starts at 2.0
    assert wal.unindexed_rows == 1
    wal.advance(now=3.0)
    assert wal.unindexed_rows == 0


def test_paused_time_does_not_count_towards_indexing() -> None:
    wal = WriteAheadLog(IndexingConfig(rate_rows_per_s=10))
    wal.append(10, 100, now=0.0)
    wal.pause(now=0.5)

    wal.advance(now=100.0)
    assert wal.unindexed_rows == 5
    wal.resume(now=100.0)
    wal.advance(now=100.4)
    assert wal.unindexed_rows == 1
    wal.advance(now=100.5)
    assert wal.unindexed_rows == 0


def test_force_drains_even_while_paused() -> None:
    wal = WriteAheadLog(IndexingConfig(delay_ms=60_000), paused=True)
    wal.append(5, 50, now=0.0)

    wal.force(now=1.0)

    assert wal.index_status() == {"status": "up-to-date"}
    assert wal.paused, "forcing does not resume"


def test_writes_without_rows_do_not_enter_the_log() -> None:
    wal = WriteAheadLog(IndexingConfig(delay_ms=1000))
    wal.append(0, 0, now=0.0)

    assert wal.index_status() == {"status": "up-to-date"}


# --- the store ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Store:
    return Store(indexing=IndexingConfig(delay_ms=1000), clock=clock)


def test_metadata_shows_updating_until_the_write_is_indexed(store: Store, clock: FakeClock) -> None:
    store.write("ns", {"upsert_rows": rows(4)})

    before = store.metadata("ns")["index"]
    clock.advance(1.0)
    after = store.metadata("ns")["index"]

    assert before["status"] == "updating" and before["unindexed_rows"] == 4  # type: ignore[index]
    assert after == {"status": "up-to-date"}


def test_queries_see_unindexed_writes(store: Store) -> None:
    store.write("ns", {"upsert_rows": rows(4)})

    outcome = store.query("ns", {"rank_by": ["id", "asc"], "top_k": 10})

    assert len(outcome.results[0]["rows"]) == 4  # type: ignore[arg-type]
    assert outcome.exhaustive_search_count == 4


def test_a_pause_set_before_the_first_write_applies_to_the_new_namespace(
    store: Store, clock: FakeClock
) -> None:
    store.pause_indexing("later")
    store.write("later", {"upsert_rows": rows(2)})
    clock.advance(60)

    assert store.index_status("later")["status"] == "updating"
    store.resume_indexing("later")
    clock.advance(1)
    assert store.index_status("later") == {"status": "up-to-date"}


def test_upserts_replace_patches_merge_deletes_remove(store: Store) -> None:
    store.write("ns", {"upsert_rows": [{"id": 1, "a": 1, "b": 2}, {"id": 2, "a": 1}]})
    result = store.write(
        "ns",
        {
            "upsert_rows": [{"id": 1, "a": 9}],
            "patch_rows": [{"id": 2, "b": 5, "a": None}, {"id": 99, "b": 1}],
            "deletes": [3],
            "return_affected_ids": True,
        },
    )
    docs = {d["id"]: d for d in store.namespaces["ns"].docs.values()}

    assert docs == {1: {"id": 1, "a": 9}, 2: {"id": 2, "b": 5}}
    assert result["rows_upserted"] == 1 and result["rows_patched"] == 1
    assert result["upserted_ids"] == [1] and result["patched_ids"] == [2]
    assert result["deleted_ids"] == [3]


def test_columns_with_a_null_cell_leave_that_attribute_out(store: Store) -> None:
    store.write("ns", {"upsert_columns": {"id": [1, 2], "a": ["x", None]}})

    assert store.namespaces["ns"].docs["2"] == {"id": 2}


def test_filter_writes_delete_and_patch_matching_documents(store: Store) -> None:
    store.write("ns", {"upsert_rows": [{"id": i, "n": i} for i in range(6)]})

    result = store.write(
        "ns",
        {
            "delete_by_filter": ["n", "Lt", 2],
            "patch_by_filter": {"filters": ["n", "Gte", 4], "patch": {"big": True}},
        },
    )
    docs = sorted(store.namespaces["ns"].docs.values(), key=lambda d: d["id"])  # type: ignore[arg-type, return-value]

    assert [d["id"] for d in docs] == [2, 3, 4, 5]
    assert [d.get("big") for d in docs] == [None, None, True, True]
    assert (result["rows_deleted"], result["rows_patched"]) == (2, 2)


def test_filter_writes_apply_before_the_upserts_of_the_same_request(store: Store) -> None:
    store.write("ns", {"upsert_rows": [{"id": 1, "n": 1}]})

    store.write(
        "ns",
        {
            "patch_by_filter": {"filters": ["n", "Eq", 1], "patch": {"seen": True}},
            "upsert_rows": [{"id": 1, "n": 1}, {"id": 2, "n": 1}],
        },
    )

    assert [d.get("seen") for d in store.namespaces["ns"].docs.values()] == [None, None]


def test_a_malformed_filter_write_changes_nothing(store: Store) -> None:
    store.write("ns", {"upsert_rows": [{"id": 1, "n": 1}]})

    with pytest.raises(BadRequest, match="malformed filter"):
        store.write("ns", {"deletes": [1], "delete_by_filter": ["n", "Eq"]})

    assert list(store.namespaces["ns"].docs) == ["1"]


def test_base64_and_json_vectors_are_stored_as_floats(store: Store) -> None:
    store.write(
        "ns", {"upsert_rows": [{"id": 1, "vector": "AACAPwAAAEA="}, {"id": 2, "vector": [3, 4]}]}
    )

    docs = store.namespaces["ns"].docs
    assert docs["1"]["vector"] == [1.0, 2.0]
    assert docs["2"]["vector"] == [3.0, 4.0]
    assert store.schema("ns")["vector"]["type"] == "[2]f32"


def test_a_rejected_write_changes_nothing(store: Store) -> None:
    store.write("ns", {"upsert_rows": [{"id": 1, "vector": [1.0, 0.0]}]})

    with pytest.raises(BadRequest, match="dimension"):
        store.write("ns", {"deletes": [1], "upsert_rows": [{"id": 2, "vector": [1.0]}]})
    with pytest.raises(BadRequest):
        store.write("fresh", {"upsert_rows": [{"id": 1.5}]})

    assert list(store.namespaces["ns"].docs) == ["1"]
    assert not store.exists("fresh")


@pytest.mark.parametrize(
    ("body", "creates"),
    [
        ({"deletes": [1]}, False),
        ({"upsert_rows": [{"id": 1}]}, True),
        ({"upsert_rows": [{"id": 1}], "create_namespace": False}, False),
        ({"schema": {"id": "string"}, "create_namespace": True}, True),
    ],
)
def test_which_writes_create_a_namespace(
    store: Store, body: dict[str, object], creates: bool
) -> None:
    if creates:
        store.write("ns", body)
    else:
        with pytest.raises(NamespaceNotFound):
            store.write("ns", body)

    assert store.exists("ns") is creates


def test_read_only_namespaces_reject_writes(store: Store) -> None:
    store.write("ns", {"upsert_rows": rows(1)})
    store.update_metadata("ns", {"read_only": True})

    with pytest.raises(Forbidden):
        store.write("ns", {"upsert_rows": rows(1)})
    assert store.metadata("ns")["read_only"] is True


def test_schema_types_cannot_change_but_flags_can(store: Store) -> None:
    store.write("ns", {"upsert_rows": [{"id": 1, "name": "a"}]})

    updated = store.update_schema("ns", {"name": {"filterable": False}})

    assert updated["name"] == {"type": "string", "filterable": False}
    with pytest.raises(BadRequest, match="cannot change the type"):
        store.update_schema("ns", {"name": "int"})


def test_the_distance_metric_is_fixed_after_it_is_set(store: Store) -> None:
    store.write(
        "ns", {"upsert_rows": [{"id": 1, "vector": [1.0]}], "distance_metric": "euclidean_squared"}
    )

    with pytest.raises(BadRequest, match="cannot be changed"):
        store.write("ns", {"upsert_rows": rows(1), "distance_metric": "cosine_distance"})


def test_unknown_namespaces_are_not_found(store: Store) -> None:
    for call in (store.metadata, store.schema, store.delete, store.force_indexing):
        with pytest.raises(NamespaceNotFound, match="'nope'"):
            call("nope")


# --- listing -----------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40))
def test_cursors_round_trip(name: str) -> None:
    assert decode_cursor(encode_cursor(name)) == name


def test_a_cursor_we_did_not_issue_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="cursor"):
        decode_cursor("%%%")


@given(
    st.sets(st.from_regex(r"[a-c][a-z0-9]{0,4}", fullmatch=True), max_size=30),
    st.integers(1, 7),
    st.sampled_from(["", "a", "b1"]),
)
def test_paging_visits_every_matching_name_once_in_order(
    names: set[str], page_size: int, prefix: str
) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = page_namespaces(names, prefix=prefix, cursor=cursor, page_size=page_size)
        assert len(page) <= page_size
        seen += page
        if cursor is None:
            break

    assert seen == sorted(n for n in names if n.startswith(prefix))


def test_seeded_namespaces_exist_empty_and_indexed() -> None:
    store = Store()
    assert store.seed(f"seeded-{i}" for i in range(3)) == 3
    assert store.seed(["seeded-0", "new"]) == 1, "an existing namespace is left alone"
    names, _ = store.list_page(prefix="seeded-", cursor=None, page_size=10)
    assert names == ["seeded-0", "seeded-1", "seeded-2"]
    assert store.namespaces["seeded-1"].wal.index_status()["status"] == "up-to-date"
