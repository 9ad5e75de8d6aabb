"""How `leadpipe dlq replay` shows what a replay did. The replay itself, and why it is
safe to interrupt, is the dead-letter registry's (`store.dead_letters`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from leadpipe.cli.mask import customer_summary
from leadpipe.cli.output import echo_err, print_json, print_table, stdout_console
from store.dead_letters import ReplayItem, replay_summary

#: Results a person is told about, one line each on standard error.
_NOTED = ("skipped", "unknown", "failed", "not-attempted")


def print_dry_run(items: Sequence[ReplayItem]) -> None:
    rows = []
    for item in items:
        payload = item.record.get("payload") if item.record else None
        what = {"would-replay": "replay", "would-resume": "send again"}.get(item.done, "skip")
        rows.append(
            [
                item.lead_id,
                item.state or "-",
                item.reason or "-",
                customer_summary(payload) if item.record else "-",
                what,
                item.message,
            ]
        )
    columns = ("leadId", "state", "reason", "customer", "would", "why")
    print_table(stdout_console(), columns, rows, wrap=("customer", "why"))


def report(items: Sequence[ReplayItem], *, dry_run: bool, as_json: bool) -> dict[str, Any]:
    """Print what the replay did (or would do) and return the summary: how many were
    replayed, skipped, unknown and not sent, with one entry per lead."""
    result = replay_summary(items, dry_run=dry_run)
    if as_json:
        print_json(result)
        return result
    if dry_run:
        print_dry_run(items)
    else:
        for item in items:
            if item.done in _NOTED:
                echo_err(f"{item.done} {item.lead_id}: {item.message}")
    n, s = result["replayed"], result["skipped"]
    verb = "Dry run: would replay" if dry_run else "Replayed"
    line = f"{verb} {n} lead{'s' if n != 1 else ''}; skipped {s}"
    if result["unknown"]:
        line += f"; {result['unknown']} unknown"
    if result["failed"]:
        line += f"; {result['failed']} not sent"
    click.echo(line + (". Nothing was changed." if dry_run else "."))
    return result
