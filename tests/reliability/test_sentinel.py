"""A Sentinel-managed Redis for state and broker (CONTRACT section 10): a primary, a
replica and three sentinels on this machine (store/sentinel_cluster.py),
a real worker host, the fake myKaarma, and an upstream bare Celery client."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from store.sentinel import parse as parse_sentinel
from store.sentinel_cluster import SentinelCluster
from tasks.depths import redis_queue_depths
from tasks.fetch import held_count
from tests.reliability.conftest import StackFactory, wait_until
from tests.stack import TERMINAL, valid_payload

pytestmark = pytest.mark.reliability

LEASE = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    nodes = SentinelCluster(tmp_path / "sentinel")
    try:
        yield nodes.start()
    finally:
        nodes.stop()


class Sender(threading.Thread):
    """An upstream system sending `n` leads at a steady pace; a send that fails (the
    primary switching) is sent again under the same lead id, as a careful sender
    does, until it is accepted."""

    def __init__(self, send: object, n: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.send, self.n, self.every = send, n, every
        self.ids: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        for _ in range(self.n):
            lead_id = str(uuid.uuid4())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    self.send(valid_payload(), partner="acme", task_id=lead_id)  # type: ignore[operator]
                    break
                except Exception as exc:  # the switch: try again, same id
                    self.errors.append(type(exc).__name__)
                    time.sleep(0.1)
            self.ids.append(lead_id)
            time.sleep(self.every)


def careful_sender(cluster: SentinelCluster) -> Callable[..., str]:
    """An upstream sender that must never lose a lead (README "High availability"): each
    publish waits for a replica (`WAIT 1`, transport option `publish_wait_replicas`), so
    one that only a primary about to be demoted or killed took raises and is sent again.
    One sentinel URL, every sentinel in the options: with kombu's `;` alternatives the
    first connection error would switch it to kombu's own transport, which never waits."""
    url, options = parse_sentinel(cluster.url()).lead_transport_broker()
    upstream = Celery("careful", broker=url)
    upstream.conf.update(
        broker_transport="tasks.sentinel_transport:LeadSentinelTransport",
        broker_transport_options={**options, "publish_wait_replicas": 1, "publish_wait_ms": 500},
    )

    def send(payload: object, **kwargs: Any) -> str:
        task_id = kwargs.pop("task_id")
        upstream.send_task(
            "leads.ingest", args=[payload], kwargs=kwargs, task_id=task_id, queue="leads.ingest"
        )
        return str(task_id)

    return send


def test_sentinel_failover_during_traffic_loses_no_lead_and_delivers_none_twice(
    cluster: SentinelCluster, stacks: StackFactory
) -> None:
    """A switch of the primary (`SENTINEL FAILOVER`) under traffic. The sender is the
    careful one: a bare sender's publish that lands on the old primary after its replica
    was promoted is discarded when it is demoted (asynchronous replication; the SIGKILL
    case below shows both senders). One such loss in over a dozen runs here."""
    stack = stacks(redis_url=cluster.url(), latency_ms=20, LEADPIPE_LEASE_SECONDS=str(LEASE))
    host = stack.start_host("ha", deliver_threads=8)
    # Given a stream of leads flowing through a worker host
    sender = Sender(careful_sender(cluster), 300)
    sender.start()
    wait_until(lambda: len(sender.ids) >= 100, timeout=60, what="100 leads sent")
    # When the sentinels switch the primary in the middle of it
    old = cluster.primary_port()
    switched_at = time.monotonic()
    new = cluster.failover()
    switch_seconds = time.monotonic() - switched_at
    sender.join(timeout=120)
    assert not sender.is_alive()
    # Then every lead is delivered and created once by myKaarma, by workers that
    # reconnected by themselves to the new primary. (A POST whose recorded answer the
    # old primary took with it is posted again: same Idempotency-Key, created once.)
    ledger = stack.ledger(sender.ids, timeout=120, ambiguous=sender.ids)
    assert ledger.count("delivered") == len(sender.ids)
    wait_until(lambda: held_count(stack.redis) == 0, timeout=60, what="held lists emptied")
    assert all(w.process is not None and w.process.poll() is None for w in host)
    assert cluster.primary_port() == new != old
    print(
        f"\nSENTINEL FAILOVER {old} -> {new} in {switch_seconds:.1f}s mid-stream; sender "
        f"retried {len(sender.errors)} sends ({sorted(set(sender.errors))}); "
        f"{ledger.summary()}"
    )


