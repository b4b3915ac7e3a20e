"""Namespace state: documents, schema, and the write-ahead log that is indexed asynchronously.

## Indexing model
- Every write that affects rows appends one entry (rows, bytes) to its namespace's WAL.
- An entry becomes indexable `delay_ms` after its write; indexing then drains entries in order
  at `rate_rows_per_s` (unlimited when None). Progress is simulated from the clock on every
  read, so there is no background task and a test with a fake clock is exact.
- Pausing freezes the simulated indexer; time spent paused never counts towards the rate.
  A pause is per namespace *name* and survives the namespace being deleted and re-created, so
  a test can pause before the first write. Forcing drains the WAL at once, even when paused.
- Queries always see every write (strong consistency); the WAL only drives `index` in the
  metadata and `exhaustive_search_count` in query performance.

## Copies and branches (reference §3.3, §3.11)
- `copy_from_namespace` takes a snapshot of the source when it starts (`copy_snapshot`) and
  lands it in the destination when it finishes (`finish_copy`): the copy is new, unindexed
  data (one WAL entry of all its rows) that indexes like any write. The destination must be
  empty (absent, or without documents) both when the copy starts and when it lands.
- `branch_from_namespace` is instant (`branch`): a copy-on-write clone shares the source's
  index, so the branch starts with the source's documents, schema, `read_only` flag and
  unindexed backlog; pinning is not carried over. The destination must be empty too.
- Either is a write on its own: combined with other write fields it is a 400.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .query import DistanceMetric, Document, QueryError, execute_query, matches
from .vectors import VectorError, decode_vector, is_vector_type

__all__ = [
    "COPY_FIELDS",
    "BadRequest",
    "CopySnapshot",
    "CopySpec",
    "Forbidden",
    "IndexingConfig",
    "NAMESPACE_NAME",
    "NamespaceNotFound",
    "QueryOutcome",
    "Store",
    "StoreError",
    "WriteAheadLog",
    "decode_cursor",
    "encode_cursor",
    "page_namespaces",
]

#: turbopuffer's namespace name rule (reference §4).
NAMESPACE_NAME = re.compile(r"^[A-Za-z0-9\-_.]{1,128}$")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: The largest `top_k`/`limit` turbopuffer's docs allow per page (reference §4).
DEFAULT_MAX_TOP_K = 10_000
#: Subqueries per multi-query (reference §3.5).
MAX_SUBQUERIES = 16
DEFAULT_METRIC: DistanceMetric = "cosine_distance"
#: The attribute that always holds a document's primary vector.
VECTOR = "vector"
#: Absorbs float error when turning fractional remaining rows back into a count.
_ROW_EPSILON = 1e-9

_WRITE_FIELDS = frozenset(
    {
        "upsert_rows",
        "upsert_columns",
        "patch_rows",
        "patch_columns",
        "deletes",
        "delete_by_filter",
        "delete_by_filter_allow_partial",
        "patch_by_filter",
        "patch_by_filter_allow_partial",
        "distance_metric",
        "schema",
        "create_namespace",
        "return_affected_ids",
        "disable_backpressure",
        "encryption",
        "sharding",
        "copy_from_namespace",
        "branch_from_namespace",
    }
)
#: The write fields that copy a whole namespace into the destination.
COPY_FIELDS = ("copy_from_namespace", "branch_from_namespace")
_METRICS = frozenset({"cosine_distance", "euclidean_squared"})
_ENCRYPTION_MODES = frozenset({"default", "customer-managed"})


class StoreError(Exception):
    """A request the store refuses; `status` is the HTTP status the server answers with."""

    status = 500


class BadRequest(StoreError):
    status = 400


class Forbidden(StoreError):
    status = 403


class NamespaceNotFound(StoreError):
    status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"namespace '{name}' was not found")


# --- copies and branches -----------------------------------------------------------------


@dataclass(frozen=True)
class CopySpec:
    """A `copy_from_namespace` / `branch_from_namespace` value, in either of its wire forms:
    a plain source name, or `{source_namespace, source_api_key?, source_region?,
    dest_encryption?}` (the SDK's `copy_from` sends the object form, with the parameters the
    caller gave; `branch_from` sends `{source_namespace}`)."""

    field: str
    source_namespace: str
    source_api_key: str | None = None
    source_region: str | None = None
    dest_encryption: dict[str, object] | None = None

    @property
    def is_branch(self) -> bool:
        return self.field == "branch_from_namespace"


_COPY_KEYS = frozenset({"source_namespace", "source_api_key", "source_region", "dest_encryption"})
_BRANCH_KEYS = frozenset({"source_namespace"})
#: Fields a copy or branch may come with (they change nothing but the answer).
_COPY_COMPANIONS = frozenset({"return_affected_ids", "disable_backpressure"})


def copy_spec(body: Mapping[str, object]) -> CopySpec | None:
    """The copy or branch a write body asks for (None: an ordinary write); BadRequest if
    malformed or combined with anything else."""
    present = [name for name in COPY_FIELDS if body.get(name) is not None]
    if not present:
        return None
    if len(present) > 1:
        raise BadRequest("copy_from_namespace and branch_from_namespace cannot be combined")
    field_name = present[0]
    others = set(body) - {field_name} - _COPY_COMPANIONS
    if others:
        raise BadRequest(f"{field_name} cannot be combined with {sorted(others)}")
    value = body[field_name]
    if isinstance(value, str):
        value = {"source_namespace": value}
    if not isinstance(value, dict):
        raise BadRequest(f"{field_name} must be a namespace name or an object")
    allowed = _BRANCH_KEYS if field_name == "branch_from_namespace" else _COPY_KEYS
    unknown = set(value) - allowed
    if unknown:
        raise BadRequest(f"{field_name}: unknown fields {sorted(unknown)}")
    source = value.get("source_namespace")
    if not isinstance(source, str) or not NAMESPACE_NAME.match(source):
        raise BadRequest(f"{field_name}.source_namespace must be a valid namespace name")
    for name in ("source_api_key", "source_region"):
        if value.get(name) is not None and not isinstance(value[name], str):
            raise BadRequest(f"{field_name}.{name} must be a string")
    encryption = value.get("dest_encryption")
    if encryption is not None and not (
        isinstance(encryption, dict) and encryption.get("mode") in _ENCRYPTION_MODES
    ):
        raise BadRequest('dest_encryption.mode must be "default" or "customer-managed"')
    return CopySpec(
        field=field_name,
        source_namespace=source,
        source_api_key=value.get("source_api_key"),
        source_region=value.get("source_region"),
        dest_encryption=dict(encryption) if encryption is not None else None,
    )


@dataclass(frozen=True)
class CopySnapshot:
    """A source namespace's content as of the moment a copy started."""

    source: str
    docs: dict[str, dict[str, object]]
    schema: dict[str, dict[str, object]]
    distance_metric: DistanceMetric | None

    @property
    def logical_bytes(self) -> int:
        return sum(_json_size(doc) for doc in self.docs.values())


