"""Layer's `_layer_upserted_at` is never shown to clients unless they ask for it by name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import turbopuffer
from turbopuffer.lib.namespace import Namespace

from tests.integration.conftest import (
    EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    unique_namespace,
)

STAMP = "_layer_upserted_at"


@pytest.fixture(scope="module")
def worker(module_cluster: LayerCluster) -> Iterator[WorkerProcess]:
    yield module_cluster.worker("invisible").start()


def client(base_url: str, monkeypatch: pytest.MonkeyPatch) -> turbopuffer.Turbopuffer:
    monkeypatch.delenv("TURBOPUFFER_REGION", raising=False)
    return turbopuffer.Turbopuffer(
        api_key=EMULATOR_KEY, base_url=base_url, max_retries=0, _strict_response_validation=True
    )


def strict_namespace(sdk: turbopuffer.Turbopuffer, name: str) -> Namespace:
    scoped = sdk.with_options(
        default_namespace=name, _extra_kwargs={"_strict_response_validation": True}
    )
    return Namespace(scoped)


def session(ns: Namespace) -> None:
    """The same writes, whoever they go through."""
    ns.write(
        upsert_rows=[{"id": i, "vector": [0.1 * i, 0.2], "title": f"t{i}"} for i in range(1, 4)],
        distance_metric="cosine_distance",
    )
    ns.write(upsert_columns={"id": [4, 5], "title": ["t4", "t5"], "n": [4, 5]})
    ns.write(patch_rows=[{"id": 1, "n": 10}])


def no_stamp(value: Any) -> bool:
    return STAMP not in json.dumps(value)


def test_the_schema_through_layer_equals_the_schema_written_directly(
    worker: WorkerProcess, emulator: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    through, direct = unique_namespace("via"), unique_namespace("direct")
    with client(worker.url, monkeypatch) as layer, client(emulator.url, monkeypatch) as tpuf:
        session(strict_namespace(layer, through))
        session(strict_namespace(tpuf, direct))
        assert STAMP in strict_namespace(tpuf, through).schema(), "the rows are stamped"

        assert strict_namespace(layer, through).schema() == strict_namespace(tpuf, direct).schema()
        updated = strict_namespace(layer, through).update_schema(
            schema={"title": {"type": "string", "full_text_search": True}}
        )
        assert STAMP not in updated
        meta = strict_namespace(layer, through).metadata()
        assert STAMP not in meta.schema_ and set(meta.schema_) == set(
            strict_namespace(tpuf, direct).metadata().schema_
        )
    for path in (f"/v2/namespaces/{through}/metadata", f"/v1/namespaces/{through}/metadata"):
        answer = worker.http.get(path)
        assert answer.status_code == 200 and no_stamp(answer.json()["schema"]), path


def test_query_rows_never_carry_the_stamp_unless_asked_for_by_name(
    worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_namespace("rows")
    with client(worker.url, monkeypatch) as layer:
        ns = strict_namespace(layer, name)
        session(ns)
        every = ns.query(rank_by=("id", "asc"), top_k=10, include_attributes=True)
        assert every.rows and all(STAMP not in row.model_dump() for row in every.rows)
        assert every.rows[0]["title"] == "t1"
        excluded = ns.query(rank_by=("id", "asc"), top_k=10, exclude_attributes=["n"])
        assert excluded.rows and all(STAMP not in row.model_dump() for row in excluded.rows)
        multi = ns.multi_query(
            queries=[
                {"rank_by": ("id", "asc"), "top_k": 5, "include_attributes": True},
                {"rank_by": ("vector", "ANN", [0.1, 0.2]), "top_k": 2, "include_attributes": True},
            ]
        )
        assert all(no_stamp(result.model_dump()) for result in multi.results)
        asked = ns.query(rank_by=("id", "asc"), top_k=10, include_attributes=[STAMP, "title"])
        assert asked.rows and all(row[STAMP] > 0 for row in asked.rows), "an explicit opt-in"

    gzipped = worker.http.post(
        f"/v2/namespaces/{name}/query",
        json={"rank_by": ["id", "asc"], "top_k": 10, "include_attributes": True},
        headers={"Accept-Encoding": "gzip"},
    )
    # Read whole and uncompressed from upstream, compressed (if large enough) by Layer.
    assert gzipped.status_code == 200
    assert len(gzipped.json()["rows"]) == 5 and no_stamp(gzipped.json())
