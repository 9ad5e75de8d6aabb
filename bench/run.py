"""One benchmark run: start the processes, run the legs in order, assemble the figures.

Order: warm-up (from whose rates the plan shrinks to fit the budget); three rounds of
(baseline, pipeline 0 ms, pipeline 0 ms with one dealer down), interleaved so that drift
on a shared machine hits them alike; three rounds of webhooks off/on; the Sentinel leg;
three latency runs at half the measured capacity; three rounds of (pipeline 200 ms,
naive 200 ms); the steady leg (state memory while leads expire); then the memory leg
tops the pipeline workers up to the memory target at 0 ms, as far as the time budget
lets; last, the dead-letter listing.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import legs, load, measure, report, sentinel_leg, state
from bench.baseline_app import NAIVE_QUEUE
from bench.figures import figure, latency_figure, paired_ratio, spread
from bench.plan import Clock, Plan
from bench.stack import (
    DEALER_UUID,
    DOWN_DEALER_UUID,
    DOWN_PARTNER,
    WEBHOOK_SECRET,
    AppWorkerSpec,
    Stack,
)
from config.settings import DELIVER_CONCURRENCY
from leadpipe.fake_partner import FakePartner
from leadpipe.runner import WorkerSpec, default_specs
from pipeline.record_fields import RecordField
from store.keys import Keys
from tasks.queues import DELIVER_QUEUE

DB_PIPELINE, DB_BASELINE, DB_NAIVE, DB_DEAD_LETTERS = 0, 1, 2, 3
#: Celery's own default; INFO would log two lines per task, in both the pipeline and
#: the baseline.
LOGLEVEL = "WARNING"
#: Seconds kept back from the memory leg for stopping the processes.
TEARDOWN_RESERVE = 25.0
#: Seconds of the budget the fixed legs leave at least to the memory leg.
FIXED_LEGS_MARGIN = 30.0
#: The memory leg plans each batch to take this much longer than the measured rate says.
BATCH_MARGIN = 1.2
#: In the "one dealer down" leg, one lead in this many goes to the failing dealer.
DOWN_EVERY = 10
#: Smallest top-up batch worth starting.
MIN_BATCH = 1_000


def worker_specs(prefix: str = "", app: str = "tasks") -> list[WorkerSpec]:
    """The pipeline's own worker layout (leadpipe.runner.default_specs), for any app."""
    return [
        AppWorkerSpec(f"{prefix}{s.name}", s.queues, s.pool, s.concurrency, LOGLEVEL, app=app)
        for s in default_specs(DELIVER_CONCURRENCY, LOGLEVEL)
    ]


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class BenchRun:
    """The legs, in order, over one Stack; `results()` once they have run."""

    def __init__(self, plan: Plan, stack: Stack, clock: Clock, say: Callable[[str], None]):
        self.plan, self.stack, self.clock, self.say = plan, stack, clock, say
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.pids: list[int] = []
        #: Processes a leg started and stopped itself (the Sentinel leg's).
        self.leg_pids: list[int] = []
        self.state: dict[str, Any] = {}

    def _log(self, text: str) -> None:
        self.say(f"[{self.clock.elapsed:4.0f}s] {text}")

    # -- processes ------------------------------------------------------------------

    def start(self) -> None:
        stack = self.stack
        stack.start_redis()
        stack.start_fake()
        self.machine = report.machine(stack.redis(DB_PIPELINE))
        retention = state.retention_env(self.plan.retention_seconds)
        pipeline_env = stack.worker_env(DB_PIPELINE, **retention)
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
        n, m = len(self.pipeline_specs), len(self.pipeline_specs) + len(self.baseline_specs)
        self.pipeline_env = pipeline_env
        self.pipe = legs.pipeline_target(stack, workers[:n], DB_PIPELINE)
        self.base = legs.chain_target(stack, workers[n:m], DB_BASELINE)
        self.naive_workers = workers[m:]
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
        """Rounds of (baseline, pipeline 0 ms, pipeline 0 ms with one dealer down),
        interleaved so that drift on a shared machine hits them alike."""
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
            self._one_dealer_down(i)
        self.capacity = statistics.median(r["rate"] for r in pipeline)
        self.state["bytes_per_lead"] = state.bytes_per_lead(self.pipe.client)
        self._log(f"Redis bytes per delivered lead: {self.state['bytes_per_lead']}")

    def _one_dealer_down(self, i: int) -> None:
        """One lead in DOWN_EVERY goes to a dealer that answers 503 throughout: its
        breaker opens and holds its leads in Redis, so the healthy dealer's leads keep
        the delivery threads. Measured against the round's all-healthy pipeline run,
        of the same size, right before."""
        plan, pipe = self.plan, self.pipe
        down = load.pipeline_template(self.stack.redis_url(legs.SCRATCH_DB), DOWN_PARTNER)
        mix = [pipe.template] * (DOWN_EVERY - 2) + [down]
        n = plan.pipeline_0ms_leads
        healthy = n - n // DOWN_EVERY
        runs = self.runs.setdefault("down", [])
        # The dealer stays down for the rest of the bench (fake_reset keeps the
        # configuration): its held leads never deliver, so never count later.
        self.stack.fake_behaviours({DOWN_DEALER_UUID: "status:503"})
        runs.append(pipe.run(n, plan.drain_timeout, mix=mix, counted=healthy))
        self.stack.fake_reset()
        self._log(
            f"one dealer down, run {i + 1}: healthy leads {runs[-1]['rate']:.1f}/s with "
            f"{n - healthy} of {n} leads for the failing dealer"
        )

    def webhooks(self) -> None:
        """Pipeline 0 ms with and without a webhook for the bench partner, interleaved
        (CONTRACT section 9: notifications must keep >= 0.8x the throughput). The
        receiver verifies every signature; each webhook run waits until its
        notifications are all sent, so the next run does not pay for them."""
        plan, stack = self.plan, self.stack
        without, with_hooks = (
            self.runs.setdefault("p0_plain", []),
            self.runs.setdefault("p0_hooks", []),
        )
        schedule = Keys().notify_schedule
        with FakePartner(WEBHOOK_SECRET) as partner:
            for i in range(plan.runs):
                without.append(self.pipe.run(plan.webhook_leads, plan.drain_timeout))
                stack.set_webhook(partner.url)
                try:
                    with_hooks.append(self.pipe.run(plan.webhook_leads, plan.drain_timeout))
                    drained = _wait_until(
                        lambda: self.pipe.client.zcard(schedule) == 0, plan.drain_timeout
                    )
                finally:
                    stack.set_webhook(None)
                self.stack.fake_reset()
                sent = len(partner.accepted())
                partner.clear()
                self._log(
                    f"webhooks run {i + 1}: pipeline 0 ms {without[-1]['rate']:.1f} leads/s "
                    f"without, {with_hooks[-1]['rate']:.1f} with ({sent} events verified"
                    f"{'' if drained else ', NOT drained'})"
                )

    def sentinel(self) -> None:
        """Pipeline 0 ms with `LEADPIPE_REDIS_URL=redis+sentinel://...` (a primary, a
        replica, three sentinels of its own), interleaved with plain runs of the same
        size (bench/sentinel_leg.py)."""
        env = {k: v for k, v in self.pipeline_env.items() if k != "LEADPIPE_REDIS_URL"}
        plain, through, pids = sentinel_leg.run_leg(
            self.stack, self.pipe, worker_specs(sentinel_leg.PREFIX), env,
            runs=self.plan.runs, leads=self.plan.sentinel_leads,
            timeout=self.plan.drain_timeout, log=self._log,
        )  # fmt: skip
        self.runs["p0_sentinel_plain"], self.runs["p0_sentinel"] = plain, through
        self.leg_pids += pids

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
            Keys().lead(self.sample_lead), [RecordField.REQUEST, RecordField.DEALER_UUID]
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
        self.pids = [*self.leg_pids, *self.stack.pids()]

    def steady(self) -> None:
        """The state Redis's memory while leads expire as fast as they arrive."""
        rate = self.capacity / 2
        self.state["memory"] = state.steady_memory(
            self.pipe.client, self.stack.redis_url(DB_PIPELINE), rate, self.plan.retention_seconds
        )
        self.pipe.handled += self.state["memory"]["leads"]
        self._log(
            f"steady leg at {rate:.0f}/s: state Redis memory within "
            f"±{self.state['memory'].get('deviation_percent')}% over "
            f"{self.state['memory']['samples']} samples"
        )

    def dead_letter_listing(self) -> None:
        """`leadpipe dlq list` over the plan's dead letters (a database of their own)."""
        count = self.plan.dead_letters
        url = self.stack.redis_url(DB_DEAD_LETTERS)
        self.state["dlq_list"] = state.dlq_list_timing(url, count)
        self._log(f"dlq list over {count:,} dead letters: {self.state['dlq_list']}")

    # -- the figures ----------------------------------------------------------------

    def memory_figures(self) -> dict[str, Any]:
        return {
            "target_leads": self.plan.memory_leads,
            "leads": self.pipe.handled,
            "rss_warm_mb": round(self.rss_warm / 2**20, 1),
            "rss_final_mb": round(self.rss_final / 2**20, 1),
            "growth_percent": round(100 * (self.rss_final - self.rss_warm) / self.rss_warm, 1),
            "checkpoints": self.checkpoints,
            "rate_per_s": spread([r["rate"] for r in self.runs.get("memory", [])] or [0.0]),
        }

    def results(self) -> dict[str, Any]:
        plan = self.plan
        pipeline_consumers = {q: s.name for s in self.pipeline_specs for q in s.queues}
        baseline_consumers = {q: s.name for s in self.baseline_specs for q in s.queues}
        slots = DELIVER_CONCURRENCY / (plan.slow_ms / 1000)
        naive_slots = (os.cpu_count() or 1) / (plan.slow_ms / 1000)
        figures = {
            "baseline_chain": figure(self.runs, "baseline", baseline_consumers),
            "pipeline_0ms": figure(self.runs, "p0", pipeline_consumers),
            "pipeline_200ms": figure(
                self.runs, "p200", pipeline_consumers, slots_bound=slots, slots_queue=DELIVER_QUEUE,
                slots_text=f"delivery slots: {DELIVER_CONCURRENCY} threads / {plan.slow_ms:g} ms "
                f"= {slots:.0f} leads/s",
            ),
            "naive_200ms": figure(
                self.runs, "naive", {NAIVE_QUEUE: "naive"},
                slots_bound=naive_slots, slots_queue=NAIVE_QUEUE,
                slots_text=f"prefork slots: {os.cpu_count()} processes / {plan.slow_ms:g} ms "
                f"= {naive_slots:.0f} leads/s",
            ),
        }  # fmt: skip
        latency = latency_figure(self.runs["latency"])
        memory = self.memory_figures()
        ratios = {
            "ratio_0ms": paired_ratio(self.runs["p0"], self.runs["baseline"]),
            "ratio_latency": paired_ratio(self.runs["p200"], self.runs["p0"]),
            "speedup_200ms_vs_naive": paired_ratio(self.runs["p200"], self.runs["naive"]),
        }
        if self.runs.get("down"):
            figures["one_dealer_down"] = figure(self.runs, "down", pipeline_consumers)
            # Per healthy lead: the failing dealer's leads still take their share of
            # ingest and enrich, which an all-healthy batch spends on healthy leads.
            share = 1 - 1 / DOWN_EVERY
            scaled = [{"rate": r["rate"] / share} for r in self.runs["down"]]
            ratios["ratio_one_dealer_down"] = paired_ratio(scaled, self.runs["p0"])
        if self.runs.get("p0_hooks"):
            figures["pipeline_0ms_webhooks"] = figure(self.runs, "p0_hooks", pipeline_consumers)
            ratios["ratio_webhooks"] = paired_ratio(self.runs["p0_hooks"], self.runs["p0_plain"])
        if self.runs.get("p0_sentinel"):
            sentinel_consumers = {q: sentinel_leg.PREFIX + w for q, w in pipeline_consumers.items()}
            figures["pipeline_0ms_sentinel"] = figure(self.runs, "p0_sentinel", sentinel_consumers)
            ratios["ratio_sentinel"] = paired_ratio(
                self.runs["p0_sentinel"], self.runs["p0_sentinel_plain"]
            )
        results: dict[str, Any] = {
            "baseline_chain_per_s": figures["baseline_chain"]["median"],
            "pipeline_0ms_per_s": figures["pipeline_0ms"]["median"],
            "ratio_0ms": ratios["ratio_0ms"]["value"],
            "pipeline_200ms_per_s": figures["pipeline_200ms"]["median"],
            "naive_200ms_per_s": figures["naive_200ms"]["median"],
            "ratio_latency": ratios["ratio_latency"]["value"],
            "speedup_200ms_vs_naive": ratios["speedup_200ms_vs_naive"]["value"],
            "ratio_one_dealer_down": ratios.get("ratio_one_dealer_down", {}).get("value"),
            "ratio_webhooks": ratios.get("ratio_webhooks", {}).get("value"),
            "pipeline_0ms_sentinel_per_s": figures.get("pipeline_0ms_sentinel", {}).get("median"),
            "ratio_sentinel": ratios.get("ratio_sentinel", {}).get("value"),
            "latency_p50_ms": latency["p50_ms"]["median"],
            "latency_p99_ms": latency["p99_ms"]["median"],
            "rss_growth_percent": memory["growth_percent"],
            "redis_bytes_per_lead": self.state.get("bytes_per_lead", {}).get("median"),
            "state_memory_deviation_percent": self.state.get("memory", {}).get("deviation_percent"),
            "dlq_list_100k_seconds": self.state.get("dlq_list", {})
            .get("command_seconds", {})
            .get("dlq list"),
            "state": self.state,
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
        if "one_dealer_down" in figures:
            results["cpu_percent"]["one_dealer_down"] = figures["one_dealer_down"]["cpu_percent"]
        results["goals"] = report.goal_rows(results)
        return results
