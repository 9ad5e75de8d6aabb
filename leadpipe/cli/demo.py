"""`leadpipe demo [--json]`: run the main job on the embedded default and show it.

On a terminal the leads move in a live table; piped, each change is one plain line.
The end is a table of where each lead ended, expected against actual, and why.
Exit 0 only when every lead reached its expected state.
"""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import NoReturn

import click
from redis import RedisError
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from config import Settings
from leadpipe.cli.gate import with_settings
from leadpipe.cli.options import json_option
from leadpipe.cli.output import fail, print_json
from leadpipe.demo import DemoError, run_demo
from leadpipe.demo_samples import DemoReport, Tracked
from leadpipe.exit_codes import EXIT_FAILED, EXIT_OK

#: Width of the final table when the output is not a terminal (no wrapping of lead ids).
PIPED_WIDTH = 200

_STYLE = {"delivered": "green", "dead": "red", "duplicate": "yellow"}


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl+C does


def _progress_table(leads: list[Tracked], elapsed: float) -> Table:
    table = Table(title=f"leadpipe demo: {elapsed:4.1f}s", title_justify="left")
    for column in ("#", "lead", "lead id", "expected", "now"):
        table.add_column(column)
    for t in leads:
        state = t.actual if t.lead_id else "waiting to be sent"
        table.add_row(
            str(t.number),
            t.sample.key,
            t.lead_id or "-",
            t.sample.expected,
            Text(state, _STYLE.get(t.state or "", "")),
        )
    return table


def _final_table(report: DemoReport, terminal: bool) -> Table:
    table = Table(title="Where each lead ended", title_justify="left")
    for column in ("#", "lead", "lead id", "expected", "actual", "why", "ok"):
        table.add_column(column, overflow="fold", no_wrap=column in ("lead id", "actual"))
    for t in report.leads:
        ok = Text("yes", "green") if t.ok else Text("NO", "bold red")
        why = t.to_json()["why"]
        table.add_row(
            str(t.number),
            Text(t.sample.key).append(f"\n{t.sample.title}", "dim") if terminal else t.sample.key,
            t.lead_id or "-",
            t.sample.expected,
            Text(t.actual, _STYLE.get(t.state or "", "")),
            Text(why),
            ok,
        )
    return table


class Progress:
    """Live table on a terminal; one plain line per state change otherwise."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.live: Live | None = None
        self.seen: dict[int, str] = {}

    def notify(self, event: str, detail: str) -> None:
        if self.quiet:
            if event == "timeout":
                click.echo(detail, err=True)
            return
        if event == "timeout":
            self.console.print("[red]Some leads did not settle in time; worker logs:[/red]")
        self.console.print(detail, markup=False, highlight=False)

    def on_change(self, leads: list[Tracked], elapsed: float) -> None:
        if self.quiet:
            return
        if self.console.is_terminal:
            if self.live is None:
                self.live = Live(console=self.console, transient=True, auto_refresh=False)
                self.live.start()
            self.live.update(_progress_table(leads, elapsed), refresh=True)
            return
        for t in leads:
            now = t.actual
            if t.lead_id is not None and self.seen.get(t.number) != now:
                self.seen[t.number] = now
                self.console.print(
                    f"{elapsed:5.1f}s  #{t.number} {t.sample.key:<16} {t.lead_id}  {now}",
                    markup=False,
                    highlight=False,
                )

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _summary(report: DemoReport) -> str:
    good = sum(1 for t in report.leads if t.ok)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts().items()))
    verdict = "as expected" if report.ok else "NOT as expected"
    return (
        f"{good} of {len(report.leads)} leads ended {verdict} in {report.seconds:.1f}s "
        f"(this run's leads: {counts})"
    )


def _webhook_lines(report: DemoReport) -> list[str]:
    """What partner acme's webhook receiver got: one line per verified event."""
    if not report.webhooks:
        return ["acme's webhook receiver got no verified event (NOT as expected)"]
    lines = [f"acme's webhook receiver verified {len(report.webhooks)} event(s):"]
    for event in report.webhooks:
        retried = f", after {event['tries'] - 1} retry" if event["tries"] > 1 else ""
        lines.append(
            f"  {event['type']} for lead {event['leadId']} "
            f"(webhook-id {event['webhookId']}, signature verified{retried})"
        )
    return lines


@click.command("demo")
@json_option
@with_settings
def demo(settings: Settings, as_json: bool) -> None:
    """Run the whole pipeline locally on sample leads and show where each one ends."""
    console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH, highlight=False)
    progress = Progress(console, quiet=as_json)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="leadpipe-demo-") as workdir:
            report = run_demo(settings, Path(workdir), progress.notify, progress.on_change)
    except KeyboardInterrupt:  # the gate exits 130
        progress.stop()
        click.echo("leadpipe demo: interrupted; everything it started is stopped.", err=True)
        raise
    except (DemoError, TimeoutError, RuntimeError, RedisError) as exc:
        progress.stop()
        fail(f"leadpipe demo: {exc}", code=EXIT_FAILED)
    finally:
        progress.stop()
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        print_json(report.to_json())
    else:
        console.print(_final_table(report, console.is_terminal))
        for line in _webhook_lines(report):
            console.print(line)
        console.print(_summary(report), style="green" if report.ok else "bold red")
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)
