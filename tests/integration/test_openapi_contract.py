"""The OpenAPI document is the contract: schemathesis, with all its checks, against a live worker.

One worker of its own (real embedded broker, an emulator of this module's upstream) serves
`/openapi.json`; the document under test is built by the same code and checked equal to
what the worker serves. schemathesis generates requests for every operation in it
(examples; coverage: boundaries, every kind of invalid value, methods the route does not
serve, missing and wrong credentials; fuzzing: valid and invalid data), sends them to the
worker authenticated with the emulator key, and validates every answer with every check it
has: no server error, status code documented, content type documented, body valid against
its schema, documented headers present, valid data accepted, invalid data rejected, an
unsupported method is a 405 with `Allow`, auth enforced (no key and a wrong key are
refused). Routes that call upstream call the emulator. ~10 s for 100 examples per operation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from api.openapi import EXAMPLE_NAMESPACE, openapi_document
from layer.embedded_broker import EmbeddedBroker
from tests.integration.conftest import (
    EMULATOR_KEY,
    EmulatorProcess,
    LayerCluster,
    WorkerProcess,
    wait_until,
)

AUTH = {"Authorization": f"Bearer {EMULATOR_KEY}"}

#: Enough to cover each operation's parameters (the coverage phase enumerates boundaries and
#: invalid values deterministically; fuzzing adds random ones) in well under a minute.
MAX_EXAMPLES = int(os.environ.get("LAYER_CONTRACT_MAX_EXAMPLES", "100"))

CONFIG: dict[str, Any] = {
    # Reproducible runs: the same requests every time (LAYER_CONTRACT_SEED explores others).
    "seed": int(os.environ.get("LAYER_CONTRACT_SEED", "1")),
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
    # Every check schemathesis has (its default). Stateful needs OpenAPI links, which the
    # document has none of; the other phases all run.
    "checks": {"enabled": True},
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
    # The emulator key: upstream accepts it, and it is the worker's own TURBOPUFFER_API_KEY,
    # so it is also the operator's key `/metrics` takes.
    "auth": {"openapi": {"bearerAuth": {"bearer": EMULATOR_KEY}}},
    "request-timeout": 15,
    "operations": [
        # A stream answers until the client leaves: schemathesis would wait for its end
        # (tests/integration/test_stability_stream.py tests it with a streaming client).
        {"include-operation-id": "followStabilityEvents", "enabled": False},
        {
            # `cursor` is opaque: only a `next_cursor` upstream handed out is one, and upstream
            # answers 400 ("invalid cursor", passed through) to any other string. No schema can
            # say which strings those are, so on this operation a schema-valid request may be
            # a 400; test_valid_listing_parameters_are_accepted covers the other parameters.
            "include-operation-id": "listNamespaces",
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", 400, 401, 403, 404, 409, 429, "5xx"]
                }
            },
        },
    ],
}


@pytest.fixture(scope="module")
def own_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator of this module's own: the listing sees only the namespaces made here
    (the shared one holds every other test's, and each row costs a metadata call)."""
    running = EmulatorProcess(
        tmp_path_factory.mktemp("contract-emulator") / "emulator.log", api_keys=(EMULATOR_KEY,)
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def worker(
    broker: EmbeddedBroker, own_emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker whose example namespace exists upstream and has a snapshot, so the examples
    the document gives are answered 200 (generated names are mostly upstream's 404s)."""
    cluster = LayerCluster(broker, own_emulator, tmp_path_factory.mktemp("contract"))
    running = cluster.worker("contract").start()
    for name in (EXAMPLE_NAMESPACE, f"{EXAMPLE_NAMESPACE}-2"):
        own_emulator.write(name, {"upsert_rows": [{"id": 1, "title": name}]})
        own_emulator.force_indexing(name)
    running.metadata(EXAMPLE_NAMESPACE)  # registers it with the watcher
    wait_until(
        lambda: (
            running.http.get(f"/v2/namespaces/{EXAMPLE_NAMESPACE}/snapshots")
            .json()
            .get("snapshots")
        ),
        20,
        "a snapshot of the example namespace",
    )
    yield running
    cluster.stop()


#: The document, built in-process by the code that serves it; the first test checks that the
#: worker serves exactly this. (Loading it from the worker with `schemathesis.pytest.
#: from_fixture` would be the same document, but schemathesis 4.32's lazy loader breaks on
#: pytest 9.2: it rewrites `request.node._nodeid`, which pytest no longer has.)
contract = schemathesis.openapi.from_dict(
    openapi_document(), config=SchemathesisConfig.from_dict(CONFIG)
)


def test_the_worker_serves_the_document_under_test(worker: WorkerProcess) -> None:
    assert worker.http.get("/openapi.json").json() == openapi_document()


@contract.parametrize()
def test_every_answer_honours_the_document(case: Any, worker: WorkerProcess) -> None:
    case.call_and_validate(base_url=worker.url)


# --- what schemathesis checks, stated once more where it is easy to read ------------------


def test_the_document_lists_layers_routes_with_their_statuses(worker: WorkerProcess) -> None:
    document = worker.http.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert document["security"] == [{"bearerAuth": []}]
    paths = document["paths"]
    assert set(paths) == {
        "/v2/namespaces", "/v2/namespaces/{namespace}/metadata",
        "/v2/namespaces/{namespace}/snapshots", "/v2/namespaces/{namespace}/warm",
        "/v2/operations/{operation_id}", "/v2/stability/events", "/metrics", "/healthz",
        "/readyz",
    }  # fmt: skip
    assert paths["/healthz"]["get"]["security"] == [] == paths["/readyz"]["get"]["security"]
    snapshots = paths["/v2/namespaces/{namespace}/snapshots"]["get"]
    assert {"200", "400", "401", "403", "404", "429", "502", "503", "504"} <= set(
        snapshots["responses"]
    )
    assert "Retry-After" in snapshots["responses"]["503"]["headers"]
    params = {p["name"]: p["schema"] for p in snapshots["parameters"]}
    assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 1000
    assert params["as_of"]["maximum"] == 2**53
    metrics = paths["/metrics"]["get"]
    assert set(metrics["responses"]) == {"200", "401", "403", "429", "503"}
    assert "text/plain" in metrics["responses"]["200"]["content"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/v2/namespaces/x/metadata", "GET, HEAD"),
        ("PATCH", "/v2/namespaces/x/metadata", "GET, HEAD"),
        ("OPTIONS", "/v2/namespaces", "GET, HEAD"),
        ("POST", "/v2/namespaces", "GET, HEAD"),
        ("DELETE", "/v2/namespaces/x/snapshots", "GET, HEAD"),
        ("TRACE", "/v2/namespaces/x/snapshots", "GET, HEAD"),
        ("GET", "/v2/namespaces/x/warm", "POST"),
        ("HEAD", "/v2/namespaces/x/warm", "POST"),
        ("PUT", "/v2/operations/abc", "GET, HEAD"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("TRACE", "/metrics", "GET, HEAD"),
        ("DELETE", "/healthz", "GET, HEAD"),
        ("OPTIONS", "/readyz", "GET, HEAD"),
    ],
)
def test_a_method_a_layer_route_does_not_serve_is_405_with_allow(
    worker: WorkerProcess, method: str, path: str, allow: str
) -> None:
    response = httpx.request(method, f"{worker.url}{path}", headers=AUTH)
    assert response.status_code == 405, response.text
    assert response.headers["Allow"] == allow
    if method != "HEAD":
        assert response.json() == {"status": "error", "error": f"method {method} not allowed"}


@pytest.mark.parametrize(
    "query",
    [
        "page_size=", "page_size=ten", "page_size=1.0", "page_size=%201", "page_size=1_0",
        "page_size=0", "page_size=1001", "prefix=a/b", "prefix=" + "a" * 129,
        "cursor=" + "c" * 2049, "cursor=%C3%BE", "cursor=a%20b",
    ],
)  # fmt: skip
def test_a_listing_parameter_given_must_be_valid(worker: WorkerProcess, query: str) -> None:
    response = worker.http.get(f"/v2/namespaces?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "error"


@pytest.mark.parametrize(
    "query", ["limit=", "limit=0", "limit=1001", "before=", "before=-1", "as_of=", "as_of=x",
              f"as_of={2**53 + 1}"],
)  # fmt: skip
def test_a_snapshots_parameter_given_must_be_valid(worker: WorkerProcess, query: str) -> None:
    response = worker.http.get(f"/v2/namespaces/x/snapshots?{query}")
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "query", ["page_size=1", "page_size=1000", "page_size=%2B7", "prefix=", "prefix=" + "a" * 128,
              "prefix=a.b-c_D9", "cursor=", "page_size=100&prefix=x&cursor="],
)  # fmt: skip
def test_valid_listing_parameters_are_accepted(worker: WorkerProcess, query: str) -> None:
    response = worker.http.get(f"/v2/namespaces?{query}")
    assert response.status_code == 200, response.text
