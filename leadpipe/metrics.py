"""Prometheus metrics Flower lacks, read from Redis at scrape time.

Nothing is counted in worker memory: the transition scripts already keep per-state
counts, attempt counters and the latency histogram in Redis (`store.keys`), so one
collector reading them on each scrape sees every worker on every host, survives
worker restarts, and needs no multiprocess mode.

    leadpipe_queue_depth{queue}                  messages waiting (Redis broker only)
    leadpipe_leads{state}                        leads in each state
    leadpipe_dead_letters{reason}                dead letters by reason
    leadpipe_delivery_attempts_total{outcome}    POSTs to myKaarma: delivered, rejected, transient
    leadpipe_delivery_latency_seconds            histogram, received -> myKaarma's 2xx
    leadpipe_scheduled_retries                   leads waiting for their next attempt
    leadpipe_unreadable_messages_total           messages dropped for want of a readable id
    leadpipe_redis_up                            1 when the scrape could read Redis
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from config import Settings
from pipeline.states import DeadReason, LeadState
from store.connection import broker_url, redis_client, redis_url
from store.records import LATENCY_BUCKETS, LeadStore, latency_bucket
from store.views import stats_view
from tasks.queues import ALL_QUEUES

log = logging.getLogger(__name__)

#: Port of `leadpipe metrics` when none is given.
DEFAULT_PORT = 9808
#: Attempt outcomes always exported, even at zero, so rate() has a series from the start.
ATTEMPT_OUTCOMES = ("delivered", "rejected", "transient")
#: Counter field of messages dropped without a readable id (tasks.consumer).
UNREADABLE_COUNTER = "messages.unreadable"
#: kombu's Redis transport keeps priority > 0 messages in sibling lists: `<queue>\x06\x16<n>`.
PRIORITY_SEPARATOR = "\x06\x16"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def queue_keys(queue: str) -> list[str]:
    """Every Redis list kombu may hold `queue`'s messages in (one per priority step)."""
    return [queue if pri == 0 else f"{queue}{PRIORITY_SEPARATOR}{pri}" for pri in PRIORITY_STEPS]


def queue_depths(client: redis.Redis, queues: Iterable[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each queue of a Redis broker (LLEN; unacked ones not counted)."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in queue_keys(queue):
            pipe.llen(key)
    lengths = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {q: sum(lengths[i * steps : (i + 1) * steps]) for i, q in enumerate(names)}


def latency_histogram(fields: Mapping[str, str]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets and the sum, from the non-cumulative latency hash
    (`le:<bound>` and `le:+Inf` counts, `sum` in seconds)."""
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound in LATENCY_BUCKETS:
        total += int(fields.get(latency_bucket(bound), 0))
        buckets.append((floatToGoString(bound), total))
    total += int(fields.get(latency_bucket(float("inf")), 0))
    buckets.append(("+Inf", total))
    return buckets, float(fields.get("sum", 0.0))


def _decode(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (
            v.decode() if isinstance(v, bytes) else str(v)
        )
        for k, v in raw.items()
    }


class LeadpipeCollector(Collector):
    """Reads leadpipe's counters from Redis on every scrape."""

    def __init__(self, store: LeadStore, broker: redis.Redis | None = None) -> None:
        self.store = store
        self.broker = broker

    def describe(self) -> list[Metric]:
        return []  # nothing to read at registration; names come with each scrape

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("leadpipe_redis_up", "1 when this scrape could read Redis.")
        try:
            stats = stats_view(self.store)
            latency = _decode(self.store.redis.hgetall(self.store.keys.latency))
            depths = queue_depths(self.broker) if self.broker is not None else None
        except redis.RedisError as exc:
            log.warning("metrics: Redis unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._families(stats, latency, depths)

    @staticmethod
    def _families(
        stats: Mapping[str, Any], latency: Mapping[str, str], depths: Mapping[str, int] | None
    ) -> Iterator[Metric]:
        if depths is not None:
            queue = GaugeMetricFamily(
                "leadpipe_queue_depth", "Messages waiting in a queue.", labels=["queue"]
            )
            for name, depth in depths.items():
                queue.add_metric([name], depth)
            yield queue
        leads = GaugeMetricFamily("leadpipe_leads", "Leads in each state.", labels=["state"])
        for state in LeadState:
            leads.add_metric([state.value], stats["states"].get(state.value, 0))
        yield leads
        dead = GaugeMetricFamily(
            "leadpipe_dead_letters", "Dead letters by reason.", labels=["reason"]
        )
        for reason in DeadReason:
            dead.add_metric([reason.value], stats["deadLetters"].get(reason.value, 0))
        yield dead
        counters: Mapping[str, int] = stats["counters"]
        outcomes = {o: 0 for o in ATTEMPT_OUTCOMES}
        for name, value in counters.items():
            if name.startswith("attempts."):
                outcomes[name.removeprefix("attempts.")] = value
        attempts = CounterMetricFamily(
            "leadpipe_delivery_attempts",
            "Delivery attempts (POSTs to myKaarma) by outcome.",
            labels=["outcome"],
        )
        for outcome, value in outcomes.items():
            attempts.add_metric([outcome], value)
        yield attempts
        buckets, total = latency_histogram(latency)
        yield HistogramMetricFamily(
            "leadpipe_delivery_latency_seconds",
            "Time from a lead's receipt to myKaarma's 2xx.",
            buckets=buckets,
            sum_value=total,
        )
        retries = GaugeMetricFamily(
            "leadpipe_scheduled_retries", "Leads waiting for their next delivery attempt."
        )
        retries.add_metric([], stats["scheduledRetries"])
        yield retries
        unreadable = CounterMetricFamily(
            "leadpipe_unreadable_messages",
            "Messages dropped because they carried no readable id (their body is never kept).",
        )
        unreadable.add_metric([], counters.get(UNREADABLE_COUNTER, 0))
        yield unreadable


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry holding only leadpipe's collector (no process metrics of the scraper)."""
    state_url = redis_url(settings)
    broker = broker_url(settings)
    broker_client = None
    if broker.startswith(_REDIS_SCHEMES):
        broker_client = redis_client(broker)
    else:  # RabbitMQ reports its own queue depths (rabbitmq_prometheus plugin)
        log.info("metrics: broker is not Redis; leadpipe_queue_depth is not exported")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LeadpipeCollector(LeadStore(redis_client(state_url)), broker_client))
    return registry
