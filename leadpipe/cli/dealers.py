"""`leadpipe dealers [--json]` and `dealers pause|resume|drain DEALER` (CONTRACT section 8).

The breakers live in Redis (store/dealers.py); this module parses options and prints.
A dealer is known when a worker has seen a lead for it or the routing file names it;
anything else is refused with the list of known dealers (exit 1), so a typo never
pauses a dealer nobody delivers to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from rich.text import Text

from leadpipe.cli.context import CliContext, operator_command
from leadpipe.cli.options import json_option
from leadpipe.cli.output import fail, print_json, print_table, stdout_console
from leadpipe.exit_codes import EXIT_FAILED
from pipeline.errors import RoutingFileError
from pipeline.routing import NO_ROUTES, RoutingTable, load_routing
from store.views import dealer_view, dealer_views

#: Colour of each breaker state on a terminal.
BREAKER_STYLES = {
    "closed": "green",
    "open": "bold red",
    "half_open": "yellow",
    "paused": "bold magenta",
}


def _routing(context: CliContext) -> RoutingTable:
    """The routing file's table; an empty one when it is unset or unreadable (the
    dealers seen in Redis are listed all the same)."""
    path = context.settings.routing_file
    if path is None:
        return NO_ROUTES
    try:
        return load_routing(path)
    except RoutingFileError:
        return NO_ROUTES


def _routed_dealers(context: CliContext) -> frozenset[str]:
    return _routing(context).dealer_uuids


def _known_dealer(context: CliContext, dealer: str) -> None:
    known = sorted({*context.store.dealers.known(), *_routed_dealers(context)})
    if dealer in known:
        return
    listing = ", ".join(known) if known else "none yet (no lead delivered, no routing file)"
    fail(f"unknown dealer {dealer!r}; known dealers: {listing}", code=EXIT_FAILED)


def _print(views: list[dict[str, Any]]) -> None:
    if not views:
        click.echo("No dealers yet: none has had a lead, and the routing file names none.")
        return
    rows: list[list[str | Text]] = []
    for v in views:
        rows.append(
            [
                v["dealerUuid"],
                Text(v["breaker"], BREAKER_STYLES.get(v["breaker"], "")),
                v["reason"] or "",
                str(v["consecutiveFailures"]),
                str(v["held"]),
                v["openedAt"] or "",
                v["nextProbeAt"] or "",
                "" if v["maxPerSecond"] is None else f"{v['maxPerSecond']:g}/s",
                v["note"] or "",
            ]
        )
    print_table(
        stdout_console(),
        ("dealer", "breaker", "reason", "failures", "held", "opened", "next probe", "rate", "note"),
        rows,
        title="Dealers",
    )


@click.group("dealers", invoke_without_command=True)
@json_option
@click.pass_context
def dealers(ctx: click.Context, as_json: bool) -> None:
    """Each dealer's breaker, held leads and rate; pause, resume or drain one."""
    if ctx.invoked_subcommand is None:
        run: Callable[[bool], None] = operator_command(_list)  # type: ignore[assignment]
        run(as_json)


def _list(context: CliContext, as_json: bool) -> None:
    table = _routing(context)
    views = dealer_views(context.store.dealers, table.dealer_uuids, table.dealer_rates)
    if as_json:
        print_json(views)
    else:
        _print(views)


@dealers.command("pause")
@click.argument("dealer")
@click.option("--reason", "note", default="", help="Why, shown by `leadpipe dealers`.")
@json_option
@operator_command
def pause(context: CliContext, dealer: str, note: str, as_json: bool) -> None:
    """Hold DEALER's leads (not POSTed, no attempt used) until `resume`."""
    _known_dealer(context, dealer)
    before = context.store.dealers.pause(dealer, note=note)
    view = dealer_view(context.store.dealers, dealer)
    if as_json:
        print_json({**view, "changed": before != "paused"})
    elif before == "paused":
        click.echo(f"Dealer {dealer} was already paused ({view['held']} held leads).")
    else:
        click.echo(
            f"Dealer {dealer} paused (was {before}): its leads are held until "
            f"`leadpipe dealers resume {dealer}`."
        )


@dealers.command("resume")
@click.argument("dealer")
@json_option
@operator_command
def resume(context: CliContext, dealer: str, as_json: bool) -> None:
    """Close DEALER's breaker: its held leads are released at its rate."""
    _known_dealer(context, dealer)
    before = context.store.dealers.resume(dealer)
    view = dealer_view(context.store.dealers, dealer)
    if as_json:
        print_json({**view, "changed": before != "closed"})
    else:
        click.echo(
            f"Dealer {dealer} resumed (was {before}); {view['held']} held leads are being released."
        )


@dealers.command("drain")
@click.argument("dealer")
@json_option
@operator_command
def drain(context: CliContext, dealer: str, as_json: bool) -> None:
    """Move DEALER's held leads to the dead letters, reason `drained`."""
    _known_dealer(context, dealer)
    count = context.store.dealers.drain(dealer)
    if as_json:
        print_json({"dealerUuid": dealer, "drained": count})
    elif count == 0:
        click.echo(f"Nothing to do: dealer {dealer} holds no leads.")
    else:
        click.echo(
            f"{count} held leads of dealer {dealer} moved to the dead letters (reason "
            "drained); `leadpipe dlq replay --all --reason drained` routes them again."
        )


COMMAND = dealers
