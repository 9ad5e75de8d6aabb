"""Read-only views of records for operators: `status`, `dlq list/show`, `stats`.

Field names follow CONTRACT section 6; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipeline.states import DeadReason
from store.keys import Keys
from store.records import LeadStore

#: Record fields kept as JSON text in the hash.
_JSON_FIELDS = ("warnings", "error", "normalized", "request")
#: Record fields holding epoch seconds, shown as ISO 8601.
_TIME_FIELDS = (
    "createdAt",
    "updatedAt",
    "failedAt",
    "deliveredAt",
    "replayedAt",
    "nextAttemptAt",
    "leaseUntil",
)
#: Internal bookkeeping never shown to operators.
_HIDDEN = ("deliveryToken", "txnKey", "partnerHint")


def iso(epoch: float | str | None) -> str | None:
    if epoch in (None, ""):
        return None
    return datetime.fromtimestamp(float(epoch), tz=UTC).isoformat(timespec="milliseconds")


def parse_since(text: str) -> float:
    """An ISO 8601 time (naive means UTC) as epoch seconds; ValueError when unreadable."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _decode(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def record_view(
    fields: Mapping[str, str], attempts: list[Any], history: list[Any]
) -> dict[str, Any]:
    """The full record of one lead, as `leadpipe status` and `dlq show` print it."""
    out: dict[str, Any] = {
        "leadId": fields.get("leadId"),
        "state": fields.get("state"),
        "partner": fields.get("partner"),
        "transactionId": fields.get("transactionId"),
        "vehicleIdMethod": fields.get("vehicleIdMethod"),
        "dealerUuid": fields.get("dealerUuid"),
        "attempts": attempts,
        "prospectUuid": fields.get("prospectUuid"),
        "isNewCreated": None,
        "error": None,
        "reason": fields.get("reason"),
        "warnings": [],
        "duplicateOf": fields.get("duplicateOf"),
    }
    for name in _JSON_FIELDS:
        if name in fields:
            out[name] = _payload(fields[name])
    if "isNewCreated" in fields:
        out["isNewCreated"] = fields["isNewCreated"] == "true"
    for name in _TIME_FIELDS:
        if name in fields:
            out[name] = iso(fields[name])
    out["receivedAt"] = fields.get("receivedAt") or iso(fields.get("createdAt"))
    out["replays"] = int(fields.get("replays", "0"))
    out["history"] = history
    out["payload"] = _payload(fields.get("payload"))
    for name in _HIDDEN:
        out.pop(name, None)
    return out


def _json_list(values: list[bytes | str]) -> list[Any]:
    return [_payload(v.decode() if isinstance(v, bytes) else v) for v in values]


def lead_view(store: LeadStore, lead_id: str) -> dict[str, Any] | None:
    """The record of `lead_id`, or None when there is no such lead."""
    k = store.keys
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(k.lead(lead_id))
    pipe.lrange(k.attempts(lead_id), 0, -1)
    pipe.lrange(k.history(lead_id), 0, -1)
    raw, attempts, history = pipe.execute()
    if not raw:
        return None
    return record_view(_decode(raw), _json_list(attempts), _json_list(history))


def dead_letter_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    """One line of `dlq list`: what an operator needs to see why the lead failed."""
    error = record.get("error") or {}
    return {
        "leadId": record["leadId"],
        "reason": record.get("reason"),
        "failedAt": record.get("failedAt"),
        "attempts": len(record.get("attempts") or []),
        "error": error,
        "partner": record.get("partner"),
        "dealerUuid": record.get("dealerUuid"),
        "payload": record.get("payload"),
    }


def dead_letter_ids(
    store: LeadStore,
    *,
    reason: DeadReason | None = None,
    since: float | None = None,
    limit: int | None = 100,
) -> list[str]:
    """Dead-letter lead ids, newest first."""
    k = store.keys
    key = k.dead_by_reason(reason) if reason else k.dead
    low: float | str = "-inf" if since is None else since
    ids = store.redis.zrevrangebyscore(
        key, "+inf", low, start=0 if limit else None, num=limit if limit else None
    )
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def dead_letters(
    store: LeadStore,
    *,
    reason: DeadReason | None = None,
    since: float | None = None,
    limit: int | None = 100,
) -> list[dict[str, Any]]:
    """Dead letters, newest first, each with its reason, error and payload as received."""
    entries = []
    for lead_id in dead_letter_ids(store, reason=reason, since=since, limit=limit):
        record = lead_view(store, lead_id)
        if record is not None and record["state"] == "dead":
            entries.append(dead_letter_entry(record))
    return entries


def stats_view(store: LeadStore, queue_depths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Counts by state and dead-letter reason, scheduled retries, and queue depths."""
    k: Keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(k.state_counts)
    pipe.hgetall(k.counters)
    pipe.zcard(k.retry)
    for reason in DeadReason:
        pipe.zcard(k.dead_by_reason(reason))
    states, counters, retries, *dead = pipe.execute()
    return {
        "states": {key: int(v) for key, v in _decode(states).items() if int(v)},
        "deadLetters": {r.value: n for r, n in zip(DeadReason, dead, strict=True)},
        "scheduledRetries": retries,
        "counters": {key: int(v) for key, v in _decode(counters).items()},
        "queues": dict(queue_depths or {}),
    }
