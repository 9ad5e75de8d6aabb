"""Load generation: pre-loaded queues for throughput, a paced sender for latency.

Throughput legs pre-load their messages so the load generator takes no CPU while the
workers run: Celery itself publishes one template message (exactly what an upstream
`send_task` or `chain.apply_async` puts on the broker), the bench clones it with fresh
ids (every UUID in the message and its body gets a new one, so lead ids and
transactionIds are unique), pushes the clones onto a staging list, and releases them
with one atomic RENAME onto the live queue the already running, warmed-up workers
consume. The latency leg sends each lead with `send_task` as an upstream would.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, chain

from bench.baseline_app import CHAIN_STEPS, NAIVE_QUEUE, NAIVE_TASK
from bench.baseline_app import make_app as make_baseline_app
from tasks.queues import INGEST_QUEUE, INGEST_TASK

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Messages per LPUSH when staging.
PUSH_BATCH = 2_000
STAGING_SUFFIX = ":bench-staging"
#: Rename the staging list onto the live queue, unless the live queue is not empty.
_RELEASE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
"""


def lead_payload() -> dict[str, Any]:
    """A lead every rule accepts (VIN method), with a unique transactionId."""
    return {
        "lead": {"firstName": "Jane", "lastName": "Doe", "email": "jane.doe@example.com"},
        "vehicle": {"vin": "1HGCM82633A004352", "state": "CA", "mileage": 42000},
        "transactionId": str(uuid.uuid4()),
        "utmParameters": "utm_source=partner&utm_medium=cps&utm_campaign=bench",
    }


def upstream(broker_url: str) -> Celery:
    """A bare Celery client, as an upstream system has (nothing of leadpipe)."""
    app = Celery("upstream", broker=broker_url, set_as_current=False)
    app.conf.update(broker_connection_retry_on_startup=True, task_serializer="json")
    return app


class MessageCloner:
    """Copies of one broker message, each with fresh UUIDs (the reply_to oid kept)."""

    def __init__(self, raw: bytes) -> None:
        message = json.loads(raw)
        keep = str(message["properties"].get("reply_to", "")).encode()
        body = base64.b64decode(message["body"])
        message["body"] = "@BODY@"
        outer = json.dumps(message).encode()
        seen: dict[bytes, int] = {}  # one numbering for both: the body repeats the task id
        self._outer = self._split(outer, keep, seen)
        self._body = self._split(body, keep, seen)

    @staticmethod
    def _split(text: bytes, keep: bytes, seen: dict[bytes, int]) -> list[bytes | int]:
        """Literal pieces, and the number of the UUID that goes between them."""
        pieces: list[bytes | int] = []
        last = 0
        for match in _UUID.finditer(text):
            if match.group() == keep:
                continue
            pieces.append(text[last : match.start()])
            pieces.append(seen.setdefault(match.group(), len(seen)))
            last = match.end()
        pieces.append(text[last:])
        return pieces

    @staticmethod
    def _fill(pieces: list[bytes | int], ids: dict[int, bytes]) -> bytes:
        out = []
        for piece in pieces:
            if isinstance(piece, int):
                if piece not in ids:
                    ids[piece] = str(uuid.uuid4()).encode()
                out.append(ids[piece])
            else:
                out.append(piece)
        return b"".join(out)

    def clone(self) -> bytes:
        ids: dict[int, bytes] = {}
        outer = self._fill(self._outer, ids)
        body = base64.b64encode(self._fill(self._body, ids))
        return outer.replace(b"@BODY@", body, 1)


def capture_template(url: str, queue: str, send: Callable[[], None]) -> bytes:
    """What `send()` puts on `queue`, taken back off it (run on a scratch database)."""
    client = redis.Redis.from_url(url)
    try:
        client.delete(queue)
        send()
        raw = client.rpop(queue)
    finally:
        client.close()
    if not isinstance(raw, bytes):
        raise RuntimeError(f"no message appeared on {queue}")
    return raw


def pipeline_template(scratch_url: str, partner: str = "bench") -> bytes:
    app = upstream(scratch_url)
    try:
        return capture_template(
            scratch_url,
            INGEST_QUEUE,
            lambda: app.send_task(
                INGEST_TASK, args=[lead_payload()], kwargs={"partner": partner}, queue=INGEST_QUEUE
            ),
        )
    finally:
        app.close()


def chain_template(scratch_url: str) -> bytes:
    app = make_baseline_app(scratch_url)
    try:
        steps = [app.signature(name, immutable=True, queue=queue) for name, queue in CHAIN_STEPS]
        return capture_template(
            scratch_url,
            CHAIN_STEPS[0][1],
            lambda: chain(*steps).apply_async(),
        )
    finally:
        app.close()


def naive_template(scratch_url: str, url: str, body: dict[str, Any], auth: list[str]) -> bytes:
    app = make_baseline_app(scratch_url)
    try:
        return capture_template(
            scratch_url,
            NAIVE_QUEUE,
            lambda: app.send_task(NAIVE_TASK, args=[url, body, auth], queue=NAIVE_QUEUE),
        )
    finally:
        app.close()


@dataclass
class Preloaded:
    """N cloned messages staged next to `queue`, waiting for `release()`."""

    client: redis.Redis
    queue: str
    count: int

    @property
    def staging(self) -> str:
        return self.queue + STAGING_SUFFIX

    def release(self) -> float:
        """Hand the whole batch to the workers at once; returns the time it happened."""
        if not self.client.eval(_RELEASE, 2, self.staging, self.queue):
            raise RuntimeError(f"cannot release onto {self.queue}: it is not empty")
        return time.time()


def preload(
    client: redis.Redis, queue: str, template: bytes, count: int, *, mix: Sequence[bytes] = ()
) -> Preloaded:
    """Stage `count` clones; with `mix`, message i is a clone of the templates
    `(template, *mix)` in turn (e.g. one lead for a failing dealer in every ten)."""
    cloners = [MessageCloner(t) for t in (template, *mix)]
    staged = Preloaded(client, queue, count)
    client.delete(staged.staging)
    made = 0
    for batch in _batches(count, PUSH_BATCH):
        clones = [cloners[(made + i) % len(cloners)].clone() for i in range(batch)]
        client.lpush(staged.staging, *clones)
        made += batch
    return staged


def _batches(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


def paced_send(app: Celery, rate: float, duration: float) -> list[tuple[str, float]]:
    """Send leads at `rate` per second for `duration` seconds, on schedule (a late send
    does not shift the ones after it); returns (lead id, time sent)."""
    sent: list[tuple[str, float]] = []
    count = max(1, int(rate * duration))
    start = time.monotonic() + 0.05
    with app.producer_or_acquire() as producer:
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = time.time()
            result = app.send_task(
                INGEST_TASK,
                args=[lead_payload()],
                kwargs={"partner": "bench"},
                queue=INGEST_QUEUE,
                producer=producer,
            )
            sent.append((str(result.id), stamp))
    return sent
