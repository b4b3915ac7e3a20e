"""`layer dev`: the embedded broker, the turbopuffer emulator and one worker, on this machine.

Ports come from the settings (`LAYER_KAFKA_BROKER`, `LAYER_DEV_EMULATOR_PORT`, `LAYER_PORT`);
one already in use stops the stack before anything starts, naming the setting to change.
Ctrl-C or SIGTERM stops all three and leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from layer.embedded_broker import BrokerStartError, EmbeddedBroker
from layer.settings import Settings

__all__ = ["DEV_API_KEY", "DevStack", "DevStackError"]

#: The emulator's default key; public on purpose (it only opens a local emulator).
DEV_API_KEY = "tpuf-dev-key"
#: The emulator indexes a write this long after it lands, so `updating` can be seen.
DEV_INDEX_DELAY_MS = 2000
#: How long the emulator and the worker get to answer their health checks.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class DevStackError(RuntimeError):
    """The dev stack could not start (a port in use, a component that did not come up)."""


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_http_ok(
    url: str,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> None:
    """Wait until `url` answers 2xx, failing early if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevStackError(f"{url} never answered: its process exited ({process.returncode})")
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status < 300:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise DevStackError(f"{url} did not answer within {timeout_s:.0f} s")


class DevStack:
    """Start, supervise and stop the three processes of the dev setup."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        broker = urlsplit(settings.kafka_broker.split(",")[0])
        self.broker_host = broker.hostname or "127.0.0.1"
        self.broker_port = broker.port or 9092
        self.emulator_port = settings.dev_emulator_port
        self.data_dir = Path(settings.data_dir) / "dev"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._broker: EmbeddedBroker | None = None

    def _check_ports(self) -> None:
        wanted = [
            (self.broker_host, self.broker_port, "LAYER_KAFKA_BROKER"),
            ("127.0.0.1", self.emulator_port, "LAYER_DEV_EMULATOR_PORT"),
            (self.settings.host, self.settings.port, "LAYER_PORT"),
        ]
        for host, port, setting in wanted:
            if port_in_use(host, port):
                raise DevStackError(
                    f"port {port} on {host} is already in use: stop what uses it, "
                    f"or set {setting} to another port"
                )

    def _spawn(
        self, argv: list[str], log_name: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / log_name, "ab")  # noqa: SIM115 (the child keeps it)
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self._processes.append(process)
        return process

    def start(self) -> None:
        self._check_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._broker = EmbeddedBroker(
            host=self.broker_host, port=self.broker_port, log_path=self.data_dir / "broker.log"
        )
        try:
            self._broker.start()
        except BrokerStartError as exc:
            raise DevStackError(str(exc)) from None

        emulator = self._spawn(
            [sys.executable, "-m", "layer.emulator", "--host", "127.0.0.1",
             "--port", str(self.emulator_port), "--api-key", DEV_API_KEY,
             "--index-delay-ms", str(DEV_INDEX_DELAY_MS)],
            "emulator.log",
            dict(os.environ),
        )  # fmt: skip
        emulator_url = f"http://127.0.0.1:{self.emulator_port}"
        wait_http_ok(
            f"{emulator_url}/_emulator/stats",
            emulator,
            START_TIMEOUT_S,
            headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        )

        worker_env = dict(os.environ)
        worker_env.update(
            LAYER_KAFKA_BROKER=self._broker.url,
            LAYER_BROKER_PROFILE="embedded",
            TURBOPUFFER_BASE_URL=emulator_url,
            TURBOPUFFER_API_KEY=DEV_API_KEY,
            LAYER_DATA_DIR=str(self.data_dir / "worker"),
        )
        worker_env.pop("TURBOPUFFER_REGION", None)
        worker = self._spawn([sys.executable, "-m", "layer", "worker"], "worker.log", worker_env)
        # Ready, not just alive: the banner's example must get an answer, not a 503.
        wait_http_ok(f"{self.settings.web_url}/readyz", worker, START_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the worker first (it commits and leaves the group), then the rest."""
        for process in reversed(self._processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self._processes):
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()
        if self._broker is not None:
            self._broker.stop()

    def banner(self) -> str:
        layer_url = self.settings.web_url
        return "\n".join(
            [
                "Layer dev stack is up:",
                f"  Layer (turbopuffer API + freshness)  {layer_url}",
                f"  dashboard                             {layer_url}/dashboard"
                f"  (paste the API key: {DEV_API_KEY})",
                f"  turbopuffer emulator                  http://127.0.0.1:{self.emulator_port}"
                f"  (API key: {DEV_API_KEY})",
                f"  Kafka (embedded Tansu broker)         {self.broker_host}:{self.broker_port}",
                f"  logs                                  {self.data_dir}/",
                "",
                "Try it: write through Layer (a turbopuffer endpoint), then read the freshness:",
                f"  curl -s -H 'Authorization: Bearer {DEV_API_KEY}' \\",
                f"    -X POST {layer_url}/v2/namespaces/demo \\",
                '    -d \'{"upsert_rows": [{"id": 1, "title": "hello"}]}\'',
                f"  curl -s -H 'Authorization: Bearer {DEV_API_KEY}' "
                f"{layer_url}/v2/namespaces/demo/metadata",
                "",
                "Ctrl-C stops everything.",
            ]
        )

    def run(self) -> None:
        """Start everything, wait for Ctrl-C / SIGTERM or a component's exit, stop everything."""
        stopping = False

        def request_stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            self.start()
            print(self.banner(), flush=True)
            while not stopping:
                exited = [p for p in self._processes if p.poll() is not None]
                if exited or (self._broker is not None and not self._broker.running):
                    print("layer dev: a component exited; see the logs. Stopping.", flush=True)
                    break
                time.sleep(0.2)
        finally:
            print("layer dev: stopping…", flush=True)
            self.stop()
