"""Acknowledgement under reliable fetch (tasks/fetch.py): a fetched message is already
in Redis, in its consumer's held list, so ack and reject remove it there and a requeue
moves it back to its queue, atomically. A mixin of `tasks.transport.LeadChannel` and
the QoS that calls it, kept apart so each module has one job."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis import exceptions as redis_exceptions

from tasks import fetch

log = logging.getLogger(__name__)


class FetchAck:
    """Ack, reject and requeue by held list; needs a kombu Redis channel's
    `conn_or_acquire` and `connection_errors`."""

    _held: fetch.HeldMessages
    connection_errors: Any

    conn_or_acquire: Any  # kombu's method, annotated only (a stub would shadow it)

    def forget_held(self, delivery_tag: str) -> None:
        """Ack or reject: the message leaves its held list (LREM of its exact bytes)."""
        held = self._held.pop(delivery_tag)
        if held is not None:
            self._drop(held)

    def _drop(self, held: fetch.Held) -> None:
        try:
            with self.conn_or_acquire() as client:
                client.lrem(held.key, 1, held.raw)
        except (*self.connection_errors, redis_exceptions.RedisError) as exc:
            _unsettled("an acknowledgement", exc)

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        self.requeue_held(message.delivery_tag, leftmost)

    def requeue_held(self, delivery_tag: str, leftmost: bool = False) -> None:
        """Put a held message back in its queue, marked redelivered, as kombu does:
        at the head (next to be taken), or for a reject with requeue, at the tail.
        One this consumer no longer holds (already handed back) is left alone."""
        held = self._held.pop(delivery_tag)
        if held is None:
            return
        payload = loads(bytes_to_str(held.raw))
        with contextlib.suppress(KeyError, TypeError):
            payload["headers"]["redelivered"] = True
            payload["properties"]["delivery_info"]["redelivered"] = True
        try:
            with self.conn_or_acquire() as client:
                fetch.run(client, fetch.REQUEUE_SHA, fetch.REQUEUE, held.key, held.source,
                     args=(held.raw, dumps(payload), "1" if leftmost else "0"))  # fmt: skip
        except (*self.connection_errors, redis_exceptions.RedisError) as exc:
            _unsettled("a requeue", exc)

    def _restore_at_beginning(self, message: Any) -> None:
        self._restore(message, leftmost=True)


class ReliableQoS(kombu_redis.QoS):
    """Acknowledgement by the held lists of reliable fetch (tasks/fetch.py).

    A fetched message is already in Redis (its consumer's held list) when kombu
    appends it here, so nothing is written; ack and reject remove it there."""

    channel: Any  # tasks.transport.LeadChannel

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self.channel.forget_held(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """By delivery tag alone: after a reconnect kombu no longer has the message
        object (its close handed everything back), and looking it up would fail."""
        if requeue:
            self.channel.requeue_held(delivery_tag, leftmost=True)
            virtual.QoS.ack(self, delivery_tag)
        else:
            self.ack(delivery_tag)

    def restore_unacked(self, client: Any = None) -> Any:
        return virtual.QoS.restore_unacked(self)  # -> channel._restore, one by one

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        """At close: put back what was not acknowledged, then unregister."""
        result = virtual.QoS.restore_unacked_once(self, stderr)
        if self.channel._registered_keys:
            try:
                self.channel.retire()
            except Exception:  # the reaper retires it later
                log.debug("could not retire a consumer", exc_info=True)
        return result

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's periodic scan: here the heartbeat and the reaper, when due."""
        self.channel.maintain()


def _unsettled(what: str, exc: Exception) -> None:
    """An ack or requeue Redis refused (down, failing over, full): never fatal. The
    message stays in the held list, unknown to its consumer now, so the consumer's
    audit (or, once it is gone, the reaper) puts it back: at worst it runs again."""
    log.warning(
        "reliable fetch: %s failed (%s); the held message will be put back by the audit",
        what,
        type(exc).__name__,
    )
