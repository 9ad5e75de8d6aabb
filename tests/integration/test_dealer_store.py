"""Dealer health scripts on a real Redis: the guard's breaker and rate, held leads,
the releaser, pause/resume/drain, and the Lua breaker against pipeline/breaker.py."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.breaker import (
    CLOSED,
    Answer,
    Breaker,
    BreakerPolicy,
    BreakerReason,
    BreakerState,
    after_answer,
    credentials_work,
    gate,
    pause,
    resume,
    unauthorized_elsewhere,
)
from store.dealers import DealerLimits, DealerStore
from store.erasure import Eraser
from store.keys import Keys
from store.views import dealer_view, dealer_views
from tests.conftest import flush_owned_database

POLICY = BreakerPolicy(failures=3, cooldown_seconds=10.0, max_cooldown_seconds=35.0)
LIMITS = DealerLimits(lease_seconds=5.0, max_attempts=4, max_age_seconds=3600.0)
NOW = 1_800_000_000.0
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def client(redis_url: str) -> Iterator[redis.Redis]:
    flush_owned_database(redis_url)
    c = redis.Redis.from_url(redis_url, decode_responses=True)
    yield c
    c.close()
    flush_owned_database(redis_url)


def new_store(client: redis.Redis, **limits: Any) -> DealerStore:
    keys = Keys(prefix=f"dt{next(_prefixes)}")
    lim = dataclasses.replace(LIMITS, **limits)
    return DealerStore(client, keys, POLICY, lim)


def add_lead(store: DealerStore, lead_id: str, dealer: str = "d1", **fields: object) -> None:
    record: dict[Any, Any] = {
        "state": "validated",
        "leadId": lead_id,
        "dealerUuid": dealer,
        "request": "{}",
        "createdAt": repr(NOW),
        "attemptCount": "0",
        **{k: str(v) for k, v in fields.items()},
    }
    store.redis.hset(store.keys.lead(lead_id), mapping=record)


def answer(store: DealerStore, dealer: str, lead_id: str, a: Answer, now: float) -> None:
    pipe = store.redis.pipeline(transaction=False)
    store.add_answer(pipe, dealer, lead_id, a, now=now)
    pipe.execute()


def fail(store: DealerStore, lead_id: str, a: Answer, *, due: float | None, now: float) -> str:
    token = "t-" + lead_id
    store.redis.hset(
        store.keys.lead(lead_id), mapping={"state": "delivering", "deliveryToken": token}
    )
    pipe = store.redis.pipeline(transaction=False)
    attempt = json.dumps({"status": 503})
    store.add_after_failure(
        pipe, lead_id, token, attempt, dealer_uuid="d1", answer=a, due=due, now=now
    )
    return str(pipe.execute()[0][0])


def lead(store: DealerStore, lead_id: str) -> dict[str, str]:
    return store.redis.hgetall(store.keys.lead(lead_id))  # type: ignore[return-value]


# -- the guard ----------------------------------------------------------------------


def test_closed_breaker_lets_a_lead_go_and_registers_the_dealer(client: redis.Redis) -> None:
    store = new_store(client)
    add_lead(store, "L1")
    claim = store.begin_delivery("L1", "tok", now=NOW)
    assert (claim.status, claim.dealer_uuid, claim.probe) == ("go", "d1", False)
    assert lead(store, "L1")["deliveryToken"] == "tok"
    assert store.known() == ["d1"]


def test_open_breaker_holds_leads_in_redis_without_an_attempt(client: redis.Redis) -> None:
    # Given a dealer whose breaker a 403 opened
    store = new_store(client)
    answer(store, "d1", "x", Answer.FORBIDDEN, NOW)
    add_lead(store, "L1")
    store.redis.zadd(store.keys.active, {"L1": NOW})
    # When the guard sees one of its leads
    claim = store.begin_delivery("L1", "tok", now=NOW + 1)
    # Then it is held: out of the active index, in the dealer's held set, no token
    assert (claim.status, claim.detail) == ("held", "forbidden")
    record = lead(store, "L1")
    assert record["state"] == "held" and record["heldReason"] == "forbidden"
    assert "deliveryToken" not in record and record["attemptCount"] == "0"
    assert store.redis.zscore(store.keys.active, "L1") is None
    assert store.redis.zrange(store.keys.dealer_held("d1"), 0, -1) == ["L1"]
    assert dealer_view(store, "d1")["held"] == 1
    # A second message for a held lead is skipped, not posted
    assert store.begin_delivery("L1", "tok2", now=NOW + 2).status == "skip"


def test_guard_elects_a_probe_after_the_cooldown(client: redis.Redis) -> None:
    store = new_store(client)
    answer(store, "d1", "x", Answer.FORBIDDEN, NOW)
    add_lead(store, "L1")
    add_lead(store, "L2")
    claim = store.begin_delivery("L1", "tok", now=NOW + POLICY.cooldown_seconds)
    assert claim.status == "go" and claim.probe
    assert store.breaker("d1").state == BreakerState.HALF_OPEN
    assert store.begin_delivery("L2", "tok", now=NOW + 11).status == "held"


def test_guard_ends_old_and_spent_leads(client: redis.Redis) -> None:
    store = new_store(client, max_age_seconds=60.0)
    add_lead(store, "old")
    add_lead(store, "replayed", replayedAt=NOW + 100)
    add_lead(store, "spent", attemptCount=4)
    assert store.begin_delivery("old", "t", now=NOW + 60).status == "expired"
    assert store.begin_delivery("replayed", "t", now=NOW + 60).status == "go"
    # the POST cap: the guard counted the attempt before the POST
    assert client.hget(store.keys.lead("replayed"), "attemptCount") == "1"
    # a lead out of attempts ends dead `exhausted` in the guard itself, never posted
    assert store.begin_delivery("spent", "t", now=NOW).status == "exhausted"
    state, reason = client.hmget(store.keys.lead("spent"), ["state", "reason"])
    assert (state, reason) == ("dead", "exhausted")
    assert client.zscore(store.keys.dead_by_reason("exhausted"), "spent") is not None
    assert client.zscore(store.keys.active, "spent") is None


def test_held_and_drained_leads_with_odd_ids_use_their_escaped_keys(
    client: redis.Redis,
) -> None:
    # Given leads whose ids hold key syntax, held by a paused dealer
    store = new_store(client)
    odd = ["a:b {c}", "über lead", "x}:{y"]
    for lead_id in odd:
        add_lead(store, lead_id)
    store.pause("d1", now=NOW)
    assert [store.begin_delivery(i, "t", now=NOW).status for i in odd] == ["held"] * 3
    # When the dealer resumes, its held leads are released under their own records
    store.resume("d1", now=NOW + 1)
    assert sorted(store.release(now=NOW + 2)) == sorted(odd)
    for lead_id in odd:
        assert client.hget(store.keys.lead(lead_id), "state") == "delivering"
    # And a drain finds the record of an odd id held again
    for lead_id in odd:
        client.hset(store.keys.lead(lead_id), mapping={"state": "validated"})
        client.hdel(store.keys.lead(lead_id), "deliveryToken", "leaseUntil")
    store.pause("d1", now=NOW + 3)
    assert [store.begin_delivery(i, "t", now=NOW + 3).status for i in odd] == ["held"] * 3
    assert store.drain("d1", now=NOW + 4) == 3
    for lead_id in odd:
        state, reason = client.hmget(store.keys.lead(lead_id), ["state", "reason"])
        assert (state, reason) == ("dead", "drained")


def test_rate_reserves_one_slot_per_lead(client: redis.Redis) -> None:
    # Given a dealer limited to 4 deliveries a second
    store = new_store(client)
    store.sync_rates({"d1": 4.0})
    for i in range(5):
        add_lead(store, f"L{i}")
    # When five leads reach the guard at once
    claims = [store.begin_delivery(f"L{i}", "t", now=NOW) for i in range(5)]
    # Then one goes now and the others wait in the retry schedule for their own slot
    assert [c.status for c in claims] == ["go", "paced", "paced", "paced", "paced"]
    slots = [float(c.detail) for c in claims[1:]]
    assert slots == pytest.approx([NOW + 0.25, NOW + 0.5, NOW + 0.75, NOW + 1.0])
    assert store.redis.zscore(store.keys.retry, "L4") == pytest.approx(NOW + 1.0)
    assert lead(store, "L4")["attemptCount"] == "0"
    # A paced lead arriving at its slot goes without taking another one
    store.redis.hdel(store.keys.lead("L1"), "nextAttemptAt")
    assert store.begin_delivery("L1", "t", now=NOW + 0.25).status == "go"
    add_lead(store, "L5")
    assert float(store.begin_delivery("L5", "t", now=NOW + 0.3).detail) == pytest.approx(NOW + 1.25)
    assert store.rates() == {"d1": 4.0}
    store.sync_rates({})
    assert store.begin_delivery("L5", "t", now=NOW + 0.3).status == "early"


# -- after a failure --------------------------------------------------------------------


def test_transient_failures_schedule_retries_until_the_breaker_opens(client: redis.Redis) -> None:
    store = new_store(client)
    for i in range(3):
        add_lead(store, f"L{i}")
    assert fail(store, "L0", Answer.TRANSIENT, due=NOW + 5, now=NOW) == "scheduled"
    assert fail(store, "L1", Answer.TRANSIENT, due=NOW + 5, now=NOW) == "scheduled"
    assert store.redis.zscore(store.keys.retry, "L1") == NOW + 5
    assert fail(store, "L2", Answer.TRANSIENT, due=NOW + 5, now=NOW) == "held"
    # the attempt was counted by the guard before its POST; a failure only logs it
    assert lead(store, "L2")["attemptCount"] == "0"
    assert client.llen(store.keys.attempts("L2")) == 1
    view = dealer_view(store, "d1")
    assert (view["breaker"], view["reason"], view["consecutiveFailures"]) == (
        "open",
        "failures",
        3,
    )
    assert view["held"] == 1 and view["nextProbeAt"] is not None


def test_401_holds_the_lead_and_opens_every_dealer(client: redis.Redis) -> None:
    store = new_store(client)
    for dealer in ("d2", "d3"):
        add_lead(store, "seen-" + dealer, dealer)
        store.begin_delivery("seen-" + dealer, "t", now=NOW)
    store.pause("d3", now=NOW)
    add_lead(store, "L1")
    assert fail(store, "L1", Answer.UNAUTHORIZED, due=None, now=NOW) == "held"
    views = {v["dealerUuid"]: v for v in dealer_views(store)}
    assert {d: (v["breaker"], v["reason"]) for d, v in views.items()} == {
        "d1": ("open", "unauthorized"),
        "d2": ("open", "unauthorized"),
        "d3": ("paused", "operator"),
    }


def test_a_lost_delivery_still_counts_for_the_breaker(client: redis.Redis) -> None:
    store = new_store(client)
    add_lead(store, "L1")
    store.redis.hset(store.keys.lead("L1"), mapping={"state": "delivering", "deliveryToken": "x"})
    pipe = store.redis.pipeline(transaction=False)
    store.add_after_failure(
        pipe, "L1", "stale", "{}", dealer_uuid="d1", answer=Answer.TRANSIENT, due=NOW, now=NOW
    )
    assert pipe.execute()[0][0] == "lost"
    assert store.breaker("d1").failures == 1
    assert lead(store, "L1")["deliveryToken"] == "x"


# -- the releaser -------------------------------------------------------------------


def hold_leads(store: DealerStore, n: int, *, now: float = NOW) -> None:
    answer(store, "d1", "x", Answer.FORBIDDEN, now)
    for i in range(n):
        add_lead(store, f"H{i}", createdAt=now + i)
        assert store.begin_delivery(f"H{i}", "t", now=now).status == "held"


def test_releaser_sends_one_probe_per_cooldown_rotating(client: redis.Redis) -> None:
    store = new_store(client)
    hold_leads(store, 3)
    assert store.release(now=NOW + 1) == []
    first = store.release(now=NOW + 10)
    assert len(first) == 1 and lead(store, first[0])["state"] == "delivering"
    assert store.breaker("d1").probe == first[0]
    assert store.release(now=NOW + 11) == []  # the probe is in flight
    # The probe fails: back to held, the wait doubles; the next probe is another lead
    answer(store, "d1", first[0], Answer.TRANSIENT, NOW + 12)
    store.redis.hset(store.keys.lead(first[0]), "state", "delivering")
    b = store.breaker("d1")
    assert (b.state, b.cooldown, b.next_probe_at) == (BreakerState.OPEN, 20.0, NOW + 32)
    assert store.release(now=NOW + 31) == []
    second = store.release(now=NOW + 32)
    assert len(second) == 1 and second != first


def test_releaser_lets_held_leads_go_once_closed_oldest_first(client: redis.Redis) -> None:
    store = new_store(client)
    hold_leads(store, 5)
    store.resume("d1")
    assert store.release(now=NOW + 1, batch=3) == ["H0", "H1", "H2"]
    assert store.release(now=NOW + 1, batch=3) == ["H3", "H4"]
    assert store.redis.zcard(store.keys.active) == 5
    assert store.release(now=NOW + 1) == []
    assert store.redis.smembers(store.keys.dealers_holding) == set()


def test_releaser_paces_a_rated_dealer(client: redis.Redis) -> None:
    store = new_store(client)
    store.sync_rates({"d1": 8.0})
    hold_leads(store, 5)
    store.resume("d1")
    assert len(store.release(now=NOW + 1)) == 2  # rate / 4 per tick
    store.redis.hset(store.keys.dealer("d1"), "tat", NOW + 5)
    assert store.release(now=NOW + 1) == []  # slots are booked more than 1 s ahead


def test_held_leads_past_the_age_limit_expire(client: redis.Redis) -> None:
    store = new_store(client, max_age_seconds=100.0)
    hold_leads(store, 3)
    store.pause("d1")  # no probe meanwhile
    store.release(now=NOW + 101)  # H0 (NOW) and H1 (NOW+1) are old enough
    assert [lead(store, f"H{i}")["state"] for i in range(3)] == ["dead", "dead", "held"]
    assert lead(store, "H0")["reason"] == "expired"
    assert store.redis.zrange(store.keys.dead_by_reason("expired"), 0, -1) == ["H0", "H1"]
    assert store.redis.hget(store.keys.state_counts, "held") == "1"
    assert store.redis.hget(store.keys.counters, "deadLettered.expired") == "2"


def test_pause_resume_drain(client: redis.Redis) -> None:
    store = new_store(client)
    assert store.pause("d1", note="migrating", now=NOW) == "closed"
    assert store.pause("d1", now=NOW + 5) == "paused"  # idempotent
    view = dealer_view(store, "d1")
    assert (view["breaker"], view["reason"], view["note"]) == ("paused", "operator", "migrating")
    for i in range(5):
        add_lead(store, f"P{i}")
        assert store.begin_delivery(f"P{i}", "t", now=NOW).status == "held"
    assert store.release(now=NOW + 1000) == []  # no probe while paused
    assert store.drain("d1", now=NOW + 2) == 5
    assert store.redis.zcard(store.keys.dead_by_reason("drained")) == 5
    assert lead(store, "P0")["reason"] == "drained"
    assert store.redis.hget(store.keys.state_counts, "dead") == "5"
    assert store.redis.hget(store.keys.counters, "deadLettered.drained") == "5"
    assert store.drain("d1") == 0
    assert store.resume("d1") == "paused"
    assert dealer_view(store, "d1")["breaker"] == "closed"


# -- the Lua breaker is pipeline/breaker.py ------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["answer"] * 4 + ["gate"] * 3 + ["pause", "resume"]),
        st.sampled_from(list(Answer)),
        st.sampled_from([True, True, False]),  # answer from the probe (when there is one)
        st.sampled_from([0.0, 0.5, 5.0, 10.0, 25.0]),
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(EVENTS)
@example(  # opens, probes, the probe fails twice, then succeeds
    [("answer", Answer.FORBIDDEN, False, 0.0)]
    + [("gate", Answer.DELIVERED, False, 25.0), ("answer", Answer.TRANSIENT, True, 0.5)] * 2
    + [("gate", Answer.DELIVERED, False, 25.0), ("answer", Answer.DELIVERED, True, 0.5)]
)
def test_lua_breaker_matches_the_model(
    client: redis.Redis, events: list[tuple[str, Answer, bool, float]]
) -> None:
    store = new_store(client)
    # d2 is another dealer, to see a 401's effect on every breaker
    add_lead(store, "seen", "d2")
    store.begin_delivery("seen", "t", now=NOW)
    model: dict[str, Breaker] = {"d1": CLOSED, "d2": CLOSED}
    now, serial = NOW, itertools.count()
    for kind, a, from_probe, step in events:
        now += step
        b = model["d1"]
        if kind == "answer":
            lead_id = b.probe if (from_probe and b.probe) else "someone"
            answer(store, "d1", lead_id, a, now)
            model["d1"] = after_answer(b, a, lead_id=lead_id, now=now, policy=POLICY)
            if a == Answer.UNAUTHORIZED:
                model["d2"] = unauthorized_elsewhere(model["d2"], now=now, policy=POLICY)
            if a == Answer.DELIVERED and b.reason == BreakerReason.UNAUTHORIZED:
                model["d2"] = credentials_work(model["d2"], now=now)
        elif kind == "gate":
            lead_id = f"g{next(serial)}"
            add_lead(store, lead_id)
            store.begin_delivery(lead_id, "t", now=now)
            model["d1"] = gate(b, lead_id=lead_id, now=now, lease=LIMITS.lease_seconds)[1]
        elif kind == "pause":
            store.pause("d1", now=now)
            model["d1"] = pause(b, now=now)
        else:
            store.resume("d1", now=now)
            model["d1"] = resume(b)
        assert store.breaker("d1") == model["d1"], (kind, a)
        assert store.breaker("d2") == model["d2"], (kind, a)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.floats(min_value=0.5, max_value=50),
    st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=25),
)
def test_rate_slots_never_come_closer_than_one_interval(
    client: redis.Redis, rate: float, gaps: list[float]
) -> None:
    # Given a rated dealer and leads reaching the guard at arbitrary times
    store = new_store(client)
    store.sync_rates({"d1": rate})
    now, slots = NOW, []
    for i, gap in enumerate(gaps):
        now += gap
        add_lead(store, f"R{i}")
        claim = store.begin_delivery(f"R{i}", "t", now=now)
        # Then each goes now or gets a later slot of its own
        assert claim.status in ("go", "paced")
        slots.append(now if claim.status == "go" else float(claim.detail))
        assert slots[-1] >= now
    ordered = sorted(slots)
    assert all(b - a >= 1 / rate - 1e-6 for a, b in itertools.pairwise(ordered))


def test_a_probe_lost_with_its_worker_is_replaced_after_its_lease(client: redis.Redis) -> None:
    # Given a probe elected by the releaser whose worker then died (no answer ever)
    store = new_store(client)
    hold_leads(store, 3)
    first = store.release(now=NOW + 10)
    assert len(first) == 1
    # Then no other probe goes while its lease runs, and another one does after it
    assert store.release(now=NOW + 10 + LIMITS.lease_seconds - 0.1) == []
    second = store.release(now=NOW + 10 + LIMITS.lease_seconds)
    assert len(second) == 1 and second != first
    assert store.breaker("d1").probe == second[0]


def test_drained_and_expired_leads_notify_their_partner(client: redis.Redis) -> None:
    # Given held leads of a partner with a webhook (the record says notify)
    store = new_store(client, max_age_seconds=100.0)
    store.pause("d1", now=NOW)
    for lead_id, created in (("old", NOW - 60), ("young", NOW)):
        add_lead(store, lead_id, createdAt=created, notify="1", partner="acme")
        assert store.begin_delivery(lead_id, "t", now=NOW).status == "held"
    # When one expires and the other is drained
    store.release(now=NOW + 50)
    assert store.drain("d1", now=NOW + 51) == 1
    # Then each has one pending lead.dead event, scheduled for sending
    k = store.keys
    for lead_id in ("old", "young"):
        (event,) = store.redis.lrange(k.lead_notifications(lead_id), 0, -1)
        fields = store.redis.hgetall(k.notification(str(event)))
        assert (fields["type"], fields["leadId"], fields["state"]) == (
            "lead.dead",
            lead_id,
            "pending",
        )
        assert fields["reason"] == ("expired" if lead_id == "old" else "drained")
        assert store.redis.zscore(k.notify_schedule, event) is not None
    assert store.redis.hget(k.notify_counts, "pending") == "2"


def test_forget_takes_a_held_lead_out_of_its_dealers_held_set(client: redis.Redis) -> None:
    # Given a lead (with an odd id) held by a paused dealer
    store = new_store(client)
    add_lead(store, "held {1}:x")
    store.pause("d1", now=NOW)
    assert store.begin_delivery("held {1}:x", "t", now=NOW).status == "held"
    assert store.held_count("d1") == 1
    eraser = Eraser(client, store.keys)
    # When retention runs (held is not terminal: never expired), then forget
    assert eraser.expire_due(retention_seconds=0, dead_retention_seconds=0, now=NOW + 10**6) == 0
    assert client.hget(store.keys.lead("held {1}:x"), "state") == "held"
    (gone,) = eraser.forget(["held {1}:x"], tombstone_seconds=60, now=NOW + 1)
    # Then it is erased, no POST was in flight, and resuming never releases it
    assert (gone.state, gone.in_flight_until) == ("held", 0.0)
    assert not client.exists(store.keys.lead("held {1}:x"))
    assert store.held_count("d1") == 0
    store.resume("d1", now=NOW + 2)
    assert store.release(now=NOW + 3) == []
    assert store.begin_delivery("held {1}:x", "t", now=NOW + 4).status == "missing"
