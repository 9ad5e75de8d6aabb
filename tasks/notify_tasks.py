"""The `leads.notify` task: one attempt for each outcome notification of a batch.

The message carries only event ids (`msg_...`, leadpipe's own), a batch of one
partner's; what to send is in Redis. It runs on threads of its own
(`leadpipe.runner`), so a partner endpoint that is slow or down only ever delays
notifications, never a lead.
"""

from __future__ import annotations

from tasks.celery import app
from tasks.lead_tasks import requeue_when_redis_is_down
from tasks.queues import NOTIFY_QUEUE, NOTIFY_TASK
from tasks.runtime import runtime


@app.task(name=NOTIFY_TASK)
def notify(event_ids: list[str] | str) -> list[str]:
    """Send a batch of one partner's notifications, one attempt each (an event already
    sent, or held by another attempt, is skipped)."""
    batch = [event_ids] if isinstance(event_ids, str) else [str(i) for i in event_ids]
    with requeue_when_redis_is_down(f"(notifications {batch[:1]}...)"):
        return runtime().notifier.send_batch(batch)


def enqueue(batches: list[list[str]]) -> None:
    """One `leads.notify` message per batch (the loops call this for due ones)."""
    for batch in batches:
        notify.apply_async((batch,), queue=NOTIFY_QUEUE)
