"""What a worker process holds: settings, the Redis store, the routing file, the
myKaarma client. Built once per process (after a prefork fork, anew in the child)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cached_property

from config import Settings, load_settings
from pipeline.client import MyKaarmaClient
from pipeline.routing import NO_ROUTES, RoutingFile, RoutingTable
from store.connection import redis_client, redis_url
from store.lifecycle import LeadLifecycle, RetryPolicy
from store.records import LeadStore


@dataclass
class Runtime:
    """The long-lived objects of one worker process."""

    settings: Settings

    @cached_property
    def store(self) -> LeadStore:
        return LeadStore(redis_client(redis_url(self.settings)))

    @cached_property
    def routing_file(self) -> RoutingFile | None:
        path = self.settings.routing_file
        return RoutingFile(path) if path is not None else None

    def routing(self) -> RoutingTable:
        source = self.routing_file
        return source.current() if source is not None else NO_ROUTES

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
    def lifecycle(self) -> LeadLifecycle:
        s = self.settings
        return LeadLifecycle(
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
