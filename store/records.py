"""LeadStore: the lead record in Redis and every transition of it.

Pure persistence: it implements `pipeline.store_protocol.StageStore` (what the stages
in `pipeline/stages.py` decide is written here, one Lua script per transition) plus
what operators need (replay, purge, the retry schedule). It decides nothing itself.

The record is the source of truth: messages carry only the lead id after ingest, so
no customer data sits in later task arguments, in the broker or in Flower.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from pipeline.breaker import Answer
from pipeline.jsontext import dumps, storable
from pipeline.privacy import email_digest
from pipeline.record_fields import RecordField
from pipeline.states import DeadReason, LeadState
from pipeline.store_protocol import DeliveryClaim, Fields, StoreReply
from store import scripts
from store.dealers import DealerStore, default_dealer_store
from store.erasure import email_secret, index_keys
from store.keys import Keys, dead_lettered_counter
from store.notifications import notify_keys

__all__ = [
    "LATENCY_BUCKETS",
    "LeadStore",
    "dead_lettered_counter",
    "dumps",
    "latency_bucket",
    "storable",
]

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
            flat.extend((str(name), storable(value) if isinstance(value, str) else value))
    return flat


def _reply(reply: list[bytes | str] | None) -> StoreReply:
    """A transition script's reply: {status, state-or-owner, detail...}."""
    parts = [p.decode() if isinstance(p, bytes) else str(p) for p in (reply or [])]
    if not parts:
        return StoreReply("missing")
    return StoreReply(parts[0], parts[1] if len(parts) > 1 else None, tuple(parts[1:]))


