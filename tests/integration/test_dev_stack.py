"""`layer dev` (what `make dev` runs): everything comes up, and everything goes away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from layer.dev import port_in_use
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


def test_layer_dev_serves_healthz_and_sigterm_stops_all_three_processes(tmp_path: Path) -> None:
    env, ports = _dev_env(tmp_path)
    dev = subprocess.Popen(
        [sys.executable, "-m", "layer", "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:

        def healthy() -> bool:
            assert dev.poll() is None, dev.stdout.read().decode() if dev.stdout else ""
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
        output = dev.communicate(timeout=30)[0].decode()
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
