"""Reliable fetch on the Redis broker: a message leaves its queue only by an atomic move.

kombu's Redis channel takes a message with BRPOP and records it as unacknowledged
with a second command (HSET unacked) from the client. Between the two it exists only
in the worker's memory, or still unread in its socket: a worker killed there loses
it for good (kombu#305, celery#7950). Here, as in Dramatiq's Redis broker and
Sidekiq's super_fetch, a message is moved inside Redis (a Lua script, or BLMOVE)
from its queue's list into a list owned by the consuming channel, the *held* list:

    _leadpipe.fetch.held.<consumer>.<queue key>

so at every instant it is in exactly one Redis list. Each consumer keeps a key
alive (`_leadpipe.fetch.alive.<consumer>`, refreshed on every fetch and by a
heartbeat, expiring after a TTL) and registers itself in `_leadpipe.fetch.consumers`
with the queue keys it takes from. Ack and reject remove the message from the held
list (LREM); a requeue moves it back in the same script. Every worker runs the
reaper: the held lists of a registered consumer whose alive key expired go back to
the head of their queues, all in one script, so several reapers at once are safe.

Upstream senders are untouched: they LPUSH onto the same lists (the priority
siblings too), and queue lengths (Flower, `leadpipe stats`) are still LLEN.

A full Redis (`maxmemory`, `noeviction`) refuses the script or BLMOVE before it
writes anything, so the message stays in its queue.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import NoScriptError

log = logging.getLogger(__name__)

PREFIX = "_leadpipe.fetch."
#: The set of consumers that may hold messages.
REGISTRY_KEY = PREFIX + "consumers"
#: Seconds between two heartbeats of a consuming channel, and between two reaper runs
#: of a worker.
HEARTBEAT_SECONDS = 3.0
#: Seconds a consumer stays alive after its last heartbeat or fetch; then any worker's
#: reaper puts its held messages back. Longer than any stall of a live worker's event
#: loop; short enough that a dead worker's messages come back well within 2 minutes.
ALIVE_TTL_SECONDS = 15.0


def alive_key(consumer: str) -> str:
    return f"{PREFIX}alive.{consumer}"


def sources_key(consumer: str) -> str:
    return f"{PREFIX}sources.{consumer}"


def held_prefix(consumer: str) -> str:
    return f"{PREFIX}held.{consumer}."


def held_key(consumer: str, source: str) -> str:
    return held_prefix(consumer) + source


def new_consumer_id() -> str:
    """Unique per channel; host and pid make an operator's `redis-cli` readable."""
    return f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:12]}"


#: Refresh the consumer's alive key (first: on a full Redis nothing below runs),
#: register it when it was not (first fetch, or reaped while stalled) or when asked,
#: then move one message from the first non-empty queue key into its held list.
#: KEYS: alive, registry, sources, queue keys...; ARGV: consumer, ttl ms, held
#: prefix, register ('1' to register the queue keys even when alive).
#: Returns {queue key, message} or false.
FETCH = """
local alive = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
if alive == 0 or ARGV[4] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
  for i = 4, #KEYS do redis.call('SADD', KEYS[3], KEYS[i]) end
end
for i = 4, #KEYS do
  local item = redis.call('LMOVE', KEYS[i], ARGV[3] .. KEYS[i], 'RIGHT', 'LEFT')
  if item then return {KEYS[i], item} end
end
return false
"""

#: Heartbeat: refresh the alive key and the registration (cheap; keeps a consumer
#: that holds messages but fetches none, its prefetch full, from being reaped).
#: KEYS: alive, registry, sources, queue keys...; ARGV: consumer, ttl ms.
HEARTBEAT = """
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
for i = 4, #KEYS do redis.call('SADD', KEYS[3], KEYS[i]) end
return 1
"""

#: Put back the held messages of every registered consumer whose alive key expired,
#: oldest at the head of its queue (next to be taken), and forget the consumer.
#: KEYS: registry; ARGV: prefix. Returns the number of messages put back.
REAP = """
local moved = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. 'alive.' .. id) == 0 then
    local sources = ARGV[1] .. 'sources.' .. id
    for _, src in ipairs(redis.call('SMEMBERS', sources)) do
      local held = ARGV[1] .. 'held.' .. id .. '.' .. src
      while redis.call('LMOVE', held, src, 'LEFT', 'RIGHT') do moved = moved + 1 end
    end
    redis.call('DEL', sources)
    redis.call('SREM', KEYS[1], id)
  end
end
return moved
"""

#: Requeue one held message: only if it is still held (so a message the reaper already
#: put back is not put back twice). KEYS: held, queue key; ARGV: held raw, new raw,
#: '1' for the tail (consumed last, as kombu's reject(requeue=True)) or '0' the head.
REQUEUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[3] == '1' then
  redis.call('LPUSH', KEYS[2], ARGV[2])
else
  redis.call('RPUSH', KEYS[2], ARGV[2])
end
return 1
"""


def _sha(script: str) -> str:
    """The name Redis gives a script (EVALSHA)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


FETCH_SHA = _sha(FETCH)
HEARTBEAT_SHA = _sha(HEARTBEAT)
REAP_SHA = _sha(REAP)
REQUEUE_SHA = _sha(REQUEUE)


def run(client: Any, sha: str, script: str, *keys: str, args: tuple[Any, ...] = ()) -> Any:
    """EVALSHA, loading the script on NOSCRIPT (a restarted or flushed Redis)."""
    try:
        return client.evalsha(sha, len(keys), *keys, *args)
    except NoScriptError:
        client.script_load(script)
        return client.evalsha(sha, len(keys), *keys, *args)


@dataclass
class Held:
    """A message this consumer holds: where it is, and its exact bytes (for LREM)."""

    key: str
    source: str
    raw: bytes


@dataclass
class HeldMessages:
    """Delivery tag -> the held copies of it (thread-safe: task threads ack)."""

    _by_tag: dict[str, list[Held]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, tag: str, held: Held) -> None:
        with self._lock:
            self._by_tag.setdefault(tag, []).append(held)

    def pop(self, tag: str) -> Held | None:
        with self._lock:
            copies = self._by_tag.get(tag)
            if not copies:
                return None
            held = copies.pop(0)
            if not copies:
                del self._by_tag[tag]
            return held

    def raws(self) -> Counter[bytes]:
        """How many copies of each exact envelope this consumer knows it holds."""
        with self._lock:
            return Counter(h.raw for copies in self._by_tag.values() for h in copies)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(c) for c in self._by_tag.values())


def held_messages(client: Any) -> list[tuple[str, bytes]]:
    """Every message held by any consumer right now: (queue key, raw envelope).

    For operators and tests: what kombu used to keep in its `unacked` hash."""
    found: list[tuple[str, bytes]] = []
    for consumer in sorted(_text(c) for c in client.smembers(REGISTRY_KEY)):
        for source in sorted(_text(s) for s in client.smembers(sources_key(consumer))):
            for raw in client.lrange(held_key(consumer, source), 0, -1):
                found.append((source, raw))
    return found


def held_count(client: Any) -> int:
    """How many messages consumers hold (taken from a queue, not yet acknowledged)."""
    return len(held_messages(client))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def queue_keys_of(queues: Iterable[str], steps: Sequence[int], q_for_pri: Any) -> list[str]:
    """kombu's BRPOP order: every queue at the first priority step, then the next."""
    names = list(queues)
    keys: list[str] = []
    for pri in steps:
        for queue in names:
            key = q_for_pri(queue, pri)
            if key not in keys:
                keys.append(key)
    return keys
