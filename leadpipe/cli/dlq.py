"""`leadpipe dlq`: the dead letters (CONTRACT section 6) - list, show, replay, purge.

The registry in `store.dead_letters` does the work (and says why a replay is safe to
interrupt); this module parses options and prints.
"""

from __future__ import annotations

from typing import Any

import click

from leadpipe.cli import replay as replaying
from leadpipe.cli.context import CliContext, operator_command
from leadpipe.cli.input import InputError, read_lead_input
from leadpipe.cli.mask import customer_summary, vehicle_summary
from leadpipe.cli.options import json_option
from leadpipe.cli.output import echo_err, print_json, print_table, progress_bar, stdout_console
from leadpipe.cli.status import error_lines, print_record, unknown_lead
from leadpipe.exit_codes import EXIT_FAILED, EXIT_OK
from pipeline.states import DeadReason, LeadState
from pipeline.timefmt import parse_since
from pipeline.validation import validate_lead
from store.dead_letters import DEFAULT_LIST_LIMIT, replay_summary

#: Characters of an error message shown in a list row.
LIST_ERROR_CHARS = 70

REASONS = click.Choice([reason.value for reason in DeadReason])


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_since(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time, e.g. 2024-05-01 or 2024-05-01T12:00:00Z",
            ctx=ctx,
            param=param,
        ) from None


def _reason(value: str | None) -> DeadReason | None:
    return DeadReason(value) if value else None


reason_option = click.option("--reason", type=REASONS, help="Only dead letters of this reason.")
since_option = click.option(
    "--since",
    callback=_since,
    metavar="ISO",
    help="Only dead letters that failed at or after this time (ISO 8601; naive is UTC).",
)


@click.group("dlq")
def dlq() -> None:
    """Dead letters: list, show, replay and purge leads that did not reach myKaarma."""


# -- list and show ----------------------------------------------------------------------


def _short_error(error: Any) -> str:
    text = "; ".join(error_lines(error, bodies=False))
    return text if len(text) <= LIST_ERROR_CHARS else text[: LIST_ERROR_CHARS - 1] + "…"


def _short_time(stamp: object) -> str:
    """`2024-05-01T12:00:00.123+00:00` -> `2024-05-01T12:00:00Z` for a list row."""
    text = str(stamp or "-")
    return f"{text[:19]}Z" if text.endswith("+00:00") and len(text) >= 19 else text


@dlq.command("list")
@reason_option
@since_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_LIST_LIMIT,
    show_default=True,
    help="Show at most this many, newest first.",
)
@json_option
@operator_command
def list_(
    context: CliContext, reason: str | None, since: float | None, limit: int, as_json: bool
) -> None:
    """List dead letters, newest first (personal data masked; --json has it all)."""
    entries = context.dead_letters.entries(reason=_reason(reason), since=since, limit=limit)
    if as_json:
        print_json(entries)
        return
    if not entries:
        click.echo("No dead letters.")
        return
    rows = [
        [
            e["leadId"],
            str(e["reason"]),
            _short_time(e["failedAt"]),
            str(e["attempts"]),
            _short_error(e["error"]),
            e.get("partner") or "-",
            customer_summary(e["payload"]),
            vehicle_summary(e["payload"]),
        ]
        for e in entries
    ]
    columns = (
        "leadId",
        "reason",
        "failedAt",
        "attempts",
        "error",
        "partner",
        "customer",
        "vehicle",
    )
    print_table(stdout_console(), columns, rows, wrap=("error", "customer", "vehicle"))
    if len(entries) == limit:
        click.echo(f"(first {limit}; use --limit, --reason or --since to see others)", err=True)


@dlq.command("show")
@click.argument("lead_id")
@json_option
@operator_command
def show(context: CliContext, lead_id: str, as_json: bool) -> None:
    """Show dead letter LEAD_ID in full: error, attempts, history and the payload."""
    record = context.dead_letters.show(lead_id.strip())
    if record is None:
        unknown_lead(lead_id)
    print_record(record, as_json=as_json, payload=True)
    if record["state"] != LeadState.DEAD:
        echo_err(f"note: lead {lead_id} is {record['state']}, not in the dead-letter store")


# -- replay ----------------------------------------------------------------------------


def _read_payload(path: str) -> dict[str, Any]:
    try:
        lead_input = read_lead_input(path)
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="--payload") from None
    documents = lead_input.documents
    if len(documents) != 1 or isinstance(documents[0], InputError):
        problem = str(documents[0]) if len(documents) == 1 else f"{len(documents)} documents"
        raise click.BadParameter(f"must hold one JSON object ({problem})", param_hint="--payload")
    if not isinstance(documents[0], dict):
        raise click.BadParameter("must hold one JSON object", param_hint="--payload")
    return documents[0]


def _check_selection(
    lead_ids: tuple[str, ...], all_: bool, reason: str | None, since: float | None, *,
    missing: str,
) -> None:  # fmt: skip
    """Lead ids, or --all with optional --reason/--since: the selection of replay and purge."""
    if all_ and lead_ids:
        raise click.UsageError("give lead ids or --all, not both")
    if not all_ and not lead_ids:
        raise click.UsageError(missing)
    if not all_ and (reason or since is not None):
        raise click.UsageError("--reason and --since select dead letters for --all only")


