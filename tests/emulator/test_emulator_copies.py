"""Copies and branches in the store (fake clock) and over HTTP in process."""

from __future__ import annotations

import httpx
import pytest
from emulator_support import API_KEY, auth

from layer.emulator import Emulator
from layer.emulator.store import BadRequest, IndexingConfig, Store, copy_spec


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def seeded(clock: FakeClock, n: int = 4) -> Store:
    store = Store(indexing=IndexingConfig(delay_ms=1000), clock=clock)
    store.write("src", {"upsert_rows": [{"id": i, "v": f"x{i}"} for i in range(n)]})
    return store


@pytest.mark.parametrize(
    ("body", "source", "field"),
    [
        ({"copy_from_namespace": "a"}, "a", "copy_from_namespace"),
        ({"copy_from_namespace": {"source_namespace": "a"}}, "a", "copy_from_namespace"),
        ({"branch_from_namespace": {"source_namespace": "b"}}, "b", "branch_from_namespace"),
        ({"branch_from_namespace": "b"}, "b", "branch_from_namespace"),
    ],
)
def test_copy_spec_takes_both_wire_forms(body: dict[str, object], source: str, field: str) -> None:
    spec = copy_spec(body)
    assert spec is not None and (spec.source_namespace, spec.field) == (source, field)


@pytest.mark.parametrize(
    "body",
    [
        {"copy_from_namespace": "a", "branch_from_namespace": "b"},
        {"copy_from_namespace": "a", "upsert_rows": [{"id": 1}]},
        {"copy_from_namespace": {"source_namespace": "a", "surprise": 1}},
        {"branch_from_namespace": {"source_namespace": "a", "source_api_key": "k"}},
        {"copy_from_namespace": {"source_namespace": "bad name"}},
        {"copy_from_namespace": 3},
        {"copy_from_namespace": {"source_namespace": "a", "dest_encryption": {"mode": "x"}}},
    ],
)
def test_malformed_copies_are_bad_requests(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        copy_spec(body)


def test_a_copy_lands_as_new_unindexed_data_that_indexes_like_a_write() -> None:
    clock = FakeClock()
    store = seeded(clock)
    clock.now += 5  # the source is indexed
    snapshot = store.copy_snapshot("src")
    store.write("src", {"upsert_rows": [{"id": 99}]})

    result = store.finish_copy("dst", snapshot, encryption=None)

    assert result["rows_affected"] == 4, "the snapshot taken when the copy started"
    assert store.metadata("dst")["index"] == {
        "status": "updating", "unindexed_bytes": snapshot.logical_bytes, "unindexed_rows": 4,
    }  # fmt: skip
    clock.now += 1.0
    assert store.metadata("dst")["index"] == {"status": "up-to-date"}


def test_a_branch_is_instant_and_shares_the_sources_backlog() -> None:
    clock = FakeClock()
    store = seeded(clock)

    store.branch("br", store, "src")

    assert store.metadata("br")["approx_row_count"] == 4
    assert store.metadata("br")["index"] == store.metadata("src")["index"]
    clock.now += 1.0
    assert store.metadata("br")["index"] == {"status": "up-to-date"}


def test_the_destination_must_be_empty() -> None:
    clock = FakeClock()
    store = seeded(clock)
    snapshot = store.copy_snapshot("src")
    store.write("dst", {"create_namespace": True, "schema": {"id": "uint"}})
    store.finish_copy("dst", snapshot, encryption={"mode": "default"})  # empty is fine

    with pytest.raises(BadRequest, match="not empty"):
        store.finish_copy("dst", snapshot, encryption=None)
    with pytest.raises(BadRequest, match="not empty"):
        store.branch("dst", store, "src")


async def test_a_copy_lands_whether_or_not_anyone_polls() -> None:
    async with Emulator(api_keys=[API_KEY], copy_duration_ms=200) as emulator:
        async with httpx.AsyncClient(base_url=emulator.url, headers=auth()) as http:
            await http.post("/v2/namespaces/src", json={"upsert_rows": [{"id": 1}]})
            accepted = await http.post(
                "/v2/namespaces/dst",
                json={"copy_from_namespace": "src"},
                headers={"Prefer": "respond-async"},
            )
            assert accepted.status_code == 202
            again = await http.post(
                "/v2/namespaces/dst",
                json={"copy_from_namespace": "src"},
                headers={"Prefer": "respond-async"},
            )
            assert again.status_code == 400 and "already running" in again.json()["error"]
            synchronous = await http.post(
                "/v2/namespaces/dst2", json={"copy_from_namespace": "src"}
            )
            assert synchronous.status_code == 200, "no preference: the answer waits for the copy"
            assert emulator.store.exists("dst")
            assert emulator.request_count("operation") == 0
            started = await http.post(
                "/v2/namespaces/dst3/async", json={"copy_from_namespace": "src"}
            )
            assert started.status_code == 202 and "Preference-Applied" not in started.headers
            assert started.headers["Location"].endswith(started.json()["token"])
