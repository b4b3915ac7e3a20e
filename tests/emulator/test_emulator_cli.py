"""The command line: fault specs, argument checks, and a real process with CLI faults."""

from __future__ import annotations

import httpx
import pytest
from emulator_support import auth, start_emulator_process

from layer.emulator import DEV_API_KEY, FaultRule
from layer.emulator.cli import main
from layer.emulator.faults import parse_fault_spec


def test_a_fault_spec_becomes_a_rule() -> None:
    rule = parse_fault_spec("route=metadata, namespace=docs,status=429,retry_after_ms=5,times=2")

    assert rule == FaultRule(
        route="metadata", namespace="docs", status=429, retry_after_ms=5, times=2
    )


def test_a_hang_fault_spec_parses_its_boolean() -> None:
    assert parse_fault_spec("route=query,hang=true").hang is True


@pytest.mark.parametrize(
    "spec", ["route=metadata", "status", "route=nope,status=500", "status=abc"]
)
def test_bad_fault_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault_spec(spec)


@pytest.mark.parametrize(
    "argv",
    [["--index-rate", "0"], ["--index-delay-ms", "-1"], ["--fault", "status=200"], ["--port", "x"]],
)
def test_bad_arguments_exit_with_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2


def test_the_process_prints_the_dev_key_and_applies_cli_faults() -> None:
    emulator = start_emulator_process(
        "--fault", "route=list,status=500,times=1", "--index-delay-ms", "60000"
    )
    try:
        failed = httpx.get(f"{emulator.url}/v1/namespaces", headers=auth(DEV_API_KEY))
        listed = httpx.get(f"{emulator.url}/v1/namespaces", headers=auth(DEV_API_KEY))
        httpx.post(
            f"{emulator.url}/v2/namespaces/slow",
            json={"upsert_rows": [{"id": 1}]},
            headers=auth(DEV_API_KEY),
        ).raise_for_status()
        meta = httpx.get(f"{emulator.url}/v2/namespaces/slow/metadata", headers=auth(DEV_API_KEY))
    finally:
        printed = emulator.stop()

    assert failed.status_code == 500
    assert listed.json() == {"namespaces": []}
    assert meta.json()["index"]["status"] == "updating"
    assert f"API key: {DEV_API_KEY}" in printed
