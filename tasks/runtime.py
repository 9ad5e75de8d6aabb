"""What a worker process holds: settings, the Redis store, the routing file, the
myKaarma client. Built once per process (after a prefork fork, anew in the child)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property

from config import Settings, load_settings
from pipeline.breaker import BreakerPolicy
from pipeline.client import MyKaarmaClient
from pipeline.notify_stage import Notifier, NotifyPolicy
from pipeline.routing import NO_ROUTES, RoutingFile, RoutingTable
from pipeline.stages import RetryPolicy, Stages
from pipeline.webhook_client import WebhookSender
from store.connection import redis_client, redis_url
from store.dealers import DealerLimits, DealerStore
from store.erasure import Eraser
from store.keys import Keys
from store.notifications import NotificationStore
from store.records import LeadStore


@dataclass
class Runtime:
    """The long-lived objects of one worker process."""

    settings: Settings
    _published: RoutingTable | None = field(default=None, init=False, repr=False)

    @cached_property
    def store(self) -> LeadStore:
        s = self.settings
        client = redis_client(redis_url(s))
        keys = Keys()
        dealers = DealerStore(
            client,
            keys,
            BreakerPolicy(
                failures=s.breaker_failures,
                cooldown_seconds=s.breaker_cooldown_seconds,
                max_cooldown_seconds=s.retry_max_delay_seconds,
            ),
            DealerLimits(
                lease_seconds=s.lease_seconds,
                max_attempts=s.retry_max_attempts,
                max_age_seconds=s.max_lead_age_seconds,
            ),
        )
        return LeadStore(client, keys, dealers)

    @cached_property
    def eraser(self) -> Eraser:
        """Retention and forget over the same Redis client as the store."""
        return Eraser(self.store.redis, self.store.keys)

    @cached_property
    def routing_file(self) -> RoutingFile | None:
        path = self.settings.routing_file
        return RoutingFile(path) if path is not None else None

    def routing(self) -> RoutingTable:
        source = self.routing_file
        return source.current() if source is not None else NO_ROUTES

    def publish_dealer_rates(self) -> None:
        """Publish the routing file's `[dealers]` rates to the guard in Redis when the
        file changed (or on the first call): every worker and replay shares them."""
        table = self.routing()
        if table is not self._published:
            self.store.dealers.sync_rates(table.dealer_rates)
            self._published = table

    @cached_property
    def client(self) -> MyKaarmaClient:
        username, password = self.settings.require_mykaarma_credentials()
        return MyKaarmaClient(
            self.settings.mykaarma_base_url,
            username,
            password,
            timeout=self.settings.http_timeout_seconds,
            pool_size=self.settings.deliver_concurrency,
        )

    @cached_property
    def stages(self) -> Stages:
        """The pipeline stages (`pipeline/stages.py`) over this process's store."""
        s = self.settings
        return Stages(
            store=self.store,
            routing=self.routing,
            client=lambda: self.client,
            retry=RetryPolicy(
                max_attempts=s.retry_max_attempts,
                base_seconds=s.retry_base_seconds,
                max_delay_seconds=s.retry_max_delay_seconds,
            ),
            lease_seconds=s.lease_seconds,
            max_payload_bytes=s.max_payload_bytes,
        )

    @cached_property
    def notifications(self) -> NotificationStore:
        return NotificationStore(self.store.redis, self.store.keys)

    @cached_property
    def sender(self) -> WebhookSender:
        return WebhookSender(
            timeout=self.settings.http_timeout_seconds,
            pool_size=self.settings.notify_concurrency,
        )

    @cached_property
    def notifier(self) -> Notifier:
        """Outcome notifications (`pipeline/notify_stage.py`): the lead backoff, their
        own attempt limit, the webhook of the partner in the routing file in force."""
        s = self.settings
        return Notifier(
            store=self.notifications,
            targets=lambda partner: self.routing().webhook_for(partner),
            sender=lambda: self.sender,
            policy=NotifyPolicy(
                max_attempts=s.notify_max_attempts,
                base_seconds=s.retry_base_seconds,
                max_delay_seconds=s.retry_max_delay_seconds,
            ),
            lease_seconds=s.lease_seconds,
        )


_lock = threading.Lock()
_current: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    """This process's Runtime (a forked child builds its own: sockets don't cross fork)."""
    global _current
    current = _current
    if current is not None and current[0] == os.getpid():
        return current[1]
    with _lock:
        if _current is None or _current[0] != os.getpid():
            _current = (os.getpid(), Runtime(load_settings()))
        return _current[1]
