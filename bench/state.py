"""The state Redis under retention (issue 10): bytes per lead, memory held flat while
leads expire, and `leadpipe dlq list` over a large dead-letter store.

- bytes per delivered lead: MEMORY USAGE of every key of a lead (`store.views.lead_bytes`)
  plus its share of the `finished` index, median of the newest 1,000 delivered leads;
- memory flat: the pipeline workers run with the plan's retention
  (`Plan.retention_seconds`), so the leads of every leg expire during the run; a steady
  leg offers leads at a constant rate for STEADY_RETENTIONS retention periods while the
  state Redis's `used_memory` (less the broker's queued messages, which live in the
  same server here) is sampled every second; the largest distance of a sample from the
  median, over the samples after 1.5 retention periods (a steady state: as many leads
  expire as arrive);
- `dlq list` on the plan's dead letters (`Plan.dead_letters`), written straight to a
  database of their own, timed as an operator runs it (a `leadpipe` process, start-up
  included) and in process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.plan import STEADY_RETENTIONS
from pipeline.states import DeadReason
from store.dead_letters import DeadLetters
from store.notifications import notify_keys
from store.records import LeadStore
from store.views import lead_bytes

#: How often the steady leg samples the state Redis's memory, seconds.
SAMPLE_SECONDS = 1.0
#: Delivered leads sampled for bytes per lead.
SAMPLE_LEADS = 1_000
#: Dead letters written per pipeline round trip.
DLQ_CHUNK = 2_000
LEADPIPE = str(Path(sys.executable).parent / "leadpipe")


def retention_env(retention_seconds: float) -> dict[str, str]:
    """The retention variables of the bench's pipeline workers."""
    days = f"{retention_seconds / 86_400:.8f}"
    return {"LEADPIPE_RETENTION_DAYS": days, "LEADPIPE_DEAD_RETENTION_DAYS": days}


def bytes_per_lead(client: redis.Redis) -> dict[str, Any]:
    """Median Redis bytes of the newest delivered leads, index share included."""
    store = LeadStore(client)
    newest: list[Any] = list(client.zrevrange(store.keys.finished, 0, SAMPLE_LEADS - 1))
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in newest]
    if not ids:
        return {"leads": 0}
    sizes = [size for size in lead_bytes(store, ids) if size]
    members = client.zcard(store.keys.finished) or 1
    index_share = (client.memory_usage(store.keys.finished, samples=0) or 0) / members
    median = statistics.median(sizes)
    return {
        "leads": len(sizes),
        "median": round(median + index_share),
        "record_and_keys_median": round(median),
        "index_share": round(index_share),
        "max": max(sizes),
    }


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def state_memory(client: redis.Redis) -> int:
    """The state Redis's used memory less what the broker's messages hold in it (the
    bench's broker is the same server: a queue backlog on a busy machine is not state)."""
    from tasks.depths import queue_keys
    from tasks.queues import ALL_QUEUES
    from tasks.scrub import UNACKED, UNACKED_INDEX

    pipe = client.pipeline(transaction=False)
    pipe.info("memory")
    for key in [*(k for q in ALL_QUEUES for k in queue_keys(q)), UNACKED, UNACKED_INDEX]:
        pipe.memory_usage(key, samples=0)
    info, *broker = pipe.execute()
    return int(info["used_memory"]) - sum(int(b or 0) for b in broker)


def memory_spread(samples: list[int]) -> dict[str, Any]:
    """How flat the state Redis's memory stayed: the largest distance of a sample from
    the median (percent of it: the ±N% of "flat within ±N%"), and (max - min) / median."""
    if not samples:
        return {"samples": 0}
    median = statistics.median(samples)
    return {
        "samples": len(samples),
        "used_mb": [round(s / 2**20, 1) for s in samples],
        "deviation_percent": round(100 * max(abs(s - median) for s in samples) / median, 1),
        "spread_percent": round(100 * (max(samples) - min(samples)) / median, 1),
    }


def steady_memory(
    client: redis.Redis, broker_url: str, rate: float, retention_seconds: float
) -> dict[str, Any]:
    """Offer `rate` leads/s for STEADY_RETENTIONS retention periods, sampling the state
    Redis's memory; the spread over the steady part (retention passed, expiry running)."""
    from bench import load

    upstream = load.upstream(broker_url)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(SAMPLE_SECONDS):
            samples.append((time.monotonic(), state_memory(client)))

    thread = threading.Thread(target=sample, name="memory-sampler", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        sent = load.paced_send(upstream, rate, retention_seconds * STEADY_RETENTIONS)
    finally:
        stop.set()
        thread.join(timeout=5)
        upstream.close()
    steady_from = started + retention_seconds * 1.5
    steady = [used for at, used in samples if at >= steady_from]
    figures = memory_spread(steady)
    figures.update(
        retention_seconds=retention_seconds,
        offered_per_s=round(rate, 1),
        leads=len(sent),
        all_samples_mb=[round(used / 2**20, 1) for _, used in samples],
    )
    return figures


def dlq_list_timing(url: str, dead_letters: int) -> dict[str, Any]:
    """Write `dead_letters` dead letters to the (empty) database at `url`, then time
    `leadpipe dlq list` as an operator runs it, and the listing itself in process."""
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = LeadStore(client)
    payload = json.dumps(
        {
            "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane.doe@example.com"},
            "vehicle": {"vin": "bad", "state": "CA", "mileage": 42000},
        }
    )
    error = json.dumps({"message": "vehicle.vin: must be 17 characters"})
    started = time.monotonic()
    now = time.time()
    for first in range(0, dead_letters, DLQ_CHUNK):
        pipe = client.pipeline(transaction=False)
        for n in range(first, min(first + DLQ_CHUNK, dead_letters)):
            store._create(  # the CREATE script, pipelined: one round trip per chunk
                keys=[
                    store.keys.lead(f"dlq-{n}"),
                    store.keys.active,
                    store.keys.state_counts,
                    store.keys.dead,
                    store.keys.dead_by_reason(DeadReason.INVALID),
                    *notify_keys(store.keys, f"dlq-{n}"),
                    store.keys.forgotten(f"dlq-{n}"),
                    store.keys.email("-"),
                ],
                args=[f"dlq-{n}", now - n / 1000, "dead", "0", "payload", payload, "error", error,
                      "reason", "invalid"],
                client=pipe,
            )  # fmt: skip
        pipe.execute()
    written = time.monotonic() - started
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADPIPE_", "MYKAARMA_"))}
    env["LEADPIPE_REDIS_URL"] = url
    command: dict[str, float] = {}
    commands = (
        ["--help"],
        ["dlq", "list"],
        ["dlq", "list", "--json"],
        ["dlq", "list", "--limit", "1000"],
    )
    for args in commands:  # `--help`: the process start-up and imports alone
        began = time.monotonic()
        done = subprocess.run(
            [LEADPIPE, *args], env=env, capture_output=True, timeout=120, check=False
        )
        command[" ".join(args)] = round(time.monotonic() - began, 3)
        if done.returncode != 0:
            raise RuntimeError(f"leadpipe {' '.join(args)} failed: {done.stderr[-500:]!r}")
    began = time.monotonic()
    listed = DeadLetters(store).entries(limit=100)
    in_process = time.monotonic() - began
    client.flushdb()
    client.close()
    return {
        "dead_letters": dead_letters,
        "written_seconds": round(written, 1),
        "command_seconds": command,
        "in_process_seconds_100": round(in_process, 4),
        "listed": len(listed),
    }
