"""What happens to a lead at each stage, over the store: ingest, enrich, deliver.

This is the whole pipeline without a broker. Each stage takes a lead id, does its
work against the record in Redis, and returns the `Step` the transport should take
next (enqueue enrich, enqueue deliver, or nothing). `tasks/` only runs these stages
from Celery messages and enqueues what they ask for; tests can run them directly.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.backoff import compute_backoff
from pipeline.client import Delivered, MyKaarmaClient, RejectedByMyKaarma, TransientFailure
from pipeline.mapping import build_mykaarma_request
from pipeline.routing import RoutingTable
from pipeline.states import DeadReason, LeadState
from pipeline.validation import validate_lead
from store.records import LeadStore, dumps
from store.views import iso

log = logging.getLogger(__name__)

NextTask = Literal["enrich", "deliver"]
#: How much of an oversized payload the dead letter keeps, characters.
OVERSIZED_PREVIEW_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class Step:
    """What the transport does after a stage: enqueue `next` for the lead, or stop."""

    lead_id: str
    next: NextTask | None = None
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient delivery failures are retried (CONTRACT section 2)."""

    max_attempts: int
    base_seconds: float
    max_delay_seconds: float


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


@dataclass
class LeadLifecycle:
    """The pipeline stages over one LeadStore."""

    store: LeadStore
    routing: Callable[[], RoutingTable]
    client: Callable[[], MyKaarmaClient]
    retry: RetryPolicy
    lease_seconds: float
    max_payload_bytes: int
    clock: Callable[[], float] = time.time

    # -- ingest ---------------------------------------------------------------------

    def ingest(
        self,
        lead_id: str,
        payload: object,
        *,
        partner: object = None,
        received_at: object = None,
        ignored: tuple[str, ...] = (),
    ) -> Step:
        """Persist the lead as received (or dead when unusable); from here on, only its
        id travels."""
        now = self.clock()
        warnings = [f"ignored unexpected task argument {name}" for name in ignored]
        fields: dict[str, str | int | float] = {"receivedAt": iso(now) or ""}
        if isinstance(received_at, str) and received_at.strip():
            try:
                stamp = datetime.fromisoformat(received_at.strip().replace("Z", "+00:00"))
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                fields["receivedAt"] = stamp.isoformat()
            except ValueError:
                warnings.append("received_at is not an ISO 8601 time; using the time of arrival")
        if partner is not None:
            if isinstance(partner, str) and partner.strip():
                fields["partnerHint"] = partner.strip()
                fields["partner"] = partner.strip()
            else:
                warnings.append("partner argument is not a non-empty string; ignored")
        text = dumps(payload)
        size = len(text.encode("utf-8"))
        problem = None
        if not isinstance(payload, dict):
            problem = f"payload must be a JSON object, got {_json_type(payload)}"
        elif size > self.max_payload_bytes:
            problem = f"payload is {size} bytes; the limit is {self.max_payload_bytes} bytes"
            text = dumps(
                {"truncated": True, "bytes": size, "preview": text[:OVERSIZED_PREVIEW_CHARS]}
            )
        elif isinstance(payload.get("partner"), str) and "partner" not in fields:
            fields["partner"] = payload["partner"]
        if isinstance(payload, dict) and isinstance(payload.get("transactionId"), str):
            fields["transactionId"] = payload["transactionId"][:200]
        fields["payload"] = text
        fields["warnings"] = dumps(warnings)
        if problem:
            return self._dead_on_arrival(lead_id, problem, fields, now)
        existing = self.store.create(lead_id, fields, now=now)
        if existing is None or existing == LeadState.RECEIVED:
            return Step(lead_id, "enrich", "received")
        log.info("lead %s already %s: ingest ignored", lead_id, existing)
        return Step(lead_id, None, existing)

    def unreadable(self, lead_id: str, problem: str, description: dict[str, Any]) -> Step:
        """A message we cannot or must not decode: a dead `invalid` record under its id.
        `description` says what arrived (content type, size), never the body itself."""
        fields: dict[str, str | int | float] = {
            "payload": dumps(description),
            "warnings": "[]",
            "receivedAt": iso(self.clock()) or "",
        }
        return self._dead_on_arrival(lead_id, problem, fields, self.clock())

    def _dead_on_arrival(
        self, lead_id: str, problem: str, fields: dict[str, str | int | float], now: float
    ) -> Step:
        fields["error"] = dumps(
            {"message": problem, "errors": [{"field": "payload", "message": problem}]}
        )
        existing = self.store.create(lead_id, fields, now=now, dead_reason=DeadReason.INVALID)
        if existing is None:
            log.warning("lead %s dead (invalid): %s", lead_id, problem)
        return Step(lead_id, None, existing or "dead:invalid")

    # -- enrich ---------------------------------------------------------------------

    def enrich(self, lead_id: str) -> Step:
        """Normalize, validate, resolve the vehicle, route, build the myKaarma body."""
        state, payload_text, partner_hint, warnings_text, replayed = self.store.load(
            lead_id, "state", "payload", "partnerHint", "warnings", "replayedAt"
        )
        if state != LeadState.RECEIVED:
            log.info("lead %s is %s: enrich skipped", lead_id, state or "unknown")
            return Step(lead_id, None, state or "missing")
        step = self._enrich(lead_id, payload_text, partner_hint, warnings_text)
        if replayed:
            # A replay whose CLI died before dropping the dead-letter entry: drop it now
            # (an entry under the reason the lead just died of, if it did, stays).
            self.store.replay_complete(lead_id)
        return step

    def _enrich(
        self,
        lead_id: str,
        payload_text: str | None,
        partner_hint: str | None,
        warnings_text: str | None,
    ) -> Step:
        payload = json.loads(payload_text or "null")
        result = validate_lead(payload, partner=partner_hint)
        # A replayed lead is enriched again: its earlier warnings are not repeated.
        warnings = list(dict.fromkeys([*json.loads(warnings_text or "[]"), *result.warnings]))
        fields: dict[str, str | int | float] = {
            "warnings": dumps(warnings),
            "normalized": dumps(result.normalized),
        }
        if not result.valid or result.lead is None:
            errors = [{"field": e.field, "message": e.message} for e in result.errors]
            message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            fields["error"] = dumps({"message": message, "errors": errors})
            self.store.kill(lead_id, DeadReason.INVALID, fields, expect=[LeadState.RECEIVED])
            log.warning("lead %s dead (invalid): %d field error(s)", lead_id, len(errors))
            return Step(lead_id, None, "dead:invalid")
        lead = result.lead
        fields["vehicleIdMethod"] = lead.method.value
        if lead.partner:
            fields["partner"] = lead.partner
        if lead.transaction_id:
            fields["transactionId"] = lead.transaction_id
        route = self.routing().route(lead.partner, lead.state)
        if route is None:
            message = (
                f"no dealer for partner {lead.partner or '(none)'} and state {lead.state}: "
                "add a [partners.*], [states.*] or [defaults] section with dealer_uuid "
                "to the routing file, then replay"
            )
            fields["error"] = dumps({"message": message})
            self.store.kill(lead_id, DeadReason.UNROUTABLE, fields, expect=[LeadState.RECEIVED])
            log.warning("lead %s dead (unroutable)", lead_id)
            return Step(lead_id, None, "dead:unroutable")
        fields["dealerUuid"] = route.dealer_uuid
        fields["routeSection"] = route.section
        fields["request"] = dumps(build_mykaarma_request(lead, route, lead_id))
        outcome = self.store.commit_validated(
            lead_id, fields, partner=lead.partner, transaction_id=lead.transaction_id
        )
        if outcome.status == LeadState.VALIDATED:
            return Step(lead_id, "deliver", "validated")
        if outcome.status == LeadState.DUPLICATE:
            log.info("lead %s is a duplicate of %s", lead_id, outcome.state)
            return Step(lead_id, None, "duplicate")
        return Step(lead_id, None, outcome.state or outcome.status)

    # -- deliver --------------------------------------------------------------------

    def deliver(self, lead_id: str) -> Step:
        """One POST to myKaarma under the delivery guard, and what its answer means."""
        token = uuid.uuid4().hex
        claim = self.store.begin_delivery(lead_id, token, lease=self.lease_seconds)
        if claim.status != "go":
            log.info("lead %s not posted (%s, state %s)", lead_id, claim.status, claim.state)
            return Step(lead_id, None, claim.status)
        number = claim.attempts_before + 1
        started = self.clock()
        result = self.client().deliver(
            claim.dealer_uuid, json.loads(claim.request), lead_id=lead_id
        )
        finished = self.clock()
        attempt: dict[str, Any] = {
            "attempt": number,
            "at": iso(started),
            "durationMs": round((finished - started) * 1000, 1),
        }
        if isinstance(result, Delivered):
            attempt.update(status=result.status, outcome="delivered")
            fields: dict[str, str | int | float] = {}
            if result.prospect_uuid:
                fields["prospectUuid"] = result.prospect_uuid
            if result.is_new_created is not None:
                fields["isNewCreated"] = "true" if result.is_new_created else "false"
            if result.warnings:
                fields["mykaarmaWarnings"] = dumps(list(result.warnings))
            self.store.mark_delivered(
                lead_id, attempt, fields, latency=finished - claim.created_at, now=finished
            )
            log.info("lead %s delivered (attempt %d, status %d)", lead_id, number, result.status)
            return Step(lead_id, None, "delivered")
        if isinstance(result, RejectedByMyKaarma):
            attempt.update(status=result.status, outcome="rejected")
            error = {
                "status": result.status,
                "message": f"myKaarma rejected the lead with HTTP {result.status}",
                "mykaarma": result.error,
            }
            self.store.kill(
                lead_id,
                DeadReason.REJECTED,
                {"error": dumps(error)},
                expect=[LeadState.DELIVERING],
                token=token,
                attempt=attempt,
                now=finished,
            )
            log.warning("lead %s dead (rejected, HTTP %d)", lead_id, result.status)
            return Step(lead_id, None, "dead:rejected")
        return self._transient(lead_id, token, number, attempt, result, finished)

    def _transient(
        self,
        lead_id: str,
        token: str,
        number: int,
        attempt: dict[str, Any],
        result: TransientFailure,
        now: float,
    ) -> Step:
        attempt.update(status=result.status, error=result.error, outcome="transient")
        if number >= self.retry.max_attempts:
            error = {
                "status": result.status,
                "message": f"gave up after {number} attempts; last: {result.error}",
            }
            self.store.kill(
                lead_id,
                DeadReason.EXHAUSTED,
                {"error": dumps(error)},
                expect=[LeadState.DELIVERING],
                token=token,
                attempt=attempt,
                now=now,
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
        self.store.schedule_retry(lead_id, token, attempt, due=now + delay, now=now)
        log.info(
            "lead %s: attempt %d failed (%s); next in %.2fs", lead_id, number, result.error, delay
        )
        return Step(lead_id, None, "retry")

    # -- background loops -----------------------------------------------------------

    def release_due_retries(self) -> list[Step]:
        """Leads whose backoff has passed, to be enqueued on `leads.deliver`."""
        return [Step(i, "deliver", "due") for i in self.store.claim_due_retries(now=self.clock())]

    def sweep(self) -> list[Step]:
        """Leads stuck past their lease (e.g. their message vanished): enqueue them again."""
        steps = []
        for lead_id, state in self.store.sweep(lease=self.lease_seconds, now=self.clock()):
            task: NextTask = "enrich" if state == LeadState.RECEIVED else "deliver"
            log.warning("lead %s stuck in %s past its lease: re-enqueued", lead_id, state)
            steps.append(Step(lead_id, task, "swept"))
        return steps
