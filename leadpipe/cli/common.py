"""What every command shares: exit codes, `--json`, and how to print a result."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

#: Everything asked was done.
EXIT_OK = 0
#: Some of the work failed, or the lead is unknown.
EXIT_FAILED = 1
#: Bad usage: click uses this code for its own usage errors too.
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """`--json`: machine-readable output (one object, or an array for a list)."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(
        func
    )


def print_json(value: object) -> None:
    """Write `value` as JSON to standard output (stable key order, no ASCII escaping)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
