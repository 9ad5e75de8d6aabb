"""`leadpipe flower`: Flower for this app, loopback by default, basic auth elsewhere.

The process becomes `celery -A tasks flower` (exec), so signals and the exit code are
Flower's own. Basic auth (`LEADPIPE_FLOWER_BASIC_AUTH`, `user:password`) reaches
Flower as its `FLOWER_BASIC_AUTH` variable, Flower's documented equivalent of
`--basic-auth`: a command-line argument would show the password to every local user
in `ps`. Lead payloads never reach Flower: `tasks.request.MaskedRequest` masks the
arguments of `leads.ingest` in events and remote-control answers, and the later
tasks carry only the lead id.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from typing import NoReturn

import click

from config import SettingsError, load_settings
from leadpipe.cli.common import EXIT_FAILED, EXIT_USAGE, json_option
from store.connection import redis_url
from store.embedded import EmbeddedRedisError

#: Flower's own default port.
DEFAULT_PORT = 5555
DEFAULT_ADDRESS = "127.0.0.1"


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def flower_argv(address: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "tasks", "flower",
        f"--address={address}", f"--port={port}",
    ]  # fmt: skip


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"leadpipe flower: {message}", err=True)
    sys.exit(code)


@click.command("flower")
@click.option("--address", default=DEFAULT_ADDRESS, show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@json_option
def flower(address: str, port: int, as_json: bool) -> None:
    """Run Flower (Celery's web monitor) for leadpipe's workers and queues."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        _fail(str(exc), EXIT_USAGE)
    auth = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else None
    if auth is None and not is_loopback(address):
        _fail(
            f"refusing to serve Flower on {address} without authentication: set "
            "LEADPIPE_FLOWER_BASIC_AUTH=user:password (required on any address but loopback)",
            EXIT_USAGE,
        )
    if auth is not None and "," in auth:
        _fail("LEADPIPE_FLOWER_BASIC_AUTH: Flower cannot take a ',' in user:password", EXIT_USAGE)
    try:
        url = redis_url(settings)  # resolve the embedded default once, as the workers do
    except EmbeddedRedisError as exc:
        _fail(str(exc), EXIT_FAILED)
    env = {**os.environ, "LEADPIPE_REDIS_URL": url}
    if auth is not None:
        env["FLOWER_BASIC_AUTH"] = auth
    host = f"[{address}]" if ":" in address else address
    where = f"http://{host}:{port}"
    if as_json:
        click.echo(json.dumps({"url": where, "basicAuth": auth is not None}))
    else:
        click.echo(
            f"Flower on {where} ({'basic auth' if auth else 'no auth: loopback only'})", err=True
        )
    sys.stdout.flush()
    sys.stderr.flush()
    argv = flower_argv(address, port)
    os.execve(argv[0], argv, env)  # noqa: S606 (argv is ours; no shell)


COMMAND = flower
