"""LeadStore: the lead record in Redis and every transition of it.

The record is the source of truth: messages carry only the lead id after ingest, so
no customer data sits in later task arguments, in the broker or in Flower.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.states import DeadReason, LeadState
from store import scripts
from store.keys import Keys

Fields = Mapping[str, str | int | float]

#: Upper bounds (seconds) of the delivery latency histogram: received -> myKaarma's 2xx.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def latency_bucket(seconds: float) -> str:
    """The histogram field a latency falls in (non-cumulative; `+Inf` past the last)."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            return f"le:{bound}"
    return "le:+Inf"


def _flatten(fields: Fields | None) -> list[str | int | float]:
    """Name/value pairs for the tail of a script's ARGV; None values are left out."""
    flat: list[str | int | float] = []
    for name, value in (fields or {}).items():
        if value is not None:
            flat.extend((name, storable(value) if isinstance(value, str) else value))
    return flat


def storable(text: str) -> str:
    """`text`, with any lone surrogate as a `\\udXXX` escape: JSON lets a sender escape
    half a surrogate pair ("\\ud800"), which decodes to a str that UTF-8 (and so Redis)
    cannot hold. In a JSON text such a character sits inside a string literal, where
    the escape is exactly the JSON spelling of it, so `dumps` output stays valid JSON."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def dumps(value: object) -> str:
    """Compact JSON for record fields (always encodable as UTF-8)."""
    return storable(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a script did: `status` is its verdict, `state` the state it found."""

    status: str
    state: str | None = None
    detail: tuple[str, ...] = ()

    @classmethod
    def parse(cls, reply: list[bytes | str] | None) -> Outcome:
        parts = [p.decode() if isinstance(p, bytes) else str(p) for p in (reply or [])]
        if not parts:
            return cls("missing")
        return cls(parts[0], parts[1] if len(parts) > 1 else None, tuple(parts[1:]))


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    """The guard's answer: `go` with what to send, or why not."""

    status: str  # go | skip | busy | early | missing
    state: str | None
    dealer_uuid: str = ""
    request: str = ""
    attempts_before: int = 0
    created_at: float = 0.0


