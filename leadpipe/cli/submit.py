"""`leadpipe submit FILE [--partner P] [--json]`: send leads as an upstream system does.

FILE holds a JSON object, a JSON array or JSON Lines (`-`: standard input). Each lead
goes out as `send_task("leads.ingest", args=[payload], kwargs={"partner": P},
queue="leads.ingest")` (CONTRACT section 3); its message id is its lead id, printed
one per line in input order, so the output pipes into `xargs leadpipe status`.

An entry that is not a lead (unreadable JSON, or JSON that is not an object) is
reported on standard error with its position and is not sent; the others still are,
and the command exits 1. With `--json`, each entry is `{position, leadId}` or
`{position, leadId: null, error}`.
"""

from __future__ import annotations

from typing import Any

import click
from kombu.exceptions import OperationalError

from leadpipe.cli.context import CliContext, operator_command
from leadpipe.cli.input import InputError, read_lead_input
from leadpipe.cli.options import json_option
from leadpipe.cli.output import echo_err, print_json, progress_bar, safe_url
from leadpipe.exit_codes import EXIT_FAILED, EXIT_OK
from pipeline.jsontext import json_type
from tasks.queues import INGEST_QUEUE, INGEST_TASK


def _problem(document: object) -> str | None:
    """Why `document` is not sent, or None when it is a lead to send."""
    if isinstance(document, InputError):
        return str(document)
    if not isinstance(document, dict):
        return f"not a JSON object (got {json_type(document)})"
    return None


@click.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--partner",
    help="The partner the leads come from (fills payload.partner; wins when they differ).",
)
@json_option
@operator_command
def submit(context: CliContext, file: str, partner: str | None, as_json: bool) -> None:
    """Send the leads in FILE to the pipeline (a JSON object, an array or JSON Lines; - for
    stdin) and print one lead id per lead."""
    try:
        lead_input = read_lead_input(file)
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from None
    documents = lead_input.documents
    if not documents:
        if as_json:
            print_json([])
        else:
            echo_err("Nothing to do: no leads in the input.")
        return
    kwargs = {"partner": partner} if partner else {}
    app = context.app
    results: list[dict[str, Any]] = []
    broker_error: str | None = None
    with progress_bar(len(documents), "sending leads") as advance:
        for position, document in enumerate(documents, start=1):
            problem = _problem(document)
            if problem is None and broker_error is None:
                try:
                    sent = app.send_task(
                        INGEST_TASK, args=[document], kwargs=kwargs, queue=INGEST_QUEUE
                    )
                    results.append({"position": position, "leadId": str(sent.id)})
                except OperationalError as exc:
                    broker_error = f"cannot reach the broker at {safe_url(context.broker_url)}"
                    broker_error += f" ({exc})"
                    problem = "not sent: the broker is unreachable"
            elif problem is None:
                problem = "not sent: the broker is unreachable"
            if problem is not None:
                results.append({"position": position, "leadId": None, "error": problem})
            advance()
    _report(results, single=lead_input.single, as_json=as_json, broker_error=broker_error)
    failed = any(r["leadId"] is None for r in results)
    click.get_current_context().exit(EXIT_FAILED if failed else EXIT_OK)


def _report(
    results: list[dict[str, Any]], *, single: bool, as_json: bool, broker_error: str | None
) -> None:
    if as_json:
        print_json(results[0] if single else results)
    else:
        for result in results:
            if result["leadId"] is not None:
                click.echo(result["leadId"])
    for result in results:
        if result["leadId"] is None and not result["error"].startswith("not sent: the broker"):
            echo_err(f"entry {result['position']}: {result['error']}; not sent")
    sent = sum(1 for r in results if r["leadId"] is not None)
    skipped = len(results) - sent
    if broker_error:
        echo_err(
            f"Error: {broker_error}. {sent} of {len(results)} leads were sent (ids above); "
            "check LEADPIPE_BROKER_URL, then submit the rest again."
        )
    elif skipped:
        which = "the entry above" if skipped == 1 else f"the {skipped} entries above"
        echo_err(f"Sent {sent} of {len(results)} leads; fix {which} and submit it again.")
    elif not as_json:
        echo_err(f"Sent {sent} lead{'s' if sent != 1 else ''}.")
