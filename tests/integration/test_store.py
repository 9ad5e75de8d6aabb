"""The Lua state machine of the lead record, against a real Redis (no worker needed)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from pipeline.states import DeadReason, LeadState
from store.keys import Keys
from store.records import LeadStore
from store.views import dead_letters, lead_view, stats_view

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str) -> Iterator[LeadStore]:
    client = redis.Redis.from_url(redis_url)
    keys = Keys(prefix=f"t-{uuid.uuid4().hex[:8]}")
    yield LeadStore(client, keys)
    for key in client.scan_iter(f"{keys.prefix}:*"):
        client.delete(key)
    client.close()


def _validated(store: LeadStore, *, partner: str = "acme", txn: str | None = None) -> str:
    lead_id = str(uuid.uuid4())
    assert store.create(lead_id, {"payload": "{}"}) is None
    fields = {"dealerUuid": "d-1", "request": json.dumps({"leadId": lead_id})}
    outcome = store.commit_validated(lead_id, fields, partner=partner, transaction_id=txn)
    assert outcome.status == "validated"
    return lead_id


def test_create_is_once_per_lead_id(store: LeadStore) -> None:
    lead_id = str(uuid.uuid4())
    assert store.create(lead_id, {"payload": "{}"}) is None
    assert store.create(lead_id, {"payload": '{"other": 1}'}) == "received"
    assert store.load(lead_id, "payload") == ["{}"]


def test_the_guard_lets_one_delivery_through_and_never_a_delivered_lead(store: LeadStore) -> None:
    lead_id = _validated(store)
    first = store.begin_delivery(lead_id, "t1", lease=30, now=100.0)
    assert (first.status, first.dealer_uuid, first.attempts_before) == ("go", "d-1", 0)
    # a redelivered message while the first POST is in flight
    assert store.begin_delivery(lead_id, "t2", lease=30, now=101.0).status == "busy"
    store.mark_delivered(lead_id, {"status": 200}, {"prospectUuid": "p-1"}, latency=0.1)
    # any later message for the lead, whatever the broker redelivers
    late = store.begin_delivery(lead_id, "t3", lease=30, now=500.0)
    assert (late.status, late.state) == ("skip", "delivered")


def test_an_expired_lease_lets_another_worker_take_over(store: LeadStore) -> None:
    lead_id = _validated(store)
    assert store.begin_delivery(lead_id, "t1", lease=5, now=100.0).status == "go"
    assert store.begin_delivery(lead_id, "t2", lease=5, now=106.0).status == "go"
    # the stale holder's transient failure no longer schedules anything
    stale = store.schedule_retry(lead_id, "t1", {"status": 503}, due=200.0, now=107.0)
    assert stale.status == "lost"
    assert store.redis.zscore(store.keys.retry, lead_id) is None


def test_a_scheduled_retry_is_not_posted_early_and_is_released_when_due(store: LeadStore) -> None:
    lead_id = _validated(store)
    assert store.begin_delivery(lead_id, "t1", lease=30, now=100.0).status == "go"
    assert store.schedule_retry(lead_id, "t1", {"status": 503}, due=110.0, now=100.5).status == (
        "scheduled"
    )
    assert store.begin_delivery(lead_id, "t2", lease=30, now=105.0).status == "early"
    assert store.claim_due_retries(now=105.0) == []
    assert store.claim_due_retries(now=110.0) == [lead_id]
    assert store.claim_due_retries(now=111.0) == []  # claimed once
    assert store.begin_delivery(lead_id, "t3", lease=30, now=111.0).status == "go"


def test_a_transaction_is_owned_until_its_lead_dies(store: LeadStore) -> None:
    txn = f"txn-{uuid.uuid4().hex}"
    owner = _validated(store, txn=txn)
    second = str(uuid.uuid4())
    store.create(second, {"payload": "{}"})
    outcome = store.commit_validated(second, {}, partner="acme", transaction_id=txn)
    assert (outcome.status, outcome.state) == ("duplicate", owner)
    # same transactionId from another partner is a different lead
    _validated(store, partner="other", txn=txn)
    # once the owner is dead, a corrected resubmission goes through
    store.kill(owner, DeadReason.REJECTED, {"error": "{}"}, expect=[LeadState.VALIDATED])
    third = _validated(store, txn=txn)
    record = lead_view(store, third)
    assert record is not None and record["state"] == "validated"


def test_dead_letters_are_indexed_by_reason_and_time(store: LeadStore) -> None:
    a, b = _validated(store), _validated(store)
    store.kill(a, DeadReason.REJECTED, {"error": '{"status": 400}'}, expect=[LeadState.VALIDATED])
    store.kill(b, DeadReason.EXHAUSTED, {"error": "{}"}, expect=[LeadState.VALIDATED], now=9e9)
    assert [e["leadId"] for e in dead_letters(store)] == [b, a]  # newest first
    assert [e["leadId"] for e in dead_letters(store, reason=DeadReason.REJECTED)] == [a]
    assert [e["leadId"] for e in dead_letters(store, since=9e9 - 1)] == [b]
    assert dead_letters(store, limit=1)[0]["leadId"] == b
    counts = stats_view(store)
    assert counts["deadLetters"]["rejected"] == 1
    assert counts["states"]["dead"] == 2


def test_replay_keeps_the_entry_until_complete_and_never_drops_a_fresh_death(
    store: LeadStore,
) -> None:
    lead_id = _validated(store)
    store.kill(lead_id, DeadReason.UNROUTABLE, {"error": "{}"}, expect=[LeadState.VALIDATED])
    assert store.replay_prepare(lead_id, {"action": "replay"}).status == "ok"
    assert store.replay_prepare(lead_id, {"action": "replay"}).state == "received"  # refused
    assert store.redis.zscore(store.keys.dead, lead_id) is not None  # until enqueued
    # it dies again before the replay completes: its new entry stays
    store.kill(lead_id, DeadReason.INVALID, {"error": "{}"}, expect=[LeadState.RECEIVED])
    assert store.replay_complete(lead_id) is False
    assert store.redis.zscore(store.keys.dead, lead_id) is not None


def test_purge_removes_only_dead_leads(store: LeadStore) -> None:
    alive = _validated(store)
    assert store.purge(alive) == "validated"
    dead = _validated(store)
    store.kill(dead, DeadReason.REJECTED, {"error": "{}"}, expect=[LeadState.VALIDATED])
    assert store.purge(dead) == "purged"
    assert lead_view(store, dead) is None
    assert store.purge(dead) == "missing"


def test_the_sweep_returns_stuck_leads_once_per_lease(store: LeadStore) -> None:
    lead_id = str(uuid.uuid4())
    store.create(lead_id, {"payload": "{}"}, now=100.0)
    assert store.sweep(lease=10, now=105.0) == []
    assert store.sweep(lease=10, now=111.0) == [(lead_id, "received")]
    assert store.sweep(lease=10, now=112.0) == []  # touched by the first sweep
