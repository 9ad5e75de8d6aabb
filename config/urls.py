"""Which URLs leadpipe can use, and for what: the one table of schemes.

A state Redis URL (`LEADPIPE_REDIS_URL`) is opened by redis-py; a broker URL
(`LEADPIPE_BROKER_URL`, or the Redis URL when it is unset) by kombu. They accept
different schemes: redis-py speaks `unix://` but kombu has no `unix` transport
(`Connection('unix://...')` raises "No such transport: unix"), so a `unix://` Redis
can hold state but never carry messages. Settings refuse any other URL at start-up,
naming the variable, instead of the first worker failing later.

To support a new scheme (e.g. `redis+sentinel://`), add one row to `SCHEMES`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum


class Broker(StrEnum):
    """The kind of broker behind a URL: how its queues are read and which transport runs."""

    REDIS = "redis"  # kombu's Redis transport: queues are Redis lists
    AMQP = "amqp"  # RabbitMQ: queue depths come from a passive queue_declare


@dataclass(frozen=True, slots=True)
class Scheme:
    """What a URL scheme can be used for."""

    state: bool  # redis-py can open it as the state Redis
    broker: Broker | None  # kombu can use it as a broker (None: it cannot)


#: Every scheme leadpipe accepts, and for what. Anything else is refused at start-up.
SCHEMES: dict[str, Scheme] = {
    "redis": Scheme(state=True, broker=Broker.REDIS),
    "rediss": Scheme(state=True, broker=Broker.REDIS),
    "unix": Scheme(state=True, broker=None),  # kombu has no unix transport
    # A Sentinel-managed Redis (store/sentinel.py): redis-py's Sentinel for state,
    # kombu's sentinel transport (with leadpipe's reliable fetch) as broker.
    "redis+sentinel": Scheme(state=True, broker=Broker.REDIS),
    "amqp": Scheme(state=False, broker=Broker.AMQP),
    "amqps": Scheme(state=False, broker=Broker.AMQP),
    "pyamqp": Scheme(state=False, broker=Broker.AMQP),
}

STATE_VARIABLE = "LEADPIPE_REDIS_URL"
BROKER_VARIABLE = "LEADPIPE_BROKER_URL"


def scheme_of(url: str) -> str:
    """The scheme of `url`, lower-cased ('' when it has none)."""
    head, sep, _ = url.partition("://")
    return head.strip().lower() if sep else ""


def _names(usable: list[str]) -> str:
    return ", ".join(f"{name}://" for name in usable)


STATE_SCHEMES = [name for name, s in SCHEMES.items() if s.state]
BROKER_SCHEMES = [name for name, s in SCHEMES.items() if s.broker is not None]


def check_state_url(url: str, variable: str = STATE_VARIABLE) -> str:
    """`url` if redis-py can use it as the state Redis; else ValueError naming `variable`."""
    scheme = SCHEMES.get(scheme_of(url))
    if scheme is None or not scheme.state:
        raise ValueError(
            f"{variable} must start with one of {_names(STATE_SCHEMES)} "
            f"(got {scheme_of(url) or 'no scheme'})"
        )
    return _check_sentinel(url, variable)


def check_broker_url(url: str, variable: str = BROKER_VARIABLE) -> str:
    """`url` if kombu can use it as the broker; else ValueError naming `variable`."""
    scheme = SCHEMES.get(scheme_of(url))
    if scheme is None or scheme.broker is None:
        hint = ""
        if variable == STATE_VARIABLE:
            hint = f"; {BROKER_VARIABLE} defaults to it, so set {BROKER_VARIABLE} too"
        raise ValueError(
            f"{variable} cannot be the Celery broker: a broker URL must start with one of "
            f"{_names(BROKER_SCHEMES)} (got {scheme_of(url) or 'no scheme'}){hint}"
        )
    return _check_sentinel(url, variable)


def _check_sentinel(url: str, variable: str) -> str:
    """A `redis+sentinel://` URL must name its sentinels, service and database."""
    if scheme_of(url) != "redis+sentinel":
        return url
    from store.sentinel import parse  # pure parsing; no client is built here

    try:
        parse(url)
    except ValueError as exc:
        raise ValueError(f"{variable} {exc}") from None
    return url


def broker_kind(url: str) -> Broker | None:
    """The kind of broker `url` names (None for a URL that is no broker)."""
    scheme = SCHEMES.get(scheme_of(url))
    return scheme.broker if scheme is not None else None


def is_loopback(address: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False
