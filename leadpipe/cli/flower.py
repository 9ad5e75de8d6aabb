"""`leadpipe flower`: Flower for this app, loopback by default, basic auth elsewhere.

The process becomes Celery's `flower` command (exec) with leadpipe's guards
installed (`leadpipe.flower_app`: scrubbed events, queue lengths, remote control off
unless `LEADPIPE_FLOWER_ALLOW_CONTROL=1`), so signals and the exit code are Flower's
own. Basic auth (`LEADPIPE_FLOWER_BASIC_AUTH`, `user:password`) reaches Flower as
its `FLOWER_BASIC_AUTH` variable, Flower's documented equivalent of `--basic-auth`:
a command-line argument would show the password to every local user in `ps`. Lead
payloads never reach Flower: `tasks.request.MaskedRequest` masks the arguments of
`leads.ingest` in events and remote-control answers, the later tasks carry only the
lead id, and Flower scrubs whatever else a sender publishes.
"""

from __future__ import annotations

import json
import os
import sys

import click

from config import Settings
from config.urls import is_loopback
from leadpipe.cli.gate import with_settings
from leadpipe.cli.options import bind_options, json_option
from leadpipe.cli.output import fail
from leadpipe.exit_codes import EXIT_USAGE
from leadpipe.flower_app import TASKS_COLUMNS
from store.connection import redis_url

#: Flower's own default port.
DEFAULT_PORT = 5555


def flower_argv(address: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "leadpipe.flower_app", "-A", "tasks", "flower",
        f"--address={address}", f"--port={port}", f"--tasks_columns={TASKS_COLUMNS}",
    ]  # fmt: skip


@click.command("flower")
@bind_options(DEFAULT_PORT)
@json_option
@with_settings
def flower(settings: Settings, address: str, port: int, as_json: bool) -> None:
    """Run Flower (Celery's web monitor) for leadpipe's workers and queues."""
    auth = settings.flower_basic_auth.get_secret_value() if settings.flower_basic_auth else None
    if auth is None and not is_loopback(address):
        fail(
            f"refusing to serve Flower on {address} without authentication: set "
            "LEADPIPE_FLOWER_BASIC_AUTH=user:password (required on any address but loopback)",
            code=EXIT_USAGE,
        )
    if auth is not None and "," in auth:
        fail(
            "LEADPIPE_FLOWER_BASIC_AUTH: Flower cannot take a ',' in user:password",
            code=EXIT_USAGE,
        )
    url = redis_url(settings)  # resolve the embedded default once, as the workers do
    env = {**os.environ, "LEADPIPE_REDIS_URL": url}
    if auth is not None:
        env["FLOWER_BASIC_AUTH"] = auth
    host = f"[{address}]" if ":" in address else address
    where = f"http://{host}:{port}"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "url": where,
                    "basicAuth": auth is not None,
                    "remoteControl": settings.flower_allow_control,
                }
            )
        )
    else:
        control = "on" if settings.flower_allow_control else "off"
        click.echo(
            f"Flower on {where} ({'basic auth' if auth else 'no auth: loopback only'}; "
            f"remote control {control})",
            err=True,
        )
    sys.stdout.flush()
    sys.stderr.flush()
    argv = flower_argv(address, port)
    os.execve(argv[0], argv, env)  # noqa: S606 (argv is ours; no shell)
