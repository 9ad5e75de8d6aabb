"""Sending one notification, and what the partner's answer means: sent, retry, failed.

The same design as a lead's delivery, on its own queue (`leads.notify`) and its own
attempt count: a notification is claimed under a token and a lease (so two messages
for one event never send it at once, and a worker killed mid-send leaves it to be
claimed again when the lease runs out), sent, and then marked `sent`, scheduled for
a retry with the pipeline's backoff (`pipeline.backoff`, Retry-After honoured), or
`failed` once `max_attempts` are spent. Failed notifications stay, visible to
`leadpipe notifications` and counted by `leadpipe stats`.

Nothing here touches a lead: a slow or failing partner only ever delays its own
notifications.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.backoff import compute_backoff
from pipeline.notifications import NotificationState, build_event
from pipeline.record_fields import RecordField as F
from pipeline.timefmt import iso
from pipeline.webhook_client import NotSent, SendOutcome, Sent
from pipeline.webhooks import WebhookTarget, encode_body

log = logging.getLogger(__name__)

#: Events of one partner per `leads.notify` message: the broker round trips of one
#: message are shared by this many notifications (`make bench`: ratio_webhooks).
BATCH_SIZE = 50
#: `Notifier.send`'s answer when the attempt could not reach the endpoint at all
#: (timeout, connection error): a retry is scheduled, as for "retry".
UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class NotifyClaim:
    """The store's answer to a claim: `go` with the event's snapshot, or why not."""

    status: str  # go | skip | busy | early | missing
    state: str | None = None
    event_type: str = ""
    lead_id: str = ""
    at: str = ""
    attempts_before: int = 0
    snapshot: Mapping[str, str] = field(default_factory=dict)


class NotificationStore(Protocol):
    """What the notifier needs from storage (`store.notifications` implements it)."""

    def begin_notification(
        self, event_id: str, token: str, *, lease: float, now: float
    ) -> NotifyClaim: ...

    def finish_notification(
        self,
        event_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        state: NotificationState,
        due: float | None,
        now: float,
    ) -> str: ...

    def claim_due_notifications(
        self, *, now: float, lease: float, limit: int = ...
    ) -> list[tuple[str, str]]:
        """(event id, partner) of due notifications, each claimed for one lease."""
        ...


class Sender(Protocol):
    """Something that POSTs a signed event (`pipeline.webhook_client.WebhookSender`)."""

    def send(self, target: WebhookTarget, *, msg_id: str, body: bytes) -> SendOutcome: ...


@dataclass(frozen=True, slots=True)
class NotifyPolicy:
    """How failed notifications are retried: the lead backoff, their own attempt limit."""

    max_attempts: int
    base_seconds: float
    max_delay_seconds: float


@dataclass
class Notifier:
    """Sends pending notifications; one call of `send` is one attempt."""

    store: NotificationStore
    targets: Callable[[str | None], WebhookTarget | None]
    sender: Callable[[], Sender]
    policy: NotifyPolicy
    lease_seconds: float
    clock: Callable[[], float] = time.time

    def send(self, event_id: str) -> str:
        """One attempt for one event; returns what happened (`sent`, `retry`,
        `unreachable` (a retry too), `failed`, or why nothing was sent)."""
        token = uuid.uuid4().hex
        now = self.clock()
        claim = self.store.begin_notification(event_id, token, lease=self.lease_seconds, now=now)
        if claim.status != "go":
            log.info("notification %s not sent (%s, %s)", event_id, claim.status, claim.state)
            return claim.status
        number = claim.attempts_before + 1
        partner = claim.snapshot.get(F.PARTNER) or None
        target = self.targets(partner)
        attempt: dict[str, Any] = {"attempt": number, "at": iso(now)}
        if target is None:
            attempt.update(outcome="failed", error=f"no webhook configured for partner {partner}")
            self.store.finish_notification(
                event_id, token, attempt, state=NotificationState.FAILED, due=None, now=now
            )
            log.warning("notification %s of lead %s failed: no webhook", event_id, claim.lead_id)
            return "failed"
        body = encode_body(build_event(claim.event_type, claim.lead_id, claim.at, claim.snapshot))
        result = self.sender().send(target, msg_id=event_id, body=body)
        finished = self.clock()
        attempt["durationMs"] = round((finished - now) * 1000, 1)
        if isinstance(result, Sent):
            attempt.update(status=result.status, outcome="sent")
            self.store.finish_notification(
                event_id, token, attempt, state=NotificationState.SENT, due=None, now=finished
            )
            log.info(
                "notification %s (%s) of lead %s sent", event_id, claim.event_type, claim.lead_id
            )
            return "sent"
        return self._failed(event_id, token, claim, number, attempt, result, finished)

    def _failed(
        self,
        event_id: str,
        token: str,
        claim: NotifyClaim,
        number: int,
        attempt: dict[str, Any],
        result: NotSent,
        now: float,
    ) -> str:
        attempt.update(status=result.status, error=result.error)
        if number >= self.policy.max_attempts:
            attempt["outcome"] = "failed"
            self.store.finish_notification(
                event_id, token, attempt, state=NotificationState.FAILED, due=None, now=now
            )
            log.warning(
                "notification %s of lead %s failed after %d attempts: %s",
                event_id,
                claim.lead_id,
                number,
                result.error,
            )
            return "failed"
        delay = compute_backoff(
            number,
            base=self.policy.base_seconds,
            cap=self.policy.max_delay_seconds,
            retry_after=result.retry_after,
        )
        attempt.update(outcome="retry", delaySeconds=round(delay, 3))
        if result.retry_after is not None:
            attempt["retryAfter"] = result.retry_after
        self.store.finish_notification(
            event_id, token, attempt, state=NotificationState.PENDING, due=now + delay, now=now
        )
        log.info(
            "notification %s of lead %s: attempt %d failed (%s); next in %.2fs",
            event_id,
            claim.lead_id,
            number,
            result.error,
            delay,
        )
        return UNREACHABLE if result.status is None else "retry"

    def release_due(self, limit: int = 500, batch: int = BATCH_SIZE) -> list[list[str]]:
        """Notifications due now (new, retry time reached, or lease run out), each
        claimed for one lease, in batches of one partner's events: the caller enqueues
        one `leads.notify` message per batch."""
        claimed = self.store.claim_due_notifications(
            now=self.clock(), lease=self.lease_seconds, limit=limit
        )
        by_partner: dict[str, list[str]] = {}
        for event_id, partner in claimed:
            by_partner.setdefault(partner, []).append(event_id)
        return [
            ids[i : i + batch] for ids in by_partner.values() for i in range(0, len(ids), batch)
        ]

    def send_batch(self, event_ids: Sequence[str]) -> list[str]:
        """`send` each event in turn; after one finds the endpoint unreachable (timeout,
        connection refused), the rest are left to come back when their claim runs out,
        so a down partner costs one timeout per batch, not one per event."""
        outcomes: list[str] = []
        for event_id in event_ids:
            outcome = self.send(event_id)
            outcomes.append(outcome)
            if outcome == UNREACHABLE:
                break
        return outcomes
