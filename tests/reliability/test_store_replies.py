"""A store that answers with an error loses no lead (CONTRACT section 4): every error
reply a real Redis gives (out of memory under `noeviction`, READONLY as after a
failover, NOSCRIPT after a script cache flush), at ingest and in the middle of a POST,
against real worker processes and the fake myKaarma. (A Redis that goes away:
test_redis_restart.py; a full broker: test_reliable_fetch.py.)"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
from celery import Celery

from store.embedded import free_port
from tasks import fetch
from tests.reliability.conftest import ReliabilityStack, StackFactory, text, wait_until
from tests.stack import BEHAVIOURS, valid_payload

pytestmark = pytest.mark.reliability


def split_stack(stacks: StackFactory, **options: Any) -> tuple[ReliabilityStack, redis.Redis]:
    """A stack whose state Redis is a server of its own (a test may make it refuse
    writes), the broker staying on the session's Redis; returns it and a broker client."""
    _server, _directory, port = stacks.redis_server(name="redis-state")
    stack = stacks(redis_url=f"redis://127.0.0.1:{port}/0", **options)
    stack.env["LEADPIPE_BROKER_URL"] = stacks.redis_url
    stack.upstream.close()
    stack.upstream = Celery("upstream", broker=stacks.redis_url)
    return stack, redis.Redis.from_url(stacks.redis_url)


def refuse_writes(client: redis.Redis, refusal: str) -> None:
    """Make a Redis refuse every write: out of memory under `noeviction` (`oom`), or a
    replica of a primary that never answers, which keeps its data and answers READONLY
    (`readonly`, as a demoted primary does after a failover)."""
    if refusal == "oom":
        client.config_set("maxmemory", "1")
    else:
        client.replicaof("127.0.0.1", free_port())


def accept_writes(client: redis.Redis, refusal: str) -> None:
    if refusal == "oom":
        client.config_set("maxmemory", "0")
    else:
        client.replicaof("NO", "ONE")


@pytest.mark.parametrize("refusal", ["oom", "readonly"])
def test_a_state_redis_refusing_writes_loses_no_lead(stacks: StackFactory, refusal: str) -> None:
    # Given a state Redis of its own (the broker stays on the shared one) ...
    stack, broker = split_stack(stacks)
    worker = stack.start_worker("w1")
    pid = worker.pid
    warm = stack.send(valid_payload(), partner="acme")
    stack.wait_for([warm])
    # ... that refuses every write (out of memory, or read-only) while 20 leads arrive
    refuse_writes(stack.redis, refusal)
    ids = [stack.send(valid_payload(), partner="acme") for _ in range(20)]
    wait_until(
        lambda: worker.log_text().count(f"store error ({refusal}") >= len(ids),
        timeout=60,
        what=f"the worker meeting {refusal} again and again (every lead tried, requeued)",
    )
    assert all(s is None for s in stack.states(ids).values())  # nothing recorded yet...
    assert broker.llen("leads.ingest") + fetch.held_count(broker) >= 1  # ...nothing acked
    # When it accepts writes again, then every lead is delivered exactly once, by the
    # same worker
    accept_writes(stack.redis, refusal)
    stack.wait_for(ids, timeout=90)
    ledger = stack.ledger([warm, *ids])
    assert ledger.count("delivered") == 21
    assert ledger.posts == {i: 1 for i in [warm, *ids]}
    assert worker.pid == pid and worker.process is not None and worker.process.poll() is None
    counters = {text(k): int(v) for k, v in stack.redis.hgetall(stack.store.keys.counters).items()}
    field = f"store_errors.{refusal}"
    wait_until(
        lambda: int(stack.redis.hget(stack.store.keys.counters, field) or 0) > 0,
        timeout=10,
        what=f"the {refusal} errors counted",
    )
    print(
        f"\n{refusal}: 20 leads held back while the state Redis refused writes, then "
        f"delivered once; counters {counters}"
    )
    broker.close()


