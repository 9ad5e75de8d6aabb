"""The three tasks: thin wrappers that run a pipeline stage and enqueue the next one.

After ingest, messages carry only the lead id. A Redis failure that outlasts the
client's own reconnect attempts puts the message back on the queue (nothing is
acknowledged until its stage is written), after a pause so a Redis outage does not
become a hot loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery.exceptions import Reject

from store.lifecycle import Step
from tasks.celery import app
from tasks.consumer import usable_lead_id
from tasks.queues import (
    DELIVER_QUEUE,
    DELIVER_TASK,
    ENRICH_QUEUE,
    ENRICH_TASK,
    INGEST_TASK,
)
from tasks.runtime import runtime

log = logging.getLogger(__name__)

#: Pause before handing a message back while Redis is unreachable, seconds.
REDIS_DOWN_PAUSE_SECONDS = 1.0


@contextmanager
def _requeue_when_redis_is_down(lead_id: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning(
            "lead %s: Redis unavailable (%s); message requeued", lead_id, type(exc).__name__
        )
        time.sleep(REDIS_DOWN_PAUSE_SECONDS)
        raise Reject(exc, requeue=True) from None


def follow(step: Step) -> None:
    """Enqueue the task a stage asked for (lead id only)."""
    if step.next == "enrich":
        enrich.apply_async((step.lead_id,), queue=ENRICH_QUEUE)
    elif step.next == "deliver":
        deliver.apply_async((step.lead_id,), queue=DELIVER_QUEUE)


def _run(lead_id: str, stage: Callable[[], Step]) -> str:
    with _requeue_when_redis_is_down(lead_id):
        step = stage()
        follow(step)
    return step.outcome


@app.task(name=INGEST_TASK, Request="tasks.request:MaskedRequest")
def ingest(*args: object, **kwargs: Any) -> str:
    """Accept a lead from an upstream system; its message id is the lead id.

    Takes whatever a sender put in the message (the payload positionally or as
    `payload=`, any keyword at all: even `self`), so that no mix-up of arguments can
    fail the task before the lead is recorded."""
    lead_id = str(ingest.request.id)
    if not usable_lead_id(lead_id):
        return _unusable_id(lead_id)
    if args:
        payload, extra = args[0], args[1:]
    else:
        payload, extra = kwargs.pop("payload", None), ()
    partner = kwargs.pop("partner", None)
    received_at = kwargs.pop("received_at", None)
    ignored = tuple(f"args[{i + 1}]" for i in range(len(extra))) + tuple(sorted(kwargs))
    return _run(
        lead_id,
        lambda: runtime().lifecycle.ingest(
            lead_id, payload, partner=partner, received_at=received_at, ignored=ignored
        ),
    )


def _unusable_id(lead_id: str) -> str:
    """A message whose id cannot name a lead (a Redis key, a header, a log line): it is
    counted and logged, never recorded under a mangled id its sender would not know."""
    with _requeue_when_redis_is_down("(unusable id)"):
        runtime().store.count("messages.unreadable")
    log.error(
        "leads.ingest message dropped: its id (%d characters) cannot name a lead; "
        "use 1-200 letters, digits and . _ : @ -",
        len(lead_id),
    )
    return "dropped:unusable-id"


@app.task(name=ENRICH_TASK)
def enrich(lead_id: str) -> str:
    """Normalize, validate, resolve and route a received lead."""
    return _run(lead_id, lambda: runtime().lifecycle.enrich(lead_id))


@app.task(name=DELIVER_TASK)
def deliver(lead_id: str) -> str:
    """One delivery attempt to myKaarma, under the delivery guard."""
    return _run(lead_id, lambda: runtime().lifecycle.deliver(lead_id))
