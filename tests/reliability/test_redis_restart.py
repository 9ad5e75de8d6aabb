"""Redis killed and restarted mid-flow (issue 6, case 3).

On a redis-server of this test's own (append-only), never the shared one: SIGKILL it
while leads are in delivery, leave the workers without Redis for a while, restart it
on the same port and directory. The workers reconnect by themselves, and the sweeper
re-enqueues what the lost connections dropped: every lead is delivered, once.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis

from store.embedded import start_redis_server
from store.records import LeadStore
from tests.reliability.conftest import StackFactory, fake_times, wait_until
from tests.stack import valid_payload

pytestmark = pytest.mark.reliability

#: How long the workers are left without Redis, seconds (the condition, not a wait).
DOWNTIME = 3.0
LEASE = 3.0


def test_redis_killed_and_restarted_with_append_only_loses_nothing(stacks: StackFactory) -> None:
    server, directory, port = stacks.redis_server(name="redis-aof")
    url = f"redis://127.0.0.1:{port}/0"
    stack = stacks(redis_url=url, latency_ms=100, LEADPIPE_LEASE_SECONDS=str(LEASE))
    # Given leads recorded and in delivery: the delivery process starts once every lead
    # is validated, so the kill finds most of them unfinished on a machine of any speed
    ids = [stack.send(valid_payload(), partner="acme") for _ in range(150)]
    workers = stack.start_host("survivor", only=("cpu", "notify"))
    wait_until(
        lambda: stack.count_states(ids)["validated"] == len(ids), timeout=60, what="all validated"
    )
    workers += stack.start_host("survivor", only=("io",))
    pids = [w.pid for w in workers]
    wait_until(
        lambda: stack.count_states(ids)["delivered"] >= 10, timeout=30, what="leads in delivery"
    )

    # When Redis is SIGKILLed, stays down a while, and comes back on the same port and
    # directory (its append-only file is all it has)
    before_states = stack.states(ids)
    before = Counter(before_states.values())
    assert before["delivered"] < len(ids) // 2, before  # the kill is mid-flow
    killed_at = time.time()
    server.kill()
    server.wait(timeout=10)
    stack.redis.close()
    time.sleep(DOWNTIME)  # the outage itself; nothing is waited for here
    restarted = start_redis_server(directory, port, appendonly=True, daemonize=False)
    assert restarted is not None
    stacks.servers.append(restarted)
    up_at = time.time()
    stack.redis = redis.Redis.from_url(url)
    stack.store = LeadStore(stack.redis)

    # Then the same worker processes carry on by themselves and every lead is delivered;
    # only a POST in flight at the kill could be repeated: its 2xx is recorded once Redis
    # is back (the store client retries for ~15 s), unless the sweeper's short lease here
    # expired first and another thread posted the lead again
    stack.wait_for(ids, timeout=120)
    done_at = time.time()
    seen = fake_times(stack.fake)
    in_flight = {
        i
        for i, state in before_states.items()
        if state in ("validated", "delivering") and i in seen and seen[i][0] < killed_at + 1
    }
    ledger = stack.ledger(ids, ambiguous=in_flight)
    assert ledger.count("delivered") == len(ids)
    assert [w.pid for w in workers] == pids
    assert all(w.process is not None and w.process.poll() is None for w in workers)
    logs = "".join(w.log_text() for w in workers)
    assert "Unrecoverable error" not in logs
    print(
        f"\nRedis SIGKILL: at the kill {dict(before)}; down {up_at - killed_at:.1f}s; "
        f"all delivered {done_at - up_at:.1f}s after the restart; "
        f"{len(in_flight)} leads possibly mid-POST at the kill; {ledger.summary()}; "
        "same worker pids"
    )
