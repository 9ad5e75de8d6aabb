"""The upkeep of a reliable-fetch consumer (tasks/fetch.py): its heartbeat, the reaper
every worker runs, the audit of its own held lists, and its retirement at a clean close.
A mixin of `tasks.transport.LeadChannel`, kept apart so each module has one job."""

from __future__ import annotations

import logging
from time import monotonic, time
from typing import Any

from redis import exceptions as redis_exceptions

from tasks import fetch

log = logging.getLogger(__name__)

#: Heartbeats between two audits of a consumer's own held lists.
AUDIT_EVERY = 5


class FetchUpkeep:
    """Heartbeat, reaper, audit and retirement; needs a kombu Redis channel's
    `conn_or_acquire`, `qos`, `active_queues` and `connection_errors`."""

    consumer_id: str
    fetch_heartbeat_interval: float
    fetch_alive_ttl: float
    _registered_keys: frozenset[str]
    _next_heartbeat: float
    _next_reap: float
    _next_audit: float
    _held: fetch.HeldMessages
    _in_poll: Any
    active_queues: Any
    connection_errors: Any
    priority_steps: Any
    qos: Any
    visibility_timeout: Any
    unacked_index_key: str

    conn_or_acquire: Any  # kombu's methods, annotated only (a stub would shadow them)
    _q_for_pri: Any

    def maintain(self) -> None:
        """Heartbeat and reaper of a consuming channel, when due; never raises: an
        unreachable or refusing Redis is retried at the next call."""
        if not self.active_queues:
            return  # a publishing channel, or one that stopped consuming
        now = monotonic()
        try:
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + self.fetch_heartbeat_interval
                self._heartbeat()
            if now >= self._next_reap:
                self._next_reap = now + self.fetch_heartbeat_interval
                self._reap()
                self._restore_legacy()
            if now >= self._next_audit and not self._in_poll:
                self._next_audit = now + self.fetch_heartbeat_interval * AUDIT_EVERY
                self._audit()
        except (*self.connection_errors, redis_exceptions.ResponseError) as exc:
            log.warning("reliable fetch upkeep failed (%s); retrying", type(exc).__name__)

    def _heartbeat(self) -> None:
        keys = fetch.queue_keys_of(self.active_queues, self.priority_steps, self._q_for_pri)
        self._registered_keys = self._registered_keys.union(keys)
        with self.conn_or_acquire() as client:
            fetch.run(client, fetch.HEARTBEAT_SHA, fetch.HEARTBEAT,
                fetch.alive_key(self.consumer_id), fetch.REGISTRY_KEY,
                fetch.sources_key(self.consumer_id), *keys,
                args=(self.consumer_id, int(self.fetch_alive_ttl * 1000)),
            )  # fmt: skip

    def _reap(self) -> None:
        with self.conn_or_acquire() as client:
            moved = fetch.run(
                client, fetch.REAP_SHA, fetch.REAP, fetch.REGISTRY_KEY, args=(fetch.PREFIX,)
            )
            if moved:
                log.warning(
                    "reliable fetch: %s message(s) of dead consumers put back in their queues",
                    moved,
                )

    def _audit(self) -> None:
        """Put back what this consumer's held lists hold but it does not: an ack whose
        LREM never landed (Redis restarted or failed over between the two, a demoted
        primary taking the LREM and then its data discarded). Without this such an
        entry would stay held, never redelivered, for as long as this consumer lives.
        Runs only with no fetch in flight, so every message moved for us is known."""
        mine = self._held.raws()
        with self.conn_or_acquire() as client:
            for source in sorted(self._registered_keys):
                key = fetch.held_key(self.consumer_id, source)
                for raw in client.lrange(key, 0, -1):
                    if mine[raw] > 0:
                        mine[raw] -= 1
                        continue
                    args = (raw, raw, "0")
                    if fetch.run(client, fetch.REQUEUE_SHA, fetch.REQUEUE, key, source, args=args):
                        log.warning("reliable fetch: an orphaned held message put back")

    def _restore_legacy(self) -> None:
        """Messages left in kombu's own `unacked` hash (by a worker of an earlier
        release) go back once past their visibility timeout. Without kombu's mutex:
        each restore is a WATCH transaction, safe however many workers run it, and a
        killed holder cannot block every restore for `unacked_mutex_expire` (300 s)."""
        with self.conn_or_acquire() as client:
            if not client.zcard(self.unacked_index_key):
                return
            ceil = time() - self.visibility_timeout
            tags = client.zrange(
                self.unacked_index_key, ceil, 0, desc=True, byscore=True, offset=0, num=100
            )
            for tag in tags:
                self.qos.restore_by_tag(tag, client)

    def retire(self) -> None:
        """After a clean close: unregister when nothing is held (else the reaper will)."""
        with self.conn_or_acquire() as client:
            keys = [fetch.held_key(self.consumer_id, k) for k in self._registered_keys]
            if keys and any(client.llen(k) for k in keys):
                return
            pipe = client.pipeline()
            pipe.delete(fetch.alive_key(self.consumer_id), fetch.sources_key(self.consumer_id))
            pipe.srem(fetch.REGISTRY_KEY, self.consumer_id)
            pipe.execute()
