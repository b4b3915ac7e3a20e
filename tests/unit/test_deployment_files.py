"""The deployment files agree with the settings model.

Docker cannot run in CI, so these tests read `docker-compose.yml`, `Dockerfile`,
`.env.example` and `.dockerignore` as text/YAML and check them against `layer.settings`:
a worker's environment holds only settings Layer knows, every required setting is there,
and the values validate exactly as the worker would read them (through the environment).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from layer.settings import BrokerProfile, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

#: Stands in for a `${VAR:?message}` interpolation (a value the operator must supply).
PLACEHOLDER = "placeholder-set-by-operator"

#: Settings whose defaults only work on a developer machine (loopback Kafka, loopback bind,
#: an advertised URL derived from the bind address, a relative data dir) or without which
#: the watcher cannot reach turbopuffer: a containerised worker must set each explicitly.
CONTAINER_REQUIRED_ENV = frozenset(
    {
        "LAYER_KAFKA_BROKER",
        "LAYER_BROKER_PROFILE",
        "LAYER_HOST",
        "LAYER_PORT",
        "LAYER_ADVERTISED_URL",
        "LAYER_DATA_DIR",
        "TURBOPUFFER_API_KEY",
    }
)


# --- the settings model ---------------------------------------------------------------------


def _settings_env_names() -> dict[str, str]:
    """Every environment variable the settings model reads, mapped to its field."""
    names: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        assert isinstance(alias, AliasChoices), f"setting {field_name} has no env-var alias"
        for choice in alias.choices:
            names[str(choice)] = field_name
    return names


SETTINGS_ENV = _settings_env_names()


def _required_env_names() -> set[str]:
    """The env-var name of every setting without a default."""
    return {
        str(field.validation_alias.choices[0])  # type: ignore[union-attr]
        for field in Settings.model_fields.values()
        if field.is_required()
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment with no Layer setting in it and no `.env` in the working directory."""
    monkeypatch.chdir(tmp_path)
    known = {name.upper() for name in SETTINGS_ENV}
    for name in list(os.environ):
        if name.upper() in known:  # pydantic-settings matches names case-insensitively
            monkeypatch.delenv(name)
    return monkeypatch


def _load_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


# --- docker-compose.yml -----------------------------------------------------------------------

# `$$` (a literal dollar), `${...}`, or `$NAME`.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?", re.S)


def _interpolations(value: str) -> list[tuple[str, str | None, str]]:
    """Each `${NAME<op><arg>}` / `$NAME` in a compose value, as (name, op, arg)."""
    found = []
    for match in _INTERPOLATION.finditer(value):
        if match["escaped"]:
            continue
        if match["bare"]:
            found.append((match["bare"], None, ""))
            continue
        braced = _BRACED.fullmatch(match["braced"])
        assert braced, f"unparseable interpolation {match.group(0)!r} in {value!r}"
        found.append((braced["name"], braced["op"], braced["arg"] or ""))
    return found


