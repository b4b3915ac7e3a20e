"""A turbopuffer emulator for tests and local development.

An aiohttp server that speaks enough of turbopuffer's HTTP API for the official SDK (3.1.0,
strict response validation) to work against it, with asynchronous indexing, fault injection
and request counters that tests drive through Python methods or the `/_emulator` control API.

    async with Emulator(api_keys=["k"], index_delay_ms=200) as emu:
        client = turbopuffer.AsyncTurbopuffer(api_key="k", base_url=emu.url)

Routes, route names and the control API: see `layer.emulator.server`. Command line: see
`layer.emulator.cli` (`python -m layer.emulator --help`).
"""

from .faults import FaultRule
from .server import DEV_API_KEY, Emulator
from .store import IndexingConfig

__all__ = ["DEV_API_KEY", "Emulator", "FaultRule", "IndexingConfig"]