class LeadStore:
    """Lead records, dedupe claims, the retry schedule and the dead letters, in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys | None = None,
        dealers: DealerStore | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys or Keys()
        #: Breakers: an answer's effect on them rides in the same round trip as the lead's.
        self.dealers = dealers or default_dealer_store(client, self.keys)
        register = client.register_script
        self._create = register(scripts.CREATE)
        self._enrich_commit = register(scripts.ENRICH_COMMIT)
        self._dead = register(scripts.DEAD)
        self._delivered = register(scripts.DELIVERED)
        self._schedule = register(scripts.SCHEDULE_RETRY)
        self._claim_due = register(scripts.CLAIM_DUE_RETRIES)
        self._sweep = register(scripts.SWEEP)
        self._replay_prepare = register(scripts.REPLAY_PREPARE)
        self._replay_complete = register(scripts.REPLAY_COMPLETE)
        self._purge = register(scripts.PURGE)
        self._email_secret: bytes | None = None

    def _email_index(self, email: str | None) -> tuple[str, str]:
        """(has_email flag, index key) for a script; the key is a placeholder without
        an email (a script never touches it then)."""
        if not email:
            return "0", self.keys.email("-")
        if self._email_secret is None:
            self._email_secret = email_secret(self.redis, self.keys)
        return "1", self.keys.email(email_digest(self._email_secret, email))

    def _post_ended(self, reply: StoreReply, lead_id: str) -> StoreReply:
        """A POST that ended after its lead was forgotten: tell `forget`, which waits
        for it (the tombstone's lease end becomes 0). Nothing of the lead is written."""
        if reply.status == "missing":
            self.redis.set(self.keys.forgotten(lead_id), "0", xx=True, keepttl=True)
        return reply

    # -- ingest ---------------------------------------------------------------------

    def create(
        self,
        lead_id: str,
        fields: Fields,
        *,
        now: float | None = None,
        dead_reason: DeadReason | None = None,
        email: str | None = None,
    ) -> str | None:
        """Create the record in `received` (or straight `dead`); None when created,
        else the state of the record that already exists under this id (`forgotten`
        for a lead erased by `leadpipe forget`). `email` (as received) enters the
        lead in the email index."""
        k = self.keys
        now = time.time() if now is None else now
        state = LeadState.DEAD if dead_reason else LeadState.RECEIVED
        extra: dict[str, str | int | float] = dict(fields)
        if dead_reason:
            extra[RecordField.REASON] = dead_reason.value
        reason = dead_reason or DeadReason.INVALID
        has_email, email_key = self._email_index(email)
        existing = self._create(
            keys=[
                k.lead(lead_id),
                k.active,
                k.state_counts,
                k.dead,
                k.dead_by_reason(reason),
                *notify_keys(k, lead_id),
                k.forgotten(lead_id),
                email_key,
            ],
            args=[lead_id, now, state.value, has_email, *_flatten(extra)],
        )
        if existing is None:
            if dead_reason:
                self.count(dead_lettered_counter(dead_reason))
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
    ) -> StoreReply:
        """received -> validated, or -> duplicate when a live lead owns the transaction."""
        k = self.keys
        # Leads without a partner share one namespace: same transactionId, same lead.
        has_txn = bool(transaction_id)
        txn_key = k.transaction(partner or "", transaction_id or "") if has_txn else k.lead(lead_id)
        reply = self._enrich_commit(
            keys=[
                k.lead(lead_id),
                k.active,
                k.state_counts,
                txn_key,
                *notify_keys(k, lead_id),
                k.finished,
            ],
            args=[
                lead_id,
                time.time() if now is None else now,
                k.prefix,
                "1" if has_txn else "0",
                *_flatten(fields),
            ],
        )
        return _reply(reply)

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
        dealer_answer: tuple[str, Answer] | None = None,
    ) -> StoreReply:
        """Move a lead to the dead letters (only from the states in `expect`);
        `dealer_answer` (dealer, what myKaarma said) also updates that dealer's breaker."""
        k = self.keys
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        self._dead(
            keys=[
                k.lead(lead_id),
                k.active,
                k.state_counts,
                k.dead,
                k.dead_by_reason(reason),
                k.attempts(lead_id),
                *notify_keys(k, lead_id),
            ],
            args=[
                lead_id,
                now,
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
        self._add_answer(pipe, lead_id, dealer_answer, now)
        reply = self._post_ended(_reply(pipe.execute()[0]), lead_id)
        if reply.status == LeadState.DEAD:
            # Only once the script says this call killed it (a second round trip, on
            # the dead path only): a skipped or lost kill must not be counted.
            self.count(dead_lettered_counter(reason))
        return reply

    # -- deliver --------------------------------------------------------------------

    def begin_delivery(
        self,
        lead_id: str,
        token: str,
        *,
        lease: float | None = None,
        max_attempts: int | None = None,
        now: float | None = None,
    ) -> DeliveryClaim:
        """The delivery guard (lead, breaker, rate, age and the POST cap in one script:
        store/dealers.py): the attempt is counted now, before the POST; `exhausted` when
        the lead has had `max_attempts` already (it is now dead, reason exhausted)."""
        claim = self.dealers.begin_delivery(
            lead_id, token, lease=lease, max_attempts=max_attempts, now=now
        )
        if claim.status == "exhausted":
            self.count(dead_lettered_counter(DeadReason.EXHAUSTED))
        return claim

    def mark_delivered(
        self,
        lead_id: str,
        attempt: Mapping[str, Any],
        fields: Fields,
        *,
        latency: float,
        now: float | None = None,
        dealer_uuid: str = "",
    ) -> StoreReply:
        """delivering -> delivered; counts the attempt, observes the latency and closes
        the dealer's breaker, in one round trip."""
        k = self.keys
        now = time.time() if now is None else now
        pipe = self.redis.pipeline(transaction=False)
        self._delivered(
            keys=[
                k.lead(lead_id),
                k.active,
                k.state_counts,
                k.attempts(lead_id),
                *notify_keys(k, lead_id),
                k.finished,
            ],
            args=[lead_id, now, dumps(attempt), *_flatten(fields)],
            client=pipe,
        )
        self._add_answer(pipe, lead_id, (dealer_uuid, Answer.DELIVERED), now)
        pipe.hincrby(k.counters, "attempts.delivered", 1)
        pipe.hincrby(k.latency, latency_bucket(latency), 1)
        pipe.hincrbyfloat(k.latency, "sum", latency)
        reply = pipe.execute()[0]
        return self._post_ended(_reply(reply), lead_id)

    def schedule_retry(
        self,
        lead_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        due: float,
        now: float | None = None,
    ) -> StoreReply:
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        self._schedule(
            keys=[k.lead(lead_id), k.active, k.state_counts, k.attempts(lead_id), k.retry],
            args=[lead_id, time.time() if now is None else now, token, dumps(attempt), due],
            client=pipe,
        )
        pipe.hincrby(k.counters, "attempts.transient", 1)
        return self._post_ended(_reply(pipe.execute()[0]), lead_id)

    def _add_answer(
        self, pipe: Any, lead_id: str, answer: tuple[str, Answer] | None, now: float
    ) -> None:
        if answer is not None and answer[0]:
            self.dealers.add_answer(pipe, answer[0], lead_id, answer[1], now=now)

    def after_failure(
        self,
        lead_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        dealer_uuid: str,
        answer: Answer,
        due: float | None,
        now: float,
    ) -> StoreReply:
        """A failed POST that does not end the lead: hold it (its breaker is not closed,
        or the answer was 401/403), else schedule its retry at `due`."""
        if not dealer_uuid:
            if due is None:
                raise ValueError("a lead without a dealer breaker cannot be held")
            return self.schedule_retry(lead_id, token, attempt, due=due, now=now)
        pipe = self.redis.pipeline(transaction=False)
        self.dealers.add_after_failure(
            pipe,
            lead_id,
            token,
            dumps(attempt),
            dealer_uuid=dealer_uuid,
            answer=answer,
            due=due,
            now=now,
        )
        pipe.hincrby(self.keys.counters, f"attempts.{attempt.get('outcome', 'transient')}", 1)
        return self._post_ended(_reply(pipe.execute()[0]), lead_id)

    # -- background loops -----------------------------------------------------------

    def release_held(self, *, now: float | None = None) -> list[str]:
        """See `StageStore.release_held` (store/dealers.py: RELEASE)."""
        return self.dealers.release(now=now)

    def claim_due_retries(self, *, now: float | None = None, limit: int = 500) -> list[str]:
        """Leads whose next attempt is due, taken off the schedule (caller enqueues them)."""
        k = self.keys
        ids = self._claim_due(
            keys=[k.retry, k.active],
            args=[time.time() if now is None else now, limit, k.prefix],
        )
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def sweep(
        self, *, lease: float, now: float | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        """(lead id, state) of leads untouched past `lease`; they are touched again."""
        now = time.time() if now is None else now
        k = self.keys
        flat = self._sweep(keys=[k.active], args=[now, now - lease, limit, k.prefix])
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
        email: str | None = None,
        now: float | None = None,
    ) -> StoreReply:
        """dead -> received for a replay; a replaced `payload` (with its `email`) moves
        the lead to that email's index."""
        k = self.keys
        has_email, email_key = self._email_index(email)
        reply = self._replay_prepare(
            keys=[k.lead(lead_id), k.active, k.state_counts, k.history(lead_id), email_key],
            args=[
                lead_id,
                time.time() if now is None else now,
                dumps(history),
                payload,
                has_email,
            ],
        )
        return _reply(reply)

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
        reply = self._purge(keys=index_keys(self.keys), args=[self.keys.prefix, lead_id])
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    # -- counters -------------------------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        """Bump an event counter (attempt outcomes, unreadable messages)."""
        self.redis.hincrby(self.keys.counters, name, amount)