def _settled(client: redis.Redis, states: Iterable[str | None]) -> bool:
    return (
        all(s in TERMINAL for s in states if s is not None)
        and not any(redis_queue_depths(client).values())
        and held_count(client) == 0
    )


@pytest.mark.slow
@pytest.mark.parametrize("sender_kind", ["bare", "wait"])
def test_sigkill_of_the_primary_loses_only_what_no_replica_had(
    cluster: SentinelCluster, stacks: StackFactory, sender_kind: str
) -> None:
    """Replication is asynchronous: a primary SIGKILLed mid-stream takes with it the
    writes its replica had not received yet. The pipeline's own writes are safe (a
    replica receives them in order, so an ack never outlives the stage it confirms:
    at worst a stage runs again). What can be lost is a publish the primary accepted
    just before dying: a bare sender's. A sender whose publish waits for a replica
    (`WAIT 1 <ms>`, transport option `publish_wait_replicas`) loses none."""
    stack = stacks(redis_url=cluster.url(), latency_ms=5, LEADPIPE_LEASE_SECONDS=str(LEASE))
    stack.start_host("ha", deliver_threads=8)
    send = careful_sender(cluster) if sender_kind == "wait" else stack.send
    sender = Sender(send, 400, every=0.002)
    sender.start()
    wait_until(lambda: len(sender.ids) >= 150, timeout=60, what="150 leads sent")
    # When the primary is SIGKILLed mid-stream
    killed = cluster.kill_primary()
    killed_at = time.monotonic()
    new = cluster._await_new_primary(killed, timeout=60)
    promoted_after = time.monotonic() - killed_at
    cluster.restart(killed)  # it comes back, as a replica (writes need one)
    sender.join(timeout=180)
    assert not sender.is_alive()
    # Then every lead a sender was told was accepted ends terminal, except those the
    # dead primary took with it: settled once every recorded lead is terminal and no
    # message waits in a queue or is held by a consumer (one without a record then
    # never gets one)
    wait_until(
        lambda: _settled(stack.redis, stack.states(sender.ids).values()),
        timeout=90,
        what="every recorded lead terminal, no message queued or held",
    )
    lost = [i for i, s in stack.states(sender.ids).items() if s is None]
    kept = [i for i in sender.ids if i not in lost]
    # A lead taken through every stage inside the replica's lag, then lost with the
    # primary, may have reached myKaarma: it was sent, so it is accounted for, and
    # myKaarma must still have created it at most once.
    stack.accounted.update(lost)
    ledger = stack.ledger(kept, timeout=60, ambiguous=kept, exact_counters=False)
    assert ledger.count("delivered") == len(kept)
    created = Counter(r["idempotencyKey"] for r in stack.fake.requests if r["created"])
    assert all(created[i] <= 1 for i in lost), {i: created[i] for i in lost}
    delivered_lost = sum(1 for i in lost if created[i])
    if sender_kind == "wait":
        assert not lost, f"a publish confirmed by a replica was lost: {lost}"
    print(
        f"\nSIGKILL of the primary ({sender_kind} sender): new primary {new} after "
        f"{promoted_after:.1f}s; {len(lost)} of {len(sender.ids)} accepted leads lost "
        f"({delivered_lost} delivered first); "
        f"sender retried {len(sender.errors)} sends; {ledger.summary()}"
    )
