"""What happens to a lead at each stage: ingest, enrich, deliver, and what myKaarma's
answer means. Pure domain over a `StageStore` (`pipeline/store_protocol.py`).

Each stage takes a lead id, does its work against the record, and returns the `Step`
the transport takes next (enqueue enrich, enqueue deliver, or nothing). `tasks/` only
runs these stages from Celery messages and enqueues what they ask for; unit tests run
them over an in-memory store (`tests/unit/test_stages.py`).

The deliver stage, and what myKaarma's answer means, is `pipeline/delivery.py`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from pipeline.delivery import Delivery, DeliveryClient, RetryPolicy
from pipeline.jsontext import dumps, object_problem
from pipeline.mapping import build_mykaarma_request
from pipeline.privacy import payload_email
from pipeline.record_fields import RecordField as F
from pipeline.routing import RoutingTable
from pipeline.states import DeadReason, LeadState
from pipeline.step import NextTask, Record, Step
from pipeline.store_protocol import FORGOTTEN, UNREADABLE_MESSAGES, StageStore
from pipeline.timefmt import iso, parse_iso8601
from pipeline.validation import validate_lead

log = logging.getLogger(__name__)

#: How much of an oversized payload the dead letter keeps, characters.
OVERSIZED_PREVIEW_CHARS = 2_000

__all__ = ["DeliveryClient", "NextTask", "RetryPolicy", "Stages", "Step"]


@dataclass
class Stages:
    """The pipeline stages over one store."""

    store: StageStore
    routing: Callable[[], RoutingTable]
    client: Callable[[], DeliveryClient]
    retry: RetryPolicy
    lease_seconds: float
    max_payload_bytes: int
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

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
        fields: Record = {F.RECEIVED_AT: iso(now) or ""}
        if isinstance(received_at, str) and received_at.strip():
            try:
                fields[F.RECEIVED_AT] = parse_iso8601(received_at).isoformat()
            except ValueError:
                warnings.append("received_at is not an ISO 8601 time; using the time of arrival")
        if partner is not None:
            if isinstance(partner, str) and partner.strip():
                fields[F.PARTNER_HINT] = partner.strip()
                fields[F.PARTNER] = partner.strip()
            else:
                warnings.append("partner argument is not a non-empty string; ignored")
        text = dumps(payload)
        size = len(text.encode("utf-8"))
        problem = object_problem(payload)
        if isinstance(payload, dict):
            if size > self.max_payload_bytes:
                problem = f"payload is {size} bytes; the limit is {self.max_payload_bytes} bytes"
                text = dumps(
                    {"truncated": True, "bytes": size, "preview": text[:OVERSIZED_PREVIEW_CHARS]}
                )
            elif isinstance(payload.get("partner"), str) and F.PARTNER not in fields:
                fields[F.PARTNER] = payload["partner"]
            if isinstance(payload.get("transactionId"), str):
                fields[F.TRANSACTION_ID] = payload["transactionId"][:200]
        fields[F.PAYLOAD] = text
        fields[F.WARNINGS] = dumps(warnings)
        if self._has_webhook(fields.get(F.PARTNER)):
            fields[F.NOTIFY] = "1"
        email = payload_email(payload)
        if problem:
            return self._dead_on_arrival(lead_id, problem, fields, now, email=email)
        return self._created(lead_id, self.store.create(lead_id, fields, now=now, email=email))

    @staticmethod
    def _created(lead_id: str, existing: str | None) -> Step:
        """What follows `create`: enrich a new (or still received) lead; nothing for one
        already further along, or forgotten (a late message never brings it back)."""
        if existing is None or existing == LeadState.RECEIVED:
            return Step(lead_id, "enrich", "received")
        if existing == FORGOTTEN:
            log.warning("lead %s was forgotten (leadpipe forget): message ignored", lead_id)
            return Step(lead_id, None, FORGOTTEN)
        log.info("lead %s already %s: ingest ignored", lead_id, existing)
        return Step(lead_id, None, existing)

    def unreadable(self, lead_id: str, problem: str, description: dict[str, Any]) -> Step:
        """A message we cannot or must not decode: a dead `invalid` record under its id.
        `description` says what arrived (content type, size), never the body itself."""
        now = self.clock()
        fields: Record = {
            F.PAYLOAD: dumps(description),
            F.WARNINGS: "[]",
            F.RECEIVED_AT: iso(now) or "",
        }
        return self._dead_on_arrival(lead_id, problem, fields, now)

    def drop_message(self, problem: str) -> None:
        """A message that cannot name a lead: counted and logged, never recorded."""
        self.store.count(UNREADABLE_MESSAGES)
        log.error("message dropped: %s", problem)

    def _dead_on_arrival(
        self, lead_id: str, problem: str, fields: Record, now: float, *, email: str | None = None
    ) -> Step:
        fields[F.ERROR] = dumps(
            {"message": problem, "errors": [{"field": "payload", "message": problem}]}
        )
        existing = self.store.create(
            lead_id, fields, now=now, dead_reason=DeadReason.INVALID, email=email
        )
        if existing is None:
            log.warning("lead %s dead (invalid): %s", lead_id, problem)
        return Step(lead_id, None, existing or "dead:invalid")

    # -- enrich ---------------------------------------------------------------------

    def enrich(self, lead_id: str) -> Step:
        """Normalize, validate, resolve the vehicle, route, build the myKaarma body."""
        state, payload_text, partner_hint, warnings_text, replayed, partner = self.store.load(
            lead_id, F.STATE, F.PAYLOAD, F.PARTNER_HINT, F.WARNINGS, F.REPLAYED_AT, F.PARTNER
        )
        if state != LeadState.RECEIVED:
            log.info("lead %s is %s: enrich skipped", lead_id, state or "unknown")
            return Step(lead_id, None, state or "missing")
        step = self._enrich(lead_id, payload_text, partner_hint, warnings_text, partner)
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
        partner: str | None,
    ) -> Step:
        payload = json.loads(payload_text or "null")
        result = validate_lead(payload, partner=partner_hint)
        # A replayed lead is enriched again: its earlier warnings are not repeated.
        warnings = list(dict.fromkeys([*json.loads(warnings_text or "[]"), *result.warnings]))
        if result.lead is not None:
            partner = result.lead.partner
        fields: Record = {
            F.WARNINGS: dumps(warnings),
            F.NORMALIZED: dumps(result.normalized),
            # Decided anew at each enrich, so a replay follows the routing file in force.
            F.NOTIFY: "1" if self._has_webhook(partner) else "0",
        }
        if not result.valid or result.lead is None:
            errors = [{"field": e.field, "message": e.message} for e in result.errors]
            message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            fields[F.ERROR] = dumps({"message": message, "errors": errors})
            self._kill_received(lead_id, DeadReason.INVALID, fields)
            log.warning("lead %s dead (invalid): %d field error(s)", lead_id, len(errors))
            return Step(lead_id, None, "dead:invalid")
        lead = result.lead
        fields[F.VEHICLE_ID_METHOD] = lead.method.value
        if lead.partner:
            fields[F.PARTNER] = lead.partner
        if lead.transaction_id:
            fields[F.TRANSACTION_ID] = lead.transaction_id
        route = self.routing().route(lead.partner, lead.state)
        if route is None:
            message = (
                f"no dealer for partner {lead.partner or '(none)'} and state {lead.state}: "
                "add a [partners.*], [states.*] or [defaults] section with dealer_uuid "
                "to the routing file, then replay"
            )
            fields[F.ERROR] = dumps({"message": message})
            self._kill_received(lead_id, DeadReason.UNROUTABLE, fields)
            log.warning("lead %s dead (unroutable)", lead_id)
            return Step(lead_id, None, "dead:unroutable")
        fields[F.DEALER_UUID] = route.dealer_uuid
        fields[F.ROUTE_SECTION] = route.section
        fields[F.REQUEST] = dumps(build_mykaarma_request(lead, route, lead_id))
        reply = self.store.commit_validated(
            lead_id,
            fields,
            partner=lead.partner,
            transaction_id=lead.transaction_id,
            now=self.clock(),
        )
        if reply.status == LeadState.VALIDATED:
            return Step(lead_id, "deliver", "validated")
        if reply.status == LeadState.DUPLICATE:
            log.info("lead %s is a duplicate of %s", lead_id, reply.state)
            return Step(lead_id, None, "duplicate")
        return Step(lead_id, None, reply.state or reply.status)

    def _has_webhook(self, partner: object) -> bool:
        """Whether the partner's outcomes are notified (CONTRACT section 9)."""
        return isinstance(partner, str) and self.routing().webhook_for(partner) is not None

    def _kill_received(self, lead_id: str, reason: DeadReason, fields: Record) -> None:
        self.store.kill(lead_id, reason, fields, expect=[LeadState.RECEIVED], now=self.clock())

    # -- deliver (pipeline/delivery.py) ---------------------------------------------

    @cached_property
    def delivery(self) -> Delivery:
        """The deliver stage, over the same store, client, policy and clock."""
        return Delivery(
            self.store, self.client, self.retry, self.lease_seconds, self.clock, self.sleep
        )

    def deliver(self, lead_id: str) -> Step:
        """One POST to myKaarma under the delivery guard, and what its answer means."""
        return self.delivery.deliver(lead_id)

    # -- background loops -----------------------------------------------------------

    def release_due_retries(self) -> list[Step]:
        """Leads whose backoff has passed, to be enqueued on `leads.deliver`."""
        return self.delivery.release_due_retries()

    def release_held(self) -> list[Step]:
        """Held leads to deliver now: probes, and the leads of closed breakers."""
        return self.delivery.release_held()

    def sweep(self) -> list[Step]:
        """Leads stuck past their lease (e.g. their message vanished): enqueue them again."""
        steps = []
        for lead_id, state in self.store.sweep(lease=self.lease_seconds, now=self.clock()):
            task: NextTask = "enrich" if state == LeadState.RECEIVED else "deliver"
            log.warning("lead %s stuck in %s past its lease: re-enqueued", lead_id, state)
            steps.append(Step(lead_id, task, "swept"))
        return steps
