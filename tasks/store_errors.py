"""Store errors: named, logged with their kind, counted, and never the end of a lead.

Any Redis error while a stage runs (unreachable, a timeout, or an error reply: OOM
under `noeviction`, READONLY after a failover, MISCONF when persistence fails,
WRONGTYPE, NOSCRIPT, LOADING, ...) leaves the message unacknowledged and requeued, so
the stage runs again once Redis answers (CONTRACT section 4). The worker keeps
running; the background loops retry on their next round.

The count (`leadpipe_store_errors_total{kind}`) cannot be written while Redis refuses
writes, so each process keeps its own tally and adds it to Redis's counters hash on
the loops' next round that Redis accepts.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import redis

from store.errors import store_error_kind

log = logging.getLogger(__name__)

#: Counter fields in Redis's counters hash: `store_errors.<kind>`.
STORE_ERRORS_PREFIX = "store_errors."


class StoreErrorTally:
    """Store errors seen by this process and not yet added to Redis's counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()

    def note(self, exc: BaseException, where: str) -> str:
        """Log and count one store error; returns its kind."""
        kind = store_error_kind(exc)
        with self._lock:
            self._pending[kind] += 1
        log.warning("%s: store error (%s: %s); will be retried", where, kind, type(exc).__name__)
        return kind

    @property
    def pending(self) -> bool:
        """Whether some errors are not in Redis yet (a cheap check for the hot path)."""
        return bool(self._pending)

    def flush(self, client: redis.Redis, counters_key: str) -> None:
        """Add the pending tally to Redis (kept for next time if Redis refuses)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        if not pending:
            return
        try:
            pipe = client.pipeline(transaction=False)
            for kind, n in pending.items():
                pipe.hincrby(counters_key, STORE_ERRORS_PREFIX + kind, n)
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._pending.update(pending)


#: This process's tally (tasks and loops share it).
TALLY = StoreErrorTally()
