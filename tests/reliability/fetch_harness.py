"""Bounded consumer processes for the reliable-fetch tests: kombu consumers on the
stock Redis transport or on leadpipe's, forked from the test process (a fork costs a
few milliseconds, so hundreds of them can be killed at random instants).

Each consumer records the id of every message it handles in a Redis set (SADD, so a
redelivered message counts once) and then acknowledges it. A *hook* installed in the
child before it connects can SIGKILL it at one exact point of kombu's fetch path.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer
from kombu.transport import redis as kombu_redis

from tasks import transport as lead_transport

#: Short timings so a dead consumer's messages come back within a second or two.
FAST_FETCH = {"fetch_alive_ttl": 1.0, "fetch_heartbeat_interval": 0.2}
#: The stock transport, as a bare Celery worker runs it (with a short visibility
#: timeout, so its own restore is not what makes a message look lost).
STOCK_OPTIONS = {"visibility_timeout": 1, "unacked_restore_throttle": 1}

TRANSPORTS: dict[str, type[Any]] = {
    "stock": kombu_redis.Transport,
    "leadpipe": lead_transport.LeadRedisTransport,
}
_FORK = multiprocessing.get_context("fork")


def queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish(url: str, name: str, ids: Iterable[str]) -> None:
    """What a bare client does: kombu's LPUSH of a JSON envelope per message."""
    with Connection(url) as conn:
        producer = Producer(conn)
        q = queue(name)
        for message_id in ids:
            producer.publish({"id": message_id}, exchange=q.exchange, routing_key=name, declare=[q])


def publish_many(url: str, name: str, ids: Sequence[str]) -> None:
    """The same envelopes as `publish`, LPUSHed in pipelines: kombu's publish of
    one, copied with each id and a fresh delivery tag (thousands per second)."""
    client = redis.Redis.from_url(url)
    publish(url, name, [ids[0]])
    template = json.loads(client.rpop(name))  # type: ignore[arg-type]
    pipe = client.pipeline(transaction=False)
    for n, message_id in enumerate(ids):
        envelope = copy.deepcopy(template)
        envelope["body"] = base64.b64encode(json.dumps({"id": message_id}).encode()).decode()
        envelope["properties"]["delivery_tag"] = str(uuid.uuid4())
        pipe.lpush(name, json.dumps(envelope))
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()


def suicide(*_: Any, **__: Any) -> None:
    """The hook's action: die here, as `kill -9` would."""
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at(cls: type[Any], method: str) -> Callable[[], None]:
    """A hook that makes the child SIGKILL itself when `cls.method` is first called."""

    def install() -> None:
        setattr(cls, method, suicide)

    return install


def consume(
    url: str,
    name: str,
    done_key: str,
    *,
    transport: str = "leadpipe",
    options: dict[str, Any] | None = None,
    seconds: float = 30.0,
    prefetch: int = 4,
    ack: bool = True,
    hook: Callable[[], None] | None = None,
    until: int | None = None,
    die_after: int | None = None,
    declare: bool = True,
) -> None:
    """Consume `name` for at most `seconds` (or until `done_key` has `until` members)."""
    if hook is not None:
        hook()
    client = redis.Redis.from_url(url)
    opts = {**(FAST_FETCH if transport == "leadpipe" else STOCK_OPTIONS), **(options or {})}
    with Connection(url, transport=TRANSPORTS[transport], transport_options=opts) as conn:
        handled = 0

        def handle(body: Any, message: Any) -> None:
            nonlocal handled
            if not client.sadd(done_key, body["id"]):
                client.incr(done_key + ":again")  # handled twice (at-least-once)
            handled += 1
            if die_after is not None and handled >= die_after:
                suicide()  # the message handled, not acknowledged
            if ack:
                message.ack()

        consumer = conn.Consumer(
            queue(name), callbacks=[handle], prefetch_count=prefetch, auto_declare=declare
        )
        with consumer:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if until is not None and client.scard(done_key) >= until:
                    break
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.2)


def fork(target: Callable[..., None], *args: Any, **kwargs: Any) -> Any:
    """Run `target` in a forked child that exits without running the parent's
    atexit handlers or pytest's teardown."""

    def run() -> None:
        code = 0
        try:
            target(*args, **kwargs)
        except BaseException:
            code = 1
        os._exit(code)

    proc = _FORK.Process(target=run, daemon=True)
    proc.start()
    return proc


def wait_dead(proc: Any, timeout: float = 10.0) -> int:
    proc.join(timeout)
    assert proc.exitcode is not None, "the consumer did not stop"
    return int(proc.exitcode)
