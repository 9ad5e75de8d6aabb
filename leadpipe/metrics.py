"""Prometheus metrics Flower lacks, read from Redis at scrape time.

Nothing is counted in worker memory: the transition scripts already keep per-state
counts, attempt counters and the latency histogram in Redis (`store.keys`), so one
collector reading them on each scrape sees every worker on every host, survives
worker restarts, and needs no multiprocess mode.

    leadpipe_queue_depth{queue}                  messages waiting (Redis broker only; tasks.depths)
    leadpipe_leads{state}                        leads in each state
    leadpipe_dead_letters{reason}                dead letters by reason, now (a gauge)
    leadpipe_dead_lettered_total{reason}         leads moved to the dead letters, ever
    leadpipe_delivery_attempts_total{outcome}    POSTs to myKaarma: delivered, rejected, transient
    leadpipe_delivery_latency_seconds            histogram, received -> myKaarma's 2xx
    leadpipe_scheduled_retries                   leads waiting for their next attempt
    leadpipe_notifications{state}                outcome notifications: pending, sent, failed
    leadpipe_unreadable_messages_total           messages dropped for want of a readable id
    leadpipe_redis_up                            1 when the scrape could read Redis
    leadpipe_dealer_breaker{dealer,state}        1 for the state each dealer's breaker is in
    leadpipe_dealer_held_leads{dealer}           leads held while the breaker is not closed
    leadpipe_dealer_consecutive_failures{dealer} transient failures since the last 2xx
    leadpipe_breaker_probes_total{outcome}       probes sent after a cooldown, by answer
    leadpipe_redis_used_memory_bytes             the state Redis's used memory
    leadpipe_redis_max_memory_bytes              its maxmemory (0: unlimited)
    leadpipe_store_errors_total{kind}            store errors met by workers (oom, readonly, ...)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from config import Settings
from config.urls import Broker, broker_kind
from pipeline.breaker import Answer, BreakerState
from pipeline.states import DeadReason, LeadState
from store.connection import broker_url, redis_client, redis_url
from store.records import LATENCY_BUCKETS, LeadStore, dead_lettered_counter, latency_bucket
from store.views import dealer_views, stats_view
from tasks.depths import redis_queue_depths
from tasks.store_errors import STORE_ERRORS_PREFIX

log = logging.getLogger(__name__)

#: Port of `leadpipe metrics` when none is given.
DEFAULT_PORT = 9808
#: Attempt outcomes always exported, even at zero, so rate() has a series from the start.
ATTEMPT_OUTCOMES = ("delivered", "rejected", "transient")
#: Counter fields of probe outcomes (store/dealer_scripts.py): `probes.<answer>`.
PROBE_COUNTER_PREFIX = "probes."
#: Counter field of messages dropped without a readable id (tasks.consumer).
UNREADABLE_COUNTER = "messages.unreadable"


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
            depths = redis_queue_depths(self.broker) if self.broker is not None else None
            dealers = dealer_views(self.store.dealers)
        except redis.RedisError as exc:
            log.warning("metrics: Redis unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._families(stats, latency, depths)
        yield from self._dealer_families(dealers, stats["counters"])

    @staticmethod
    def _dealer_families(
        dealers: list[dict[str, Any]], counters: Mapping[str, int]
    ) -> Iterator[Metric]:
        breaker = GaugeMetricFamily(
            "leadpipe_dealer_breaker",
            "1 for the state a dealer's breaker is in (closed, open, half_open, paused).",
            labels=["dealer", "state"],
        )
        held = GaugeMetricFamily(
            "leadpipe_dealer_held_leads",
            "Leads held in Redis while the dealer's breaker is not closed.",
            labels=["dealer"],
        )
        failures = GaugeMetricFamily(
            "leadpipe_dealer_consecutive_failures",
            "Transient failures in a row since the dealer's last 2xx.",
            labels=["dealer"],
        )
        for view in dealers:
            for state in BreakerState:
                breaker.add_metric([view["dealerUuid"], state.value], int(view["breaker"] == state))
            held.add_metric([view["dealerUuid"]], view["held"])
            failures.add_metric([view["dealerUuid"]], view["consecutiveFailures"])
        yield breaker
        yield held
        yield failures
        probes = CounterMetricFamily(
            "leadpipe_breaker_probes",
            "Probes (one held lead sent after a breaker's cooldown) by myKaarma's answer.",
            labels=["outcome"],
        )
        for answer in Answer:
            probes.add_metric([answer.value], counters.get(PROBE_COUNTER_PREFIX + answer.value, 0))
        yield probes

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
        notifications = GaugeMetricFamily(
            "leadpipe_notifications",
            "Outcome notifications to partners' webhooks, by state.",
            labels=["state"],
        )
        for state, count in stats["notifications"].items():
            notifications.add_metric([state], count)
        yield notifications
        counters: Mapping[str, int] = stats["counters"]
        # The gauge drops on a replay or a purge, which `increase()` reads as a counter
        # reset; alerts use this counter, which only ever goes up.
        lettered = CounterMetricFamily(
            "leadpipe_dead_lettered",
            "Leads moved to the dead letters, by reason (for alerts: never goes down).",
            labels=["reason"],
        )
        for reason in DeadReason:
            lettered.add_metric([reason.value], counters.get(dead_lettered_counter(reason), 0))
        yield lettered
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
        used = GaugeMetricFamily(
            "leadpipe_redis_used_memory_bytes", "Memory the state Redis uses (INFO used_memory)."
        )
        used.add_metric([], stats["redis"]["usedMemoryBytes"])
        yield used
        limit = GaugeMetricFamily(
            "leadpipe_redis_max_memory_bytes",
            "The state Redis's maxmemory; writes are refused past it (0: no limit).",
        )
        limit.add_metric([], stats["redis"]["maxMemoryBytes"])
        yield limit
        errors = CounterMetricFamily(
            "leadpipe_store_errors",
            "Store errors workers met (the stage was retried), by kind: oom, readonly, ...",
            labels=["kind"],
        )
        for name, value in sorted(counters.items()):
            if name.startswith(STORE_ERRORS_PREFIX):
                errors.add_metric([name.removeprefix(STORE_ERRORS_PREFIX)], value)
        yield errors


def build_registry(settings: Settings) -> CollectorRegistry:
    """A registry holding only leadpipe's collector (no process metrics of the scraper)."""
    state_url = redis_url(settings)
    broker = broker_url(settings)
    broker_client = None
    if broker_kind(broker) is Broker.REDIS:
        broker_client = redis_client(broker)
    else:  # RabbitMQ reports its own queue depths (rabbitmq_prometheus plugin)
        log.info("metrics: broker is not Redis; leadpipe_queue_depth is not exported")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LeadpipeCollector(LeadStore(redis_client(state_url)), broker_client))
    return registry
