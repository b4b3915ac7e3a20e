"""Fixtures for the emulator tests: an in-process emulator, and one in a subprocess for the SDK.

A fixture that cannot start the emulator fails the test run; it never skips.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import turbopuffer
from emulator_support import API_KEY, SDK_ENV, EmulatorProcess, auth, start_emulator_process

from layer.emulator import Emulator


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """An in-process emulator with instant indexing."""
    async with Emulator(api_keys=[API_KEY]) as emu:
        yield emu


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client for the in-process emulator, authenticated by default."""
    async with httpx.AsyncClient(base_url=emulator.url, headers=auth()) as client:
        yield client


@pytest.fixture(scope="session")
def emulator_process() -> Iterator[EmulatorProcess]:
    """`python -m layer.emulator` in a subprocess for the whole session, stopped by SIGTERM."""
    started = start_emulator_process("--api-key", API_KEY)
    httpx.get(f"{started.url}/v1/namespaces", headers=auth()).raise_for_status()
    yield started
    printed = started.stop()
    assert API_KEY not in printed, "a user-supplied key must never be printed"


@pytest.fixture
def sdk_client(
    emulator_process: EmulatorProcess, monkeypatch: pytest.MonkeyPatch
) -> Iterator[turbopuffer.Turbopuffer]:
    """The official sync SDK, strict validation on, no retries (faults should fail fast)."""
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)
    client = turbopuffer.Turbopuffer(
        api_key=API_KEY,
        base_url=emulator_process.url,
        max_retries=0,
        _strict_response_validation=True,
    )
    yield client
    client.close()
