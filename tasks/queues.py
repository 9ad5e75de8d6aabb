"""Queue and task names: the public part is CONTRACT section 3."""

from __future__ import annotations

from kombu.entity import Exchange, Queue

INGEST_TASK = "leads.ingest"
ENRICH_TASK = "leads.enrich"
DELIVER_TASK = "leads.deliver"

INGEST_QUEUE = "leads.ingest"
ENRICH_QUEUE = "leads.enrich"
DELIVER_QUEUE = "leads.deliver"
#: Celery's default queue: a sender that forgets `queue=` lands here, and we consume it.
DEFAULT_QUEUE = "celery"

ALL_QUEUES = (INGEST_QUEUE, ENRICH_QUEUE, DELIVER_QUEUE, DEFAULT_QUEUE)
#: Queues whose tasks are CPU-bound and short (parse, validate, route).
CPU_QUEUES = (INGEST_QUEUE, ENRICH_QUEUE, DEFAULT_QUEUE)
#: Queues whose tasks wait on myKaarma: run on a threads pool.
IO_QUEUES = (DELIVER_QUEUE,)


def declare(name: str) -> Queue:
    """A queue bound to a direct exchange of its own name, as a bare Celery client
    declares it for `send_task(..., queue=name)`, so both sides agree on RabbitMQ too."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)
