"""How commands talk to the operator: JSON, consoles, tables, progress bars, errors.

Standard output carries the command's result (JSON with `--json`, else text for a
person); everything else (progress, hints, errors) goes to standard error, so the
result pipes cleanly.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from leadpipe.exit_codes import EXIT_FAILED

_PASSWORD_IN_URL = re.compile(r"(//[^:/@]*:)[^@/]*@")

Cell = str | Text


def print_json(value: object) -> None:
    """Write `value` as JSON to standard output (stable key order, no ASCII escaping)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def fail(message: str, *, code: int = EXIT_FAILED) -> NoReturn:
    """Print `message` on standard error and exit with `code`."""
    echo_err(f"Error: {message}")
    raise SystemExit(code)


def safe_url(url: str) -> str:
    """`url` with any password replaced by `***`, fit for an error message."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


def stdout_console() -> Console:
    """Colours and tables on a terminal; `is_terminal` False means print plain text."""
    return Console(highlight=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def print_table(
    console: Console,
    columns: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    title: str | None = None,
    wrap: Sequence[str] = (),
) -> None:
    """A rich table on a terminal; aligned plain columns when piped (no box, no colour).

    Only the columns named in `wrap` fold onto several lines; the others (ids, times)
    stay whole so they can be copied. Strings are shown as they are, never as markup.
    """
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for name in columns:
            table.add_column(name, no_wrap=name not in wrap, overflow="fold")
        for row in rows:
            table.add_row(*(c if isinstance(c, Text) else Text(c) for c in row))
        console.print(table)
        return
    if title:
        click.echo(title)
    plain = [[c.plain if isinstance(c, Text) else c for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in plain)]) for i, h in enumerate(columns)]
    for row in [list(columns), *plain]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[], None]]:
    """A progress bar on standard error when it is a terminal; yields `advance()`."""
    console = stderr_console()
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        redirect_stdout=False,  # standard output is the command's result, never the bar's
        redirect_stderr=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
