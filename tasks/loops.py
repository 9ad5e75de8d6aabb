"""Worker start-up checks and the two background loops every worker runs.

- The retry releaser: every RETRY_POLL_SECONDS, leads whose backoff has passed leave
  the retry schedule in Redis and are enqueued on `leads.deliver`. Waiting retries live
  in Redis, not in worker memory, so a worker restart forgets none of them.
- The held-lead releaser, in the same loop: probes for dealers whose breaker cooldown
  has passed, held leads of dealers whose breaker closed (paced by the dealer's rate),
  and held leads past LEADPIPE_MAX_LEAD_AGE_HOURS become dead `expired`. It also
  publishes the routing file's dealer rates to Redis when the file changes.
- The sweeper: leads untouched past their lease (a message lost with a Redis restart,
  a worker killed mid-delivery) are enqueued again; the delivery guard makes a second
  message harmless.
- Retention (CONTRACT section 7): every EXPIRE_POLL_SECONDS at most, delivered and
  duplicate leads past LEADPIPE_RETENTION_DAYS and dead letters past
  LEADPIPE_DEAD_RETENTION_DAYS are erased, every key of them (store/erasure.py).

A store error in any of them is logged with its kind and counted; the loop goes on
at its next round.

Both are safe to run in many workers at once: each claim is one Lua script.
"""

from __future__ import annotations

import gc
import logging
import random
import sys
import threading
import time
from typing import Any

import redis
from celery import bootsteps
from celery.signals import worker_init, worker_process_init, worker_ready

from leadpipe.exit_codes import exit_code_for
from pipeline.errors import ConfigError
from store.erasure import EXPIRE_BATCH
from tasks.celery import app
from tasks.lead_tasks import follow
from tasks.notify_tasks import enqueue as enqueue_notifications
from tasks.queues import DELIVER_QUEUE, NOTIFY_QUEUE
from tasks.runtime import runtime
from tasks.store_errors import TALLY

log = logging.getLogger(__name__)

#: How often due retries are looked for, seconds: the error on a backoff delay.
RETRY_POLL_SECONDS = 0.05
#: Sweeps per lease: a stuck lead waits at most lease * (1 + 1/SWEEPS_PER_LEASE).
SWEEPS_PER_LEASE = 4
#: Longest pause between two retention passes, seconds; shorter when the retention
#: itself is short (a twentieth of it, at least EXPIRE_MIN_SECONDS), so what waits for
#: erasure stays within 5% of what is kept.
EXPIRE_POLL_SECONDS = 30.0
EXPIRE_MIN_SECONDS = 0.5


@worker_init.connect
def check_configuration(sender: Any = None, **_: Any) -> None:
    """Refuse to start, with a message naming the problem, rather than fail per lead."""
    try:
        rt = runtime()
        consumes = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
        if DELIVER_QUEUE in consumes:
            rt.settings.require_mykaarma_credentials()
        rt.routing()
    except ConfigError as exc:
        sys.stderr.write(f"leadpipe worker: {exc}\n")
        raise SystemExit(exit_code_for(exc)) from None
    try:
        rt.publish_dealer_rates()  # before the first delivery, not a loop tick later
    except redis.RedisError as exc:
        log.warning("dealer rates not published yet (%s); the loops retry", type(exc).__name__)


@worker_ready.connect
@worker_process_init.connect
def freeze_startup_objects(**_: Any) -> None:
    """Hide what start-up built (modules, settings, clients) from the garbage collector.

    A full collection walks every tracked object: in a worker that is ~60 ms, a stall
    that lands on whichever leads are in flight (the p99). Frozen (`gc.freeze`), the
    start-up objects are skipped and a full collection takes ~1 ms (`make bench`)."""
    gc.collect()
    gc.freeze()


class LeadLoops(bootsteps.StartStopStep):
    """Runs the retry releaser and the sweeper in a daemon thread of the worker; a
    worker that consumes `leads.notify` also releases due notifications (one that
    does not would enqueue messages nobody here reads, again after every lease)."""

    label = "leadpipe loops"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify = False

    def start(self, worker: Any) -> None:
        queues = worker.app.amqp.queues
        self._notify = NOTIFY_QUEUE in set(queues.consume_from or queues)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leadpipe-loops", daemon=True)
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        rt = runtime()
        stages = rt.stages
        notifier = rt.notifier
        sweep_every = min(30.0, max(0.2, stages.lease_seconds / SWEEPS_PER_LEASE))
        next_sweep = time.monotonic() + random.uniform(0, sweep_every)
        shortest = min(rt.settings.retention_seconds, rt.settings.dead_retention_seconds)
        expire_every = min(EXPIRE_POLL_SECONDS, max(EXPIRE_MIN_SECONDS, shortest / 20))
        next_expiry = time.monotonic() + random.uniform(0, expire_every)
        log.info(
            "leadpipe loops started: retries polled every %.2fs, sweep every %.1fs",
            RETRY_POLL_SECONDS,
            sweep_every,
        )
        while not self._stop.wait(RETRY_POLL_SECONDS):
            try:
                rt.publish_dealer_rates()
                for step in stages.release_due_retries():
                    follow(step)
                for step in stages.release_held():
                    follow(step)
                if self._notify:
                    enqueue_notifications(notifier.release_due())
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_every
                    for step in stages.sweep():
                        follow(step)
                if time.monotonic() >= next_expiry:
                    next_expiry = time.monotonic() + expire_every
                    self._expire(rt)
                TALLY.flush(rt.store.redis, rt.store.keys.counters)
            except redis.RedisError as exc:
                TALLY.note(exc, "leadpipe loops")
                self._stop.wait(1.0)
            except Exception:
                log.exception("leadpipe loops: unexpected error; continuing")
                self._stop.wait(1.0)

    def _expire(self, rt: Any) -> None:
        """Erase expired leads, a batch at a time, until none is due (or stopping)."""
        erased = EXPIRE_BATCH
        total = 0
        while erased >= EXPIRE_BATCH and not self._stop.is_set():
            erased = rt.eraser.expire_due(
                retention_seconds=rt.settings.retention_seconds,
                dead_retention_seconds=rt.settings.dead_retention_seconds,
            )
            total += erased
        if total:
            log.info("retention: %d expired lead(s) erased", total)


app.steps["worker"].add(LeadLoops)
