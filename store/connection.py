"""From settings to Redis URLs and clients: the embedded default lives behind this."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.settings import Settings
from store.embedded import ensure_embedded_redis
from store.sentinel import is_sentinel, master_client

#: Reconnect attempts of one Redis command while Redis restarts (about 15 s in all).
RECONNECT_ATTEMPTS = 12
#: Longest wait for one Redis reply, seconds: a Redis that accepts a connection and
#: then stalls (a paused VM, a full disk on a synchronous write) fails the command and
#: the stage is retried later, instead of holding a worker thread forever. No command
#: of ours blocks on purpose, and every Lua script is bounded (at most 500 ids a call).
SOCKET_TIMEOUT_SECONDS = 10.0


def redis_url(settings: Settings) -> str:
    """LEADPIPE_REDIS_URL, or the embedded Redis under LEADPIPE_HOME (started if needed)."""
    return settings.redis_url or ensure_embedded_redis(settings.home)


def broker_url(settings: Settings) -> str:
    """LEADPIPE_BROKER_URL, else the Redis above."""
    return settings.broker_url_override or redis_url(settings)


def redis_client(url: str) -> redis.Redis:
    """A client that rides out a Redis restart (or a Sentinel failover: it reconnects
    to whichever primary the sentinels name) instead of failing the lead in hand."""
    options: dict[str, Any] = {
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), RECONNECT_ATTEMPTS),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    if is_sentinel(url):
        client: redis.Redis = master_client(url, **options)
        return client
    return redis.Redis.from_url(url, **options)


def probe_client(url: str, timeout: float) -> redis.Redis:
    """A client for one quick look (queue depths): no retries, short timeouts; a
    `redis+sentinel://` URL reaches the current primary."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if is_sentinel(url):
        client: redis.Redis = master_client(url, **options)
        return client
    return redis.Redis.from_url(url, **options)
