"""How many messages wait in each of leadpipe's queues: the one queue-depth function.

`leadpipe stats`, the Prometheus exporter and the demo all ask this module. A Redis
broker keeps a queue as Redis lists (one per priority step, kombu's layout), so the
depth is a sum of LLENs; RabbitMQ answers a passive `queue_declare` with the count.
Messages a worker holds unacknowledged are not counted on either broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import redis
from kombu.connection import Connection
from kombu.exceptions import ChannelError, OperationalError
from kombu.transport.redis import PRIORITY_STEPS, Channel

from config.urls import Broker, broker_kind
from store.connection import probe_client
from tasks.queues import ALL_QUEUES

#: Seconds a depth probe may take before the depth is reported as unknown.
PROBE_TIMEOUT_SECONDS = 3.0


def queue_keys(queue: str) -> list[str]:
    """Every Redis list kombu may hold `queue`'s messages in (one per priority step)."""
    return [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]


def redis_queue_depths(client: redis.Redis, queues: Iterable[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each queue of a Redis broker, in one round trip.

    Raises `redis.RedisError` when Redis cannot answer (the caller decides what that
    means: the exporter reports `leadpipe_redis_up 0`)."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in queue_keys(queue):
            pipe.llen(key)
    lengths = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {q: int(sum(lengths[i * steps : (i + 1) * steps])) for i, q in enumerate(names)}


def _amqp_queue_depths(url: str, queues: Iterable[str]) -> dict[str, int]:
    depths: dict[str, int] = {}
    try:
        with Connection(url, connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1)
            for name in queues:
                channel = conn.channel()
                try:
                    ok = channel.queue_declare(queue=name, passive=True)
                    depths[name] = int(ok.message_count)
                except ChannelError:
                    pass  # not declared yet: depth unknown, left out
                finally:
                    with contextlib.suppress(Exception):  # the broker may have closed it
                        channel.close()
    except (OperationalError, OSError):
        return depths
    return depths


def queue_depths(broker_url: str, queues: Iterable[str] = ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each queue of the broker at `broker_url`; a queue whose depth
    cannot be read (broker down, queue not declared yet) is left out."""
    kind = broker_kind(broker_url)
    if kind is Broker.REDIS:
        client = probe_client(broker_url, PROBE_TIMEOUT_SECONDS)
        try:
            return redis_queue_depths(client, queues)
        except redis.RedisError:
            return {}
        finally:
            client.close()
    if kind is Broker.AMQP:
        return _amqp_queue_depths(broker_url, queues)
    return {}
