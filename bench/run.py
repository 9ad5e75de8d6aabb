"""One benchmark run: start the processes, run the legs in order, assemble the figures.

Order: warm-up; three rounds of (baseline, pipeline 0 ms), interleaved so that drift
on a shared machine hits both alike; three latency runs at half the measured
capacity; three rounds of (pipeline 200 ms, naive 200 ms); then the memory leg tops
the pipeline workers up to the memory target at 0 ms, as far as the time budget lets.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench import legs, measure, report
from bench.baseline_app import NAIVE_QUEUE
from bench.plan import Clock, Plan
from bench.stack import DEALER_UUID, AppWorkerSpec, Stack
from config.settings import DELIVER_CONCURRENCY
from leadpipe.runner import WorkerSpec, default_specs
from store.keys import Keys

DB_PIPELINE, DB_BASELINE, DB_NAIVE = 0, 1, 2
#: Celery's own default; INFO would log two lines per task, in both the pipeline and
#: the baseline.
LOGLEVEL = "WARNING"
#: Seconds kept back from the memory leg for stopping the processes.
TEARDOWN_RESERVE = 25.0
#: Seconds of the budget the fixed legs leave at least to the memory leg.
FIXED_LEGS_MARGIN = 30.0
#: The memory leg plans each batch to take this much longer than the measured rate says.
BATCH_MARGIN = 1.2
#: Smallest top-up batch worth starting.
MIN_BATCH = 1_000


def worker_specs(prefix: str = "", app: str = "tasks") -> list[WorkerSpec]:
    """The pipeline's own worker layout (leadpipe.runner.default_specs), for any app."""
    return [
        AppWorkerSpec(f"{prefix}{s.name}", s.queues, s.pool, s.concurrency, LOGLEVEL, app=app)
        for s in default_specs(DELIVER_CONCURRENCY, LOGLEVEL)
    ]


def _spread(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    return {**measure.summary(values, digits), "runs": [round(v, digits) for v in values]}


def _median_cpu(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r.get(k, 0.0) for r in runs), 1) for k in runs[0]}


