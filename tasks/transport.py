"""kombu's Redis transport with reliable fetch, hardened against entries that are not
kombu messages.

Reliable fetch (tasks/fetch.py): a message leaves its queue only by an atomic move
into a list owned by the consuming channel, never by a plain pop, so a worker killed
at any instant loses nothing; the reaper of any live worker puts a dead consumer's
messages back. This replaces kombu's `unacked` hash and visibility timeout.

kombu's Redis channel pops an entry off a queue's list, parses it as its JSON
envelope and builds a Message from it. Anything else on the list (a string LPUSHed by
hand, an envelope without its properties, a body that is not base64) raises out of
the worker's event loop and stops the worker ("Unrecoverable error"). Here such an
entry is counted (`messages.unreadable`) and logged without its content, and the
worker goes on consuming. It carries no id we can trust, so it is dropped (removed
from the held list), as the contract says of a message without a readable id.

It also survives the loss of Redis itself (see `LeadChannel.close`).

Celery selects this transport for every Redis broker (`config.urls.Broker.REDIS`, tasks/celery.py).
"""

from __future__ import annotations

import logging
import weakref
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis import exceptions as redis_exceptions

from store.sentinel import demoted
from tasks import fetch
from tasks.envelope import check_envelope, count_unreadable
from tasks.fetch_ack import FetchAck, ReliableQoS
from tasks.fetch_upkeep import FetchUpkeep

log = logging.getLogger(__name__)

#: How long a multi-queue channel waits after an empty FETCH before the next, seconds:
#: a message arriving meanwhile waits that long at worst. Short right after a message
#: (traffic tends to continue: a lead's next stage is published a few ms later),
#: doubling on each empty FETCH up to the longest, so an idle worker polls ~10 times a
#: second and a busy one never waits long.
FETCH_BLOCK_MIN_SECONDS = 0.002
FETCH_BLOCK_MAX_SECONDS = 0.1
#: After the broker refuses a fetch (out of memory, read-only...), seconds to wait.
FETCH_ERROR_PAUSE_SECONDS = 1.0


