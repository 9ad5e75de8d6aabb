"""`leadpipe notifications LEAD_ID [--json]`: each outcome notification of a lead
(CONTRACT section 9): its type, state (pending, sent, failed), attempts, the last
answer, and one row per attempt."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from leadpipe.cli.context import CliContext, operator_command
from leadpipe.cli.options import json_option
from leadpipe.cli.output import print_json, print_table, stdout_console
from leadpipe.cli.status import unknown_lead
from pipeline.record_fields import RecordField

#: Colour of each notification state on a terminal.
STATE_STYLES = {"sent": "bold green", "failed": "bold red", "pending": "cyan"}
COLUMNS = ("webhook-id", "type", "state", "attempts", "last status", "last error")


def _row(view: dict[str, Any]) -> list[str | Text]:
    return [
        view["webhookId"] or "",
        view["type"] or "",
        Text(view["state"] or "", STATE_STYLES.get(view["state"] or "", "")),
        str(view["attempts"]),
        "" if view["lastStatus"] is None else str(view["lastStatus"]),
        view["lastError"] or "",
    ]


@click.command("notifications")
@click.argument("lead_id")
@json_option
@operator_command
def notifications(context: CliContext, lead_id: str, as_json: bool) -> None:
    """Show the outcome notifications of lead LEAD_ID sent to its partner's webhook."""
    lead_id = lead_id.strip()
    views = context.notifications.of_lead(lead_id)
    if not views and context.store.load(lead_id, RecordField.STATE) == [None]:
        unknown_lead(lead_id)
    if as_json:
        print_json(views)
        return
    if not views:
        click.echo(f"No notifications for lead {lead_id}: its partner has no webhook.")
        return
    console = stdout_console()
    if console.is_terminal:
        print_table(console, COLUMNS, [_row(v) for v in views], title=f"lead {lead_id}")
    else:
        for view in views:
            click.echo(
                "  ".join(cell.plain if isinstance(cell, Text) else cell for cell in _row(view))
            )
    for view in views:
        for attempt in view["attemptLog"]:
            status = attempt.get("status")
            click.echo(
                f"  {view['webhookId']} attempt {attempt.get('attempt')}: {attempt.get('at')} "
                f"{'' if status is None else status} {attempt.get('outcome', '')} "
                f"{attempt.get('error') or ''}".rstrip()
            )
