"""Serving until told to stop: what `fake-mykaarma` and `fake-partner` share."""

from __future__ import annotations

import json
import signal
import sys
import time
from types import FrameType
from typing import Protocol

import click

from leadpipe.exit_codes import EXIT_FAILED

#: How often the main thread looks for a stop signal, in seconds.
STOP_POLL_SECONDS = 0.1


class Server(Protocol):
    """A test server the CLI runs in the foreground (the fakes of myKaarma and a partner)."""

    @property
    def url(self) -> str: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...


def serve_until_signal(server: Server, *, where: str, what: str, as_json: bool) -> None:
    """Start `server` (an address it cannot bind exits EXIT_FAILED, naming `where`), print
    its URL (one line, JSON with `as_json`: a caller reads it while the command keeps
    running, so it comes after the bind, with the real port), then wait for SIGINT or
    SIGTERM and stop it."""
    try:
        server.start()
    except OSError as exc:
        click.echo(f"Error: cannot serve on {where}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILED)
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)  # no locks in a signal handler; the loop below polls

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(json.dumps({"url": server.url}) if as_json else server.url)
        if not as_json:
            click.echo(f"{what} is serving; Ctrl+C to stop.", err=True)
        while not stop_requested:
            time.sleep(STOP_POLL_SECONDS)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
