"""docker-compose.yml, .env.example and the Dockerfile, checked by parsing them: Docker
does not run on our machines, so this is all the validation they get."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import Settings
from leadpipe.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
#: `${VAR}`, `${VAR:-default}`, `${VAR:?message}` in the compose file.
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")
#: `VAR=value` or a commented-out `# VAR=` in .env.example.
ENV_LINE = re.compile(r"^#?\s*([A-Z_][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def env_example() -> dict[str, tuple[str, bool]]:
    """Variable -> (value, set) from .env.example; `set` is False when commented out."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            found[match.group(1)] = (match.group(2).strip(), not line.lstrip().startswith("#"))
    return found


def settings_variables() -> set[str]:
    return {str(field.alias) for field in Settings.model_fields.values() if field.alias}


def pairs(args: list[str]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(args))


def test_the_services_are_there(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "worker", "flower", "fake-mykaarma"} <= set(services)


def test_redis_persists_every_write_and_never_evicts(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert str(redis["image"]).startswith("redis:7")
    command = [str(part) for part in redis["command"]]
    assert command[0] == "redis-server"
    assert ("--appendonly", "yes") in pairs(command)
    assert ("--maxmemory-policy", "noeviction") in pairs(command)
    assert any(v.endswith(":/data") for v in redis["volumes"])  # the AOF outlives the container
    check = redis["healthcheck"]
    assert check["test"] == ["CMD", "redis-cli", "ping"]
    assert {"interval", "timeout", "retries"} <= set(check)


def test_worker_waits_for_a_healthy_redis(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["command"] == ["leadpipe", "worker"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert ".env" in (
        [worker["env_file"]] if isinstance(worker["env_file"], str) else worker["env_file"]
    )


def test_flower_listens_on_all_interfaces_only_with_basic_auth(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    assert ("--address", "0.0.0.0") in pairs(flower["command"])
    # Compose refuses to start without the variable (`${VAR:?...}`), and `leadpipe
    # flower` refuses 0.0.0.0 without it too
    assert re.match(
        r"^\$\{LEADPIPE_FLOWER_BASIC_AUTH:\?", flower["environment"]["LEADPIPE_FLOWER_BASIC_AUTH"]
    )
    value, is_set = env_example()["LEADPIPE_FLOWER_BASIC_AUTH"]
    assert is_set and re.fullmatch(r"[^:,\s]+:[^,\s]+", value)
    assert all(str(port).startswith("127.0.0.1:") for port in flower.get("ports", []))


def env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file") or []
    return [files] if isinstance(files, str) else list(files)


def test_the_mykaarma_password_reaches_the_worker_only(
    services: dict[str, dict[str, Any]],
) -> None:
    # Given the password kept out of .env (which every service reads) ...
    _value, is_set = env_example()["MYKAARMA_PASSWORD"]
    assert not is_set
    secret = ROOT / "mykaarma.env.example"
    assert re.search(r"^MYKAARMA_PASSWORD=\S+", secret.read_text(), re.M)
    # ... only the worker and the stand-in myKaarma read mykaarma.env
    readers = {name for name, s in services.items() if "mykaarma.env" in env_files(s)}
    assert readers == {"worker", "fake-mykaarma"}
    for name, service in services.items():
        assert "MYKAARMA_PASSWORD" not in (service.get("environment") or {}), name


def test_the_fake_mykaarma_binds_every_interface_on_purpose(
    services: dict[str, dict[str, Any]],
) -> None:
    command = services["fake-mykaarma"]["command"]
    assert ("--host", "0.0.0.0") in pairs(command) and "--allow-remote" in command


def test_every_leadpipe_command_parses(services: dict[str, dict[str, Any]]) -> None:
    commands = [s["command"] for s in services.values() if s.get("command", [""])[0] == "leadpipe"]
    assert len(commands) >= 3
    for _, name, *args in commands:
        command = main.commands[name]
        command.make_context(name, list(args))  # raises on an unknown option or bad value


def test_every_variable_used_is_in_env_example(services: dict[str, dict[str, Any]]) -> None:
    documented = env_example()
    used = set(INTERPOLATION.findall(COMPOSE.read_text()))
    for service in services.values():
        used |= set(service.get("environment") or {})
    assert used, "the compose file uses no variable at all?"
    assert used <= set(documented), used - set(documented)


def test_env_example_documents_every_setting_and_nothing_else() -> None:
    documented = set(env_example())
    # every variable leadpipe reads is there, and there is no typo leadpipe would ignore
    assert documented == settings_variables(), documented ^ settings_variables()


def test_the_routing_file_is_mounted_where_env_example_points(
    services: dict[str, dict[str, Any]],
) -> None:
    value, is_set = env_example()["LEADPIPE_ROUTING_FILE"]
    assert is_set
    mounts = dict(
        (target, ROOT / source)
        for source, target, *_ in (str(v).split(":") for v in services["worker"]["volumes"])
    )
    assert value in mounts
    assert mounts[value].is_file()


def test_the_dockerfile_builds_the_package_on_python_311_slim() -> None:
    assert DOCKERFILE.is_file()
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    for package in ("config", "pipeline", "store", "tasks", "leadpipe"):
        assert re.search(rf"^COPY {package} ", text, re.M), package
    assert re.search(r"^USER (?!root)\S+", text, re.M)
