"""A Sentinel-managed Redis: `redis+sentinel://[:password@]h1:p1,h2:p2/SERVICE/DB`.

One URL names the sentinels, the service (Sentinel's master name) and the database.
State clients get redis-py's `Sentinel(...).master_for(SERVICE)`, which asks the
sentinels for the current primary on every (re)connect; the broker gets kombu's
sentinel transport (leadpipe's reliable-fetch channel on top, tasks/transport.py),
which does the same. The password, when given, is the data nodes' password, and is
also sent to the sentinels (a deployment usually protects both alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from redis.exceptions import ConnectionError, ResponseError
from redis.sentinel import SentinelManagedConnection

SCHEME = "redis+sentinel://"
#: Sentinel's own default port, for a host given without one.
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    """The parts of a `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    password: str | None

    def kombu_url(self) -> str:
        """kombu's form: one `sentinel://` URL per sentinel, `;`-separated (failover
        alternatives); the service goes in the transport option `master_name`."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return ";".join(f"sentinel://{auth}{h}:{p}/{self.db}" for h, p in self.sentinels)

    def transport_options(self) -> dict[str, Any]:
        """kombu's options for a bare client of `kombu_url()`."""
        options: dict[str, Any] = {"master_name": self.service}
        if self.password:
            options["sentinel_kwargs"] = {"password": self.password}
        return options

    def lead_transport_broker(self) -> tuple[str, dict[str, Any]]:
        """URL and options for leadpipe's own transport (workers, and a careful sender's
        `LeadSentinelTransport`): the first sentinel in the URL, every sentinel in the
        `sentinels` option. Never `;` alternatives: on a connection error kombu switches
        to the next one and, with it, to the transport its scheme names (kombu's own),
        silently dropping reliable fetch and a publish's wait for a replica."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        host, port = self.sentinels[0]
        url = f"sentinel://{auth}{host}:{port}/{self.db}"
        options = {**self.transport_options(), "sentinels": [list(s) for s in self.sentinels]}
        return url, options


def demoted(exc: Exception) -> bool:
    """A write refused because this node is no longer the writable primary: a replica
    now (READONLY, also when wrapped in a script's error), or a primary cut off from
    its replicas (NOREPLICAS, `min-replicas-to-write`), as during a failover."""
    text = str(exc)
    return "READONLY" in text or "NOREPLICAS" in text


class FollowingConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, also leaving a primary that refuses writes from
    inside a Lua script: redis-py only recognises a bare READONLY reply, and a script's
    arrives wrapped ("Error running script ... -READONLY"), so every stage would fail
    on the demoted primary, never reconnecting. A connection error instead makes the
    client's retry reconnect, to whichever primary the sentinels name now."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if demoted(exc) and self.connection_pool.is_master:
                self.disconnect()  # type: ignore[no-untyped-call]
                raise ConnectionError(f"the primary refused a write: {exc}") from exc
            raise


def is_sentinel(url: str) -> bool:
    return url.startswith(SCHEME)


def parse(url: str) -> SentinelUrl:
    """Parse, or ValueError saying what the URL must look like."""
    shape = f"{SCHEME}[:password@]host1:port1,host2:port2/SERVICE_NAME/DB"
    if not is_sentinel(url):
        raise ValueError(f"must look like {shape}")
    rest = url[len(SCHEME) :]
    password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1] if ":" in auth else auth) or None
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p != ""]
    if not hosts or not 1 <= len(parts) <= 2:
        raise ValueError(f"must look like {shape}")
    service = unquote(parts[0])
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ValueError(f"the database must be a number: {shape}") from None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        item = item.strip()
        host, port = item.rsplit(":", 1) if ":" in item else (item, "")
        host = host.strip("[]")
        try:
            sentinels.append((host, int(port) if port else DEFAULT_SENTINEL_PORT))
        except ValueError:
            raise ValueError(f"bad sentinel address {item!r}: {shape}") from None
    if not all(h for h, _ in sentinels):
        raise ValueError(f"must look like {shape}")
    return SentinelUrl(tuple(sentinels), service, db, password)


def master_client(url: str, **client_kwargs: Any) -> Any:
    """A redis client of the service's current primary (follows failovers)."""
    from redis.sentinel import Sentinel

    parts = parse(url)
    sentinel_kwargs = {"password": parts.password} if parts.password else {}
    sentinel_kwargs.update(
        {
            k: client_kwargs[k]
            for k in ("socket_timeout", "socket_connect_timeout")
            if k in client_kwargs
        }
    )
    manager = Sentinel(list(parts.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call, unused-ignore]
    master = manager.master_for  # redis-py's Sentinel is untyped
    return master(
        parts.service,
        db=parts.db,
        password=parts.password,
        connection_class=FollowingConnection,
        **client_kwargs,
    )  # type: ignore[no-untyped-call, unused-ignore]
