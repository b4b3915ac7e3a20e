"""Layer's components as subprocesses: the emulator and workers, for integration tests and bench/.

One copy, used by `tests/integration/conftest.py` (fixtures) and `bench/harness.py`
(benchmarks); the embedded broker is `layer.embedded_broker.EmbeddedBroker`. A component that
does not come up fails loudly (`AssertionError` naming what was awaited), never skips.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from layer.embedded_broker import free_port

__all__ = [
    "EmulatorProcess",
    "WorkerProcess",
    "clean_environment",
    "layer_env",
    "parse_metrics",
    "wait_until",
]

#: Upper bounds for things that normally take ~3 s (worker join) or less.
WORKER_READY_TIMEOUT_S = 60.0
EMULATOR_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll `predicate()` until it returns a truthy value; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def clean_environment() -> dict[str, str]:
    """This process's environment without any Layer or turbopuffer setting (no leaks in)."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LAYER_", "TURBOPUFFER_", "NAMESPACE_LIST"))
    }


def parse_metrics(exposition: str) -> dict[str, float]:
    """Prometheus text → `{name{label="value",...}: value}` (labels sorted, `le` included;
    no braces for an unlabelled sample), `layer_` dropped from Layer's own names."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            name = sample.name.removeprefix("layer_")
            if sample.labels:
                labels = ",".join(
                    f'{key}="{_escape_label(value)}"'
                    for key, value in sorted(sample.labels.items())
                )
                name = f"{name}{{{labels}}}"
            values[name] = sample.value
    return values


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def layer_env(
    *, app_id: str, broker_url: str, upstream_url: str, api_key: str, **overrides: str
) -> dict[str, str]:
    """A worker's environment: its own app id and topic prefix, the embedded broker profile."""
    env = clean_environment()
    env.update(
        LAYER_APP_ID=app_id,
        LAYER_TOPIC_PREFIX=app_id,
        LAYER_KAFKA_BROKER=broker_url,
        LAYER_BROKER_PROFILE="embedded",
        TURBOPUFFER_BASE_URL=upstream_url,
        TURBOPUFFER_API_KEY=api_key,
        # "info", the default. NB: at "warning" or above Faust's worker installs its terminal
        # spinner and sets the *root* logger to DEBUG, so every aiokafka/faust debug call
        # builds a LogRecord (~8 % of the worker's CPU in bench/throughput.py profiles).
        LAYER_LOG_LEVEL="info",
    )
    env.update(overrides)
    return env


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class EmulatorProcess:
    """The turbopuffer emulator in its own process, driven through its control API."""

    def __init__(self, log_path: Path, *extra_args: str, api_keys: Sequence[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "layer.emulator", "--port", str(self.port)]
        for key in api_keys:
            argv += ["--api-key", key]
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [*argv, *extra_args], stdout=log, stderr=subprocess.STDOUT
            )
        self._headers = {"Authorization": f"Bearer {api_keys[0]}"}
        self.client = httpx.Client(base_url=self.url, headers=self._headers, timeout=30)
        try:
            wait_until(self._answers, EMULATOR_START_TIMEOUT_S, "the emulator to answer")
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the emulator exited with {self.process.returncode}")
        try:
            return self.client.get("/_emulator/stats").status_code == 200
        except httpx.TransportError:
            return False

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.client.request(method, f"/_emulator{path}", json=body)
        assert response.status_code < 300, response.text
        return response.json()

    def write(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(f"/v2/namespaces/{namespace}", json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def create_namespaces(self, namespaces: Sequence[str], concurrency: int = 32) -> None:
        """One small write per namespace (the emulator creates it), `concurrency` at a time."""
        queue = list(namespaces)
        async with httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=30) as http:

            async def run() -> None:
                while queue:
                    ns = queue.pop()
                    answer = await http.post(
                        f"/v2/namespaces/{ns}", json={"upsert_rows": [{"id": 1}]}
                    )
                    answer.raise_for_status()

            await asyncio.gather(*(run() for _ in range(concurrency)))

    def pause_indexing(self, namespace: str) -> None:
        self.control("POST", f"/indexing/{namespace}/pause")

    def resume_indexing(self, namespace: str) -> None:
        self.control("POST", f"/indexing/{namespace}/resume")

    def force_indexing(self, namespace: str) -> None:
        self.control("POST", f"/indexing/{namespace}/force")

    def add_fault(self, **rule: Any) -> int:
        fault_id: int = self.control("POST", "/faults", rule)["id"]
        return fault_id

    def clear_faults(self) -> None:
        self.control("DELETE", "/faults")

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", "/stats")
        return result

    def stop(self) -> None:
        self.client.close()
        _stop(self.process)


class WorkerProcess:
    """One `python -m layer worker` with its own web port and data directory."""

    def __init__(
        self, env: dict[str, str], data_dir: Path, log_path: Path, *, api_key: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "LAYER_PORT": str(self.port), "LAYER_DATA_DIR": str(data_dir)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=15
        )
        self.started_at = 0.0
        self.ready_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None, "not spawned"
        return self.process.pid

    def spawn(self) -> WorkerProcess:
        self.started_at = time.monotonic()
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "layer", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(
        self, timeout_s: float = WORKER_READY_TIMEOUT_S, interval_s: float = 0.02
    ) -> float:
        """Wait for `/readyz` 200; return the seconds since spawn."""
        wait_until(self.is_ready, timeout_s, f"worker on {self.url} to be ready", interval_s)
        self.ready_at = time.monotonic()
        return self.ready_at - self.started_at

    def start(self, timeout_s: float = WORKER_READY_TIMEOUT_S) -> WorkerProcess:
        self.spawn()
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop(signal.SIGKILL)  # never leave a half-started worker behind
            raise
        return self

    def is_ready(self) -> bool:
        assert self.process is not None, "not spawned"
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{tail}")
        try:
            return self.http.get("/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def metadata(self, namespace: str) -> dict[str, Any]:
        response = self.http.get(f"/v2/namespaces/{namespace}/metadata")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def layer_state(self, namespace: str) -> dict[str, Any]:
        state: dict[str, Any] = self.metadata(namespace)["layer"]
        return state

    def metrics(self) -> dict[str, float]:
        """`GET /metrics` as `{sample: value}` (`parse_metrics`): `polls_total`,
        `http_request_seconds_count{route="/metrics",status="200"}`, `process_cpu_seconds_total`."""
        response = self.http.get("/metrics")
        assert response.status_code == 200, response.text
        return parse_metrics(response.text)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid} (exited?)")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            _stop(self.process, sig)

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        self.http.close()
