"""Workers dying, stopping and sharing queues (issue 6, cases 1, 2 and 6).

Counted in the fake myKaarma's record: every lead ends in exactly one terminal state,
and none is stored twice, except where at-least-once delivery cannot know better (a
POST in flight when its worker was SIGKILLed), which is counted, and even then
myKaarma creates the lead once, thanks to the Idempotency-Key.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from leadpipe.runner import default_specs
from tasks import fetch
from tasks.fetch import held_count
from tests.reliability.conftest import (
    StackFactory,
    fake_times,
    reserved_lead_ids,
    seconds,
    wait_until,
)
from tests.stack import BEHAVIOURS, valid_payload

pytestmark = pytest.mark.reliability

#: Sweeper lease in these cases, seconds: how long a lead may sit untouched before a
#: live worker enqueues it again (production: 90 s).
LEASE = 3.0
#: Delivery threads per worker.
THREADS = 8
#: The fake stamps a request once it has read it, a little after the client sent it: a
#: POST it records this soon after a kill was sent by the dead worker (the successor
#: cannot post a lead held by it before the lease has passed).
SENT_GRACE = 1.0


def test_sigkill_mid_delivery_a_new_worker_takes_over_and_none_is_created_twice(
    stacks: StackFactory,
) -> None:
    stack = stacks(latency_ms=200, LEADPIPE_LEASE_SECONDS=str(LEASE))
    # Given 320 leads, every one already recorded and validated (the ingest messages'
    # fate is the next case's): the host's delivery process starts only then, so the
    # case does not hang on how fast this machine validates against how fast it posts
    ids = [stack.send(valid_payload(), partner="acme") for _ in range(320)]
    old = stack.start_host("doomed", deliver_threads=THREADS, only=("cpu", "notify"))
    wait_until(
        lambda: stack.count_states(ids)["validated"] == len(ids), timeout=60, what="all validated"
    )
    old += stack.start_host("doomed", deliver_threads=THREADS, only=("io",))

    def mid_delivery() -> bool:
        # ... and the delivery threads busy: some delivered, 200+ waiting or mid-POST
        counts = stack.count_states(ids)
        waiting = counts["validated"] + counts["delivering"]
        return counts["delivered"] >= 2 * THREADS and waiting >= 200

    wait_until(mid_delivery, timeout=60, what="200+ leads in delivery")

    # When the host's workers are SIGKILLed, each whole process group, as in a crash
    killed_at = time.time()
    for worker in old:
        worker.kill()
    at_kill = stack.states(ids)
    in_flight = {i for i, s in at_kill.items() if s == "delivering"}
    unfinished = {i for i, s in at_kill.items() if s != "delivered"}
    # what the dead worker held: leads mid-POST, and deliveries it had reserved
    held = (in_flight | reserved_lead_ids(stack.redis, "leads.deliver")) & unfinished
    # ... and a new worker starts
    new = stack.start_host("successor", deliver_threads=THREADS)
    ready_at = time.time()

    # Then every lead is delivered ...
    stack.wait_for(ids, timeout=90)
    done_at = time.time()
    # ... the only leads posted twice are those whose POST reached myKaarma before the
    # kill and whose answer the dead worker never recorded (at most one per thread),
    # and myKaarma created each of them once (the same Idempotency-Key both times)
    seen = fake_times(stack.fake)
    posted_by_the_dead = {i for i in in_flight if i in seen and seen[i][0] < killed_at + SENT_GRACE}
    assert len(in_flight) <= THREADS
    ledger = stack.ledger(ids, ambiguous=posted_by_the_dead)
    assert ledger.count("delivered") == len(ids)
    # ... and well within the contract's two minutes: by the lease, not by the dead
    # consumer's 15 s heartbeat expiry that puts its held messages back
    taken_over = [seen[i][-1] - killed_at for i in held]  # the successor's POST is the last
    assert done_at - killed_at < 60
    assert max(taken_over) < 60
    assert all(w.process is not None and w.process.poll() is None for w in new)
    print(
        f"\nSIGKILL: {len(unfinished)} of {len(ids)} leads unfinished at the kill, "
        f"{len(held)} held by the dead worker ({len(in_flight)} mid-POST); successor ready "
        f"{ready_at - killed_at:.1f}s after the kill; the dead worker's leads posted again "
        f"{min(taken_over):.1f}-{max(taken_over):.1f}s after it (lease {LEASE:g}s); all "
        f"delivered {done_at - killed_at:.1f}s after it; {ledger.summary()}"
    )


def test_sigterm_in_a_rolling_deploy_loses_nothing_and_forgets_no_retry(
    stacks: StackFactory,
) -> None:
    retry_after = 3.0
    behaviours = {**BEHAVIOURS, "d-ok": "slow:200", "d-429": f"retry-after:{retry_after:g}"}
    stack = stacks(behaviours=behaviours, LEADPIPE_LEASE_SECONDS=str(LEASE))
    old = stack.start_host("old-release", deliver_threads=THREADS)
    # Given leads in delivery to a slow myKaarma, and leads parked in the retry
    # schedule by a 429 with Retry-After
    limited = [stack.send(valid_payload(), partner="ratelimited") for _ in range(30)]
    slow = [stack.send(valid_payload(), partner="acme") for _ in range(100)]
    retry_key = stack.store.keys.retry

    def mid_flow() -> bool:
        delivered = stack.count_states(slow)["delivered"]
        return stack.redis.zcard(retry_key) >= len(limited) and delivered >= THREADS

    wait_until(mid_flow, timeout=30, what="leads in delivery and in the retry schedule")

    # When the host's workers get SIGTERM (warm shutdown) ...
    asked_at = time.monotonic()
    for worker in old:
        worker.signal(signal.SIGTERM)
    codes = [w.process.wait(timeout=60) for w in old if w.process is not None]
    stopped_after = time.monotonic() - asked_at
    # Then they finish what they hold and exit cleanly, handing back what they reserved
    assert codes == [0] * len(old), [w.log_text()[-3000:] for w in old]
    at_stop = stack.count_states([*slow, *limited])
    holding = [i for i in [*slow, *limited] if stack.store.load(i, "deliveryToken")[0]]
    assert not holding, f"leads left mid-POST by a warm shutdown: {holding}"
    assert held_count(stack.redis) == 0, "reserved messages were not handed back"
    parked = stack.redis.zcard(retry_key)
    assert parked > 0

    # When the next release starts
    new = stack.start_host("new-release", deliver_threads=THREADS)
    # Then everything is delivered once, the parked retries included, each after
    # its Retry-After
    ledger = stack.ledger([*slow, *limited], timeout=60)
    assert ledger.count("delivered") == len(slow) + len(limited)
    for lead_id in limited:
        record = stack.record(lead_id)
        assert record is not None
        first, second = record["attempts"]
        assert (first["status"], second["status"]) == (429, 200)
        assert first["delaySeconds"] >= retry_after
        assert seconds(second["at"]) - seconds(first["at"]) >= retry_after
    assert all(w.process is not None and w.process.poll() is None for w in new)
    print(
        f"\nSIGTERM: warm shutdown took {stopped_after:.1f}s (exits {codes}); at the stop "
        f"{dict(at_stop)}, {parked} parked in the retry schedule, 0 messages left unacked; "
        f"{ledger.summary()}"
    )


def test_two_workers_on_the_same_queues_never_deliver_a_lead_twice(stacks: StackFactory) -> None:
    stack = stacks(latency_ms=20, LEADPIPE_LEASE_SECONDS=str(LEASE))
    # Given two workers on the same queues, as two hosts would run them
    host_a = stack.start_worker("host-a", concurrency=THREADS, wait=False)
    host_b = stack.start_worker("host-b", concurrency=THREADS, wait=False)
    for worker in (host_a, host_b):
        worker.wait_ready()
    # When 200 leads arrive, some of them retried (a flaky dealer: 503, 503, 200)
    plain = [stack.send(valid_payload(), partner="acme") for _ in range(160)]
    flaky = [stack.send(valid_payload(), partner="flaky") for _ in range(40)]
    # Then each is delivered exactly once
    ledger = stack.ledger([*plain, *flaky], timeout=60)
    assert ledger.count("delivered") == 200
    for lead_id in flaky:
        record = stack.record(lead_id)
        assert record is not None
        assert [a["status"] for a in record["attempts"]] == [503, 503, 200]
    # ... and both hosts did part of the work
    shares = [w.log_text().count(" delivered (attempt") for w in (host_a, host_b)]
    assert all(shares), shares
    print(f"\ntwo workers: deliveries per host {shares}; {ledger.summary()}")


def test_sigkill_with_ingest_messages_reserved_they_come_back_within_two_minutes(
    stacks: StackFactory,
) -> None:
    """Leads whose ingest message a dead worker had reserved but not recorded: nothing
    in Redis knows them, so only the broker brings them back (reliable fetch: the dead
    consumer's held lists, put back once its heartbeat has expired)."""
    stack = stacks(
        # a slow POST holds its thread 5 s: the late leads below must be reserved
        # within that, even on a loaded machine
        behaviours={**BEHAVIOURS, "d-ok": "slow:5000"},
        LEADPIPE_HTTP_TIMEOUT_SECONDS="6",  # longer than one slow POST
        LEADPIPE_LEASE_SECONDS="13",  # longer than two HTTP timeouts (settings refuse less)
    )
    # Given one worker on every queue (`celery -A tasks worker`), its 4 threads busy
    # posting to a slow myKaarma ...
    old = stack.start_worker("doomed", concurrency=4)
    blockers = [stack.send(valid_payload(), partner="acme") for _ in range(4)]
    wait_until(
        lambda: stack.count_states(blockers)["delivering"] == 4, timeout=30, what="busy threads"
    )
    # ... when more leads arrive: it reserves their ingest messages, with no thread free
    late = [stack.send(valid_payload(), partner="acme") for _ in range(10)]

    def reserved_unrecorded() -> set[str]:
        reserved = reserved_lead_ids(stack.redis, "leads.ingest")
        states = stack.states(reserved)
        return {i for i in reserved if states[i] is None}

    # (every message is then recorded or in a consumer's held list: reliable fetch
    # never has one only in memory, see the test below)
    wait_until(
        lambda: not stack.redis.llen("leads.ingest") and len(reserved_unrecorded()) == len(late),
        timeout=30,
        what="the late leads' ingest messages reserved",
    )
    # When the worker's process group is SIGKILLed
    killed_at = time.time()
    old.kill()
    orphans = reserved_unrecorded()
    assert orphans == set(late)
    stack.fake.configure(behaviours=dict(BEHAVIOURS))  # a fast myKaarma from now on
    stack.start_worker("successor", concurrency=4)

    # Then the orphans come back once the dead consumer's heartbeat has expired (15 s;
    # the reaper runs every 3 s), within the contract's two minutes, and all are
    # delivered once (the POSTs in flight at the kill are posted again, created once)
    ids = [*blockers, *late]
    stack.wait_for(ids, timeout=115)
    done_at = time.time()
    ledger = stack.ledger(ids, ambiguous=blockers)
    assert ledger.count("delivered") == len(ids)
    back = sorted(seconds(stack.record(i)["createdAt"]) - killed_at for i in orphans)  # type: ignore[index]
    assert done_at - killed_at < 120, "the contract's two minutes"
    absorbed = sum(w.log_text().count("not posted (skip, state delivered)") for w in stack.workers)
    print(
        f"\nSIGKILL with {len(orphans)} ingest messages reserved, unrecorded: recorded again "
        f"{back[0]:.0f}-{back[-1]:.0f}s after the kill (heartbeat TTL 15 s + reaper), "
        f"all delivered {done_at - killed_at:.0f}s after it; {absorbed} restored "
        f"deliveries skipped by the guard; {ledger.summary()}"
    )


def test_a_worker_killed_between_taking_a_message_and_recording_it_loses_nothing(
    stacks: StackFactory,
) -> None:
    """kombu#305 / celery#7950: with a plain pop, a consumer killed after BRPOP and
    before its HSET unacked had the message only in memory. Reliable fetch moves it
    atomically into the consumer's held list (tasks/fetch.py); the reaper of any live
    worker puts it back once the dead consumer's heartbeat expires."""
    stack = stacks()
    lead_id = stack.send(valid_payload(), partner="acme")
    # When a consumer takes the message exactly as leadpipe's channel does (the FETCH
    # script) and dies before its next command
    consumer = "killed-consumer"
    taken = fetch.run(
        stack.redis, fetch.FETCH_SHA, fetch.FETCH,
        fetch.alive_key(consumer), fetch.REGISTRY_KEY, fetch.sources_key(consumer),
        "leads.ingest",
        args=(consumer, 1000, fetch.held_prefix(consumer), "1"),
    )  # fmt: skip
    assert taken is not None and stack.redis.llen("leads.ingest") == 0
    # Then the message is in Redis, held by the dead consumer ...
    assert reserved_lead_ids(stack.redis, "leads.ingest") == {lead_id}
    # ... and a worker started afterwards takes it over and delivers the lead once
    killed_at = time.monotonic()
    stack.start_worker("successor", concurrency=4)
    ledger = stack.ledger([lead_id], timeout=60)
    assert ledger.count("delivered") == 1
    wait_until(lambda: held_count(stack.redis) == 0, timeout=30, what="held lists emptied")
    print(f"\nheld message of a dead consumer delivered {time.monotonic() - killed_at:.1f}s later")


@pytest.mark.slow
def test_worker_hosts_sigkilled_at_random_instants_and_restarted_lose_no_lead(
    stacks: StackFactory,
) -> None:
    """The operator's bad day of issue 13: the host's workers SIGKILLed at random
    instants 0.3-1.5 s apart, each time restarted (often killed again while still
    starting up), while 25 leads arrive per cycle. Every lead ends in exactly one
    terminal state, delivered once (before reliable fetch: 2-6 of 330 lost)."""
    stack = stacks(latency_ms=20, LEADPIPE_LEASE_SECONDS=str(LEASE))
    rng = random.Random()
    ids: list[str] = []
    kills = 8
    started = time.monotonic()
    for cycle in range(kills):
        host = [
            stack.start_worker(
                f"c{cycle}-{spec.name}", queues=spec.queues, pool=spec.pool,
                concurrency=spec.concurrency, wait=False,
            )
            for spec in default_specs(THREADS)
        ]  # fmt: skip
        if cycle % 2:  # every other time killed mid-flow, else while starting up
            for worker in host:
                worker.wait_ready()
        ids += [stack.send(valid_payload(), partner="acme") for _ in range(25)]
        time.sleep(rng.uniform(0.3, 1.5))
        for worker in host:
            worker.kill()
    killed_for = time.monotonic() - started
    held_by_the_dead = held_count(stack.redis)
    # When the host comes back for good
    stack.start_host("survivor", deliver_threads=THREADS)
    # Then every lead is delivered exactly once (a POST cut by a kill is posted again
    # with the same Idempotency-Key, and created once)
    seen = fake_times(stack.fake)
    ledger = stack.ledger(ids, timeout=150, ambiguous=[i for i in ids if i in seen])
    assert ledger.count("delivered") == len(ids)
    # ... and what the dead workers still held goes back (their heartbeats expire) and
    # changes nothing: the guards skip the duplicates
    wait_until(lambda: held_count(stack.redis) == 0, timeout=60, what="held lists emptied")
    wait_until(
        lambda: not sum(stack.redis.llen(q) for q in ("leads.ingest", "leads.enrich")),
        timeout=60,
        what="put-back messages consumed",
    )
    assert stack.ledger(ids, timeout=60, ambiguous=ids).count("delivered") == len(ids)
    print(
        f"\n{kills} kills over {killed_for:.0f}s, {held_by_the_dead} messages held by dead "
        f"workers after the last; {len(ids)} leads: all terminal "
        f"{time.monotonic() - started:.0f}s after the first start; {ledger.summary()}"
    )
