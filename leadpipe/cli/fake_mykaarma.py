"""`leadpipe fake-mykaarma`: serve the local myKaarma stand-in until SIGINT or SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from types import FrameType

import click

from leadpipe.cli.common import EXIT_FAILED, json_option
from leadpipe.fake_mykaarma import DEFAULT_PORT, BehaviourError, FakeMyKaarma, parse_behaviour

#: How often the main thread looks for a stop signal, in seconds.
STOP_POLL_SECONDS = 0.1


def _behaviours(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    behaviours: dict[str, str] = {}
    for value in values:
        dealer, sep, spec = value.partition("=")
        if not sep or not dealer.strip():
            raise click.BadParameter(f"{value!r} is not DEALER=SPEC", ctx=ctx, param=param)
        try:
            parse_behaviour(spec)
        except BehaviourError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
        behaviours[dealer.strip()] = spec
    return behaviours


@click.command("fake-mykaarma")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to bind (0: any free port).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Delay before every answer, in milliseconds.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of requests that answer 503 at random.",
)
@click.option(
    "--behaviour",
    "behaviours",
    multiple=True,
    metavar="DEALER=SPEC",
    callback=_behaviours,
    help="A dealer's behaviour (repeatable; DEALER '*' for all): ok, reject, status:<code>, "
    "flaky:<n>, retry-after:<s>, 429:<s>, drop-after-store, down, slow:<ms>.",
)
@click.option(
    "--username", envvar="MYKAARMA_USERNAME", show_envvar=True, help="Basic auth user to require."
)
@click.option(
    "--password",
    envvar="MYKAARMA_PASSWORD",
    show_envvar=True,
    help="Basic auth password to require (prefer the variable: arguments show in `ps`).",
)
@click.option("--seed", type=int, default=None, help="Seed for --fail-rate and prospect ids.")
@click.option("--allow-remote", is_flag=True, help="Allow binding a non-loopback address.")
@click.option("--access-log", is_flag=True, help="Log each request line (never bodies).")
@json_option
def fake_mykaarma(
    host: str,
    port: int,
    latency_ms: float,
    fail_rate: float,
    behaviours: dict[str, str],
    username: str | None,
    password: str | None,
    seed: int | None,
    allow_remote: bool,
    access_log: bool,
    as_json: bool,
) -> None:
    """Serve a local stand-in for myKaarma's lead API until Ctrl+C or SIGTERM."""
    try:
        fake = FakeMyKaarma(
            host,
            port,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            username=username,
            password=password,
            behaviours=behaviours,
            seed=seed,
            allow_remote=allow_remote,
            access_log=access_log,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if access_log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        fake.start()
    except OSError as exc:
        click.echo(f"Error: cannot serve on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILED)

    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)  # no locks in a signal handler; the loop below polls

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # One line even with --json: a caller reads it while the command keeps running.
        click.echo(json.dumps({"url": fake.url}) if as_json else fake.url)
        if not as_json:
            click.echo("Fake myKaarma is serving; Ctrl+C to stop.", err=True)
        while not stop_requested:
            time.sleep(STOP_POLL_SECONDS)
    finally:
        fake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


COMMAND = fake_mykaarma
