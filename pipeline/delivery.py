"""The deliver stage: one POST under the delivery guard, and what myKaarma's answer
means (CONTRACT sections 4 and 8). Pure domain over a `StageStore`; `Stages`
(`pipeline/stages.py`) runs it as its third stage.

What an attempt's outcome (`pipeline.client`) means:

    Delivered                     -> delivered (prospectUuid, isNewCreated, warnings kept)
    RejectedByMyKaarma 401/403    -> held: the dealer's breaker opens (401: every dealer's)
    RejectedByMyKaarma, other 4xx -> dead: rejected, at once
    TransientFailure              -> retry after `compute_backoff` (Retry-After honoured),
                                     held when it opened the breaker, or dead: exhausted
                                     at the last allowed attempt

Every answer also counts for the dealer's breaker (`pipeline/breaker.py`), in the same
store call as the lead's own transition. Before the POST, the guard may answer `held`,
`paced` (the dealer's rate gave a later slot), `expired` or `exhausted` instead of `go`.

The POST cap: the guard counts the attempt before the POST, so however a delivery
ends (a store error, a crash, a bug) no lead is POSTed more than `retry.max_attempts`
times; a lead out of attempts (its last outcome never recorded, or held after its last
one) the guard itself makes dead `exhausted`. After the POST, recording its outcome is
retried while the lease lasts, so a Redis that hiccups does not cost another POST.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.backoff import compute_backoff
from pipeline.breaker import Answer
from pipeline.client import (
    Delivered,
    DeliveryOutcome,
    RejectedByMyKaarma,
    TransientFailure,
    breaker_answer,
    summary,
)
from pipeline.jsontext import dumps
from pipeline.record_fields import RecordField as F
from pipeline.states import DeadReason, LeadState
from pipeline.step import Record, Step
from pipeline.store_protocol import DeliveryClaim, StageStore
from pipeline.timefmt import iso

log = logging.getLogger(__name__)

#: The guard's verdicts that end a lead without a POST: reason and message. (The
#: guard ends a lead out of attempts itself, `exhausted`, in the same script.)
GUARD_ENDS = {
    "expired": (
        DeadReason.EXPIRED,
        "not delivered within LEADPIPE_MAX_LEAD_AGE_HOURS of receipt; replay to try again",
    ),
}
#: After a POST, its outcome must be recorded: a store error while recording it is
#: retried (first after this many seconds, doubling up to the cap) for as long as the
#: lead's lease leaves time, so a Redis that hiccups does not cost another POST.
RECORD_RETRY_FIRST_SECONDS = 0.2
RECORD_RETRY_MAX_SECONDS = 5.0
#: Share of the lease kept free at its end: recording stops retrying before another
#: worker may take the lead over.
RECORD_LEASE_MARGIN = 0.1


class DeliveryClient(Protocol):
    """What the deliver stage needs of `pipeline.client.MyKaarmaClient`."""

    def deliver(
        self, dealer_uuid: str, body: dict[str, Any], *, lead_id: str
    ) -> DeliveryOutcome: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient delivery failures are retried (CONTRACT section 2)."""

    max_attempts: int
    base_seconds: float
    max_delay_seconds: float


