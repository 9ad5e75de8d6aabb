"""What Flower's broker API (Broker page, `/api/queues/length`) needs from leadpipe.

Flower picks its broker client by the URL's scheme, and the worker's connection names
leadpipe's own Redis transport (`tasks.transport:LeadRedisTransport://...`), which
Flower answered with 404 ("'redis' broker is not supported"); `plain_broker_url`
gives it the configured URL in a scheme it knows.

RabbitMQ's queue lengths come from its management API: Flower's `broker_api` option
(`FLOWER_BROKER_API`, e.g. `http://user:password@rabbit:15672/api/`), by default the
broker's host on port 15672 with the broker's credentials. Flower joins the vhost
into that URL unquoted, so the default vhost `/` asked for `/api//queues//` (404);
`LeadRabbitMQ` quotes it (`/api/queues/%2F`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlparse

from flower.utils.broker import Broker, RabbitMQ

#: RabbitMQ's management API port (rabbitmq_management plugin).
MANAGEMENT_PORT = 15672
_AMQP_SCHEMES = ("amqp", "amqps")


def plain_broker_url(url: str) -> str:
    """The broker URL in a scheme Flower's broker API knows (redis, rediss, amqp,
    amqps, redis+socket)."""
    if url.startswith("pyamqp://"):
        return "amqp://" + url.removeprefix("pyamqp://")
    if url.startswith("unix://"):
        return "redis+socket://" + url.removeprefix("unix://").split("?", 1)[0]
    return url


class LeadRabbitMQ(RabbitMQ):
    """Flower's RabbitMQ client with the vhost quoted into the management API path."""

    def __init__(self, broker_url: str, http_api: str | None = None, **kwargs: Any) -> None:
        super().__init__(broker_url, http_api, **kwargs)
        raw = urlparse(broker_url).path[1:]
        self.vhost = quote(unquote(raw) or "/", safe="")
        if not http_api:  # credentials come from the broker URL (Flower's fallback)
            self.http_api = f"http://{self.host}:{MANAGEMENT_PORT}/api/"


def lead_broker(broker_url: str, *args: Any, **kwargs: Any) -> Any:
    """Flower's `Broker` factory, with LeadRabbitMQ for AMQP URLs."""
    if urlparse(broker_url).scheme in _AMQP_SCHEMES:
        return LeadRabbitMQ(broker_url, *args, **kwargs)
    return Broker(broker_url, *args, **kwargs)
