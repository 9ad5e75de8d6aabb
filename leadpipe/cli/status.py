"""`leadpipe status LEAD_ID [--json]`: where a lead is, and why.

The record in full (this is the command to look one lead up, so nothing is masked):
state, partner, transactionId, vehicleIdMethod, dealerUuid, one row per delivery
attempt, prospectUuid, error and reason when dead, warnings, duplicateOf, and the
operator history (replays). `print_record` is shared with `leadpipe dlq show`.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from leadpipe.cli.context import CliContext, operator_command
from leadpipe.cli.options import json_option
from leadpipe.cli.output import fail, print_json, print_table, stdout_console
from leadpipe.exit_codes import EXIT_FAILED
from store.views import lead_view

#: Colour of each state on a terminal.
STATE_STYLES = {
    "delivered": "bold green",
    "dead": "bold red",
    "duplicate": "bold yellow",
    "received": "cyan",
    "validated": "cyan",
    "delivering": "cyan",
    "held": "bold magenta",
}

#: What an operator does next about a dead lead, by reason.
NEXT_STEPS = {
    "invalid": "fix the payload, then `leadpipe dlq replay {id} --payload FIXED.json`",
    "unroutable": "add a route for it to the routing file, then `leadpipe dlq replay {id}`",
    "rejected": "check myKaarma's answer above (dealer, credentials, request), then "
    "`leadpipe dlq replay {id}`",
    "exhausted": "once myKaarma answers again, `leadpipe dlq replay {id}`",
    "expired": "if the lead is still wanted, `leadpipe dlq replay {id}`",
    "drained": "once the dealer takes leads again, `leadpipe dlq replay {id}` (routes it again)",
}


def unknown_lead(lead_id: str) -> NoReturn:
    """Exit 1: no such lead, with how to find the right id."""
    fail(
        f"no lead {lead_id}: check the id with `leadpipe dlq list` (dead letters) or the "
        "output of `leadpipe submit`",
        code=EXIT_FAILED,
    )


def next_step(record: dict[str, Any]) -> str | None:
    held = record.get("held")
    if record.get("state") == "held" and isinstance(held, dict):
        when = f" next probe {held['nextProbeAt']}." if held.get("nextProbeAt") else ""
        note = f" Note: {held['note']}." if held.get("note") else ""
        return (
            f"held ({held.get('reason')}): {held.get('because')}.{when}{note} "
            "See `leadpipe dealers`."
        )
    if record.get("state") != "dead":
        return None
    template = NEXT_STEPS.get(str(record.get("reason")))
    return template.format(id=record["leadId"]) if template else None


def _state_text(record: dict[str, Any]) -> Text:
    state = str(record.get("state"))
    text = Text(state, STATE_STYLES.get(state, ""))
    if record.get("reason"):
        text.append(f" ({record['reason']})")
    held = record.get("held")
    if isinstance(held, dict) and held.get("reason"):
        text.append(f" ({held['reason']})")
    return text


def _overview(record: dict[str, Any]) -> list[tuple[str, str | Text]]:
    rows: list[tuple[str, str | Text]] = [("state", _state_text(record))]
    for label, key in (
        ("partner", "partner"),
        ("transactionId", "transactionId"),
        ("vehicleIdMethod", "vehicleIdMethod"),
        ("dealerUuid", "dealerUuid"),
        ("prospectUuid", "prospectUuid"),
        ("isNewCreated", "isNewCreated"),
        ("duplicateOf", "duplicateOf"),
        ("receivedAt", "receivedAt"),
        ("deliveredAt", "deliveredAt"),
        ("failedAt", "failedAt"),
        ("replayedAt", "replayedAt"),
        ("nextAttemptAt", "nextAttemptAt"),
    ):
        value = record.get(key)
        if value is not None and value != "":
            rows.append((label, str(value).lower() if isinstance(value, bool) else str(value)))
    if record.get("replays"):
        rows.append(("replays", str(record["replays"])))
    return rows


def _attempt_row(attempt: Any) -> list[str]:
    if not isinstance(attempt, dict):
        return ["?", "", "", "", str(attempt), ""]
    delay = attempt.get("delaySeconds")
    return [
        str(attempt.get("attempt", "")),
        str(attempt.get("at") or ""),
        str(attempt.get("status") if attempt.get("status") is not None else "-"),
        str(attempt.get("outcome") or ""),
        str(attempt.get("error") or ""),
        f"{delay}s" if delay is not None else "",
    ]


ATTEMPT_COLUMNS = ("#", "time", "status", "outcome", "error", "next in")


def error_lines(error: Any, *, bodies: bool = True) -> list[str]:
    """The error of a record as lines: the HTTP status and message, or one line per
    failing field, then myKaarma's own error body when it sent one (unless `bodies` is
    False: a list of many leads shows statuses only, as myKaarma may echo customer data)."""
    if not error:
        return []
    if not isinstance(error, dict):
        return [str(error)]
    message = str(error.get("message") or "")
    status = error.get("status")
    fields = [e for e in error.get("errors") or [] if isinstance(e, dict)]
    if status is not None:
        lines = [message if f"HTTP {status}" in message else f"HTTP {status}: {message}"]
    elif fields:
        lines = [f"{e.get('field')}: {e.get('message')}" for e in fields]
    else:
        lines = [message]
    if bodies and error.get("detail"):
        lines.append(f"myKaarma said: {error['detail']}")
    if bodies and error.get("mykaarma"):
        body = json.dumps(error["mykaarma"], ensure_ascii=False, default=str)
        lines.append(f"myKaarma said: {body}")
    return [line for line in lines if line]


def _history_row(entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return [str(entry), "", "", ""]
    previous = entry.get("previousError")
    message = previous.get("message", "") if isinstance(previous, dict) else str(previous or "")
    extra = " (payload replaced)" if "previousPayload" in entry else ""
    return [
        str(entry.get("at") or ""),
        str(entry.get("action") or "") + extra,
        str(entry.get("previousReason") or ""),
        message,
    ]


def _payload_text(record: dict[str, Any]) -> str:
    return json.dumps(record.get("payload"), indent=2, ensure_ascii=False, default=str)


def _render_terminal(console: Console, record: dict[str, Any], *, payload: bool) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in _overview(record):
        grid.add_row(label, value if isinstance(value, Text) else Text(value))
    parts: list[Any] = [grid]
    if record.get("error"):
        parts += [Text(""), Text("error", "bold red")]
        parts += [Text(line) for line in error_lines(record["error"])]
    if record.get("warnings"):
        parts += [Text(""), Text("warnings", "bold yellow")]
        parts += [Text(f"- {w}") for w in record["warnings"]]
    hint = next_step(record)
    if hint:
        parts += [Text(""), Text.assemble(("next: ", "bold"), hint)]
    console.print(Panel(Group(*parts), title=f"lead {record['leadId']}", title_align="left"))
    if record.get("attempts"):
        attempts = [_attempt_row(a) for a in record["attempts"]]
        print_table(console, ATTEMPT_COLUMNS, attempts, title="delivery attempts")
    if record.get("history"):
        rows = [_history_row(e) for e in record["history"]]
        print_table(console, ("time", "action", "was", "error then"), rows, title="history")
    if payload:
        console.print(Text("payload (as received)", "bold"))
        console.print_json(_payload_text(record))


def _render_plain(record: dict[str, Any], *, payload: bool) -> None:
    click.echo(f"leadId: {record['leadId']}")
    for label, value in _overview(record):
        click.echo(f"{label}: {value.plain if isinstance(value, Text) else value}")
    for line in error_lines(record.get("error")):
        click.echo(f"error: {line}")
    for warning in record.get("warnings") or []:
        click.echo(f"warning: {warning}")
    for attempt in record.get("attempts") or []:
        number, at, status, outcome, error, delay = _attempt_row(attempt)
        details = "  ".join(
            p for p in (at, status, outcome, error, delay and f"next in {delay}") if p
        )
        click.echo(f"attempt {number}: {details}")
    for entry in record.get("history") or []:
        at, action, was, message = _history_row(entry)
        click.echo(f"history: {at} {action} (was {was or '-'}: {message or '-'})")
    hint = next_step(record)
    if hint:
        click.echo(f"next: {hint}")
    if payload:
        click.echo("payload: " + json.dumps(record.get("payload"), ensure_ascii=False, default=str))


def render_record(record: dict[str, Any], *, payload: bool = False) -> None:
    """Print a lead record for a person: a panel on a terminal, `key: value` when piped."""
    console = stdout_console()
    if console.is_terminal:
        _render_terminal(console, record, payload=payload)
    else:
        _render_plain(record, payload=payload)


def print_record(record: dict[str, Any], *, as_json: bool, payload: bool = False) -> None:
    """Print one lead's record: JSON, or for a person."""
    if as_json:
        print_json(record)
    else:
        render_record(record, payload=payload)


@click.command("status")
@click.argument("lead_id")
@json_option
@operator_command
def status(context: CliContext, lead_id: str, as_json: bool) -> None:
    """Show where lead LEAD_ID is: state, delivery attempts, error, warnings."""
    record = lead_view(context.store, lead_id.strip())
    if record is None:
        unknown_lead(lead_id)
    print_record(record, as_json=as_json)
