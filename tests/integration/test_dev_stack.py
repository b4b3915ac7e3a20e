"""`layer dev` (what `make dev` runs): everything comes up, and everything goes away."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from layer.dev import DEV_API_KEY, port_in_use
from layer.embedded_broker import free_port
from tests.integration.conftest import wait_until


def _dev_env(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    ports = {"layer": free_port(), "emulator": free_port(), "broker": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYER_", "TURBOPUFFER_"))}
    env.update(
        LAYER_PORT=str(ports["layer"]),
        LAYER_DEV_EMULATOR_PORT=str(ports["emulator"]),
        LAYER_KAFKA_BROKER=f"kafka://127.0.0.1:{ports['broker']}",
        LAYER_DATA_DIR=str(tmp_path / "data"),
    )
    return env, ports


def _start_dev(env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """`layer dev` as a user starts it, its output (stdout and stderr) readable as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "layer", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        text=True,
    )


def test_layer_dev_serves_healthz_and_sigterm_stops_all_three_processes(tmp_path: Path) -> None:
    env, ports = _dev_env(tmp_path)
    dev = _start_dev(env, tmp_path)
    try:

        def healthy() -> bool:
            assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
            try:
                return httpx.get(f"http://127.0.0.1:{ports['layer']}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 60, "layer dev's worker to answer /healthz")
        assert port_in_use("127.0.0.1", ports["emulator"]) and port_in_use(
            "127.0.0.1", ports["broker"]
        )
    finally:
        dev.send_signal(signal.SIGTERM)
        output = dev.communicate(timeout=30)[0]
    assert dev.returncode == 0, output
    assert f"http://127.0.0.1:{ports['layer']}" in output, "the banner shows Layer's URL"
    for name, port in ports.items():
        assert not port_in_use("127.0.0.1", port), f"{name} still listens on {port}"


def test_layer_dev_refuses_a_port_in_use_and_names_the_setting(tmp_path: Path) -> None:
    env, ports = _dev_env(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["layer"]))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "layer", "dev"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert result.returncode != 0
    assert "LAYER_PORT" in result.stderr and str(ports["layer"]) in result.stderr
    assert "Traceback" not in result.stderr


def _readme_example(base: str, namespace: str) -> tuple[httpx.Response, httpx.Response]:
    """The README's two curl commands: a write through Layer, then the metadata read."""
    auth = {"Authorization": f"Bearer {DEV_API_KEY}"}
    written = httpx.post(
        f"{base}/v2/namespaces/{namespace}",
        headers=auth,
        json={"upsert_rows": [{"id": 1, "title": "hello"}]},
        timeout=30,
    )
    read = httpx.get(f"{base}/v2/namespaces/{namespace}/metadata", headers=auth, timeout=30)
    return written, read


def test_layer_dev_survives_the_readme_example_before_and_at_the_banner(tmp_path: Path) -> None:
    env, ports = _dev_env(tmp_path)
    base = f"http://127.0.0.1:{ports['layer']}"
    dev = _start_dev(env, tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    assert dev.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in dev.stdout or ()])
    reader.start()
    try:
        # Before the banner: typed as soon as the port accepts, while the worker starts.
        wait_until(lambda: port_in_use("127.0.0.1", ports["layer"]), 60, "Layer's port")
        early_write, early_read = _readme_example(base, "early")
        assert early_write.status_code == 200, early_write.text  # writes pass through at once
        assert early_read.status_code in (200, 503), early_read.text  # 503: not ready yet
        # At the banner: the example answers in full.
        wait_until(lambda: "Layer dev stack is up" in lines.get(timeout=60), 60, "the banner")
        written, read = _readme_example(base, "demo")
        assert written.status_code == 200, written.text
        assert read.status_code == 200, read.text
        assert read.json()["layer"]["is_stable"] is False, "the README's promise right after"

        def early_write_applied() -> bool:
            assert dev.poll() is None, "layer dev stopped"
            answer = _readme_example(base, "early")[1]
            return answer.status_code == 200 and answer.json()["layer"]["last_write_ms"] is not None

        wait_until(early_write_applied, 30, "the write sent before the banner to be applied")
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=30)
        reader.join(timeout=10)
        dev.stdout.close()
    output = "".join(lines.queue)
    assert dev.returncode == 0, output
    assert "a component exited" not in output, output
