"""What a partner endpoint's answer means for a notification, without Redis or HTTP:
the notifier over an in-memory outbox and a scripted sender."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr

from pipeline.notifications import NotificationState
from pipeline.notify_stage import UNREACHABLE, Notifier, NotifyClaim, NotifyPolicy
from pipeline.webhook_client import NotSent, SendOutcome, Sent
from pipeline.webhooks import WebhookTarget

TARGET = WebhookTarget(
    url="https://hooks.acme.example/leads",
    secret_env="S",
    secret=SecretStr("whsec_" + base64.b64encode(b"u" * 32).decode()),
)


@dataclass
class MemoryOutbox:
    """The notification store protocol in a dict: state, due time, attempts, holder."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, event_id: str, partner: str = "acme") -> None:
        self.events[event_id] = {
            "state": "pending", "due": 0.0, "attempts": [], "token": None, "until": 0.0,
            "partner": partner,
        }  # fmt: skip

    def begin_notification(
        self, event_id: str, token: str, *, lease: float, now: float
    ) -> NotifyClaim:
        e = self.events.get(event_id)
        if e is None:
            return NotifyClaim("missing")
        if e["state"] != "pending":
            return NotifyClaim("skip", e["state"])
        if e["token"] and e["until"] > now:
            return NotifyClaim("busy", "pending")
        e["token"], e["until"] = token, now + lease
        return NotifyClaim(
            "go",
            "pending",
            event_type="lead.delivered",
            lead_id="lead-1",
            at="1800000000",
            attempts_before=len(e["attempts"]),
            snapshot={"partner": e["partner"], "transactionId": "T-1"},
        )

    def finish_notification(
        self,
        event_id: str,
        token: str,
        attempt: Mapping[str, Any],
        *,
        state: NotificationState,
        due: float | None,
        now: float,
    ) -> str:
        e = self.events[event_id]
        e["attempts"].append(dict(attempt))
        if e["token"] != token:
            return "lost"
        e["token"] = None
        e["state"] = state.value
        e["due"] = due
        return state.value

    def claim_due_notifications(
        self, *, now: float, lease: float, limit: int = 500
    ) -> list[tuple[str, str]]:
        due = [(i, e["partner"]) for i, e in self.events.items() if e["state"] == "pending"]
        return [(i, p) for i, p in due if (self.events[i]["due"] or 0) <= now][:limit]


@dataclass
class ScriptedSender:
    answers: list[SendOutcome]
    bodies: list[tuple[str, bytes]] = field(default_factory=list)

    def send(self, target: WebhookTarget, *, msg_id: str, body: bytes) -> SendOutcome:
        self.bodies.append((msg_id, body))
        return self.answers.pop(0)


def notifier(outbox: MemoryOutbox, sender: ScriptedSender, max_attempts: int = 3) -> Notifier:
    return Notifier(
        store=outbox,
        targets=lambda partner: TARGET if partner == "acme" else None,
        sender=lambda: sender,
        policy=NotifyPolicy(max_attempts=max_attempts, base_seconds=2.0, max_delay_seconds=60.0),
        lease_seconds=30.0,
        clock=lambda: 1000.0,
    )


@pytest.fixture
def outbox() -> MemoryOutbox:
    box = MemoryOutbox()
    box.add("msg_1")
    return box


def test_a_2xx_is_sent(outbox: MemoryOutbox) -> None:
    sender = ScriptedSender([Sent(200)])
    assert notifier(outbox, sender).send("msg_1") == "sent"
    assert outbox.events["msg_1"]["state"] == "sent"
    assert [a["outcome"] for a in outbox.events["msg_1"]["attempts"]] == ["sent"]


def test_a_5xx_is_retried_with_backoff_and_the_same_body(outbox: MemoryOutbox) -> None:
    sender = ScriptedSender([NotSent(503, "HTTP 503"), Sent(204)])
    n = notifier(outbox, sender)
    assert n.send("msg_1") == "retry"
    assert 1000.0 <= outbox.events["msg_1"]["due"] <= 1002.0  # full jitter up to 2 s
    assert n.send("msg_1") == "sent"
    (id1, body1), (id2, body2) = sender.bodies
    assert id1 == id2 == "msg_1" and body1 == body2


def test_retry_after_is_honoured_above_the_backoff(outbox: MemoryOutbox) -> None:
    sender = ScriptedSender([NotSent(429, "HTTP 429", retry_after=120.0)])
    assert notifier(outbox, sender).send("msg_1") == "retry"
    assert outbox.events["msg_1"]["due"] == 1120.0
    assert outbox.events["msg_1"]["attempts"][0]["retryAfter"] == 120.0


def test_an_unreachable_endpoint_is_retried_and_says_so(outbox: MemoryOutbox) -> None:
    sender = ScriptedSender([NotSent(None, "timeout: ReadTimeout")])
    assert notifier(outbox, sender).send("msg_1") == UNREACHABLE
    assert outbox.events["msg_1"]["state"] == "pending"


def test_the_last_allowed_attempt_fails_and_is_kept(outbox: MemoryOutbox) -> None:
    sender = ScriptedSender([NotSent(500, "HTTP 500")] * 3)
    n = notifier(outbox, sender, max_attempts=3)
    assert [n.send("msg_1") for _ in range(3)] == ["retry", "retry", "failed"]
    assert outbox.events["msg_1"]["state"] == "failed"
    assert n.send("msg_1") == "skip"  # kept, never sent again
    assert len(sender.bodies) == 3


def test_a_partner_without_a_webhook_fails_without_a_post() -> None:
    box = MemoryOutbox()
    box.add("msg_2", partner="globex")
    sender = ScriptedSender([])
    assert notifier(box, sender).send("msg_2") == "failed"
    assert sender.bodies == []
    assert "no webhook configured" in box.events["msg_2"]["attempts"][0]["error"]


def test_a_batch_stops_after_an_unreachable_attempt() -> None:
    box = MemoryOutbox()
    for i in range(3):
        box.add(f"msg_{i}")
    sender = ScriptedSender([Sent(200), NotSent(None, "connection error: refused")])
    n = notifier(box, sender)
    [batch] = n.release_due()
    assert n.send_batch(batch) == ["sent", UNREACHABLE]
    assert len(sender.bodies) == 2
