"""Options several commands share, defined once: `--json` and the bind address/port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Where a server command listens unless told otherwise: this machine only.
DEFAULT_BIND_ADDRESS = "127.0.0.1"


def json_option(func: F) -> F:
    """`--json`: machine-readable output (one object, or an array for a list)."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(
        func
    )


def bind_options(default_port: int, *, any_port: bool = False) -> Callable[[F], F]:
    """`--address` (alias `--host`) and `--port` of a command that serves HTTP.

    `any_port`: 0 is accepted and means a free port chosen by the system."""
    address = click.option(
        "--address",
        "--host",
        "address",
        default=DEFAULT_BIND_ADDRESS,
        show_default=True,
        help="Address to bind.",
    )
    port = click.option(
        "--port",
        type=click.IntRange(0 if any_port else 1, 65535),
        default=default_port,
        show_default=True,
        help="Port to bind" + (" (0: any free port)." if any_port else "."),
    )

    def decorate(func: F) -> F:
        return address(port(func))

    return decorate
