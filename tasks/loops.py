"""Worker start-up checks and the two background loops every worker runs.

- The retry releaser: every RETRY_POLL_SECONDS, leads whose backoff has passed leave
  the retry schedule in Redis and are enqueued on `leads.deliver`. Waiting retries live
  in Redis, not in worker memory, so a worker restart forgets none of them.
- The sweeper: leads untouched past their lease (a message lost with a Redis restart,
  a worker killed mid-delivery) are enqueued again; the delivery guard makes a second
  message harmless.

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

from config import SettingsError
from pipeline.errors import RoutingFileError
from tasks.celery import app
from tasks.lead_tasks import follow
from tasks.queues import DELIVER_QUEUE
from tasks.runtime import runtime

log = logging.getLogger(__name__)

#: How often due retries are looked for, seconds: the error on a backoff delay.
RETRY_POLL_SECONDS = 0.05
#: Sweeps per lease: a stuck lead waits at most lease * (1 + 1/SWEEPS_PER_LEASE).
SWEEPS_PER_LEASE = 4
#: Exit code of a worker refused at start-up for its configuration.
EXIT_CONFIG = 3


@worker_init.connect
def check_configuration(sender: Any = None, **_: Any) -> None:
    """Refuse to start, with a message naming the problem, rather than fail per lead."""
    try:
        rt = runtime()
        consumes = set(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
        if DELIVER_QUEUE in consumes:
            rt.settings.require_mykaarma_credentials()
        rt.routing()
    except (SettingsError, RoutingFileError) as exc:
        sys.stderr.write(f"leadpipe worker: {exc}\n")
        raise SystemExit(EXIT_CONFIG) from None


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
    """Runs the retry releaser and the sweeper in a daemon thread of the worker."""

    label = "leadpipe loops"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leadpipe-loops", daemon=True)
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        lifecycle = runtime().lifecycle
        sweep_every = min(30.0, max(0.2, lifecycle.lease_seconds / SWEEPS_PER_LEASE))
        next_sweep = time.monotonic() + random.uniform(0, sweep_every)
        log.info(
            "leadpipe loops started: retries polled every %.2fs, sweep every %.1fs",
            RETRY_POLL_SECONDS,
            sweep_every,
        )
        while not self._stop.wait(RETRY_POLL_SECONDS):
            try:
                for step in lifecycle.release_due_retries():
                    follow(step)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_every
                    for step in lifecycle.sweep():
                        follow(step)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("leadpipe loops: Redis unavailable (%s); retrying", type(exc).__name__)
                self._stop.wait(1.0)
            except Exception:
                log.exception("leadpipe loops: unexpected error; continuing")
                self._stop.wait(1.0)


app.steps["worker"].add(LeadLoops)