@pytest.mark.parametrize("outage", ["brief", "past_the_lease"])
def test_a_write_refused_after_the_post_costs_no_second_create(
    stacks: StackFactory, outage: str
) -> None:
    """myKaarma answered 2xx, but Redis refuses to record it (out of memory). A brief
    refusal: the deliver stage retries the write while its lease lasts, so one POST.
    One that outlasts the lease: the message is requeued, and once Redis accepts writes
    the guard (which counted the attempt) lets one more POST go, under the same
    Idempotency-Key: myKaarma creates each lead once."""
    stack, broker = split_stack(
        stacks,
        behaviours={**BEHAVIOURS, "d-slow": "slow:1500"},
        LEADPIPE_HTTP_TIMEOUT_SECONDS="3",
        LEADPIPE_LEASE_SECONDS="8",
    )
    stack.start_host("h", only=("cpu",))
    ids = [stack.send(valid_payload(), partner="slow") for _ in range(4)]
    stack.wait_for(ids, states=("validated",), timeout=30)
    io = stack.start_host("h", only=("io",))[0]
    # Given four POSTs in flight (the guard took each lead, myKaarma has not answered)
    wait_until(
        lambda: all(stack.redis.hget(stack.store.keys.lead(i), "leaseUntil") for i in ids),
        timeout=20,
        what="4 POSTs in flight",
    )
    # When Redis refuses every write before myKaarma's 2xx comes back
    refuse_writes(stack.redis, "oom")
    assert not stack.fake.requests, "a POST was answered before Redis refused writes"
    wait_until(lambda: len(stack.fake.requests) == 4, timeout=20, what="4 answers")
    assert {r["status"] for r in stack.fake.requests} == {200}
    assert set(stack.states(ids).values()) == {"delivering"}  # the 2xx not recorded
    sign = "recording the outcome failed" if outage == "brief" else "store error (oom"
    wait_until(lambda: io.log_text().count(sign) >= 4, timeout=30, what=f"4 times {sign!r}")
    accept_writes(stack.redis, "oom")
    # Then every lead is delivered, created once by myKaarma
    ledger = stack.ledger(ids, timeout=60, ambiguous=ids)
    assert ledger.count("delivered") == 4
    assert ledger.posts == {i: 1 if outage == "brief" else 2 for i in ids}
    print(f"\nOOM after the POST ({outage}): {ledger.summary()}")
    broker.close()


def test_a_script_cache_flushed_again_and_again_loses_no_lead(stacks: StackFactory) -> None:
    """`SCRIPT FLUSH` (by an operator, or a failover to a replica with an empty script
    cache) makes every Lua script of the store and of reliable fetch answer NOSCRIPT
    until it is loaded again: each is reloaded, or its stage runs again."""
    _server, _directory, port = stacks.redis_server(name="redis-noscript")
    stack = stacks(redis_url=f"redis://127.0.0.1:{port}/0")
    workers = stack.start_host("h")
    stop, flushes = threading.Event(), [0]

    def flush() -> None:
        client = redis.Redis(port=port)
        while not stop.is_set():
            client.script_flush()
            flushes[0] += 1
            stop.wait(0.02)  # the pace of the fault, not a synchronisation

    flusher = threading.Thread(target=flush, daemon=True)
    flusher.start()
    try:
        # Given a Redis whose script cache is emptied every 20 ms while 60 leads go through
        ids = [stack.send(valid_payload(), partner="acme") for _ in range(60)]
        ledger = stack.ledger(ids, timeout=120)
        during = flushes[0]
    finally:
        stop.set()
        flusher.join(5)
    # Then each is delivered once, and no worker died of it
    assert ledger.count("delivered") == 60
    assert ledger.posts == {i: 1 for i in ids}
    assert during >= 20, f"only {during} flushes happened while the leads went through"
    assert all(w.process is not None and w.process.poll() is None for w in workers)
    noscript = sum(w.log_text().count("store error (noscript") for w in workers)
    print(f"\nSCRIPT FLUSH x{during}: {ledger.summary()}; {noscript} stages ran again")


def test_a_foreign_key_of_the_wrong_type_stalls_only_its_own_lead(stacks: StackFactory) -> None:
    """WRONGTYPE: something else wrote a hash where a lead's dedupe claim goes (another
    application sharing the Redis, a hand-made key). That lead's stage is retried, counted
    and logged (`wrongtype`); the other leads flow past it; once the key is removed, it
    is delivered too."""
    stack = stacks()
    worker = stack.start_worker("w1")
    # Given a hash squatting on the dedupe claim of one lead's transactionId
    squatted = stack.store.keys.transaction("acme", "txn-squatted")
    stack.redis.hset(squatted, "owner", "someone else")
    stalled = stack.send(valid_payload(transactionId="txn-squatted"), partner="acme")
    wait_until(
        lambda: worker.log_text().count("store error (wrongtype") >= 2,
        timeout=30,
        what="the stalled lead's stage retried",
    )
    # When other leads arrive meanwhile, then they are all delivered
    others = [stack.send(valid_payload(), partner="acme") for _ in range(20)]
    stack.wait_for(others, timeout=60)
    assert stack.states([stalled])[stalled] not in ("delivered", "dead", "duplicate")
    # And once the foreign key is gone, the stalled lead is delivered once
    stack.redis.delete(squatted)
    ledger = stack.ledger([stalled, *others], timeout=60)
    assert ledger.count("delivered") == 21
    assert ledger.posts == {i: 1 for i in [stalled, *others]}
    wait_until(
        lambda: int(stack.redis.hget(stack.store.keys.counters, "store_errors.wrongtype") or 0),
        timeout=10,
        what="the wrongtype errors counted",
    )
