"""The three tasks: thin wrappers that run a pipeline stage and enqueue the next one.

After ingest, messages carry only the lead id. Any store error (Redis unreachable
past the client's own reconnect attempts, or an error reply: OOM, READONLY, MISCONF,
WRONGTYPE, ...) puts the message back on the queue: nothing is acknowledged until its
stage is written. It is logged with its kind and counted (tasks/store_errors.py), and
the message waits a pause first so a Redis outage does not become a hot loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery.exceptions import Reject

from pipeline.stages import Step
from store.errors import store_error_kind
from tasks.celery import app
from tasks.consumer import MAX_LEAD_ID_CHARS, escaped_id, usable_lead_id
from tasks.outcomes import LeadDead, report
from tasks.queues import (
    DELIVER_QUEUE,
    DELIVER_TASK,
    ENRICH_QUEUE,
    ENRICH_TASK,
    INGEST_TASK,
)
from tasks.runtime import runtime
from tasks.store_errors import TALLY

log = logging.getLogger(__name__)

#: Pause before handing a message back after a store error, seconds.
REDIS_DOWN_PAUSE_SECONDS = 1.0


@contextmanager
def requeue_when_redis_is_down(lead_id: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        TALLY.note(exc, f"lead {lead_id}: message requeued")
        time.sleep(REDIS_DOWN_PAUSE_SECONDS)
        raise Reject(store_error_kind(exc), requeue=True) from None


def follow(step: Step) -> None:
    """Enqueue the task a stage asked for (lead id only)."""
    if step.next == "enrich":
        enrich.apply_async((step.lead_id,), queue=ENRICH_QUEUE)
    elif step.next == "deliver":
        deliver.apply_async((step.lead_id,), queue=DELIVER_QUEUE)


def _run(lead_id: str, stage: Callable[[], Step], task: str = "") -> str:
    with requeue_when_redis_is_down(lead_id):
        step = stage()
        follow(step)
    if TALLY.pending:  # a pool child has no loops thread: it adds its own tally
        store = runtime().store
        TALLY.flush(store.redis, store.keys.counters)
    return report(lead_id, step.outcome, step.next, task=task)  # LeadDead for a dead lead


@app.task(name=INGEST_TASK, Request="tasks.request:MaskedRequest", throws=(LeadDead,))
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
        lambda: runtime().stages.ingest(
            lead_id, payload, partner=partner, received_at=received_at, ignored=ignored
        ),
        "ingest",
    )


def _unusable_id(lead_id: str) -> str:
    """A message whose id cannot name a lead (a Redis key, a header, a log line): it is
    counted and logged, never recorded under a mangled id its sender would not know."""
    with requeue_when_redis_is_down("(unusable id)"):
        runtime().stages.drop_message(
            f"{INGEST_TASK} message with the id {escaped_id(lead_id)}: it cannot name a "
            f"lead; use 1-{MAX_LEAD_ID_CHARS} characters, no control characters"
        )
    return "dropped:unusable-id"


@app.task(name=ENRICH_TASK, throws=(LeadDead,))
def enrich(lead_id: str) -> str:
    """Normalize, validate, resolve and route a received lead."""
    return _run(lead_id, lambda: runtime().stages.enrich(lead_id))


@app.task(name=DELIVER_TASK, throws=(LeadDead,))
def deliver(lead_id: str) -> str:
    """One delivery attempt to myKaarma, under the delivery guard."""
    return _run(lead_id, lambda: runtime().stages.deliver(lead_id))
