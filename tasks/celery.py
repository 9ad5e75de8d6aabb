"""The Celery app and its configuration, nothing else (Celery's next-steps layout).

Configuration is added lazily (`add_defaults` with a callable), so importing `tasks`
never starts the embedded Redis or reads the environment until a broker is needed.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from tasks.queues import ALL_QUEUES, DEFAULT_QUEUE, declare

#: Seconds a delivered-but-unacknowledged message waits before Redis hands it to
#: another worker. Every task here takes well under this (one POST is bounded by
#: LEADPIPE_HTTP_TIMEOUT_SECONDS, 10 s by default), and retries wait in our own
#: schedule in Redis rather than as ETA messages, so no countdown can outlive it
#: (celery #2599, #9663, kombu #337). 60 s plus the 10 s restore scan below keeps the
#: contract's promise that a live worker takes over a dead worker's leads within 2 min.
VISIBILITY_TIMEOUT_SECONDS = 60
#: How often kombu scans for unacked messages past their visibility timeout.
UNACKED_RESTORE_INTERVAL_SECONDS = 10

#: kombu's Redis transport with unreadable queue entries counted, not fatal.
REDIS_TRANSPORT = "tasks.transport:LeadRedisTransport"

# `include` is imported before the worker blueprint is built and before `worker_init`,
# so the loops step and the start-up check register even with `celery -A tasks.celery`.
app = Celery("leadpipe", include=["tasks.lead_tasks", "tasks.loops"])


def _configuration() -> dict[str, Any]:
    from config import load_settings
    from store.connection import broker_url

    settings = load_settings()
    broker = broker_url(settings)
    return {
        "broker_url": broker,
        # kombu's Redis transport, made to survive a queue entry that is not a message.
        "broker_transport": (
            REDIS_TRANSPORT if broker.startswith(("redis://", "rediss://")) else None
        ),
        "broker_transport_options": {
            "visibility_timeout": VISIBILITY_TIMEOUT_SECONDS,
            "unacked_restore_interval": UNACKED_RESTORE_INTERVAL_SECONDS,
            "unacked_restore_throttle": 1,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # ride out a broker restart, never give up
        "broker_pool_limit": settings.deliver_concurrency + 8,
        # JSON only, both ways: a pickled message is refused before it is decoded.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_accept_content": ["json"],
        # The lead record in Redis is the result; upstream needs only the message id.
        "task_ignore_result": True,
        "result_backend": None,
        # A message is acknowledged only once its stage has been written to the record;
        # a worker that dies mid-task leaves it for another worker.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_prefetch_multiplier": 4,
        "task_queues": [declare(name) for name in ALL_QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {
            "leads.ingest": {"queue": "leads.ingest"},
            "leads.enrich": {"queue": "leads.enrich"},
            "leads.deliver": {"queue": "leads.deliver"},
        },
        "worker_consumer": "tasks.consumer:LeadConsumer",
        "worker_send_task_events": False,  # Flower turns events on when it watches
        "task_send_sent_event": False,
        "broker_connection_timeout": 5,
    }


app.add_defaults(_configuration)
