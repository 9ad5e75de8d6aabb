"""Read-only views of records for operators: `status`, `dlq list/show`, `stats`.

Field names follow CONTRACT section 6; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.breaker import HELD_BECAUSE, BreakerReason, BreakerState
from pipeline.record_fields import EPOCH_FIELDS, INTERNAL_FIELDS, JSON_FIELDS
from pipeline.states import DeadReason
from pipeline.timefmt import iso as iso  # re-exported: pipeline.timefmt is the one place
from pipeline.timefmt import parse_since as parse_since
from store.dealers import DealerStore
from store.keys import Keys
from store.notifications import counts_view
from store.records import LeadStore

#: Record fields kept as JSON text, as epoch seconds, and never shown to operators.
_JSON_FIELDS = JSON_FIELDS
_TIME_FIELDS = EPOCH_FIELDS
_HIDDEN = INTERNAL_FIELDS


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
    view = record_view(_decode(raw), _json_list(attempts), _json_list(history))
    if view["state"] == "held" and view.get("dealerUuid"):
        view["held"] = held_view(store.dealers, view["dealerUuid"], view.get("heldReason"))
    return view


def held_view(dealers: DealerStore, dealer_uuid: str, reason: str | None) -> dict[str, Any]:
    """Why a held lead waits, and until when (its dealer's breaker as it is now)."""
    b = dealers.breaker(dealer_uuid)
    why = b.reason or (BreakerReason(reason) if reason in set(BreakerReason) else None)
    return {
        "reason": why.value if why else reason,
        "because": HELD_BECAUSE.get(why, "its dealer's breaker is not closed") if why else "",
        "breaker": b.state.value,
        "nextProbeAt": iso(b.next_probe_at) if b.state == BreakerState.OPEN else None,
        "note": b.note or None,
    }


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


def stats_view(store: LeadStore, queue_depths: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Counts by state and dead-letter reason, scheduled retries, queue depths, and the
    state Redis's memory (used, and its `maxmemory`: 0 when unlimited)."""
    k: Keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    pipe.hgetall(k.state_counts)
    pipe.hgetall(k.counters)
    pipe.zcard(k.retry)
    pipe.hgetall(k.notify_counts)
    for reason in DeadReason:
        pipe.zcard(k.dead_by_reason(reason))
    pipe.info("memory")
    states, counters, retries, notify, *dead, memory = pipe.execute()
    return {
        "redis": {
            "usedMemoryBytes": int(memory.get("used_memory", 0)),
            "maxMemoryBytes": int(memory.get("maxmemory", 0)),
        },
        "states": {key: int(v) for key, v in _decode(states).items() if int(v)},
        "deadLetters": {r.value: n for r, n in zip(DeadReason, dead, strict=True)},
        "scheduledRetries": retries,
        "counters": {key: int(v) for key, v in _decode(counters).items()},
        "queues": dict(queue_depths or {}),
        "notifications": counts_view(notify),
    }


def dealer_view(
    dealers: DealerStore, dealer_uuid: str, rate: float | None = None
) -> dict[str, Any]:
    """One dealer as `leadpipe dealers` shows it (CONTRACT section 8); `rate` is the
    routing file's, for a dealer whose rate no worker has published yet."""
    b = dealers.breaker(dealer_uuid)
    return {
        "dealerUuid": dealer_uuid,
        "breaker": b.state.value,
        "reason": b.reason.value if b.reason else None,
        "consecutiveFailures": b.failures,
        "held": dealers.held_count(dealer_uuid),
        "openedAt": iso(b.opened_at),
        "nextProbeAt": iso(b.next_probe_at) if b.state == BreakerState.OPEN else None,
        "note": b.note or None,
        "maxPerSecond": dealers.rate(dealer_uuid) or rate,
    }


def dealer_views(
    dealers: DealerStore, also: Iterable[str] = (), rates: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """Every dealer seen (and those in `also`, e.g. the routing file's), sorted."""
    rates = rates or {}
    return [dealer_view(dealers, d, rates.get(d)) for d in sorted({*dealers.known(), *also})]


def lead_bytes(store: LeadStore, lead_ids: list[str]) -> list[int]:
    """Redis memory of each lead, for sizing: MEMORY USAGE of every key of it (the
    record, its per-lead lists, the dedupe claim it owns) plus its share of the
    email-index set it is in (one person's leads share one)."""
    from pipeline.record_fields import RecordField
    from store.keys import LEAD_KEY_SUFFIXES

    k = store.keys
    pipe = store.redis.pipeline(transaction=False)
    for lead_id in lead_ids:
        pipe.hmget(k.lead(lead_id), [RecordField.TXN_KEY, RecordField.EMAIL_KEY])
    owned = pipe.execute()
    for lead_id, (txn, email) in zip(lead_ids, owned, strict=True):
        names = [k.lead(lead_id), *(k.lead(lead_id) + s for s in LEAD_KEY_SUFFIXES)]
        for name in [*names, *([txn] if txn else [])]:
            pipe.memory_usage(name, samples=0)
        pipe.memory_usage(email or "-", samples=0)
        pipe.scard(email or "-")
    replies = iter(pipe.execute())
    sizes = []
    for _lead_id, (txn, _email) in zip(lead_ids, owned, strict=True):
        own = sum(next(replies) or 0 for _ in range(len(LEAD_KEY_SUFFIXES) + 1 + bool(txn)))
        shared, members = next(replies) or 0, next(replies) or 1
        sizes.append(own + shared // members)
    return sizes
