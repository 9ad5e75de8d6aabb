"""Serving until told to stop: what `fake-mykaarma` and `fake-partner` share."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from types import FrameType

import click

#: How often the main thread looks for a stop signal, in seconds.
STOP_POLL_SECONDS = 0.1


def serve_until_signal(url: str, stop: Callable[[], None], *, what: str, as_json: bool) -> None:
    """Print `url` (one line, JSON with `as_json`: a caller reads it while the command
    keeps running), then wait for SIGINT or SIGTERM and call `stop`."""
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)  # no locks in a signal handler; the loop below polls

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(json.dumps({"url": url}) if as_json else url)
        if not as_json:
            click.echo(f"{what} is serving; Ctrl+C to stop.", err=True)
        while not stop_requested:
            time.sleep(STOP_POLL_SECONDS)
    finally:
        stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
