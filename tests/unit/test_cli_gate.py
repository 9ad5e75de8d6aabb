"""The settings-and-errors gate every command runs behind, and the exit-code table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import store.connection
from leadpipe.cli import COMMANDS, main
from leadpipe.cli.gate import gated
from leadpipe.exit_codes import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    exit_code_for,
)
from pipeline.errors import (
    ConfigError,
    EmbeddedRedisError,
    RoutingFileError,
    SettingsError,
)

#: A Redis nothing listens on: these tests must never reach one.
NOWHERE = "redis://127.0.0.1:1/0"
BASE_ENV: dict[str, str | None] = {
    "LEADPIPE_REDIS_URL": NOWHERE,
    "LEADPIPE_BROKER_URL": None,
    "LEADPIPE_FLOWER_BASIC_AUTH": None,
    "MYKAARMA_USERNAME": "u",
    "MYKAARMA_PASSWORD": "p",
}


def invoke(args: list[str], **env: str | None) -> Any:
    return CliRunner().invoke(main, args, env={**BASE_ENV, **env})


def command_lines(tmp_path: Path) -> list[list[str]]:
    """Every command that reads the settings, with arguments it accepts."""
    leads = tmp_path / "leads.json"
    leads.write_text("{}")
    return [
        ["worker"],
        ["flower"],
        ["metrics", "--once"],
        ["demo"],
        ["submit", str(leads)],
        ["status", "some-lead"],
        ["stats"],
        ["notifications", "some-lead"],
        ["dlq", "list"],
        ["dlq", "show", "some-lead"],
        ["dlq", "replay", "some-lead"],
        ["dlq", "purge", "some-lead"],
        ["dealers"],
        ["dealers", "pause", "some-dealer"],
        ["dealers", "resume", "some-dealer"],
        ["dealers", "drain", "some-dealer"],
        ["forget", "some-lead"],
    ]


# -- the table --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SettingsError("LEADPIPE_X: bad"), EXIT_USAGE),
        (RoutingFileError("routing.toml: bad"), EXIT_USAGE),
        (EmbeddedRedisError("cannot start"), EXIT_USAGE),
        (KeyboardInterrupt(), EXIT_INTERRUPTED),
        (RuntimeError("anything else"), EXIT_FAILED),
    ],
)
def test_each_error_has_its_exit_code(error: BaseException, code: int) -> None:
    assert exit_code_for(error) == code


def test_the_contracts_codes() -> None:
    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED) == (0, 1, 2, 130)
    assert all(issubclass(kind, BaseException) for kind, _ in EXIT_CODES)
    assert issubclass(SettingsError, ConfigError) and issubclass(RoutingFileError, ConfigError)
    assert issubclass(EmbeddedRedisError, ConfigError)


# -- every command behind the gate ------------------------------------------------


def test_every_registered_command_is_in_the_gate_tests(tmp_path: Path) -> None:
    tested = {line[0] for line in command_lines(tmp_path)} | {
        "validate",
        "fake-mykaarma",
        "fake-partner",
    }
    assert {command.name for command in COMMANDS} == tested


def test_a_bad_setting_stops_every_command_with_exit_2_naming_it(tmp_path: Path) -> None:
    for args in command_lines(tmp_path):
        result = invoke(args, LEADPIPE_RETRY_BASE_SECONDS="soon")
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert "LEADPIPE_RETRY_BASE_SECONDS" in result.stderr, args
        assert "Traceback" not in result.output


def test_a_unix_redis_without_a_broker_stops_every_command_naming_both(tmp_path: Path) -> None:
    for args in command_lines(tmp_path):
        result = invoke(args, LEADPIPE_REDIS_URL="unix:///tmp/leadpipe-none.sock")
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert "LEADPIPE_REDIS_URL" in result.stderr, args
        assert "LEADPIPE_BROKER_URL" in result.stderr, args


@pytest.mark.parametrize(
    "args", [["worker"], ["flower"], ["metrics", "--once"], ["stats"], ["dlq", "list"]]
)
def test_an_embedded_redis_that_cannot_start_is_bad_configuration(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot_start(home: Path) -> str:
        raise EmbeddedRedisError(f"could not start the embedded Redis under {home}")

    monkeypatch.setattr(store.connection, "ensure_embedded_redis", cannot_start)
    result = invoke(args, LEADPIPE_REDIS_URL=None)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "could not start the embedded Redis" in result.stderr
    assert "LEADPIPE_HOME" in result.stderr  # what to check next


def test_ctrl_c_in_an_operator_command_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*_: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("leadpipe.cli.stats.stats_view", interrupted)
    result = invoke(["stats"])
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    assert "Interrupted" in result.stderr


def test_the_gate_maps_a_config_error_and_lets_usage_errors_through() -> None:
    @click.command()
    @click.option("--fail", type=click.Choice(["routing", "usage", "none"]))
    @gated
    def probe(fail: str) -> None:
        if fail == "routing":
            raise RoutingFileError("routing file r.toml is not valid TOML")
        if fail == "usage":
            raise click.UsageError("wrong")

    routing = CliRunner().invoke(probe, ["--fail", "routing"])
    assert routing.exit_code == EXIT_USAGE
    assert "r.toml is not valid TOML" in routing.stderr
    assert "LEADPIPE_ROUTING_FILE" in routing.stderr
    usage = CliRunner().invoke(probe, ["--fail", "usage"])
    assert usage.exit_code == EXIT_USAGE and "wrong" in usage.stderr
    assert CliRunner().invoke(probe, ["--fail", "none"]).exit_code == EXIT_OK
