"""Constants and helpers shared by the emulator tests and their fixtures."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import IO

import pytest

API_KEY = "test-key"
#: Environment the SDK would otherwise pick up (a set region breaks a custom base_url, §1.1).
SDK_ENV = ("TURBOPUFFER_REGION", "TURBOPUFFER_BASE_URL", "TURBOPUFFER_API_KEY")
#: How long the subprocess may take to print its listening line.
STARTUP_TIMEOUT_S = 20.0
#: How long the subprocess may take to exit after SIGTERM.
SHUTDOWN_TIMEOUT_S = 10.0
LISTENING = "turbopuffer emulator listening on "


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class EmulatorProcess:
    """An emulator started with `python -m layer.emulator`; `stop()` returns all its stdout."""

    url: str
    process: subprocess.Popen[str]
    stdout: str
    _lines: queue.Queue[str]
    _reader: threading.Thread
    _stderr: IO[str] = field(repr=False)

    def stop(self) -> str:
        """SIGTERM, and fail unless the process exits cleanly."""
        self.process.terminate()
        assert self.process.wait(SHUTDOWN_TIMEOUT_S) == 0, (
            "SIGTERM should stop the emulator cleanly"
        )
        self._reader.join(SHUTDOWN_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()
        return self.stdout + "".join(self._lines.get_nowait() for _ in range(self._lines.qsize()))


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def start_emulator_process(*args: str) -> EmulatorProcess:
    """Start `python -m layer.emulator --port 0 ARGS`; fail the test if it does not come up."""
    env = {k: v for k, v in os.environ.items() if k not in SDK_ENV}
    # A file, not a pipe: nobody reads stderr while the tests run, so a pipe could fill up.
    stderr = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "layer.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        first = ""
    if not first.startswith(LISTENING):
        process.kill()
        process.wait()
        process.stdout.close()
        stderr.seek(0)
        with stderr:
            pytest.fail(f"the emulator did not start (stdout {first!r}): {stderr.read()}")
    url = first.removeprefix(LISTENING).strip()
    return EmulatorProcess(url, process, first, lines, reader, stderr)
