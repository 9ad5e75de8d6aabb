"""Dealer health end to end (CONTRACT section 8): real workers, a real Redis, the fake
myKaarma with a per-dealer forced status, operator commands as real processes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from leadpipe.metrics import LeadpipeCollector
from leadpipe.runner import WorkerProcess
from tests.integration.conftest import running_stack
from tests.integration.procs import LEADPIPE, clean_env, running
from tests.stack import Stack, valid_payload

pytestmark = pytest.mark.integration

ROUTING = """
[defaults]
source = "MMC"
lead_type = "SERVICE_DEMAND"
services = [{ code = "VSC", name = "Vehicle service contract" }]

[partners.outage]
dealer_uuid = "d-outage"

[partners.paused]
dealer_uuid = "d-paused"

[partners.rated]
dealer_uuid = "d-rated"

[partners.old]
dealer_uuid = "d-old"

[partners.p1]
dealer_uuid = "d-p1"

[partners.p2]
dealer_uuid = "d-p2"

[partners.p3]
dealer_uuid = "d-p3"

[dealers."d-rated"]
max_per_second = 4
"""

#: The real breaker, with time scaled down: probes after 0.5 s, then 1 s, capped at 2 s.
BREAKER_ENV = {
    "LEADPIPE_BREAKER_FAILURES": "5",
    "LEADPIPE_BREAKER_COOLDOWN_SECONDS": "0.5",
    "LEADPIPE_RETRY_MAX_DELAY_SECONDS": "2",
    "LEADPIPE_RETRY_MAX_ATTEMPTS": "4",
}


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(
        redis_url, tmp_path_factory.mktemp("dealers"), ROUTING, behaviours=None, **BREAKER_ENV
    ) as s:
        yield s


@pytest.fixture
def worker(stack: Stack) -> Iterator[Callable[..., WorkerProcess]]:
    """Start a worker with extra settings; stopped at the end of the test."""

    def start(**env: str) -> WorkerProcess:
        return stack.start_worker("dealers", concurrency=16, env=env)

    yield start
    for w in stack.workers:
        w.stop(timeout=20)
    stack.workers.clear()
    stack.fake.configure(behaviours={})


def leadpipe(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`leadpipe ARGS` as a real process, as an operator runs it."""
    env = clean_env(**stack.env)
    return subprocess.run(
        [LEADPIPE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def dealer(stack: Stack, uuid: str) -> dict[str, Any]:
    result = leadpipe(stack, "dealers", "--json")
    assert result.returncode == 0, result.stderr
    views: dict[str, dict[str, Any]] = {d["dealerUuid"]: d for d in json.loads(result.stdout)}
    return views[uuid]


def states(stack: Stack, ids: list[str]) -> list[str | None]:
    pipe = stack.redis.pipeline(transaction=False)
    for lead_id in ids:
        pipe.hget(stack.store.keys.lead(lead_id), "state")
    return [s.decode() if s else None for s in pipe.execute()]


def poll(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        time.sleep(0.05)


def metrics(stack: Stack) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LeadpipeCollector(stack.store))
    return generate_latest(registry).decode()


def posts(stack: Stack, uuid: str) -> list[dict[str, Any]]:
    return [r for r in stack.fake.requests if r["dealerUuid"] == uuid]


def test_an_outage_holds_leads_and_a_probe_brings_them_back(
    stack: Stack, worker: Callable[..., WorkerProcess]
) -> None:
    # Given a worker, and a dealer whose endpoint answers 503 for 10 seconds
    worker()
    stack.fake.configure(behaviours={"d-outage": "status:503"})
    started = time.monotonic()
    ids = [stack.send(valid_payload(), partner="outage") for _ in range(20)]
    # Then during the outage no lead dies: they are held in Redis, not retried to death
    while time.monotonic() - started < 10:
        assert "dead" not in states(stack, ids)
        time.sleep(0.2)
    view = dealer(stack, "d-outage")
    assert view["breaker"] in ("open", "half_open") and view["reason"] == "failures"
    assert view["held"] >= 15
    during = len(posts(stack, "d-outage"))
    # When the dealer answers again
    stack.fake.configure(behaviours={})
    records = stack.wait_for(ids, timeout=30)
    # Then every lead is delivered exactly once, after far fewer POSTs than 20 x 4
    assert {r["state"] for r in records.values()} == {"delivered"}
    stack.assert_delivered_once(ids)
    assert during < 40, during
    assert all(len(r["attempts"]) <= 4 for r in records.values())
    assert dealer(stack, "d-outage")["breaker"] == "closed"
    counters = json.loads(leadpipe(stack, "stats", "--json").stdout)["counters"]
    assert counters.get("probes.transient", 0) >= 1
    assert counters.get("probes.delivered", 0) >= 1
    assert 'leadpipe_breaker_probes_total{outcome="delivered"}' in metrics(stack)


def test_pause_holds_drain_dead_letters_and_replay_delivers(
    stack: Stack, worker: Callable[..., WorkerProcess]
) -> None:
    worker()
    # Given a paused dealer (pausing twice is the same as once)
    first = leadpipe(stack, "dealers", "pause", "d-paused", "--reason", "dealer migrating")
    assert first.returncode == 0, first.stderr
    again = leadpipe(stack, "dealers", "pause", "d-paused", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    # When five leads arrive for it
    ids = [stack.send(valid_payload(), partner="paused") for _ in range(5)]
    poll(lambda: states(stack, ids) == ["held"] * 5, timeout=30, what="held")
    # Then none is POSTed, and status says why each waits
    assert posts(stack, "d-paused") == []
    status = leadpipe(stack, "status", ids[0], "--json")
    held = json.loads(status.stdout)["held"]
    assert (held["reason"], held["breaker"], held["note"]) == (
        "operator",
        "paused",
        "dealer migrating",
    )
    assert "held (operator)" in leadpipe(stack, "status", ids[0]).stdout
    assert dealer(stack, "d-paused")["held"] == 5
    # And the metrics show the paused breaker and its held leads
    scrape = metrics(stack)
    assert 'leadpipe_dealer_breaker{dealer="d-paused",state="paused"} 1.0' in scrape
    assert 'leadpipe_dealer_held_leads{dealer="d-paused"} 5.0' in scrape
    # When an operator drains the dealer
    drained = leadpipe(stack, "dealers", "drain", "d-paused", "--json")
    assert json.loads(drained.stdout) == {"dealerUuid": "d-paused", "drained": 5}
    dlq = json.loads(leadpipe(stack, "dlq", "list", "--reason", "drained", "--json").stdout)
    assert sorted(e["leadId"] for e in dlq) == sorted(ids)
    # When the dealer is resumed and the drained leads replayed
    assert leadpipe(stack, "dealers", "resume", "d-paused").returncode == 0
    replay = leadpipe(stack, "dlq", "replay", "--all", "--reason", "drained")
    assert replay.returncode == 0, replay.stderr
    # Then each is delivered exactly once
    records = stack.wait_for(ids, timeout=30)
    assert {r["state"] for r in records.values()} == {"delivered"}
    stack.assert_delivered_once(ids)


def test_unknown_dealer_is_refused_with_the_known_ones(stack: Stack) -> None:
    result = leadpipe(stack, "dealers", "pause", "d-nope")
    assert result.returncode == 1
    assert "unknown dealer 'd-nope'" in result.stderr
    assert "d-paused" in result.stderr and "d-rated" in result.stderr


def test_a_lead_not_delivered_in_time_expires_and_replays(
    stack: Stack, worker: Callable[..., WorkerProcess]
) -> None:
    # Given leads may be 1.8 seconds old, and a paused dealer
    worker(LEADPIPE_MAX_LEAD_AGE_HOURS="0.0005")
    assert leadpipe(stack, "dealers", "pause", "d-old").returncode == 0
    lead_id = stack.send(valid_payload(), partner="old")
    poll(lambda: states(stack, [lead_id]) == ["held"], timeout=30, what="held")
    # Then it ends dead, reason expired, never POSTed
    record = stack.wait_for([lead_id], timeout=30)[lead_id]
    assert (record["state"], record["reason"]) == ("dead", "expired")
    assert posts(stack, "d-old") == []
    # And a replay (the dealer back) delivers it: the age counts from the replay
    assert leadpipe(stack, "dealers", "resume", "d-old").returncode == 0
    assert leadpipe(stack, "dlq", "replay", lead_id).returncode == 0
    assert stack.wait_for([lead_id], timeout=30)[lead_id]["state"] == "delivered"


def test_a_dealer_rate_is_shared_by_two_worker_hosts(stack: Stack, tmp_path: Path) -> None:
    # Given two `leadpipe worker` hosts (each its own LEADPIPE_HOME), one Redis
    hosts = []
    for name in ("host-a", "host-b"):
        env = clean_env(**stack.env, LEADPIPE_HOME=str(tmp_path / name / ".leadpipe"))
        hosts.append(running(["worker", "--json", "--concurrency", "8"], env, tmp_path / name))
    with hosts[0] as a, hosts[1] as b:
        a.first_line(timeout=60)
        b.first_line(timeout=60)
        # When 24 leads arrive at once for a dealer limited to 4 a second
        ids = [stack.send(valid_payload(), partner="rated") for _ in range(24)]
        records = stack.wait_for(ids, timeout=60)
    assert {r["state"] for r in records.values()} == {"delivered"}
    stack.assert_delivered_once(ids)
    # Then delivery took at least 5 seconds, never more than 8 in any one second
    times = sorted(r["time"] for r in posts(stack, "d-rated"))
    assert len(times) == 24
    assert times[-1] - times[0] >= 5.0, times[-1] - times[0]
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 8, busiest
    assert all(len(r["attempts"]) == 1 for r in records.values())


def test_a_401_storm_holds_every_dealer_and_recovers_without_restart(
    stack: Stack, worker: Callable[..., WorkerProcess]
) -> None:
    worker()
    # Given myKaarma refuses our credentials for every dealer
    stack.fake.configure(behaviours={"*": "status:401"})
    dealers = ("d-p1", "d-p2", "d-p3")
    ids = [stack.send(valid_payload(), partner=p) for p in ("p1", "p2", "p3") for _ in range(4)]
    # Then no lead dies; every dealer shows `unauthorized`
    poll(
        lambda: all(s == "held" for s in states(stack, ids)),
        timeout=30,
        what="all held",
    )
    views = [dealer(stack, d) for d in dealers]
    assert all(v["reason"] == "unauthorized" for v in views), views
    assert all(v["breaker"] in ("open", "half_open") for v in views), views
    # When the credentials work again (no restart)
    stack.fake.configure(behaviours={})
    # Then every lead is delivered exactly once
    records = stack.wait_for(ids, timeout=30)
    assert {r["state"] for r in records.values()} == {"delivered"}
    stack.assert_delivered_once(ids)
    assert all(dealer(stack, d)["breaker"] == "closed" for d in dealers)
