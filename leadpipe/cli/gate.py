"""The one settings-and-errors gate every command runs behind.

`gated` turns the failures a person fixes by changing the configuration
(`pipeline.errors.ConfigError`) into one line on standard error and exit 2, and an
interrupt into exit 130, by the table in `leadpipe.exit_codes`. `with_settings`
also reads the settings first and hands them to the command: a bad variable stops
it before it does anything, with the variable's name. Operator commands that talk to
Redis use `leadpipe.cli.context.operator_command`, built on the same gate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from config import load_settings
from leadpipe.cli.output import echo_err, fail
from leadpipe.exit_codes import exit_code_for
from pipeline.errors import ConfigError, EmbeddedRedisError, RoutingFileError, SettingsError

F = TypeVar("F", bound=Callable[..., Any])

#: What to do next, by kind of configuration error.
ADVICE: dict[type[ConfigError], str] = {
    SettingsError: "Fix the variable and run the command again.",
    RoutingFileError: "Fix the routing file (LEADPIPE_ROUTING_FILE) and run it again.",
    EmbeddedRedisError: "Set LEADPIPE_REDIS_URL to a running Redis, or check that "
    "LEADPIPE_HOME is writable.",
}


def _advice(error: ConfigError) -> str:
    return next((text for kind, text in ADVICE.items() if isinstance(error, kind)), "")


@contextmanager
def error_gate() -> Iterator[None]:
    """Configuration errors and interrupts end the command with their exit code."""
    try:
        yield
    except ConfigError as exc:
        fail(f"{exc}. {_advice(exc)}".strip(), code=exit_code_for(exc))
    except KeyboardInterrupt as exc:
        echo_err("Interrupted.")
        raise SystemExit(exit_code_for(exc)) from None


def gated(func: F) -> F:
    """Run `func` behind the error gate (for commands that need no settings)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with error_gate():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def with_settings(func: F) -> F:
    """Run `func` behind the error gate with the `Settings` as its first argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with error_gate():
            return func(load_settings(), *args, **kwargs)

    return wrapper  # type: ignore[return-value]
