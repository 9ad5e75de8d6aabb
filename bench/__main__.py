"""`make bench` (`python -m bench`): leadpipe against bare Celery, side by side, in one run.

On one machine and one Redis (the bench's own redis-server, append-only off), with
the fake myKaarma in a process of its own (`leadpipe fake-mykaarma`):

1. baseline_chain_per_s: a bare Celery chain of 3 no-op tasks, JSON, the pipeline's
   broker settings, queues and worker processes (2 workers, the same pools).
2. pipeline_0ms_per_s: leads from `leads.ingest` to `delivered`, the fake answering
   at once; ratio_0ms = pipeline / baseline (run i against run i).
3. pipeline_200ms_per_s with the fake answering after 200 ms, and naive_200ms_per_s
   for a plain delivery task doing the same POST on the default prefork pool.
4. Latency: p50/p99 from `send_task` to the worker holding myKaarma's 2xx, offered at
   half the measured capacity.
5. one_dealer_down_per_s: pipeline 0 ms with one lead in ten for a dealer answering
   503 throughout, right after each round's all-healthy run (ratio_one_dealer_down);
   pipeline_0ms_webhooks_per_s: webhooks on for the bench partner (ratio_webhooks).
   pipeline_0ms_sentinel_per_s: pipeline 0 ms with state and broker behind Sentinel
   (a primary, a replica, three sentinels), interleaved with plain runs of the same
   size; ratio_sentinel = Sentinel / plain (informative, no goal).
6. Memory: the pipeline workers' RSS after warm-up and after the memory target (every
   leg's leads count towards it; a last 0 ms leg tops it up within the time budget).
7. State (bench/state.py): Redis bytes per delivered lead; the state Redis's memory
   in a steady leg while leads expire as fast as they arrive (retention 24 s);
   `leadpipe dlq list` over 100,000 dead letters.

Every figure is the median of `--runs` runs, with min and max. Writes results.json and
results.md next to this file (or to --out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from bench import report
from bench.plan import Clock, Plan
from bench.run import BenchRun
from bench.stack import Stack

HERE = Path(__file__).resolve().parent


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: stop the legs; the processes are cleaned up."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3)")
    parser.add_argument("--memory-leads", type=int, help="leads before RSS is read again")
    parser.add_argument("--budget", type=float, help="seconds the legs may take in all")
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="only the memory leg, all the way to --memory-leads (writes memory.json)",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="directory for results.*")
    return parser.parse_args(argv)


def run(plan: Plan, *, memory_only: bool = False) -> dict[str, Any]:
    """All legs on a fresh stack; every process is stopped before this returns."""
    clock = Clock(plan.budget_seconds)
    with Stack() as stack:
        bench = BenchRun(plan, stack, clock, _say)
        bench.start()
        bench.warm_up(fit=not memory_only)
        if not memory_only:
            bench.throughput()
            bench.webhooks()
            bench.sentinel()
            bench.latency()
            bench.slow()
            bench.steady()
        bench.memory()
        if not memory_only:
            bench.dead_letter_listing()
    results: dict[str, Any]
    if memory_only:
        results = {"memory": bench.memory_figures(), "machine": bench.machine}
        results["plan"] = plan.as_dict()
    else:
        results = bench.results()
    results["leftover_processes"] = [pid for pid in bench.pids if _alive(pid)]
    results["wall_seconds"] = round(clock.elapsed, 1)
    return results


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def render(results: dict[str, Any]) -> tuple[str, str]:
    """The text table (for the terminal) and the markdown (for the README)."""
    rows = report.table_rows(results)
    cpu_header, cpu_rows = report.cpu_rows(results)
    m = results["machine"]
    machine = (
        f"{m['cores_logical']} cores ({m['cpu_model']}), {m['memory_gb']} GB, {m['os']}, "
        f"{m['python']}, Redis {m['redis_server']}, "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
    )
    text = "\n".join(
        [
            report.text_table(rows),
            "",
            "CPU during each leg (% of one core; median of the runs):",
            report.text_table(cpu_rows, cpu_header),
            "",
            f"machine: {machine}",
            f"wall time: {results['wall_seconds']:.0f}s; leftover processes: "
            f"{len(results['leftover_processes'])}",
        ]
    )
    markdown = "\n".join(
        [
            report.markdown_table(rows),
            "",
            "CPU during each leg (% of one core; median of the runs):",
            "",
            report.markdown_table(cpu_rows, cpu_header),
            "",
            f"Machine: {machine}.",
        ]
    )
    return text, markdown


def _defaults_only() -> None:
    """The bench measures the shipped defaults: leadpipe's own variables in this shell
    (a LEADPIPE_DELIVER_CONCURRENCY, say) would reach its workers otherwise."""
    for name in [n for n in os.environ if n.startswith(("LEADPIPE_", "MYKAARMA_"))]:
        _say(f"ignoring {name} from the environment: the bench runs the defaults")
        del os.environ[name]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _defaults_only()
    plan = Plan.quick() if args.quick else Plan()
    if args.runs:
        plan = replace(plan, runs=args.runs)
    if args.memory_leads is not None:
        plan = replace(plan, memory_leads=args.memory_leads)
    if args.budget:
        plan = replace(plan, budget_seconds=args.budget)
    previous = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    started = time.monotonic()
    try:
        results = run(plan, memory_only=args.memory_only)
    except (Stopped, KeyboardInterrupt) as exc:
        _say(f"bench stopped ({type(exc).__name__} {exc}); every process it started is stopped")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.memory_only:
        (args.out / "memory.json").write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["memory"], indent=2))
        return 0
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text, markdown = render(results)
    (args.out / "results.md").write_text(markdown + "\n")
    print(text)
    _say(f"wrote {args.out / 'results.json'} and results.md in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
