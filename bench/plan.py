"""How big each leg is, and the clock that keeps `make bench` under ten minutes."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Seconds each drain spends outside its steady part (staging, ramp-up, the tail).
DRAIN_OVERHEAD_SECONDS = 2.0
#: Smallest pipeline batch `fit` shrinks a leg to.
MIN_LEADS = 2_000
MIN_LATENCY_SECONDS = 6.0
#: Seconds the Sentinel leg spends starting its cluster and workers and warming them.
SENTINEL_START_SECONDS = 12.0
#: The steady leg lasts this many retention periods; the spread is read over the last
#: (STEADY_RETENTIONS - 1.5) of them.
STEADY_RETENTIONS = 2.5
#: Baseline chains over all runs together: the issue asks for N >= 10,000.
BASELINE_TOTAL = 10_000


@dataclass(frozen=True)
class Plan:
    """Sizes of the legs. The defaults fit ten minutes on 2 cores; `quick()` is for the
    smoke test."""

    runs: int = 3
    #: Leads through the pipeline before the first measurement (and the RSS baseline).
    warmup_leads: int = 2_000
    warmup_chains: int = 1_000
    #: Chains per baseline run (three runs: 15,000, over BASELINE_TOTAL).
    baseline_chains: int = 5_000
    pipeline_0ms_leads: int = 6_000
    #: Leads per run of each side of the webhooks leg (without, then with webhooks).
    webhook_leads: int = 3_000
    #: Leads per run of each side of the Sentinel leg (plain, then through Sentinel).
    sentinel_leads: int = 1_000
    pipeline_200ms_leads: int = 4_000
    naive_leads: int = 50
    #: Seconds of paced sending per latency run, at half the measured capacity.
    latency_seconds: float = 12.0
    #: The fake's latency for the 200 ms legs, milliseconds.
    slow_ms: float = 200.0
    #: Leads the pipeline workers should have handled when their RSS is read again.
    memory_leads: int = 100_000
    #: Leads per top-up batch of the memory leg (the budget is checked between batches).
    memory_batch: int = 10_000
    #: Retention the pipeline workers run with, seconds: leads of every leg expire during
    #: the run, and the steady leg lasts a few of these periods.
    retention_seconds: float = 24.0
    #: Dead letters written for the `dlq list` timing (the issue names 100,000).
    dead_letters: int = 100_000
    #: Seconds the legs may take in all; the memory leg stops early to honour it.
    budget_seconds: float = 570.0
    #: Longest a single drain may take before the bench gives up, seconds.
    drain_timeout: float = 240.0

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            runs=1,
            warmup_leads=60,
            warmup_chains=30,
            baseline_chains=100,
            pipeline_0ms_leads=100,
            webhook_leads=60,
            sentinel_leads=60,
            pipeline_200ms_leads=60,
            naive_leads=6,
            latency_seconds=1.0,
            memory_leads=400,
            memory_batch=200,
            retention_seconds=3.0,
            dead_letters=2_000,
            budget_seconds=240.0,
            drain_timeout=60.0,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def seconds(self, pipeline_rate: float, chain_rate: float, slow_rate: float) -> float:
        """Projected wall time of the fixed legs at the given rates (per second): every
        leg but the memory top-up and the dead-letter listing (in the teardown reserve)."""
        naive_rate = max(1.0, (os.cpu_count() or 1) / (self.slow_ms / 1000))
        per_round = (
            self.baseline_chains / chain_rate
            # all healthy, then with one dealer down (at about the same rate)
            + 2 * self.pipeline_0ms_leads / pipeline_rate
            # without webhooks, then with (notifications cost up to a fifth of the rate)
            + self.webhook_leads / pipeline_rate * (1 + 1 / 0.8)
            # plain, then through Sentinel (its cluster and workers start once)
            + 2 * self.sentinel_leads / pipeline_rate
            + SENTINEL_START_SECONDS / self.runs
            + self.latency_seconds
            + self.pipeline_200ms_leads / slow_rate
            + self.naive_leads / naive_rate
        )
        steady = STEADY_RETENTIONS * self.retention_seconds
        return self.runs * (per_round + 10 * DRAIN_OVERHEAD_SECONDS) + steady

    def fit(
        self, seconds: float, pipeline_rate: float, chain_rate: float, slow_rate: float
    ) -> Plan:
        """This plan, or a smaller one whose fixed legs fit in `seconds` at these rates:
        the pipeline legs shrink first, the baseline last and never under a third of
        BASELINE_TOTAL per run (so its three runs still add up to it)."""
        plan = self
        for _ in range(20):
            if plan.seconds(pipeline_rate, chain_rate, slow_rate) <= seconds:
                return plan
            shrunk = replace(
                plan,
                pipeline_0ms_leads=_shrink(plan.pipeline_0ms_leads, MIN_LEADS),
                webhook_leads=_shrink(plan.webhook_leads, MIN_LEADS // 2),
                pipeline_200ms_leads=_shrink(plan.pipeline_200ms_leads, MIN_LEADS),
                latency_seconds=_shrink(plan.latency_seconds, MIN_LATENCY_SECONDS),
            )
            if shrunk == plan:  # the pipeline legs are as small as they go
                floor = -(-BASELINE_TOTAL // self.runs)
                shrunk = replace(plan, baseline_chains=_shrink(plan.baseline_chains, floor))
            plan = shrunk
        return plan


@dataclass
class Clock:
    """Wall time since the bench started, against the plan's budget."""

    budget: float
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def left(self) -> float:
        return self.budget - self.elapsed


def _shrink(value: Any, floor: Any) -> Any:
    """80% of `value`, never under `floor` (nor above `value`, when it already is)."""
    return min(value, max(floor, type(value)(value * 0.8)))