class LeadStore:
    """Lead records, dedupe claims, the retry schedule and the dead letters, in Redis."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.redis = client
        self.keys = keys or Keys()
        register = client.register_script
        self._create = register(scripts.CREATE)
        self._enrich_commit = register(scripts.ENRICH_COMMIT)
        self._dead = register(scripts.DEAD)
        self._begin = register(scripts.BEGIN_DELIVERY)
        self._delivered = register(scripts.DELIVERED)
        self._schedule = register(scripts.SCHEDULE_RETRY)
        self._claim_due = register(scripts.CLAIM_DUE_RETRIES)
        self._sweep = register(scripts.SWEEP)
        self._replay_prepare = register(scripts.REPLAY_PREPARE)
        self._replay_complete = register(scripts.REPLAY_COMPLETE)
        self._purge = register(scripts.PURGE)

    # -- ingest ---------------------------------------------------------------------

    def create(
        self,
        lead_id: str,
        fields: Fields,
        *,
        now: float | None = None,
        dead_reason: DeadReason | None = None,
    ) -> str | None:
        """Create the record in `received` (or straight `dead`); None when created,
        else the state of the record that already exists under this id."""
        k = self.keys
        now = time.time() if now is None else now
        state = LeadState.DEAD if dead_reason else LeadState.RECEIVED
        extra = dict(fields)
        if dead_reason:
            extra["reason"] = dead_reason.value
        reason = dead_reason or DeadReason.INVALID
        existing = self._create(
            keys=[k.lead(lead_id), k.active, k.state_counts, k.dead, k.dead_by_reason(reason)],
            args=[lead_id, now, state.value, *_flatten(extra)],
        )
        if existing is None:
            return None
        return existing.decode() if isinstance(existing, bytes) else str(existing)

    def load(self, lead_id: str, *names: str) -> list[str | None]:
        """Selected fields of a record (None where absent)."""
        values = self.redis.hmget(self.keys.lead(lead_id), list(names))
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    # -- enrich ---------------------------------------------------------------------

    def commit_validated(
        self,
        lead_id: str,
        fields: Fields,
        *,
        partner: str | None,
        transaction_id: str | None,
        now: float | None = None,
    ) -> Outcome:
        """received -> validated, or -> duplicate when a live lead owns the transaction."""
        k = self.keys
        # Leads without a partner share one namespace: same transactionId, same lead.
        has_txn = bool(transaction_id)
        txn_key = k.transaction(partner or "", transaction_id or "") if has_txn else k.lead(lead_id)
        reply = self._enrich_commit(
            keys=[k.lead(lead_id), k.active, k.state_counts, txn_key],
            args=[
                lead_id,
                time.time() if now is None else now,
                k.lead_prefix,
                "1" if has_txn else "0",
                *_flatten(fields),
            ],
        )
        return Outcome.parse(reply)

    def kill(
        self,
        lead_id: str,
        reason: DeadReason,
        fields: Fields,
        *,
        expect: Iterable[LeadState],
        token: str = "",
        attempt: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> Outcome:
        """Move a lead to the dead letters (only from the states in `expect`)."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        self._dead(
            keys=[
                k.lead(lead_id),
                k.active,
                k.state_counts,
                k.dead,
                k.dead_by_reason(reason),
                k.attempts(lead_id),
            ],
            args=[
                lead_id,
                time.time() if now is None else now,
                ",".join(s.value for s in expect),
                reason.value,
                token,
                dumps(attempt) if attempt else "",
                *_flatten(fields),
            ],
            client=pipe,
        )
        if attempt:
            pipe.hincrby(k.counters, f"attempts.{attempt.get('outcome', 'failed')}", 1)
        reply = pipe.execute()[0]
        return Outcome.parse(reply)

    # -- deliver --------------------------------------------------------------------

    def begin_delivery(
        self, lead_id: str, token: str, *, lease: float, now: float | None = None
    ) -> DeliveryClaim:
        """The delivery guard: claim the lead for one POST, or say why not."""
        k = self.keys
        reply = self._begin(
            keys=[k.lead(lead_id), k.active, k.state_counts],
            args=[lead_id, time.time() if now is None else now, token, lease],
        )
        out = Outcome.parse(reply)
        if out.status != "go":
            return DeliveryClaim(out.status, out.state)
        dealer, request, attempts, created = out.detail
        return DeliveryClaim(
            "go", LeadState.DELIVERING.value, dealer, request, int(attempts), float(created)
        )

    def mark_delivered(
        self,
        lead_id: str,
        attempt: Mapping[str, Any],
        fields: Fields,
        *,
        latency: float,
        now: float | None = None,
    ) -> Outcome:
        """delivering -> delivered; counts the attempt and observes the latency, in one
        round trip."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        self._delivered(
            keys=[k.lead(lead_id), k.active, k.state_counts, k.attempts(lead_id)],
            args=[lead_id, time.time() if now is None else now, dumps(attempt), *_flatten(fields)],
            client=pipe,
        )
        pipe.hincrby(k.counters, "attempts.delivered", 1)
        pipe.hincrby(k.latency, latency_bucket(latency), 1)
        pipe.hincrbyfloat(k.latency, "sum", latency)
        reply = pipe.execute()[0]
        return Outcome.parse(reply)

    def schedule_retry(
        self,
        lead_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        due: float,
        now: float | None = None,
    ) -> Outcome:
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        self._schedule(
            keys=[k.lead(lead_id), k.active, k.state_counts, k.attempts(lead_id), k.retry],
            args=[lead_id, time.time() if now is None else now, token, dumps(attempt), due],
            client=pipe,
        )
        pipe.hincrby(k.counters, "attempts.transient", 1)
        return Outcome.parse(pipe.execute()[0])

    # -- background loops -----------------------------------------------------------

    def claim_due_retries(self, *, now: float | None = None, limit: int = 500) -> list[str]:
        """Leads whose next attempt is due, taken off the schedule (caller enqueues them)."""
        k = self.keys
        ids = self._claim_due(
            keys=[k.retry, k.active],
            args=[time.time() if now is None else now, limit, k.lead_prefix],
        )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def sweep(
        self, *, lease: float, now: float | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        """(lead id, state) of leads untouched past `lease`; they are touched again."""
        now = time.time() if now is None else now
        k = self.keys
        flat = self._sweep(keys=[k.active], args=[now, now - lease, limit, k.lead_prefix])
        items = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        return list(zip(items[::2], items[1::2], strict=True))

    def next_retry_due(self) -> float | None:
        """When the earliest scheduled retry is due (epoch seconds), or None."""
        first = self.redis.zrange(self.keys.retry, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    # -- replay and purge -----------------------------------------------------------

    def replay_prepare(
        self,
        lead_id: str,
        history: Mapping[str, Any],
        *,
        payload: str = "",
        now: float | None = None,
    ) -> Outcome:
        k = self.keys
        reply = self._replay_prepare(
            keys=[k.lead(lead_id), k.active, k.state_counts, k.history(lead_id)],
            args=[lead_id, time.time() if now is None else now, dumps(history), payload],
        )
        return Outcome.parse(reply)

    def replay_complete(self, lead_id: str) -> bool:
        k = self.keys
        reasons = [k.dead_by_reason(r) for r in DeadReason]
        return bool(
            self._replay_complete(
                keys=[k.lead(lead_id), k.dead, *reasons],
                args=[lead_id, *(r.value for r in DeadReason)],
            )
        )

    def purge(self, lead_id: str) -> str:
        """Delete a dead lead; returns `purged`, `missing` or the state that forbade it."""
        k = self.keys
        reasons = [k.dead_by_reason(r) for r in DeadReason]
        reply = self._purge(
            keys=[
                k.lead(lead_id),
                k.active,
                k.state_counts,
                k.attempts(lead_id),
                k.history(lead_id),
                k.retry,
                k.dead,
                *reasons,
            ],
            args=[lead_id],
        )
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    # -- counters -------------------------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        """Bump an event counter (attempt outcomes, unreadable messages)."""
        self.redis.hincrby(self.keys.counters, name, amount)
