"""RabbitMQ as production runs it (CONTRACT section 10, README "RabbitMQ in
production"): quorum queues, publisher confirms, AMQP heartbeats. Each test gets a
virtual host of its own (created and deleted through the management API), so the
shared broker's queues are never touched.

Skipped, with the reason, when RabbitMQ does not answer on 127.0.0.1:5672 (or its
management API on 15672); under CI=true that is a failure instead."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from celery import Celery
from kombu.connection import Connection

from tasks.celery import AMQP_HEARTBEAT_SECONDS
from tests.reliability.conftest import StackFactory, wait_until
from tests.stack import BEHAVIOURS, valid_payload

pytestmark = pytest.mark.reliability

API = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")


def _api_answers() -> bool:
    try:
        return requests.get(f"{API}/overview", auth=AUTH, timeout=2).ok
    except requests.RequestException:
        return False


@pytest.fixture
def vhost() -> Iterator[str]:
    if not _api_answers():
        reason = "RabbitMQ (127.0.0.1:5672, management API on 15672) does not answer"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"leadpipe-test-{uuid.uuid4().hex[:10]}"
    requests.put(f"{API}/vhosts/{name}", auth=AUTH, timeout=10).raise_for_status()
    requests.put(
        f"{API}/permissions/{name}/guest",
        json={"configure": ".*", "write": ".*", "read": ".*"},
        auth=AUTH,
        timeout=10,
    ).raise_for_status()
    try:
        yield name
    finally:
        requests.delete(f"{API}/vhosts/{name}", auth=AUTH, timeout=30)


def _quorum_stack(stacks: StackFactory, vhost: str, **env: Any) -> Any:
    broker = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    stack = stacks(LEADPIPE_BROKER_URL=broker, LEADPIPE_AMQP_QUEUE_TYPE="quorum", **env)
    stack.upstream.close()
    # The upstream's bare Celery client, as the README tells senders to configure it
    stack.upstream = Celery("upstream", broker=broker)
    stack.upstream.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue_type="quorum",
        task_create_missing_queue_type="quorum",
        broker_transport_options={"confirm_publish": True},
    )
    return stack


def _queue_stats(vhost: str, name: str) -> dict[str, Any]:
    reply = requests.get(f"{API}/queues/{vhost}/{name}", auth=AUTH, timeout=10)
    reply.raise_for_status()
    stats: dict[str, Any] = reply.json()
    stats.setdefault("messages_unacknowledged", 0)
    return stats


def _ready_messages(broker: str, name: str) -> int:
    """Messages ready in a queue (a passive declare: the broker's count at this instant,
    unlike the management API's, which is sampled every few seconds). Sent with
    publisher confirms and no longer ready, a message is reserved by a consumer."""
    with Connection(broker) as conn:
        ok = conn.default_channel.queue_declare(name, passive=True)
        return int(ok.message_count)


def _queue_type(vhost: str, name: str) -> str:
    return str(_queue_stats(vhost, name)["type"])


def test_the_pipeline_runs_on_quorum_queues(stacks: StackFactory, vhost: str) -> None:
    stack = _quorum_stack(stacks, vhost, LEADPIPE_LEASE_SECONDS="5")
    stack.start_host("quorum")
    valid = [stack.send(valid_payload(), partner="acme") for _ in range(20)]
    flaky = [stack.send(valid_payload(), partner="flaky") for _ in range(3)]
    rejected = [stack.send(valid_payload(), partner="reject") for _ in range(2)]
    ledger = stack.ledger([*valid, *flaky, *rejected], timeout=90)
    assert ledger.count("delivered") == len(valid) + len(flaky)
    assert {ledger.reasons[i] for i in rejected} == {"rejected"}
    for name in ("leads.ingest", "leads.enrich", "leads.deliver", "celery"):
        assert _queue_type(vhost, name) == "quorum", name
    print(f"\nquorum queues: {ledger.summary()}")


@pytest.mark.slow
def test_a_silently_dead_host_is_taken_over_by_its_heartbeat(
    stacks: StackFactory, vhost: str
) -> None:
    """A host that stops answering without closing anything (SIGSTOP: a frozen VM, a
    cut cable): RabbitMQ notices the missing heartbeats and hands its unacknowledged
    messages to a live worker, well within the contract's two minutes."""
    # A lease just past the start-up rule (2 HTTP timeouts): the frozen host's in-flight
    # leads come back by the sweeper about when its reserved messages do
    stack = _quorum_stack(
        stacks, vhost, LEADPIPE_LEASE_SECONDS="30", LEADPIPE_HTTP_TIMEOUT_SECONDS="14"
    )
    stack.fake.configure(behaviours={**BEHAVIOURS, "d-ok": "slow:25000"})
    frozen = stack.start_worker("frozen", concurrency=4)
    # Given a host whose 4 threads are busy posting to a slow myKaarma ...
    blockers = [stack.send(valid_payload(), partner="acme") for _ in range(4)]
    wait_until(
        lambda: stack.count_states(blockers)["delivering"] == 4, timeout=30, what="busy threads"
    )
    # ... which then reserves more ingest messages, with no thread free to record them:
    # only the broker knows these leads
    late = [stack.send(valid_payload(), partner="acme") for _ in range(10)]
    wait_until(
        lambda: _ready_messages(stack.env["LEADPIPE_BROKER_URL"], "leads.ingest") == 0,
        timeout=30,
        what="the late ingest messages reserved (none ready in their queue)",
    )
    assert not any(stack.states(late).values()), "recorded: not held by the broker alone"
    # When the host freezes (no FIN, no RST: its TCP connection stays open)
    stopped_at = time.monotonic()
    frozen.signal(signal.SIGSTOP)
    stack.fake.configure(behaviours=dict(BEHAVIOURS))
    stack.start_worker("live", concurrency=4)
    # Then RabbitMQ, missing its heartbeats, hands the reserved messages to the live
    # worker: every lead is delivered, each created once by myKaarma
    wait_until(lambda: all(stack.states(late).values()), timeout=150, what="late leads back")
    took = time.monotonic() - stopped_at
    ids = [*blockers, *late]
    ledger = stack.ledger(ids, timeout=60, ambiguous=ids)
    assert ledger.count("delivered") == len(ids)
    assert took < 120, "the contract's two minutes"
    print(
        f"\nsilently dead host (SIGSTOP): its {len(late)} reserved ingest messages taken "
        f"over {took:.0f}s after it froze (AMQP heartbeat {AMQP_HEARTBEAT_SECONDS}s); "
        f"{ledger.summary()}"
    )
