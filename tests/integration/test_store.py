"""The Lua state machine of the lead record, against a real Redis (no worker needed)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from pipeline.states import DeadReason, LeadState
from store.dead_letters import DeadLetters
from store.records import LeadStore
from store.views import lead_view, stats_view

pytestmark = pytest.mark.integration


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
    first = store.begin_delivery(lead_id, "t1", lease=30, max_attempts=8, now=100.0)
    assert (first.status, first.dealer_uuid, first.attempts_before) == ("go", "d-1", 0)
    # a redelivered message while the first POST is in flight
    assert store.begin_delivery(lead_id, "t2", lease=30, max_attempts=8, now=101.0).status == "busy"
    store.mark_delivered(lead_id, {"status": 200}, {"prospectUuid": "p-1"}, latency=0.1)
    # any later message for the lead, whatever the broker redelivers
    late = store.begin_delivery(lead_id, "t3", lease=30, max_attempts=8, now=500.0)
    assert (late.status, late.state) == ("skip", "delivered")


def test_an_expired_lease_lets_another_worker_take_over(store: LeadStore) -> None:
    lead_id = _validated(store)
    assert store.begin_delivery(lead_id, "t1", lease=5, max_attempts=8, now=100.0).status == "go"
    assert store.begin_delivery(lead_id, "t2", lease=5, max_attempts=8, now=106.0).status == "go"
    # the stale holder's transient failure no longer schedules anything
    stale = store.schedule_retry(lead_id, "t1", {"status": 503}, due=200.0, now=107.0)
    assert stale.status == "lost"
    assert store.redis.zscore(store.keys.retry, lead_id) is None


def test_a_scheduled_retry_is_not_posted_early_and_is_released_when_due(store: LeadStore) -> None:
    lead_id = _validated(store)
    assert store.begin_delivery(lead_id, "t1", lease=30, max_attempts=8, now=100.0).status == "go"
    assert store.schedule_retry(lead_id, "t1", {"status": 503}, due=110.0, now=100.5).status == (
        "scheduled"
    )
    assert (
        store.begin_delivery(lead_id, "t2", lease=30, max_attempts=8, now=105.0).status == "early"
    )
    assert store.claim_due_retries(now=105.0) == []
    assert store.claim_due_retries(now=110.0) == [lead_id]
    assert store.claim_due_retries(now=111.0) == []  # claimed once
    assert store.begin_delivery(lead_id, "t3", lease=30, max_attempts=8, now=111.0).status == "go"


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
    assert [e["leadId"] for e in DeadLetters(store).entries()] == [b, a]  # newest first
    assert [e["leadId"] for e in DeadLetters(store).entries(reason=DeadReason.REJECTED)] == [a]
    assert [e["leadId"] for e in DeadLetters(store).entries(since=9e9 - 1)] == [b]
    assert DeadLetters(store).entries(limit=1)[0]["leadId"] == b
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


@pytest.mark.parametrize(
    "lead_id", ["X:attempts", "acme/1", "order 7", "Ünïcødé 顧客 🚗", "a{b}c%d", "~@._-" * 51]
)
def test_lua_builds_the_same_key_names_as_python(store: LeadStore, lead_id: str) -> None:
    from store.keys import LUA_KEY_HELPERS

    script = store.redis.register_script(LUA_KEY_HELPERS + "return lead_key(ARGV[1], ARGV[2])")
    assert script(args=[store.keys.prefix, lead_id]).decode() == store.keys.lead(lead_id)


# -- issue 10: the POST cap, retention, forget --------------------------------------------


def test_the_guard_counts_each_attempt_before_the_post_and_caps_them(store: LeadStore) -> None:
    # Given a lead whose deliveries all die before recording anything (lease expiry)
    lead_id = _validated(store)
    for n in range(3):
        claim = store.begin_delivery(lead_id, f"t{n}", lease=5, max_attempts=3, now=100.0 + 10 * n)
        assert (claim.status, claim.attempts_before) == ("go", n)
    # When a fourth delivery comes along, then the lead is dead, exhausted, never posted
    fourth = store.begin_delivery(lead_id, "t3", lease=5, max_attempts=3, now=140.0)
    assert (fourth.status, fourth.state) == ("exhausted", "delivering")
    view = lead_view(store, lead_id)
    assert view is not None and (view["state"], view["reason"]) == ("dead", "exhausted")
    assert "never recorded" in view["error"]["message"]
    exhausted = DeadLetters(store).entries(reason=DeadReason.EXHAUSTED)
    assert lead_id in {e["leadId"] for e in exhausted}


def test_recording_an_outcome_does_not_count_another_attempt(store: LeadStore) -> None:
    lead_id = _validated(store)
    assert store.begin_delivery(lead_id, "t1", lease=5, max_attempts=3, now=100.0).status == "go"
    store.schedule_retry(lead_id, "t1", {"status": 503}, due=101.0, now=100.5)
    second = store.begin_delivery(lead_id, "t2", lease=5, max_attempts=3, now=102.0)
    assert (second.status, second.attempts_before) == ("go", 1)


def _erase_everything(store: LeadStore, *ids: str) -> list[str]:
    """Every key in the store's prefix still naming one of `ids`."""
    names = []
    r: Any = store.redis
    for key in r.scan_iter(f"{store.keys.prefix}:*"):
        text = key.decode()
        if any(i in text for i in ids):
            names.append(text)
        kind = r.type(key).decode()
        if kind == "zset":
            members = {m.decode() for m in r.zrange(key, 0, -1)}
        elif kind == "set":
            members = {m.decode() for m in r.smembers(key)}
        elif kind == "string":
            members = {(r.get(key) or b"").decode()}
        else:
            members = set()
        names += [f"{text} holds {m}" for m in members & set(ids)]
    return names


