"""The legs of the benchmark, each against workers that are already running and warm.

Every throughput leg pre-loads its batch (see `bench.load`) and releases it at once;
its rate is taken over the steady part of the drain (10% to 90% done). The pipeline
counts leads that reached `delivered` in the store's state counters; the bare Celery
legs count messages no longer queued nor held unacknowledged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from bench import load, measure
from bench.baseline_app import CHAIN_STEPS, NAIVE_QUEUE
from bench.stack import PASSWORD, USERNAME, Stack
from leadpipe.runner import WorkerProcess
from pipeline.record_fields import RecordField
from store.keys import Keys
from tasks.queues import DELIVER_QUEUE, ENRICH_QUEUE, INGEST_QUEUE

PIPELINE_QUEUES = (INGEST_QUEUE, ENRICH_QUEUE, DELIVER_QUEUE)
#: The database where template messages are captured (never consumed).
SCRATCH_DB = 15
#: How often queue depths are sampled to see which stage holds the backlog, seconds.
DEPTH_SECONDS = 0.5


@dataclass
class Target:
    """One set of workers and how to feed and count it."""

    name: str
    stack: Stack
    workers: list[WorkerProcess]
    client: redis.Redis
    queue: str
    template: bytes
    queues: Sequence[str] = ()
    counts_delivered: bool = False
    handled: int = 0  # items released to these workers so far

    def run(
        self, n: int, timeout: float, *, mix: Sequence[bytes] = (), counted: int | None = None
    ) -> dict[str, Any]:
        """Release `n` items and watch them drain; the steady-state figures. With `mix`
        the items cycle through more templates, and only `counted` of them (those that
        reach `delivered`) make the figures."""
        staged = load.preload(self.client, self.queue, self.template, n, mix=mix)
        n_done = counted if counted is not None else n
        if self.counts_delivered:
            progress = measure.delivered_counter(self.client)
        else:
            progress = measure.drained_counter(self.client, self.queues, n)
        depths = _DepthWatcher(self.client, self.queues)
        staged.release()
        depths.start()
        try:
            drained = measure.drain(
                n_done,
                progress,
                self.stack.watched(self.stack.workers),
                timeout=timeout,
                what=self.name,
            )
        finally:
            depths.stop()
        self.handled += n
        steady = drained.steady()
        steady["n"] = n_done
        steady["backlog"] = depths.mean()
        return steady


class _DepthWatcher(threading.Thread):
    """Mean length of each queue while a batch drains: the stage holding the backlog is
    the one that limits the rate."""

    def __init__(self, client: redis.Redis, queues: Sequence[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.queues = client, list(queues)
        self.samples: list[list[int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(DEPTH_SECONDS):
            pipe = self.client.pipeline(transaction=False)
            for queue in self.queues:
                pipe.llen(queue)
            self.samples.append([int(v) for v in pipe.execute()])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def mean(self) -> dict[str, float]:
        if not self.samples:
            return {}
        columns = zip(*self.samples, strict=True)
        return {
            q: round(sum(c) / len(self.samples), 1)
            for q, c in zip(self.queues, columns, strict=True)
        }


@dataclass
class LatencyRun:
    """Leads sent one by one at a steady rate; each one's time from `send_task` to the
    worker holding myKaarma's 2xx (the record's `deliveredAt`)."""

    offered_per_s: float
    lead_ids: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    cpu_percent: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        values = self.latencies_ms
        return {
            "offered_per_s": round(self.offered_per_s, 1),
            "n": len(values),
            "p50_ms": round(measure.percentile(values, 50), 1),
            "p99_ms": round(measure.percentile(values, 99), 1),
            "max_ms": round(max(values), 1),
            "cpu_percent": self.cpu_percent,
        }


def latency_run(
    target: Target, broker_url: str, rate: float, seconds: float, timeout: float
) -> LatencyRun:
    """Offer `rate` leads per second for `seconds` from a bare Celery client."""
    client, keys = target.client, Keys()
    upstream = load.upstream(broker_url)
    groups = target.stack.watched(target.stack.workers)
    try:
        progress = measure.delivered_counter(client)
        before = measure.cpu_seconds(groups)
        started = time.time()
        sent = load.paced_send(upstream, rate, seconds)
        finished = time.time()
        after = measure.cpu_seconds(groups)
        measure.drain(len(sent), progress, {}, timeout=timeout, what="latency")
    finally:
        upstream.close()
    target.handled += len(sent)
    pipe = client.pipeline(transaction=False)
    for lead_id, _ in sent:
        pipe.hget(keys.lead(lead_id), RecordField.DELIVERED_AT)
    delivered = pipe.execute()
    result = LatencyRun(rate, [lead_id for lead_id, _ in sent])
    for (lead_id, stamp), at in zip(sent, delivered, strict=True):
        if at is None:
            raise RuntimeError(f"latency lead {lead_id} was not delivered")
        result.latencies_ms.append((float(at) - stamp) * 1000)
    span = max(finished - started, 1e-9)
    result.cpu_percent = {k: round(100 * (after[k] - before[k]) / span, 1) for k in after}
    return result


def chain_target(stack: Stack, workers: list[WorkerProcess], db: int) -> Target:
    return Target(
        "baseline",
        stack,
        workers,
        stack.redis(db),
        CHAIN_STEPS[0][1],
        load.chain_template(stack.redis_url(SCRATCH_DB)),
        queues=[queue for _, queue in CHAIN_STEPS],
    )


def pipeline_target(stack: Stack, workers: list[WorkerProcess], db: int) -> Target:
    return Target(
        "pipeline",
        stack,
        workers,
        stack.redis(db),
        PIPELINE_QUEUES[0],
        load.pipeline_template(stack.redis_url(SCRATCH_DB)),
        queues=PIPELINE_QUEUES,
        counts_delivered=True,
    )


def naive_target(
    stack: Stack, workers: list[WorkerProcess], db: int, request: dict[str, Any], dealer: str
) -> Target:
    url = f"{stack.fake_url}/leads/v2/dealer/{dealer}"
    template = load.naive_template(stack.redis_url(SCRATCH_DB), url, request, [USERNAME, PASSWORD])
    return Target(
        "naive", stack, workers, stack.redis(db), NAIVE_QUEUE, template, queues=[NAIVE_QUEUE]
    )
