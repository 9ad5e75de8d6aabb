"""Queue and task names: the public part is CONTRACT section 3."""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

INGEST_TASK = "leads.ingest"
ENRICH_TASK = "leads.enrich"
DELIVER_TASK = "leads.deliver"
NOTIFY_TASK = "leads.notify"

INGEST_QUEUE = "leads.ingest"
ENRICH_QUEUE = "leads.enrich"
DELIVER_QUEUE = "leads.deliver"
#: Outcome notifications to partners (CONTRACT section 9), apart from lead delivery.
NOTIFY_QUEUE = "leads.notify"
#: Celery's default queue: a sender that forgets `queue=` lands here, and we consume it.
DEFAULT_QUEUE = "celery"

ALL_QUEUES = (INGEST_QUEUE, ENRICH_QUEUE, DELIVER_QUEUE, NOTIFY_QUEUE, DEFAULT_QUEUE)
#: Queues whose tasks are CPU-bound and short (parse, validate, route).
CPU_QUEUES = (INGEST_QUEUE, ENRICH_QUEUE, DEFAULT_QUEUE)
#: Queues whose tasks wait on myKaarma: run on a threads pool.
IO_QUEUES = (DELIVER_QUEUE,)
#: Queues whose tasks wait on partners' webhook endpoints: threads of their own, so a
#: slow partner never takes a thread that a lead's delivery needs.
NOTIFY_QUEUES = (NOTIFY_QUEUE,)


def declare(name: str, queue_arguments: dict[str, Any] | None = None) -> Queue:
    """A queue bound to a direct exchange of its own name, as a bare Celery client
    declares it for `send_task(..., queue=name)`, so both sides agree on RabbitMQ too
    (with `{"x-queue-type": "quorum"}` for quorum queues)."""
    return Queue(
        name, Exchange(name, type="direct"), routing_key=name, queue_arguments=queue_arguments
    )
