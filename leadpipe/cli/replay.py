"""How `leadpipe dlq replay` sends dead leads through the pipeline again.

A replay sends a dead lead through the whole pipeline again under the same lead id, in
three steps, each safe to be interrupted after:

1. `LeadStore.replay_prepare`: dead -> received, with a history entry (what failed,
   and the old payload when `--payload` replaces it); the lead joins the active index
   but keeps its dead-letter entry.
2. enqueue `leads.enrich` with the lead id.
3. `LeadStore.replay_complete`: drop the dead-letter entry (unless it died again).

Killed after 1, the lead is `received` and active: the worker's sweeper enqueues it
after its lease, and `dlq replay --all` enqueues it again at once (a dead-letter entry
whose lead is `received` is "resumed"). Killed after 2, the entry is dropped by the
next `--all` run. The delivery guard makes any second message harmless.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import click
from kombu.exceptions import OperationalError as BrokerUnavailable

from leadpipe.cli.common import print_json
from leadpipe.cli.context import (
    CliContext,
    Pacer,
    echo_err,
    print_table,
    progress_bar,
    stdout_console,
)
from leadpipe.cli.mask import customer_summary
from pipeline.states import LeadState
from store.records import LeadStore, dumps
from store.views import iso, lead_view

#: States a lead reaches once a replay has got it moving again.
_MOVING = frozenset(
    {LeadState.VALIDATED, LeadState.DELIVERING, LeadState.DELIVERED, LeadState.DUPLICATE}
)


@dataclass
class Item:
    """One lead of a replay: what was (or would be) done, and why."""

    lead_id: str
    action: str  # replay | resume | complete | skip | unknown
    state: str | None = None
    reason: str | None = None
    message: str = ""
    record: dict[str, Any] | None = None
    done: str = ""  # replayed | resumed | skipped | failed | would-replay | ...

    def to_json(self) -> dict[str, Any]:
        return {
            "leadId": self.lead_id,
            "result": self.done,
            "state": self.state,
            "reason": self.reason,
            "message": self.message or None,
        }


def skip_message(record: dict[str, Any]) -> str:
    state = record["state"]
    if state == LeadState.DELIVERED:
        return "already delivered"
    if state == LeadState.DUPLICATE:
        return f"a duplicate of {record.get('duplicateOf')}, not a dead letter"
    return f"still in the pipeline ({state}), not a dead letter"


def plan(store: LeadStore, lead_id: str) -> Item:
    """What to do with `lead_id`: replay a dead lead; resume one a killed replay left
    `received`; drop the stale entry of one an earlier replay got moving; else skip."""
    record = lead_view(store, lead_id)
    if record is None:
        return Item(
            lead_id, "unknown", message="no such lead: check the id with `leadpipe dlq list`"
        )
    state, reason = record["state"], record.get("reason")
    if state == LeadState.DEAD:
        return Item(lead_id, "replay", state, reason, record=record)
    in_dlq = store.redis.zscore(store.keys.dead, lead_id) is not None
    if in_dlq and state == LeadState.RECEIVED:
        message = "an interrupted replay: enqueued again"
        return Item(lead_id, "resume", state, reason, message, record)
    if in_dlq and state in _MOVING:
        message = f"{skip_message(record)} (an earlier replay; its dead-letter entry is dropped)"
        return Item(lead_id, "complete", state, reason, message, record)
    return Item(lead_id, "skip", state, reason, skip_message(record), record)


def history_entry(record: dict[str, Any], *, replaced_payload: bool) -> dict[str, Any]:
    """The operator-history entry of a replay: what failed, and the old payload."""
    entry: dict[str, Any] = {
        "at": iso(time.time()),
        "action": "replay",
        "previousReason": record.get("reason"),
        "previousError": record.get("error"),
    }
    if replaced_payload:
        entry["previousPayload"] = record.get("payload")
    return entry


def execute(
    context: CliContext, item: Item, new_payload: dict[str, Any] | None, pacer: Pacer
) -> None:
    """Do the item's action; raises BrokerUnavailable when the enqueue fails."""
    store = context.store
    if item.action in ("skip", "unknown"):
        item.done = "skipped" if item.action == "skip" else "unknown"
        return
    if item.action == "complete":
        store.replay_complete(item.lead_id)
        item.done = "skipped"
        return
    # Pace before preparing: a prepared lead is enqueued at once, never left waiting
    # long enough for the sweeper to enqueue it too.
    pacer.wait()
    if item.action == "replay":
        assert item.record is not None
        history = history_entry(item.record, replaced_payload=new_payload is not None)
        payload = dumps(new_payload) if new_payload is not None else ""
        outcome = store.replay_prepare(item.lead_id, history, payload=payload)
        if outcome.status != "ok":  # it changed since we looked (another operator, a worker)
            item.state, item.done = outcome.state, "skipped"
            item.message = f"no longer dead ({outcome.state or 'gone'})"
            return
    context.enqueue_enrich(item.lead_id)
    store.replay_complete(item.lead_id)
    item.done = "replayed" if item.action == "replay" else "resumed"


WOULD = {"replay": "would-replay", "resume": "would-resume", "complete": "would-skip",
          "skip": "would-skip", "unknown": "unknown"}  # fmt: skip


def print_dry_run(items: list[Item]) -> None:
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


def summary(items: list[Item], *, dry_run: bool) -> dict[str, Any]:
    """The `--json` shape: counts, and one `{leadId, result, state, reason, message}`
    per lead."""

    def count(*results: str) -> int:
        return sum(1 for i in items if i.done in results)

    if dry_run:
        replayed = count("would-replay", "would-resume")
        skipped = count("would-skip")
    else:
        replayed = count("replayed", "resumed")
        skipped = count("skipped")
    return {
        "dryRun": dry_run,
        "replayed": replayed,
        "skipped": skipped,
        "unknown": count("unknown"),
        "failed": count("failed", "not-attempted"),
        "leads": [item.to_json() for item in items],
    }


def report(items: list[Item], *, dry_run: bool, as_json: bool) -> dict[str, Any]:
    """Print what the replay did (or would do) and return the summary: how many were
    replayed, skipped, unknown and not sent, with one entry per lead."""
    result = summary(items, dry_run=dry_run)
    if as_json:
        print_json(result)
        return result
    if dry_run:
        print_dry_run(items)
    for item in items:
        if item.done in ("skipped", "unknown", "failed", "not-attempted") and not dry_run:
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


def run(
    context: CliContext, items: list[Item], new_payload: dict[str, Any] | None, pacer: Pacer
) -> None:
    """Execute every item in order; once the broker is unreachable, attempt no more."""
    broker_down: str | None = None
    with progress_bar(len(items), "replaying") as advance:
        try:
            for item in items:
                if broker_down is not None:
                    item.done, item.message = "not-attempted", broker_down
                    continue
                try:
                    execute(context, item, new_payload, pacer)
                except BrokerUnavailable as exc:
                    item.done = "failed"
                    item.message = (
                        f"not enqueued, the broker is unreachable ({exc}); the lead stays "
                        "received and the worker's sweeper sends it after its lease, or run "
                        "`leadpipe dlq replay --all` again"
                    )
                    broker_down = "not attempted: the broker is unreachable"
                advance()
        except KeyboardInterrupt:
            echo_err("Interrupted: nothing is lost; run `leadpipe dlq replay --all` to finish.")
            raise SystemExit(130) from None
