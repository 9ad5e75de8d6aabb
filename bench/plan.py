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


@dataclass(frozen=True)
class Plan:
    """Sizes of the legs. The defaults fit ten minutes on 2 cores; `quick()` is for the
    smoke test."""

    runs: int = 3
    #: Leads through the pipeline before the first measurement (and the RSS baseline).
    warmup_leads: int = 2_000
    warmup_chains: int = 1_000
    #: Chains per baseline run (the issue asks for N >= 10,000).
    baseline_chains: int = 10_000
    pipeline_0ms_leads: int = 6_000
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
    #: Seconds the legs may take in all; the memory leg stops early to honour it.
    budget_seconds: float = 570.0
    #: Longest a single drain may take before the bench gives up, seconds.
    drain_timeout: float = 240.0

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            runs=3,
            warmup_leads=60,
            warmup_chains=30,
            baseline_chains=150,
            pipeline_0ms_leads=150,
            pipeline_200ms_leads=100,
            naive_leads=10,
            latency_seconds=1.0,
            memory_leads=600,
            memory_batch=200,
            budget_seconds=240.0,
            drain_timeout=60.0,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def seconds(self, pipeline_rate: float, chain_rate: float, slow_rate: float) -> float:
        """Projected wall time of the fixed legs at the given rates (per second)."""
        naive_rate = max(1.0, (os.cpu_count() or 1) / (self.slow_ms / 1000))
        per_round = (
            self.baseline_chains / chain_rate
            + self.pipeline_0ms_leads / pipeline_rate
            + self.latency_seconds
            + self.pipeline_200ms_leads / slow_rate
            + self.naive_leads / naive_rate
        )
        return self.runs * (per_round + 5 * DRAIN_OVERHEAD_SECONDS)

    def fit(
        self, seconds: float, pipeline_rate: float, chain_rate: float, slow_rate: float
    ) -> Plan:
        """This plan, or a smaller one whose fixed legs fit in `seconds` at these rates:
        the pipeline legs shrink first, the baseline last and never under a third of its
        N per run (so its three runs still add up to N)."""
        plan = self
        for _ in range(20):
            if plan.seconds(pipeline_rate, chain_rate, slow_rate) <= seconds:
                return plan
            shrunk = replace(
                plan,
                pipeline_0ms_leads=_shrink(plan.pipeline_0ms_leads, MIN_LEADS),
                pipeline_200ms_leads=_shrink(plan.pipeline_200ms_leads, MIN_LEADS),
                latency_seconds=_shrink(plan.latency_seconds, MIN_LATENCY_SECONDS),
            )
            if shrunk == plan:  # the pipeline legs are as small as they go
                floor = -(-self.baseline_chains // self.runs)
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
