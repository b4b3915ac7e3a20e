"""The wire contracts: what producers may send, and how a bad message is rejected."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from layer.events import (
    DeadLetter,
    PollTick,
    Registration,
    StabilityChange,
    WriteNotification,
    parse_tick_message,
    parse_write_notification,
)

# --- write notifications -----------------------------------------------------------------


def test_write_notification_needs_only_namespace_and_written_at() -> None:
    note = parse_write_notification(b'{"namespace": "products", "written_at_ms": 1747075740000}')
    assert note.namespace == "products"
    assert note.written_at_ms == 1_747_075_740_000
    assert note.version == 1
    assert (note.rows, note.bytes, note.source, note.event_id) == (None, None, None, None)


def test_write_notification_reads_every_optional_field() -> None:
    raw = json.dumps(
        {
            "version": 1,
            "namespace": "products",
            "written_at_ms": 1747075740000,
            "rows": 2,
            "bytes": 100,
            "source": "layer-proxy",
            "event_id": "01HZX3",
        }
    ).encode()
    note = parse_write_notification(raw)
    assert (note.rows, note.bytes, note.source, note.event_id) == (2, 100, "layer-proxy", "01HZX3")


def test_write_notification_ignores_unknown_fields_for_forward_compatibility() -> None:
    raw = b'{"namespace": "products", "written_at_ms": 5, "region": "gcp-us-central1"}'
    assert parse_write_notification(raw).namespace == "products"


@pytest.mark.parametrize(
    "namespace",
    ["a", "products", "my-ns_v2.1", "A" * 128, "0", "a.b-c_d"],
)
def test_valid_namespace_names_are_accepted(namespace: str) -> None:
    raw = json.dumps({"namespace": namespace, "written_at_ms": 0}).encode()
    assert parse_write_notification(raw).namespace == namespace


@pytest.mark.parametrize(
    "namespace",
    ["", "A" * 129, "has space", "slash/in", "../etc", "n?x=1", "ümlaut", "tab\t", "new\nline"],
    ids=["empty", "too-long", "space", "slash", "dotdot", "query", "non-ascii", "tab", "newline"],
)
def test_invalid_namespace_names_are_rejected(namespace: str) -> None:
    raw = json.dumps({"namespace": namespace, "written_at_ms": 0}).encode()
    with pytest.raises(ValidationError) as info:
        parse_write_notification(raw)
    assert info.value.errors()[0]["loc"] == ("namespace",)


@pytest.mark.parametrize(
    ("raw", "bad_field"),
    [
        (b'{"written_at_ms": 5}', "namespace"),
        (b'{"namespace": "products"}', "written_at_ms"),
        (b'{"namespace": "products", "written_at_ms": -1}', "written_at_ms"),
        (b'{"namespace": "products", "written_at_ms": "soon"}', "written_at_ms"),
        (b'{"namespace": "products", "written_at_ms": 5, "version": 2}', "version"),
        (b'{"namespace": "products", "written_at_ms": 5, "rows": -3}', "rows"),
        (b'{"namespace": "products", "written_at_ms": 5, "bytes": -3}', "bytes"),
        (b'{"namespace": 42, "written_at_ms": 5}', "namespace"),
    ],
    ids=[
        "no-namespace",
        "no-written-at",
        "negative-time",
        "time-not-a-number",
        "unknown-version",
        "negative-rows",
        "negative-bytes",
        "namespace-not-a-string",
    ],
)
def test_malformed_write_notification_is_rejected_naming_the_field(
    raw: bytes, bad_field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_write_notification(raw)
    assert bad_field in {str(loc) for error in info.value.errors() for loc in error["loc"]}


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"not json", b"[]", b"null", b'"products"', b"\xff\xfe", b'{"namespace": "p"'],
    ids=["none", "empty", "text", "array", "null", "string", "not-utf8", "truncated"],
)
def test_write_payload_that_is_not_a_json_object_is_rejected(raw: bytes | None) -> None:
    with pytest.raises(ValidationError):
        parse_write_notification(raw)


def test_write_notification_is_immutable() -> None:
    note = WriteNotification(namespace="products", written_at_ms=5)
    with pytest.raises(ValidationError):
        note.written_at_ms = 6  # type: ignore[misc]


# --- ticks and registrations ---------------------------------------------------------------


def test_tick_message_with_kind_tick_is_a_poll_tick() -> None:
    message = parse_tick_message(b'{"kind": "tick", "partition": 3, "issued_at_ms": 1000}')
    assert isinstance(message, PollTick)
    assert (message.partition, message.issued_at_ms, message.version) == (3, 1000, 1)


def test_tick_message_with_kind_register_is_a_registration() -> None:
    message = parse_tick_message(
        b'{"kind": "register", "namespace": "products", "observed_at_ms": 1000}'
    )
    assert isinstance(message, Registration)
    assert message.namespace == "products"
    assert message.observation is None


def test_registration_carries_the_reads_upstream_observation() -> None:
    raw = json.dumps(
        {
            "kind": "register",
            "namespace": "products",
            "observed_at_ms": 2000,
            "observation": {
                "started_at_ms": 1990,
                "index": {"status": "updating", "unindexed_bytes": 100, "unindexed_rows": 2},
                "approx_row_count": 12500,
                "approx_logical_bytes": 48800000,
                "updated_at": "2026-05-12T18:49:00Z",
            },
        }
    ).encode()
    message = parse_tick_message(raw)
    assert isinstance(message, Registration)
    assert message.observation is not None
    assert message.observation.started_at_ms == 1990
    assert message.observation.index["status"] == "updating"
    assert message.observation.approx_row_count == 12500


@pytest.mark.parametrize(
    "raw",
    [
        b'{"partition": 3, "issued_at_ms": 1000}',
        b'{"kind": "poll", "partition": 3, "issued_at_ms": 1000}',
        b'{"kind": "tick", "issued_at_ms": 1000}',
        b'{"kind": "tick", "partition": -1, "issued_at_ms": 1000}',
        b'{"kind": "register", "observed_at_ms": 1000}',
        b'{"kind": "register", "namespace": "bad name", "observed_at_ms": 1000}',
        b'{"kind": "register", "namespace": "products", "observed_at_ms": 1000, '
        b'"observation": {"index": {}}}',
        b"",
        None,
    ],
    ids=[
        "no-kind",
        "unknown-kind",
        "tick-without-partition",
        "negative-partition",
        "register-without-namespace",
        "register-invalid-namespace",
        "observation-without-start",
        "empty",
        "none",
    ],
)
def test_malformed_tick_message_is_rejected(raw: bytes | None) -> None:
    with pytest.raises(ValidationError):
        parse_tick_message(raw)


def test_tick_message_is_discriminated_by_kind_not_by_shape() -> None:
    """A registration-shaped body with kind `tick` is judged as a tick (and fails as one)."""
    with pytest.raises(ValidationError) as info:
        parse_tick_message(b'{"kind": "tick", "namespace": "products", "observed_at_ms": 1}')
    assert all(error["loc"][0] == "tick" for error in info.value.errors())


@pytest.mark.parametrize(
    "message",
    [PollTick(partition=0, issued_at_ms=5), Registration(namespace="products", observed_at_ms=5)],
    ids=["tick", "register"],
)
def test_tick_messages_round_trip_through_json(message: PollTick | Registration) -> None:
    assert parse_tick_message(message.model_dump_json().encode()) == message


# --- stability changes ----------------------------------------------------------------------


def test_stability_change_serialises_every_field_consumers_dedupe_by() -> None:
    event = StabilityChange(
        namespace="products",
        change="became_stable",
        is_stable=True,
        stable_as_of=1_747_075_739_000,
        previous_is_stable=False,
        previous_stable_as_of=None,
        index={"status": "up-to-date"},
        observed_at_ms=1_747_075_741_000,
    )
    body = json.loads(event.model_dump_json())
    assert body["version"] == 1
    assert (body["namespace"], body["stable_as_of"], body["is_stable"]) == (
        "products",
        1_747_075_739_000,
        True,
    )
    assert StabilityChange.model_validate_json(event.model_dump_json()) == event


def test_stability_change_rejects_an_unknown_change_kind() -> None:
    with pytest.raises(ValidationError):
        StabilityChange(
            namespace="products",
            change="flapped",  # type: ignore[arg-type]
            is_stable=True,
            stable_as_of=1,
            previous_is_stable=False,
            previous_stable_as_of=None,
            index=None,
            observed_at_ms=1,
        )


# --- dead letters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, (None, "utf-8")),
        (b"", ("", "utf-8")),
        (b'{"namespace": "bad name"}', ('{"namespace": "bad name"}', "utf-8")),
        ("ümlaut".encode(), ("ümlaut", "utf-8")),
        (b"\xff\xfe\x00", (base64.b64encode(b"\xff\xfe\x00").decode(), "base64")),
    ],
    ids=["absent", "empty", "json-text", "utf8-text", "binary"],
)
def test_dead_letter_keeps_text_readable_and_binary_lossless(
    raw: bytes | None, expected: tuple[str | None, str]
) -> None:
    assert DeadLetter.text_or_base64(raw) == expected


def test_dead_letter_base64_value_decodes_back_to_the_original_bytes() -> None:
    raw = bytes(range(256))
    value, encoding = DeadLetter.text_or_base64(raw)
    assert encoding == "base64"
    assert value is not None and base64.b64decode(value) == raw


def test_dead_letter_carries_the_reason_and_the_original_message() -> None:
    value, encoding = DeadLetter.text_or_base64(b"\xff")
    letter = DeadLetter(
        reason="1 validation error for WriteNotification",
        topic="layer.writes",
        partition=2,
        offset=41,
        key="products",
        value=value,
        value_encoding=encoding,
        dead_lettered_at_ms=5,
    )
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter
    assert letter.value_encoding == "base64"
