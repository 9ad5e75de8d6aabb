"""Watching a leg: progress counters, CPU per process group, RSS, steady-state rates."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
import redis

from store.keys import Keys
from tasks.fetch import held_count

#: How often a leg's progress and CPU are sampled, seconds.
SAMPLE_SECONDS = 0.1
#: The steady part of a drain: from this fraction of the batch done...
STEADY_FROM = 0.1
#: ...to this one (ramp-up and the last stragglers left out).
STEADY_TO = 0.9

Groups = Mapping[str, Sequence[psutil.Process]]


def cpu_seconds(groups: Groups) -> dict[str, float]:
    """User+system CPU seconds so far of each group (a vanished process counts 0), and
    of the whole machine (`machine`: every core's non-idle time)."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    out: dict[str, float] = {"machine": busy + getattr(t, "steal", 0.0)}
    for name, procs in groups.items():
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        out[name] = total
    return out


def rss_bytes(procs: Sequence[psutil.Process]) -> int:
    """Resident set size of a worker: its process and every child, now."""
    total = 0
    for root in procs:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in family:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
    return total


@dataclass
class Sample:
    t: float
    done: int
    cpu: dict[str, float]


@dataclass
class Drain:
    """How one batch of `n` went through: samples from release to the last one done."""

    n: int
    samples: list[Sample] = field(default_factory=list)

    def _time_at(self, done: float) -> tuple[float, dict[str, float]]:
        """Interpolated time (and CPU counters) when `done` items were finished."""
        previous = self.samples[0]
        for sample in self.samples[1:]:
            if sample.done >= done:
                span = sample.done - previous.done
                f = 0.0 if span <= 0 else (done - previous.done) / span
                t = previous.t + f * (sample.t - previous.t)
                cpu = {
                    k: previous.cpu[k] + f * (sample.cpu[k] - previous.cpu[k]) for k in sample.cpu
                }
                return t, cpu
            previous = sample
        last = self.samples[-1]
        return last.t, last.cpu

    def steady(self) -> dict[str, Any]:
        """Rate over the steady part, and each group's CPU there (% of one core)."""
        lo, hi = self.n * STEADY_FROM, self.n * STEADY_TO
        t_lo, cpu_lo = self._time_at(lo)
        t_hi, cpu_hi = self._time_at(hi)
        span = max(t_hi - t_lo, 1e-9)
        return {
            "rate": (hi - lo) / span,
            "seconds": span,
            "total_seconds": self.samples[-1].t - self.samples[0].t,
            "cpu_percent": {k: round(100 * (cpu_hi[k] - cpu_lo[k]) / span, 1) for k in cpu_hi},
            "cpu_ms_per_item": {
                k: round(1000 * (cpu_hi[k] - cpu_lo[k]) / (hi - lo), 2) for k in cpu_hi
            },
        }


def drain(
    n: int,
    progress: Callable[[], int],
    groups: Groups,
    *,
    timeout: float,
    what: str,
) -> Drain:
    """Sample `progress()` (items finished since the release) until it reaches `n`."""
    result = Drain(n)
    deadline = time.monotonic() + timeout
    while True:
        done = progress()
        result.samples.append(Sample(time.time(), done, cpu_seconds(groups)))
        if done >= n:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {done} of {n} done after {timeout:.0f}s")
        time.sleep(SAMPLE_SECONDS)


def delivered_counter(client: redis.Redis, keys: Keys | None = None) -> Callable[[], int]:
    """Leads that reached `delivered` since now, from the store's attempt counters (the
    per-state count goes down again as retention erases delivered leads; this one only
    grows: one delivered attempt per delivered lead)."""
    key = (keys or Keys()).counters

    def read() -> int:
        return int(client.hget(key, "attempts.delivered") or 0)

    start = read()
    return lambda: read() - start


def drained_counter(client: redis.Redis, queues: Sequence[str], n: int) -> Callable[[], int]:
    """Work items finished out of `n` released, for tasks that write nothing: each
    unfinished item is one message, either queued or held unacknowledged (acks_late)."""

    def read() -> int:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        pipe.hlen("unacked")  # kombu's reservations (bare Celery)
        return n - sum(int(v) for v in pipe.execute()) - held_count(client)  # leadpipe's

    return read


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    """Median, min and max of the runs of one figure."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
