"""What the operator commands share: settings, the store, the Celery app, queue depths,
and how they talk to the operator (consoles, tables, progress bars).

`operator_command` builds a `CliContext` from the environment for a command and turns
the failures an operator can fix into one line that says what to do next: a bad
variable exits 2, an unreachable Redis or broker exits 1. Celery is imported only when
a command sends something, so `status` and `dlq list` stay quick.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import click
import redis
from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from config import Settings, SettingsError, load_settings
from leadpipe.cli.common import EXIT_FAILED, EXIT_USAGE
from store.connection import broker_url, redis_client, redis_url
from store.embedded import EmbeddedRedisError
from store.records import LeadStore

F = TypeVar("F", bound=Callable[..., Any])

#: Reconnect attempts of one Redis command from the CLI before it reports Redis down.
CLI_RECONNECT_ATTEMPTS = 3
#: Seconds a queue-depth probe may take before the depth is reported as unknown.
QUEUE_PROBE_TIMEOUT_SECONDS = 3.0
#: Broker URL schemes whose queues are Redis lists (LLEN gives the depth).
REDIS_BROKER_SCHEMES = ("redis://", "rediss://", "unix://")
#: Broker URL schemes of AMQP brokers (a passive queue_declare gives the depth).
AMQP_BROKER_SCHEMES = ("amqp://", "amqps://", "pyamqp://")

_PASSWORD_IN_URL = re.compile(r"(//[^:/@]*:)[^@/]*@")


def safe_url(url: str) -> str:
    """`url` with any password replaced by `***`, fit for an error message."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


def fail(message: str, *, code: int = EXIT_FAILED) -> NoReturn:
    """Print `message` on standard error and exit with `code`."""
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(code)


@dataclass
class CliContext:
    """The long-lived objects of one command: built lazily, closed at the end."""

    settings: Settings
    _store: LeadStore | None = field(default=None, init=False)

    @property
    def redis_url(self) -> str:
        return redis_url(self.settings)

    @property
    def broker_url(self) -> str:
        return broker_url(self.settings)

    @property
    def store(self) -> LeadStore:
        if self._store is None:
            client = redis_client(self.redis_url)
            # An operator waiting at a prompt wants an answer in seconds, not the
            # worker's fifteen seconds of patience with a restarting Redis.
            client.set_retry(Retry(ExponentialBackoff(cap=0.5, base=0.05), CLI_RECONNECT_ATTEMPTS))
            self._store = LeadStore(client)
        return self._store

    @property
    def app(self) -> Any:
        """leadpipe's Celery app, configured from the same environment (imported now).

        Taken from `tasks.celery`, the module that holds it: a client needs neither the
        worker's loops nor its start-up checks, which `tasks/__init__` registers."""
        from tasks.celery import app

        return app

    def enqueue_enrich(self, lead_id: str) -> None:
        """Send a lead (by id only) to the `leads.enrich` queue, as the pipeline does."""
        from store.lifecycle import Step
        from tasks.lead_tasks import follow

        follow(Step(lead_id, "enrich"))

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each of leadpipe's queues; a queue whose depth cannot be
        read (broker down, unknown transport, queue not declared) is left out."""
        url = self.broker_url
        if url.startswith(REDIS_BROKER_SCHEMES):
            return _redis_queue_depths(url)
        if url.startswith(AMQP_BROKER_SCHEMES):
            return _amqp_queue_depths(url)
        return {}

    def close(self) -> None:
        if self._store is not None:
            self._store.redis.close()


def _redis_queue_depths(url: str) -> dict[str, int]:
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    from tasks.queues import ALL_QUEUES

    client = redis.Redis.from_url(
        url,
        socket_timeout=QUEUE_PROBE_TIMEOUT_SECONDS,
        socket_connect_timeout=QUEUE_PROBE_TIMEOUT_SECONDS,
    )
    try:
        pipe = client.pipeline(transaction=False)
        for name in ALL_QUEUES:
            # kombu keeps one list per priority step; step 0 is the bare queue name.
            for step in PRIORITY_STEPS:
                pipe.llen(f"{name}{Channel.sep}{step}" if step else name)
        sizes = pipe.execute()
    except redis.RedisError:
        return {}
    finally:
        client.close()
    per_queue = len(PRIORITY_STEPS)
    return {
        name: int(sum(sizes[i * per_queue : (i + 1) * per_queue]))
        for i, name in enumerate(ALL_QUEUES)
    }


def _amqp_queue_depths(url: str) -> dict[str, int]:
    from kombu.connection import Connection
    from kombu.exceptions import ChannelError, OperationalError

    from tasks.queues import ALL_QUEUES

    depths: dict[str, int] = {}
    try:
        with Connection(url, connect_timeout=QUEUE_PROBE_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1)
            for name in ALL_QUEUES:
                channel = conn.channel()
                try:
                    ok = channel.queue_declare(queue=name, passive=True)
                    depths[name] = int(ok.message_count)
                except ChannelError:
                    pass  # not declared yet: depth unknown, left out
                finally:
                    with contextlib.suppress(Exception):  # the broker may have closed it
                        channel.close()
    except (OperationalError, OSError):
        return depths
    return depths


def load_context() -> CliContext:
    """The command's context from the environment; a bad variable exits 2."""
    try:
        return CliContext(load_settings())
    except SettingsError as exc:
        fail(f"{exc}. Fix the variable and run the command again.", code=EXIT_USAGE)


def operator_command(func: F) -> F:
    """Give `func` a `CliContext` as its first argument; report what an operator can
    fix (Redis or broker unreachable, embedded Redis not starting) as one line, exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context = load_context()
        try:
            return func(context, *args, **kwargs)
        except EmbeddedRedisError as exc:
            fail(
                f"the embedded Redis is not available: {exc}. Set LEADPIPE_REDIS_URL to a "
                "running Redis, or check LEADPIPE_HOME is writable."
            )
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            fail(
                f"cannot reach Redis at {safe_url(context.redis_url)} ({exc}). Is it "
                "running? Check LEADPIPE_REDIS_URL."
            )
        except BrokerUnavailable as exc:
            fail(
                f"cannot reach the broker at {safe_url(context.broker_url)} ({exc}). Is it "
                "running? Check LEADPIPE_BROKER_URL (or LEADPIPE_REDIS_URL)."
            )
        finally:
            context.close()

    return wrapper  # type: ignore[return-value]


# -- talking to the operator ----------------------------------------------------------


def stdout_console() -> Console:
    """Colours and tables on a terminal; `is_terminal` False means print plain text."""
    return Console(highlight=False)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


Cell = str | Text


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


class Pacer:
    """At most `rate` events per second (None: no limit): `wait()` before each one."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = clock()

    def wait(self) -> None:
        if not self._interval:
            return
        delay = self._next - self._clock()
        if delay > 0:
            time.sleep(delay)
        self._next = max(self._next, self._clock()) + self._interval


def echo_err(message: str) -> None:
    click.echo(message, err=True)
