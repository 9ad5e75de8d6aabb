"""kombu's Redis transport, hardened against queue entries that are not kombu messages.

kombu's Redis channel pops an entry off a queue's list, parses it as its JSON
envelope and builds a Message from it. Anything else on the list (a string LPUSHed by
hand, an envelope without its properties, a body that is not base64) raises out of
the worker's event loop and stops the worker ("Unrecoverable error"). Here such an
entry is counted (`messages.unreadable`) and logged without its content, and the
worker goes on consuming. It was already popped and carries no id we can trust, so
it is dropped, as the contract says of a message without a readable id.

It also survives the loss of Redis itself (see `LeadChannel.close`).

Celery selects this transport for `redis://` and `rediss://` brokers (tasks/celery.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

from tasks.runtime import runtime

log = logging.getLogger(__name__)


class LeadChannel(kombu_redis.Channel):
    """A Redis channel that survives an unreadable queue entry, and a lost Redis."""

    _shared_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One redis client per connection pool, instead of kombu's new one per call.

        kombu builds a client for every publish and every ack (`conn_or_acquire()`),
        and building one (redis-py fills a table of ~200 response callbacks) costs about
        what the command it then sends does: ~12% of a worker's CPU in `make bench`.
        A redis client is thread-safe (it takes a connection from the pool for each
        command), so the task threads can share it. After a reconnect kombu drops its
        pool; a client of the old pool is then replaced. BRPOP's client is untouched."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()
        return client

    def close(self) -> None:
        """Close; when Redis is gone, leave the reserved messages where they are.

        After losing Redis, Celery drops the transport (`Connection.collect`) and then
        closes the connection, whose channel tries to hand its reserved messages back
        through that transport: an AttributeError that stops the worker ("Unrecoverable
        error") instead of letting it reconnect. Those messages are safe in Redis's
        unacked set, restored after the visibility timeout, and their leads are
        re-enqueued by the sweeper after their lease anyway."""
        try:
            super().close()
        except AttributeError:
            if self.connection is not None and self.connection.client is not None:
                raise
            log.warning(
                "broker connection lost: reserved messages are left to Redis's "
                "visibility timeout and the sweeper"
            )

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)
        except Empty:
            raise
        except (*self.connection.connection_errors, *self.connection.channel_errors):
            raise
        except Exception as exc:
            _count_unreadable(exc)
            raise Empty() from None


class UnreadableEntry(ValueError):
    """A queue entry that parses as JSON but is not a kombu envelope."""


class LeadRedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with `LeadChannel`, checking each envelope's shape.

    Checked here because kombu would fail on it with a KeyError, which its Redis
    transport counts among *connection* errors: the worker would reconnect for
    nothing, and the entry would be lost without a trace."""

    Channel = LeadChannel

    def _deliver(self, message: Any, queue: str) -> None:
        _check_envelope(message, self.Channel.codecs)
        super()._deliver(message, queue)


def _check_envelope(message: Any, codecs: Mapping[str, Any]) -> None:
    """What kombu's virtual Message needs of an envelope, or UnreadableEntry."""
    if not isinstance(message, dict):
        raise UnreadableEntry("the entry is not a JSON object")
    properties = message.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        raise UnreadableEntry("the envelope has no properties with a delivery tag")
    encoding = properties.get("body_encoding")
    if encoding is not None and not (
        isinstance(encoding, str) and (encoding.lower() == "utf-8" or encoding in codecs)
    ):
        raise UnreadableEntry("the body encoding is unknown")
    if not isinstance(message.get("body"), str | bytes | None):
        raise UnreadableEntry("the body is not a string")
    if not isinstance(message.get("headers"), dict | None):
        raise UnreadableEntry("the headers are not an object")
    info = properties.get("delivery_info")
    if not (
        isinstance(info, dict)
        and isinstance(info.get("exchange"), str)
        and isinstance(info.get("routing_key"), str)
    ):
        raise UnreadableEntry("the delivery info has no exchange and routing key")


def _count_unreadable(exc: Exception) -> None:
    log.error(
        "unreadable entry on a queue dropped (%s): not a kombu message; "
        "send leads with Celery's send_task",
        type(exc).__name__,
    )
    try:
        runtime().store.count("messages.unreadable")
    except Exception:  # counting must never take the consumer down
        log.warning("could not count an unreadable queue entry", exc_info=True)