# --- listing -----------------------------------------------------------------------------


def encode_cursor(last_name: str) -> str:
    """An opaque cursor meaning "names after `last_name`"."""
    return base64.urlsafe_b64encode(last_name.encode()).decode("ascii")


def decode_cursor(cursor: str) -> str:
    """The last name of the previous page; BadRequest for a cursor we did not issue."""
    try:
        return base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeError, ValueError):
        raise BadRequest("invalid cursor") from None


def page_namespaces(
    names: Iterable[str], *, prefix: str, cursor: str | None, page_size: int
) -> tuple[list[str], str | None]:
    """One page of names sorted by id, and the cursor for the next (None on the last page)."""
    after = decode_cursor(cursor) if cursor else None
    candidates = sorted(n for n in names if n.startswith(prefix) and (after is None or n > after))
    page = candidates[:page_size]
    more = len(candidates) > page_size
    return page, encode_cursor(page[-1]) if more else None


# --- indexing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexingConfig:
    """How fast writes get indexed: a delay after each write, then a drain rate."""

    delay_ms: int = 0
    #: None means an eligible entry is indexed instantly.
    rate_rows_per_s: float | None = None


@dataclass
class _WalEntry:
    written_at: float
    rows: int
    bytes: int
    remaining_rows: float


@dataclass
class WriteAheadLog:
    """The unindexed writes of one namespace, drained by a simulated indexer."""

    config: IndexingConfig
    paused: bool = False
    _entries: deque[_WalEntry] = field(default_factory=deque)
    #: The simulated indexer's own clock: it has done all its work up to this instant.
    _indexed_until: float = -math.inf

    def append(self, rows: int, nbytes: int, *, now: float) -> None:
        self.advance(now=now)
        if rows > 0:
            self._entries.append(_WalEntry(now, rows, nbytes, float(rows)))

    def advance(self, *, now: float) -> None:
        """Index whatever the delay and rate allow up to `now`."""
        if self.paused:
            return
        delay_s = self.config.delay_ms / 1000
        rate = self.config.rate_rows_per_s
        while self._entries:
            head = self._entries[0]
            start = max(self._indexed_until, head.written_at + delay_s)
            if start > now:
                return
            finish = start if rate is None else start + head.remaining_rows / rate
            if finish <= now:
                self._entries.popleft()
                self._indexed_until = finish
                continue
            assert rate is not None
            head.remaining_rows -= (now - start) * rate
            self._indexed_until = now
            return

    def pause(self, *, now: float) -> None:
        self.advance(now=now)
        self.paused = True

    def resume(self, *, now: float) -> None:
        if self.paused:
            self.paused = False
            self._indexed_until = max(self._indexed_until, now)
        self.advance(now=now)

    def force(self, *, now: float) -> None:
        self._entries.clear()
        self._indexed_until = max(self._indexed_until, now)

    @property
    def unindexed_rows(self) -> int:
        return sum(math.ceil(e.remaining_rows - _ROW_EPSILON) for e in self._entries)

    @property
    def unindexed_bytes(self) -> int:
        return sum(
            math.ceil(e.bytes * e.remaining_rows / e.rows - _ROW_EPSILON) for e in self._entries
        )

    def index_status(self) -> dict[str, object]:
        """The metadata `index` object (both counts are required in the `updating` form)."""
        if not self._entries:
            return {"status": "up-to-date"}
        return {
            "status": "updating",
            "unindexed_bytes": self.unindexed_bytes,
            "unindexed_rows": self.unindexed_rows,
        }