@dataclass
class Delivery:
    """The deliver stage over one store."""

    store: StageStore
    client: Callable[[], DeliveryClient]
    retry: RetryPolicy
    lease_seconds: float
    clock: Callable[[], float]
    sleep: Callable[[float], None] = time.sleep

    def deliver(self, lead_id: str) -> Step:
        """One POST to myKaarma under the delivery guard, and what its answer means.

        The guard counts the attempt before the POST, so however this ends (a store
        error, a crash, a bug) no lead is POSTed more than `retry.max_attempts` times;
        after the POST, recording its outcome is retried while the lease lasts."""
        token = uuid.uuid4().hex
        claimed_at = self.clock()
        claim = self.store.begin_delivery(
            lead_id,
            token,
            lease=self.lease_seconds,
            max_attempts=self.retry.max_attempts,
            now=claimed_at,
        )
        if claim.status == "exhausted":
            log.warning(
                "lead %s dead (exhausted: no attempt left; the last one's outcome was never"
                " recorded, or its dealer held it after its last one)",
                lead_id,
            )
            return Step(lead_id, None, "dead:exhausted")
        if claim.status in GUARD_ENDS:
            return self._ended_by_guard(lead_id, claim.status)
        if claim.status != "go":
            log.info(
                "lead %s not posted (%s, state %s%s)",
                lead_id,
                claim.status,
                claim.state,
                f", {claim.detail}" if claim.detail else "",
            )
            return Step(lead_id, None, claim.status)
        number = claim.attempts_before + 1
        started = self.clock()
        try:
            result: DeliveryOutcome = self.client().deliver(
                claim.dealer_uuid, json.loads(claim.request), lead_id=lead_id
            )
        except Exception as exc:  # the client never raises; if it does, the lead is kept
            result = TransientFailure(None, f"delivery failed: {type(exc).__name__}")
        finished = self.clock()
        attempt: dict[str, Any] = {
            "attempt": number,
            "at": iso(started),
            "durationMs": round((finished - started) * 1000, 1),
        }
        if claim.probe:
            attempt["probe"] = True
        deadline = claimed_at + self.lease_seconds * (1 - RECORD_LEASE_MARGIN)
        return self._record(
            lead_id,
            lambda: self._outcome(lead_id, token, number, attempt, result, claim),
            deadline,
        )

    def _outcome(
        self,
        lead_id: str,
        token: str,
        number: int,
        attempt: dict[str, Any],
        result: DeliveryOutcome,
        claim: DeliveryClaim,
    ) -> Step:
        """Write what myKaarma's answer means (one transition of the record, with the
        answer's effect on the dealer's breaker)."""
        now = self.clock()
        dealer = claim.dealer_uuid
        answer = breaker_answer(result)
        attempt = dict(attempt)  # a retried write starts from the same entry
        if isinstance(result, Delivered):
            return self._delivered(lead_id, number, attempt, result, claim.created_at, now, dealer)
        if isinstance(result, RejectedByMyKaarma) and answer != Answer.REJECTED:
            return self._refused(lead_id, token, attempt, result, answer, now, dealer)
        if isinstance(result, RejectedByMyKaarma):
            return self._rejected(lead_id, token, attempt, result, now, dealer)
        return self._transient(lead_id, token, number, attempt, result, now, dealer)

    def _record(self, lead_id: str, write: Callable[[], Step], deadline: float) -> Step:
        """`write` the outcome of a POST made; whatever it raises (a store error: OOM,
        READONLY, an outage) is retried until `deadline`, then raised (the message is
        then requeued and the guard, which counted the attempt, caps what follows)."""
        delay = RECORD_RETRY_FIRST_SECONDS
        while True:
            try:
                return write()
            except Exception as exc:
                if self.clock() + delay >= deadline:
                    raise
                log.warning(
                    "lead %s: recording the outcome failed (%s); retrying in %.1fs",
                    lead_id,
                    type(exc).__name__,
                    delay,
                )
                self.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_SECONDS)

    def _ended_by_guard(self, lead_id: str, status: str) -> Step:
        """The guard found the lead too old to deliver, or out of attempts (it was held
        after its last one): a dead letter, replayable."""
        reason, message = GUARD_ENDS[status]
        self.store.kill(
            lead_id,
            reason,
            {F.ERROR: dumps({"message": message})},
            expect=[LeadState.VALIDATED, LeadState.DELIVERING],
            now=self.clock(),
        )
        log.warning("lead %s dead (%s)", lead_id, reason.value)
        return Step(lead_id, None, f"dead:{reason.value}")

    def _refused(
        self,
        lead_id: str,
        token: str,
        attempt: dict[str, Any],
        result: RejectedByMyKaarma,
        answer: Answer,
        now: float,
        dealer: str,
    ) -> Step:
        """401/403: not the lead's fault. The breaker opens (every dealer's for 401) and
        the lead is held, not dead (CONTRACT section 4)."""
        attempt.update(status=result.status, outcome=answer.value, error=result.error)
        reply = self.store.after_failure(
            lead_id, token, attempt, dealer_uuid=dealer, answer=answer, due=None, now=now
        )
        log.warning(
            "lead %s held: myKaarma answered HTTP %d (%s) for dealer %s",
            lead_id,
            result.status,
            answer.value,
            dealer,
        )
        return Step(lead_id, None, reply.status)

    def _delivered(
        self,
        lead_id: str,
        number: int,
        attempt: dict[str, Any],
        result: Delivered,
        created_at: float,
        now: float,
        dealer: str,
    ) -> Step:
        attempt.update(status=result.status, outcome="delivered")
        fields: Record = {}
        if result.prospect_uuid:
            fields[F.PROSPECT_UUID] = result.prospect_uuid
        if result.is_new_created is not None:
            fields[F.IS_NEW_CREATED] = "true" if result.is_new_created else "false"
        if result.warnings:
            fields[F.MYKAARMA_WARNINGS] = dumps(list(result.warnings))
        self.store.mark_delivered(
            lead_id, attempt, fields, latency=now - created_at, now=now, dealer_uuid=dealer
        )
        log.info("lead %s delivered (attempt %d, status %d)", lead_id, number, result.status)
        return Step(lead_id, None, "delivered")

    def _rejected(
        self,
        lead_id: str,
        token: str,
        attempt: dict[str, Any],
        result: RejectedByMyKaarma,
        now: float,
        dealer: str,
    ) -> Step:
        attempt.update(status=result.status, outcome="rejected")
        error = {
            "status": result.status,
            "message": f"myKaarma rejected the lead with HTTP {result.status}",
            "mykaarma": result.error,
        }
        self._kill_delivering(
            lead_id, DeadReason.REJECTED, error, token, attempt, now, (dealer, Answer.REJECTED)
        )
        log.warning("lead %s dead (rejected, HTTP %d)", lead_id, result.status)
        return Step(lead_id, None, "dead:rejected")

    def _transient(
        self,
        lead_id: str,
        token: str,
        number: int,
        attempt: dict[str, Any],
        result: TransientFailure,
        now: float,
        dealer: str,
    ) -> Step:
        attempt.update(status=result.status, error=result.error, outcome="transient")
        if number >= self.retry.max_attempts:
            # The message names the status only; what myKaarma said is the `detail`,
            # which `dlq show` prints and `dlq list` and every log line leave out.
            last = f"HTTP {result.status}" if result.status is not None else result.error
            error: dict[str, Any] = {
                "status": result.status,
                "message": f"gave up after {number} attempts; last: {last}",
            }
            if result.status is not None:
                error["detail"] = result.error
            self._kill_delivering(
                lead_id,
                DeadReason.EXHAUSTED,
                error,
                token,
                attempt,
                now,
                (dealer, Answer.TRANSIENT),
            )
            log.warning("lead %s dead (exhausted after %d attempts)", lead_id, number)
            return Step(lead_id, None, "dead:exhausted")
        delay = compute_backoff(
            number,
            base=self.retry.base_seconds,
            cap=self.retry.max_delay_seconds,
            retry_after=result.retry_after,
        )
        attempt["delaySeconds"] = round(delay, 3)
        if result.retry_after is not None:
            attempt["retryAfter"] = result.retry_after
        reply = self.store.after_failure(
            lead_id,
            token,
            attempt,
            dealer_uuid=dealer,
            answer=Answer.TRANSIENT,
            due=now + delay,
            now=now,
        )
        if reply.status == "held":
            log.info(
                "lead %s: attempt %d failed (%s); held, dealer %s's breaker is open",
                lead_id,
                number,
                summary(result),
                dealer,
            )
            return Step(lead_id, None, "held")
        log.info(  # the outcome's summary: statuses only, never myKaarma's body
            "lead %s: attempt %d failed (%s); next in %.2fs",
            lead_id,
            number,
            summary(result),
            delay,
        )
        return Step(lead_id, None, "retry")

    def _kill_delivering(
        self,
        lead_id: str,
        reason: DeadReason,
        error: dict[str, Any],
        token: str,
        attempt: dict[str, Any],
        now: float,
        dealer_answer: tuple[str, Answer],
    ) -> None:
        self.store.kill(
            lead_id,
            reason,
            {F.ERROR: dumps(error)},
            expect=[LeadState.DELIVERING],
            token=token,
            attempt=attempt,
            now=now,
            dealer_answer=dealer_answer,
        )

    # -- background loops -----------------------------------------------------------

    def release_due_retries(self) -> list[Step]:
        """Leads whose backoff has passed, to be enqueued on `leads.deliver`."""
        return [Step(i, "deliver", "due") for i in self.store.claim_due_retries(now=self.clock())]

    def release_held(self) -> list[Step]:
        """Held leads whose dealer's breaker closed, and probes whose cooldown passed
        (held leads past the age limit become dead `expired` on the way)."""
        return [Step(i, "deliver", "released") for i in self.store.release_held(now=self.clock())]
