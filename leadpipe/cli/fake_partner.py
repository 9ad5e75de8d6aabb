"""`leadpipe fake-partner`: a partner's webhook receiver that verifies every
notification's Standard Webhooks signature, for demos and trying a routing file."""

from __future__ import annotations

import json
import os
import sys

import click

from leadpipe.cli.gate import gated
from leadpipe.cli.options import bind_options, json_option
from leadpipe.cli.serving import serve_until_signal
from leadpipe.exit_codes import EXIT_USAGE
from leadpipe.fake_partner import DEFAULT_PORT, FakePartner, Received
from pipeline.webhooks import WebhookConfigError, check_secret


def _announce(received: Received, as_json: bool) -> None:
    """One line per POST: which event, whether its signature verified, what we answered."""
    body = received.body if isinstance(received.body, dict) else {}
    if as_json:
        click.echo(json.dumps(received.as_json()))
        return
    data = body.get("data") or {}
    mark = "verified" if received.verified else "SIGNATURE INVALID"
    click.echo(
        f"{received.webhook_id} {body.get('type', '?')} lead {data.get('leadId', '?')} "
        f"({mark}) -> {received.answered}"
    )


@click.command("fake-partner")
@bind_options(DEFAULT_PORT, any_port=True)
@click.option(
    "--secret-env",
    default="LEADPIPE_FAKE_PARTNER_SECRET",
    show_default=True,
    help="Environment variable holding the webhook secret (whsec_...), as in the routing "
    "file's secret_env.",
)
@click.option(
    "--fail-first",
    type=click.IntRange(min=0),
    default=0,
    help="Answer 503 to the first N tries of each event (to watch the retries).",
)
@json_option
@gated
def fake_partner(address: str, port: int, secret_env: str, fail_first: int, as_json: bool) -> None:
    """Receive outcome notifications, verify each signature, print one line per POST."""
    try:
        secret = check_secret(
            os.environ.get(secret_env), variable=secret_env, key="fake-partner --secret-env"
        )
        partner = FakePartner(
            secret.get_secret_value(),
            address,
            port,
            fail_first=fail_first,
            on_receive=lambda r: _announce(r, as_json),
        )
    except (WebhookConfigError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    serve_until_signal(partner, where=f"{address}:{port}", what="Fake partner", as_json=as_json)
