"""Reliable fetch over kombu's Sentinel transport, for `redis+sentinel://` URLs."""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from store.sentinel import FollowingConnection
from tasks.transport import LeadChannel, LeadRedisTransport


class LeadSentinelChannel(LeadChannel, kombu_redis.SentinelChannel):
    """Reliable fetch over kombu's Sentinel channel: its pools ask the sentinels for
    the current primary on every connect, so after a failover the worker's reconnect
    finds the new one. A fetch that reaches a demoted primary gets READONLY: nothing
    moved, the connection is dropped and the next one goes to the new primary."""

    #: Transport option: every sentinel, [[host, port], ...]. kombu reads them from a
    #: `;`-separated URL instead, but treats those as failover alternatives: its
    #: reconnect then switches URL, and with it back to its own transport (the scheme's),
    #: silently dropping reliable fetch. Hence one URL, and the sentinels here.
    sentinels: Any = None
    connection_class = FollowingConnection
    from_transport_options = (  # type: ignore[assignment]
        *LeadChannel.from_transport_options,
        "master_name",
        "min_other_sentinels",
        "sentinel_kwargs",
        "sentinel_fanout_compat",
        "sentinels",
    )

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        """kombu's, with the sentinels of the transport option."""
        if not self.sentinels:
            return super()._sentinel_managed_pool(asynchronous)
        from redis.sentinel import Sentinel

        params = {
            k: v for k, v in self._connparams(asynchronous).items() if k not in ("host", "port")
        }
        manager = Sentinel(
            [(str(host), int(port)) for host, port in self.sentinels],
            min_other_sentinels=getattr(self, "min_other_sentinels", 0),
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None),
            **params,
        )
        if asynchronous:
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        auth = {k: params[k] for k in ("username", "password") if k in params}
        master = getattr(self, "master_name", None)
        if master is None:
            raise ValueError("'master_name' transport option must be specified.")
        return manager.master_for(master, redis.Redis, **auth).connection_pool


class LeadSentinelTransport(LeadRedisTransport):
    """`LeadRedisTransport` for a Sentinel-managed Redis (kombu's `sentinel://` URLs)."""

    Channel = LeadSentinelChannel
    default_port = kombu_redis.SentinelTransport.default_port  # type: ignore[assignment]
