"""What a lead task reports when it ends: its result, or `LeadDead` for a lead it killed.

Flower (and any event consumer) knows only the task states: a task that ends a lead
`dead` and returns normally is a SUCCESS, so the dashboard's failed count and the
Failed filter would never show a dead lead. The task that moves a lead to the dead
letters therefore raises `LeadDead`, whose message names the reason and the field
paths at fault (`invalid (vehicle.vin, lead.email)`), never a value.

The record is written before the exception is raised, and the tasks declare it in
`throws`: Celery logs it on one INFO line without a traceback, acknowledges the
message (`task_acks_late` acks a failed task), and never retries it; only the state
the events report changes. A redelivered message for a lead that is already dead
ends SUCCESS (`already dead`): the task that killed it has reported it once.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import redis

from pipeline.record_fields import RecordField
from tasks.queues import DELIVER_QUEUE, ENRICH_QUEUE
from tasks.runtime import runtime

log = logging.getLogger(__name__)

#: Outcome prefix of a stage that moved its lead to the dead letters.
DEAD_PREFIX = "dead:"
#: Field paths named in one LeadDead message, at most.
MAX_FIELDS = 8
#: What a field path looks like (`vehicle.vin`, `lead.phones[0]`); others are not named.
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,40}"
_FIELD_PATH = re.compile(rf"^{_NAME}(\[\d{{1,4}}\]|\.{_NAME}){{0,6}}$")
#: Queue each next step is enqueued on, for the result text.
_NEXT_QUEUE = {"enrich": ENRICH_QUEUE, "deliver": DELIVER_QUEUE}


class LeadDead(Exception):
    """The task moved its lead to the dead letters; the message is `reason (fields)`."""


def dead_message(reason: str, error: object) -> str:
    """`invalid (vehicle.vin, lead.email)`, `rejected (HTTP 400)`, or just the reason.

    Only field paths and HTTP statuses are taken from the recorded error: its
    messages can quote the customer's input."""
    details: list[str] = []
    if isinstance(error, dict):
        fields = [
            e["field"]
            for e in error.get("errors") or []
            if isinstance(e, dict) and isinstance(e.get("field"), str)
        ]
        named = list(dict.fromkeys(f for f in fields if _FIELD_PATH.fullmatch(f)))
        details += named[:MAX_FIELDS]
        if len(named) > MAX_FIELDS:
            details.append(f"+{len(named) - MAX_FIELDS} more")
        status = error.get("status")
        if isinstance(status, int) and not isinstance(status, bool):
            details.append(f"HTTP {status}")
    return f"{reason} ({', '.join(details)})" if details else reason


def _recorded_error(lead_id: str) -> Any:
    """The error the stage recorded (one HGET, only for a lead that just died)."""
    try:
        (text,) = runtime().store.load(lead_id, RecordField.ERROR)
        return json.loads(text) if text else None
    except (redis.RedisError, ValueError) as exc:
        # The lead is dead and recorded; the failure is reported without details
        # rather than the message being handed back for a Redis hiccup.
        log.warning("lead %s: could not read its error (%s)", lead_id, type(exc).__name__)
        return None


def report(lead_id: str, outcome: str, next_task: str | None, *, task: str) -> str:
    """The task's result, or LeadDead when this task ended the lead dead.

    `ingest` says what became of the lead as far as it knows: `received; next
    leads.enrich` for a new lead, `already delivered` for a message whose lead went
    on without it (a redelivery, a sender's retry)."""
    if outcome.startswith(DEAD_PREFIX):
        reason = outcome.removeprefix(DEAD_PREFIX)
        raise LeadDead(dead_message(reason, _recorded_error(lead_id)))
    if next_task in _NEXT_QUEUE:
        return f"{outcome}; next {_NEXT_QUEUE[next_task]}"
    if outcome == "duplicate":
        try:
            (owner,) = runtime().store.load(lead_id, RecordField.DUPLICATE_OF)
        except redis.RedisError:
            owner = None
        return f"duplicate of {owner}" if owner else outcome
    if task == "ingest" and outcome:
        return f"already {outcome}"  # the record existed: what became of the lead
    return outcome