def _ratio(top: Sequence[dict[str, Any]], bottom: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ratio of the two figures' medians (what the goal is checked on), and run i of
    one over run i of the other (they ran side by side) for the spread."""
    paired = [a["rate"] / b["rate"] for a, b in zip(top, bottom, strict=True)]
    value = statistics.median(a["rate"] for a in top) / statistics.median(b["rate"] for b in bottom)
    return {
        "value": round(value, 2),
        "min": round(min(paired), 2),
        "max": round(max(paired), 2),
        "runs": [round(r, 2) for r in paired],
        "median_of_runs": round(statistics.median(paired), 2),
    }


class BenchRun:
    """The legs, in order, over one Stack; `results()` once they have run."""

    def __init__(self, plan: Plan, stack: Stack, clock: Clock, say: Callable[[str], None]):
        self.plan, self.stack, self.clock, self.say = plan, stack, clock, say
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.pids: list[int] = []

    def _log(self, text: str) -> None:
        self.say(f"[{self.clock.elapsed:4.0f}s] {text}")

    # -- processes ------------------------------------------------------------------

    def start(self) -> None:
        stack = self.stack
        stack.start_redis()
        stack.start_fake()
        self.machine = report.machine(stack.redis(DB_PIPELINE))
        pipeline_env = stack.worker_env(DB_PIPELINE)
        baseline_env = {"BENCH_BROKER_URL": stack.redis_url(DB_BASELINE)}
        naive_env = {"BENCH_BROKER_URL": stack.redis_url(DB_NAIVE)}
        # What "the default prefork pool" is: prefork, one process per core.
        naive = AppWorkerSpec(
            "naive",
            (NAIVE_QUEUE,),
            "prefork",
            os.cpu_count() or 1,
            LOGLEVEL,
            app="bench.baseline_app",
        )
        self.pipeline_specs = worker_specs()
        self.baseline_specs = worker_specs("baseline-", "bench.baseline_app")
        workers = stack.start_workers(
            [
                *((s, pipeline_env, stack.redis_url(DB_PIPELINE)) for s in self.pipeline_specs),
                *((s, baseline_env, stack.redis_url(DB_BASELINE)) for s in self.baseline_specs),
                (naive, naive_env, stack.redis_url(DB_NAIVE)),
            ]
        )
        self.pipe = legs.pipeline_target(stack, workers[:2], DB_PIPELINE)
        self.base = legs.chain_target(stack, workers[2:4], DB_BASELINE)
        self.naive_workers = workers[4:]
        self._log(f"redis :{stack.redis_port}, fake {stack.fake_url}, {len(workers)} workers ready")

    def rss(self) -> int:
        groups = self.stack.watched(self.pipe.workers)
        return sum(measure.rss_bytes(groups[f"worker:{s.name}"][:1]) for s in self.pipeline_specs)

    def _checkpoint(self) -> int:
        rss = self.rss()
        self.checkpoints.append({"leads": self.pipe.handled, "rss_mb": round(rss / 2**20, 1)})
        return rss

    # -- legs -----------------------------------------------------------------------

    def warm_up(self, *, fit: bool = True) -> None:
        """Warm both worker sets; from their rates, shrink the plan if the fixed legs
        would not leave the memory leg any time (on a slower or busier machine)."""
        pipeline = self.pipe.run(self.plan.warmup_leads, self.plan.drain_timeout)
        chains = self.base.run(self.plan.warmup_chains, self.plan.drain_timeout)
        self.stack.fake_reset()
        self.rss_warm = self._checkpoint()
        self.capacity = pipeline["rate"]
        self._log(f"warmed up; pipeline workers' RSS {self.rss_warm / 2**20:.0f} MB")
        if not fit:
            return
        slots = DELIVER_CONCURRENCY / (self.plan.slow_ms / 1000)
        rate = pipeline["rate"]
        available = self.clock.left - TEARDOWN_RESERVE - FIXED_LEGS_MARGIN
        planned = self.plan
        self.plan = planned.fit(available, rate, chains["rate"], min(rate, slots) * 0.8)
        if self.plan != planned:
            self._log(f"plan shrunk to fit the budget: {self.plan}")

    def throughput(self) -> None:
        plan = self.plan
        baseline, pipeline = self.runs.setdefault("baseline", []), self.runs.setdefault("p0", [])
        for i in range(plan.runs):
            baseline.append(self.base.run(plan.baseline_chains, plan.drain_timeout))
            pipeline.append(self.pipe.run(plan.pipeline_0ms_leads, plan.drain_timeout))
            self.stack.fake_reset()
            self._log(
                f"run {i + 1}: baseline {baseline[-1]['rate']:.1f} chains/s, "
                f"pipeline 0 ms {pipeline[-1]['rate']:.1f} leads/s"
            )
        self.capacity = statistics.median(r["rate"] for r in pipeline)

    def latency(self) -> None:
        runs = self.runs.setdefault("latency", [])
        rate = self.capacity / 2
        for i in range(self.plan.runs):
            result = legs.latency_run(
                self.pipe, self.stack.redis_url(DB_PIPELINE), rate, self.plan.latency_seconds,
                self.plan.drain_timeout,
            )  # fmt: skip
            runs.append(result.figures())
            self.sample_lead = result.lead_ids[0]
            self.stack.fake_reset()
            self._log(
                f"latency run {i + 1} at {rate:.0f}/s: p50 {runs[-1]['p50_ms']:.1f} ms, "
                f"p99 {runs[-1]['p99_ms']:.1f} ms"
            )

    def slow(self) -> None:
        """The fake answers after `slow_ms`: the pipeline, then the naive task, per round."""
        plan = self.plan
        # The very body the pipeline sent for one of its leads, to the same dealer.
        request, dealer = self.pipe.client.hmget(
            Keys().lead(self.sample_lead), ["request", "dealerUuid"]
        )
        body = json.loads(request or b"{}")
        naive = legs.naive_target(
            self.stack, self.naive_workers, DB_NAIVE, body,
            dealer.decode() if isinstance(dealer, bytes) else DEALER_UUID,
        )  # fmt: skip
        pipeline, plain = self.runs.setdefault("p200", []), self.runs.setdefault("naive", [])
        self.stack.fake_latency(plan.slow_ms)
        try:
            for i in range(plan.runs):
                pipeline.append(self.pipe.run(plan.pipeline_200ms_leads, plan.drain_timeout))
                plain.append(naive.run(plan.naive_leads, plan.drain_timeout))
                self.stack.fake_reset()
                self._log(
                    f"run {i + 1} at {plan.slow_ms:g} ms: pipeline {pipeline[-1]['rate']:.1f} "
                    f"leads/s, naive {plain[-1]['rate']:.1f} leads/s"
                )
        finally:
            self.stack.fake_latency(0)

    def memory(self) -> None:
        """Top the pipeline workers up to the memory target at 0 ms, within the budget."""
        plan, pipe = self.plan, self.pipe
        runs = self.runs.setdefault("memory", [])
        while pipe.handled < plan.memory_leads:
            seconds = self.clock.left - TEARDOWN_RESERVE
            affordable = int(seconds / BATCH_MARGIN * self.capacity)
            wanted = plan.memory_leads - pipe.handled
            batch = min(plan.memory_batch, wanted, affordable)
            if batch < min(MIN_BATCH, wanted, plan.memory_batch):
                self._log(f"time budget spent: memory leg stops at {pipe.handled:,} leads")
                break
            runs.append(pipe.run(batch, plan.drain_timeout))
            self.stack.fake_reset()
            rss = self._checkpoint()
            self._log(f"memory leg: {pipe.handled:,} leads, RSS {rss / 2**20:.0f} MB")
        self.rss_final = self.rss()
        if self.checkpoints[-1]["leads"] != pipe.handled:
            self._checkpoint()
        self.pids = self.stack.pids()

    # -- the figures ----------------------------------------------------------------

    def memory_figures(self) -> dict[str, Any]:
        return {
            "target_leads": self.plan.memory_leads,
            "leads": self.pipe.handled,
            "rss_warm_mb": round(self.rss_warm / 2**20, 1),
            "rss_final_mb": round(self.rss_final / 2**20, 1),
            "growth_percent": round(100 * (self.rss_final - self.rss_warm) / self.rss_warm, 1),
            "checkpoints": self.checkpoints,
            "rate_per_s": _spread([r["rate"] for r in self.runs.get("memory", [])] or [0.0]),
        }

    def _figure(self, key: str, consumers: dict[str, str], **bound: Any) -> dict[str, Any]:
        runs = self.runs[key]
        out = _spread([r["rate"] for r in runs])
        out["n_per_run"] = runs[0]["n"]
        out["cpu_percent"] = _median_cpu([r["cpu_percent"] for r in runs])
        out["cpu_ms_per_item"] = _median_cpu([r["cpu_ms_per_item"] for r in runs])
        out["backlog"] = runs[len(runs) // 2]["backlog"]
        out["limit"] = report.limit(
            out["cpu_percent"], out["backlog"], consumers, rate=out["median"], **bound
        )
        return out

    def results(self) -> dict[str, Any]:
        plan = self.plan
        pipeline_consumers = {q: s.name for s in self.pipeline_specs for q in s.queues}
        baseline_consumers = {q: s.name for s in self.baseline_specs for q in s.queues}
        slots = DELIVER_CONCURRENCY / (plan.slow_ms / 1000)
        naive_slots = (os.cpu_count() or 1) / (plan.slow_ms / 1000)
        figures = {
            "baseline_chain": self._figure("baseline", baseline_consumers),
            "pipeline_0ms": self._figure("p0", pipeline_consumers),
            "pipeline_200ms": self._figure(
                "p200", pipeline_consumers, slots_bound=slots, slots_queue="leads.deliver",
                slots_text=f"delivery slots: {DELIVER_CONCURRENCY} threads / {plan.slow_ms:g} ms "
                f"= {slots:.0f} leads/s",
            ),
            "naive_200ms": self._figure(
                "naive", {NAIVE_QUEUE: "naive"}, slots_bound=naive_slots, slots_queue=NAIVE_QUEUE,
                slots_text=f"prefork slots: {os.cpu_count()} processes / {plan.slow_ms:g} ms "
                f"= {naive_slots:.0f} leads/s",
            ),
        }  # fmt: skip
        latency_runs = self.runs["latency"]
        latency = {
            "fake_latency_ms": 0,
            "offered_per_s": latency_runs[0]["offered_per_s"],
            "n_per_run": latency_runs[0]["n"],
            "p50_ms": _spread([r["p50_ms"] for r in latency_runs]),
            "p99_ms": _spread([r["p99_ms"] for r in latency_runs]),
            "max_ms": _spread([r["max_ms"] for r in latency_runs]),
            "cpu_percent": _median_cpu([r["cpu_percent"] for r in latency_runs]),
        }
        latency["p50_ms"]["limit"] = latency["p99_ms"]["limit"] = (
            f"offered {latency['offered_per_s']:.0f} leads/s, half the 0 ms capacity"
        )
        memory = self.memory_figures()
        ratios = {
            "ratio_0ms": _ratio(self.runs["p0"], self.runs["baseline"]),
            "ratio_latency": _ratio(self.runs["p200"], self.runs["p0"]),
            "speedup_200ms_vs_naive": _ratio(self.runs["p200"], self.runs["naive"]),
        }
        results: dict[str, Any] = {
            "baseline_chain_per_s": figures["baseline_chain"]["median"],
            "pipeline_0ms_per_s": figures["pipeline_0ms"]["median"],
            "ratio_0ms": ratios["ratio_0ms"]["value"],
            "pipeline_200ms_per_s": figures["pipeline_200ms"]["median"],
            "naive_200ms_per_s": figures["naive_200ms"]["median"],
            "ratio_latency": ratios["ratio_latency"]["value"],
            "speedup_200ms_vs_naive": ratios["speedup_200ms_vs_naive"]["value"],
            "latency_p50_ms": latency["p50_ms"]["median"],
            "latency_p99_ms": latency["p99_ms"]["median"],
            "rss_growth_percent": memory["growth_percent"],
            "figures": figures,
            "ratios": ratios,
            "latency": latency,
            "memory": memory,
            "machine": self.machine,
            "plan": {
                **plan.as_dict(),
                "deliver_concurrency": DELIVER_CONCURRENCY,
                "workers": {
                    s.name: [list(s.queues), s.pool, s.concurrency] for s in self.pipeline_specs
                },
                "loglevel": LOGLEVEL,
            },
        }
        results["cpu_percent"] = {
            "baseline_chain": figures["baseline_chain"]["cpu_percent"],
            "pipeline_0ms": figures["pipeline_0ms"]["cpu_percent"],
            "latency": latency["cpu_percent"],
            "pipeline_200ms": figures["pipeline_200ms"]["cpu_percent"],
            "naive_200ms": figures["naive_200ms"]["cpu_percent"],
        }
        results["goals"] = report.goal_rows(results)
        return results
