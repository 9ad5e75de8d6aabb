"""`leadpipe validate FILE [--routing FILE] [--json]`: check leads offline.

For each lead, in input order: `valid`, `vehicleIdMethod`, `normalized`, `errors`
(`{field, message}` with dotted paths) and `warnings`; with `--routing` also
`dealerUuid` and `mykaarmaRequest`, the body the worker would POST (under a
placeholder lead id `validate-<n>`). A lead without a route gets `dealerUuid: null`
and the warning `unroutable`. Exit 1 when any lead is invalid.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadpipe.cli.gate import gated
from leadpipe.cli.input import InputError, read_lead_input
from leadpipe.cli.options import json_option
from leadpipe.cli.output import print_json
from leadpipe.exit_codes import EXIT_FAILED, EXIT_OK
from pipeline.errors import RoutingFileError
from pipeline.mapping import build_mykaarma_request
from pipeline.routing import RoutingTable, load_routing
from pipeline.validation import ValidationResult, validate_lead

#: Warning of a valid lead that no routing section sends to a dealer.
UNROUTABLE = "unroutable"


def _input_error_report(error: InputError) -> dict[str, Any]:
    return {
        "valid": False,
        "vehicleIdMethod": None,
        "normalized": None,
        "errors": [{"field": "payload", "message": str(error)}],
        "warnings": [],
    }


def _load_routing(path: str) -> RoutingTable:
    try:
        return load_routing(path)
    except (RoutingFileError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--routing") from None


def _route_report(result: ValidationResult, routing: RoutingTable, index: int) -> dict[str, Any]:
    report: dict[str, Any] = {"dealerUuid": None, "mykaarmaRequest": None}
    if result.lead is None:
        return report
    route = routing.route(result.lead.partner, result.lead.state)
    if route is None:
        report["warnings"] = [*result.warnings, UNROUTABLE]
        return report
    report["dealerUuid"] = route.dealer_uuid
    report["mykaarmaRequest"] = build_mykaarma_request(result.lead, route, f"validate-{index}")
    return report


def _reports(
    documents: list[object | InputError], routing: RoutingTable | None
) -> list[dict[str, Any]]:
    reports = []
    for index, document in enumerate(documents, start=1):
        if isinstance(document, InputError):
            report = _input_error_report(document)
            if routing is not None:
                report.update(dealerUuid=None, mykaarmaRequest=None)
        else:
            result = validate_lead(document)
            report = result.to_json()
            if routing is not None:
                report.update(_route_report(result, routing, index))
        reports.append(report)
    return reports


def _details(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(style, line) for each error and warning of a report."""
    lines = [("red", f"{error['field']}: {error['message']}") for error in report["errors"]]
    lines += [("yellow", f"warning: {warning}") for warning in report["warnings"]]
    return lines


def _summary(reports: list[dict[str, Any]]) -> str:
    valid = sum(1 for report in reports if report["valid"])
    noun = "lead" if len(reports) == 1 else "leads"
    return f"{len(reports)} {noun}: {valid} valid, {len(reports) - valid} invalid"


def _print_table(reports: list[dict[str, Any]], console: Console, routing: bool) -> None:
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("verdict")
    table.add_column("method")
    if routing:
        table.add_column("dealer")
    table.add_column("errors / warnings", overflow="fold")
    for index, report in enumerate(reports, start=1):
        verdict = Text("valid", "green") if report["valid"] else Text("INVALID", "bold red")
        details = Text("\n").join(Text(line, style) for style, line in _details(report))
        cells: list[str | Text] = [str(index), verdict, report["vehicleIdMethod"] or "-"]
        if routing:
            cells.append(report.get("dealerUuid") or "-")
        table.add_row(*cells, details)
    console.print(table)
    console.print(_summary(reports), highlight=False, markup=False)


def _print_plain(reports: list[dict[str, Any]], routing: bool) -> None:
    for index, report in enumerate(reports, start=1):
        columns = [
            f"{index:>3}",
            f"{'valid' if report['valid'] else 'INVALID':<7}",
            f"{report['vehicleIdMethod'] or '-':<15}",
        ]
        if routing:
            columns.append(f"{report.get('dealerUuid') or '-':<12}")
        columns.append("; ".join(line for _, line in _details(report)))
        click.echo("  ".join(columns).rstrip())
    click.echo(_summary(reports))


@click.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--routing",
    "routing_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Routing TOML: also show the dealer and the myKaarma request of each lead.",
)
@json_option
@gated
def validate(file: str, routing_file: str | None, as_json: bool) -> None:
    """Check the leads in FILE offline (a JSON object, an array or JSON Lines; - for stdin)."""
    routing = _load_routing(routing_file) if routing_file is not None else None
    try:
        lead_input = read_lead_input(file)
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from None
    reports = _reports(lead_input.documents, routing)
    if as_json:
        print_json(reports[0] if lead_input.single else reports)
    elif not reports:
        click.echo("Nothing to do: no leads in the input.")
    else:
        console = Console()
        if console.is_terminal:
            _print_table(reports, console, routing is not None)
        else:
            _print_plain(reports, routing is not None)
    click.get_current_context().exit(
        EXIT_OK if all(report["valid"] for report in reports) else EXIT_FAILED
    )
