"""`leadpipe worker`: the worker processes of `leadpipe.runner.default_specs`, supervised.

One `celery worker` process per pool (a small threads pool for the CPU-bound
queues, a large threads pool for delivery), each in a process group of its own so a
terminal's Ctrl+C reaches only this supervisor, which forwards it once:

    1st SIGTERM/SIGINT -> SIGTERM to every child (Celery's warm shutdown: tasks in hand
                          finish, nothing new is taken)
    2nd                -> SIGQUIT (cold shutdown: unfinished messages go back to Redis)
    3rd                -> SIGKILL

The supervisor exits when its children have exited. A child that exits on its own
(e.g. refused at start for missing MYKAARMA_* credentials, exit 2, its message on
stderr) stops the others and its exit code becomes the supervisor's: a process
manager restarts the whole unit rather than run half a pipeline.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType

import click
from kombu.utils.url import maybe_sanitize_url

from config import Settings
from leadpipe.cli.gate import with_settings
from leadpipe.cli.options import json_option
from leadpipe.exit_codes import EXIT_FAILED, EXIT_OK
from leadpipe.runner import WorkerSpec, default_specs
from store.connection import redis_url
from tasks.queues import ALL_QUEUES

#: How often the supervisor looks at its children and pending signals, seconds.
SUPERVISE_POLL_SECONDS = 0.1
#: Signal sent to the children at the 1st, 2nd and 3rd stop request.
ESCALATION = (signal.SIGTERM, signal.SIGQUIT, signal.SIGKILL)
LOGLEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Linux prctl option: a signal the kernel sends a child when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the supervisor is SIGKILLed, so no
    worker outlives it (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    spec: WorkerSpec
    process: subprocess.Popen[bytes]
    returncode: int | None = None

    def send(self, signum: int) -> None:
        """Signal the child's whole process group (Celery's pool lives there too)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)


@dataclass
class Supervisor:
    """Starts the worker processes, forwards stop signals, reports how they ended."""

    specs: Sequence[WorkerSpec]
    env: Mapping[str, str]
    children: list[Child] = field(default_factory=list)
    _signals: list[int] = field(default_factory=list)
    failed: Child | None = None
    _forwarded: int = 0
    _wake: threading.Event = field(default_factory=threading.Event)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # only a list append here; the loop does the work
        self._wake.set()

    def start(self) -> None:
        env = {**os.environ, **self.env}
        for spec in self.specs:
            process = subprocess.Popen(
                spec.argv(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=2,  # banner and logs on stderr: stdout is ours (--json)
                start_new_session=True,  # Ctrl+C in a terminal reaches only the supervisor
                preexec_fn=_die_with_parent,  # safe: the supervisor runs no threads
            )
            self.children.append(Child(spec, process))

    def _escalate(self) -> None:
        """Forward the next stop signal to every child still running."""
        signum = ESCALATION[min(self._forwarded, len(ESCALATION) - 1)]
        self._forwarded += 1
        for child in self.children:
            child.send(signum)

    def _reap(self) -> None:
        """Note children that exited; the first to exit on its own stops the others."""
        for child in self.children:
            if child.returncode is None and child.process.poll() is not None:
                child.returncode = child.process.returncode
                if self.failed is None and not self._forwarded:
                    self.failed = child
                    _report_exit(child)
                    self._signals.append(signal.SIGTERM)  # stop the others

    def _kill_leftovers(self) -> None:
        """After an unexpected error: no worker may outlive the supervisor."""
        for child in self.children:
            if child.process.poll() is None:
                child.send(signal.SIGKILL)
                child.process.wait()

    def run(self, on_started: Callable[[list[Child]], None] | None = None) -> int:
        """Start the children and supervise them; returns the exit code."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            if on_started is not None:
                on_started(self.children)
            while any(child.returncode is None for child in self.children):
                while len(self._signals) > self._forwarded:
                    self._escalate()
                self._reap()
                self._wake.wait(SUPERVISE_POLL_SECONDS)
                self._wake.clear()
        finally:
            self._kill_leftovers()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return self.exit_code()

    def exit_code(self) -> int:
        if self.failed is not None:
            return _exit_code(self.failed.returncode) or EXIT_FAILED
        for child in self.children:
            # SIGTERM is what we forwarded: a child that ended by it was stopped, not failed
            if child.returncode and child.returncode != -signal.SIGTERM:
                return _exit_code(child.returncode)
        return EXIT_OK


def _exit_code(returncode: int | None) -> int:
    """A child's return code as an exit code (killed by signal N: 128 + N, as shells say)."""
    if returncode is None:
        return EXIT_FAILED
    return 128 - returncode if returncode < 0 else returncode


def _report_exit(child: Child) -> None:
    code = child.returncode
    what = f"the {child.spec.name} worker ({', '.join(child.spec.queues)}) exited with code {code}"
    hint = "; see its message above" if code else ""
    click.echo(f"leadpipe worker: {what}{hint}; stopping the others.", err=True)


def _announce(children: list[Child], url: str, as_json: bool) -> None:
    """Say what runs where: one JSON line on stdout with --json, else a line on stderr."""
    workers = [
        {
            "name": c.spec.name,
            "pid": c.process.pid,
            "queues": list(c.spec.queues),
            "pool": c.spec.pool,
            "concurrency": c.spec.concurrency,
        }
        for c in children
    ]
    if as_json:
        click.echo(json.dumps({"redis": maybe_sanitize_url(url), "workers": workers}))
        return
    running = ", ".join(
        f"{c.spec.name} (pid {c.process.pid}: {c.spec.pool} x{c.spec.concurrency} "
        f"on {','.join(c.spec.queues)})"
        for c in children
    )
    click.echo(f"leadpipe worker: Redis {maybe_sanitize_url(url)}; started {running}", err=True)


def _only(specs: list[WorkerSpec], queues: str) -> list[WorkerSpec]:
    """The default specs restricted to `queues` (comma-separated); specs left empty go."""
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(ALL_QUEUES))
    if not wanted or unknown:
        raise click.BadParameter(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}; "
            f"leadpipe's queues are {', '.join(ALL_QUEUES)}",
            param_hint="--queues",
        )
    chosen = [replace(s, queues=[q for q in s.queues if q in wanted]) for s in specs]
    return [s for s in chosen if s.queues]


@click.command("worker")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 512),
    default=None,
    help="Delivery threads (default: LEADPIPE_DELIVER_CONCURRENCY, 64).",
)
@click.option(
    "-l",
    "--loglevel",
    type=click.Choice(LOGLEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "-Q",
    "--queues",
    default=None,
    help="Consume only these queues (comma-separated), e.g. leads.deliver on a host "
    "that only delivers. Default: all of " + ", ".join(ALL_QUEUES) + ".",
)
@json_option
@with_settings
def worker(
    settings: Settings, concurrency: int | None, loglevel: str, queues: str | None, as_json: bool
) -> None:
    """Run the worker processes for every leadpipe queue until SIGTERM or Ctrl+C."""
    deliver_threads = concurrency or settings.deliver_concurrency
    specs = default_specs(deliver_threads, loglevel.upper(), settings.notify_concurrency)
    if queues is not None:
        specs = _only(specs, queues)
    url = redis_url(settings)  # resolved once: every child shares this Redis
    env = {"LEADPIPE_REDIS_URL": url, "LEADPIPE_DELIVER_CONCURRENCY": str(deliver_threads)}
    supervisor = Supervisor(specs, env)
    sys.exit(supervisor.run(lambda children: _announce(children, url, as_json)))
