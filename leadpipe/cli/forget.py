"""`leadpipe forget --email ADDRESS | LEAD_ID... [--dry-run] [--json]` (CONTRACT 7).

Erases every trace of the leads (record, payloads, attempts, history, dead letter,
dedupe claim, index entries, queued ingest messages in a Redis broker), in any
state. A lead whose POST is in flight is stopped: forget waits for that POST to end
(it is bounded by the lease), so nothing is POSTed after it returns, and the record
never comes back. The store does the work (`store.erasure`); this only parses and
prints. Nothing personal is printed or logged: the address is never echoed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from config.urls import Broker, broker_kind
from leadpipe.cli.context import CliContext, operator_command
from leadpipe.cli.options import json_option
from leadpipe.cli.output import print_json
from leadpipe.exit_codes import EXIT_USAGE
from pipeline.privacy import address_problem
from store.connection import redis_client
from store.erasure import BrokerScrub, Eraser


def _broker_scrub(context: CliContext) -> BrokerScrub | None:
    """The scrub of a Redis broker; None for RabbitMQ (a queue there is not searchable,
    and the tombstone refuses a message that arrives later)."""
    from tasks.scrub import redis_broker_scrub

    url = context.broker_url
    if broker_kind(url) is not Broker.REDIS:
        return None
    client = context.store.redis if url == context.redis_url else redis_client(url)
    return redis_broker_scrub(client)


@click.command("forget")
@click.argument("lead_ids", nargs=-1)
@click.option("--email", "email", metavar="ADDRESS", help="Forget every lead with this email.")
@click.option("--dry-run", is_flag=True, help="Only count what would be forgotten.")
@json_option
@operator_command
def forget(
    context: CliContext,
    lead_ids: tuple[str, ...],
    email: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Erase every trace of LEAD_ID... or of every lead with --email ADDRESS."""
    if bool(lead_ids) == (email is not None):
        raise click.UsageError("give either LEAD_ID... or --email ADDRESS", ctx=None)
    if email is not None:
        problem = address_problem(email)
        if problem is not None:  # the address itself is not repeated: it is personal
            click.echo(f"Error: --email is not an email address: {problem}", err=True)
            raise SystemExit(EXIT_USAGE)
    settings = context.settings
    result = Eraser(context.store.redis, context.store.keys).forget_leads(
        lead_ids=lead_ids,
        email=email,
        dry_run=dry_run,
        scrub=_broker_scrub(context),
        tombstone_seconds=settings.retention_seconds,
        wait_seconds=settings.lease_seconds,
    )
    if not dry_run:  # the audit line: how many and when, never who
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        waited = len(result.were_in_flight)
        click.echo(
            f"leadpipe forget: {len(result.lead_ids)} lead(s) erased at {stamp}"
            + (f"; waited for {waited} POST(s) in flight" if waited else ""),
            err=True,
        )
    if as_json:
        print_json(
            {"forgotten": len(result.lead_ids), "leadIds": result.lead_ids, "dryRun": dry_run}
        )
    elif dry_run:
        click.echo(f"Would forget {len(result.lead_ids)} lead(s) (dry run: nothing changed).")
    elif result.lead_ids:
        click.echo(f"Forgot {len(result.lead_ids)} lead(s): " + ", ".join(result.lead_ids))
    else:
        click.echo("Nothing to forget: no such lead.")
    if result.still_in_flight:
        click.echo(
            f"Warning: {len(result.still_in_flight)} POST(s) still running past the lease; "
            "their records stay erased.",
            err=True,
        )
