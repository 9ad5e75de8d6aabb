"""`leadpipe stats [--json]`: leads by state, dead letters by reason, scheduled retries,
queue depths and event counters, from the counters the store keeps (no scan)."""

from __future__ import annotations

from typing import Any

import click
from rich.text import Text

from leadpipe.cli.context import CliContext, operator_command
from leadpipe.cli.options import json_option
from leadpipe.cli.output import print_json, print_table, stdout_console
from leadpipe.cli.status import STATE_STYLES
from pipeline.states import LeadState
from store.views import stats_view


def _rows(counts: dict[str, int], styles: dict[str, str] | None = None) -> list[list[str | Text]]:
    return [
        [Text(name, (styles or {}).get(name, "")), str(count)] for name, count in counts.items()
    ]


def _print(stats: dict[str, Any]) -> None:
    console = stdout_console()
    order = [state.value for state in LeadState]
    states = {s: stats["states"].get(s, 0) for s in order}
    states.update({s: n for s, n in stats["states"].items() if s not in states})
    print_table(console, ("state", "leads"), _rows(states, STATE_STYLES), title="Leads by state")
    dead = dict(stats["deadLetters"])
    print_table(console, ("reason", "dead letters"), _rows(dead), title="Dead letters")
    click.echo(f"Scheduled retries: {stats['scheduledRetries']}")
    notify = stats["notifications"]
    print_table(console, ("state", "notifications"), _rows(notify), title="Notifications")
    memory = stats["redis"]
    limit = memory["maxMemoryBytes"]
    click.echo(
        f"State Redis memory: {memory['usedMemoryBytes']:,} bytes used of "
        + (f"{limit:,} (maxmemory)" if limit else "no maxmemory limit")
    )
    if stats["queues"]:
        print_table(console, ("queue", "messages"), _rows(stats["queues"]), title="Queues")
    else:
        click.echo("Queues: depth unknown (broker unreachable or not inspectable)")
    if stats["counters"]:
        counters = dict(sorted(stats["counters"].items()))
        print_table(console, ("counter", "count"), _rows(counters), title="Counters")


@click.command("stats")
@json_option
@operator_command
def stats(context: CliContext, as_json: bool) -> None:
    """Counts by state and dead-letter reason, scheduled retries, notifications by state,
    queue depths and the state Redis's memory."""
    view = stats_view(context.store, context.queue_depths())
    if as_json:
        print_json(view)
    else:
        _print(view)