def _selected(
    context: CliContext, lead_ids: tuple[str, ...], all_: bool, reason: str | None,
    since: float | None,
) -> list[str]:  # fmt: skip
    """The lead ids given (each once, in order), or every matching dead-letter entry."""
    if all_:
        return context.dead_letters.ids(reason=_reason(reason), since=since)
    return list(dict.fromkeys(i.strip() for i in lead_ids))


def _check_replay_usage(
    lead_ids: tuple[str, ...], all_: bool, reason: str | None, since: float | None,
    payload_file: str | None, force: bool,
) -> None:  # fmt: skip
    missing = "give the lead ids to replay, or --all (see `leadpipe dlq list`)"
    _check_selection(lead_ids, all_, reason, since, missing=missing)
    if payload_file and (all_ or len(lead_ids) != 1):
        raise click.UsageError("--payload replaces one lead's payload: give exactly one LEAD_ID")
    if force and not payload_file:
        raise click.UsageError("--force only applies to an invalid --payload")


def _validate_new_payload(payload: dict[str, Any], *, force: bool, as_json: bool) -> None:
    result = validate_lead(payload)
    if result.valid:
        return
    if as_json and not force:
        print_json({"valid": False, "errors": [e.to_json() for e in result.errors]})
    for error in result.errors:
        echo_err(f"  {error.field}: {error.message}")
    if force:
        echo_err("warning: the new payload is invalid; replaying it anyway (--force)")
        return
    echo_err(
        "Error: the new payload is invalid (above); nothing was changed. Fix it and try "
        "again (`leadpipe validate FILE` checks it), or add --force to replay it anyway."
    )
    raise SystemExit(EXIT_FAILED)


@dlq.command("replay")
@click.argument("lead_ids", nargs=-1)
@click.option(
    "--all", "all_", is_flag=True, help="Replay every dead letter (see --reason, --since)."
)
@reason_option
@since_option
@click.option(
    "--dry-run", is_flag=True, help="Show what would be replayed and skipped; change nothing."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    metavar="N",
    help="At most this many leads per second (spare a recovering myKaarma).",
)
@click.option(
    "--payload",
    "payload_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
    help="Replace the lead's payload with this JSON object first (one LEAD_ID only).",
)
@click.option("--force", is_flag=True, help="Replay a --payload even though it is invalid.")
@json_option
@operator_command
def replay(
    context: CliContext,
    lead_ids: tuple[str, ...],
    all_: bool,
    reason: str | None,
    since: float | None,
    dry_run: bool,
    rate: float | None,
    payload_file: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Send dead leads through the pipeline again, under the same lead ids.

    Validation and routing run again, so a corrected routing file, a recovered myKaarma
    or a fixed --payload takes effect. Safe to interrupt: run it again to finish.
    """
    _check_replay_usage(lead_ids, all_, reason, since, payload_file, force)
    new_payload = _read_payload(payload_file) if payload_file else None
    if new_payload is not None:
        _validate_new_payload(new_payload, force=force, as_json=as_json)
    registry = context.dead_letters
    ids = _selected(context, lead_ids, all_, reason, since)
    if not ids:
        if as_json:
            print_json(replay_summary([], dry_run=dry_run))
        else:
            click.echo("Nothing to do: no dead letters match.")
        return
    items = [registry.plan(lead_id) for lead_id in ids]
    if dry_run:
        registry.dry_run(items)
    else:
        with progress_bar(len(items), "replaying") as advance:
            try:
                registry.replay(
                    items, context.enqueue_replay, new_payload=new_payload, rate=rate,
                    advance=advance,
                )  # fmt: skip
            except KeyboardInterrupt:
                echo_err("Nothing is lost; run `leadpipe dlq replay --all` to finish.")
                raise
    summary = replaying.report(items, dry_run=dry_run, as_json=as_json)
    named_missed = not all_ and summary["replayed"] != len(items)
    failed = summary["failed"] or named_missed
    click.get_current_context().exit(EXIT_FAILED if failed else EXIT_OK)


# -- purge -----------------------------------------------------------------------------


@dlq.command("purge")
@click.argument("lead_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Purge every dead letter (needs --yes).")
@reason_option
@since_option
@click.option("--yes", is_flag=True, help="Confirm purging with --all.")
@json_option
@operator_command
def purge(
    context: CliContext,
    lead_ids: tuple[str, ...],
    all_: bool,
    reason: str | None,
    since: float | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters for good: the record, its attempts and history."""
    _check_selection(
        lead_ids, all_, reason, since, missing="give the lead ids to purge, or --all --yes"
    )
    if all_ and not yes:
        raise click.UsageError(
            "--all deletes the dead letters for good: add --yes to confirm "
            "(`leadpipe dlq list` shows what they are)"
        )
    ids = _selected(context, lead_ids, all_, reason, since)
    results = context.dead_letters.purge_many(ids)
    purged = sum(1 for r in results if r["result"] == "purged")
    missed = [r for r in results if r["result"] != "purged"]
    if as_json:
        print_json({"purged": purged, "skipped": len(missed), "leads": results})
    elif not ids:
        click.echo("Nothing to do: no dead letters match.")
    else:
        if not all_:
            for r in missed:
                why = "no such lead" if r["result"] == "missing" else f"it is {r['result']}"
                echo_err(f"not purged {r['leadId']}: {why}; only dead letters can be purged")
        click.echo(f"Purged {purged} dead letter{'s' if purged != 1 else ''}.")
    click.get_current_context().exit(EXIT_FAILED if missed and not all_ else EXIT_OK)
