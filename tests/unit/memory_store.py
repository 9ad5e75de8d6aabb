"""An in-memory `StageStore`: the Lua transitions of `store/scripts.py`, in Python.

Dealer breakers use `pipeline/breaker.py` itself (the Lua of `store/dealer_scripts.py`
is held to it by `tests/integration/test_dealer_store.py`); the per-dealer rate is
not modelled here (its tests run on Redis).

For unit tests of `pipeline/stages.py` only: same verdicts as the Redis scripts
(the integration tests in `tests/integration/test_store.py` hold those to the real
thing), no atomicity beyond one thread, no persistence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import breaker as rules
from pipeline.breaker import CLOSED, Answer, Breaker, BreakerPolicy, Gate
from pipeline.record_fields import RecordField as F
from pipeline.states import DeadReason, LeadState
from pipeline.store_protocol import FORGOTTEN, DeliveryClaim, Fields, StoreReply

#: The breaker settings of the memory store (the unit tests' scale).
POLICY = BreakerPolicy(failures=3, cooldown_seconds=30, max_cooldown_seconds=60)
LIVE = (LeadState.RECEIVED, LeadState.VALIDATED, LeadState.DELIVERING)


@dataclass
class MemoryStore:
    """Records as dicts of text; indexes as dicts of id -> score."""

    records: dict[str, dict[str, str]] = field(default_factory=dict)
    attempts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    active: dict[str, float] = field(default_factory=dict)
    retry: dict[str, float] = field(default_factory=dict)
    dead: dict[str, float] = field(default_factory=dict)
    dead_by_reason: dict[str, dict[str, float]] = field(default_factory=dict)
    transactions: dict[tuple[str, str], str] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    policy: BreakerPolicy = POLICY
    max_attempts: int = 4
    max_age_seconds: float = 72 * 3600.0
    breakers: dict[str, Breaker] = field(default_factory=dict)
    #: dealer -> {held lead id: age origin}
    held: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Terminal (delivered, duplicate) leads by when they got there: what retention ages.
    finished: dict[str, float] = field(default_factory=dict)
    #: Email (as received) -> lead ids: the Redis store keys it by an HMAC instead.
    emails: dict[str, set[str]] = field(default_factory=dict)
    #: Lead ids `leadpipe forget` erased.
    forgotten: set[str] = field(default_factory=set)

    # -- helpers for tests ------------------------------------------------------------

    def state(self, lead_id: str) -> str | None:
        return self.records.get(lead_id, {}).get(F.STATE)

    def put(self, lead_id: str, **values: str) -> None:
        """Write fields as they are (a test's way to set up a record)."""
        record = self.records.setdefault(lead_id, {F.LEAD_ID: lead_id})
        record.update(values)

    def _set(self, lead_id: str, fields: Fields) -> None:
        record = self.records[lead_id]
        for name, value in fields.items():
            record[str(name)] = value if isinstance(value, str) else str(value)

    def _index_dead(self, lead_id: str, reason: str, now: float) -> None:
        self.dead[lead_id] = now
        self.dead_by_reason.setdefault(reason, {})[lead_id] = now

    def _log_attempt(self, lead_id: str, attempt: Mapping[str, Any]) -> None:
        """The attempt's outcome (it was counted by the guard, before the POST)."""
        self.attempts.setdefault(lead_id, []).append(dict(attempt))

    # -- StageStore ---------------------------------------------------------------------

    def create(
        self,
        lead_id: str,
        fields: Fields,
        *,
        now: float,
        dead_reason: DeadReason | None = None,
        email: str | None = None,
    ) -> str | None:
        if lead_id in self.records:
            return self.records[lead_id][F.STATE]
        if lead_id in self.forgotten:
            return FORGOTTEN
        if email:
            self.emails.setdefault(email.strip().lower(), set()).add(lead_id)
        state = LeadState.DEAD if dead_reason else LeadState.RECEIVED
        self.records[lead_id] = {
            F.STATE: state.value,
            F.LEAD_ID: lead_id,
            F.CREATED_AT: str(now),
            F.UPDATED_AT: str(now),
        }
        self._set(lead_id, fields)
        if dead_reason:
            self._set(lead_id, {F.REASON: dead_reason.value, F.FAILED_AT: str(now)})
            self._index_dead(lead_id, dead_reason.value, now)
        else:
            self.active[lead_id] = now
        return None

    def load(self, lead_id: str, *names: str) -> list[str | None]:
        record = self.records.get(lead_id, {})
        return [record.get(name) for name in names]

    def commit_validated(
        self,
        lead_id: str,
        fields: Fields,
        *,
        partner: str | None,
        transaction_id: str | None,
        now: float,
    ) -> StoreReply:
        state = self.state(lead_id)
        if state != LeadState.RECEIVED:
            return StoreReply("skip", state or "missing")
        new, owner = LeadState.VALIDATED.value, lead_id
        if transaction_id:
            claim = (partner or "", transaction_id)
            current = self.transactions.get(claim)
            if current and current != lead_id and self.state(current) not in (None, "dead"):
                owner = current
            if owner == lead_id:
                self.transactions[claim] = lead_id
            else:
                new = LeadState.DUPLICATE.value
        self._set(lead_id, {F.STATE: new, F.UPDATED_AT: str(now), **fields})
        if new == LeadState.DUPLICATE:
            self._set(lead_id, {F.DUPLICATE_OF: owner})
            self.active.pop(lead_id, None)
            self.finished[lead_id] = now
        else:
            self.active[lead_id] = now
        return StoreReply(new, owner)

    def kill(
        self,
        lead_id: str,
        reason: DeadReason,
        fields: Fields,
        *,
        expect: Iterable[LeadState],
        now: float,
        token: str = "",
        attempt: Mapping[str, Any] | None = None,
        dealer_answer: tuple[str, Answer] | None = None,
    ) -> StoreReply:
        state = self.state(lead_id)
        if state is None:
            return StoreReply("missing")
        if dealer_answer:
            self._answer(dealer_answer[0], lead_id, dealer_answer[1], now)
        if state not in {s.value for s in expect}:
            return StoreReply("skip", state)
        if attempt:
            self._log_attempt(lead_id, attempt)
            self.counters[f"attempts.{attempt.get('outcome', 'failed')}"] += 1
        record = self.records[lead_id]
        if token and record.get(F.DELIVERY_TOKEN) != token:
            return StoreReply("lost", state)
        self._set(
            lead_id,
            {
                F.STATE: LeadState.DEAD.value,
                F.REASON: reason.value,
                F.FAILED_AT: str(now),
                F.UPDATED_AT: str(now),
                **fields,
            },
        )
        for name in (F.DELIVERY_TOKEN, F.LEASE_UNTIL, F.NEXT_ATTEMPT_AT):
            record.pop(name, None)
        self.active.pop(lead_id, None)
        self._index_dead(lead_id, reason.value, now)
        for claim, owner in list(self.transactions.items()):
            if owner == lead_id:
                del self.transactions[claim]
        return StoreReply("dead", state)

    def begin_delivery(
        self, lead_id: str, token: str, *, lease: float, max_attempts: int, now: float
    ) -> DeliveryClaim:
        record = self.records.get(lead_id)
        if record is None:
            return DeliveryClaim("missing", None)
        state = record[F.STATE]
        if state not in (LeadState.VALIDATED, LeadState.DELIVERING):
            return DeliveryClaim("skip", state)
        if record.get(F.DELIVERY_TOKEN) and float(record.get(F.LEASE_UNTIL, "0")) > now:
            return DeliveryClaim("busy", state)
        if F.NEXT_ATTEMPT_AT in record and float(record[F.NEXT_ATTEMPT_AT]) > now:
            return DeliveryClaim("early", state)
        origin = self._origin(record, now)
        if now - origin >= self.max_age_seconds:
            return DeliveryClaim("expired", state)
        count = int(record.get(F.ATTEMPT_COUNT, "0"))
        if count >= max_attempts:
            message = (
                f"gave up after {count} attempts; the outcome of the last one was never recorded"
            )
            self._set(
                lead_id,
                {
                    F.STATE: LeadState.DEAD.value,
                    F.REASON: DeadReason.EXHAUSTED.value,
                    F.FAILED_AT: str(now),
                    F.UPDATED_AT: str(now),
                    F.ERROR: f'{{"message":"{message}"}}',
                },
            )
            for name in (F.DELIVERY_TOKEN, F.LEASE_UNTIL, F.NEXT_ATTEMPT_AT):
                record.pop(name, None)
            self.active.pop(lead_id, None)
            self.retry.pop(lead_id, None)
            self._index_dead(lead_id, DeadReason.EXHAUSTED.value, now)
            for claim, owner in list(self.transactions.items()):
                if owner == lead_id:
                    del self.transactions[claim]
            return DeliveryClaim("exhausted", state)
        dealer = record.get(F.DEALER_UUID, "")
        probe = False
        if dealer:
            decision, b = rules.gate(self.breaker(dealer), lead_id=lead_id, now=now, lease=lease)
            self.breakers[dealer] = b
            if decision == Gate.HOLD:
                reason = (b.reason or b.state).value if b.reason else b.state.value
                self._hold(lead_id, dealer, reason, now)
                return DeliveryClaim("held", state, detail=reason)
            probe = decision == Gate.PROBE
        self._set(
            lead_id,
            {
                F.STATE: LeadState.DELIVERING.value,
                F.DELIVERY_TOKEN: token,
                F.LEASE_UNTIL: str(now + lease),
                F.UPDATED_AT: str(now),
                F.ATTEMPT_COUNT: str(count + 1),
            },
        )
        record.pop(F.NEXT_ATTEMPT_AT, None)
        self.active[lead_id] = now
        return DeliveryClaim(
            "go",
            LeadState.DELIVERING.value,
            record.get(F.DEALER_UUID, ""),
            record.get(F.REQUEST, ""),
            count,
            float(record.get(F.CREATED_AT, str(now))),
            probe=probe,
        )

    def mark_delivered(
        self,
        lead_id: str,
        attempt: Mapping[str, Any],
        fields: Fields,
        *,
        latency: float,
        now: float,
        dealer_uuid: str = "",
    ) -> StoreReply:
        state = self.state(lead_id)
        if state is None:
            return StoreReply("missing")
        if dealer_uuid:
            self._answer(dealer_uuid, lead_id, Answer.DELIVERED, now)
        self._log_attempt(lead_id, attempt)
        self.counters["attempts.delivered"] += 1
        self.latencies.append(latency)
        if state not in (LeadState.VALIDATED, LeadState.DELIVERING):
            return StoreReply("skip", state)
        self._set(
            lead_id,
            {
                F.STATE: LeadState.DELIVERED.value,
                F.DELIVERED_AT: str(now),
                F.UPDATED_AT: str(now),
                **fields,
            },
        )
        for name in (F.DELIVERY_TOKEN, F.LEASE_UNTIL, F.NEXT_ATTEMPT_AT):
            self.records[lead_id].pop(name, None)
        self.active.pop(lead_id, None)
        self.finished[lead_id] = now
        return StoreReply("delivered", state)

    def schedule_retry(
        self,
        lead_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        due: float,
        now: float,
    ) -> StoreReply:
        record = self.records.get(lead_id)
        if record is None:
            return StoreReply("missing")
        self._log_attempt(lead_id, attempt)
        self.counters["attempts.transient"] += 1
        state = record[F.STATE]
        if state != LeadState.DELIVERING or record.get(F.DELIVERY_TOKEN) != token:
            return StoreReply("lost", state)
        self._set(lead_id, {F.NEXT_ATTEMPT_AT: str(due), F.UPDATED_AT: str(now)})
        record.pop(F.DELIVERY_TOKEN, None)
        record.pop(F.LEASE_UNTIL, None)
        self.active.pop(lead_id, None)
        self.retry[lead_id] = due
        return StoreReply("scheduled", state)

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
        record = self.records.get(lead_id)
        if record is None:
            return StoreReply("missing")
        self._log_attempt(lead_id, attempt)
        self.counters[f"attempts.{attempt.get('outcome', 'transient')}"] += 1
        b = self._answer(dealer_uuid, lead_id, answer, now)
        state = record[F.STATE]
        if state != LeadState.DELIVERING or record.get(F.DELIVERY_TOKEN) != token:
            return StoreReply("lost", state)
        if b.state != rules.BreakerState.CLOSED or due is None:
            reason = b.reason.value if b.reason else b.state.value
            self._hold(lead_id, dealer_uuid, reason, now)
            return StoreReply("held", state, (reason,))
        self._set(lead_id, {F.NEXT_ATTEMPT_AT: str(due), F.UPDATED_AT: str(now)})
        record.pop(F.DELIVERY_TOKEN, None)
        record.pop(F.LEASE_UNTIL, None)
        self.active.pop(lead_id, None)
        self.retry[lead_id] = due
        return StoreReply("scheduled", state)

    def release_held(self, *, now: float) -> list[str]:
        out: list[str] = []
        for dealer, leads in self.held.items():
            for lead_id, origin in list(leads.items()):
                if now - origin >= self.max_age_seconds:
                    del leads[lead_id]
                    self._kill_held(lead_id, DeadReason.EXPIRED, now)
            b = self.breaker(dealer)
            if b.releases:
                ids = list(leads)
            elif b.probe_due(now) and leads:
                ids = [next(iter(leads))]
                self.breakers[dealer] = rules.elect(b, lead_id=ids[0], now=now, lease=30.0)
            else:
                ids = []
            for lead_id in ids:
                del leads[lead_id]
                if self.state(lead_id) == LeadState.HELD:
                    self._set(lead_id, {F.STATE: LeadState.DELIVERING.value})
                    self.active[lead_id] = now
                    out.append(lead_id)
        return out

    # -- dealer helpers -------------------------------------------------------------------

    def breaker(self, dealer: str) -> Breaker:
        return self.breakers.get(dealer, CLOSED)

    @staticmethod
    def _origin(record: Mapping[str, str], now: float) -> float:
        return float(record.get(F.REPLAYED_AT) or record.get(F.CREATED_AT) or now)

    def _answer(self, dealer: str, lead_id: str, answer: Answer, now: float) -> Breaker:
        before = self.breaker(dealer)
        b = rules.after_answer(before, answer, lead_id=lead_id, now=now, policy=self.policy)
        self.breakers[dealer] = b
        for other, ob in list(self.breakers.items()):
            if other == dealer:
                continue
            if answer == Answer.UNAUTHORIZED:
                self.breakers[other] = rules.unauthorized_elsewhere(ob, now=now, policy=self.policy)
            elif answer == Answer.DELIVERED and before.reason == rules.BreakerReason.UNAUTHORIZED:
                self.breakers[other] = rules.credentials_work(ob, now=now)
        return b

    def _hold(self, lead_id: str, dealer: str, reason: str, now: float) -> None:
        record = self.records[lead_id]
        self._set(
            lead_id,
            {F.STATE: LeadState.HELD.value, F.HELD_REASON: reason, F.HELD_AT: str(now)},
        )
        for name in (F.DELIVERY_TOKEN, F.LEASE_UNTIL, F.NEXT_ATTEMPT_AT, F.PACE_SLOT):
            record.pop(name, None)
        self.active.pop(lead_id, None)
        self.held.setdefault(dealer, {})[lead_id] = self._origin(record, now)

    def _kill_held(self, lead_id: str, reason: DeadReason, now: float) -> None:
        if self.state(lead_id) != LeadState.HELD:
            return
        self._set(
            lead_id,
            {F.STATE: LeadState.DEAD.value, F.REASON: reason.value, F.FAILED_AT: str(now)},
        )
        self._index_dead(lead_id, reason.value, now)

    def claim_due_retries(self, *, now: float) -> list[str]:
        due = sorted((score, i) for i, score in self.retry.items() if score <= now)
        for _, lead_id in due:
            del self.retry[lead_id]
            self.active[lead_id] = now
            self.records.get(lead_id, {}).pop(F.NEXT_ATTEMPT_AT, None)
        return [lead_id for _, lead_id in due]

    def sweep(self, *, lease: float, now: float) -> list[tuple[str, str]]:
        out = []
        for lead_id, touched in sorted(self.active.items(), key=lambda kv: kv[1]):
            if touched > now - lease:
                continue
            state = self.state(lead_id)
            if state in LIVE:
                assert state is not None
                self.active[lead_id] = now
                if state == LeadState.DELIVERING:
                    self.records[lead_id].pop(F.DELIVERY_TOKEN, None)
                    self.records[lead_id].pop(F.LEASE_UNTIL, None)
                out.append((lead_id, state))
            else:
                del self.active[lead_id]
        return out

    def replay_complete(self, lead_id: str) -> bool:
        record = self.records.get(lead_id, {})
        if record.get(F.STATE) == LeadState.DEAD:
            for reason, index in self.dead_by_reason.items():
                if reason != record.get(F.REASON):
                    index.pop(lead_id, None)
            return False
        self.dead.pop(lead_id, None)
        for index in self.dead_by_reason.values():
            index.pop(lead_id, None)
        return True

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    # -- what `leadpipe forget` does, for tests of a stage racing it ----------------------

    def forget(self, lead_id: str) -> None:
        """Erase the lead (every index) and leave its tombstone."""
        self.records.pop(lead_id, None)
        self.attempts.pop(lead_id, None)
        for index in (self.active, self.retry, self.dead, self.finished):
            index.pop(lead_id, None)
        for by_reason in self.dead_by_reason.values():
            by_reason.pop(lead_id, None)
        for ids in self.emails.values():
            ids.discard(lead_id)
        for held in self.held.values():  # a held lead is never released again
            held.pop(lead_id, None)
        self.forgotten.add(lead_id)