def test_expiry_erases_every_key_of_a_finished_lead_and_nothing_live(store: LeadStore) -> None:
    from store.erasure import Eraser

    eraser = Eraser(store.redis, store.keys)
    # Given a delivered lead that owns a transaction, its duplicate, a dead letter ...
    delivered = _validated(store, txn="T-1")
    assert store.begin_delivery(delivered, "t", lease=5, max_attempts=3, now=100.0).status == "go"
    store.mark_delivered(delivered, {"status": 200}, {}, latency=0.1, now=100.0)
    duplicate = str(uuid.uuid4())
    store.create(duplicate, {"payload": "{}"}, now=101.0, email="a@b.example")
    reply = store.commit_validated(duplicate, {}, partner="acme", transaction_id="T-1", now=101.0)
    assert reply.status == "duplicate"
    dead = str(uuid.uuid4())
    store.create(
        dead, {"payload": "{}"}, now=102.0, dead_reason=DeadReason.INVALID, email="a@b.example"
    )
    live = _validated(store, txn="T-2")
    # When retention has passed for the finished ones (and not for the dead letter)
    erased = eraser.expire_due(retention_seconds=10, dead_retention_seconds=1000, now=150.0)
    # Then the two finished leads are gone, every key, the claim and the index entries
    assert erased == 2
    assert _erase_everything(store, delivered, duplicate) == []
    assert store.redis.get(store.keys.transaction("acme", "T-1")) is None
    assert store.load(dead, "state") == ["dead"] and store.load(live, "state") == ["validated"]
    assert eraser.ids_by_email("A@B.example ") == [dead]
    # ... and later the dead letter, once its own retention has passed
    assert eraser.expire_due(retention_seconds=10, dead_retention_seconds=10, now=200.0) == 1
    assert _erase_everything(store, dead) == []
    assert eraser.ids_by_email("a@b.example") == []
    counts = stats_view(store)["states"]
    assert counts == {"validated": 1}


def test_a_forgotten_lead_is_never_created_again(store: LeadStore) -> None:
    from store.erasure import Eraser

    eraser = Eraser(store.redis, store.keys)
    lead_id = "acme/1 order 7"
    store.create(lead_id, {"payload": '{"lead": {"email": "x@y.example"}}'}, email="X@y.example")
    done = eraser.forget([lead_id], tombstone_seconds=60)
    assert [(f.lead_id, f.state) for f in done] == [(lead_id, "received")]
    assert _erase_everything(store, lead_id) == [] and eraser.is_forgotten(lead_id)
    assert store.create(lead_id, {"payload": "{}"}) == "forgotten"
    assert store.load(lead_id, "state") == [None]
    assert eraser.ids_by_email("x@y.example") == []


def test_a_post_ending_after_forget_writes_nothing_and_says_it_ended(store: LeadStore) -> None:
    from store.erasure import Eraser

    eraser = Eraser(store.redis, store.keys)
    lead_id = _validated(store)
    now = time.time()
    assert store.begin_delivery(lead_id, "t", lease=30, max_attempts=3, now=now).status == "go"
    done = eraser.forget([lead_id], tombstone_seconds=60, now=now + 1)
    assert eraser.in_flight(done, now=now + 2) == [lead_id]
    # When the POST ends and its worker records the 2xx
    assert store.mark_delivered(lead_id, {"status": 200}, {}, latency=1.0).status == "missing"
    # Then nothing came back, and forget no longer waits for it
    assert store.load(lead_id, "state", "leadId") == [None, None]
    assert store.redis.llen(store.keys.attempts(lead_id)) == 0
    assert eraser.in_flight(done, now=now + 2) == []


def test_erasing_a_lead_erases_its_outcome_notifications(store: LeadStore) -> None:
    from store.erasure import Eraser

    # Given a dead lead with two notifications (as the outcome outbox writes them)
    lead_id = str(uuid.uuid4())
    store.create(lead_id, {"payload": "{}"}, dead_reason=DeadReason.INVALID)
    k, r = store.keys, store.redis
    for event, state in (("msg_1", "sent"), ("msg_2", "pending")):
        r.rpush(k.lead_notifications(lead_id), event)
        r.hset(k.notification(event), mapping={"state": state, "leadId": lead_id})
        r.rpush(k.notification(event) + ":attempts", "{}")
        r.hincrby(k.notify_counts, state, 1)
    r.zadd(k.notify_schedule, {"msg_2": 1.0})
    # When it is forgotten, then none of them is left, and the counts agree
    Eraser(store.redis, store.keys).forget([lead_id], tombstone_seconds=60)
    assert not r.exists(k.lead_notifications(lead_id), k.notification("msg_1"))
    assert not r.exists(k.notification("msg_2"), k.notification("msg_2") + ":attempts")
    assert r.zcard(k.notify_schedule) == 0
    assert {int(v) for v in r.hvals(k.notify_counts)} == {0}