def _resolve(value: str) -> str:
    """The value compose would pass with no variable set in the shell or `.env`:
    `${VAR:-default}` becomes the default, `${VAR:?msg}` a placeholder (compose would refuse
    to start), `$$` a dollar."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["bare"]:
            return ""
        braced = _BRACED.fullmatch(match["braced"])
        assert braced, f"unparseable interpolation {match.group(0)!r}"
        op = braced["op"]
        if op in (":-", "-"):
            return braced["arg"] or ""
        if op in (":?", "?"):
            return PLACEHOLDER
        return ""

    return _INTERPOLATION.sub(substitute, value)


def _compose() -> dict[str, Any]:
    # safe_load resolves the `&layer` / `*layer` anchors and `<<` merge keys.
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either compose form, as strings (unresolved)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    assert all(value is not None for value in env.values()), (
        "an environment entry without a value passes the host's variable through unchecked"
    )
    return {str(name): str(value) for name, value in env.items()}


def _workers() -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfile: the Layer workers."""
    workers = {}
    for name, service in _compose()["services"].items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
        if (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE:
            workers[name] = service
    return workers


WORKER_NAMES = sorted(_workers())


def _resolved_env(worker: str) -> dict[str, str]:
    return {name: _resolve(value) for name, value in _environment(_workers()[worker]).items()}


def _kafka() -> dict[str, Any]:
    return _compose()["services"]["kafka"]


def _container_port(mapping: str | dict[str, Any]) -> tuple[int, int]:
    """(host port, container port) of a `ports` entry, short or long syntax."""
    if isinstance(mapping, dict):
        return int(mapping["published"]), int(mapping["target"])
    parts = str(mapping).split("/")[0].split(":")
    assert len(parts) >= 2, f"port {mapping!r} is not published on the host"
    return int(parts[-2]), int(parts[-1])


def test_the_compose_file_runs_two_layer_workers_built_from_the_dockerfile() -> None:
    assert WORKER_NAMES == ["layer-1", "layer-2"]


@pytest.mark.parametrize("worker", WORKER_NAMES)
def test_every_worker_environment_variable_is_a_setting_layer_knows(worker: str) -> None:
    unknown = set(_environment(_workers()[worker])) - set(SETTINGS_ENV)
    assert not unknown, f"{worker} sets variables the settings model does not read: {unknown}"


@pytest.mark.parametrize("worker", WORKER_NAMES)
def test_every_required_setting_is_set_for_every_worker(worker: str) -> None:
    env = _environment(_workers()[worker])
    missing = _required_env_names() - set(env)
    assert not missing, f"{worker} lacks required settings {missing}"


@pytest.mark.parametrize("worker", WORKER_NAMES)
def test_a_worker_sets_every_setting_whose_default_only_suits_a_developer_machine(
    worker: str,
) -> None:
    assert CONTAINER_REQUIRED_ENV <= set(SETTINGS_ENV), "the list above names unknown settings"
    missing = CONTAINER_REQUIRED_ENV - set(_environment(_workers()[worker]))
    assert not missing, f"{worker} relies on developer defaults for {missing}"


@pytest.mark.parametrize("worker", WORKER_NAMES)
def test_a_worker_environment_validates_against_the_settings_model(
    worker: str, clean_env: pytest.MonkeyPatch
) -> None:
    env = _resolved_env(worker)
    settings = _load_from_env(clean_env, env)

    assert settings.broker_profile is BrokerProfile.KAFKA
    assert settings.host == "0.0.0.0"
    assert settings.kafka_broker == env["LAYER_KAFKA_BROKER"]
    assert settings.turbopuffer_api_key is not None
    assert settings.turbopuffer_api_key.get_secret_value() == PLACEHOLDER
    assert settings.upstream_url == "https://gcp-us-central1.turbopuffer.com"
    assert settings.web_url == env["LAYER_ADVERTISED_URL"]


@pytest.mark.parametrize("worker", WORKER_NAMES)
def test_every_interpolation_in_a_worker_environment_has_a_default_or_fails_when_unset(
    worker: str,
) -> None:
    for name, value in _environment(_workers()[worker]).items():
        for variable, op, _ in _interpolations(value):
            assert op in (":-", "-", ":?", "?"), (
                f"{worker} {name}: ${{{variable}}} silently becomes empty when unset"
            )


@pytest.mark.parametrize("worker", WORKER_NAMES)
def test_the_turbopuffer_key_comes_from_the_env_file_and_compose_refuses_to_start_without_it(
    worker: str,
) -> None:
    value = _environment(_workers()[worker])["TURBOPUFFER_API_KEY"]
    assert _interpolations(value) == [
        ("TURBOPUFFER_API_KEY", ":?", "set TURBOPUFFER_API_KEY in .env")
    ]


def test_the_turbopuffer_region_defaults_to_gcp_us_central1() -> None:
    for worker in WORKER_NAMES:
        value = _environment(_workers()[worker])["TURBOPUFFER_REGION"]
        assert _interpolations(value) == [("TURBOPUFFER_REGION", ":-", "gcp-us-central1")]


def test_each_worker_advertises_its_own_service_name_on_the_port_it_listens_on(
    clean_env: pytest.MonkeyPatch,
) -> None:
    urls = set()
    for worker in WORKER_NAMES:
        env = _resolved_env(worker)
        url = urlsplit(env["LAYER_ADVERTISED_URL"])
        assert url.scheme == "http"
        assert url.hostname == worker, "other workers reach it by its compose service name"
        assert url.port == int(env["LAYER_PORT"])
        urls.add(url.geturl())
    assert len(urls) == len(WORKER_NAMES)


def test_each_worker_publishes_its_layer_port_on_a_distinct_host_port() -> None:
    host_ports = []
    for worker in WORKER_NAMES:
        service = _workers()[worker]
        port = int(_resolved_env(worker)["LAYER_PORT"])
        mappings = [_container_port(entry) for entry in service.get("ports", [])]
        assert [target for _, target in mappings] == [port]
        host_ports.extend(published for published, _ in mappings)
    assert sorted(host_ports) == [8080, 8081]


def test_each_worker_keeps_its_state_on_its_own_named_volume() -> None:
    declared = set(_compose().get("volumes") or {})
    sources = []
    for worker in WORKER_NAMES:
        data_dir = _resolved_env(worker)["LAYER_DATA_DIR"]
        mounts = [str(entry).split(":") for entry in _workers()[worker].get("volumes", [])]
        at_data_dir = [source for source, target, *_ in mounts if target == data_dir]
        assert len(at_data_dir) == 1, f"{worker}: no volume mounted at {data_dir}"
        assert at_data_dir[0] in declared, f"{worker}: {at_data_dir[0]} is not a named volume"
        sources.extend(at_data_dir)
    assert len(set(sources)) == len(WORKER_NAMES), "workers must not share a data dir"


def test_workers_start_only_once_kafka_is_healthy() -> None:
    assert "healthcheck" in _kafka()
    for worker in WORKER_NAMES:
        depends_on = _workers()[worker]["depends_on"]
        assert depends_on["kafka"]["condition"] == "service_healthy"


def test_kafka_health_is_probed_with_a_kafka_admin_tool() -> None:
    probe = " ".join(_kafka()["healthcheck"]["test"])
    assert re.search(r"/opt/kafka/bin/kafka-(broker-api-versions|topics)\.sh", probe)
    assert "--bootstrap-server" in probe


def test_workers_reach_kafka_at_an_address_the_broker_advertises() -> None:
    advertised = {
        urlsplit(listener).netloc
        for listener in _environment(_kafka())["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for worker in WORKER_NAMES:
        broker = _resolved_env(worker)["LAYER_KAFKA_BROKER"]
        assert broker.startswith("kafka://")
        for server in broker.removeprefix("kafka://").split(","):
            assert server in advertised, f"{worker} bootstraps at {server}, not advertised"


def test_kafka_is_the_official_image_in_kraft_mode_without_zookeeper() -> None:
    kafka = _kafka()
    env = _environment(kafka)
    assert kafka["image"].split(":")[0] == "apache/kafka"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@kafka:")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert env.get("CLUSTER_ID")
    assert not any("ZOOKEEPER" in name for name in env)


def test_kafka_never_auto_creates_a_topic() -> None:
    """Layer creates and verifies its topics itself (layer/kafka_topics.py)."""
    assert str(_environment(_kafka())["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"


def test_every_replication_factor_fits_the_single_kafka_node(
    clean_env: pytest.MonkeyPatch,
) -> None:
    env = _environment(_kafka())
    brokers = len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert brokers == 1
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) <= brokers
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) <= brokers
    for worker in WORKER_NAMES:
        settings = _load_from_env(clean_env, _resolved_env(worker))
        assert settings.topic_replication <= brokers, f"{worker} over-replicates its topics"


def test_the_worker_healthcheck_probes_healthz_on_layer_port() -> None:
    for worker in WORKER_NAMES:
        probe = " ".join(_workers()[worker]["healthcheck"]["test"])
        assert "/healthz" in probe
        assert "LAYER_PORT" in probe


# --- Dockerfile ---------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends in a line continuation"
    return instructions


def _final_stage() -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in _final_stage():
        if keyword == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_the_image_runs_layer_worker() -> None:
    cmds = [args for keyword, args in _final_stage() if keyword == "CMD"]
    assert cmds, "the Dockerfile has no CMD"
    assert json.loads(cmds[-1]) == ["layer", "worker"]
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert "layer" in scripts, "CMD needs the `layer` console script"


def test_the_image_healthcheck_probes_healthz_on_layer_port() -> None:
    checks = [args for keyword, args in _final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    _, _, command = checks[0].partition(" CMD ")
    probe = json.loads(command)
    assert probe[0] == "python", "slim has no curl"
    assert "/healthz" in probe[-1]
    assert "LAYER_PORT" in probe[-1]


def test_the_image_is_python_3_11_slim_and_runs_as_a_non_root_user() -> None:
    bases = [args.split()[0] for keyword, args in _dockerfile_instructions() if keyword == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    users = [args for keyword, args in _final_stage() if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_the_image_installs_the_project_without_dev_or_test_extras() -> None:
    runs = " ".join(args for keyword, args in _dockerfile_instructions() if keyword == "RUN")
    installs = re.findall(r"pip install (\S+)", runs)
    assert "." in installs
    assert not any("[" in target for target in installs), f"extras installed: {installs}"


def test_the_image_exposes_the_port_layer_listens_on(clean_env: pytest.MonkeyPatch) -> None:
    exposed = {
        int(port.split("/")[0])
        for keyword, args in _final_stage()
        if keyword == "EXPOSE"
        for port in args.split()
    }
    env = {name: value for name, value in _dockerfile_env().items() if name in SETTINGS_ENV}
    assert exposed == {8080}
    assert _load_from_env(clean_env, env).port in exposed


def test_the_image_setting_defaults_are_known_settings_that_validate(
    clean_env: pytest.MonkeyPatch,
) -> None:
    env = _dockerfile_env()
    settings_like = {n for n in env if n.startswith(("LAYER_", "TURBOPUFFER_", "NAMESPACE_"))}
    assert settings_like <= set(SETTINGS_ENV), f"unknown: {settings_like - set(SETTINGS_ENV)}"
    settings = _load_from_env(clean_env, {name: env[name] for name in settings_like})
    assert settings.host == "0.0.0.0", "a container must bind all interfaces"


# --- .env.example and .dockerignore --------------------------------------------------------------


def _env_example() -> dict[str, str]:
    entries = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            entries[name.strip()] = value.strip()
    return entries


def test_the_env_example_documents_the_turbopuffer_key_and_region_without_a_real_key() -> None:
    entries = _env_example()
    assert {"TURBOPUFFER_API_KEY", "TURBOPUFFER_REGION"} <= set(entries)
    assert set(entries) <= set(SETTINGS_ENV), "the example names settings Layer does not read"
    assert entries["TURBOPUFFER_API_KEY"] == "", "the example must not carry a key"


def test_every_variable_compose_requires_is_documented_in_the_env_example() -> None:
    required = {
        variable
        for worker in WORKER_NAMES
        for value in _environment(_workers()[worker]).values()
        for variable, op, _ in _interpolations(value)
        if op in (":?", "?")
    }
    assert "TURBOPUFFER_API_KEY" in required
    assert required <= set(_env_example())


def test_the_docker_build_context_leaves_out_env_files_and_local_state() -> None:
    patterns = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", ".layer-data"} <= patterns
    assert not any(pattern.startswith("!.env") for pattern in patterns)
