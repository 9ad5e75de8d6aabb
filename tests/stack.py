"""A real leadpipe stack for integration and reliability tests: a Redis database,
the fake myKaarma on 127.0.0.1, a routing file, real `celery worker` processes, and
an upstream client that is a bare Celery app (it imports nothing of leadpipe)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from leadpipe.fake_mykaarma import FakeMyKaarma
from leadpipe.runner import WorkerProcess, WorkerSpec
from store.connection import redis_client
from store.records import LeadStore
from store.sentinel import is_sentinel
from store.sentinel import parse as parse_sentinel
from store.views import lead_view

USERNAME = "svc-leadpipe"
PASSWORD = "s3cret-Pa55word!"
ALL_QUEUES = ("leads.ingest", "leads.enrich", "leads.deliver", "celery")
TERMINAL = ("delivered", "dead", "duplicate")

ROUTING = """
[defaults]
source = "MMC"
lead_type = "SERVICE_DEMAND"
services = [{ code = "VSC", name = "Vehicle service contract" }]

[partners.acme]
dealer_uuid = "d-ok"
dealer_name = "Main Street Motors"
dealer_code = "MSM"

[partners.reject]
dealer_uuid = "d-reject"

[partners.notfound]
dealer_uuid = "d-404"

[partners.flaky]
dealer_uuid = "d-flaky"

[partners.down]
dealer_uuid = "d-down"

[partners.broken]
dealer_uuid = "d-500"

[partners.ratelimited]
dealer_uuid = "d-429"

[partners.slow]
dealer_uuid = "d-slow"

[partners.timeout]
dealer_uuid = "d-timeout"

[partners.dropper]
dealer_uuid = "d-drop"

[partners.nodealer]              # names no dealer, nor does [defaults]: its leads are unroutable
lead_type = "RECALL"

[states.TX]
dealer_uuid = "d-tx"
"""

BEHAVIOURS = {
    "d-reject": "reject",
    "d-404": "status:404",
    "d-flaky": "flaky:2",
    "d-down": "down",
    "d-500": "status:500",
    "d-429": "retry-after:0.3",
    "d-slow": "slow:200",
    "d-timeout": "slow:3000",
    "d-drop": "drop-after-store",
}


def valid_payload(**overrides: Any) -> dict[str, Any]:
    """A lead every rule accepts (VIN method), with a fresh transactionId."""
    payload: dict[str, Any] = {
        "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane.doe@example.com"},
        "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 42000},
        "transactionId": f"txn-{uuid.uuid4().hex[:12]}",
        "utmParameters": "utm_source=partner&utm_medium=cps&utm_campaign=lead-gen",
    }
    for key, value in overrides.items():
        payload[key] = value
    return payload


@dataclass
class Stack:
    """Everything a test needs to drive leads end to end and look at the result."""

    redis_url: str
    workdir: Path
    fake: FakeMyKaarma
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        if is_sentinel(self.redis_url):  # a bare Celery client of a Sentinel-managed Redis
            sentinel = parse_sentinel(self.redis_url)
            self.upstream = Celery("upstream", broker=sentinel.kombu_url())
            self.upstream.conf.update(broker_transport_options=sentinel.transport_options())
            self.redis = redis_client(self.redis_url)
        else:
            self.upstream = Celery("upstream", broker=self.redis_url)
            self.redis = redis.Redis.from_url(self.redis_url)
        self.upstream.conf.update(broker_connection_retry_on_startup=True)
        self.store = LeadStore(self.redis)

    # -- processes ------------------------------------------------------------------

    def start_worker(
        self,
        name: str = "w1",
        *,
        queues: Iterable[str] = ALL_QUEUES,
        pool: str = "threads",
        concurrency: int = 8,
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> WorkerProcess:
        spec = WorkerSpec(f"{name}-{uuid.uuid4().hex[:6]}", tuple(queues), pool, concurrency)
        worker = WorkerProcess(spec, {**self.env, **(env or {})}, self.workdir / f"{name}.log")
        worker.start()
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=20)
        self.workers.clear()
        self.upstream.close()
        self.redis.close()

    # -- upstream -------------------------------------------------------------------

    def send(
        self,
        payload: object,
        *,
        partner: str | None = None,
        task_id: str | None = None,
        queue: str | None = "leads.ingest",
        **kwargs: Any,
    ) -> str:
        """Send a lead exactly as an upstream system would."""
        if partner is not None:
            kwargs["partner"] = partner
        options: dict[str, Any] = {}
        if queue is not None:
            options["queue"] = queue
        result = self.upstream.send_task(
            "leads.ingest", args=[payload], kwargs=kwargs, task_id=task_id, **options
        )
        return str(result.id)

    # -- looking -------------------------------------------------------------------

    def record(self, lead_id: str) -> dict[str, Any] | None:
        return lead_view(self.store, lead_id)

    def wait_for(
        self, lead_ids: Iterable[str], *, states: Iterable[str] = TERMINAL, timeout: float = 30
    ) -> dict[str, dict[str, Any]]:
        """Poll until every lead is in one of `states`; fail with where they are."""
        wanted, ids = set(states), list(lead_ids)
        deadline = time.monotonic() + timeout
        found: dict[str, dict[str, Any]] = {}
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for lead_id in ids:
                pipe.hget(self.store.keys.lead(lead_id), "state")
            current = [s.decode() if s else None for s in pipe.execute()]
            if all(s in wanted for s in current):
                for lead_id in ids:
                    rec = self.record(lead_id)
                    assert rec is not None
                    found[lead_id] = rec
                return found
            if time.monotonic() > deadline:
                stuck = {i: s for i, s in zip(ids, current, strict=True) if s not in wanted}
                logs = "\n".join(w.log_text()[-3000:] for w in self.workers)
                raise AssertionError(f"leads not in {wanted} after {timeout}s: {stuck}\n{logs}")
            time.sleep(0.02)

    def assert_delivered_once(self, lead_ids: Iterable[str]) -> None:
        """The fake saw exactly one stored 2xx per lead: none lost, none twice."""
        stored = self.fake.stored_lead_ids()
        for lead_id in lead_ids:
            assert stored.get(lead_id) == 1, (lead_id, stored.get(lead_id))


def make_env(redis_url: str, fake_url: str, routing: Path, **extra: str) -> dict[str, str]:
    env = {
        "LEADPIPE_REDIS_URL": redis_url,
        "MYKAARMA_BASE_URL": fake_url,
        "MYKAARMA_USERNAME": USERNAME,
        "MYKAARMA_PASSWORD": PASSWORD,
        "LEADPIPE_ROUTING_FILE": str(routing),
        "LEADPIPE_RETRY_MAX_ATTEMPTS": "4",
        "LEADPIPE_RETRY_BASE_SECONDS": "0.05",
        "LEADPIPE_RETRY_MAX_DELAY_SECONDS": "0.5",
        "LEADPIPE_HTTP_TIMEOUT_SECONDS": "1",
        "LEADPIPE_LEASE_SECONDS": "5",
        # These suites test one lead's retries against dealers that always fail; a
        # breaker would hold their later leads. Dealer breakers have their own suite
        # (test_dealer_health.py), which sets the real threshold.
        "LEADPIPE_BREAKER_FAILURES": "1000000",
    }
    env.update(extra)
    return env