class LeadChannel(FetchAck, FetchUpkeep, kombu_redis.Channel):
    """A Redis channel with reliable fetch, surviving an unreadable entry and a lost Redis.

    kombu's poller sends `_brpop_start`'s command on a dedicated connection and calls
    `_brpop_read` when its reply is readable; both are replaced: the command is the
    FETCH script over every queue key (no wait), or, after a FETCH that found nothing,
    a BLMOVE that waits on the queue's key when the channel consumes one queue; with
    several, the next FETCH comes after a short, growing idle wait (`_idle_wait`)."""

    QoS = ReliableQoS
    _shared_client: Any = None
    #: Transport options (seconds): see tasks/fetch.py for the defaults' reasons.
    fetch_heartbeat_interval = fetch.HEARTBEAT_SECONDS
    fetch_alive_ttl = fetch.ALIVE_TTL_SECONDS
    #: Replicas a publish waits for (`WAIT`), and for how long, ms: 0, off by default.
    publish_wait_replicas = 0
    publish_wait_ms = 100
    from_transport_options = (  # type: ignore[assignment]
        *kombu_redis.Channel.from_transport_options,
        "fetch_heartbeat_interval",
        "fetch_alive_ttl",
        "publish_wait_replicas",
        "publish_wait_ms",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.consumer_id = fetch.new_consumer_id()
        self._held = fetch.HeldMessages()
        self._fetch_mode = ""
        self._block_next = False
        self._block_turn = 0
        self._block_key = ""
        self._block_wait = FETCH_BLOCK_MIN_SECONDS
        self._idle_until = 0.0
        self._paused_until = 0.0
        self._registered_keys: frozenset[str] = frozenset()
        self._next_heartbeat = 0.0
        self._next_reap = 0.0
        self._next_audit = 0.0
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("leadpipe's reliable fetch does not support global_keyprefix")
        if self.publish_wait_replicas and getattr(self.connection.client, "alt", None):
            # kombu's failover to the next `;` URL switches to the transport that URL's
            # scheme names: from the first connection error on, publishes would no
            # longer wait for a replica, without a word.
            raise ValueError(
                "publish_wait_replicas needs a single broker URL, not ';'-separated "
                "alternatives: name the sentinels in the 'sentinels' transport option"
            )

    # -- fetching ------------------------------------------------------------------

    def _queue_keys(self) -> list[str]:
        queues = self._queue_cycle.consume(len(self.active_queues))
        return fetch.queue_keys_of(queues, self.priority_steps, self._q_for_pri)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if monotonic() < self._paused_until:
            return  # after an error reply: the event loop's next ticks retry
        keys = self._queue_keys()
        if not keys:
            return
        connection = self.client.connection
        queues = [k for k in keys if self.sep not in k] or keys
        if self._block_next and len(queues) > 1 and self._idle_wait():
            return  # several queues: FETCH again once the idle wait is over
        if self._block_next:
            # One queue: BLMOVE wakes as soon as it fills. (Without an event loop,
            # several queues take turns; Redis rounds a short timeout up to its tick.)
            key = self._block_key = queues[self._block_turn % len(queues)]
            self._block_turn += 1
            held = fetch.held_key(self.consumer_id, key)
            self._fetch_mode = "BLMOVE"
            connection.send_command("BLMOVE", key, held, "RIGHT", "LEFT", self.brpop_timeout)
        else:
            register = "1" if not self._registered_keys.issuperset(keys) else "0"
            self._registered_keys = self._registered_keys.union(keys)
            self._fetch_mode = "EVALSHA"
            connection.send_command(
                "EVALSHA", fetch.FETCH_SHA, 3 + len(keys),
                fetch.alive_key(self.consumer_id), fetch.REGISTRY_KEY,
                fetch.sources_key(self.consumer_id), *keys,
                self.consumer_id, int(self.fetch_alive_ttl * 1000),
                fetch.held_prefix(self.consumer_id), register,
            )  # fmt: skip
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]

    def _idle_wait(self) -> bool:
        """True while a multi-queue channel waits before its next FETCH (see
        `_start_idle_wait`)."""
        if not self._idle_until:
            return False
        if monotonic() < self._idle_until:
            return True
        self._idle_until = 0.0
        self._block_next = False
        return False

    def _start_idle_wait(self, queues: int) -> None:
        """After an empty FETCH on several queues: Redis can block a move on one key
        only, and rounds a blocking command's timeout up to its own tick (100 ms on
        Redis 6.2), so the wait is the event loop's: a timer wakes it after 2 ms, then
        4, 8... up to 100 ms while nothing comes. Set here, while events are handled,
        so the loop's next poll already waits for this timer and no longer."""
        hub = getattr(self.connection, "lead_hub", None)
        if hub is None or queues < 2:
            return
        wait = self._block_wait
        self._block_wait = min(wait * 2, FETCH_BLOCK_MAX_SECONDS)
        self._idle_until = monotonic() + wait
        hub.call_later(wait, _wake_up)
        _IDLE_CONSUMERS.add(self)

    def end_idle_wait(self) -> None:
        """In the event loop: a message was just published to one of our queues."""
        self._idle_until = 0.0
        self._block_next = False

    def _brpop_read(self, **options: Any) -> Any:
        try:
            mode = self._fetch_mode
            try:
                reply = self.client.parse_response(self.client.connection, mode, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except redis_exceptions.ResponseError as exc:
                self._fetch_refused(exc)
                raise Empty() from None
            if mode == "BLMOVE":
                self._block_next = False
                if reply is None:
                    raise Empty()
                source, raw = self._block_key, reply
            else:
                if not reply:
                    self._block_next = True
                    self._start_idle_wait(len(self.active_queues))
                    raise Empty()
                source, raw = bytes_to_str(reply[0]), reply[1]
            self._block_wait = FETCH_BLOCK_MIN_SECONDS
            self._deliver_held(source, raw)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _fetch_refused(self, exc: Exception) -> None:
        """An error reply to FETCH or BLMOVE: nothing was moved (Redis checks memory
        and writability before a script's first write), so the message is in its
        queue. Reload a flushed script; otherwise pause the fetch a moment."""
        if isinstance(exc, redis_exceptions.NoScriptError):
            with self.conn_or_acquire() as client:
                client.script_load(fetch.FETCH)
            return
        if demoted(exc):  # a demoted primary, or one cut off from its replicas:
            self.client.connection.disconnect()  # find the primary again
        self._paused_until = monotonic() + FETCH_ERROR_PAUSE_SECONDS
        log.warning(
            "broker refused a fetch (%s): messages stay in their queues; retrying in %gs",
            type(exc).__name__,
            FETCH_ERROR_PAUSE_SECONDS,
        )

    def _deliver_held(self, source: str, raw: bytes) -> None:
        held = fetch.Held(fetch.held_key(self.consumer_id, source), source, raw)
        queue = source.rsplit(self.sep, 1)[0]
        try:
            payload = loads(bytes_to_str(raw))
            check_envelope(payload, self.codecs)
        except Exception as exc:
            self._drop(held)
            count_unreadable(exc)
            raise Empty() from None
        self._held.add(payload["properties"]["delivery_tag"], held)
        self._queue_cycle.rotate(queue)
        try:
            self.connection._deliver(payload, queue)
        except (*self.connection.connection_errors, *self.connection.channel_errors):
            raise
        except Exception as exc:
            count_unreadable(exc)
            raise Empty() from None

    # -- publishing -------------------------------------------------------------------

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's LPUSH; with `publish_wait_replicas`, the LPUSH and a `WAIT n ms` on
        the same connection, so a publish returns only once a replica has it (a
        SIGKILLed primary then cannot take an acknowledged message with it). A publish
        no replica confirmed raises a connection error: kombu's publish retry sends it
        again (same id: the pipeline records a lead once)."""
        if not self.publish_wait_replicas:
            super()._put(queue, message, **kwargs)
            _wake_local_consumers(queue)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.lpush(key, dumps(message))
            pipe.execute_command("WAIT", self.publish_wait_replicas, self.publish_wait_ms)
            _, replicas = pipe.execute()
        if int(replicas) < self.publish_wait_replicas:
            raise NotReplicated(
                f"publish confirmed by {replicas} of {self.publish_wait_replicas} replica(s)"
            )

    @property
    def supports_batch_publish(self) -> bool:
        return not self.publish_wait_replicas and bool(super().supports_batch_publish)

    # -- kombu's channel, otherwise ------------------------------------------------------

    def _create_client(self, asynchronous: bool = False) -> Any:
        """One redis client per connection pool, instead of kombu's new one per call.

        kombu builds a client for every publish and every ack (`conn_or_acquire()`),
        and building one (redis-py fills a table of ~200 response callbacks) costs about
        what the command it then sends does: ~12% of a worker's CPU in `make bench`.
        A redis client is thread-safe (it takes a connection from the pool for each
        command), so the task threads can share it. After a reconnect kombu drops its
        pool; a client of the old pool is then replaced. The fetch's client is untouched."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()
        return client

    def close(self) -> None:
        """Close; when Redis is gone, leave the held messages where they are.

        After losing Redis, Celery drops the transport (`Connection.collect`) and then
        closes the connection, whose channel tries to hand its reserved messages back
        through that transport: an AttributeError that stops the worker ("Unrecoverable
        error") instead of letting it reconnect. Those messages are safe in their held
        list, which the reaper puts back once this consumer's heartbeat has expired."""
        try:
            super().close()
        except AttributeError:
            if self.connection is not None and self.connection.client is not None:
                raise
            log.warning(
                "broker connection lost: held messages are left to the reaper "
                "(they go back to their queues once this consumer's heartbeat expires)"
            )
            return


class NotReplicated(redis_exceptions.ConnectionError):
    """No replica confirmed a publish in time: as if the connection had failed."""


class LeadRedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with `LeadChannel`, checking each envelope's shape.

    Checked here because kombu would fail on it with a KeyError, which its Redis
    transport counts among *connection* errors: the worker would reconnect for
    nothing, and the entry would be lost without a trace."""

    Channel = LeadChannel

    #: The worker's event loop, once registered (multi-queue channels time their
    #: idle waits with it).
    lead_hub: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = LeadPoller()  # type: ignore[assignment]

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        self.lead_hub = loop
        super().register_with_event_loop(connection, loop)


class LeadPoller(kombu_redis.MultiChannelPoller):
    """kombu's poller, running each channel's heartbeat and reaper when due: at every
    poll (`drain_events`) and event-loop tick, busy or idle, so a consumer that is
    always busy still heartbeats and reaps."""

    def on_poll_start(self) -> None:
        for channel in list(self._channels):
            if isinstance(channel, LeadChannel):
                channel.maintain()
        super().on_poll_start()


def _wake_up() -> None:
    """A timer's only job: wake the event loop, whose next tick fetches again."""


#: Consuming channels of this process that went through an idle wait.
_IDLE_CONSUMERS: weakref.WeakSet[LeadChannel] = weakref.WeakSet()


def _wake_local_consumers(queue: str) -> None:
    """A task of this worker published to a queue this worker consumes (a lead's next
    stage): end the consumer's idle wait now, instead of at its timer (thread-safe:
    the event loop's call_soon)."""
    for channel in list(_IDLE_CONSUMERS):
        hub = getattr(channel.connection, "lead_hub", None) if channel.connection else None
        if hub is not None and channel._idle_until and queue in channel.active_queues:
            hub.call_soon(channel.end_idle_wait)
