"""The notification outbox on a real Redis, sent by the notifier to a real receiver on
127.0.0.1 that verifies each signature with `standardwebhooks` (no worker needed)."""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis
from pydantic import SecretStr

from leadpipe.fake_partner import FakePartner
from pipeline.notifications import NotificationState
from pipeline.notify_stage import Notifier, NotifyPolicy
from pipeline.record_fields import RecordField
from pipeline.record_fields import RecordField as F
from pipeline.states import DeadReason, LeadState
from pipeline.webhook_client import WebhookSender
from pipeline.webhooks import WebhookTarget
from store.keys import Keys
from store.notifications import NotificationStore
from store.records import LeadStore

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()


class Clock:
    """A clock the test moves by hand, so backoff needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(redis_url: str) -> Iterator[NotificationStore]:
    client = redis.Redis.from_url(redis_url)
    keys = Keys(prefix=f"t-{uuid.uuid4().hex[:8]}")
    yield NotificationStore(client, keys)
    for key in client.scan_iter(f"{keys.prefix}:*"):
        client.delete(key)
    client.close()


def _lead(store: NotificationStore, *, notify: bool = True, **fields: str) -> str:
    lead_id = f"lead {uuid.uuid4().hex[:6]}/:x"  # an odd id: spaces, slash, colon
    record = {"state": "delivered", "partner": "acme", "transactionId": "T-9", **fields}
    if notify:
        record[RecordField.NOTIFY] = "1"
    store.redis.hset(store.keys.lead(lead_id), mapping=cast(Any, record))
    return lead_id


def _notifier(
    store: NotificationStore, url: str, clock: Clock, *, max_attempts: int = 3
) -> Notifier:
    target = WebhookTarget(url=url, secret_env="S", secret=SecretStr(SECRET))
    sender = WebhookSender(timeout=1.0)  # real time: receivers refuse stale timestamps
    return Notifier(
        store=store,
        targets=lambda partner: target if partner == "acme" else None,
        sender=lambda: sender,
        policy=NotifyPolicy(max_attempts=max_attempts, base_seconds=2, max_delay_seconds=60),
        lease_seconds=30,
        clock=clock,
    )


def _emit(store: NotificationStore, lead_id: str, event_type: str, clock: Clock) -> str:
    event_id = store.emit(lead_id, event_type, now=clock.now)
    assert event_id is not None and event_id.startswith("msg_")
    return event_id


def test_emit_writes_a_pending_notification_only_when_the_record_asks(
    store: NotificationStore,
) -> None:
    clock = Clock()
    on = _lead(store, dealerUuid="d-1", prospectUuid="p-1", isNewCreated="true")
    off = _lead(store, notify=False)

    assert store.emit(on, "lead.delivered", now=clock.now) is not None
    assert store.emit(off, "lead.delivered", now=clock.now) is None

    [view] = store.of_lead(on)
    assert view["type"] == "lead.delivered"
    assert view["state"] == "pending"
    assert view["attempts"] == 0
    assert store.of_lead(off) == []
    assert store.counts() == {"pending": 1, "sent": 0, "failed": 0}


def test_a_503_then_200_sends_one_verified_event_with_a_stable_webhook_id(
    store: NotificationStore,
) -> None:
    clock = Clock()
    lead_id = _lead(store, dealerUuid="d-1", prospectUuid="p-1", isNewCreated="false")
    event_id = _emit(store, lead_id, "lead.delivered", clock)

    with FakePartner(SECRET, fail_first=1) as partner:
        notifier = _notifier(store, partner.url, clock)
        # When: the first try is answered 503
        assert notifier.release_due() == [[event_id]]
        assert notifier.send(event_id) == "retry"
        # Then: not due again until its backoff has passed
        assert notifier.release_due() == []
        [view] = store.of_lead(lead_id)
        assert view["state"] == "pending"
        assert view["lastStatus"] == 503
        # When: the backoff passes
        clock.now += 2.0
        assert notifier.release_due() == [[event_id]]
        assert notifier.send(event_id) == "sent"

        tries = partner.verified()
        assert [r.webhook_id for r in tries] == [event_id, event_id]
        assert tries[0].raw == tries[1].raw  # the same bytes, signed anew
        [accepted] = partner.accepted()
        assert accepted.body["type"] == "lead.delivered"
        assert accepted.body["data"] == {
            "leadId": lead_id,
            "transactionId": "T-9",
            "partner": "acme",
            "dealerUuid": "d-1",
            "prospectUuid": "p-1",
            "isNewCreated": False,
            "at": accepted.body["timestamp"],
        }
    [view] = store.of_lead(lead_id)
    assert view["state"] == "sent"
    assert view["attempts"] == 2
    assert [a["outcome"] for a in view["attemptLog"]] == ["retry", "sent"]
    assert store.counts() == {"pending": 0, "sent": 1, "failed": 0}
    assert notifier.send(event_id) == "skip"  # a stray second message sends nothing


def test_exhausted_notifications_are_kept_failed_and_visible(store: NotificationStore) -> None:
    clock = Clock()
    lead_id = _lead(store, reason="invalid", error=json.dumps({"errors": []}))
    event_id = _emit(store, lead_id, "lead.dead", clock)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there: every attempt is refused
    notifier = _notifier(store, f"http://127.0.0.1:{port}/h", clock, max_attempts=3)

    outcomes = []
    for _ in range(3):
        clock.now += 3600
        assert notifier.release_due() == [[event_id]]
        outcomes.append(notifier.send(event_id))
    assert outcomes == ["unreachable", "unreachable", "failed"]
    clock.now += 3600
    assert notifier.release_due() == []
    [view] = store.of_lead(lead_id)
    assert view["state"] == "failed"
    assert view["attempts"] == 3
    assert view["lastError"].startswith("connection error")
    assert store.counts() == {"pending": 0, "sent": 0, "failed": 1}


def test_a_claim_whose_worker_died_is_due_again_after_the_lease(store: NotificationStore) -> None:
    clock = Clock()
    lead_id = _lead(store, duplicateOf="lead-0")
    event_id = _emit(store, lead_id, "lead.duplicate", clock)
    # Given: a worker began the send and was killed before finishing it
    claim = store.begin_notification(event_id, "dead-worker", lease=30, now=clock.now)
    assert claim.status == "go"
    assert claim.snapshot["duplicateOf"] == "lead-0"
    # Then: another attempt is refused while the lease holds, allowed after it
    assert store.claim_due_notifications(now=clock.now + 29, lease=30) == []
    assert store.begin_notification(event_id, "other", lease=30, now=clock.now + 1).status == "busy"
    assert store.claim_due_notifications(now=clock.now + 31, lease=30) == [(event_id, "acme")]
    assert store.begin_notification(event_id, "other", lease=30, now=clock.now + 31).status == "go"
    # And: the dead worker's late answer is logged but changes nothing
    assert (
        store.finish_notification(
            event_id,
            "dead-worker",
            {"attempt": 1, "status": 200},
            state=NotificationState.SENT,
            due=None,
            now=clock.now + 32,
        )
        == "lost"
    )
    [view] = store.of_lead(lead_id)
    assert view["state"] == "pending"


def test_a_partner_without_a_webhook_any_more_fails_at_once(store: NotificationStore) -> None:
    clock = Clock()
    lead_id = _lead(store, partner="globex")
    event_id = _emit(store, lead_id, "lead.delivered", clock)
    notifier = _notifier(store, "http://127.0.0.1:9/unused", clock)
    assert notifier.send(event_id) == "failed"
    [view] = store.of_lead(lead_id)
    assert view["state"] == "failed"
    assert "no webhook configured for partner globex" in view["lastError"]


def test_forget_removes_every_notification_key_of_a_lead(store: NotificationStore) -> None:
    clock = Clock()
    lead_id = _lead(store)
    first = _emit(store, lead_id, "lead.dead", clock)
    _emit(store, lead_id, "lead.delivered", clock)
    store.finish_notification(
        first, "", {"attempt": 1}, state=NotificationState.SENT, due=None, now=clock.now
    )  # token mismatch: only logged
    assert store.forget_notifications(lead_id) == 2
    store.redis.delete(store.keys.lead(lead_id))
    assert list(store.redis.scan_iter(f"{store.keys.prefix}:notify:*")) == []
    assert store.redis.zcard(store.keys.notify_schedule) == 0
    assert store.counts() == {"pending": 0, "sent": 0, "failed": 0}


# --- emission inside the lead's transitions ----------------------------------------


@pytest.fixture
def leads(store: NotificationStore) -> LeadStore:
    return LeadStore(store.redis, store.keys)


def _types(store: NotificationStore, lead_id: str) -> list[tuple[str, str]]:
    return [(v["type"], v["state"]) for v in store.of_lead(lead_id)]


def _received(leads: LeadStore, *, notify: str | None, txn: str | None = None) -> str:
    lead_id = f"lead-{uuid.uuid4().hex[:8]}"
    fields: dict[str, str | int | float] = {F.PAYLOAD: "{}", F.PARTNER: "acme"}
    if notify is not None:
        fields[F.NOTIFY] = notify
    assert leads.create(lead_id, fields, now=1.0) is None
    return lead_id


def _validate(leads: LeadStore, lead_id: str, notify: str, txn: str | None = None) -> str:
    reply = leads.commit_validated(
        lead_id,
        {F.NOTIFY: notify, F.DEALER_UUID: "d-1", F.REQUEST: "{}", F.TRANSACTION_ID: txn or ""},
        partner="acme",
        transaction_id=txn,
        now=2.0,
    )
    return reply.status


def test_delivered_dead_and_duplicate_transitions_write_their_event(
    store: NotificationStore, leads: LeadStore
) -> None:
    txn = uuid.uuid4().hex
    # delivered
    first = _received(leads, notify=None)
    assert _validate(leads, first, "1", txn) == "validated"
    assert leads.begin_delivery(first, "tok", lease=30, max_attempts=8, now=3.0).status == "go"
    assert (
        leads.mark_delivered(
            first, {"attempt": 1}, {F.PROSPECT_UUID: "p"}, latency=1, now=4.0
        ).status
        == "delivered"
    )
    # duplicate of it
    second = _received(leads, notify=None)
    assert _validate(leads, second, "1", txn) == "duplicate"
    # dead (invalid) at enrich
    third = _received(leads, notify=None)
    leads.kill(
        third,
        DeadReason.INVALID,
        {F.NOTIFY: "1", F.ERROR: "{}"},
        expect=[LeadState.RECEIVED],
        now=5.0,
    )
    # dead on arrival
    fourth = f"lead-{uuid.uuid4().hex[:8]}"
    leads.create(fourth, {F.PAYLOAD: "[]", F.NOTIFY: "1"}, now=6.0, dead_reason=DeadReason.INVALID)

    assert _types(store, first) == [("lead.delivered", "pending")]
    assert _types(store, second) == [("lead.duplicate", "pending")]
    assert _types(store, third) == [("lead.dead", "pending")]
    assert _types(store, fourth) == [("lead.dead", "pending")]
    [delivered] = store.of_lead(first)
    claim = store.begin_notification(delivered["webhookId"], "t", lease=30, now=7.0)
    assert claim.snapshot[F.PROSPECT_UUID] == "p"
    assert claim.snapshot[F.TRANSACTION_ID] == txn
    assert store.counts()["pending"] == 4


def test_no_event_without_a_webhook_and_a_new_one_after_a_replay(
    store: NotificationStore, leads: LeadStore
) -> None:
    # Given: a lead of a partner without a webhook dies: no event
    quiet = _received(leads, notify=None)
    leads.kill(quiet, DeadReason.UNROUTABLE, {F.NOTIFY: "0"}, expect=[LeadState.RECEIVED], now=2.0)
    assert store.of_lead(quiet) == []
    # Given: one with a webhook dies, is replayed, and is delivered
    lead_id = _received(leads, notify=None)
    leads.kill(
        lead_id, DeadReason.UNROUTABLE, {F.NOTIFY: "1"}, expect=[LeadState.RECEIVED], now=2.0
    )
    assert leads.replay_prepare(lead_id, {"action": "replay"}, now=3.0).status == "ok"
    assert _validate(leads, lead_id, "1") == "validated"
    assert leads.begin_delivery(lead_id, "tok", lease=30, max_attempts=8, now=4.0).status == "go"
    leads.mark_delivered(lead_id, {"attempt": 1}, {}, latency=1, now=5.0)
    # Then: two events, each with its own webhook-id
    views = store.of_lead(lead_id)
    assert [v["type"] for v in views] == ["lead.dead", "lead.delivered"]
    assert views[0]["webhookId"] != views[1]["webhookId"]
    # And: a transition that does not happen (already delivered) writes nothing
    leads.mark_delivered(lead_id, {"attempt": 2}, {}, latency=1, now=6.0)
    assert len(store.of_lead(lead_id)) == 2


def test_due_notifications_are_released_in_batches_of_one_partner(
    store: NotificationStore,
) -> None:
    clock = Clock()
    acme = [_emit(store, _lead(store), "lead.delivered", clock) for _ in range(3)]
    globex = [_emit(store, _lead(store, partner="globex"), "lead.delivered", clock)]
    notifier = _notifier(store, "http://127.0.0.1:9/unused", clock)
    batches = notifier.release_due(batch=2)
    assert sorted(len(b) for b in batches) == [1, 1, 2]
    assert globex in batches
    assert sorted(i for b in batches if b != globex for i in b) == sorted(acme)


def test_a_batch_stops_at_the_first_unreachable_attempt(store: NotificationStore) -> None:
    # Given: three events of one partner whose endpoint refuses connections
    clock = Clock()
    ids = [_emit(store, _lead(store), "lead.dead", clock) for _ in range(3)]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    notifier = _notifier(store, f"http://127.0.0.1:{port}/h", clock)
    [batch] = notifier.release_due()
    # When: the batch is sent
    outcomes = notifier.send_batch(batch)
    # Then: one attempt was made; the others wait for their claim to run out
    assert outcomes == ["unreachable"]
    attempts = [store.redis.hget(store.keys.notification(i), "attempts") for i in ids]
    assert sorted(int(a or 0) for a in attempts) == [0, 0, 1]
    assert notifier.release_due() == []
    clock.now += 31
    assert sorted(i for b in notifier.release_due() for i in b) == sorted(ids)
