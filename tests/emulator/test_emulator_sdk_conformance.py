"""The official turbopuffer SDK (3.1.0, strict response validation) against the emulator.

The emulator runs as `python -m layer.emulator` in a subprocess and the sync SDK talks to it.
`client.namespace(...)` would drop strict validation (reference §5), so namespaces are built
with `with_options(..., _extra_kwargs={"_strict_response_validation": True})`.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import turbopuffer
from emulator_support import API_KEY, EmulatorProcess, auth
from turbopuffer.lib.namespace import Namespace
from turbopuffer.lib.vector import b64decode_vector

_names = itertools.count()


def strict_namespace(client: turbopuffer.Turbopuffer, name: str) -> Namespace:
    """A namespace resource whose responses really are strictly validated."""
    scoped = client.with_options(
        default_namespace=name, _extra_kwargs={"_strict_response_validation": True}
    )
    return Namespace(scoped)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}-{next(_names)}"


@pytest.fixture
def ns(sdk_client: turbopuffer.Turbopuffer) -> Namespace:
    return strict_namespace(sdk_client, unique("sdk"))


def seed(ns: Namespace) -> None:
    ns.write(
        upsert_rows=[
            {"id": 1, "vector": [1.0, 0.0], "title": "apple pie", "price": 5, "tags": ["sweet"]},
            {"id": 2, "vector": [0.0, 1.0], "title": "banana bread", "price": 3, "tags": []},
            {"id": 3, "vector": [0.7, 0.7], "title": "cherry tart", "price": 8, "tags": ["sweet"]},
        ],
        distance_metric="cosine_distance",
    )


def test_namespace_resources_really_validate_strictly(
    sdk_client: turbopuffer.Turbopuffer, ns: Namespace
) -> None:
    assert ns._client._strict_response_validation is True
    # The SDK's own shortcut drops the flag, which is why the tests do not use it.
    assert sdk_client.namespace("x")._client._strict_response_validation is False
    assert sdk_client._strict_response_validation is True


def test_write_rows_returns_a_valid_write_result_with_affected_ids(ns: Namespace) -> None:
    result = ns.write(
        upsert_rows=[{"id": 1, "vector": [0.1, 0.2], "kind": "a"}],
        distance_metric="euclidean_squared",
        return_affected_ids=True,
    )

    assert result.status == "OK"
    assert result.rows_affected == 1
    assert result.rows_upserted == 1
    assert result.upserted_ids == [1]
    assert result.billing.billable_logical_bytes_written > 0


def test_write_columns_patches_and_deletes_are_visible_to_queries(ns: Namespace) -> None:
    ns.write(
        upsert_columns={"id": ["a", "b", "c"], "vector": [[1.0, 0.0]] * 3, "n": [1, 2, None]},
        distance_metric="cosine_distance",
    )
    patched = ns.write(patch_rows=[{"id": "a", "n": 10}, {"id": "zzz", "n": 0}], deletes=["b"])
    rows = ns.query(rank_by=("id", "asc"), top_k=10, include_attributes=["n"]).rows

    assert patched.rows_patched == 1, "patching an unknown id is ignored"
    assert patched.rows_deleted == 1
    assert rows is not None
    assert [(r.id, r["n"] if "n" in r else None) for r in rows] == [("a", 10), ("c", None)]


def test_vector_query_ranks_by_exact_cosine_distance(ns: Namespace) -> None:
    seed(ns)

    rows = ns.query(rank_by=("vector", "ANN", [1.0, 0.1]), top_k=2, include_attributes=True).rows

    assert rows is not None
    assert [r.id for r in rows] == [1, 3]
    expected = 1 - 1.0 / math.hypot(1.0, 0.1)
    assert rows[0]["$dist"] == pytest.approx(expected, rel=1e-5)
    assert rows[0]["title"] == "apple pie"
    assert rows[0].vector == pytest.approx([1.0, 0.0])


def test_attribute_order_with_filters_and_limit(ns: Namespace) -> None:
    seed(ns)

    rows = ns.query(
        rank_by=("price", "desc"),
        limit=5,
        filters=(
            "And",
            (("price", "Gte", 3), ("Or", (("tags", "Contains", "sweet"), ("title", "Glob", "b*")))),
        ),
        include_attributes=["price"],
    ).rows

    assert rows is not None
    assert [(r.id, r["price"]) for r in rows] == [(3, 8), (1, 5), (2, 3)]
    assert all("$dist" not in r for r in rows)


def test_base64_vector_encoding_returns_decodable_vectors(ns: Namespace) -> None:
    seed(ns)

    rows = ns.query(
        rank_by=("id", "asc"), top_k=1, include_attributes=["vector"], vector_encoding="base64"
    ).rows

    assert rows is not None
    assert isinstance(rows[0].vector, str)
    assert b64decode_vector(rows[0].vector) == pytest.approx([1.0, 0.0])


def test_multi_query_returns_one_result_per_subquery(ns: Namespace) -> None:
    seed(ns)

    response = ns.multi_query(
        queries=[
            {"rank_by": ("vector", "ANN", [0.0, 1.0]), "top_k": 1},
            {"rank_by": ("price", "asc"), "top_k": 3, "filters": ("id", "NotEq", 2)},
            {"aggregate_by": {"count": ("Count",)}},
        ]
    )

    assert len(response.results) == 3
    assert [r.id for r in response.results[0].rows or []] == [2]
    assert [r.id for r in response.results[1].rows or []] == [1, 3]
    assert response.results[2].aggregations == {"count": 3}
    assert response.performance.approx_namespace_size == 3


def test_metadata_reports_counts_schema_and_index_status(ns: Namespace) -> None:
    seed(ns)

    meta = ns.metadata()

    assert meta.approx_row_count == 3
    assert meta.approx_logical_bytes > 0
    assert meta.index.status == "up-to-date"
    assert meta.encryption.mode == "default"
    assert meta.schema_["vector"].type == "[2]f32"
    assert meta.schema_["title"].type == "string"
    assert meta.updated_at >= meta.created_at


def test_update_metadata_sets_read_only_and_pinning(ns: Namespace) -> None:
    seed(ns)

    meta = ns.update_metadata(read_only=True, pinning={"replicas": 2})

    assert meta.read_only is True
    assert meta.pinning is not None and meta.pinning.replicas == 2
    with pytest.raises(turbopuffer.PermissionDeniedError):
        ns.write(upsert_rows=[{"id": 9}])


def test_listing_pages_through_every_namespace_with_a_prefix(
    sdk_client: turbopuffer.Turbopuffer, emulator_process: EmulatorProcess
) -> None:
    prefix = unique("list")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in names:
        strict_namespace(sdk_client, name).write(upsert_rows=[{"id": 1}])
    strict_namespace(sdk_client, unique("other")).write(upsert_rows=[{"id": 1}])
    httpx.post(f"{emulator_process.url}/_emulator/stats/reset", headers=auth()).raise_for_status()

    listed = [summary.id for summary in sdk_client.namespaces(prefix=prefix, page_size=2)]

    stats = httpx.get(f"{emulator_process.url}/_emulator/stats", headers=auth()).json()
    assert listed == names
    assert stats["routes"]["list"] == 3, "five names in pages of two take three requests"


def test_schema_get_and_update(ns: Namespace) -> None:
    seed(ns)

    updated = ns.update_schema(schema={"title": {"type": "string", "glob": True}, "sku": "uuid"})
    schema = ns.schema()

    assert updated["title"].glob is True
    assert schema["sku"].type == "uuid"
    assert schema["price"].type == "int"
    assert ns.exists() is True


def test_hint_cache_warm_explain_and_delete(ns: Namespace) -> None:
    seed(ns)

    warm = ns.hint_cache_warm()
    plan = ns.explain_query(rank_by=("id", "asc"))
    deleted = ns.delete_all()

    assert warm.status == "ACCEPTED"
    assert plan.plan_text
    assert deleted.status == "OK"
    assert ns.exists() is False
    with pytest.raises(turbopuffer.NotFoundError):
        ns.metadata()


def test_wrong_key_raises_authentication_error(emulator_process: EmulatorProcess) -> None:
    client = turbopuffer.Turbopuffer(
        api_key="not-" + API_KEY,
        base_url=emulator_process.url,
        max_retries=0,
        _strict_response_validation=True,
    )
    with client, pytest.raises(turbopuffer.AuthenticationError) as raised:
        list(client.namespaces())

    assert raised.value.status_code == 401
    assert isinstance(raised.value.body, dict) and raised.value.body["status"] == "error"


def test_malformed_query_raises_bad_request(ns: Namespace) -> None:
    seed(ns)

    with pytest.raises(turbopuffer.BadRequestError, match="not supported"):
        ns.query(rank_by=("title", "BM25", "pie"), top_k=1)


# --- copy_from and branch_from (reference §2, §3.3, §3.11) -------------------------------


def set_copy_duration(emulator_process: EmulatorProcess, duration_ms: int) -> None:
    httpx.post(
        f"{emulator_process.url}/_emulator/copy", json={"duration_ms": duration_ms}, headers=auth()
    ).raise_for_status()


@pytest.fixture
def slow_copies(emulator_process: EmulatorProcess) -> Iterator[int]:
    """Copies take 1.5 s while the test runs: the SDK sees `running` at least once."""
    set_copy_duration(emulator_process, 1500)
    yield 1500
    set_copy_duration(emulator_process, 0)


def test_copy_from_copies_every_document_as_new_unindexed_data(
    sdk_client: turbopuffer.Turbopuffer, ns: Namespace
) -> None:
    seed(ns)
    dest = strict_namespace(sdk_client, unique("copy"))

    result = dest.copy_from(source_namespace=ns._client.default_namespace or "")

    assert result.status == "OK" and result.rows_affected == 3
    assert result.billing.billable_logical_bytes_written > 0
    assert dest.metadata().approx_row_count == 3
    assert dest.schema()["title"].type == "string"
    rows = dest.query(rank_by=("id", "asc"), top_k=5, include_attributes=["title"]).rows
    assert [(r.id, r["title"]) for r in rows or []] == [
        (1, "apple pie"), (2, "banana bread"), (3, "cherry tart"),
    ]  # fmt: skip


def test_copy_from_takes_the_object_form_with_key_region_and_encryption(
    sdk_client: turbopuffer.Turbopuffer, ns: Namespace, emulator_process: EmulatorProcess
) -> None:
    seed(ns)
    name = unique("copy")
    source = ns._client.default_namespace or ""
    with httpx.Client(base_url=emulator_process.url, headers=auth()) as raw:
        sent = raw.post(
            f"/v2/namespaces/{name}?stainless_overload=copyFrom",
            json={
                "copy_from_namespace": {
                    "source_namespace": source,
                    "source_api_key": API_KEY,
                    "source_region": "gcp-us-central1",
                    "dest_encryption": {"mode": "customer-managed", "key_name": "k1"},
                }
            },
        )
    assert sent.status_code == 200, sent.text
    meta = strict_namespace(sdk_client, name).metadata()
    assert meta.approx_row_count == 3
    assert meta.encryption.mode == "customer-managed"


def test_copy_errors_are_turbopuffer_errors(
    sdk_client: turbopuffer.Turbopuffer, ns: Namespace
) -> None:
    seed(ns)
    source = ns._client.default_namespace or ""
    other = strict_namespace(sdk_client, unique("full"))
    seed(other)

    with pytest.raises(turbopuffer.NotFoundError):
        strict_namespace(sdk_client, unique("copy")).copy_from(source_namespace=unique("nope"))
    with pytest.raises(turbopuffer.BadRequestError, match="not empty"):
        other.copy_from(source_namespace=source)
    with pytest.raises(turbopuffer.BadRequestError, match="not empty"):
        other.branch_from(source_namespace=source)
    with pytest.raises(turbopuffer.PermissionDeniedError, match="source_api_key"):
        strict_namespace(sdk_client, unique("copy")).copy_from(
            source_namespace=source, source_api_key="not-a-key"
        )


def test_branch_from_is_an_instant_clone_with_the_sources_index_state(
    sdk_client: turbopuffer.Turbopuffer, ns: Namespace, emulator_process: EmulatorProcess
) -> None:
    seed(ns)
    source = ns._client.default_namespace or ""
    ns.update_metadata(pinning=True)
    branch = strict_namespace(sdk_client, unique("branch"))

    result = branch.branch_from(source_namespace=source)
    ns.write(upsert_rows=[{"id": 4, "vector": [0.5, 0.5], "title": "date"}])

    assert result.status == "OK" and result.rows_affected == 3
    meta = branch.metadata()
    assert meta.approx_row_count == 3, "copy-on-write: later source writes stay in the source"
    assert meta.pinning is None, "pinning is not carried over"
    assert meta.index.status == "up-to-date"
    assert branch.schema() == ns.schema() | {}, "the same schema"


def test_respond_async_copy_from_is_polled_by_the_sdks_own_poller(
    sdk_client: turbopuffer.Turbopuffer,
    ns: Namespace,
    emulator_process: EmulatorProcess,
    slow_copies: int,
) -> None:
    seed(ns)
    dest = strict_namespace(sdk_client, unique("async"))
    httpx.post(f"{emulator_process.url}/_emulator/stats/reset", headers=auth()).raise_for_status()

    result = dest.copy_from(source_namespace=ns._client.default_namespace or "")

    assert result.status == "OK" and result.rows_affected == 3
    stats = httpx.get(f"{emulator_process.url}/_emulator/stats", headers=auth()).json()
    assert stats["routes"]["write"] == 1
    assert stats["routes"]["operation"] >= 2, "polled while running, then finished"
    assert dest.metadata().approx_row_count == 3


def test_respond_async_copy_over_raw_http_202_location_running_then_finished(
    ns: Namespace, emulator_process: EmulatorProcess, slow_copies: int
) -> None:
    seed(ns)
    name = unique("async")
    with httpx.Client(base_url=emulator_process.url, headers=auth()) as raw:
        accepted = raw.post(
            f"/v2/namespaces/{name}",
            json={"copy_from_namespace": ns._client.default_namespace},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        assert accepted.headers["Preference-Applied"] == "respond-async"
        token = accepted.json()["token"]
        assert accepted.headers["Location"] == f"/v1/namespaces/{name}/operations/{token}"
        running = raw.get(accepted.headers["Location"]).json()
        assert running["status"] == "running" and running["start_time"]
        assert raw.get(f"/v2/namespaces/{name}/metadata").status_code == 404, "not landed yet"
        deadline = time.monotonic() + 10
        while (polled := raw.get(accepted.headers["Location"]).json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert raw.get(f"/v1/namespaces/{name}/operations/{token}x").status_code == 404
    assert polled["result"]["success"]["rows_affected"] == 3
    assert polled["finish_time"] >= polled["start_time"]


def test_a_copy_whose_destination_was_written_meanwhile_finishes_with_an_error(
    sdk_client: turbopuffer.Turbopuffer,
    ns: Namespace,
    emulator_process: EmulatorProcess,
    slow_copies: int,
) -> None:
    seed(ns)
    dest = strict_namespace(sdk_client, unique("async"))
    token = dest.start_copy_from(source_namespace=ns._client.default_namespace or "").token
    dest.write(upsert_rows=[{"id": 99}])

    deadline = time.monotonic() + 10
    while (operation := dest.poll_copy_from(token)).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)

    assert operation.result.error is not None
    assert operation.result.error.status_code == 400
    with pytest.raises(turbopuffer.BadRequestError, match="not empty"):
        strict_namespace(sdk_client, dest._client.default_namespace or "").copy_from(
            source_namespace=ns._client.default_namespace or ""
        )
