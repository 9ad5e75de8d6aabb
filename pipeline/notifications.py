"""Outcome events for partners (CONTRACT section 9): what each one says, and nothing more.

When a lead reaches `delivered`, `dead` or `duplicate`, the script that makes the
transition copies a few of the record's fields (`SNAPSHOT_FIELDS`) into a pending
notification. The event is built from that snapshot here, so it is the same bytes on
every retry and tells what was true at the transition, even if the lead is replayed
later. Only ids, reasons, field paths and statuses go out: no name, email, VIN, plate
or payload. A validation message may quote part of a value (`(got "ABC123456")`); an
event keeps the rule and drops the quote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from pipeline.record_fields import RecordField as F
from pipeline.timefmt import iso


class EventType(StrEnum):
    """The event types a partner receives."""

    DELIVERED = "lead.delivered"
    DEAD = "lead.dead"
    DUPLICATE = "lead.duplicate"


class NotificationState(StrEnum):
    """Where a notification is: waiting or retrying, accepted by the partner, given up."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class NotificationField(StrEnum):
    """Every field of a notification hash (`store/keys.py`: `Keys.notification`), besides
    the snapshot of record fields; the Lua scripts use them as `N.<name>`."""

    EVENT_ID = "eventId"  #: also the `webhook-id` header
    TYPE = "type"  #: an `EventType` value
    LEAD_ID = "leadId"
    AT = "at"  #: epoch; when the lead reached the state (the event's time)
    CREATED_AT = "createdAt"  #: epoch
    STATE = "state"  #: a `NotificationState` value
    ATTEMPTS = "attempts"  #: attempts made
    #: the attempt holding it (internal; a field name, not a secret)
    TOKEN = "token"  # noqa: S105
    LEASE_UNTIL = "leaseUntil"  #: epoch; when that attempt's lease runs out
    NEXT_ATTEMPT_AT = "nextAttemptAt"  #: epoch; when a retry is due
    LAST_STATUS = "lastStatus"  #: HTTP status of the last attempt ('' when none)
    LAST_ERROR = "lastError"  #: why the last attempt failed ('' when sent)
    LAST_ATTEMPT_AT = "lastAttemptAt"  #: epoch
    UPDATED_AT = "updatedAt"  #: epoch
    SENT_AT = "sentAt"  #: epoch
    FAILED_AT = "failedAt"  #: epoch


#: Record fields the transition script copies into a notification, in this order.
SNAPSHOT_FIELDS: Final = tuple(
    f.value
    for f in (
        F.PARTNER,
        F.TRANSACTION_ID,
        F.DEALER_UUID,
        F.PROSPECT_UUID,
        F.IS_NEW_CREATED,
        F.REASON,
        F.ERROR,
        F.DUPLICATE_OF,
        F.ATTEMPT_COUNT,
    )
)

#: What a dead letter without field errors or an HTTP status tells the partner.
_REASON_MESSAGES: Final = {
    "unroutable": "no dealer is configured for this lead's partner and state",
    "expired": "not delivered within the maximum lead age",
    "drained": "its dealer was drained by an operator",
    "invalid": "the lead could not be read",
}
#: Where such a reason points, as a field path.
_REASON_FIELDS: Final = {"unroutable": "dealerUuid", "expired": "receivedAt"}


def build_event(
    event_type: str, lead_id: str, at: float | str, snapshot: Mapping[str, str]
) -> dict[str, Any]:
    """The Standard Webhooks body `{"type", "timestamp", "data"}` of one event."""
    when = iso(at) or ""
    kind = EventType(event_type)
    common: dict[str, Any] = {
        "leadId": lead_id,
        "transactionId": snapshot.get(F.TRANSACTION_ID) or None,
        "partner": snapshot.get(F.PARTNER) or None,
    }
    if kind is EventType.DELIVERED:
        data = {
            **common,
            "dealerUuid": snapshot.get(F.DEALER_UUID) or None,
            "prospectUuid": snapshot.get(F.PROSPECT_UUID) or None,
            "isNewCreated": _flag(snapshot.get(F.IS_NEW_CREATED)),
            "at": when,
        }
    elif kind is EventType.DEAD:
        reason = snapshot.get(F.REASON) or "unknown"
        data = {
            **common,
            "reason": reason,
            "errors": dead_errors(reason, snapshot.get(F.ERROR), snapshot.get(F.ATTEMPT_COUNT)),
            "at": when,
        }
    else:
        data = {**common, "duplicateOf": snapshot.get(F.DUPLICATE_OF) or None, "at": when}
    return {"type": kind.value, "timestamp": when, "data": data}


def dead_errors(
    reason: str, error_text: str | None, attempts: str | None = None
) -> list[dict[str, Any]]:
    """The `errors` of a `lead.dead` event: `{field, message}` per failing field, or
    `{status, message}` for an HTTP answer, from the record's `error` field."""
    error = _json_object(error_text)
    fields = error.get("errors")
    if isinstance(fields, list) and fields:
        out = [
            {"field": str(e.get("field", "payload")), "message": rule_only(e.get("message"))}
            for e in fields
            if isinstance(e, dict)
        ]
        if out:
            return out
    status = error.get("status")
    if isinstance(status, int) and not isinstance(status, bool):
        if reason == "rejected":
            message = f"myKaarma rejected the lead with HTTP {status}"
        elif reason == "exhausted":
            tries = f" {attempts}" if attempts and attempts.isdigit() else ""
            message = f"myKaarma did not accept the lead after{tries} attempts"
        else:
            message = _REASON_MESSAGES.get(reason, reason)
        return [{"status": status, "message": message}]
    message = _REASON_MESSAGES.get(reason, f"dead: {reason}")
    if reason == "exhausted":
        message = "myKaarma could not be reached"
    return [{"field": _REASON_FIELDS.get(reason, "lead"), "message": message}]


def rule_only(message: object) -> str:
    """A validation message without the part that may quote the value: the rule
    ("must be 1-8 characters"), never what was sent ("(got \\"ABC123456\\")")."""
    text = str(message or "").strip()
    return text.split(" (", 1)[0].strip() or "is invalid"


def _flag(value: str | None) -> bool | None:
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