# --- namespaces --------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def _id_key(doc_id: object) -> str:
    """Distinguishes `1` from `"1"` as dict keys."""
    return json.dumps(doc_id)


def _validate_id(doc_id: object) -> int | str:
    if isinstance(doc_id, bool) or not isinstance(doc_id, int | str):
        raise BadRequest(f"document id must be an unsigned integer or a string, got {doc_id!r}")
    if isinstance(doc_id, int) and doc_id < 0:
        raise BadRequest(f"document id must not be negative, got {doc_id}")
    return doc_id


def _infer_type(value: object) -> str | None:
    """The schema type turbopuffer infers from a JSON value (None for null/unknown)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and value:
        element = _infer_type(value[0])
        return f"[]{element}" if element and not element.startswith("[") else None
    return None


@dataclass
class Namespace:
    """Everything the emulator knows about one namespace, in one record."""

    name: str
    created_at: datetime
    updated_at: datetime
    wal: WriteAheadLog
    docs: dict[str, Document] = field(default_factory=dict)
    schema: dict[str, dict[str, object]] = field(default_factory=dict)
    distance_metric: DistanceMetric | None = None
    encryption: dict[str, object] = field(default_factory=lambda: {"mode": "default"})
    sharding: dict[str, object] | None = None
    read_only: bool = False
    pinned_replicas: int | None = None

    @property
    def metric(self) -> DistanceMetric:
        return self.distance_metric or DEFAULT_METRIC

    @property
    def vector_attrs(self) -> frozenset[str]:
        declared = {
            name for name, cfg in self.schema.items() if is_vector_type(str(cfg.get("type", "")))
        }
        return frozenset(declared | {VECTOR})

    def approx_logical_bytes(self) -> int:
        return sum(_json_size(doc) for doc in self.docs.values())


def _merge_schema(
    current: Mapping[str, dict[str, object]], changes: object
) -> dict[str, dict[str, object]]:
    """The schema after applying a bare `{attr: type | config | {"drop": true}}` map."""
    if not isinstance(changes, dict):
        raise BadRequest("schema must be an object mapping attribute names to types")
    merged = {name: dict(cfg) for name, cfg in current.items()}
    for name, change in changes.items():
        if isinstance(change, str):
            change = {"type": change}
        if not isinstance(change, dict):
            raise BadRequest(f"schema for {name!r} must be a type string or an object")
        if change.get("drop") is True:
            merged.pop(name, None)
            continue
        existing = merged.get(name)
        new_type = change.get("type", existing.get("type") if existing else None)
        if not isinstance(new_type, str):
            raise BadRequest(f"schema for new attribute {name!r} needs a type")
        if existing is not None and existing.get("type") != new_type:
            raise BadRequest(
                f"cannot change the type of {name!r} from {existing.get('type')} to {new_type}"
            )
        merged[name] = {**(existing or {}), **change, "type": new_type}
    return merged


def _rows_from_columns(columns: object, *, field_name: str) -> list[dict[str, object]]:
    """Columnar `{id: [...], attr: [...]}` as rows; a null cell means "no value"."""
    if not isinstance(columns, dict) or not isinstance(columns.get("id"), list):
        raise BadRequest(f"{field_name} must be an object with an `id` array")
    ids: list[object] = columns["id"]
    rows: list[dict[str, object]] = [{"id": doc_id} for doc_id in ids]
    for name, values in columns.items():
        if name == "id":
            continue
        if name == VECTOR and not (isinstance(values, list) and len(values) == len(ids)):
            # A single vector shared by every row.
            values = [values] * len(ids)
        if not isinstance(values, list) or len(values) != len(ids):
            raise BadRequest(f"{field_name}.{name} must be an array as long as `id`")
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return rows


def _rows(
    body: Mapping[str, object], rows_field: str, columns_field: str
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    raw_rows = body.get(rows_field)
    if raw_rows is not None:
        if not (isinstance(raw_rows, list) and all(isinstance(r, dict) for r in raw_rows)):
            raise BadRequest(f"{rows_field} must be an array of objects")
        rows.extend(raw_rows)
    if body.get(columns_field) is not None:
        rows.extend(_rows_from_columns(body[columns_field], field_name=columns_field))
    return rows


@dataclass(frozen=True)
class QueryOutcome:
    """Results plus the figures the server reports in `performance` and `billing`."""

    results: list[dict[str, object]]
    namespace_size: int
    exhaustive_search_count: int
    bytes_queried: int
    bytes_returned: int


@dataclass
class Store:
    """All namespaces of one emulator. Clocks are injected so indexing is testable."""

    indexing: IndexingConfig = field(default_factory=IndexingConfig)
    max_top_k: int = DEFAULT_MAX_TOP_K
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)

    # -- lookup --

    def _get(self, name: str) -> Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            raise NamespaceNotFound(name)
        ns.wal.advance(now=self.clock())
        return ns

    def _new(self, name: str) -> Namespace:
        """A namespace record, registered by the caller once its first write is valid."""
        now = self.wall_clock()
        return Namespace(
            name=name,
            created_at=now,
            updated_at=now,
            wal=WriteAheadLog(self.indexing, paused=name in self.paused),
        )

    def seed(self, names: Iterable[str]) -> int:
        """Create empty, indexed namespaces (benchmarks at a million namespaces: one write
        each through the API would take minutes). Existing ones are left as they are."""
        created = 0
        for name in names:
            if name not in self.namespaces:
                self.namespaces[name] = self._new(name)
                created += 1
        return created

    def list_page(
        self, *, prefix: str, cursor: str | None, page_size: int
    ) -> tuple[list[str], str | None]:
        return page_namespaces(self.namespaces, prefix=prefix, cursor=cursor, page_size=page_size)

    # -- metadata, schema, lifecycle --

    def metadata(self, name: str) -> dict[str, object]:
        """The NamespaceMetadata body (reference §3.2)."""
        ns = self._get(name)
        body: dict[str, object] = {
            "schema": self._schema_with_id(ns),
            "approx_logical_bytes": ns.approx_logical_bytes(),
            "approx_row_count": len(ns.docs),
            "created_at": _iso(ns.created_at),
            "updated_at": _iso(ns.updated_at),
            "encryption": ns.encryption,
            "index": ns.wal.index_status(),
        }
        if ns.pinned_replicas is not None:
            body["pinning"] = {
                "replicas": ns.pinned_replicas,
                "status": {
                    "ready_replicas": ns.pinned_replicas,
                    "replicas": ns.pinned_replicas,
                    "updated_at": _iso(ns.updated_at),
                    "utilization": 0.0,
                },
            }
        if ns.sharding is not None:
            body["sharding"] = ns.sharding
        if ns.read_only:
            body["read_only"] = True
        return body

    def update_metadata(self, name: str, body: Mapping[str, object]) -> dict[str, object]:
        """`PATCH .../metadata`: `read_only` and `pinning` (absent means unchanged)."""
        ns = self._get(name)
        unknown = set(body) - {"read_only", "pinning"}
        if unknown:
            raise BadRequest(f"unknown metadata fields: {sorted(unknown)}")
        if "read_only" in body:
            if not isinstance(body["read_only"], bool):
                raise BadRequest("read_only must be a boolean")
            ns.read_only = body["read_only"]
        if "pinning" in body:
            pinning = body["pinning"]
            if pinning is None or pinning is False:
                ns.pinned_replicas = None
            elif pinning is True:
                ns.pinned_replicas = 1
            elif isinstance(pinning, dict):
                replicas = pinning.get("replicas", 1)
                if not (isinstance(replicas, int) and replicas >= 1):
                    raise BadRequest("pinning.replicas must be a positive integer")
                ns.pinned_replicas = replicas
            else:
                raise BadRequest("pinning must be null, a boolean or an object")
        return self.metadata(name)

    def _schema_with_id(self, ns: Namespace) -> dict[str, dict[str, object]]:
        schema = {name: dict(cfg) for name, cfg in ns.schema.items()}
        if "id" not in schema and ns.docs:
            first = next(iter(ns.docs.values()))["id"]
            schema["id"] = {"type": "uint" if isinstance(first, int) else "string"}
        return schema

    def schema(self, name: str) -> dict[str, dict[str, object]]:
        return self._schema_with_id(self._get(name))

    def update_schema(self, name: str, changes: object) -> dict[str, dict[str, object]]:
        ns = self._get(name)
        if ns.read_only:
            raise Forbidden(f"namespace '{name}' is read-only")
        ns.schema = _merge_schema(ns.schema, changes)
        ns.updated_at = self.wall_clock()
        return self._schema_with_id(ns)

    def delete(self, name: str) -> None:
        self._get(name)
        del self.namespaces[name]

    def exists(self, name: str) -> bool:
        return name in self.namespaces

    def require(self, name: str) -> None:
        """NamespaceNotFound unless the namespace exists."""
        self._get(name)

    # -- copies and branches --

    def require_empty(self, name: str, *, action: str = "copy") -> None:
        """BadRequest unless `name` is absent or holds no document (a copy's destination)."""
        ns = self.namespaces.get(name)
        if ns is not None and ns.docs:
            raise BadRequest(
                f"cannot {action} into namespace '{name}': it is not empty "
                f"({len(ns.docs)} documents); the destination of a {action} must be empty"
            )
        if ns is not None and ns.read_only:
            raise Forbidden(f"namespace '{name}' is read-only")

    def copy_snapshot(self, name: str) -> CopySnapshot:
        """The source's documents and schema now (NamespaceNotFound if it does not exist)."""
        ns = self._get(name)
        return CopySnapshot(
            source=name,
            docs=copy.deepcopy(ns.docs),
            schema=copy.deepcopy(ns.schema),
            distance_metric=ns.distance_metric,
        )

    def finish_copy(
        self, name: str, snapshot: CopySnapshot, *, encryption: dict[str, object] | None
    ) -> dict[str, object]:
        """Land a copy in `name` (still empty, or BadRequest): new, unindexed data."""
        self.require_empty(name)
        ns = self.namespaces.get(name) or self._new(name)
        ns.wal.advance(now=self.clock())
        ns.docs = copy.deepcopy(snapshot.docs)
        ns.schema = copy.deepcopy(snapshot.schema)
        ns.distance_metric = snapshot.distance_metric
        if encryption is not None:
            ns.encryption = dict(encryption)
        nbytes = snapshot.logical_bytes
        ns.wal.append(len(ns.docs), nbytes, now=self.clock())
        ns.updated_at = self.wall_clock()
        self.namespaces[name] = ns
        return {
            "status": "OK",
            "message": f"copied {len(ns.docs)} documents from '{snapshot.source}'",
            "rows_affected": len(ns.docs),
            "billing": {"billable_logical_bytes_written": nbytes},
        }

    def branch(self, name: str, source_store: Store, source: str) -> dict[str, object]:
        """An instant copy-on-write clone of `source` (in `source_store`) named `name`."""
        original = source_store._get(source)
        self.require_empty(name, action="branch")
        ns = self._new(name)
        ns.docs = copy.deepcopy(original.docs)
        ns.schema = copy.deepcopy(original.schema)
        ns.distance_metric = original.distance_metric
        ns.encryption = dict(original.encryption)
        ns.sharding = copy.deepcopy(original.sharding)
        ns.read_only = original.read_only
        # The clone shares the source's index: its unindexed backlog is the source's.
        ns.wal = copy.deepcopy(original.wal)
        ns.wal.paused = name in self.paused
        self.namespaces[name] = ns
        return {
            "status": "OK",
            "message": f"branched from '{source}'",
            "rows_affected": len(ns.docs),
            "billing": {"billable_logical_bytes_written": 0},
        }

    # -- indexing control --

    def pause_indexing(self, name: str) -> None:
        self.paused.add(name)
        if name in self.namespaces:
            self.namespaces[name].wal.pause(now=self.clock())

    def resume_indexing(self, name: str) -> None:
        self.paused.discard(name)
        if name in self.namespaces:
            self.namespaces[name].wal.resume(now=self.clock())

    def force_indexing(self, name: str) -> None:
        self._get(name).wal.force(now=self.clock())

    def index_status(self, name: str) -> dict[str, object]:
        return self._get(name).wal.index_status()

    # -- writes --

    def write(self, name: str, body: Mapping[str, object]) -> dict[str, object]:
        """Apply a v2 write and return its WriteResult (reference §3.3)."""
        unknown = set(body) - _WRITE_FIELDS
        if unknown:
            raise BadRequest(f"write fields not supported by the emulator: {sorted(unknown)}")
        if copy_spec(body) is not None:
            raise BadRequest("a copy or branch is not an ordinary write (see `Store.branch`)")
        upserts = _rows(body, "upsert_rows", "upsert_columns")
        patches = _rows(body, "patch_rows", "patch_columns")
        deletes = body.get("deletes") or []
        if not isinstance(deletes, list):
            raise BadRequest("deletes must be an array of ids")

        create = body.get("create_namespace")
        ns = self.namespaces.get(name)
        if ns is None:
            if create is False or (create is None and not upserts):
                raise NamespaceNotFound(name)
            ns = self._new(name)
        ns.wal.advance(now=self.clock())
        if ns.read_only:
            raise Forbidden(f"namespace '{name}' is read-only")

        schema = ns.schema
        if body.get("schema") is not None:
            schema = _merge_schema(schema, body["schema"])
        metric = self._metric(ns, body.get("distance_metric"))
        encryption, sharding = self._settings(ns, body)
        vector_attrs = frozenset(
            {VECTOR} | {n for n, cfg in schema.items() if is_vector_type(str(cfg.get("type", "")))}
        )
        new_docs = [self._document(row, vector_attrs) for row in upserts]
        schema = self._infer_schema(schema, new_docs, vector_attrs, metric)
        patch_docs = [self._document(row, vector_attrs, keep_nulls=True) for row in patches]
        delete_ids = [_validate_id(i) for i in deletes]
        doomed = (
            self._matching(ns, body["delete_by_filter"])
            if body.get("delete_by_filter") is not None
            else []
        )
        filter_patches = (
            self._filter_patches(ns, body["patch_by_filter"], vector_attrs)
            if body.get("patch_by_filter") is not None
            else []
        )

        # Everything is validated, so the write is atomic. turbopuffer's order: delete_by_filter,
        # patch_by_filter, upserts, patches, deletes.
        self.namespaces[name] = ns
        ns.schema, ns.distance_metric = schema, metric
        ns.encryption, ns.sharding = encryption, sharding
        deleted_ids: list[object] = []
        patched_ids: list[object] = []
        logical_bytes = 0
        for doc in doomed:
            del ns.docs[_id_key(doc["id"])]
            deleted_ids.append(doc["id"])
            logical_bytes += _json_size(doc["id"])
        # Targets were matched before the delete_by_filter; deleted ones are skipped here.
        for patch in filter_patches:
            if self._patch(ns, patch):
                patched_ids.append(patch["id"])
                logical_bytes += _json_size(patch)
        for doc in new_docs:
            ns.docs[_id_key(doc["id"])] = doc
            logical_bytes += _json_size(doc)
        for patch in patch_docs:
            if self._patch(ns, patch):
                patched_ids.append(patch["id"])
                logical_bytes += _json_size(patch)
        for doc_id in delete_ids:
            ns.docs.pop(_id_key(doc_id), None)
            deleted_ids.append(doc_id)
            logical_bytes += _json_size(doc_id)

        affected = len(new_docs) + len(patched_ids) + len(deleted_ids)
        ns.wal.append(affected, logical_bytes, now=self.clock())
        ns.updated_at = self.wall_clock()
        result: dict[str, object] = {
            "status": "OK",
            "message": f"{affected} rows affected",
            "rows_affected": affected,
            "billing": {"billable_logical_bytes_written": logical_bytes},
        }
        if upserts:
            result["rows_upserted"] = len(new_docs)
        if patches or body.get("patch_by_filter") is not None:
            result["rows_patched"] = len(patched_ids)
        if deletes or body.get("delete_by_filter") is not None:
            result["rows_deleted"] = len(deleted_ids)
        if body.get("delete_by_filter_allow_partial") or body.get("patch_by_filter_allow_partial"):
            result["rows_remaining"] = False
        if body.get("return_affected_ids") is True:
            for key, ids in (
                ("upserted_ids", [d["id"] for d in new_docs]),
                ("patched_ids", patched_ids),
                ("deleted_ids", deleted_ids),
            ):
                if ids:
                    result[key] = ids
        return result

    @staticmethod
    def _metric(ns: Namespace, requested: object) -> DistanceMetric | None:
        if requested is None:
            return ns.distance_metric
        if requested not in _METRICS:
            raise BadRequest(f"unknown distance_metric {requested!r}")
        if ns.distance_metric is not None and ns.distance_metric != requested:
            raise BadRequest(
                f"namespace uses {ns.distance_metric}; the distance metric cannot be changed"
            )
        return requested  # type: ignore[return-value]

    @staticmethod
    def _settings(
        ns: Namespace, body: Mapping[str, object]
    ) -> tuple[dict[str, object], dict[str, object] | None]:
        """Encryption and sharding after this write; sharding only on the first write."""
        encryption = body.get("encryption")
        if encryption is not None and not (
            isinstance(encryption, dict) and encryption.get("mode") in _ENCRYPTION_MODES
        ):
            raise BadRequest('encryption.mode must be "default" or "customer-managed"')
        requested = body.get("sharding")
        sharding = ns.sharding
        if requested is not None:
            if ns.docs or ns.sharding is not None:
                raise BadRequest("sharding can only be set on a namespace's first write")
            shards = requested.get("num_shards") if isinstance(requested, dict) else None
            if not (isinstance(shards, int) and shards >= 1):
                raise BadRequest("sharding.num_shards must be a positive integer")
            sharding = {"num_shards": shards}
        return (
            dict(encryption) if encryption is not None else ns.encryption,
            sharding,
        )

    @staticmethod
    def _document(
        row: Mapping[str, object], vector_attrs: frozenset[str], *, keep_nulls: bool = False
    ) -> Document:
        """A stored document: decoded vectors; nulls dropped (kept for patches: they unset)."""
        if "id" not in row:
            raise BadRequest("every row needs an `id`")
        doc: Document = {"id": _validate_id(row["id"])}
        for name, value in row.items():
            if name == "id":
                continue
            if value is None:
                if keep_nulls:
                    doc[name] = None
                continue
            if name in vector_attrs:
                try:
                    value = decode_vector(value)
                except VectorError as exc:
                    raise BadRequest(f"attribute {name!r}: {exc}") from None
            doc[name] = value
        return doc

    @staticmethod
    def _infer_schema(
        schema: dict[str, dict[str, object]],
        docs: list[Document],
        vector_attrs: frozenset[str],
        metric: DistanceMetric | None,
    ) -> dict[str, dict[str, object]]:
        """Declare types of attributes seen for the first time; vectors must agree on dims."""
        schema = {name: dict(cfg) for name, cfg in schema.items()}
        for doc in docs:
            for name, value in doc.items():
                if name == "id":
                    continue
                if name in vector_attrs:
                    assert isinstance(value, list)
                    declared = schema.get(name)
                    vector_type = f"[{len(value)}]f32"
                    if declared is None:
                        schema[name] = {
                            "type": vector_type,
                            "ann": {"distance_metric": metric or DEFAULT_METRIC},
                        }
                    elif declared["type"] not in (vector_type, f"[{len(value)}]f16"):
                        raise BadRequest(
                            f"{name!r} is {declared['type']}, got a {len(value)}-dimension vector"
                        )
                elif name not in schema:
                    inferred = _infer_type(value)
                    if inferred is not None:
                        schema[name] = {"type": inferred}
        return schema

    @staticmethod
    def _patch(ns: Namespace, patch: Document) -> bool:
        """Merge a patch into an existing document; unknown ids are ignored (returns False)."""
        doc = ns.docs.get(_id_key(patch["id"]))
        if doc is None:
            return False
        for name, value in patch.items():
            if name == "id":
                continue
            if value is None:
                doc.pop(name, None)
            else:
                doc[name] = value
        return True

    @staticmethod
    def _matching(ns: Namespace, filters: object) -> list[Document]:
        try:
            return [doc for doc in ns.docs.values() if matches(filters, doc)]
        except QueryError as exc:
            raise BadRequest(str(exc)) from None

    def _filter_patches(
        self, ns: Namespace, spec: object, vector_attrs: frozenset[str]
    ) -> list[Document]:
        """`patch_by_filter` as one patch per document matching before this write."""
        if not (isinstance(spec, dict) and isinstance(spec.get("patch"), dict)):
            raise BadRequest("patch_by_filter must be {filters, patch}")
        return [
            self._document({**spec["patch"], "id": doc["id"]}, vector_attrs, keep_nulls=True)
            for doc in self._matching(ns, spec.get("filters"))
        ]

    # -- queries --

    def query(self, name: str, body: Mapping[str, object]) -> QueryOutcome:
        """A single query (reference §3.4)."""
        ns = self._get(name)
        result = self._execute(ns, body)
        return self._outcome(ns, [result])

    def multi_query(self, name: str, body: Mapping[str, object]) -> QueryOutcome:
        """A `queries` body: each subquery evaluated independently, results in order."""
        ns = self._get(name)
        unsupported = set(body) - {"queries", "consistency", "vector_encoding"}
        if unsupported:
            raise BadRequest(
                f"multi-query fields not supported by the emulator: {sorted(unsupported)}"
            )
        queries = body["queries"]
        if not (isinstance(queries, list) and all(isinstance(q, dict) for q in queries)):
            raise BadRequest("queries must be an array of query objects")
        if not 1 <= len(queries) <= MAX_SUBQUERIES:
            raise BadRequest(f"queries must hold 1 to {MAX_SUBQUERIES} subqueries")
        encoding = body.get("vector_encoding")
        results = [
            self._execute(ns, q if encoding is None else {**q, "vector_encoding": encoding})
            for q in queries
        ]
        return self._outcome(ns, results)

    def _execute(self, ns: Namespace, query: Mapping[str, object]) -> dict[str, object]:
        try:
            return execute_query(
                ns.docs.values(),
                query,
                metric=ns.metric,
                vector_attrs=ns.vector_attrs,
                max_top_k=self.max_top_k,
            )
        except QueryError as exc:
            raise BadRequest(str(exc)) from None

    @staticmethod
    def _outcome(ns: Namespace, results: list[dict[str, object]]) -> QueryOutcome:
        return QueryOutcome(
            results=results,
            namespace_size=len(ns.docs),
            exhaustive_search_count=ns.wal.unindexed_rows,
            bytes_queried=ns.approx_logical_bytes(),
            bytes_returned=sum(_json_size(r.get("rows", [])) for r in results),
        )
