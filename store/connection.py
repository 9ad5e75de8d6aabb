"""From settings to Redis URLs and clients: the embedded default lives behind this."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from config.settings import Settings
from store.embedded import ensure_embedded_redis

#: Reconnect attempts of one Redis command while Redis restarts (about 15 s in all).
RECONNECT_ATTEMPTS = 12


def redis_url(settings: Settings) -> str:
    """LEADPIPE_REDIS_URL, or the embedded Redis under LEADPIPE_HOME (started if needed)."""
    return settings.redis_url or ensure_embedded_redis(settings.home)


def broker_url(settings: Settings) -> str:
    """LEADPIPE_BROKER_URL, else the Redis above."""
    return settings.broker_url_override or redis_url(settings)


def redis_client(url: str) -> redis.Redis:
    """A client that rides out a Redis restart instead of failing the lead in hand."""
    return redis.Redis.from_url(
        url,
        socket_keepalive=True,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), RECONNECT_ATTEMPTS),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
