"""What the stages need from a store: `StageStore`, and the plain results it returns.

`pipeline/stages.py` is written against this protocol only; `store.records.LeadStore`
implements it over Redis (one Lua script per transition) and
`tests/unit/memory_store.py` in memory, for fast tests of every stage decision.

Every method that changes a lead is one atomic transition: it checks the state it
expects and answers with what it found, never raising for a lead in the wrong state.
Times are epoch seconds passed in by the caller (the stages own the clock), so an
implementation never reads a clock of its own for a stage.

To give the stages a new store operation: add the method here (with a docstring that
says its replies), implement it in `store/records.py` (a Lua script in
`store/scripts.py` when it changes state; any new record field goes in
`pipeline/record_fields.py`) and in `tests/unit/memory_store.py`, and test the
decision in `tests/unit/test_stages.py`; mypy checks that both stores still conform.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pipeline.breaker import Answer
from pipeline.states import DeadReason, LeadState

#: Record fields to write: `pipeline.record_fields.RecordField` names to text or numbers.
Fields = Mapping[str, str | int | float]

#: The delivery guard's answers (`StageStore.begin_delivery`):
#: go: post it now; skip: not deliverable (terminal, held, or not validated yet);
#: busy: another delivery holds a live lease; early: a scheduled retry is not due;
#: missing: no such lead; held: its dealer's breaker is not closed, so the guard held
#: it (detail: the breaker's reason); paced: the dealer's rate gave it a later slot, it
#: waits in the retry schedule (detail: the slot); expired: older than the age limit;
#: exhausted: it has had every attempt it may have (counted before each POST, so also
#: a lead held after its last one), so the guard made it dead (reason exhausted).
ClaimStatus = Literal[
    "go", "skip", "busy", "early", "missing", "held", "paced", "expired", "exhausted"
]

#: What `StageStore.create` answers for a lead `leadpipe forget` erased.
FORGOTTEN = "forgotten"

#: Counter names of `StageStore.count`.
UNREADABLE_MESSAGES = "messages.unreadable"


@dataclass(frozen=True, slots=True)
class StoreReply:
    """What a transition did: `status` is its verdict, `state` the state it found
    (for `commit_validated`: the owner of the transaction)."""

    status: str
    state: str | None = None
    detail: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    """The delivery guard's answer: `go` with what to send, or why not."""

    status: ClaimStatus
    state: str | None
    dealer_uuid: str = ""
    request: str = ""
    attempts_before: int = 0
    created_at: float = 0.0
    #: This POST is its dealer's probe after a cooldown (pipeline/breaker.py).
    probe: bool = False
    #: For `held`, the breaker's reason; for `paced`, the reserved slot (epoch).
    detail: str = ""


class StageStore(Protocol):
    """The lead record and its indexes, as the stages use them.

    Replies (`StoreReply.status`) per method:
    - `commit_validated`: `validated` | `duplicate` (state: the owner) | `skip`;
    - `kill`: `dead` | `skip` (not in an expected state) | `lost` (another delivery
      holds the lead; the attempt is still logged) | `missing`;
    - `mark_delivered`: `delivered` | `skip` | `missing` (the attempt is always logged);
    - `schedule_retry`: `scheduled` | `lost` | `missing`;
    - `after_failure`: `scheduled` | `held` | `lost` | `missing`.

    `dealer_answer` (the dealer uuid and what myKaarma said) makes a transition also
    apply the answer to that dealer's breaker (pipeline/breaker.py), in the same step.
    """

    def create(
        self,
        lead_id: str,
        fields: Fields,
        *,
        now: float,
        dead_reason: DeadReason | None = None,
        email: str | None = None,
    ) -> str | None:
        """Create the record in `received` (or `dead` with `dead_reason`, indexed as a
        dead letter); None when created, else the state of the record already there,
        or `FORGOTTEN` for a lead `leadpipe forget` erased (never created again).
        `email` (as received) enters the lead in the email index."""
        ...

    def load(self, lead_id: str, *names: str) -> list[str | None]:
        """Selected fields of a record (None where absent)."""
        ...

    def commit_validated(
        self,
        lead_id: str,
        fields: Fields,
        *,
        partner: str | None,
        transaction_id: str | None,
        now: float,
    ) -> StoreReply:
        """received -> validated, or -> duplicate when a live lead owns the partner's
        transaction id (leads without a partner share one namespace)."""
        ...

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
        """A lead in one of the `expect` states -> dead (a dead letter under `reason`),
        releasing its transaction id. With `token`, only the delivery holding that token
        may; `attempt` is logged (and counted) either way."""
        ...

    def begin_delivery(
        self, lead_id: str, token: str, *, lease: float, max_attempts: int, now: float
    ) -> DeliveryClaim:
        """The delivery guard: claim a validated (or lease-expired delivering) lead for
        one POST under `token` for `lease` seconds, counting the attempt now, before
        the POST; or say why not (`exhausted`: it has had `max_attempts`, and is now
        dead, reason exhausted; `held`, `paced`, `expired`: its dealer's breaker, its
        dealer's rate, its age)."""
        ...

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
        """delivering -> delivered; logs and counts the attempt, observes the latency,
        and counts the 2xx for the dealer's breaker."""
        ...

    def schedule_retry(
        self,
        lead_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        due: float,
        now: float,
    ) -> StoreReply:
        """Log and count a transient attempt; the delivery holding `token` parks the
        lead in the retry schedule until `due`."""
        ...

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
        """Log and count a failed attempt that does not end the lead, apply `answer` to
        the dealer's breaker (401: every breaker); then the delivery holding `token`
        holds the lead when the breaker is not closed (or `due` is None), else parks it
        in the retry schedule until `due`."""
        ...

    def release_held(self, *, now: float) -> list[str]:
        """Held leads to deliver now (the caller enqueues them): probes of breakers whose
        cooldown passed, held leads of closed breakers (paced by the dealer's rate).
        Held leads past the age limit become dead `expired` on the way."""
        ...

    def claim_due_retries(self, *, now: float) -> list[str]:
        """Leads whose retry is due, taken off the schedule (the caller enqueues them)."""
        ...

    def sweep(self, *, lease: float, now: float) -> list[tuple[str, str]]:
        """(lead id, state) of live leads untouched for `lease` seconds; each is touched
        again (so one sweep owns it) and an expired delivery loses its token."""
        ...

    def replay_complete(self, lead_id: str) -> bool:
        """Drop a replayed lead's dead-letter entries (not one it has just earned)."""
        ...

    def count(self, name: str, amount: int = 1) -> None:
        """Bump an event counter."""
        ...
